//! `baton login ACCOUNT --remote`: logging in with no display. The
//! account's session runs headless; this serves the [`Screen`] of it on its
//! own address until the person presses **Done** (baton then checks and
//! saves the session, as `baton login` does after Enter) or **Cancel**.
//!
//! The page is behind the same gate as the dashboard (`dashboard::Gate`):
//! the dashboard's token when flows.yaml sets one, loopback or
//! `dashboard.hosts` names otherwise, same-origin actions with
//! `X-Baton-Action`. A non-loopback address without a token is refused
//! before anything starts. No secret of flows.yaml is ever shown (the
//! person types their own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::browser::Page;
use crate::dashboard::Gate;
use crate::remote::{Input, PAGE, Screen};

#[derive(Clone)]
struct Remote {
    screen: Arc<Screen>,
    /// Done (true) or Cancel (false).
    done: mpsc::Sender<bool>,
    token: Option<String>,
    hosts: Vec<String>,
    stop: CancellationToken,
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
    /// Receives once: true when the person presses Done, false on Cancel.
    pub(super) done: mpsc::Receiver<bool>,
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
    let screen = Screen::start(page).await.map_err(RemoteError::Stream)?;
    let (done_tx, done) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let state = Remote {
        screen: Arc::new(screen),
        done: done_tx,
        token,
        hosts,
        stop: stop.clone(),
    };
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/frames", get(frames))
        .route("/input", post(input))
        .route("/done", post(finish))
        .route("/cancel", post(cancel))
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

async fn frames(State(r): State<Remote>) -> impl IntoResponse {
    r.screen.frames(r.stop.clone())
}

async fn input(State(r): State<Remote>, Json(i): Json<Input>) -> Response {
    r.screen.input(i).await
}

async fn finish(State(r): State<Remote>) -> Response {
    let _ = r.done.try_send(true);
    Json(serde_json::json!({"ended": true, "message": "baton checks the login and saves the session; see the terminal"})).into_response()
}

async fn cancel(State(r): State<Remote>) -> Response {
    let _ = r.done.try_send(false);
    Json(serde_json::json!({"ended": true, "message": "left without saving"})).into_response()
}
