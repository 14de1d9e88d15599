//! `netshim metrics`: a minimal HTTP/1.1 server for Prometheus scrapes.
//!
//! `GET /metrics` (or `HEAD`) collects the counters fresh ([`super::collect`], on tokio's
//! blocking pool, which enters namespaces only on threads of its own) and answers with the
//! text exposition; any other path is 404, any other method 405. Every response closes the
//! connection. Requests are bounded ([`MAX_REQUEST_BYTES`] of headers, read within
//! [`REQUEST_TIMEOUT`]).
//!
//! Connections are accepted as they come: reading a request head holds no collection slot,
//! so idle or slow clients cannot hold up a scrape. At most [`MAX_SCRAPES`] collections
//! (and their answers) run at once; a complete request waits for a slot. At most
//! [`MAX_PENDING_HEADS`] connections may still be sending their head; the next one (or the
//! process running out of file descriptors) closes the oldest of them.

use std::{
    collections::BTreeMap,
    future::Future,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{oneshot, Semaphore},
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
/// The one path served.
pub const METRICS_PATH: &str = "/metrics";

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
    /// Collection slots.
    scrapes: Semaphore,
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
            scrapes: Semaphore::new(MAX_SCRAPES),
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
                            log::warn!("metrics: accept: {e}");
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
                    log::debug!("metrics: connection from {peer}: {e}");
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

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Metrics { head_only: bool },
    NotFound { head_only: bool },
    MethodNotAllowed,
    Bad,
}

/// Parses the request line of `head` (the bytes up to the blank line).
pub fn parse_request(head: &[u8]) -> Request {
    let Some(line) = head.split(|&b| b == b'\n').next() else {
        return Request::Bad;
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return Request::Bad;
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Request::MethodNotAllowed,
    };
    let path = target.split(['?', '#']).next().unwrap_or(target);
    if path == METRICS_PATH {
        Request::Metrics { head_only }
    } else {
        Request::NotFound { head_only }
    }
}

/// Index just past the blank line ending the request head, if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2))
}

enum Head {
    Complete(Vec<u8>),
    TooLarge,
    Closed,
}

async fn read_head(stream: &TcpStream) -> io::Result<Head> {
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut len = 0;
    loop {
        if let Some(end) = head_end(&buf[..len]) {
            buf.truncate(end);
            return Ok(Head::Complete(buf));
        }
        if len == buf.len() {
            return Ok(Head::TooLarge);
        }
        stream.readable().await?;
        match stream.try_read(&mut buf[len..]) {
            Ok(0) => return Ok(Head::Closed),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
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

/// A complete response (`Connection: close`).
pub fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
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

/// What became of the wait for a request head.
enum HeadWait {
    Read(io::Result<Head>),
    TimedOut,
    /// Closed to make room for newer connections.
    Evicted,
}

async fn handle(
    stream: TcpStream,
    server: &Arc<Server>,
    id: u64,
    closed: oneshot::Receiver<()>,
) -> io::Result<()> {
    let wait = tokio::select! {
        _ = closed => HeadWait::Evicted,
        head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&stream)) => match head {
            Ok(head) => HeadWait::Read(head),
            Err(_) => HeadWait::TimedOut,
        },
    };
    server.pending().done(id);
    let head = match wait {
        HeadWait::Read(head) => head?,
        HeadWait::Evicted => return Ok(()),
        HeadWait::TimedOut => {
            let r = response("408 Request Timeout", "text/plain", "timeout\n", false);
            answer(&stream, &r).await?;
            finish(&stream).await;
            return Ok(());
        }
    };
    let text = "text/plain; charset=utf-8";
    let reply = match head {
        Head::Closed => return Ok(()),
        Head::TooLarge => response(
            "431 Request Header Fields Too Large",
            text,
            "request too large\n",
            false,
        ),
        Head::Complete(head) => match parse_request(&head) {
            Request::Metrics { head_only } => {
                // A collection slot, for collecting and answering only.
                let slot = server.scrapes.acquire().await.map_err(io::Error::other)?;
                let shared = server.clone();
                let collection = tokio::task::spawn_blocking(move || collect(&shared.scope))
                    .await
                    .map_err(io::Error::other)?;
                for e in &collection.errors {
                    log::warn!("metrics: {e}");
                }
                let body = prometheus::render(&collection);
                let reply = response("200 OK", prometheus::CONTENT_TYPE, &body, head_only);
                answer(&stream, &reply).await?;
                drop(slot);
                finish(&stream).await;
                return Ok(());
            }
            Request::NotFound { head_only } => response(
                "404 Not Found",
                text,
                "not found; metrics are at /metrics\n",
                head_only,
            ),
            Request::MethodNotAllowed => {
                response("405 Method Not Allowed", text, "GET or HEAD only\n", false)
            }
            Request::Bad => response("400 Bad Request", text, "bad request\n", false),
        },
    };
    answer(&stream, &reply).await?;
    finish(&stream).await;
    Ok(())
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

    #[test]
    fn requests_are_routed() {
        assert_eq!(
            parse_request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head_only: false }
        );
        assert_eq!(
            parse_request(b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head_only: true }
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\n\r\n"),
            Request::NotFound { head_only: false }
        );
        assert_eq!(
            parse_request(b"GET /metricsx HTTP/1.1\r\n\r\n"),
            Request::NotFound { head_only: false }
        );
        assert_eq!(
            parse_request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::MethodNotAllowed
        );
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request(bad), Request::Bad, "{bad:?}");
        }
    }

    #[test]
    fn the_head_ends_at_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response("200 OK", "text/plain", "abc", false)).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\nabc"
        );
        let h = String::from_utf8(response("200 OK", "text/plain", "abc", true)).unwrap();
        assert!(h.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"));
        let m = String::from_utf8(response("405 Method Not Allowed", "t", "", false)).unwrap();
        assert!(m.contains("Allow: GET, HEAD\r\n"));
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
        use std::io::{Read, Write};
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            serve(
                "127.0.0.1:0".parse().unwrap(),
                // Whatever is pinned on this machine (maybe nothing): only the HTTP side is
                // checked here.
                Scope::All,
                async move {
                    let _ = stop_rx.await;
                },
                move |addr| tx.send(addr).unwrap(),
            )
        });
        let addr = rx.recv().unwrap();
        let get = |req: &[u8]| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(req).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
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
        stop_tx.send(()).unwrap();
        server.join().unwrap().unwrap();
    }
}
