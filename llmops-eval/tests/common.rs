//! Shared helpers of the integration tests: a seeded noisy model.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use llmops_core::{
    ChatRequest, ChatResponse, ChatStream, Error, Message, Provider, RequestContext, Usage,
};
use llmops_eval::evaluators::{Reference, StringMatch};
use llmops_eval::{Case, Dataset, Runner, SuiteEvaluator, Target, TargetInfo};

/// SplitMix64: a tiny, reproducible generator for test fixtures.
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn unit(z: u64) -> f64 {
    (splitmix(z) >> 11) as f64 / (1u64 << 53) as f64
}

/// A model whose answer to case `i` is right when `truth[i]`, each answer flipped with
/// probability `flip` (independently per call, seeded).
pub struct NoisyModel {
    pub truth: Arc<Vec<bool>>,
    pub flip: f64,
    pub seed: u64,
    pub calls: AtomicU64,
}

impl NoisyModel {
    pub fn new(truth: Arc<Vec<bool>>, flip: f64, seed: u64) -> Self {
        Self {
            truth,
            flip,
            seed,
            calls: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl Provider for NoisyModel {
    fn name(&self) -> &str {
        "noisy"
    }

    async fn chat(
        &self,
        req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatResponse> {
        let q = req.messages[0].text();
        let i: usize = q
            .trim_start_matches('q')
            .parse()
            .map_err(|_| Error::internal("bad question"))?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        // The flip depends on the seed and the case (not on call order), so a run is
        // reproducible whatever the concurrency.
        let flipped = unit(self.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)) < self.flip;
        let right = self.truth[i] ^ flipped;
        Ok(ChatResponse::text(
            "id",
            req.model,
            if right { "yes" } else { "no" },
            Some(Usage::new(5, 1)),
        ))
    }

    async fn chat_stream(
        &self,
        _req: ChatRequest,
        _ctx: &RequestContext,
    ) -> llmops_core::Result<ChatStream> {
        Err(Error::new(
            llmops_core::ErrorKind::Unsupported,
            "no streams",
        ))
    }
}

pub fn dataset(n: usize, clusters: Option<usize>) -> Dataset {
    Dataset::from_cases(
        (0..n)
            .map(|i| {
                let c = Case::from_messages(format!("c{i}"), vec![Message::user(format!("q{i}"))])
                    .with_expected("yes");
                match clusters {
                    Some(k) => c.with_cluster(format!("g{}", i % k)),
                    None => c,
                }
            })
            .collect(),
    )
    .unwrap()
}

pub fn runner(model: NoisyModel, repeats: u32) -> Runner {
    Runner::builder(Target::provider(model), TargetInfo::new("noisy", "m"))
        .suite("acceptance")
        .evaluator(SuiteEvaluator::new(
            "exact",
            StringMatch::exact("correct", Reference::Expected),
        ))
        .concurrency(16)
        .repeats(repeats)
        .build()
        .unwrap()
}
