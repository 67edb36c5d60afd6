//! The Redis budget against a real Redis (`LLMOPS_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379): several replicas enforce one limit.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    Amount, Budget, BudgetScope, ChatRequest, ErrorKind, LlmRequest, Message, ProviderService,
    RequestContext, StreamOptions, Usage, Usd,
};
use llmops_cost::budget::{BudgetLayer, Limit, OnBackendError, RedisBudget, Window};
use llmops_cost::prices::{ModelPrice, PriceCatalog};
use tower::{Layer, ServiceExt};

fn redis_url() -> String {
    std::env::var("LLMOPS_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn namespace() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

async fn connect(ns: &str, limits: Vec<Limit>) -> RedisBudget {
    let url = redis_url();
    RedisBudget::builder(&url)
        .namespace(ns)
        .limits(limits)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url} (set LLMOPS_TEST_REDIS_URL): {e}"))
}

fn catalog() -> Arc<PriceCatalog> {
    let mut c = PriceCatalog::empty();
    c.insert(ModelPrice::per_million("m", 1.0, 4.0).unwrap());
    Arc::new(c)
}

/// The acceptance invariant: 4 replicas sharing Redis, 400 concurrent requests against a USD
/// limit. Committed spend never exceeds the limit, every request succeeds or gets
/// `budget_exceeded`, cancelled requests' reservations are released, and the committed spend
/// is exactly the cost of the requests that succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_replicas_400_requests_one_budget() {
    let ns = namespace();
    let limit_usd = 0.5;
    let limits = || {
        vec![
            Limit::budget("tenant:*", Window::Daily)
                .unwrap()
                .usd(limit_usd),
        ]
    };
    let usage = Usage::new(10, 500); // $0.00001 + $0.002 = $0.00201 per request
    let per_request = catalog().cost("m", &usage).unwrap().total;
    let mut replicas = Vec::new();
    for i in 0..4 {
        let budget = Arc::new(connect(&ns, limits()).await);
        let mock = Arc::new(
            MockProvider::new(format!("upstream-{i}")).default_reply(
                MockReply::chunks(["a", "b"])
                    .with_usage(usage.clone())
                    .with_latency(Duration::from_millis(30)),
            ),
        );
        let svc = BudgetLayer::new(budget.clone(), catalog())
            .remaining_header(false)
            .layer(ProviderService::new(mock));
        replicas.push((budget, svc));
    }

    let mut tasks = Vec::new();
    for n in 0..400usize {
        let svc = replicas[n % 4].1.clone();
        tasks.push(tokio::spawn(async move {
            let stream = n % 3 == 0;
            let mut r = ChatRequest::new("m", vec![Message::user("hi")]).with_max_tokens(1000);
            if stream {
                r = r.with_stream(true);
                r.stream_options = Some(StreamOptions::include_usage(true));
            }
            let req = LlmRequest::chat(RequestContext::new().with_tenant("shared"), r);
            let call = async move {
                let resp = svc.oneshot(req).await?;
                if stream {
                    let mut s = resp.into_stream()?;
                    while let Some(c) = s.next().await {
                        c?;
                    }
                }
                Ok::<_, llmops_core::Error>(())
            };
            if n % 10 == 7 {
                // Cancelled mid-call (client gone): the future is dropped before the answer.
                return match tokio::time::timeout(Duration::from_millis(5), call).await {
                    Ok(r) => r.map(|()| "ok"),
                    Err(_) => Ok("cancelled"),
                };
            }
            call.await.map(|()| "ok")
        }));
    }
    let (mut ok, mut refused, mut cancelled) = (0u64, 0u64, 0u64);
    for t in tasks {
        match t.await.unwrap() {
            Ok("ok") => ok += 1,
            Ok(_) => cancelled += 1,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::BudgetExceeded, "unexpected error: {e}");
                refused += 1;
            }
        }
    }
    assert_eq!(ok + refused + cancelled, 400);
    assert!(
        ok > 0 && refused > 0,
        "ok {ok}, refused {refused}: the limit must bind"
    );

    // Settlements of cancelled calls run in background tasks: wait for them.
    let scope = BudgetScope::new("tenant", "shared");
    let id = "tenant:*:daily";
    let mut last = None;
    for _ in 0..200 {
        let (spent, reserved) = replicas[0].0.usage(id, &scope).await.unwrap().unwrap();
        last = Some((spent, reserved));
        if reserved == Usd::ZERO {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (spent, reserved) = last.unwrap();
    assert_eq!(reserved, Usd::ZERO, "every reservation was settled");
    assert!(spent <= Usd::from_f64(limit_usd), "spent {spent} > limit");
    assert_eq!(
        spent.nanos(),
        per_request.nanos() * ok as i64,
        "spend = cost of successes"
    );
}

#[tokio::test]
async fn nested_scopes_and_rate_limits_on_redis() {
    let ns = namespace();
    let b = connect(
        &ns,
        vec![
            Limit::budget("tenant:*", Window::Monthly)
                .unwrap()
                .usd(10.0),
            Limit::budget("user:bob", Window::Rolling(Duration::from_secs(3600)))
                .unwrap()
                .usd(1.0),
            Limit::per_minute("key:*").unwrap().requests(2),
        ],
    )
    .await;
    let scopes = vec![
        BudgetScope::new("tenant", "t"),
        BudgetScope::new("key", "k"),
        BudgetScope::new("user", "bob"),
    ];
    let err = b
        .reserve(&scopes, Amount::new(Usd::from_f64(2.0), 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BudgetExceeded);
    assert!(err.message().contains("user:bob"), "{}", err.message());
    // Refused reservations charge nothing anywhere.
    assert_eq!(
        b.remaining(&scopes[0]).await.unwrap(),
        Some(Usd::from_f64(10.0))
    );
    for _ in 0..2 {
        let r = b
            .reserve(&scopes, Amount::new(Usd::from_f64(0.1), 5))
            .await
            .unwrap();
        b.commit(r, Amount::new(Usd::from_f64(0.05), 5))
            .await
            .unwrap();
    }
    let err = b
        .reserve(&scopes, Amount::new(Usd::from_f64(0.1), 5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimitExceeded);
    assert!(err.retry_after().is_some());
    assert_eq!(
        b.remaining(&scopes[0]).await.unwrap(),
        Some(Usd::from_f64(9.9))
    );
    assert_eq!(
        b.remaining(&scopes[2]).await.unwrap(),
        Some(Usd::from_f64(0.9))
    );
    // A released reservation returns everything.
    let other = vec![BudgetScope::new("tenant", "t2")];
    let r = b
        .reserve(&other, Amount::new(Usd::from_f64(9.0), 0))
        .await
        .unwrap();
    assert_eq!(
        b.remaining(&other[0]).await.unwrap(),
        Some(Usd::from_f64(1.0))
    );
    b.release(r).await.unwrap();
    assert_eq!(
        b.remaining(&other[0]).await.unwrap(),
        Some(Usd::from_f64(10.0))
    );
}

#[tokio::test]
async fn unsettled_reservations_expire_with_their_lease() {
    let ns = namespace();
    let url = redis_url();
    let b = RedisBudget::builder(&url)
        .namespace(&ns)
        .limit(Limit::budget("tenant:*", Window::Daily).unwrap().usd(1.0))
        .reservation_ttl(Duration::from_millis(200))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url} (set LLMOPS_TEST_REDIS_URL): {e}"));
    let scope = [BudgetScope::new("tenant", "t")];
    let _leaked = b
        .reserve(&scope, Amount::new(Usd::from_f64(0.9), 0))
        .await
        .unwrap();
    assert!(
        b.reserve(&scope, Amount::new(Usd::from_f64(0.5), 0))
            .await
            .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.reserve(&scope, Amount::new(Usd::from_f64(0.5), 0))
            .await
            .is_ok()
    );
}

/// A TCP relay to Redis that the test can cut, to make Redis unreachable mid-run.
async fn relay() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let target = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_owned();
    let handle = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    (format!("redis://{addr}"), handle)
}

#[tokio::test]
async fn unreachable_redis_fails_closed_by_default_and_open_when_configured() {
    let (url, relay_task) = relay().await;
    let ns = namespace();
    let connect_via = |limit: Limit| {
        let url = url.clone();
        let ns = ns.clone();
        async move {
            RedisBudget::builder(url)
                .namespace(ns)
                .limit(limit)
                .timeout(Duration::from_millis(300))
                .connect()
                .await
                .expect("Redis reachable through the relay (set LLMOPS_TEST_REDIS_URL)")
        }
    };
    let closed = connect_via(Limit::budget("tenant:*", Window::Daily).unwrap().usd(1.0)).await;
    let open = connect_via(
        Limit::budget("key:*", Window::Daily)
            .unwrap()
            .usd(1.0)
            .on_backend_error(OnBackendError::FailOpen),
    )
    .await;
    let tenant = [BudgetScope::new("tenant", "t")];
    let key = [BudgetScope::new("key", "k")];
    let amount = Amount::new(Usd::from_f64(0.1), 0);
    assert!(closed.reserve(&tenant, amount).await.is_ok());
    assert!(open.reserve(&key, amount).await.is_ok());

    relay_task.abort(); // Redis is now unreachable: the relay and its connections are gone.
    let _ = relay_task.await;

    let err = closed.reserve(&tenant, amount).await.unwrap_err();
    assert_eq!(err.code(), "budget_unavailable");
    assert_eq!(err.http_status(), 503);
    let r = open
        .reserve(&key, amount)
        .await
        .expect("fail-open lets the request through");
    assert!(r.id.starts_with("unchecked:"));
}
