//! Serving on one single-threaded runtime per core.
//!
//! A work-stealing runtime moves tasks between its workers: a request's task, the upstream
//! connection's task and the client connection's task may each run on a different thread,
//! and every hand-over between them is a cross-thread wake-up (a futex, often a context
//! switch on a busy machine). [`serve_app_per_core`] instead accepts on the caller's runtime
//! and hands each new connection, round-robin, to one of `workers` threads, each running a
//! current-thread runtime that serves the connection for its whole life. A request then runs
//! start to finish on one thread, and with an [`HttpTransport`](crate::providers::HttpTransport)
//! built [`per_thread`](crate::providers::HttpTransport::per_thread) its upstream connection is
//! driven by that same thread too.
//!
//! The hand-over costs one channel message per *connection*, not per request. One listening
//! socket is kept (not one `SO_REUSEPORT` socket per worker): the address stays exclusive
//! — a second server on the same port fails with "address in use" instead of silently
//! sharing it — and connections are spread evenly whatever their addresses hash to.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroUsize;

use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// The worker count when none is configured: the CPUs available to the process
/// (`std::thread::available_parallelism`, which honours CPU affinity and cgroup quotas), or 1
/// where that cannot be read.
pub fn default_workers() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

/// A connection on its way from the acceptor to a worker (deregistered from the acceptor's
/// runtime: the worker registers it with its own).
type Handoff = (std::net::TcpStream, SocketAddr);

/// The connections handed to one worker, as an axum listener.
struct WorkerListener {
    rx: mpsc::UnboundedReceiver<Handoff>,
    local: SocketAddr,
}

impl axum::serve::Listener for WorkerListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some((stream, peer)) => match TcpStream::from_std(stream) {
                    Ok(stream) => return (stream, peer),
                    Err(e) => tracing::warn!(error = %e, %peer, "cannot register a connection"),
                },
                // The acceptor has stopped: only the shutdown signal ends the server now.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// One started worker thread.
struct Worker {
    connections: mpsc::UnboundedSender<Handoff>,
    done: oneshot::Receiver<std::io::Result<()>>,
    thread: std::thread::JoinHandle<()>,
}

/// Serves `app` like [`serve_app`](super::serve_app), with connections spread over `workers`
/// threads, each running its own current-thread tokio runtime (see the module's
/// documentation). The caller's runtime only accepts connections.
///
/// When `shutdown` resolves, the listener is closed, every worker finishes the requests in
/// flight on its connections (as [`serve_app`](super::serve_app) does), and the call returns
/// once all worker threads have ended. Tasks a request spawns run on its worker's runtime and
/// are dropped with it at shutdown.
///
/// Worker threads are named `llmops-edge-<n>`.
///
/// # Errors
///
/// A runtime or thread cannot be created (the other workers are stopped first), a worker's
/// server stopped with an I/O error, or a worker thread panicked.
pub async fn serve_app_per_core(
    listener: TcpListener,
    app: Router,
    workers: NonZeroUsize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut started: Vec<Worker> = Vec::with_capacity(workers.get());
    for n in 0..workers.get() {
        match start_worker(n, app.clone(), local, stop_rx.clone()) {
            Ok(w) => started.push(w),
            Err(e) => {
                let _ = stop_tx.send(true);
                let _ = join(started).await;
                return Err(e);
            }
        }
    }
    let mut shutdown = std::pin::pin!(shutdown);
    let mut next = 0usize;
    let mut stopped_worker = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = hand_over(stream, peer, &started[next]) {
                        if started[next].connections.is_closed() {
                            // A worker only ends early if its server failed or its thread
                            // panicked: stop serving rather than drop a share of connections.
                            tracing::error!(worker = next, "an edge worker stopped; shutting down");
                            stopped_worker = Some(next);
                            break;
                        }
                        tracing::warn!(error = %e, %peer, "cannot hand a connection to a worker");
                    }
                    next = (next + 1) % started.len();
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let joined = join(started).await;
    match stopped_worker {
        Some(n) if joined.is_ok() => Err(std::io::Error::other(format!(
            "edge worker thread `llmops-edge-{n}` stopped before shutdown"
        ))),
        _ => joined,
    }
}

/// Builds worker `n`'s runtime and starts its thread.
fn start_worker(
    n: usize,
    app: Router,
    local: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<Worker> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (connections, rx) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name(format!("llmops-edge-{n}"))
        .spawn(move || {
            let listener = WorkerListener { rx, local };
            let result = runtime.block_on(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await
            });
            let _ = done_tx.send(result);
        })?;
    Ok(Worker {
        connections,
        done,
        thread,
    })
}

/// Sets `TCP_NODELAY` (see [`serve_app`](super::serve_app)) and passes the connection on.
fn hand_over(stream: TcpStream, peer: SocketAddr, worker: &Worker) -> std::io::Result<()> {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let stream = stream.into_std()?;
    worker
        .connections
        .send((stream, peer))
        .map_err(|_| std::io::Error::other("the worker thread has stopped"))
}

/// What axum's own accept loop does with an accept error: errors of one connection are
/// skipped; others (out of file descriptors, ...) are logged and retried after a second, so
/// that the loop does not spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error; retrying in 1 s");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

/// Waits for every worker to finish; the first error wins.
async fn join(workers: Vec<Worker>) -> std::io::Result<()> {
    let mut result = Ok(());
    for w in workers {
        drop(w.connections);
        let outcome = match w.done.await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::other(format!(
                "edge worker thread `{}` panicked",
                w.thread.thread().name().unwrap_or("?")
            ))),
        };
        // The thread has sent its result (or unwound): joining does not block for long.
        let _ = tokio::task::spawn_blocking(move || w.thread.join()).await;
        if result.is_ok() {
            result = outcome;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Notify;

    use super::*;

    /// One `GET` on a new connection: the whole response as text.
    async fn get_text(addr: SocketAddr, path: &str) -> String {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    }

    fn thread_name_app() -> Router {
        Router::new().route(
            "/thread",
            get(|| async { std::thread::current().name().unwrap_or("").to_owned() }),
        )
    }

    #[tokio::test]
    async fn connections_are_served_round_robin_on_the_worker_threads() {
        let listener = super::super::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_app_per_core(
            listener,
            thread_name_app(),
            NonZeroUsize::new(3).unwrap(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut served = Vec::new();
        for _ in 0..6 {
            let text = get_text(addr, "/thread").await;
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            served.push(text.rsplit("\r\n\r\n").next().unwrap().to_owned());
        }
        assert_eq!(
            served,
            [
                "llmops-edge-0",
                "llmops-edge-1",
                "llmops-edge-2",
                "llmops-edge-0",
                "llmops-edge-1",
                "llmops-edge-2"
            ]
        );
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
        // The listener is closed with the server.
        let refused = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn shutdown_finishes_the_requests_in_flight_then_joins_the_workers() {
        let entered = Arc::new(Notify::new());
        let release = Arc::new(Notify::new());
        let app = {
            let (entered, release) = (entered.clone(), release.clone());
            Router::new().route(
                "/slow",
                get(move || async move {
                    entered.notify_one();
                    release.notified().await;
                    "done"
                }),
            )
        };
        let listener = super::super::bind("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_app_per_core(
            listener,
            app,
            NonZeroUsize::new(2).unwrap(),
            async move {
                let _ = stopped.await;
            },
        ));
        let request = tokio::spawn(get_text(addr, "/slow"));
        entered.notified().await;
        stop.send(()).unwrap();
        // Shutting down, the server still waits for the request it is serving.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!server.is_finished(), "returned with a request in flight");
        release.notify_one();
        let text = request.await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with("done"), "{text}");
        server.await.unwrap().unwrap();
    }
}
