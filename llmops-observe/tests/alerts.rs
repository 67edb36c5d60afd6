//! Alerts against local HTTP receivers: an SLO breach pages and resolves on PagerDuty with
//! one dedup key, Slack gets the summary, and a receiver that never answers does not slow
//! requests.
//!
//! These tests run on the real clock (with windows of a few seconds): they talk HTTP to
//! local servers, and a paused clock would fire the clients' timeouts while sockets wait.
//! The window arithmetic itself is tested on paused time in the crate's unit tests.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::Receiver;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    BoxLlmService, ChatRequest, ErrorKind, LlmRequest, Message, ProviderService, RequestContext,
};
use llmops_observe::ObserveConfig;
use llmops_observe::alert::notify::{Dispatcher, RetryPolicy, WebhookNotifier};
use llmops_observe::alert::{Alert, AlertHub, Severity};
use llmops_observe::config::{Observability, ObserveFileConfig};
use tower::{ServiceBuilder, ServiceExt};

fn pipeline(obs: &Observability, mock: MockProvider) -> BoxLlmService {
    BoxLlmService::new(
        ServiceBuilder::new()
            .layer(obs.layer(ObserveConfig::builder()))
            .service(ProviderService::new(Arc::new(mock))),
    )
}

async fn run_batch(svc: &BoxLlmService, n: usize) -> usize {
    let calls = (0..n).map(|_| {
        let svc = svc.clone();
        async move {
            let req = ChatRequest::new("chat", vec![Message::user("hi")]);
            svc.oneshot(LlmRequest::chat(RequestContext::new(), req))
                .await
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count()
}

/// Polls `cond` every 20 ms, at most `tries` times.
async fn eventually(tries: u32, mut cond: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_breach_pages_and_resolves_with_one_dedup_key_and_posts_to_slack() {
    let pd = Receiver::start(202).await;
    let slack = Receiver::start(200).await;
    let toml_text = format!(
        r#"
        [[slo]]
        model = "chat"
        ttft_p95_ms = 800
        window_s = 12
        min_requests = 10

        [alerts]
        source = "test-gateway"
        eval_interval_ms = 50

        [alerts.pagerduty]
        url = "{}"
        routing_key_env = "PD_ROUTING_KEY"

        [alerts.slack]
        webhook_url_env = "SLACK_WEBHOOK_URL"
        "#,
        pd.url()
    );
    let cfg: ObserveFileConfig = toml::from_str(&toml_text).unwrap();
    let slack_url = slack.url();
    let env = move |k: &str| match k {
        "PD_ROUTING_KEY" => Some("R0UT1NGKEY".to_owned()),
        "SLACK_WEBHOOK_URL" => Some(slack_url.clone()),
        _ => None,
    };
    let obs = cfg.start(env, Vec::new()).unwrap();

    // The upstream slows down: every answer takes 900 ms, over the 800 ms target.
    let mock = MockProvider::new("upstream")
        .default_reply(MockReply::text("slow").with_latency(Duration::from_millis(900)));
    let svc = pipeline(&obs, mock);
    assert_eq!(run_batch(&svc, 12).await, 12);
    assert_eq!(run_batch(&svc, 12).await, 12);

    let scope: BTreeMap<String, String> = [
        ("model".to_owned(), "chat".to_owned()),
        ("objective".to_owned(), "ttft_p95".to_owned()),
        ("severity".to_owned(), "critical".to_owned()),
    ]
    .into();
    assert!(
        eventually(100, || obs.hub().is_firing("slo_burn", &scope)).await,
        "the fast-burn SLO alert fires"
    );
    assert!(
        eventually(100, || pd
            .bodies()
            .iter()
            .any(|b| b["event_action"] == "trigger"))
        .await,
        "PagerDuty got a trigger"
    );

    // Recovery: the upstream is fast again; the short window clears.
    let fast = MockProvider::new("upstream")
        .default_reply(MockReply::text("fast").with_latency(Duration::from_millis(5)));
    let svc = pipeline(&obs, fast);
    let any_slo_alert = || obs.hub().firing().iter().any(|a| a.rule == "slo_burn");
    for _ in 0..100 {
        assert_eq!(run_batch(&svc, 5).await, 5);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if !any_slo_alert() {
            break;
        }
    }
    assert!(
        !obs.hub().is_firing("slo_burn", &scope),
        "the alert resolves after recovery"
    );
    assert!(!any_slo_alert(), "the warning-level alert resolves too");
    assert!(
        eventually(100, || pd
            .bodies()
            .iter()
            .filter(|b| b["event_action"] == "resolve")
            .count()
            >= 2)
        .await,
        "PagerDuty got the resolves: {:#?}",
        pd.bodies()
    );

    let bodies = pd.bodies();
    let triggers: Vec<_> = bodies
        .iter()
        .filter(|b| b["event_action"] == "trigger")
        .collect();
    let resolves: Vec<_> = bodies
        .iter()
        .filter(|b| b["event_action"] == "resolve")
        .collect();
    assert_eq!(
        triggers.len(),
        2,
        "one trigger per rule (critical and warning), not one per evaluation: {bodies:#?}"
    );
    for t in &triggers {
        assert_eq!(t["routing_key"], "R0UT1NGKEY");
        assert_eq!(t["payload"]["source"], "test-gateway");
        assert_eq!(t["payload"]["custom_details"]["model"], "chat");
        let key = t["dedup_key"].as_str().unwrap();
        let matching: Vec<_> = resolves.iter().filter(|r| r["dedup_key"] == key).collect();
        assert_eq!(
            matching.len(),
            1,
            "exactly one resolve with the trigger's dedup_key {key}"
        );
        assert_eq!(matching[0]["routing_key"], "R0UT1NGKEY");
    }
    let critical = triggers
        .iter()
        .find(|t| t["payload"]["severity"] == "critical")
        .expect("a critical trigger");
    let summary = critical["payload"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("p95 TTFT <= 800 ms") && summary.contains("chat"),
        "{summary}"
    );

    let slack_bodies = slack.bodies();
    assert!(
        slack_bodies
            .iter()
            .any(|b| b["text"].as_str().unwrap_or("").contains(summary)),
        "Slack got the alert's summary {summary:?}: {slack_bodies:#?}"
    );
    assert!(
        slack_bodies
            .iter()
            .any(|b| b["text"].as_str().unwrap_or("").starts_with("[RESOLVED]"))
    );
}

/// A TCP server that accepts connections and never answers.
async fn black_hole() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_block_requests() {
    let url = black_hole().await;
    let toml_text = format!(
        r#"
        [alerts]
        queue_capacity = 2
        eval_interval_ms = 20
        [alerts.webhook]
        url = "{url}"
        [alerts.error_rate]
        threshold = 0.5
        window_s = 60
        min_requests = 5
        "#
    );
    let cfg: ObserveFileConfig = toml::from_str(&toml_text).unwrap();
    let obs = cfg.start(|_| None, Vec::new()).unwrap();
    let stats = obs.hub().dispatcher().stats("webhook").unwrap();

    // Every request fails: the error-rate alert fires and its notification hangs forever.
    let mock =
        MockProvider::new("upstream").default_reply(MockReply::error(ErrorKind::ServerError));
    let svc = pipeline(&obs, mock);
    assert_eq!(run_batch(&svc, 20).await, 0);
    assert!(
        eventually(200, || stats.in_flight() == 1).await,
        "the delivery is stuck on the receiver"
    );

    // More alerts while the receiver hangs: they queue up to the capacity, then drop.
    for i in 0..10 {
        obs.hub().fire(
            Alert::new("manual", Severity::Info, format!("#{i}")).with_scope("i", i.to_string()),
        );
    }
    // And requests still complete, one after another, while nothing was delivered.
    for _ in 0..50 {
        assert_eq!(run_batch(&svc, 4).await, 0);
    }
    assert_eq!(
        stats.delivered(),
        0,
        "nothing was delivered: the receiver never answered"
    );
    assert_eq!(stats.in_flight(), 1);
    assert_eq!(
        stats.enqueued(),
        3,
        "the stuck one plus a full queue of two"
    );
    assert_eq!(
        stats.dropped(),
        8,
        "the rest were dropped and counted, not waited for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_retry_on_5xx_and_give_up_on_4xx() {
    let failing = Receiver::start(503).await;
    let rejecting = Receiver::start(400).await;
    let retry = RetryPolicy::new(3, Duration::from_millis(10), Duration::from_millis(20));
    let d1 = Dispatcher::builder()
        .retry(retry)
        .notifier(Arc::new(WebhookNotifier::new(failing.url(), "r").unwrap()))
        .start();
    let d2 = Dispatcher::builder()
        .retry(retry)
        .notifier(Arc::new(
            WebhookNotifier::new(rejecting.url(), "r").unwrap(),
        ))
        .start();
    let (h1, h2) = (AlertHub::new(d1), AlertHub::new(d2));
    assert!(h1.fire(Alert::new("x", Severity::Error, "boom")));
    assert!(
        !h1.fire(Alert::new("x", Severity::Error, "boom again")),
        "de-duplicated while firing"
    );
    assert!(h2.fire(Alert::new("x", Severity::Error, "boom")));
    let (s1, s2) = (
        h1.dispatcher().stats("webhook").unwrap(),
        h2.dispatcher().stats("webhook").unwrap(),
    );
    assert!(eventually(200, || s1.failed() == 1 && s2.failed() == 1).await);
    assert_eq!(
        failing.bodies().len(),
        3,
        "503 is retried up to max_attempts"
    );
    assert_eq!(s1.retries(), 2);
    assert_eq!(rejecting.bodies().len(), 1, "400 is permanent");
    assert_eq!(s2.retries(), 0);
}
