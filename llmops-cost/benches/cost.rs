//! Benchmarks of the cost-control hot paths. Run: `cargo bench -p llmops-cost --all-features`
//! (the Redis benchmarks use `LLMOPS_TEST_REDIS_URL`, default redis://127.0.0.1:6379, and are
//! skipped with a message when Redis is unreachable).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use divan::Bencher;
use divan::counter::BytesCount;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    Amount, Budget, BudgetScope, CachedResponse, ChatRequest, ChatResponse, LlmRequest, Message,
    ProviderService, RequestBody, RequestContext, TokenCounter, Usd,
};
use llmops_cost::budget::{Limit, MemoryBudget, Window};
use llmops_cost::cache::{CacheLayer, MemoryCache, cache_key};
use llmops_cost::ceiling::{CeilingPolicy, CeilingRule};
use llmops_cost::prices::{ModelPrice, PriceCatalog};
use llmops_cost::semantic::VectorIndex;
use llmops_cost::tokens::{BpeCounter, Encoding, TiktokenCounter};
use tower::{Layer, Service, ServiceExt};

fn main() {
    llmops_cost::tokens::warm_up();
    let _ = tiktoken_rs::o200k_base_singleton();
    divan::main();
}

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

/// Deterministic mixed text: English prose, code, CJK and emoji, `len` bytes (on a char
/// boundary).
fn text(len: usize) -> String {
    const PIECES: &[&str] = &[
        "The quick brown fox jumps over the lazy dog. ",
        "fn main() { let v: Vec<u32> = (0..10).collect(); }\n",
        "机器学习是人工智能的一个分支。",
        "Budgets hold across replicas 🦀🚀 ",
        "    indented line with  double  spaces\n",
        "{\"model\": \"gpt-4o\", \"temperature\": 0.2}\n",
    ];
    let mut s = String::with_capacity(len + 64);
    let mut i = 0usize;
    while s.len() < len {
        s.push_str(PIECES[(i * 7 + i / 3) % PIECES.len()]);
        i += 1;
    }
    let mut cut = len;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

mod tokens {
    use super::*;

    const SIZES: &[usize] = &[100, 1_000, 10_000, 100_000];

    #[divan::bench(args = SIZES)]
    fn bpe_openai(b: Bencher<'_, '_>, len: usize) {
        let t = text(len);
        let c = BpeCounter::new(Encoding::O200kBase);
        b.counter(BytesCount::new(t.len()))
            .bench(|| c.count(divan::black_box(&t)));
    }

    #[divan::bench(args = SIZES)]
    fn tiktoken_rs(b: Bencher<'_, '_>, len: usize) {
        let t = text(len);
        let c = TiktokenCounter::new(Encoding::O200kBase);
        b.counter(BytesCount::new(t.len()))
            .bench(|| c.count(divan::black_box(&t)));
    }

    const RUNS: &[usize] = &[1_000, 10_000, 50_000];

    #[divan::bench(args = RUNS)]
    fn bpe_openai_run_of_a(b: Bencher<'_, '_>, len: usize) {
        let t = "a".repeat(len);
        let c = BpeCounter::new(Encoding::O200kBase);
        b.counter(BytesCount::new(len))
            .bench(|| c.count(divan::black_box(&t)));
    }

    #[divan::bench(args = RUNS)]
    fn tiktoken_rs_run_of_a(b: Bencher<'_, '_>, len: usize) {
        let t = "a".repeat(len);
        let c = TiktokenCounter::new(Encoding::O200kBase);
        b.counter(BytesCount::new(len))
            .bench(|| c.count(divan::black_box(&t)));
    }
}

fn catalog() -> Arc<PriceCatalog> {
    let mut c = PriceCatalog::empty();
    c.insert(ModelPrice::per_million("gpt-4o", 2.5, 10.0).expect("price"));
    Arc::new(c)
}

fn chat_4k() -> ChatRequest {
    ChatRequest::new(
        "gpt-4o",
        vec![
            Message::system("You are a careful assistant."),
            Message::user(text(4096)),
        ],
    )
    .with_max_tokens(512)
}

mod ceiling {
    use super::*;

    /// The byte bound decides: no tokenizer runs.
    #[divan::bench]
    fn check_4kb_prompt_byte_bound(b: Bencher<'_, '_>) {
        let policy = CeilingPolicy::new(catalog(), vec![CeilingRule::new("*", 0.50)]);
        let req = chat_4k();
        b.with_inputs(|| (RequestContext::new(), RequestBody::Chat(req.clone())))
            .bench_local_refs(|(ctx, body)| policy.check(ctx, body).map(|_| ()));
    }

    /// The bound is too high for the ceiling: the prompt is tokenized exactly.
    #[divan::bench]
    fn check_4kb_prompt_tokenized(b: Bencher<'_, '_>) {
        let policy = CeilingPolicy::new(catalog(), vec![CeilingRule::new("*", 0.0150)]);
        let req = chat_4k();
        b.with_inputs(|| (RequestContext::new(), RequestBody::Chat(req.clone())))
            .bench_local_refs(|(ctx, body)| policy.check(ctx, body).map(|_| ()));
    }
}

mod cache {
    use super::*;

    fn small_request() -> ChatRequest {
        ChatRequest::new(
            "gpt-4o",
            vec![
                Message::system("Answer briefly."),
                Message::user("What is the capital of France?"),
            ],
        )
        .with_temperature(0.0)
    }

    #[divan::bench]
    fn key(b: Bencher<'_, '_>) {
        let mut req = small_request();
        b.bench_local(|| cache_key("llmops", "tenant-a", divan::black_box(&mut req)));
    }

    /// A full exact-cache hit through the layer, in process.
    #[divan::bench]
    fn hit_through_layer(b: Bencher<'_, '_>) {
        let mock = Arc::new(MockProvider::new("p").default_reply(MockReply::text("Paris.")));
        let cache = Arc::new(MemoryCache::new(
            10_000,
            64 << 20,
            Some(Duration::from_secs(3600)),
        ));
        let mut svc = CacheLayer::new(cache).layer(ProviderService::new(mock));
        let req = LlmRequest::chat(RequestContext::new().with_tenant("t"), small_request());
        RT.block_on(svc.clone().oneshot(req.clone())).expect("warm");
        b.with_inputs(|| req.clone()).bench_local_values(|r| {
            RT.block_on(async {
                let resp = svc.call(r).await.expect("hit");
                assert!(resp.meta.cache_hit);
                resp
            })
        });
    }

    #[divan::bench]
    fn memory_backend_get(b: Bencher<'_, '_>) {
        use llmops_core::Cache;
        let cache = MemoryCache::new(10_000, 64 << 20, None);
        let key = cache_key("llmops", "t", &mut small_request());
        let entry = Arc::new(CachedResponse::new(ChatResponse::text(
            "id", "m", "Paris.", None,
        )));
        RT.block_on(cache.put(key, entry, None)).expect("put");
        b.bench(|| RT.block_on(cache.get(&key)));
    }
}

mod budget {
    use super::*;

    fn amount() -> Amount {
        Amount::new(Usd::from_f64(0.001), 100)
    }

    #[divan::bench]
    fn memory_reserve_commit(b: Bencher<'_, '_>) {
        let budget = MemoryBudget::new(vec![
            Limit::budget("tenant:*", Window::Daily)
                .expect("limit")
                .usd(1e12),
            Limit::per_minute("key:*")
                .expect("limit")
                .requests(u64::MAX / 4),
        ])
        .expect("budget");
        let scopes = [
            BudgetScope::new("tenant", "t"),
            BudgetScope::new("key", "k"),
        ];
        b.bench(|| {
            RT.block_on(async {
                let r = budget.reserve(&scopes, amount()).await.expect("room");
                budget.commit(r, amount()).await.expect("commit");
            })
        });
    }

    #[cfg(feature = "redis")]
    #[divan::bench]
    fn redis_reserve_commit(b: Bencher<'_, '_>) {
        use llmops_cost::budget::RedisBudget;
        let url = std::env::var("LLMOPS_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let budget = RT.block_on(
            RedisBudget::builder(&url)
                .namespace(format!("bench-{}", std::process::id()))
                .limit(
                    Limit::budget("tenant:*", Window::Daily)
                        .expect("limit")
                        .usd(1e9),
                )
                .limit(
                    Limit::per_minute("key:*")
                        .expect("limit")
                        .requests(u64::MAX / 4),
                )
                .connect(),
        );
        let Ok(budget) = budget else {
            eprintln!("skipping redis_reserve_commit: Redis unreachable at {url}");
            return;
        };
        let scopes = [
            BudgetScope::new("tenant", "t"),
            BudgetScope::new("key", "k"),
        ];
        b.bench(|| {
            RT.block_on(async {
                let r = budget.reserve(&scopes, amount()).await.expect("room");
                budget.commit(r, amount()).await.expect("commit");
            })
        });
    }
}

mod semantic {
    use super::*;

    const DIM: usize = 256;

    fn vectors(n: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..DIM)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        (s % 2000) as f32 / 1000.0 - 1.0
                    })
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.into_iter().map(|x| x / n).collect()
            })
            .collect()
    }

    fn index(n: usize, ann_threshold: usize) -> (VectorIndex, Vec<Vec<f32>>) {
        let vs = vectors(n, 42);
        let mut idx = VectorIndex::new(DIM, n, ann_threshold);
        let entry = Arc::new(CachedResponse::new(ChatResponse::text(
            "id", "m", "x", None,
        )));
        let now = Instant::now();
        for v in &vs {
            idx.insert(v.clone(), entry.clone(), now);
        }
        (idx, vs)
    }

    const N: &[usize] = &[1_000, 10_000];

    #[divan::bench(args = N)]
    fn search_exact(b: Bencher<'_, '_>, n: usize) {
        let (idx, vs) = index(n, usize::MAX);
        let now = Instant::now();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 7) % vs.len();
            idx.search(&vs[i], 0.95, None, now)
        });
    }

    #[divan::bench(args = N)]
    fn search_lsh(b: Bencher<'_, '_>, n: usize) {
        let (idx, vs) = index(n, 0);
        let now = Instant::now();
        let mut i = 0;
        b.bench_local(|| {
            i = (i + 7) % vs.len();
            idx.search(&vs[i], 0.95, None, now)
        });
    }
}
