//! Real Chromium over the DevTools protocol (chromiumoxide).
//!
//! One Chromium process tree serves every run. Session 0 is the default
//! browser context, backed by the persistent profile (a login survives
//! restarts); sessions 1.. are isolated contexts created on demand. Each run
//! gets its own page (a foreground tab: trusted clicks in background tabs
//! hang), closed when the run ends.
//!
//! Every call is bounded by a timeout of our own, because chromiumoxide's
//! request timeout does not apply to page commands (chromiumoxide #13,
//! #228, #333). Each primitive is one in-page evaluation (`page.js`) plus,
//! for clicks and typing, the trusted input events: no fixed sleeps and no
//! polling from outside the page.
//!
//! When Chromium dies or the connection drops, the handler loop ends on the
//! first websocket error (left running, it would yield errors forever and
//! every call would hang until its timeout): the browser is marked dead,
//! every page's calls fail at once, the child is reaped, and the next
//! `new_page` launches a fresh browser on the same profile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams,
};
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::error::CdpError;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod frames;
mod network;
mod process;
mod storage;

use super::storage::StorageState;
use super::{
    Browser, BrowserError, BrowserHealth, Condition, Page, PageError, Selector, Selectors,
};
use crate::id::SessionId;
use crate::metrics::Metrics;

const HELPER: &str = include_str!("page.js");

/// Paints (`true`) or removes (`false`) the masks screenshots are taken
/// with: a box over every field that received a secret, every password and
/// card field, and every frame whose document this page cannot read (a
/// cross-origin frame: hosted card fields live there). Same-origin frames
/// are searched too. Returns how many boxes it painted.
const MASK: &str = r#"(paint) => {
  for (const m of document.querySelectorAll("[data-baton-mask]")) m.remove();
  if (!paint) return 0;
  const SEL = "[data-baton-secret], input[type=password], [autocomplete^='cc-'], [autocomplete$='password']";
  const boxes = [];
  const visit = (doc, dx, dy) => {
    for (const el of doc.querySelectorAll(SEL)) boxes.push([el.getBoundingClientRect(), dx, dy]);
    for (const f of doc.querySelectorAll("iframe, frame")) {
      const r = f.getBoundingClientRect();
      let inner = null;
      try { inner = f.contentDocument; } catch (e) { inner = null; }
      if (inner && inner.documentElement) visit(inner, dx + r.left, dy + r.top);
      else boxes.push([r, dx, dy]);
    }
  };
  visit(document, 0, 0);
  let n = 0;
  for (const [r, dx, dy] of boxes) {
    if (r.width <= 0 || r.height <= 0) continue;
    const d = document.createElement("div");
    d.setAttribute("data-baton-mask", "");
    d.style.cssText = `position:fixed;left:${r.left + dx - 1}px;top:${r.top + dy - 1}px;width:${r.width + 2}px;height:${r.height + 2}px;background:#ff00ff;z-index:2147483647;pointer-events:none;margin:0;padding:0;border:0`;
    document.documentElement.appendChild(d);
    n++;
  }
  return n;
}"#;

/// How long Chromium gets to start and print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful close may take before the process is killed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How to get a browser.
#[derive(Clone, Debug)]
pub struct ChromeConfig {
    /// `None`: `$BATON_CHROME`, then chromium, chromium-browser,
    /// google-chrome on PATH.
    pub executable: Option<PathBuf>,
    pub headless: bool,
    pub profile_dir: PathBuf,
    /// Attach to this DevTools URL instead of launching.
    pub connect: Option<String>,
    /// Extra switches, bare keys (`lang=en`).
    pub args: Vec<String>,
}

impl ChromeConfig {
    /// Headless Chromium found on PATH, on `profile_dir`, with no extra
    /// switches.
    pub fn headless(profile_dir: impl Into<PathBuf>) -> ChromeConfig {
        ChromeConfig {
            executable: None,
            headless: true,
            profile_dir: profile_dir.into(),
            connect: None,
            args: Vec::new(),
        }
    }
}

/// Finds the Chromium binary to launch.
pub fn find_executable(configured: Option<&Path>) -> Result<PathBuf, BrowserError> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(BrowserError::Launch {
                path: p.display().to_string(),
                reason: "no such file (from `browser.executable`)".into(),
            })
        };
    }
    if let Some(p) = std::env::var_os("BATON_CHROME") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BrowserError::Launch {
                path: p.display().to_string(),
                reason: "no such file (from $BATON_CHROME)".into(),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    Err(BrowserError::NotFound)
}

/// A running (or dead) browser.
struct Running {
    browser: chromiumoxide::Browser,
    /// The Chromium process, when baton launched it (not with `connect`).
    child: Option<tokio::process::Child>,
    handler: JoinHandle<()>,
    /// Cancelled when the connection is gone: every page's calls fail.
    dead: CancellationToken,
    contexts: HashMap<SessionId, BrowserContextId>,
    pid: Option<u32>,
    /// Which launch this is, so a late reaper never stops a newer browser.
    generation: u64,
}

struct Inner {
    config: ChromeConfig,
    running: tokio::sync::Mutex<Option<Running>>,
    health: Mutex<BrowserHealth>,
    metrics: Option<Arc<Metrics>>,
    /// Once shut down, no relaunch.
    shut: CancellationToken,
    /// The profile's lock, held from the first launch (or
    /// [`ChromeBrowser::lock_profile`]) for this browser's life.
    profile_lock: Mutex<Option<std::fs::File>>,
    launches: std::sync::atomic::AtomicU64,
    /// What each seeded session's context starts from (an account's
    /// login), applied whenever the context is created.
    seeds: Mutex<HashMap<SessionId, StorageState>>,
}

/// Chromium, launched (or attached to) on first use.
#[derive(Clone)]
pub struct ChromeBrowser {
    inner: Arc<Inner>,
}

impl ChromeBrowser {
    pub fn new(config: ChromeConfig, metrics: Option<Arc<Metrics>>) -> ChromeBrowser {
        ChromeBrowser {
            inner: Arc::new(Inner {
                config,
                running: tokio::sync::Mutex::new(None),
                health: Mutex::new(BrowserHealth {
                    state: "not_started".into(),
                    pid: None,
                    restarts: 0,
                    version: None,
                    last_error: None,
                }),
                metrics,
                shut: CancellationToken::new(),
                profile_lock: Mutex::new(None),
                launches: std::sync::atomic::AtomicU64::new(0),
                seeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Claims the profile for this baton (see `process::lock_profile`), or
    /// says which baton has it. Idempotent; nothing to claim when attaching
    /// with `browser.connect`. Call it at start-up to fail early; the first
    /// launch claims it anyway.
    pub fn lock_profile(&self) -> Result<(), BrowserError> {
        let cfg = &self.inner.config;
        if cfg.connect.is_some() {
            return Ok(());
        }
        let mut held = self
            .inner
            .profile_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if held.is_none() {
            let profile =
                std::path::absolute(&cfg.profile_dir).unwrap_or_else(|_| cfg.profile_dir.clone());
            *held = Some(process::lock_profile(&profile)?);
        }
        Ok(())
    }

    fn seed_of(&self, session: SessionId) -> Option<StorageState> {
        self.inner
            .seeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&session)
            .cloned()
    }

    /// Starts the browser if it is not running (or died), and returns it.
    async fn running(&self) -> Result<tokio::sync::MutexGuard<'_, Option<Running>>, BrowserError> {
        if self.inner.shut.is_cancelled() {
            return Err(BrowserError::ShutDown);
        }
        let mut running = self.inner.running.lock().await;
        if running.as_ref().is_some_and(|r| r.dead.is_cancelled())
            && let Some(mut old) = running.take()
        {
            stop(&mut old, false).await;
        }
        if running.is_none() {
            let restarting = self.health().state != "not_started";
            if restarting {
                self.set_health(|h| {
                    h.state = "restarting".into();
                    h.restarts += 1;
                });
                if let Some(m) = &self.inner.metrics {
                    m.browser_restarted();
                }
            }
            match self.start().await {
                Ok(r) => *running = Some(r),
                Err(e) => {
                    self.set_health(|h| {
                        h.state = "dead".into();
                        h.last_error = Some(e.to_string());
                    });
                    return Err(e);
                }
            }
        }
        Ok(running)
    }

    /// The context of `session` (`None` for session 0, the default
    /// context), created and seeded if it does not exist yet.
    async fn context(
        &self,
        r: &mut Running,
        session: SessionId,
    ) -> Result<Option<BrowserContextId>, BrowserError> {
        if session.0 == 0 {
            return Ok(None);
        }
        if let Some(c) = r.contexts.get(&session) {
            return Ok(Some(c.clone()));
        }
        let c = r
            .browser
            .create_browser_context(CreateBrowserContextParams::default())
            .await
            .map_err(|e| BrowserError::NewPage(e.to_string()))?;
        if let Some(seed) = self.seed_of(session) {
            storage::apply(&r.browser, Some(&c), &seed)
                .await
                .map_err(|e| {
                    BrowserError::NewPage(format!("cannot restore session {session}'s login: {e}"))
                })?;
        }
        r.contexts.insert(session, c.clone());
        Ok(Some(c))
    }

    fn set_health(&self, f: impl FnOnce(&mut BrowserHealth)) {
        f(&mut self
            .inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }

    async fn start(&self) -> Result<Running, BrowserError> {
        let cfg = &self.inner.config;
        let mut launched: Option<tokio::process::Child> = None;
        let mut pid = None;
        let (browser, mut handler) = if let Some(url) = &cfg.connect {
            tokio::time::timeout(LAUNCH_TIMEOUT, chromiumoxide::Browser::connect(url.clone()))
                .await
                .map_err(|_| BrowserError::Connect {
                    url: url.clone(),
                    reason: "timed out".into(),
                })?
                .map_err(|e| BrowserError::Connect {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
        } else {
            let exe = find_executable(cfg.executable.as_deref())?;
            // An absolute profile path, so the process can be recognised
            // by its command line whatever the working directory.
            let profile =
                std::path::absolute(&cfg.profile_dir).unwrap_or_else(|_| cfg.profile_dir.clone());
            std::fs::create_dir_all(&profile).map_err(|e| BrowserError::Launch {
                path: exe.display().to_string(),
                reason: format!("cannot create profile dir `{}`: {e}", profile.display()),
            })?;
            // Only a baton holding the profile's lock may stop a
            // Chromium it finds there: that one's baton is dead.
            self.lock_profile()?;
            process::stop_stale(&profile).await;
            let (mut child, ws) = process::launch(&process::Launch {
                exe: &exe,
                profile: &profile,
                headless: cfg.headless,
                args: &cfg.args,
                timeout: LAUNCH_TIMEOUT,
            })
            .await?;
            let handler_config = chromiumoxide::handler::HandlerConfig {
                viewport: None,
                request_timeout: Duration::from_secs(30),
                ..Default::default()
            };
            let attached = tokio::time::timeout(
                LAUNCH_TIMEOUT,
                chromiumoxide::Browser::connect_with_config(ws.clone(), handler_config),
            )
            .await;
            match attached {
                Ok(Ok((b, h))) => {
                    pid = child.id();
                    launched = Some(child);
                    (b, h)
                }
                Ok(Err(e)) => {
                    let _ = child.kill().await;
                    return Err(BrowserError::Launch {
                        path: exe.display().to_string(),
                        reason: format!("cannot attach to `{ws}`: {e}"),
                    });
                }
                Err(_) => {
                    let _ = child.kill().await;
                    return Err(BrowserError::Launch {
                        path: exe.display().to_string(),
                        reason: format!("attaching to `{ws}` timed out"),
                    });
                }
            }
        };
        let generation = self
            .inner
            .launches
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let dead = CancellationToken::new();
        let handler_dead = dead.clone();
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let handler = tokio::spawn(async move {
            while let Some(event) = handler.next().await {
                match event {
                    Ok(()) => {}
                    // The connection is gone: stop at once (see module docs).
                    Err(CdpError::Ws(e)) => {
                        tracing::warn!(error = %e, "lost the connection to Chromium");
                        break;
                    }
                    Err(CdpError::ChannelSendError(_) | CdpError::Io(_)) => break,
                    // Events chromiumoxide cannot parse are harmless.
                    Err(e) => tracing::debug!(error = %e, "devtools handler"),
                }
            }
            handler_dead.cancel();
            // Reap the child now rather than at the next launch, so a dead
            // Chromium never lingers as a zombie while baton is idle.
            if let Some(inner) = weak.upgrade() {
                ChromeBrowser { inner }.reap(generation).await;
            }
        });
        let version = browser.version().await.ok().map(|v| v.product);
        self.set_health(|h| {
            h.state = "running".into();
            h.pid = pid;
            h.version = version.clone();
        });
        tracing::info!(
            pid = pid.unwrap_or(0),
            version = version.as_deref().unwrap_or("?"),
            "browser started"
        );
        Ok(Running {
            browser,
            child: launched,
            handler,
            dead,
            contexts: HashMap::new(),
            pid,
            generation,
        })
    }

    /// Cleans up a browser whose connection died, if it is still the
    /// current one.
    async fn reap(&self, generation: u64) {
        let mut running = self.inner.running.lock().await;
        let is_current = running.as_ref().is_some_and(|r| r.generation == generation);
        if !is_current {
            return;
        }
        if let Some(mut old) = running.take() {
            if !self.inner.shut.is_cancelled() {
                tracing::warn!(
                    pid = old.pid.unwrap_or(0),
                    "Chromium is gone; it will be relaunched for the next run"
                );
                self.set_health(|h| {
                    h.state = "dead".into();
                    h.last_error = Some("the browser exited or the connection dropped".into());
                    h.pid = None;
                });
            }
            stop(&mut old, false).await;
        }
    }
}

/// Ends a browser: gracefully when it is alive, then by force; always
/// waits for the process so it is reaped.
async fn stop(r: &mut Running, graceful: bool) {
    r.dead.cancel();
    if graceful && !r.handler.is_finished() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, r.browser.close()).await;
    }
    if let Some(child) = &mut r.child {
        let waited = tokio::time::timeout(CLOSE_TIMEOUT, child.wait()).await;
        if waited.is_err() {
            let _ = child.kill().await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, child.wait()).await;
        }
        // Chromium's helpers share its process group (its own, see
        // `process`): take them down with it.
        if let Some(group) = r.pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
    r.handler.abort();
}

#[async_trait]
impl Browser for ChromeBrowser {
    async fn new_page(&self, session: SessionId) -> Result<Arc<dyn Page>, BrowserError> {
        let mut running = self.running().await?;
        let r = running.as_mut().expect("started above");
        let context = self.context(r, session).await?;
        let mut params = CreateTargetParams::new("about:blank");
        params.browser_context_id = context;
        let page = r
            .browser
            .new_page(params)
            .await
            .map_err(|e| BrowserError::NewPage(e.to_string()))?;
        let closed = r.dead.child_token();
        let net = network::Network::follow(&page, closed.clone())
            .await
            .map_err(|e| BrowserError::NewPage(e.to_string()))?;
        Ok(Arc::new(ChromePage {
            page,
            closed,
            dead: r.dead.clone(),
            net,
        }))
    }

    async fn seed(&self, session: SessionId, state: StorageState) -> Result<(), BrowserError> {
        self.inner
            .seeds
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session, state);
        Ok(())
    }

    async fn storage_state(
        &self,
        session: SessionId,
        origins: &[String],
    ) -> Result<StorageState, BrowserError> {
        let mut running = self.running().await?;
        let r = running.as_mut().expect("started above");
        let context = self.context(r, session).await?;
        storage::read(&r.browser, context.as_ref(), origins)
            .await
            .map_err(BrowserError::Storage)
    }

    fn health(&self) -> BrowserHealth {
        self.inner
            .health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn kill(&self) {
        let mut running = self.inner.running.lock().await;
        if let Some(mut r) = running.take() {
            tracing::warn!(pid = r.pid.unwrap_or(0), "killing the browser");
            if let Some(child) = &mut r.child {
                let _ = child.start_kill();
            }
            stop(&mut r, false).await;
            self.set_health(|h| {
                h.state = "dead".into();
                h.pid = None;
            });
        }
    }

    async fn shutdown(&self) {
        self.inner.shut.cancel();
        let mut running = self.inner.running.lock().await;
        if let Some(mut r) = running.take() {
            stop(&mut r, self.inner.config.connect.is_none()).await;
            tracing::info!(pid = r.pid.unwrap_or(0), "browser closed");
        }
        self.set_health(|h| {
            h.state = "stopped".into();
            h.pid = None;
        });
    }
}

/// One tab.
struct ChromePage {
    page: chromiumoxide::Page,
    /// Cancelled by `close` or when the browser dies.
    closed: CancellationToken,
    dead: CancellationToken,
    /// Requests in flight, for `network_idle`.
    net: Arc<network::Network>,
}

fn selector_json(sel: &Selectors) -> Value {
    Value::Array(
        sel.0
            .iter()
            .map(|s| match s {
                Selector::Css(v) => json!({"kind": "css", "value": v}),
                Selector::XPath(v) => json!({"kind": "xpath", "value": v}),
                Selector::Text(v) => json!({"kind": "text", "value": v}),
                // Split off by `split_frames` before the helper runs.
                Selector::Framed { inner, .. } => {
                    selector_json(&Selectors(vec![(**inner).clone()]))[0].clone()
                }
            })
            .collect(),
    )
}

/// An evaluation error that a navigation caused: retry on the new document.
fn is_navigation_race(msg: &str) -> bool {
    msg.contains("Execution context was destroyed")
        || msg.contains("Cannot find context")
        || msg.contains("Inspected target navigated or closed")
        || msg.contains("context with specified id")
}

impl ChromePage {
    /// Races `fut` against the page closing and bounds it by `bound`.
    async fn guard<T>(
        &self,
        bound: Duration,
        fut: impl Future<Output = Result<T, PageError>>,
    ) -> Result<T, PageError> {
        if self.closed.is_cancelled() {
            return Err(self.gone());
        }
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(self.gone()),
            r = tokio::time::timeout(bound, fut) => r.unwrap_or(Err(PageError::Timeout(bound))),
        }
    }

    fn gone(&self) -> PageError {
        if self.dead.is_cancelled() {
            PageError::Disconnected("Chromium exited or the connection dropped".into())
        } else {
            PageError::Closed
        }
    }

    /// Evaluates `expression` in the page's main world (awaiting a
    /// promise) and returns its value.
    async fn evaluate(&self, expression: String) -> Result<Value, PageError> {
        self.evaluate_in(expression, frames::Frame::default(), true)
            .await
    }

    /// Runs the helper's `op` on `sel`, retrying when a navigation destroys
    /// the document under it, until `timeout`.
    async fn helper(
        &self,
        sel: &Selectors,
        op: &str,
        opts: Value,
        timeout: Duration,
    ) -> Result<Value, PageError> {
        self.helper_with(sel, op, opts, None, timeout).await
    }

    /// [`ChromePage::helper`], with a JavaScript expression as the
    /// predicate of `until`'s `js` condition.
    async fn helper_with(
        &self,
        sel: &Selectors,
        op: &str,
        opts: Value,
        predicate: Option<&str>,
        timeout: Duration,
    ) -> Result<Value, PageError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let unmet = |now: &str| PageError::Unmet {
            cond: opts["label"].as_str().unwrap_or_default().to_owned(),
            now: now.to_owned(),
            waited: timeout,
        };
        let full = sel;
        let (frames, inner) = sel.split_frames().map_err(PageError::Other)?;
        let sel = &inner;
        loop {
            // Entered afresh on each try: a navigation destroys the frames'
            // contexts too.
            let frame = if frames.is_empty() {
                frames::Frame::default()
            } else {
                match self.enter(&frames, deadline).await {
                    Ok(f) => f,
                    Err(PageError::NotFound { .. }) => {
                        return Err(PageError::NotFound {
                            selector: full.clone(),
                            waited: timeout,
                        });
                    }
                    Err(e) => return Err(e),
                }
            };
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut opts = opts.clone();
            opts["timeout"] = json!(left.as_millis() as u64);
            // The predicate is the script's own expression, placed in an
            // arrow function so the helper can call it on every change.
            let predicate = predicate
                .map(|js| format!(", () => ({js}\n)"))
                .unwrap_or_default();
            let expr = format!(
                "({HELPER})({}, {}, {}{predicate})",
                selector_json(sel),
                json!(op),
                opts
            );
            match self.evaluate_in(expr, frame, true).await {
                Ok(mut v) => {
                    if v["found"].as_bool() == Some(true) {
                        // Points are in the frame's viewport; mouse input
                        // wants the page's.
                        if let (Some(x), Some(y)) = (v["x"].as_f64(), v["y"].as_f64()) {
                            v["x"] = json!(x + frame.offset.0);
                            v["y"] = json!(y + frame.offset.1);
                        }
                        return Ok(v);
                    }
                    if v["unmet"].as_bool() == Some(true) {
                        return Err(unmet(v["why"].as_str().unwrap_or("did not happen")));
                    }
                    return Err(match v["why"].as_str() {
                        Some(why) => PageError::Other(format!(
                            "element {full} was found but {why} after {}ms",
                            timeout.as_millis()
                        )),
                        None => PageError::NotFound {
                            selector: full.clone(),
                            waited: timeout,
                        },
                    });
                }
                Err(PageError::Script(m) | PageError::Other(m)) if is_navigation_race(&m) => {
                    if tokio::time::Instant::now() >= deadline {
                        if op == "until" {
                            return Err(unmet("was still navigating"));
                        }
                        return Err(PageError::NotFound {
                            selector: full.clone(),
                            waited: timeout,
                        });
                    }
                    // The new document is loading; evaluating again waits
                    // for its context.
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Focuses and clears the field, then types `text` (trusted input).
    /// `secret` marks the field so screenshots mask it.
    async fn type_into(
        &self,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
        secret: bool,
    ) -> Result<(), PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper(
                    sel,
                    "focus",
                    json!({"visible": true, "secret": secret}),
                    timeout,
                )
                .await?;
            if v["editable"].as_bool() != Some(true) {
                return Err(PageError::WrongElement {
                    selector: sel.clone(),
                    expected: "text field",
                });
            }
            if !text.is_empty() {
                self.page
                    .execute(InsertTextParams::new(text))
                    .await
                    .map_err(|e| cdp_error(&e))?;
            }
            Ok(())
        })
        .await
    }

    async fn mouse(&self, kind: DispatchMouseEventType, x: f64, y: f64) -> Result<(), PageError> {
        let mut p = DispatchMouseEventParams::new(kind, x, y);
        p.button = Some(MouseButton::Left);
        p.click_count = Some(1);
        self.page
            .execute(p)
            .await
            .map(drop)
            .map_err(|e| cdp_error(&e))
    }
}

fn cdp_error(e: &CdpError) -> PageError {
    match e {
        CdpError::Ws(_) | CdpError::ChannelSendError(_) | CdpError::Io(_) => {
            PageError::Disconnected(e.to_string())
        }
        CdpError::Timeout => PageError::Timeout(Duration::from_secs(30)),
        other => PageError::Other(other.to_string()),
    }
}

/// Margin for the answer of an in-page wait to arrive after the page's own
/// timer fired.
const MARGIN: Duration = Duration::from_millis(1500);

#[async_trait]
impl Page for ChromePage {
    async fn navigate(&self, url: &str, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout, async {
            self.page.goto(url).await.map(drop).map_err(|e| match e {
                CdpError::Ws(_) | CdpError::ChannelSendError(_) => {
                    PageError::Disconnected(e.to_string())
                }
                other => PageError::Navigation {
                    url: url.to_owned(),
                    reason: other.to_string(),
                },
            })
        })
        .await
        .map_err(|e| match e {
            PageError::Timeout(d) => PageError::Navigation {
                url: url.to_owned(),
                reason: format!("not loaded within {}ms", d.as_millis()),
            },
            other => other,
        })
    }

    async fn reload(&self, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout, async {
            self.page
                .reload()
                .await
                .map(drop)
                .map_err(|e| cdp_error(&e))
        })
        .await
    }

    async fn url(&self) -> Result<String, PageError> {
        self.guard(Duration::from_secs(10), async {
            let v = self.evaluate("location.href".into()).await?;
            Ok(v.as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    async fn title(&self) -> Result<String, PageError> {
        self.guard(Duration::from_secs(10), async {
            let v = self.evaluate("document.title".into()).await?;
            Ok(v.as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    async fn wait_for(&self, sel: &Selectors, timeout: Duration) -> Result<usize, PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper(sel, "wait", json!({"visible": true}), timeout)
                .await?;
            Ok(v["index"].as_u64().unwrap_or(0) as usize)
        })
        .await
    }

    async fn exists(&self, sel: &Selectors) -> Result<bool, PageError> {
        self.guard(Duration::from_secs(10), async {
            match self.helper(sel, "count", json!({}), Duration::ZERO).await {
                Ok(_) => Ok(true),
                Err(PageError::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn count(&self, sel: &Selectors) -> Result<usize, PageError> {
        self.guard(Duration::from_secs(10), async {
            match self.helper(sel, "count", json!({}), Duration::ZERO).await {
                Ok(v) => Ok(v["count"].as_u64().unwrap_or(0) as usize),
                Err(PageError::NotFound { .. }) => Ok(0),
                Err(e) => Err(e),
            }
        })
        .await
    }

    async fn text(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self.helper(sel, "text", json!({}), timeout).await?;
            Ok(v["value"].as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    async fn attr(
        &self,
        sel: &Selectors,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<String>, PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper(sel, "attr", json!({"name": name}), timeout)
                .await?;
            Ok(v["value"].as_str().map(str::to_owned))
        })
        .await
    }

    async fn value(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self.helper(sel, "value", json!({}), timeout).await?;
            match v["value"].as_str() {
                Some(s) => Ok(s.to_owned()),
                None => Err(PageError::WrongElement {
                    selector: sel.clone(),
                    expected: "form field",
                }),
            }
        })
        .await
    }

    async fn click(&self, sel: &Selectors, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper(sel, "point", json!({"visible": true}), timeout)
                .await?;
            let (x, y) = (
                v["x"].as_f64().unwrap_or(0.0),
                v["y"].as_f64().unwrap_or(0.0),
            );
            self.mouse(DispatchMouseEventType::MouseMoved, x, y).await?;
            self.mouse(DispatchMouseEventType::MousePressed, x, y)
                .await?;
            self.mouse(DispatchMouseEventType::MouseReleased, x, y)
                .await
        })
        .await
    }

    async fn fill(&self, sel: &Selectors, text: &str, timeout: Duration) -> Result<(), PageError> {
        self.type_into(sel, text, timeout, false).await
    }

    async fn fill_secret(
        &self,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.type_into(sel, text, timeout, true).await
    }

    async fn select(
        &self,
        sel: &Selectors,
        value: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper(
                    sel,
                    "select",
                    json!({"visible": true, "option": value}),
                    timeout,
                )
                .await?;
            if v.get("wrong").is_some() {
                return Err(PageError::WrongElement {
                    selector: sel.clone(),
                    expected: "<select>",
                });
            }
            if v.get("missing").is_some() {
                return Err(PageError::NoOption {
                    selector: sel.clone(),
                    value: value.to_owned(),
                });
            }
            Ok(())
        })
        .await
    }

    async fn press(&self, key: &str, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout, async {
            let def = chromiumoxide::keys::get_key_definition(key).ok_or_else(|| {
                PageError::Other(format!(
                    "unknown key `{key}` (use names like `Enter`, `Tab`, `a`)"
                ))
            })?;
            let text = def.text.or((def.key.len() == 1).then_some(def.key));
            let mut down = DispatchKeyEventParams::new(if text.is_some() {
                DispatchKeyEventType::KeyDown
            } else {
                DispatchKeyEventType::RawKeyDown
            });
            down.key = Some(def.key.into());
            down.code = Some(def.code.into());
            down.windows_virtual_key_code = Some(def.key_code);
            down.native_virtual_key_code = Some(def.key_code);
            down.text = text.map(str::to_owned);
            let mut up = down.clone();
            up.r#type = DispatchKeyEventType::KeyUp;
            up.text = None;
            self.page.execute(down).await.map_err(|e| cdp_error(&e))?;
            self.page
                .execute(up)
                .await
                .map(drop)
                .map_err(|e| cdp_error(&e))
        })
        .await
    }

    async fn eval(&self, js: &str, timeout: Duration) -> Result<Value, PageError> {
        self.guard(timeout, self.evaluate(js.to_owned())).await
    }

    async fn screenshot(&self, timeout: Duration) -> Result<Vec<u8>, PageError> {
        self.guard(timeout, async {
            // Paint over what must not reach pixels, capture, then take the
            // paint away. If masking fails, no screenshot is taken at all.
            self.evaluate(format!("({MASK})(true)")).await?;
            let p = CaptureScreenshotParams {
                format: Some(CaptureScreenshotFormat::Png),
                ..Default::default()
            };
            let shot = self.page.execute(p).await.map_err(|e| cdp_error(&e));
            let _ = self.evaluate(format!("({MASK})(false)")).await;
            let resp = shot?;
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(AsRef::<str>::as_ref(&resp.result.data))
                .map_err(|e| PageError::Other(format!("bad screenshot data: {e}")))
        })
        .await
    }

    async fn wait_until(&self, cond: &Condition, timeout: Duration) -> Result<Value, PageError> {
        let (sel, c, predicate) = match cond {
            Condition::Gone(s) => (s.clone(), json!({"kind": "gone"}), None),
            Condition::Count(s, cmp, n) => (
                s.clone(),
                json!({"kind": "count", "cmp": cmp.as_str(), "n": n}),
                None,
            ),
            Condition::Text(s, t) => (s.clone(), json!({"kind": "text", "text": t}), None),
            Condition::Js(js) => (
                Selectors(Vec::new()),
                json!({"kind": "js"}),
                Some(js.as_str()),
            ),
        };
        // Gone means not visible; counts include hidden elements, as
        // `count` does.
        let visible = !matches!(cond, Condition::Count(..));
        let opts = json!({"cond": c, "visible": visible, "label": cond.to_string()});
        self.guard(timeout + MARGIN, async {
            let v = self
                .helper_with(&sel, "until", opts, predicate, timeout)
                .await?;
            Ok(v["value"].clone())
        })
        .await
    }

    async fn network_idle(&self, quiet: Duration, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout + MARGIN, self.net.idle(quiet, timeout))
            .await
    }

    async fn cookie_header(&self, url: &str) -> Result<Option<String>, PageError> {
        use chromiumoxide::cdp::browser_protocol::network::GetCookiesParams;
        let params = GetCookiesParams::builder()
            .urls(vec![url.to_owned()])
            .build();
        self.guard(Duration::from_secs(10), async {
            let resp = self.page.execute(params).await.map_err(|e| cdp_error(&e))?;
            let pairs: Vec<String> = resp
                .result
                .cookies
                .iter()
                .map(|c| format!("{}={}", c.name, c.value))
                .collect();
            Ok((!pairs.is_empty()).then(|| pairs.join("; ")))
        })
        .await
    }

    async fn html(&self, timeout: Duration) -> Result<String, PageError> {
        self.guard(timeout, async {
            let v = self
                .evaluate("document.documentElement.outerHTML".into())
                .await?;
            Ok(v.as_str().unwrap_or_default().to_owned())
        })
        .await
    }

    async fn close(&self) {
        if self.closed.is_cancelled() {
            return;
        }
        // Abort calls in flight first, so nothing drives the page while it
        // closes.
        self.closed.cancel();
        if !self.dead.is_cancelled() {
            let close = self.page.clone().close();
            if tokio::time::timeout(CLOSE_TIMEOUT, close).await.is_err() {
                tracing::warn!("closing a page timed out");
            }
        }
    }
}

impl Drop for ChromePage {
    fn drop(&mut self) {
        if !self.closed.is_cancelled() {
            // A page dropped without close (a panic unwinding): close the
            // tab in the background so it does not linger.
            self.closed.cancel();
            let page = self.page.clone();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, page.close()).await;
                });
            }
        }
    }
}
