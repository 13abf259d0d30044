//! The simulated browser: pages described by data, actions that take
//! configurable time and fail, hang or panic on demand.
//!
//! Two users: the deterministic tests (which run it under tokio's paused
//! clock, so its latencies cost no real time) and `baton dry-run --offline`,
//! which loads a [`SimSite`] from a fixture file. It also watches for the
//! thing baton exists to prevent: it counts every moment at which two pages
//! of one session are open, or two calls on one session are in flight.
//!
//! Selectors are matched by their text, not evaluated: an element described
//! under `"#stock"` is found by the selector `#stock` and by nothing else.

pub mod fixture;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{
    Browser, BrowserError, BrowserHealth, Condition, Page, PageError, Selector, Selectors,
};
use crate::id::SessionId;
use crate::sync::lock;

/// A site: pages by URL. This is the `site:` part of an offline fixture.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimSite {
    /// Pages by URL. A URL not listed is a blank page.
    #[serde(default)]
    pub pages: BTreeMap<String, SimPage>,
    /// Answers to `js(code)` on any page, by code.
    #[serde(default)]
    pub eval: BTreeMap<String, Value>,
    /// Answers to `http_get_json(url)`, by URL.
    #[serde(default)]
    pub http: BTreeMap<String, Value>,
}

/// One page of a [`SimSite`].
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimPage {
    #[serde(default)]
    pub title: String,
    /// Elements by selector, exactly as scripts write it.
    #[serde(default)]
    pub elements: BTreeMap<String, SimElement>,
    /// Answers to `js(code)` on this page, by code.
    #[serde(default)]
    pub eval: BTreeMap<String, Value>,
}

/// One element (or a group of `count` alike elements).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimElement {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub attrs: BTreeMap<String, String>,
    /// How many elements the selector matches; 0 means absent.
    #[serde(default = "one")]
    pub count: usize,
    /// Values a `select(sel, value)` accepts; empty means any.
    #[serde(default)]
    pub options: Vec<String>,
    /// What clicking it does.
    #[serde(default)]
    pub on_click: Option<ClickEffect>,
}

fn one() -> usize {
    1
}

impl Default for SimElement {
    fn default() -> Self {
        SimElement {
            text: String::new(),
            value: String::new(),
            attrs: BTreeMap::new(),
            count: 1,
            options: Vec::new(),
            on_click: None,
        }
    }
}

impl SimElement {
    pub fn text(text: &str) -> SimElement {
        SimElement {
            text: text.into(),
            ..SimElement::default()
        }
    }
}

/// The effect of a click.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickEffect {
    /// Go to this URL.
    #[serde(default)]
    pub navigate: Option<String>,
    /// Remove one of these elements (decrement its count), on the current
    /// page; for "remove from cart" buttons.
    #[serde(default)]
    pub remove: Vec<String>,
    /// The removals land this long after the click, without a navigation,
    /// as an AJAX basket's do; 0 means at once.
    #[serde(default)]
    pub delay_ms: u64,
}

/// An injected fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The call fails with this message.
    Fail(String),
    /// The call never returns (until its page is closed).
    Hang,
    /// The call panics.
    Panic,
    /// The call reaches the shop, which takes this long to answer and
    /// finishes its work even if the page is closed meanwhile, as real
    /// servers do. Until then the session counts as busy: any other call on
    /// it is an overlap (I9).
    Server(Duration),
}

#[derive(Debug)]
struct FaultRule {
    action: String,
    selector: Option<String>,
    fault: Fault,
    remaining: u32,
}

/// One call made against a simulated page, for assertions.
#[derive(Clone, Debug, PartialEq)]
pub struct SimCall {
    pub page: u64,
    pub session: SessionId,
    pub action: String,
    pub arg: String,
}

#[derive(Default)]
struct SessionLoad {
    open_pages: u32,
    in_flight: u32,
}

struct Inner {
    site: Mutex<SimSite>,
    /// Per-action latency; the key `*` is the default.
    latency: Mutex<HashMap<String, Duration>>,
    faults: Mutex<VecDeque<FaultRule>>,
    sessions: Mutex<HashMap<SessionId, SessionLoad>>,
    overlaps: AtomicU64,
    calls: Mutex<Vec<SimCall>>,
    next_page: AtomicU64,
    /// Parent of every page's token; `kill` cancels it and starts a new one.
    killed: Mutex<CancellationToken>,
    /// Woken by `edit_site`, so waits for an element see it appear.
    changed: tokio::sync::Notify,
    /// Nothing will ever change the site (an offline fixture): a missing
    /// element fails at once instead of waiting out its timeout.
    fixed: std::sync::atomic::AtomicBool,
    /// What `seed` gave each session; `storage_state` reads it back.
    seeds: Mutex<HashMap<SessionId, crate::browser::storage::StorageState>>,
}

/// The simulated browser. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct SimBrowser {
    inner: Arc<Inner>,
}

impl Default for SimBrowser {
    fn default() -> Self {
        SimBrowser::new(SimSite::default())
    }
}

impl std::fmt::Debug for SimBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBrowser")
            .field("overlaps", &self.overlaps())
            .finish_non_exhaustive()
    }
}

impl SimBrowser {
    pub fn new(site: SimSite) -> SimBrowser {
        SimBrowser {
            inner: Arc::new(Inner {
                site: Mutex::new(site),
                latency: Mutex::new(HashMap::new()),
                faults: Mutex::new(VecDeque::new()),
                sessions: Mutex::new(HashMap::new()),
                overlaps: AtomicU64::new(0),
                calls: Mutex::new(Vec::new()),
                next_page: AtomicU64::new(1),
                killed: Mutex::new(CancellationToken::new()),
                changed: tokio::sync::Notify::new(),
                fixed: std::sync::atomic::AtomicBool::new(false),
                seeds: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Every call of `action` (`navigate`, `click`, ..., or `*` for all
    /// without their own) takes `d`.
    pub fn set_latency(&self, action: &str, d: Duration) {
        lock(&self.inner.latency).insert(action.to_owned(), d);
    }

    /// The next `times` calls of `action` (on `selector`, if given) hit
    /// `fault`.
    pub fn inject(&self, action: &str, selector: Option<&str>, fault: Fault, times: u32) {
        lock(&self.inner.faults).push_back(FaultRule {
            action: action.to_owned(),
            selector: selector.map(str::to_owned),
            fault,
            remaining: times,
        });
    }

    /// Changes the site (for example, to put an item back in stock). Calls
    /// waiting for an element see the change.
    pub fn edit_site(&self, f: impl FnOnce(&mut SimSite)) {
        f(&mut lock(&self.inner.site));
        self.inner.changed.notify_waiters();
    }

    /// Declares that the site never changes (an offline fixture): waits for
    /// a missing element fail at once.
    pub fn set_fixed(&self, fixed: bool) {
        self.inner.fixed.store(fixed, Ordering::SeqCst);
    }

    fn is_fixed(&self) -> bool {
        self.inner.fixed.load(Ordering::SeqCst)
    }

    /// Times two pages of one session were open at once, or two calls on
    /// one session were in flight at once.
    pub fn overlaps(&self) -> u64 {
        self.inner.overlaps.load(Ordering::SeqCst)
    }

    /// Pages open right now, over all sessions.
    pub fn open_pages(&self) -> u32 {
        lock(&self.inner.sessions)
            .values()
            .map(|s| s.open_pages)
            .sum()
    }

    /// Every call made so far.
    pub fn calls(&self) -> Vec<SimCall> {
        lock(&self.inner.calls).clone()
    }

    /// The answer to `http_get_json(url)` in the site, if any.
    pub fn http(&self, url: &str) -> Option<Value> {
        lock(&self.inner.site).http.get(url).cloned()
    }

    fn latency(&self, action: &str) -> Duration {
        let l = lock(&self.inner.latency);
        l.get(action)
            .or_else(|| l.get("*"))
            .copied()
            .unwrap_or_default()
    }

    fn take_fault(&self, action: &str, arg: &str) -> Option<Fault> {
        let mut faults = lock(&self.inner.faults);
        let i = faults
            .iter()
            .position(|r| r.action == action && r.selector.as_deref().is_none_or(|s| s == arg))?;
        let rule = &mut faults[i];
        let fault = rule.fault.clone();
        rule.remaining -= 1;
        if rule.remaining == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
}

#[async_trait]
impl Browser for SimBrowser {
    async fn new_page(&self, session: SessionId) -> Result<Arc<dyn Page>, BrowserError> {
        {
            let mut sessions = lock(&self.inner.sessions);
            let load = sessions.entry(session).or_default();
            if load.open_pages > 0 {
                self.inner.overlaps.fetch_add(1, Ordering::SeqCst);
                tracing::error!(
                    session = session.0,
                    "simulated browser: two pages open in one session"
                );
            }
            load.open_pages += 1;
        }
        let id = self.inner.next_page.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(SimTab {
            browser: self.clone(),
            id,
            session,
            url: Mutex::new("about:blank".into()),
            edits: Mutex::new(HashMap::new()),
            pending: Mutex::new(Vec::new()),
            closed: lock(&self.inner.killed).child_token(),
            released: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    async fn seed(
        &self,
        session: SessionId,
        state: crate::browser::storage::StorageState,
    ) -> Result<(), BrowserError> {
        lock(&self.inner.seeds).insert(session, state);
        Ok(())
    }

    /// The simulated session keeps what it was seeded with: it has no
    /// cookies of its own.
    async fn storage_state(
        &self,
        session: SessionId,
        _origins: &[String],
    ) -> Result<crate::browser::storage::StorageState, BrowserError> {
        Ok(lock(&self.inner.seeds)
            .get(&session)
            .cloned()
            .unwrap_or_default())
    }

    fn health(&self) -> BrowserHealth {
        BrowserHealth {
            state: "simulated".into(),
            pid: None,
            restarts: 0,
            version: None,
            last_error: None,
            endpoints: Vec::new(),
        }
    }

    async fn kill(&self) {
        let mut killed = lock(&self.inner.killed);
        killed.cancel();
        *killed = CancellationToken::new();
    }

    async fn shutdown(&self) {
        self.kill().await;
    }
}

/// Changes a page's actions made to its elements (fills, removals), keyed
/// by (url, selector).
#[derive(Clone, Debug, Default)]
struct Edit {
    value: Option<String>,
    removed: usize,
}

struct SimTab {
    browser: SimBrowser,
    id: u64,
    session: SessionId,
    url: Mutex<String>,
    edits: Mutex<HashMap<(String, String), Edit>>,
    /// Removals that a click started and that land later (AJAX): when,
    /// and (url, selector).
    pending: Mutex<Vec<(tokio::time::Instant, (String, String))>>,
    /// Cancelled by `close` or by the browser being killed.
    closed: CancellationToken,
    /// Whether this page has given back its place in the session.
    released: std::sync::atomic::AtomicBool,
}

/// Marks a call in flight on its session for as long as it lives, so a
/// call that is aborted still ends its flight.
struct InFlight {
    browser: SimBrowser,
    session: SessionId,
}

impl InFlight {
    fn start(browser: &SimBrowser, session: SessionId) -> InFlight {
        let mut sessions = lock(&browser.inner.sessions);
        let load = sessions.entry(session).or_default();
        if load.in_flight > 0 {
            browser.inner.overlaps.fetch_add(1, Ordering::SeqCst);
            tracing::error!(
                session = session.0,
                "simulated browser: two calls in flight in one session"
            );
        }
        load.in_flight += 1;
        InFlight {
            browser: browser.clone(),
            session,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(load) = lock(&self.browser.inner.sessions).get_mut(&self.session) {
            load.in_flight = load.in_flight.saturating_sub(1);
        }
    }
}

impl SimTab {
    /// The common frame of every call: record it, wait the
    /// latency, apply faults, then compute the answer. Racing `closed`
    /// means closing the page aborts the call.
    async fn call<T>(
        &self,
        action: &str,
        arg: &str,
        answer: impl FnOnce(&SimTab) -> Result<T, PageError>,
    ) -> Result<T, PageError> {
        self.call_waiting(action, arg, None, answer).await
    }

    /// [`SimTab::call`] for actions that wait for their element first.
    async fn call_waiting<T>(
        &self,
        action: &str,
        arg: &str,
        wait: Option<(&Selectors, Duration)>,
        answer: impl FnOnce(&SimTab) -> Result<T, PageError>,
    ) -> Result<T, PageError> {
        if self.closed.is_cancelled() {
            return Err(PageError::Closed);
        }
        let call = SimCall {
            page: self.id,
            session: self.session,
            action: action.to_owned(),
            arg: arg.to_owned(),
        };
        lock(&self.browser.inner.calls).push(call);
        let flight = InFlight::start(&self.browser, self.session);
        let fault = self.browser.take_fault(action, arg);
        if let Some(Fault::Server(d)) = fault {
            // The shop's side runs on its own task: closing the page ends
            // the call here, not the request there.
            let server = tokio::spawn(async move {
                tokio::time::sleep(d).await;
                drop(flight);
            });
            return tokio::select! {
                biased;
                () = self.closed.cancelled() => Err(PageError::Closed),
                r = server => match r {
                    Ok(()) => answer(self),
                    Err(e) => Err(PageError::Other(e.to_string())),
                },
            };
        }
        let _flight = flight;
        let latency = self.browser.latency(action);
        let work = async {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            match fault {
                Some(Fault::Fail(msg)) => Err(PageError::Other(msg)),
                Some(Fault::Hang) => std::future::pending().await,
                Some(Fault::Panic) => panic!("simulated panic in `{action}`"),
                // Served above, on the shop's own task.
                Some(Fault::Server(_)) | None => {
                    if let Some((sel, timeout)) = wait {
                        self.wait_present(sel, timeout).await;
                    }
                    answer(self)
                }
            }
        };
        tokio::select! {
            biased;
            () = self.closed.cancelled() => Err(PageError::Closed),
            r = work => r,
        }
    }

    /// `fill` and `fill_secret`: the field's value becomes `text`.
    async fn type_into(
        &self,
        action: &str,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.call_waiting(action, &sel.to_string(), Some((sel, timeout)), |t| {
            let (_, key, _) = t.require(sel, timeout)?;
            t.edit(&key, |e| e.value = Some(text.to_owned()));
            Ok(())
        })
        .await
    }

    fn current_url(&self) -> String {
        lock(&self.url).clone()
    }

    /// Returns once `sel` matches, the site is fixed, or `timeout` passed.
    async fn wait_present(&self, sel: &Selectors, timeout: Duration) {
        self.wait_cond(|t| t.find(sel).is_some(), timeout).await;
    }

    /// Returns once `holds` does, the site is fixed, or `timeout` passed;
    /// woken by every change of the site or of the page's own elements.
    async fn wait_cond(&self, holds: impl Fn(&SimTab) -> bool, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.browser.inner.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if holds(self) || self.browser.is_fixed() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// The first selector that matches, with its element as edited.
    fn find(&self, sel: &Selectors) -> Option<(usize, String, SimElement)> {
        self.land_pending();
        let url = self.current_url();
        let site = lock(&self.browser.inner.site);
        let page = site.pages.get(&url)?;
        let edits = lock(&self.edits);
        sel.0.iter().enumerate().find_map(|(i, s)| {
            let key = key(s);
            let mut el = page.elements.get(&key)?.clone();
            if let Some(e) = edits.get(&(url.clone(), key.clone())) {
                el.count = el.count.saturating_sub(e.removed);
                if let Some(v) = &e.value {
                    el.value = v.clone();
                }
            }
            (el.count > 0).then_some((i, key, el))
        })
    }

    fn require(
        &self,
        sel: &Selectors,
        timeout: Duration,
    ) -> Result<(usize, String, SimElement), PageError> {
        self.find(sel).ok_or(PageError::NotFound {
            selector: sel.clone(),
            waited: if self.browser.is_fixed() {
                Duration::ZERO
            } else {
                timeout
            },
        })
    }

    /// Applies the delayed removals whose time has come.
    fn land_pending(&self) {
        let now = tokio::time::Instant::now();
        let mut pending = lock(&self.pending);
        let mut edits = lock(&self.edits);
        pending.retain(|(at, key)| {
            if *at > now {
                return true;
            }
            edits.entry(key.clone()).or_default().removed += 1;
            false
        });
    }

    fn edit(&self, key: &str, f: impl FnOnce(&mut Edit)) {
        let url = self.current_url();
        f(lock(&self.edits).entry((url, key.to_owned())).or_default());
        self.browser.inner.changed.notify_waiters();
    }

    /// Whether `cond` holds now, and what it saw; or what it saw instead.
    fn check(&self, cond: &Condition) -> Result<Value, String> {
        match cond {
            Condition::Gone(sel) => match self.find(sel) {
                None => Ok(Value::Null),
                Some((_, _, e)) => Err(format!("still matches {} element(s)", e.count)),
            },
            Condition::Count(sel, cmp, n) => {
                let have = self.find(sel).map_or(0, |(_, _, e)| e.count);
                if cmp.holds(have, *n) {
                    Ok(Value::from(have))
                } else {
                    Err(format!(
                        "matches {have} element(s), wanted {} {n}",
                        cmp.as_str()
                    ))
                }
            }
            Condition::Text(sel, want) => match self.find(sel) {
                None => Err("matches nothing".into()),
                Some((_, _, e)) if e.text.contains(want.as_str()) => Ok(Value::from(e.text)),
                Some((_, _, e)) => Err(format!("has the text {:?}", e.text)),
            },
            Condition::Js(js) => {
                let v = self.eval_answer(js);
                let truthy = match &v {
                    Value::Null => false,
                    Value::Bool(b) => *b,
                    Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                    Value::String(s) => !s.is_empty(),
                    _ => true,
                };
                if truthy {
                    Ok(v)
                } else {
                    Err(format!("is still {v}"))
                }
            }
        }
    }

    /// The fixture's answer to `js(code)` on the current page.
    fn eval_answer(&self, js: &str) -> Value {
        let site = lock(&self.browser.inner.site);
        let page = site.pages.get(&self.current_url());
        page.and_then(|p| p.eval.get(js))
            .or_else(|| site.eval.get(js))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn key(s: &Selector) -> String {
    match s {
        Selector::Css(c) => c.clone(),
        Selector::XPath(x) => format!("xpath:{x}"),
        Selector::Text(t) => format!("text:{t}"),
        Selector::Framed { .. } => s.bare(),
    }
}

#[async_trait]
impl Page for SimTab {
    async fn navigate(&self, url: &str, _timeout: Duration) -> Result<(), PageError> {
        self.call("navigate", url, |t| {
            *lock(&t.url) = url.to_owned();
            lock(&t.edits).clear();
            lock(&t.pending).clear();
            Ok(())
        })
        .await
    }

    async fn reload(&self, _timeout: Duration) -> Result<(), PageError> {
        self.call("reload", "", |t| {
            lock(&t.edits).clear();
            lock(&t.pending).clear();
            Ok(())
        })
        .await
    }

    async fn url(&self) -> Result<String, PageError> {
        self.call("url", "", |t| Ok(t.current_url())).await
    }

    async fn title(&self) -> Result<String, PageError> {
        self.call("title", "", |t| {
            let site = lock(&t.browser.inner.site);
            Ok(site
                .pages
                .get(&t.current_url())
                .map(|p| p.title.clone())
                .unwrap_or_default())
        })
        .await
    }

    async fn wait_for(&self, sel: &Selectors, timeout: Duration) -> Result<usize, PageError> {
        self.call_waiting("wait_for", &sel.to_string(), Some((sel, timeout)), |t| {
            t.require(sel, timeout).map(|(i, _, _)| i)
        })
        .await
    }

    async fn document_status(&self) -> Option<crate::browser::DocumentStatus> {
        // Simulated pages have no HTTP answer.
        None
    }

    async fn exists(&self, sel: &Selectors) -> Result<bool, PageError> {
        self.call("exists", &sel.to_string(), |t| Ok(t.find(sel).is_some()))
            .await
    }

    async fn count(&self, sel: &Selectors) -> Result<usize, PageError> {
        self.call("count", &sel.to_string(), |t| {
            Ok(t.find(sel).map_or(0, |(_, _, e)| e.count))
        })
        .await
    }

    async fn text(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.call_waiting("text", &sel.to_string(), Some((sel, timeout)), |t| {
            t.require(sel, timeout).map(|(_, _, e)| e.text)
        })
        .await
    }

    async fn attr(
        &self,
        sel: &Selectors,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<String>, PageError> {
        self.call_waiting("attr", &sel.to_string(), Some((sel, timeout)), |t| {
            t.require(sel, timeout)
                .map(|(_, _, e)| e.attrs.get(name).cloned())
        })
        .await
    }

    async fn value(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.call_waiting("value", &sel.to_string(), Some((sel, timeout)), |t| {
            t.require(sel, timeout).map(|(_, _, e)| e.value)
        })
        .await
    }

    async fn click(&self, sel: &Selectors, timeout: Duration) -> Result<(), PageError> {
        self.call_waiting("click", &sel.to_string(), Some((sel, timeout)), |t| {
            let (_, _, el) = t.require(sel, timeout)?;
            if let Some(effect) = el.on_click {
                let delay = Duration::from_millis(effect.delay_ms);
                for r in &effect.remove {
                    if delay.is_zero() {
                        t.edit(r, |e| e.removed += 1);
                    } else {
                        let at = tokio::time::Instant::now() + delay;
                        lock(&t.pending).push((at, (t.current_url(), r.clone())));
                    }
                }
                if !delay.is_zero() {
                    // The answer arrives later and changes the page: wake
                    // the waits then.
                    let browser = t.browser.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        browser.inner.changed.notify_waiters();
                    });
                }
                if let Some(url) = effect.navigate {
                    *lock(&t.url) = url;
                    lock(&t.edits).clear();
                    lock(&t.pending).clear();
                }
            }
            Ok(())
        })
        .await
    }

    async fn fill_secret(
        &self,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        // Recorded as its own action, so tests see the field was marked.
        self.type_into("fill_secret", sel, text, timeout).await
    }

    async fn fill(&self, sel: &Selectors, text: &str, timeout: Duration) -> Result<(), PageError> {
        self.type_into("fill", sel, text, timeout).await
    }

    async fn select(
        &self,
        sel: &Selectors,
        value: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.call_waiting("select", &sel.to_string(), Some((sel, timeout)), |t| {
            let (_, key, el) = t.require(sel, timeout)?;
            if !el.options.is_empty() && !el.options.iter().any(|o| o == value) {
                return Err(PageError::NoOption {
                    selector: sel.clone(),
                    value: value.to_owned(),
                });
            }
            t.edit(&key, |e| e.value = Some(value.to_owned()));
            Ok(())
        })
        .await
    }

    async fn press(&self, key: &str, _timeout: Duration) -> Result<(), PageError> {
        self.call("press", key, |_| Ok(())).await
    }

    async fn click_at(&self, _: f64, _: f64, _: Duration) -> Result<(), PageError> {
        Err(PageError::Other(
            "the simulated browser has no pixels to click".into(),
        ))
    }

    async fn type_text(&self, _: &str, _: Duration) -> Result<(), PageError> {
        Err(PageError::Other(
            "the simulated browser has no focused field".into(),
        ))
    }

    async fn screencast(&self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PageError> {
        Err(PageError::Other(
            "the simulated browser draws nothing to stream".into(),
        ))
    }

    async fn eval(&self, js: &str, _timeout: Duration) -> Result<Value, PageError> {
        self.call("eval", js, |t| Ok(t.eval_answer(js))).await
    }

    async fn wait_until(&self, cond: &Condition, timeout: Duration) -> Result<Value, PageError> {
        let arg = cond.to_string();
        if self.closed.is_cancelled() {
            return Err(PageError::Closed);
        }
        // Recorded and timed like every call; the wait itself is woken by
        // each change of the site, never by polling.
        self.call("wait_until", &arg, |_| Ok(())).await?;
        let waited = tokio::select! {
            biased;
            () = self.closed.cancelled() => return Err(PageError::Closed),
            () = self.wait_cond(|t| t.check(cond).is_ok(), timeout) => {
                self.check(cond)
            }
        };
        waited.map_err(|now| PageError::Unmet {
            cond: arg,
            now,
            waited: if self.browser.is_fixed() {
                Duration::ZERO
            } else {
                timeout
            },
        })
    }

    async fn network_idle(&self, quiet: Duration, _timeout: Duration) -> Result<(), PageError> {
        // A simulated page has no network of its own: it is always quiet.
        self.call("network_idle", &quiet.as_millis().to_string(), |_| Ok(()))
            .await
    }

    async fn screenshot(&self, timeout: Duration) -> Result<Vec<u8>, PageError> {
        // A valid 1x1 PNG, so callers that save it produce a real file.
        const PNG: &[u8] = &[
            0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
            0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00,
            0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
            0x9c, 0x63, 0xf8, 0xff, 0xff, 0x3f, 0x00, 0x05, 0xfe, 0x02, 0xfe, 0xa7, 0x35, 0x81,
            0x84, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
        ];
        // Bounded like Chromium's: a page that does not answer costs the
        // caller its timeout, no more.
        tokio::time::timeout(timeout, self.call("screenshot", "", |_| Ok(PNG.to_vec())))
            .await
            .unwrap_or(Err(PageError::Timeout(timeout)))
    }

    async fn html(&self, timeout: Duration) -> Result<String, PageError> {
        let html = self.call("html", "", |t| {
            let site = lock(&t.browser.inner.site);
            let mut html = format!("<!-- simulated page {} -->\n", t.current_url());
            if let Some(p) = site.pages.get(&t.current_url()) {
                for (sel, el) in &p.elements {
                    html.push_str(&format!("<!-- {sel} x{} -->{}\n", el.count, el.text));
                }
            }
            Ok(html)
        });
        tokio::time::timeout(timeout, html)
            .await
            .unwrap_or(Err(PageError::Timeout(timeout)))
    }

    async fn close(&self) {
        self.release();
    }
}

impl SimTab {
    fn release(&self) {
        self.closed.cancel();
        if !self.released.swap(true, Ordering::SeqCst)
            && let Some(load) = lock(&self.browser.inner.sessions).get_mut(&self.session)
        {
            load.open_pages = load.open_pages.saturating_sub(1);
        }
    }
}

impl Drop for SimTab {
    fn drop(&mut self) {
        // A page dropped without close() still frees its session slot, the
        // way a real tab disappears when its target is destroyed.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> SimSite {
        let mut site = SimSite::default();
        let mut p = SimPage {
            title: "Widget".into(),
            ..SimPage::default()
        };
        p.elements
            .insert("#stock".into(), SimElement::text("In stock"));
        p.elements.insert(
            "#add".into(),
            SimElement {
                on_click: Some(ClickEffect {
                    navigate: Some("/cart".into()),
                    ..ClickEffect::default()
                }),
                ..SimElement::default()
            },
        );
        site.pages.insert("/p/1".into(), p);
        site
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_virtual_and_answers_follow_the_site() {
        let b = SimBrowser::new(shop());
        b.set_latency("*", Duration::from_millis(500));
        let page = b.new_page(SessionId(0)).await.unwrap();
        let t0 = tokio::time::Instant::now();
        page.navigate("/p/1", Duration::from_secs(1)).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        let sel = Selectors::many(&["#missing", "#stock"]);
        assert_eq!(
            page.text(&sel, Duration::from_secs(1)).await.unwrap(),
            "In stock"
        );
        page.click(&Selectors::one("#add"), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(page.url().await.unwrap(), "/cart");
        let err = page
            .text(&Selectors::one("#stock"), Duration::from_millis(250))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "selector `#stock` not found within 250ms");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_call_ends_when_its_page_closes() {
        let b = SimBrowser::new(shop());
        b.inject("click", None, Fault::Hang, 1);
        let page = b.new_page(SessionId(0)).await.unwrap();
        let p2 = page.clone();
        let call = tokio::spawn(async move {
            p2.click(&Selectors::one("#add"), Duration::from_secs(1))
                .await
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!call.is_finished());
        page.close().await;
        assert_eq!(call.await.unwrap(), Err(PageError::Closed));
        assert_eq!(b.overlaps(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn two_pages_in_one_session_count_as_an_overlap() {
        let b = SimBrowser::default();
        let a = b.new_page(SessionId(0)).await.unwrap();
        let _other_session = b.new_page(SessionId(1)).await.unwrap();
        assert_eq!(b.overlaps(), 0);
        let _b = b.new_page(SessionId(0)).await.unwrap();
        assert_eq!(b.overlaps(), 1);
        a.close().await;
    }
}
