//! `baton login ACCOUNT --remote`: logging in with no display. The
//! account's session runs headless; this serves one page that shows it (a
//! CDP screencast, a new picture whenever the page changes) and sends what
//! the person does back into it as trusted input: a click at a point of
//! the picture, typed text, a named key. **Done** asks baton to check and
//! save the session, as `baton login` does after Enter.
//!
//! The page is behind the same gate as the dashboard (`dashboard::Gate`):
//! the dashboard's token when flows.yaml sets one, loopback or
//! `dashboard.hosts` names otherwise, same-origin actions with
//! `X-Baton-Action`. A non-loopback address without a token is refused
//! before anything starts. Typed text is never logged or traced, and no
//! secret of flows.yaml is ever shown (the person types their own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::browser::Page;
use crate::dashboard::Gate;

/// How long one forwarded input may take.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

const PAGE: &str = include_str!("remote.html");

/// The page's address, load state and focused element (`input#code`, or
/// `a "Cart"` for one without an id).
const WHERE: &str = r#"(() => {
  const e = document.activeElement;
  const label = (x) => (x.id ? '#' + x.id : ' "' + (x.getAttribute('aria-label') || x.name || x.textContent || '').trim().slice(0, 24) + '"');
  const focus = e && e !== document.body ? e.tagName.toLowerCase() + label(e) : '';
  return { url: location.href, ready: document.readyState, focus };
})()"#;

#[derive(Clone)]
struct Remote {
    page: Arc<dyn Page>,
    /// The newest frame: `{"url", "ready", "focus", "jpeg"}`: the page's
    /// address, whether it has loaded and what has the focus, shown above
    /// the picture, and the picture as base64 JPEG.
    frame: watch::Receiver<Option<Arc<str>>>,
    done: mpsc::Sender<()>,
    token: Option<String>,
    hosts: Vec<String>,
    stop: CancellationToken,
}

/// One thing the person did.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Input {
    Click { x: f64, y: f64 },
    Text { text: String },
    Key { key: String },
}

/// Why the remote login page could not start.
#[derive(Debug, thiserror::Error)]
pub(super) enum RemoteError {
    #[error(
        "`{0}` is not loopback: set `dashboard.token` (or BATON_DASHBOARD_TOKEN) so only you can drive the session, or use --listen 127.0.0.1:PORT through an SSH tunnel"
    )]
    NeedsToken(SocketAddr),
    #[error("cannot stream the page: {0}")]
    Stream(#[source] crate::browser::PageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started remote login page.
pub(super) struct Running {
    pub(super) addr: SocketAddr,
    /// Receives once, when the person presses Done.
    pub(super) done: mpsc::Receiver<()>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.task).await;
    }
}

/// Serves the remote login page for `page` on `addr`.
pub(super) async fn start(
    addr: SocketAddr,
    token: Option<String>,
    hosts: Vec<String>,
    page: Arc<dyn Page>,
) -> Result<Running, RemoteError> {
    if !addr.ip().is_loopback() && token.is_none() {
        return Err(RemoteError::NeedsToken(addr));
    }
    let mut frames = page.screencast().await.map_err(RemoteError::Stream)?;
    let (frame_tx, frame) = watch::channel(None);
    let stop = CancellationToken::new();
    {
        let (stop, page) = (stop.clone(), page.clone());
        tokio::spawn(async move {
            use base64::Engine as _;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    f = frames.recv() => match f {
                        Some(jpeg) => {
                            // Where the page is, whether it has loaded, and
                            // what has the focus: what a person reads off a
                            // window (the address bar, the spinner, the
                            // caret) before typing.
                            let seen = page.eval(WHERE, INPUT_TIMEOUT).await.unwrap_or_default();
                            let url = seen["url"].as_str().unwrap_or_default();
                            let shown = serde_json::json!({
                                "url": crate::redact::url(url),
                                "ready": seen["ready"] == "complete",
                                "focus": seen["focus"],
                                "jpeg": base64::engine::general_purpose::STANDARD.encode(jpeg),
                            });
                            frame_tx.send_replace(Some(shown.to_string().into()));
                        }
                        None => break,
                    },
                }
            }
        });
    }
    let (done_tx, done) = mpsc::channel(1);
    let state = Remote {
        page,
        frame,
        done: done_tx,
        token,
        hosts,
        stop: stop.clone(),
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/frames", get(frames_sse))
        .route("/input", post(input))
        .route("/done", post(finish))
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state);
    let listen = |source| RemoteError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let task = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        })
    };
    Ok(Running {
        addr,
        done,
        stop,
        task,
    })
}

async fn gate(State(r): State<Remote>, req: Request, next: Next) -> Response {
    // The page itself is an empty shell; what it streams and sends is
    // guarded (the token travels as the dashboard's cookie or header).
    let is_shell = req.uri().path() == "/" && req.method() == axum::http::Method::GET;
    if !is_shell {
        let gate = Gate {
            token: r.token.as_deref(),
            hosts: &r.hosts,
        };
        if let Err(refused) = gate.check(&req) {
            return *refused;
        }
    }
    next.run(req).await
}

/// Server-sent `frame` events, each the page's address and a base64 JPEG
/// (JSON): the newest at once,
/// then each new one. A slow viewer skips frames, never queues them.
async fn frames_sse(State(r): State<Remote>) -> impl IntoResponse {
    let rx = r.frame.clone();
    let stop = r.stop.clone();
    let stream = futures::stream::unfold((rx, stop, true), |(mut rx, stop, first)| async move {
        if !first {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return None },
                () = stop.cancelled() => return None,
            }
        }
        let data = rx.borrow_and_update().clone();
        let event = match data {
            Some(b64) => Event::default().event("frame").data(&*b64),
            None => Event::default().comment("no picture yet"),
        };
        Some((Ok::<_, std::convert::Infallible>(event), (rx, stop, false)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn input(State(r): State<Remote>, Json(i): Json<Input>) -> Response {
    let done = match i {
        Input::Click { x, y } => r.page.click_at(x, y, INPUT_TIMEOUT).await,
        Input::Text { text } => r.page.type_text(&text, INPUT_TIMEOUT).await,
        Input::Key { key } => r.page.press(&key, INPUT_TIMEOUT).await,
    };
    match done {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"error": e.to_string()}).to_string(),
        )
            .into_response(),
    }
}

async fn finish(State(r): State<Remote>) -> Response {
    let _ = r.done.try_send(());
    Json(serde_json::json!({"ok": true, "next": "baton checks the login and saves the session; see the terminal"})).into_response()
}
