//! Quality drift: answers degrading mid-run fire the drift alert within the window; a steady
//! run ten times longer does not. Paused time: one request per (virtual) second.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::types::ResponseFormat;
use llmops_core::{
    BoxLlmService, ChatRequest, LlmRequest, Message, PromptRef, ProviderService, RequestContext,
};
use llmops_observe::alert::notify::{DeliveryError, Dispatcher, Notifier};
use llmops_observe::alert::{Alert, AlertHub, AlertStatus};
use llmops_observe::online_eval::{OnlineEvalConfig, OnlineEvaluator};
use llmops_observe::{ObserveConfig, ObserveLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Alert>>>);

#[async_trait]
impl Notifier for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn send(&self, alert: &Alert) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

/// A deterministic stream of pass/fail draws.
struct Lcg(u64);

impl Lcg {
    fn pass(&mut self, rate_percent: u64) -> bool {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % 100 < rate_percent
    }
}

struct Run {
    svc: BoxLlmService,
    mock: MockProvider,
    hub: AlertHub,
    notified: Recorder,
    online: OnlineEvaluator,
}

fn setup() -> Run {
    let notified = Recorder::default();
    let hub = AlertHub::new(
        Dispatcher::builder()
            .notifier(Arc::new(notified.clone()))
            .start(),
    );
    let mut config = OnlineEvalConfig::new(1.0).window_s(60).min_samples(30);
    config.evaluators = vec!["json_validity".into()];
    let online = OnlineEvaluator::start(config, Vec::new(), hub.clone());
    let mock = MockProvider::new("upstream");
    let svc = BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(
                ObserveConfig::builder()
                    .sampler(Arc::new(online.clone()))
                    .build(),
            ))
            .service(ProviderService::new(Arc::new(mock.clone()))),
    );
    Run {
        svc,
        mock,
        hub,
        notified,
        online,
    }
}

impl Run {
    /// One request per second whose answer is valid JSON with probability `rate_percent`.
    async fn second(&self, lcg: &mut Lcg, rate_percent: u64) {
        let answer = if lcg.pass(rate_percent) {
            r#"{"answer": 42}"#
        } else {
            r#"{"answer": 4"#
        };
        self.mock.push_reply(MockReply::text(answer));
        let mut req = ChatRequest::new("extractor", vec![Message::user("extract")]);
        req.response_format = Some(ResponseFormat::JsonObject);
        let ctx = RequestContext::new().with_prompt(PromptRef::new("extract", "v3"));
        self.svc
            .clone()
            .oneshot(LlmRequest::chat(ctx, req))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    fn drift_firing(&self) -> bool {
        self.hub.firing().iter().any(|a| a.rule == "quality_drift")
    }
}

#[tokio::test(start_paused = true)]
async fn degrading_answers_fire_the_drift_alert_within_the_window() {
    let run = setup();
    let mut lcg = Lcg(7);
    for _ in 0..300 {
        run.second(&mut lcg, 90).await;
        assert!(!run.drift_firing(), "no drift while quality is steady");
    }
    let degraded_at = Instant::now();
    let mut fired_after = None;
    for _ in 0..60 {
        run.second(&mut lcg, 40).await;
        if run.drift_firing() {
            fired_after = Some(Instant::now() - degraded_at);
            break;
        }
    }
    let fired_after = fired_after.expect("the drift alert fires within the 60 s window");
    assert!(fired_after <= Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let alerts = run.notified.0.lock().unwrap().clone();
    let drift: Vec<_> = alerts
        .iter()
        .filter(|a| a.rule == "quality_drift")
        .collect();
    assert_eq!(drift.len(), 1, "one notification: {alerts:#?}");
    let a = drift[0];
    assert_eq!(a.status, AlertStatus::Firing);
    assert_eq!(a.scope["model"], "extractor");
    assert_eq!(a.scope["prompt_version"], "extract@v3");
    assert_eq!(a.scope["evaluator"], "json_validity");
    let base = a.details["baseline_pass_rate"].as_f64().unwrap();
    let recent = a.details["recent_pass_rate"].as_f64().unwrap();
    assert!(base > 0.8 && recent < base - 0.1, "{base} -> {recent}");
    assert_eq!(run.online.stats().dropped(), 0);

    // Quality recovers: the recent window fills with good answers and the alert resolves.
    for _ in 0..90 {
        run.second(&mut lcg, 90).await;
    }
    assert!(!run.drift_firing(), "resolved after recovery");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resolved = run
        .notified
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.rule == "quality_drift" && a.status == AlertStatus::Resolved)
        .count();
    assert_eq!(resolved, 1);
}

#[tokio::test(start_paused = true)]
async fn a_steady_run_ten_times_longer_never_fires() {
    let run = setup();
    let mut lcg = Lcg(7);
    for _ in 0..3600 {
        run.second(&mut lcg, 90).await;
        assert!(!run.drift_firing(), "a steady 90% pass rate is not drift");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(run.notified.0.lock().unwrap().is_empty());
    assert_eq!(
        run.online.stats().scored(),
        3600,
        "every request was sampled and scored"
    );
}

#[tokio::test(start_paused = true)]
async fn ungrounded_answers_raise_the_hallucination_rate_alert() {
    let notified = Recorder::default();
    let hub = AlertHub::new(
        Dispatcher::builder()
            .notifier(Arc::new(notified.clone()))
            .start(),
    );
    let mut config = OnlineEvalConfig::new(1.0).window_s(60).min_samples(20);
    config.evaluators = vec!["groundedness".into()];
    let online = OnlineEvaluator::start(config, Vec::new(), hub.clone());
    let mock = MockProvider::new("upstream");
    let svc = BoxLlmService::new(
        ServiceBuilder::new()
            .layer(ObserveLayer::new(
                ObserveConfig::builder()
                    .sampler(Arc::new(online.clone()))
                    .build(),
            ))
            .service(ProviderService::new(Arc::new(mock.clone()))),
    );
    let ask = |answer: &'static str| {
        mock.push_reply(MockReply::text(answer));
        let req = ChatRequest::new(
            "rag",
            vec![
                Message::system(
                    "Context: the warranty covers batteries for 24 months after purchase.",
                ),
                Message::user("How long is the battery warranty?"),
            ],
        );
        svc.clone()
            .oneshot(LlmRequest::chat(RequestContext::new(), req))
    };
    let firing = || hub.firing().iter().any(|a| a.rule == "hallucination_rate");
    for _ in 0..60 {
        ask("The warranty covers batteries for 24 months after purchase.")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!firing(), "grounded answers are not hallucinations");
    }
    for _ in 0..60 {
        ask("Batteries are replaced free forever at any Lisbon kiosk.")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if firing() {
            break;
        }
    }
    assert!(
        firing(),
        "ungrounded answers raise the hallucination-rate alert within the window"
    );
    let a = hub
        .firing()
        .into_iter()
        .find(|a| a.rule == "hallucination_rate")
        .unwrap();
    assert_eq!(a.scope["model"], "rag");
    assert!(a.details["hallucination_rate"].as_f64().unwrap() > 0.2);
}
