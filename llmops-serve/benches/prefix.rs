//! Routing-decision time of prefix-aware routing: 16 replicas with 100,000 indexed blocks
//! each, a 7,700-token prompt (482 blocks of 16 tokens).
//!
//! Run: `cargo bench -p llmops-serve --bench prefix`

use llmops_serve::prefix::{
    BlockHasher, PrefixIndexConfig, PrefixPolicyConfig, ReplicaLoad, ReplicaPicker, Strategy,
};
use tokio::time::Instant;

fn main() {
    divan::main();
}

const REPLICAS: usize = 16;
const BLOCKS_PER_REPLICA: usize = 100_000;
const BLOCK: usize = 16;

fn prompt(stream: u64, tokens: usize) -> Vec<u32> {
    (0..tokens as u64)
        .map(|i| ((stream * 1_000_003) ^ (i * 2_654_435_761)) as u32)
        .collect()
}

fn filled_picker() -> (ReplicaPicker, BlockHasher, Vec<u32>) {
    let cfg =
        PrefixPolicyConfig::default().with_index(PrefixIndexConfig::new(BLOCKS_PER_REPLICA, None));
    let mut picker = ReplicaPicker::new(Strategy::PrefixAware, REPLICAS, cfg);
    let hasher = BlockHasher::new(BLOCK, "bench", None);
    let now = Instant::now();
    let loads: Vec<ReplicaLoad> = (0..REPLICAS).map(|_| ReplicaLoad::new(4, 0, 0.5)).collect();
    // Fill every replica's index with 100,000 blocks of distinct prompts (8,000 tokens each).
    let per_prompt = 8_000 / BLOCK;
    let mut stream = 0u64;
    let mut filled = [0usize; REPLICAS];
    while filled.iter().any(|&f| f < BLOCKS_PER_REPLICA) {
        let hashes = hasher.hash_tokens(&prompt(stream, 8_000));
        stream += 1;
        let r = (stream as usize) % REPLICAS;
        if filled[r] >= BLOCKS_PER_REPLICA {
            continue;
        }
        // Record directly on replica r through a forced pick: least-loaded with r idle.
        let mut l = loads.clone();
        for (i, x) in l.iter_mut().enumerate() {
            if i != r {
                x.outstanding = 1_000;
            }
        }
        let _ = picker.pick(&hashes, &l, None, now);
        filled[r] += per_prompt;
    }
    (picker, hasher, prompt(3, 7_700))
}

#[divan::bench]
fn hash_prompt_7700_tokens(bencher: divan::Bencher<'_, '_>) {
    let hasher = BlockHasher::new(BLOCK, "bench", None);
    let p = prompt(3, 7_700);
    bencher.bench_local(|| hasher.hash_tokens(divan::black_box(&p)));
}

#[divan::bench]
fn pick_16_replicas_100k_blocks_each(bencher: divan::Bencher<'_, '_>) {
    let (mut picker, hasher, p) = filled_picker();
    let hashes = hasher.hash_tokens(&p);
    let loads: Vec<ReplicaLoad> = (0..REPLICAS)
        .map(|i| ReplicaLoad::new(i as u32 % 5, 0, 0.5))
        .collect();
    let now = Instant::now();
    bencher.bench_local(|| picker.pick(divan::black_box(&hashes), &loads, None, now));
}

#[divan::bench]
fn match_lengths_16_replicas(bencher: divan::Bencher<'_, '_>) {
    let (picker, hasher, p) = filled_picker();
    let hashes = hasher.hash_tokens(&p);
    let now = Instant::now();
    bencher.bench_local(|| picker.index().match_lengths(divan::black_box(&hashes), now));
}
