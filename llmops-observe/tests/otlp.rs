//! Spans reach an OTLP/HTTP receiver with their GenAI names and attributes (feature `otlp`).

#![cfg(feature = "otlp")]
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use llmops_core::mock::{MockProvider, MockReply};
use llmops_core::{
    BoxLlmService, ChatRequest, ErrorKind, LlmRequest, Message, ProviderService, RequestContext,
};
use llmops_observe::otlp::{OtlpConfig, OtlpTracing};
use llmops_observe::{ObserveConfig, ObserveLayer};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

type Requests = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal HTTP/1.1 server recording (request line, body) and answering 200.
fn receiver() -> (String, Requests) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Requests = Arc::default();
    let g = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let g = g.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h == "\r\n" || h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    reader.read_exact(&mut body).unwrap();
                    g.lock().unwrap().push((line.trim().to_owned(), body));
                    conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            });
        }
    });
    (url, got)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn spans_reach_an_otlp_receiver() {
    let (url, got) = receiver();
    let otlp = OtlpTracing::start(
        &OtlpConfig::new(format!("{url}/v1/traces")).service_name("observe-test"),
    )
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(otlp.layer());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let mock = MockProvider::new("mock")
                .reply(MockReply::text("hi"))
                .reply(MockReply::error(ErrorKind::Timeout));
            let svc = BoxLlmService::new(
                ServiceBuilder::new()
                    .layer(ObserveLayer::new(ObserveConfig::default()))
                    .service(ProviderService::new(Arc::new(mock))),
            );
            let req = || ChatRequest::new("gpt-test", vec![Message::user("hello")]);
            let ctx = || RequestContext::new().with_tenant("team-otlp");
            svc.clone()
                .oneshot(LlmRequest::chat(ctx(), req()))
                .await
                .unwrap();
            svc.oneshot(LlmRequest::chat(ctx(), req()))
                .await
                .unwrap_err();
        });
    });
    otlp.flush().unwrap();

    let requests = got.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the receiver got an export");
    assert!(
        requests
            .iter()
            .all(|(line, _)| line.starts_with("POST /v1/traces")),
        "{requests:?}"
    );
    let body: Vec<u8> = requests.into_iter().flat_map(|(_, b)| b).collect();
    for needle in [
        "chat gpt-test",
        "observe-test",
        "gen_ai.operation.name",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "llmops.tenant",
        "team-otlp",
        "error.type",
        "timeout",
    ] {
        assert!(
            contains(&body, needle),
            "the exported spans lack {needle:?}"
        );
    }
    otlp.shutdown().unwrap();
}
