//! Real Chromium over the DevTools protocol (chromiumoxide).
//!
//! The browser: launching (`process`) or attaching, relaunching after a
//! crash, browser contexts per session (seeded from stored state,
//! `storage`), and pages; a page's primitives are in `page`, frames in
//! `frames`, its network tracking in `network`.
//!
//! One Chromium process tree serves every run. Session 0 is the default
//! browser context, backed by the persistent profile (a login survives
//! restarts); sessions 1.. are isolated contexts created on demand. Each run
//! gets its own page (a foreground tab: trusted clicks in background tabs
//! hang), closed when the run ends.
//!
//! Opening a page costs 150-350 ms here (target, attach, the domains
//! chromiumoxide enables, our listeners): most of the time between a run's
//! start and its first request. So when a run's page closes, a fresh
//! *spare* page is opened for its session in the background, between
//! runs, and the session's next run takes it and brings it to the front.
//! The run still gets a page nobody has used (`about:blank`, no script
//! state, nothing in flight); only the opening moved off its path. At most
//! `spare_pages` spares exist (the oldest is closed past it); 0 turns them
//! off.
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
use chromiumoxide::cdp::browser_protocol::target::{
    CreateBrowserContextParams, CreateTargetParams,
};
use chromiumoxide::error::CdpError;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod frames;
mod network;
mod page;
mod process;
mod storage;

use page::ChromePage;

use super::storage::StorageState;
use super::{Browser, BrowserError, BrowserHealth, Page};
use crate::id::SessionId;
use crate::metrics::Metrics;
use crate::sync::lock;

/// How long Chromium gets to start and print its DevTools address.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a graceful close may take before the process is killed.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// How many sessions may have a spare page opened ahead of their next
    /// run (see the module's notes); 0 for none.
    pub spare_pages: usize,
    /// Kinds of request pages never make (`browser.block`).
    pub block: Vec<super::Blocked>,
}

/// The default of [`ChromeConfig::spare_pages`].
pub const SPARE_PAGES: usize = 4;

/// How long opening a spare may take before it is given up.
const SPARE_TIMEOUT: Duration = Duration::from_secs(10);

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
            spare_pages: SPARE_PAGES,
            block: Vec::new(),
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
    /// Watched by whoever reports relaunches (the notifier).
    health: tokio::sync::watch::Sender<BrowserHealth>,
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
    /// Pages opened ahead of a session's next run, oldest first.
    spares: Mutex<std::collections::VecDeque<(SessionId, ChromePage)>>,
    /// How many spares have been opened and how many taken, for tests and
    /// the benchmark to wait on and check.
    spare_counts: tokio::sync::watch::Sender<(u64, u64)>,
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
                health: tokio::sync::watch::Sender::new(BrowserHealth {
                    state: "not_started".into(),
                    pid: None,
                    restarts: 0,
                    version: None,
                    last_error: None,
                    endpoints: Vec::new(),
                }),
                metrics,
                shut: CancellationToken::new(),
                profile_lock: Mutex::new(None),
                launches: std::sync::atomic::AtomicU64::new(0),
                seeds: Mutex::new(HashMap::new()),
                spares: Mutex::new(std::collections::VecDeque::new()),
                spare_counts: tokio::sync::watch::Sender::new((0, 0)),
            }),
        }
    }

    /// How many spare pages have been opened, and how many taken by a
    /// run, so far; changes as they happen.
    pub fn spare_counts(&self) -> tokio::sync::watch::Receiver<(u64, u64)> {
        self.inner.spare_counts.subscribe()
    }

    fn spares(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(SessionId, ChromePage)>> {
        lock(&self.inner.spares)
    }

    /// The spare page of `session`, if it has one that is still alive.
    fn take_spare(&self, session: SessionId) -> Option<ChromePage> {
        let mut spares = self.spares();
        let i = spares.iter().position(|(s, _)| *s == session)?;
        let (_, page) = spares.remove(i)?;
        drop(spares);
        // A spare from before a relaunch died with its browser; dropping
        // it is enough.
        page.is_alive().then_some(page)
    }

    /// Opens a spare page for `session` if it has none, in the background
    /// of a running browser (never launching one for it).
    async fn open_spare(&self, session: SessionId) {
        let max = self.inner.config.spare_pages;
        if max == 0 || self.inner.shut.is_cancelled() {
            return;
        }
        if self.spares().iter().any(|(s, _)| *s == session) {
            return;
        }
        let opened = tokio::time::timeout(SPARE_TIMEOUT, async {
            let mut running = self.inner.running.lock().await;
            let r = running.as_mut().filter(|r| !r.dead.is_cancelled())?;
            let context = self.context(r, session).await.ok()?;
            self.open(r, context, true).await.ok()
        })
        .await;
        let Ok(Some(page)) = opened else { return };
        // Kept, or the page to close instead: another spare for the
        // session won the race, baton is stopping, or the oldest spare
        // makes room.
        let unwanted = {
            let mut spares = self.spares();
            if self.inner.shut.is_cancelled() || spares.iter().any(|(s, _)| *s == session) {
                Some(page)
            } else {
                spares.push_back((session, page));
                self.inner.spare_counts.send_modify(|c| c.0 += 1);
                (spares.len() > max)
                    .then(|| spares.pop_front())
                    .flatten()
                    .map(|(_, p)| p)
            }
        };
        if let Some(p) = unwanted {
            p.close_now().await;
        }
    }

    /// Opens a page in `context` of the running browser. A spare opens in
    /// the background, so it never takes the front from a page in use.
    async fn open(
        &self,
        r: &Running,
        context: Option<BrowserContextId>,
        spare: bool,
    ) -> Result<ChromePage, BrowserError> {
        let mut params = CreateTargetParams::new("about:blank");
        params.browser_context_id = context;
        if spare {
            params.background = Some(true);
        }
        let page = r
            .browser
            .new_page(params)
            .await
            .map_err(|e| BrowserError::NewPage(e.to_string()))?;
        let closed = r.dead.child_token();
        let net = network::Network::follow(&page, closed.clone(), &self.inner.config.block)
            .await
            .map_err(|e| BrowserError::NewPage(e.to_string()))?;
        Ok(ChromePage::new(page, closed, r.dead.clone(), net))
    }

    /// Closes every spare page (at shutdown: an attached browser outlives
    /// baton, and must not keep our tabs).
    async fn close_spares(&self) {
        let spares: Vec<_> = self.spares().drain(..).collect();
        for (_, p) in spares {
            p.close_now().await;
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
        let mut held = lock(&self.inner.profile_lock);
        if held.is_none() {
            let profile =
                std::path::absolute(&cfg.profile_dir).unwrap_or_else(|_| cfg.profile_dir.clone());
            *held = Some(process::lock_profile(&profile)?);
        }
        Ok(())
    }

    fn seed_of(&self, session: SessionId) -> Option<StorageState> {
        lock(&self.inner.seeds).get(&session).cloned()
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
        self.inner.health.send_modify(f);
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
        let mut page = None;
        if let Some(spare) = self.take_spare(session) {
            // Brought to the front, or trusted input on it would hang.
            match spare.to_front().await {
                Ok(()) => {
                    self.inner.spare_counts.send_modify(|c| c.1 += 1);
                    page = Some(spare);
                }
                Err(e) => {
                    tracing::debug!(session = session.0, error = %e, "spare page unusable; opening another");
                    spare.close_now().await;
                }
            }
        }
        let page = if let Some(p) = page {
            p
        } else {
            let mut running = self.running().await?;
            let r = running.as_mut().expect("started above");
            let context = self.context(r, session).await?;
            self.open(r, context, false).await?
        };
        // When this page closes, its session's next page is opened.
        let browser = Arc::downgrade(&self.inner);
        page.on_close(Box::new(move || {
            if let Some(inner) = browser.upgrade() {
                tokio::spawn(async move { ChromeBrowser { inner }.open_spare(session).await });
            }
        }));
        Ok(Arc::new(page))
    }

    async fn seed(&self, session: SessionId, state: StorageState) -> Result<(), BrowserError> {
        lock(&self.inner.seeds).insert(session, state);
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
        self.inner.health.borrow().clone()
    }

    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<BrowserHealth>> {
        Some(self.inner.health.subscribe())
    }

    async fn kill(&self) {
        let mut running = self.inner.running.lock().await;
        if let Some(mut r) = running.take() {
            tracing::warn!(pid = r.pid.unwrap_or(0), "killing the browser");
            if let Some(child) = &mut r.child {
                let _ = child.start_kill();
            }
            stop(&mut r, false).await;
            // They died with it.
            self.spares().clear();
            self.set_health(|h| {
                h.state = "dead".into();
                h.pid = None;
            });
        }
    }

    async fn shutdown(&self) {
        self.inner.shut.cancel();
        self.close_spares().await;
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
