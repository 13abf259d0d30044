//! The live dashboard: a status page, a JSON API, operator actions, run
//! history with failure screenshots, and Prometheus metrics.
//!
//! It reads snapshots through a [`View`] (registry, state, scheduler
//! status, scripts, browser health), which lends out no handle that could
//! change anything, and sends actions to the scheduler as [`Command`]s, so
//! "run now" or "reset" go through the same waits and locks as a cycle; it
//! never touches the registry or the state file itself.
//!
//! Security: bound to loopback by default; any other address needs a token
//! (checked when `flows.yaml` is read). When a token is set, every API
//! request needs it, as `Authorization: Bearer ...` or as the `baton_token`
//! cookie the page sets when the token is entered. The page itself is public:
//! it holds no data. Actions also need the `X-Baton-Action` header, which a
//! cross-site form cannot send, so no other web page can press the buttons.
//! Every response passes through the redactor, so no secret value leaves.
//!
//! DNS rebinding: a web page on `attacker.example` whose name later
//! resolves to 127.0.0.1 is same-origin with a loopback dashboard, so the
//! action header alone does not stop it. Without a token, a request must
//! name a loopback host (`127.0.0.1`, `localhost`, `[::1]`) or one listed in
//! `dashboard.hosts` in its `Host` header; and every action whose `Origin`
//! is sent must come from that same host.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::browser::BrowserHealth;
use crate::id::TargetId;
use crate::redact::Redactor;
use crate::registry::RunInfo;
use crate::scheduler::{Command, SchedulerStatus};
use crate::script::ScriptStatus;
use crate::state::Status;

pub mod listener;
mod login;
pub use login::Logins;
mod targets;
pub mod view;

pub use view::{Sources, View};

/// The API's paths, for the router and for clients (the CLI).
pub mod routes {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

    pub const STATUS: &str = "/api/status";
    pub const RUNS: &str = "/api/runs";
    pub const EVENTS: &str = "/api/events";
    pub const PAUSE: &str = "/api/pause";
    pub const RESUME: &str = "/api/resume";
    pub const RUN_NOW: &str = "/api/run-now";
    pub const RESET: &str = "/api/targets/{id}/reset";
    pub const RESOLVE: &str = "/api/targets/{id}/resolve";
    /// Add a target (POST).
    pub const TARGETS: &str = "/api/targets";
    /// Change (PATCH) or remove (DELETE) a target.
    pub const TARGET: &str = "/api/targets/{id}";
    /// A target's price and stock history, and its purchases.
    pub const OBSERVATIONS: &str = "/api/targets/{id}/observations";
    pub const METRICS: &str = "/metrics";
    pub const SHOT: &str = "/shots/{name}";
    /// A run's trace, by its number (`12` or `r12`).
    pub const TRACE: &str = "/api/runs/{run}/trace";
    /// Start logging an account in (POST); answers the login's page.
    pub const ACCOUNT_LOGIN: &str = "/api/accounts/{id}/login";
    /// A login's page, and under it its `frames`, `input`, `done` and
    /// `cancel`.
    pub const LOGIN_PAGE: &str = "/login/{id}/";

    /// `template` with `{id}` replaced by `id`, percent-encoded: an id may
    /// hold `/`, `?` or a space.
    pub fn for_target(template: &str, id: &str) -> String {
        template.replace(
            "{id}",
            &utf8_percent_encode(id, NON_ALPHANUMERIC).to_string(),
        )
    }
}

const PAGE: &str = include_str!("page.html");

/// What the dashboard reads and where it sends actions.
#[derive(Clone)]
pub struct Dashboard {
    pub token: Option<String>,
    /// Host names accepted besides loopback ones (`dashboard.hosts`).
    pub hosts: Vec<String>,
    /// What it shows.
    pub view: View,
    /// What it asks the scheduler to do.
    pub commands: mpsc::Sender<Command>,
    pub redactor: Arc<Redactor>,
    /// Fires when the dashboard stops. Every long-lived response (the live
    /// page's event stream) races it: a graceful shutdown waits for open
    /// responses, so one that never ended kept a stopping baton alive for
    /// as long as a browser tab stayed open. [`start`] sets it to the
    /// server's own stop token.
    pub stop: CancellationToken,
    /// The accounts being logged in from this dashboard.
    pub logins: login::Logins,
}

/// One target as the page shows it.
#[derive(Serialize)]
struct TargetView {
    id: TargetId,
    url: String,
    flow: String,
    /// The account it buys on; absent for a guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<crate::id::AccountId>,
    status: Status,
    last_outcome: Option<String>,
    last_order: Option<String>,
    last_error: Option<String>,
    #[serde(with = "crate::time::rfc3339_opt")]
    updated_at: Option<std::time::SystemTime>,
    runs: u64,
    active: bool,
    /// The newest observation of its price and stock, and how many are
    /// kept (the chart is fetched when this changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    observed: Option<crate::observations::Observation>,
    observations: usize,
    /// Why its schedule skipped it, and when it is next due.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_due: Option<String>,
}

/// An account as the page shows it, with its Log in button.
#[derive(Serialize)]
struct AccountView {
    id: crate::id::AccountId,
    /// Why its targets wait after a failed login, if they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    logged_out: Option<String>,
    /// A person is logging it in (its page is `/login/ID/`).
    logging_in: bool,
    /// Whether it has a page to log in on (`login_url`, or its check's).
    can_log_in: bool,
}

/// A quarantined session and who it blocks.
#[derive(Serialize)]
struct QuarantineView {
    #[serde(flatten)]
    quarantine: crate::registry::Quarantine,
    /// Runnable targets that cannot start while no session is free.
    blocks: Vec<TargetId>,
}

/// Everything `GET /api/status` returns.
#[derive(Serialize)]
struct StatusView {
    version: &'static str,
    scheduler: SchedulerStatus,
    active: Vec<RunInfo>,
    /// Sessions no run may use until an operator resolves their target
    /// (I9), and the runnable targets that waits for.
    quarantined: Vec<QuarantineView>,
    targets: Vec<TargetView>,
    accounts: Vec<AccountView>,
    scripts: Vec<ScriptStatus>,
    /// Hosts that asked baton to slow down: their monitors are paused.
    slowed_hosts: Vec<crate::script::politeness::SlowHost>,
    browser: BrowserHealth,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<crate::cluster::ClusterHealth>,
    /// Each notification channel: ok or failing, what is pending, dropped.
    notifications: Vec<crate::notify::ChannelStatus>,
    recent: Vec<crate::logging::Event>,
    runs_total: u64,
    cycles_total: u64,
    #[serde(with = "crate::time::rfc3339")]
    now: std::time::SystemTime,
}

impl Dashboard {
    fn status_view(&self) -> StatusView {
        let cfg = self.view.config();
        let doc = self.view.targets();
        let active = self.view.runs();
        let not_due = self.view.scheduler().borrow().not_due.clone();
        let targets = cfg
            .targets
            .iter()
            .map(|t| {
                let s = doc.targets.get(t.id.as_str()).cloned().unwrap_or_default();
                let (observed, observations) = self
                    .view
                    .last_observation(t.id.as_str())
                    .map_or((None, 0), |(o, n)| (Some(o), n));
                TargetView {
                    id: t.id.clone(),
                    url: t.url.clone(),
                    flow: t.flow.clone(),
                    account: t.account.clone(),
                    status: s.status,
                    last_outcome: s.last_outcome,
                    last_order: s.last_order,
                    last_error: s.last_error,
                    updated_at: s.updated_at,
                    runs: s.runs,
                    active: active.iter().any(|r| r.target == t.id),
                    observed,
                    observations,
                    not_due: not_due
                        .iter()
                        .find(|n| n.target == t.id)
                        .map(|n| n.why.clone()),
                }
            })
            .collect();
        let sessions = cfg.cycle.max_concurrent_runs;
        let starved = self.view.starved(sessions);
        let quarantined = self
            .view
            .quarantined()
            .into_iter()
            .map(|q| QuarantineView {
                blocks: cfg
                    .targets
                    .iter()
                    .filter(|t| {
                        starved
                            && t.id != q.target
                            && doc
                                .targets
                                .get(t.id.as_str())
                                .is_none_or(|s| s.status.is_runnable())
                    })
                    .map(|t| t.id.clone())
                    .collect(),
                quarantine: q,
            })
            .collect();
        let logins = self.view.logins();
        let accounts = cfg
            .accounts
            .values()
            .map(|a| AccountView {
                id: a.id.clone(),
                logged_out: self.view.logged_out(&a.id),
                logging_in: logins.contains(&a.id),
                can_log_in: a.login_page().is_some(),
            })
            .collect();
        let runs_total = [
            Status::Ready,
            Status::Completed,
            Status::Failed,
            Status::TimedOut,
            Status::InDoubt,
        ]
        .iter()
        .map(|s| self.view.runs_ended(s.as_str()))
        .sum();
        StatusView {
            version: env!("CARGO_PKG_VERSION"),
            scheduler: self.view.scheduler().borrow().clone(),
            active,
            quarantined,
            targets,
            accounts,
            scripts: self.view.scripts(),
            slowed_hosts: self.view.slowed_hosts(),
            browser: self.view.browser(),
            cluster: self.view.cluster(),
            notifications: self.view.notifications(),
            recent: self.view.recent(),
            runs_total,
            cycles_total: self.view.cycles(),
            now: std::time::SystemTime::now(),
        }
    }

    /// JSON with every secret masked.
    fn json(&self, v: &impl Serialize) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.masked(v)).into_response()
    }

    /// `v` as JSON text with secrets masked in its strings: structurally,
    /// so the document stays valid and numbers are never touched.
    fn masked(&self, v: &impl Serialize) -> String {
        let mut value = serde_json::to_value(v).unwrap_or_else(|e| json!({"error": e.to_string()}));
        self.redactor.json(&mut value);
        value.to_string()
    }
}

/// The router. `fn app` so tests can call it without a socket.
pub fn app(d: Dashboard) -> Router {
    let api = Router::new()
        .route(routes::STATUS, get(status))
        .route(routes::RUNS, get(runs))
        .route(routes::EVENTS, get(events))
        .route(routes::PAUSE, post(pause))
        .route(routes::RESUME, post(resume))
        .route(routes::RUN_NOW, post(run_now))
        .route(routes::RESET, post(reset))
        .route(routes::RESOLVE, post(resolve))
        .route(routes::TARGETS, post(targets::add))
        .route(
            routes::TARGET,
            axum::routing::patch(targets::change).delete(targets::remove),
        )
        .route(routes::METRICS, get(metrics))
        .route(routes::SHOT, get(shot))
        .route(routes::TRACE, get(trace))
        .route(routes::OBSERVATIONS, get(observations))
        .route(routes::ACCOUNT_LOGIN, post(login::start))
        .route("/login/{id}/frames", get(login::frames))
        .route("/login/{id}/input", post(login::input))
        .route("/login/{id}/done", post(login::done))
        .route("/login/{id}/cancel", post(login::cancel))
        .layer(middleware::from_fn_with_state(d.clone(), auth));
    Router::new()
        .route("/", get(page))
        .route(routes::LOGIN_PAGE, get(login::page))
        .merge(api)
        .with_state(d)
}

/// A running dashboard server.
pub struct Running {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

/// Serves the dashboard on `addr` until `stop` fires, with the default
/// connection [`listener::Limits`].
pub async fn start(
    addr: SocketAddr,
    d: Dashboard,
    stop: CancellationToken,
) -> std::io::Result<Running> {
    start_with(addr, d, stop, listener::Limits::default()).await
}

/// [`start`] with other connection limits (tests).
pub async fn start_with(
    addr: SocketAddr,
    d: Dashboard,
    stop: CancellationToken,
    limits: listener::Limits,
) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let listener = listener::Bounded::new(listener, limits);
    let d = Dashboard {
        stop: stop.clone(),
        ..d
    };
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app(d))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "dashboard stopped");
        }
    });
    tracing::info!(%addr, "dashboard on http://{addr}");
    Ok(Running { addr, task })
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// Compares without an early exit, so timing does not tell how much of a
/// guessed token was right.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "baton_token")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
}

/// The host part of a `Host` header or an origin's authority, lowercase:
/// `127.0.0.1:7878` → `127.0.0.1`, `[::1]:80` → `::1`.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    a.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(a.clone(), |(h, _)| h.to_owned())
}

fn is_loopback_name(host: &str) -> bool {
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether `origin` is the dashboard page's own, for a request sent to
/// `host`: the same host and port (another port on 127.0.0.1 is another
/// site: the demo shop, any local service), and the scheme the dashboard
/// speaks, `http`. `https` is accepted only for a name in
/// `dashboard.hosts` reached on its default port: a TLS proxy in front.
fn same_origin(g: &Gate<'_>, origin: &str, host: Option<&str>) -> bool {
    let (Ok(o), Some(host)) = (reqwest::Url::parse(origin), host) else {
        return false;
    };
    let Ok(sent) = reqwest::Url::parse(&format!("{}://{host}", o.scheme())) else {
        return false;
    };
    let proxied = o.scheme() == "https"
        && o.port().is_none()
        && o.host_str().is_some_and(|h| g.hosts.iter().any(|x| x == h));
    (o.scheme() == "http" || proxied)
        && o.host_str() == sent.host_str()
        && o.port_or_known_default() == sent.port_or_known_default()
}

/// Refuses requests a page on another site could make through DNS
/// rebinding (see the module docs).
fn check_origin(g: &Gate<'_>, req: &Request) -> Result<(), String> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(host_name);
    if g.token.is_none()
        && let Some(h) = &host
        && !is_loopback_name(h)
        && !g.hosts.iter().any(|x| x == h)
    {
        return Err(format!(
            "host `{h}` is not this dashboard's: use 127.0.0.1 or localhost, add the name to `dashboard.hosts`, or set a token"
        ));
    }
    let reads = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !reads && let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !same_origin(g, origin, host) {
            return Err(format!(
                "actions must come from the dashboard's own page, not from `{origin}`"
            ));
        }
    }
    Ok(())
}

/// What every request to the dashboard (and to `baton login --remote`'s
/// page) must pass: the Host and Origin checks, the token when there is
/// one, and `X-Baton-Action` on anything but a read.
pub(crate) struct Gate<'a> {
    pub(crate) token: Option<&'a str>,
    pub(crate) hosts: &'a [String],
}

impl Gate<'_> {
    /// The refusal, if `req` does not pass.
    pub(crate) fn check(&self, req: &Request) -> Result<(), Box<Response>> {
        if let Err(why) = check_origin(self, req) {
            return Err(Box::new(error(StatusCode::FORBIDDEN, why)));
        }
        if let Some(token) = self.token {
            let ok = presented_token(req.headers()).is_some_and(|t| same(&t, token));
            if !ok {
                return Err(Box::new(
                    (
                        StatusCode::UNAUTHORIZED,
                        [(header::WWW_AUTHENTICATE, "Bearer")],
                        Json(json!({"error": "a dashboard token is required: send `Authorization: Bearer TOKEN`"})),
                    )
                        .into_response(),
                ));
            }
        }
        let reads = matches!(
            *req.method(),
            axum::http::Method::GET | axum::http::Method::HEAD
        );
        if !reads && !req.headers().contains_key("x-baton-action") {
            return Err(Box::new(error(
                StatusCode::FORBIDDEN,
                "actions need the `X-Baton-Action: 1` header (it keeps other web pages from pressing the buttons)",
            )));
        }
        Ok(())
    }
}

async fn auth(State(d): State<Dashboard>, req: Request, next: Next) -> Response {
    let gate = Gate {
        token: d.token.as_deref(),
        hosts: &d.hosts,
    };
    if let Err(refused) = gate.check(&req) {
        return *refused;
    }
    next.run(req).await
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn status(State(d): State<Dashboard>) -> Response {
    d.json(&d.status_view())
}

#[derive(Deserialize)]
struct RunsQuery {
    limit: Option<usize>,
}

async fn runs(State(d): State<Dashboard>, Query(q): Query<RunsQuery>) -> Response {
    let limit = q.limit.unwrap_or(50).min(1000);
    match d.view.history(limit).await {
        Ok(h) => d.json(&h),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Server-sent events: a `status` event whenever something changes (a run
/// registers, moves or ends, the scheduler changes phase), and at least
/// once a second for the clocks. The stream ends when the dashboard stops,
/// whether the client is reading or not.
async fn events(
    State(d): State<Dashboard>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let mut registry = d.view.run_changes();
    let mut status = d.view.scheduler();
    let mut finished = d.view.finished();
    let stop = d.stop.clone();
    let stream = async_stream(move |tx| async move {
        loop {
            let view = d.status_view();
            let text = d.masked(&view);
            // A client that stopped reading fills the channel: the send
            // must not outlast a stop either.
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                sent = tx.send(Event::default().event("status").data(text)) => {
                    if sent.is_err() {
                        return;
                    }
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = registry.changed() => {}
                _ = status.changed() => {}
                _ = finished.recv() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// A stream fed by a task, ended when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, std::convert::Infallible>>
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

async fn send(d: &Dashboard, make: impl FnOnce(oneshot::Sender<()>) -> Command) -> Response {
    let (tx, rx) = oneshot::channel();
    if d.commands.send(make(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler has stopped");
    }
    match tokio::time::timeout(Duration::from_secs(10), rx).await {
        Ok(Ok(())) => Json(json!({"ok": true})).into_response(),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is busy with a cycle; the request is queued",
        ),
    }
}

async fn pause(State(d): State<Dashboard>) -> Response {
    send(&d, Command::Pause).await
}

async fn resume(State(d): State<Dashboard>) -> Response {
    send(&d, Command::Resume).await
}

async fn run_now(State(d): State<Dashboard>) -> Response {
    send(&d, Command::RunNow).await
}

async fn target_command(
    d: &Dashboard,
    make: impl FnOnce(oneshot::Sender<Result<(), crate::scheduler::CommandError>>) -> Command,
) -> Response {
    let (tx, rx) = oneshot::channel();
    if d.commands.send(make(tx)).await.is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the scheduler has stopped");
    }
    match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(Ok(()))) => Json(json!({"ok": true})).into_response(),
        Ok(Ok(Err(e))) => error(StatusCode::CONFLICT, e.to_string()),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the scheduler is busy with a cycle; try again when it is sleeping",
        ),
    }
}

async fn reset(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    target_command(&d, |tx| Command::Reset(TargetId::new(&id), tx)).await
}

#[derive(Deserialize)]
struct ResolveQuery {
    #[serde(rename = "as")]
    to: String,
}

async fn resolve(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(q): Query<ResolveQuery>,
) -> Response {
    let to = match q.to.as_str() {
        "completed" => Status::Completed,
        "ready" => Status::Ready,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "cannot resolve as `{other}`: use `completed` (the order was placed) or `ready` (it was not)"
                ),
            );
        }
    };
    target_command(&d, |tx| Command::Resolve(TargetId::new(&id), to, tx)).await
}

async fn metrics(State(d): State<Dashboard>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.view.metrics_text(),
    )
        .into_response()
}

async fn trace(State(d): State<Dashboard>, Path(run): Path<String>) -> Response {
    let Ok(n) = run.trim_start_matches('r').parse::<u64>() else {
        return error(StatusCode::BAD_REQUEST, format!("bad run `{run}`"));
    };
    let dir = d.view.config().state_dir.clone();
    let read = tokio::task::spawn_blocking(move || {
        crate::trace::TraceStore::read(&dir, crate::id::RunId(n))
    })
    .await;
    match read {
        Ok(Ok(t)) => d.json(&t),
        Ok(Err(e @ crate::trace::TraceError::Missing(_))) => {
            error(StatusCode::NOT_FOUND, e.to_string())
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /api/targets/ID/observations`: the target's kept observations
/// (oldest first) and its purchases among the last 1,000 runs, for the
/// chart.
async fn observations(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    if d.view.config().target(&id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no target `{id}`"));
    }
    let observations = d.view.observations(&id);
    let purchases: Vec<serde_json::Value> = match d.view.history(1000).await {
        Ok(h) => h
            .iter()
            .rev()
            .filter(|r| r.target.as_str() == id && r.order.is_some())
            .map(|r| {
                json!({
                    "at": crate::time::format(r.ended_at),
                    "order": r.order,
                    "price": r.price,
                })
            })
            .collect(),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    d.json(&json!({"target": id, "observations": observations, "purchases": purchases}))
}

async fn shot(State(d): State<Dashboard>, Path(name): Path<String>) -> Response {
    let ok = !name.is_empty()
        && std::path::Path::new(&name)
            .extension()
            .is_some_and(|e| e == "png")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.contains("..");
    if !ok {
        return error(StatusCode::BAD_REQUEST, "bad screenshot name");
    }
    let path = crate::state::shots_dir(&d.view.config().state_dir).join(&name);
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "image/png")], bytes).into_response(),
        Err(_) => error(StatusCode::NOT_FOUND, format!("no screenshot `{name}`")),
    }
}
