//! Shared helpers: local HTTP receivers and pipelines.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::Value;

/// A local receiver that records every JSON body posted to `/` and answers `status`.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub async fn start(status: u16) -> Self {
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = (bodies.clone(), status);
        let app =
            Router::new()
                .route(
                    "/",
                    post(
                        |State((b, s)): State<(Arc<Mutex<Vec<Value>>>, u16)>,
                         Json(v): Json<Value>| async move {
                            b.lock().unwrap().push(v);
                            StatusCode::from_u16(s).unwrap()
                        },
                    ),
                )
                .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}
