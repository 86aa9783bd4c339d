//! Upstream servers for gateway tests, each on its own loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;

/// A running upstream; the server stops when this is dropped.
#[derive(Debug)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// An upstream that answers every request with JSON describing it:
    /// `{"method","path","query","headers":{..},"body"}`.
    pub async fn echo() -> Self {
        Self::start(Duration::ZERO).await
    }

    /// An echo upstream that waits `delay` before answering.
    pub async fn slow(delay: Duration) -> Self {
        Self::start(delay).await
    }

    async fn start(delay: Duration) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("loopback"), delay).await
    }

    /// An echo upstream on a given address (e.g. one that was down before).
    pub async fn echo_on(addr: SocketAddr) -> Self {
        Self::start_on(addr, Duration::ZERO).await
    }

    async fn start_on(addr: SocketAddr, delay: Duration) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .fallback(echo)
            .with_state((hits.clone(), delay));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, hits, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    State((hits, delay)): State<(Arc<AtomicUsize>, Duration)>,
    mut req: Request,
) -> axum::response::Response {
    hits.fetch_add(1, Ordering::SeqCst);
    // `Upgrade: echo` switches protocols and echoes every byte back.
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let io = hyper_util::rt::TokioIo::new(upgraded);
                let (mut reader, mut writer) = tokio::io::split(io);
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        return axum::response::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(axum::body::Body::empty())
            .expect("valid response");
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, 10 << 20)
        .await
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = header_map(&parts.headers);
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

fn header_map(h: &HeaderMap) -> serde_json::Map<String, serde_json::Value> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_owned()),
            )
        })
        .collect()
}

/// A loopback address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    l.local_addr().expect("bound address")
}

/// A server that answers every GET with one JSON document (a JWKS, say) and
/// counts the requests.
#[derive(Debug)]
pub struct JsonServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served so far.
    pub hits: Arc<AtomicUsize>,
    doc: Arc<std::sync::Mutex<serde_json::Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl JsonServer {
    /// Serves `doc` at every path.
    pub async fn start(doc: serde_json::Value) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let doc = Arc::new(std::sync::Mutex::new(doc));
        let counter = hits.clone();
        let served = doc.clone();
        let app = Router::new().fallback(move || {
            let doc = served.lock().expect("not poisoned").clone();
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::Json(doc)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            hits,
            doc,
            task,
        }
    }

    /// Serves `doc` from now on.
    pub fn set(&self, doc: serde_json::Value) {
        *self.doc.lock().expect("not poisoned") = doc;
    }

    /// Its URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One canned answer of a [`Scripted`] upstream.
#[derive(Debug, Clone)]
pub struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    delay: Duration,
}

impl Answer {
    /// `200` with a JSON body (`Content-Type: application/json`).
    pub fn json(doc: serde_json::Value) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(doc.to_string()),
            delay: Duration::ZERO,
        }
    }

    /// `200` with a plain-text body.
    pub fn text(body: &str) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from(body.to_owned()),
            delay: Duration::ZERO,
        }
    }

    /// With another status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// With one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Answered after `delay`.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// What a [`Scripted`] upstream saw of a request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The query string, if any.
    pub query: Option<String>,
    /// The request headers.
    pub headers: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Default)]
struct Script {
    answers: std::collections::HashMap<String, Answer>,
    hits: std::collections::HashMap<String, usize>,
    last: std::collections::HashMap<String, Seen>,
}

/// An upstream that answers each path with a canned [`Answer`] (404 for
/// others), counting hits per path and keeping the last request per path.
#[derive(Debug)]
pub struct Scripted {
    /// Where it listens.
    pub addr: SocketAddr,
    script: Arc<std::sync::Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Scripted {
    /// Starts with no answers.
    pub async fn start() -> Self {
        let script = Arc::new(std::sync::Mutex::new(Script::default()));
        let state = script.clone();
        let app = Router::new().fallback(move |req: Request| {
            let state = state.clone();
            async move {
                let path = req.uri().path().to_owned();
                let answer = {
                    let mut s = state.lock().expect("not poisoned");
                    *s.hits.entry(path.clone()).or_default() += 1;
                    s.last.insert(
                        path.clone(),
                        Seen {
                            query: req.uri().query().map(str::to_owned),
                            headers: header_map(req.headers()),
                        },
                    );
                    s.answers.get(&path).cloned()
                };
                let Some(a) = answer else {
                    return axum::http::StatusCode::NOT_FOUND.into_response();
                };
                if !a.delay.is_zero() {
                    tokio::time::sleep(a.delay).await;
                }
                let mut resp = axum::response::Response::builder().status(a.status);
                for (k, v) in &a.headers {
                    resp = resp.header(k.as_str(), v.as_str());
                }
                resp.body(axum::body::Body::from(a.body))
                    .expect("valid response")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, script, task }
    }

    /// Answers `path` with `answer` from now on.
    pub fn set(&self, path: &str, answer: Answer) {
        self.script
            .lock()
            .expect("not poisoned")
            .answers
            .insert(path.to_owned(), answer);
    }

    /// Requests served for `path` so far.
    pub fn hits(&self, path: &str) -> usize {
        let s = self.script.lock().expect("not poisoned");
        s.hits.get(path).copied().unwrap_or(0)
    }

    /// The last request for `path`.
    pub fn last(&self, path: &str) -> Option<Seen> {
        let s = self.script.lock().expect("not poisoned");
        s.last.get(path).cloned()
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}
