//! `netshim metrics`: an HTTP/1.1 server (hyper) for Prometheus scrapes.
//!
//! `GET /metrics` (or `HEAD`) collects the counters fresh ([`super::collect`], on tokio's
//! blocking pool, which enters namespaces only on threads of its own) and answers with the
//! text exposition; any other path is 404, any other method 405, a request target that is
//! not a path 400. hyper parses the request (400 for a malformed one, 431 past
//! [`MAX_REQUEST_BYTES`] of head) and frames the answer; every response closes the
//! connection. A head not in within [`REQUEST_TIMEOUT`] gets a 408, and an answer not taken
//! within it is cut.
//!
//! Connections are accepted as they come: reading a request head holds no collection slot,
//! so idle or slow clients cannot hold up a scrape. At most [`MAX_SCRAPES`] collections
//! (and their answers) run at once; a complete request waits for a slot. At most
//! [`MAX_PENDING_HEADS`] connections may still be sending their head; the next one (or the
//! process running out of file descriptors) closes the oldest of them.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    os::fd::AsFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use http_body_util::Full;
use hyper::{
    body::{Bytes, Incoming},
    header::{HeaderValue, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
    Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore},
};

use super::{collect, prometheus, MetricsError, Scope};

/// Longest request head (request line and headers) accepted.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Time a client has to send its request head, and to take the answer. A scraper sends its
/// head (a few hundred bytes) in its first write; 5 s is ample on loopback or through a
/// port-forward and bounds how long a stalled client holds a file descriptor.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes collected and answered at once; more complete requests wait for a slot.
pub const MAX_SCRAPES: usize = 64;
/// Connections still sending their request head; one more closes the oldest of them.
pub const MAX_PENDING_HEADS: usize = 1024;
/// The metrics path.
pub const METRICS_PATH: &str = "/metrics";
/// The agent's readiness path: 200 when ready, 503 with the reason otherwise.
pub const READY_PATH: &str = "/readyz";
/// The agent's liveness path: 200 while it serves.
pub const HEALTH_PATH: &str = "/healthz";

/// What `GET /readyz` answers: `Ok(what is ready)` or `Err(why not)`.
pub type ReadyProbe = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// The connections still sending their request head, oldest first: dropping one's sender
/// closes it.
#[derive(Default)]
struct PendingHeads {
    next: u64,
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

impl PendingHeads {
    /// Registers a new connection, closing the oldest one when [`MAX_PENDING_HEADS`] are
    /// waiting. Returns its id and what tells it to close.
    fn register(&mut self) -> (u64, oneshot::Receiver<()>) {
        while self.waiting.len() >= MAX_PENDING_HEADS {
            self.close_oldest();
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next;
        self.next += 1;
        self.waiting.insert(id, tx);
        (id, rx)
    }

    /// Closes the connection that has waited longest for its head; false if none waits.
    fn close_oldest(&mut self) -> bool {
        self.waiting.pop_first().is_some()
    }

    /// The connection's head is in (or it ended): it no longer counts.
    fn done(&mut self, id: u64) {
        self.waiting.remove(&id);
    }
}

/// Shared by the accept loop and the connections.
struct Server {
    scope: Scope,
    /// The agent's readiness (`GET /readyz`, and `/healthz`); `None`: metrics only.
    ready: Option<ReadyProbe>,
    /// Collection slots.
    scrapes: Arc<Semaphore>,
    pending: Mutex<PendingHeads>,
}

impl Server {
    fn pending(&self) -> std::sync::MutexGuard<'_, PendingHeads> {
        // A panic while holding this lock leaves the map consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves scrapes on `listen` until `stop` completes. `on_listening` gets the bound address
/// (the port when `listen` asked for port 0) before the first connection is accepted.
pub fn serve<S>(
    listen: SocketAddr,
    scope: Scope,
    stop: S,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), MetricsError>
where
    S: Future<Output = ()>,
{
    serve_with(listen, scope, None, stop, on_listening)
}

/// [`serve`], and with `ready` also [`READY_PATH`] and [`HEALTH_PATH`] (the agent's).
pub fn serve_with<S>(
    listen: SocketAddr,
    scope: Scope,
    ready: Option<ReadyProbe>,
    stop: S,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), MetricsError>
where
    S: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MetricsError::Runtime)?;
    let result: Result<(), MetricsError> = runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| MetricsError::Bind {
                addr: listen,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| MetricsError::Bind {
            addr: listen,
            source,
        })?;
        on_listening(local);
        let server = Arc::new(Server {
            scope,
            ready,
            scrapes: Arc::new(Semaphore::new(MAX_SCRAPES)),
            pending: Mutex::default(),
        });
        tokio::pin!(stop);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors: an idle connection makes room. Otherwise
                        // (or with none idle) back off instead of spinning.
                        let fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                        if !(fds && server.pending().close_oldest()) {
                            tracing::warn!("metrics: accept: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                },
            };
            let (id, closed) = server.pending().register();
            let server = server.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, &server, id, closed).await {
                    tracing::debug!("metrics: connection from {peer}: {e}");
                }
                server.pending().done(id);
            });
        }
        Ok(())
    });
    // A scrape still collecting must not hold up the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The answer to a head not in within [`REQUEST_TIMEOUT`]. hyper only closes such a
/// connection; a client is told why, as before hyper.
const TIMEOUT_RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\n\
    Content-Length: 8\r\nConnection: close\r\n\r\ntimeout\n";

/// What one connection's request has come to, shared by its service and its watchdog.
#[derive(Default)]
struct Exchange {
    /// The request head is in: the connection no longer waits to be evicted.
    head_in: AtomicBool,
    /// The service has its response.
    answered: Notify,
    /// The collection slot, held until the answer is written.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Exchange {
    fn head_in(&self) -> bool {
        self.head_in.load(Ordering::Acquire)
    }
}

/// Why a connection was cut before hyper was done with it.
enum Cut {
    /// Closed to make room for newer connections.
    Evicted,
    /// Its head did not come within [`REQUEST_TIMEOUT`].
    HeadTimeout,
    /// It did not take the answer within [`REQUEST_TIMEOUT`].
    AnswerTimeout,
}

/// Waits for what cuts the connection: eviction or the head timeout while the head is still
/// awaited, then the answer timeout once the response is ready.
async fn watchdog(exchange: &Exchange, closed: oneshot::Receiver<()>) -> Cut {
    tokio::select! {
        // The sender is dropped on eviction and also once the head is in.
        _ = closed => if !exchange.head_in() { return Cut::Evicted },
        _ = tokio::time::sleep(REQUEST_TIMEOUT) => if !exchange.head_in() {
            return Cut::HeadTimeout
        },
    }
    exchange.answered.notified().await;
    tokio::time::sleep(REQUEST_TIMEOUT).await;
    Cut::AnswerTimeout
}

async fn handle(
    stream: TcpStream,
    server: &Arc<Server>,
    id: u64,
    closed: oneshot::Receiver<()>,
) -> io::Result<()> {
    // hyper owns `stream` and closes it when done; this second descriptor of the same
    // socket keeps it open for [`finish`], so that a close with unread data (an oversized
    // head) does not reset the connection before the client has read the answer.
    let spare = TcpStream::from_std(std::net::TcpStream::from(
        stream.as_fd().try_clone_to_owned()?,
    ))?;
    let exchange = Arc::new(Exchange::default());
    let service = {
        let server = server.clone();
        let exchange = exchange.clone();
        service_fn(move |req| {
            let server = server.clone();
            let exchange = exchange.clone();
            async move {
                exchange.head_in.store(true, Ordering::Release);
                server.pending().done(id);
                let reply = route(&server, &exchange, req).await;
                exchange.answered.notify_one();
                Ok::<_, Infallible>(reply)
            }
        })
    };
    let connection = http1::Builder::new()
        .keep_alive(false)
        // Content-Type, Content-Length, Connection: as scrapers and tests have seen them.
        .title_case_headers(true)
        .auto_date_header(false)
        .max_buf_size(MAX_REQUEST_BYTES)
        // The head's size is the limit, not the number of its lines ("a:" and CRLF).
        .max_headers(MAX_REQUEST_BYTES / 4)
        // The watchdog times the head, and answers 408.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    let outcome = tokio::select! {
        served = connection => served.map_err(io::Error::other),
        cut = watchdog(&exchange, closed) => match cut {
            Cut::Evicted => return Ok(()),
            Cut::HeadTimeout => answer(&spare, TIMEOUT_RESPONSE).await,
            Cut::AnswerTimeout => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not take the response",
            )),
        },
    };
    drop(
        exchange
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(),
    );
    finish(&spare).await;
    outcome
}

/// The answer to one request.
async fn route(
    server: &Arc<Server>,
    exchange: &Exchange,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    let uri = req.uri();
    // Only a path (origin form) is asked of this server; hyper has checked the rest.
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return response(StatusCode::BAD_REQUEST, text, "bad request\n");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return response(StatusCode::METHOD_NOT_ALLOWED, text, "GET or HEAD only\n");
    }
    if let Some(ready) = &server.ready {
        match uri.path() {
            HEALTH_PATH => return response(StatusCode::OK, text, "ok\n"),
            READY_PATH => {
                return match ready() {
                    Ok(what) => response(StatusCode::OK, text, format!("ready: {what}\n")),
                    Err(why) => response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        text,
                        format!("not ready: {why}\n"),
                    ),
                }
            }
            _ => {}
        }
    }
    // hyper leaves a HEAD answer's body out and keeps its Content-Length.
    if uri.path() != METRICS_PATH {
        return response(
            StatusCode::NOT_FOUND,
            text,
            "not found; metrics are at /metrics\n",
        );
    }
    // A collection slot, for collecting and answering only.
    let Ok(slot) = server.scrapes.clone().acquire_owned().await else {
        return response(StatusCode::SERVICE_UNAVAILABLE, text, "shutting down\n");
    };
    *exchange.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
    let shared = server.clone();
    let Ok(collection) = tokio::task::spawn_blocking(move || collect(&shared.scope)).await else {
        return response(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            "collection failed\n",
        );
    };
    for e in &collection.errors {
        tracing::warn!("metrics: {e}");
    }
    response(
        StatusCode::OK,
        prometheus::CONTENT_TYPE,
        prometheus::render(&collection),
    )
}

/// A response; hyper adds Content-Length and `Connection: close`.
fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = status;
    let headers = reply.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    reply
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Closes after a response: FIN first, then whatever the client still sends (the rest of
/// an oversized request) is read and dropped for a moment, so that closing with unread data
/// does not reset the connection before the client has read the response.
async fn finish(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Write);
    let drain = async {
        let mut scratch = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut scratch) {
                Ok(0) => return,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
}

/// Writes a whole response, giving the client [`REQUEST_TIMEOUT`] to take it.
async fn answer(stream: &TcpStream, reply: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(REQUEST_TIMEOUT, write_all(stream, reply)).await {
        Ok(written) => written,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take the response",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback for the test's requests (each on a fresh connection, answered
    /// whole), stopped afterwards. Whatever is pinned on this machine (maybe nothing) is
    /// collected: only the HTTP side is checked here.
    fn with_server(test: impl FnOnce(&dyn Fn(&[u8]) -> String)) {
        use std::io::{Read, Write};
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            serve(
                "127.0.0.1:0".parse().unwrap(),
                Scope::All,
                async move {
                    let _ = stop_rx.await;
                },
                move |addr| tx.send(addr).unwrap(),
            )
        });
        let addr = rx.recv().unwrap();
        let get = move |req: &[u8]| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        test(&get);
        stop_tx.send(()).unwrap();
        server.join().unwrap().unwrap();
    }

    /// The status code of a response (the version is the request's: 1.0 or 1.1).
    fn status(response: &str) -> &str {
        response.split(' ').nth(1).unwrap_or_default()
    }

    #[test]
    fn requests_are_routed() {
        with_server(|get| {
            let ok = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
            assert_eq!(status(&ok), "200", "{ok}");
            let head = get(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n");
            assert_eq!(status(&head), "200", "{head}");
            assert!(head.ends_with("\r\n\r\n"), "no body after HEAD: {head}");
            for other in [
                &b"GET / HTTP/1.1\r\n\r\n"[..],
                b"GET /metricsx HTTP/1.1\r\n\r\n",
            ] {
                assert_eq!(status(&get(other)), "404", "{other:?}");
            }
            let post = get(b"POST /metrics HTTP/1.1\r\n\r\n");
            assert_eq!(status(&post), "405", "{post}");
            for bad in [
                &b"GET\r\n\r\n"[..],
                b"GET /metrics\r\n\r\n",
                b"GET metrics HTTP/1.1\r\n\r\n",
                b"GET /metrics SPDY/3\r\n\r\n",
                b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            ] {
                let r = get(bad);
                assert_eq!(status(&r), "400", "{bad:?}: {r}");
            }
        });
    }

    #[test]
    fn the_head_ends_at_the_blank_line() {
        with_server(|get| {
            let crlf = get(b"GET / HTTP/1.1\r\nA: b\r\n\r\n");
            assert_eq!(status(&crlf), "404", "{crlf}");
            let lf = get(b"GET / HTTP/1.1\n\n");
            assert_eq!(status(&lf), "404", "{lf}");
        });
    }

    #[test]
    fn responses_carry_length_and_close() {
        with_server(|get| {
            let r = get(b"GET /x HTTP/1.1\r\n\r\n");
            let body = "not found; metrics are at /metrics\n";
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
            assert!(
                r.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
                "{r}"
            );
            let length = format!("\r\nContent-Length: {}\r\n", body.len());
            assert!(r.contains(&length), "{r}");
            assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
            assert!(r.ends_with(&format!("\r\n\r\n{body}")), "{r}");
            let h = get(b"HEAD /x HTTP/1.1\r\n\r\n");
            assert!(h.contains(&length), "{h}");
            assert!(h.contains("\r\nConnection: close\r\n"), "{h}");
            assert!(h.ends_with("\r\n\r\n"), "{h}");
            let m = get(b"PUT /metrics HTTP/1.1\r\n\r\n");
            assert!(m.contains("\r\nAllow: GET, HEAD\r\n"), "{m}");
        });
    }

    #[test]
    fn the_oldest_waiting_head_is_closed_at_the_bound() {
        use tokio::sync::oneshot::error::TryRecvError;
        let mut pending = PendingHeads::default();
        let mut first: Vec<_> = (0..MAX_PENDING_HEADS).map(|_| pending.register()).collect();
        assert!(first
            .iter_mut()
            .all(|(_, rx)| rx.try_recv() == Err(TryRecvError::Empty)));
        let (_, mut newest) = pending.register();
        assert_eq!(pending.waiting.len(), MAX_PENDING_HEADS);
        assert_eq!(
            first[0].1.try_recv(),
            Err(TryRecvError::Closed),
            "oldest closed"
        );
        assert_eq!(first[1].1.try_recv(), Err(TryRecvError::Empty));
        // A connection whose head came in leaves room, and is never closed for it.
        pending.done(first[1].0);
        pending.register();
        assert_eq!(first[2].1.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(newest.try_recv(), Err(TryRecvError::Empty));
        assert!(pending.close_oldest());
        assert_eq!(first[2].1.try_recv(), Err(TryRecvError::Closed));
    }

    #[test]
    fn serves_metrics_404_and_stops() {
        with_server(|get| {
            let ok = get(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            assert!(
                ok.contains("Content-Type: text/plain; version=0.0.4"),
                "{ok}"
            );
            assert!(ok.contains("# TYPE netshim_endpoint_packets_total counter"));
            let body = ok.split("\r\n\r\n").nth(1).unwrap();
            let len: usize = ok
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(body.len(), len);
            assert!(get(b"GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
            let huge = [b'a'; MAX_REQUEST_BYTES + 10];
            let mut req = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
            req.extend_from_slice(&huge);
            assert!(get(&req).starts_with("HTTP/1.1 431 "));
        });
    }
}
