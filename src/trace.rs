//! Run traces: what each browser call of a run did and when, what the page
//! did on its own (console errors, uncaught exceptions, failed requests,
//! 4xx/5xx responses, navigations) and, for a run that failed, the page's
//! DOM and the screenshot.
//!
//! - A [`Recorder`] collects one run's trace. A [`TracedPage`] wraps the
//!   run's page and records every call into it, so every flow gets a trace
//!   whatever runs its steps (Rhai, Rust closures, the login check).
//! - [`TraceStore`] keeps the traces of the last runs under
//!   `STATE_DIR/traces/`, one JSON file per run, bounded in count and in
//!   bytes (`traces:` in flows.yaml).
//! - [`render`] writes one as text, the way `baton dry-run` prints it; the
//!   dashboard draws the same document as a waterfall.
//!
//! A trace is a diagnostic, not state: it is written after the run has
//! saved its result and deregistered, and without fsync (a crash may cut
//! the last one, which then reads as unreadable, never as wrong). Every
//! string in it passes the redactor, and typed text is never recorded.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::browser::{
    Condition, Page, PageError, PageEvent, PageEventKind, Selectors, clip, storage::StorageState,
};
use crate::id::RunId;
use crate::redact::Redactor;
use crate::sync::lock;

/// Where traces go under the state directory.
pub const TRACES_DIR: &str = "traces";

/// How many calls one trace holds; a script looping on `exists` must not
/// make a trace of unbounded size. Calls past it are counted.
pub const MAX_CALLS: usize = 2000;

/// How much of the DOM a failed run's trace keeps.
pub const MAX_DOM: usize = 512 * 1024;

/// How long an argument or a result may be in a trace.
const MAX_SHOWN: usize = 200;

/// The `traces:` section of flows.yaml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TraceConfig {
    /// How many runs' traces are kept; 0 records none.
    pub keep: usize,
    /// The most the traces directory may hold, in bytes.
    pub max_bytes: u64,
}

impl Default for TraceConfig {
    fn default() -> TraceConfig {
        TraceConfig {
            keep: 200,
            max_bytes: 64 << 20,
        }
    }
}

/// One call into the page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Milliseconds from the start of the run.
    pub at_ms: f64,
    pub took_ms: f64,
    /// The step it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub name: String,
    pub args: String,
    pub ok: bool,
    /// What it returned (which selector of a fallback list matched, a
    /// count, a text) or its error.
    pub result: String,
}

/// One step of the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub script: String,
    pub at_ms: f64,
    pub took_ms: f64,
    pub result: String,
}

/// Something the page did on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: f64,
    pub kind: PageEventKind,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A run's trace, as stored and served.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunTrace {
    #[serde(default)]
    pub run_id: Option<RunId>,
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub flow: String,
    /// The status the run left its target in.
    #[serde(default)]
    pub status: String,
    pub duration_ms: f64,
    pub steps: Vec<Span>,
    pub calls: Vec<Call>,
    pub events: Vec<Event>,
    /// Calls past [`MAX_CALLS`], not recorded.
    #[serde(default)]
    pub dropped_calls: u64,
    /// The page's HTML when the run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dom: Option<String>,
    /// The failure screenshot, relative to the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
}

#[derive(Default)]
struct Body {
    calls: Vec<Call>,
    steps: Vec<Span>,
    events: Vec<Event>,
    step: Option<(String, Instant)>,
    dropped: u64,
    dom: Option<String>,
}

/// Collects one run's trace. Shared by the run and its pages.
pub struct Recorder {
    start: Instant,
    body: Mutex<Body>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            body: Mutex::new(Body::default()),
        })
    }

    fn body(&self) -> std::sync::MutexGuard<'_, Body> {
        lock(&self.body)
    }

    fn offset(&self, at: Instant) -> f64 {
        ms(at.saturating_duration_since(self.start))
    }

    /// A step starts: later calls belong to it.
    pub fn step_started(&self, script: &str) {
        self.body().step = Some((script.to_owned(), Instant::now()));
    }

    /// The current step ended with `result` (`ok`, `failed`, ...).
    pub fn step_ended(&self, result: &str) {
        let mut b = self.body();
        if let Some((script, at)) = b.step.take() {
            let span = Span {
                script,
                at_ms: self.offset(at),
                took_ms: ms(at.elapsed()),
                result: result.to_owned(),
            };
            b.steps.push(span);
        }
    }

    /// Records a call that started at `started` and ended now.
    pub fn call(&self, name: &str, args: &str, started: Instant, result: Result<String, String>) {
        let mut b = self.body();
        if b.calls.len() >= MAX_CALLS {
            b.dropped += 1;
            return;
        }
        let (ok, result) = match result {
            Ok(r) => (true, r),
            Err(e) => (false, e),
        };
        let call = Call {
            at_ms: self.offset(started),
            took_ms: ms(started.elapsed()),
            step: b.step.as_ref().map(|(s, _)| s.clone()),
            name: name.to_owned(),
            args: clip(args, MAX_SHOWN),
            ok,
            result: clip(&result, MAX_SHOWN),
        };
        b.calls.push(call);
    }

    /// Records the opening of a page that started at `started`, and wraps
    /// the page so its calls are recorded too.
    pub fn opened<E: std::fmt::Display>(
        self: &Arc<Self>,
        started: Instant,
        page: Result<Arc<dyn Page>, E>,
    ) -> Result<Arc<dyn Page>, E> {
        let shown = match &page {
            Ok(_) => Ok(String::new()),
            Err(e) => Err(e.to_string()),
        };
        self.call("open_page", "", started, shown);
        Ok(TracedPage::wrap(page?, self.clone()))
    }

    /// Adds what a page reported.
    pub fn events(&self, events: Vec<PageEvent>) {
        if events.is_empty() {
            return;
        }
        let mut b = self.body();
        for e in events {
            let ev = Event {
                at_ms: self.offset(e.at),
                kind: e.kind,
                text: e.text,
                url: e.url.map(|u| clip(&u, 2 * MAX_SHOWN)),
            };
            b.events.push(ev);
        }
    }

    /// Keeps the page's HTML (the first one given: the page as the
    /// failure found it).
    pub fn dom(&self, html: &str) {
        let mut b = self.body();
        if b.dom.is_none() {
            b.dom = Some(clip(html, MAX_DOM));
        }
    }

    /// The trace so far, its strings masked by `redactor`.
    pub fn finish(&self, redactor: &Redactor) -> RunTrace {
        let mut b = self.body();
        let mut events = std::mem::take(&mut b.events);
        events.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        let trace = RunTrace {
            duration_ms: ms(self.start.elapsed()),
            steps: std::mem::take(&mut b.steps),
            calls: std::mem::take(&mut b.calls),
            events,
            dropped_calls: b.dropped,
            dom: b.dom.take(),
            ..RunTrace::default()
        };
        drop(b);
        mask(trace, redactor)
    }
}

/// Masks every string of `trace` structurally.
fn mask(trace: RunTrace, redactor: &Redactor) -> RunTrace {
    let Ok(mut v) = serde_json::to_value(&trace) else {
        return trace;
    };
    redactor.json(&mut v);
    serde_json::from_value(v).unwrap_or(trace)
}

/// A page whose every call goes into a [`Recorder`].
pub struct TracedPage {
    inner: Arc<dyn Page>,
    rec: Arc<Recorder>,
}

impl TracedPage {
    pub fn wrap(inner: Arc<dyn Page>, rec: Arc<Recorder>) -> Arc<dyn Page> {
        Arc::new(TracedPage { inner, rec })
    }

    async fn traced<T>(
        &self,
        name: &str,
        args: String,
        fut: impl Future<Output = Result<T, PageError>>,
        show: impl FnOnce(&T) -> String,
    ) -> Result<T, PageError> {
        let started = Instant::now();
        let r = fut.await;
        let shown = match &r {
            Ok(v) => Ok(show(v)),
            Err(e) => Err(e.to_string()),
        };
        self.rec.call(name, &args, started, shown);
        r
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

#[async_trait]
impl Page for TracedPage {
    async fn navigate(&self, url: &str, timeout: Duration) -> Result<(), PageError> {
        self.traced(
            "navigate",
            quoted(url),
            self.inner.navigate(url, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn reload(&self, timeout: Duration) -> Result<(), PageError> {
        self.traced("reload", String::new(), self.inner.reload(timeout), |()| {
            String::new()
        })
        .await
    }
    async fn url(&self) -> Result<String, PageError> {
        self.traced("url", String::new(), self.inner.url(), |u| quoted(u))
            .await
    }
    async fn title(&self) -> Result<String, PageError> {
        self.traced("title", String::new(), self.inner.title(), |t| quoted(t))
            .await
    }
    async fn wait_for(&self, sel: &Selectors, timeout: Duration) -> Result<usize, PageError> {
        self.traced(
            "wait_for",
            sel.to_string(),
            self.inner.wait_for(sel, timeout),
            |i| sel.0.get(*i).map(ToString::to_string).unwrap_or_default(),
        )
        .await
    }
    async fn exists(&self, sel: &Selectors) -> Result<bool, PageError> {
        self.traced("exists", sel.to_string(), self.inner.exists(sel), |b| {
            b.to_string()
        })
        .await
    }
    async fn count(&self, sel: &Selectors) -> Result<usize, PageError> {
        self.traced("count", sel.to_string(), self.inner.count(sel), |n| {
            n.to_string()
        })
        .await
    }
    async fn text(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.traced(
            "text",
            sel.to_string(),
            self.inner.text(sel, timeout),
            |t| quoted(t),
        )
        .await
    }
    async fn attr(
        &self,
        sel: &Selectors,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<String>, PageError> {
        self.traced(
            "attr",
            format!("{sel}, {}", quoted(name)),
            self.inner.attr(sel, name, timeout),
            |v| v.as_deref().map_or_else(|| "()".into(), quoted),
        )
        .await
    }
    async fn value(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError> {
        self.traced(
            "value",
            sel.to_string(),
            self.inner.value(sel, timeout),
            |v| quoted(v),
        )
        .await
    }
    async fn wait_until(
        &self,
        cond: &Condition,
        timeout: Duration,
    ) -> Result<serde_json::Value, PageError> {
        self.traced(
            "wait_until",
            cond.to_string(),
            self.inner.wait_until(cond, timeout),
            ToString::to_string,
        )
        .await
    }
    async fn network_idle(&self, quiet: Duration, timeout: Duration) -> Result<(), PageError> {
        self.traced(
            "wait_idle",
            format!("{}", quiet.as_millis()),
            self.inner.network_idle(quiet, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn click(&self, sel: &Selectors, timeout: Duration) -> Result<(), PageError> {
        self.traced(
            "click",
            sel.to_string(),
            self.inner.click(sel, timeout),
            |()| String::new(),
        )
        .await
    }
    // Typed text is never recorded, secret or not: only its length.
    async fn fill(&self, sel: &Selectors, text: &str, timeout: Duration) -> Result<(), PageError> {
        self.traced(
            "fill",
            match text.chars().count() {
                1 => format!("{sel}, 1 char"),
                n => format!("{sel}, {n} chars"),
            },
            self.inner.fill(sel, text, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn fill_secret(
        &self,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.traced(
            "fill",
            format!("{sel}, a secret"),
            self.inner.fill_secret(sel, text, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn select(
        &self,
        sel: &Selectors,
        value: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.traced(
            "select",
            format!("{sel}, {}", quoted(value)),
            self.inner.select(sel, value, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn press(&self, key: &str, timeout: Duration) -> Result<(), PageError> {
        self.traced("press", quoted(key), self.inner.press(key, timeout), |()| {
            String::new()
        })
        .await
    }
    async fn click_at(&self, x: f64, y: f64, timeout: Duration) -> Result<(), PageError> {
        self.traced(
            "click_at",
            format!("{x:.0}, {y:.0}"),
            self.inner.click_at(x, y, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn type_text(&self, text: &str, timeout: Duration) -> Result<(), PageError> {
        // The length only, as for `fill`: the text may be a password.
        self.traced(
            "type_text",
            format!("{} character(s)", text.chars().count()),
            self.inner.type_text(text, timeout),
            |()| String::new(),
        )
        .await
    }
    async fn screencast(&self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PageError> {
        self.inner.screencast().await
    }
    async fn eval(&self, js: &str, timeout: Duration) -> Result<serde_json::Value, PageError> {
        self.traced(
            "eval",
            js.to_owned(),
            self.inner.eval(js, timeout),
            ToString::to_string,
        )
        .await
    }
    async fn screenshot(&self, timeout: Duration) -> Result<Vec<u8>, PageError> {
        self.traced(
            "screenshot",
            String::new(),
            self.inner.screenshot(timeout),
            |png| format!("{} bytes", png.len()),
        )
        .await
    }
    async fn html(&self, timeout: Duration) -> Result<String, PageError> {
        self.traced("html", String::new(), self.inner.html(timeout), |h| {
            format!("{} bytes", h.len())
        })
        .await
    }
    async fn cookie_header(&self, url: &str) -> Result<Option<String>, PageError> {
        // Not a page action, and its answer is a credential: not traced.
        self.inner.cookie_header(url).await
    }
    async fn document_status(&self) -> Option<crate::browser::DocumentStatus> {
        // Part of `navigate`'s own call, which is traced.
        self.inner.document_status().await
    }
    fn take_events(&self) -> Vec<PageEvent> {
        self.inner.take_events()
    }
    /// Collects the page's events into the trace, then closes it.
    async fn close(&self) {
        self.rec.events(self.inner.take_events());
        self.inner.close().await;
    }
}

/// Keeps the traces of the last runs in one directory.
#[derive(Clone, Debug)]
pub struct TraceStore {
    dir: PathBuf,
    config: TraceConfig,
}

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("no trace of run {0} is kept (only the last runs' are)")]
    Missing(RunId),
    #[error("the trace of run {run} is unreadable: {reason}")]
    Unreadable { run: RunId, reason: String },
}

impl TraceStore {
    pub fn new(state_dir: &Path, config: TraceConfig) -> TraceStore {
        TraceStore {
            dir: state_dir.join(TRACES_DIR),
            config,
        }
    }

    /// Whether traces are recorded at all.
    pub fn enabled(&self) -> bool {
        self.config.keep > 0
    }

    fn file(run: RunId) -> String {
        format!("{run}.json")
    }

    /// How a history record names `run`'s trace.
    pub fn record_name(run: RunId) -> String {
        format!("{TRACES_DIR}/{}", TraceStore::file(run))
    }

    /// Writes `trace` as `run`'s, then removes the oldest traces past the
    /// bounds. Returns how history records name it. Blocking.
    pub fn write(&self, run: RunId, trace: &RunTrace) -> io::Result<String> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(trace).map_err(io::Error::other)?;
        let name = TraceStore::file(run);
        // Written whole and renamed, so a reader never sees half of one.
        let mut tmp = tempfile::Builder::new()
            .prefix(".trace-")
            .suffix(".tmp")
            .tempfile_in(&self.dir)?;
        io::Write::write_all(&mut tmp, &bytes)?;
        tmp.persist(self.dir.join(&name)).map_err(|e| e.error)?;
        self.prune(&name);
        Ok(format!("{TRACES_DIR}/{name}"))
    }

    /// Removes the oldest traces until at most `keep` remain and they hold
    /// at most `max_bytes`; `newest` is never removed.
    fn prune(&self, newest: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut kept: Vec<(u64, PathBuf, u64)> = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = e.metadata() else { continue };
            if name.starts_with(".trace-") {
                // A writer killed between write and rename; a live one's
                // file is younger than a minute.
                let stale = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                if stale {
                    let _ = std::fs::remove_file(e.path());
                }
                continue;
            }
            let Some(n) = name
                .strip_prefix('r')
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            kept.push((n, e.path(), meta.len()));
        }
        kept.sort_by_key(|(n, _, _)| *n);
        let mut total: u64 = kept.iter().map(|(_, _, len)| len).sum();
        let mut count = kept.len();
        for (_, path, len) in kept {
            if count <= self.config.keep && total <= self.config.max_bytes {
                break;
            }
            if path.file_name().is_some_and(|n| n == newest) {
                continue;
            }
            // Another run's prune may have removed it already.
            let _ = std::fs::remove_file(&path);
            count -= 1;
            total = total.saturating_sub(len);
        }
    }

    /// The trace of `run`, if it is still kept. Blocking.
    pub fn read(state_dir: &Path, run: RunId) -> Result<RunTrace, TraceError> {
        let path = state_dir.join(TRACES_DIR).join(TraceStore::file(run));
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(TraceError::Missing(run)),
            Err(e) => {
                return Err(TraceError::Unreadable {
                    run,
                    reason: e.to_string(),
                });
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| TraceError::Unreadable {
            run,
            reason: e.to_string(),
        })
    }
}

/// The trace as text: a waterfall of the calls, then what the page did.
/// `width` is the width of the bar column.
pub fn render(t: &RunTrace, width: usize) -> String {
    let mut out = String::new();
    let total = t.duration_ms.max(1.0);
    let _ = writeln!(
        out,
        "trace: {} calls, {} page events, {:.0} ms",
        t.calls.len(),
        t.events.len(),
        t.duration_ms
    );
    let bar = |at: f64, took: f64| {
        let from = ((at / total) * width as f64).floor() as usize;
        let len = (((took / total) * width as f64).ceil() as usize).max(1);
        let from = from.min(width.saturating_sub(1));
        let len = len.min(width - from);
        format!(
            "{}{}{}",
            " ".repeat(from),
            "█".repeat(len),
            " ".repeat(width - from - len)
        )
    };
    for c in &t.calls {
        let mark = if c.ok { "" } else { "  FAILED" };
        let result = if c.result.is_empty() {
            String::new()
        } else if c.ok {
            format!(" -> {}", c.result)
        } else {
            format!(": {}", c.result)
        };
        let _ = writeln!(
            out,
            "  {:>7.0} ms {:>6.0} ms |{}| {}{}({}){}{}",
            c.at_ms,
            c.took_ms,
            bar(c.at_ms, c.took_ms),
            c.step
                .as_deref()
                .map(|s| format!("{s}: "))
                .unwrap_or_default(),
            c.name,
            c.args,
            result,
            mark
        );
    }
    if t.dropped_calls > 0 {
        let _ = writeln!(out, "  ... and {} more calls", t.dropped_calls);
    }
    for e in &t.events {
        let kind = match e.kind {
            PageEventKind::Console => "console error",
            PageEventKind::Exception => "exception",
            PageEventKind::RequestFailed => "request failed",
            PageEventKind::HttpError => "http error",
            PageEventKind::Navigated => "navigated",
        };
        let url = e.url.as_deref().unwrap_or_default();
        let sep = if e.text.is_empty() || url.is_empty() {
            ""
        } else {
            " "
        };
        let _ = writeln!(out, "  {:>7.0} ms {kind}: {}{sep}{url}", e.at_ms, e.text);
    }
    out
}

/// A browser whose pages are all traced into one recorder: the dry run's
/// page, opened by code that knows nothing of traces.
pub struct TracedBrowser {
    inner: Arc<dyn crate::browser::Browser>,
    rec: Arc<Recorder>,
}

impl TracedBrowser {
    pub fn wrap(inner: Arc<dyn crate::browser::Browser>, rec: Arc<Recorder>) -> Arc<TracedBrowser> {
        Arc::new(TracedBrowser { inner, rec })
    }
}

#[async_trait]
impl crate::browser::Browser for TracedBrowser {
    async fn new_page(
        &self,
        session: crate::id::SessionId,
    ) -> Result<Arc<dyn Page>, crate::browser::BrowserError> {
        let started = Instant::now();
        let p = self.inner.new_page(session).await;
        self.rec.opened(started, p)
    }
    async fn seed(
        &self,
        session: crate::id::SessionId,
        state: StorageState,
    ) -> Result<(), crate::browser::BrowserError> {
        self.inner.seed(session, state).await
    }
    async fn storage_state(
        &self,
        session: crate::id::SessionId,
        origins: &[String],
    ) -> Result<StorageState, crate::browser::BrowserError> {
        self.inner.storage_state(session, origins).await
    }
    fn health(&self) -> crate::browser::BrowserHealth {
        self.inner.health()
    }
    async fn kill(&self) {
        self.inner.kill().await;
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::browser::sim::SimBrowser;
    use crate::browser::{Browser, Selectors};
    use crate::id::SessionId;

    #[test]
    fn prune_keeps_the_newest_within_count_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = TraceStore::new(
            dir.path(),
            TraceConfig {
                keep: 3,
                max_bytes: u64::MAX,
            },
        );
        let t = RunTrace::default();
        for n in 1..=5 {
            store.write(RunId(n), &t).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join(TRACES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["r3.json", "r4.json", "r5.json"]);

        // Bytes: a trace bigger than the bound is kept alone (the newest is
        // never removed), and the older ones go.
        let small = TraceStore::new(
            dir.path(),
            TraceConfig {
                keep: 100,
                max_bytes: 10,
            },
        );
        let big = RunTrace {
            dom: Some("x".repeat(100)),
            ..RunTrace::default()
        };
        small.write(RunId(6), &big).unwrap();
        assert!(TraceStore::read(dir.path(), RunId(6)).is_ok());
        assert!(matches!(
            TraceStore::read(dir.path(), RunId(5)),
            Err(TraceError::Missing(RunId(5)))
        ));
    }

    #[test]
    fn an_unreadable_trace_says_so() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(TRACES_DIR)).unwrap();
        std::fs::write(dir.path().join(TRACES_DIR).join("r7.json"), b"{\"cut").unwrap();
        let e = TraceStore::read(dir.path(), RunId(7)).unwrap_err();
        assert!(e.to_string().contains("unreadable"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_traced_page_records_calls_matches_and_never_typed_text() {
        let mut site = crate::browser::sim::SimSite::default();
        let mut product = crate::browser::sim::SimPage::default();
        for sel in ["#buy", "#q"] {
            product
                .elements
                .insert(sel.into(), crate::browser::sim::SimElement::default());
        }
        site.pages.insert("http://shop/p/1".into(), product);
        let browser = SimBrowser::new(site);
        let rec = Recorder::new();
        let page = TracedPage::wrap(browser.new_page(SessionId(0)).await.unwrap(), rec.clone());
        rec.step_started("product");
        page.navigate("http://shop/p/1", Duration::from_secs(1))
            .await
            .unwrap();
        let sel = Selectors::many(&["#missing", "#buy"]);
        assert_eq!(page.wait_for(&sel, Duration::from_secs(1)).await, Ok(1));
        page.fill(
            &Selectors::one("#q"),
            "hunter2-typed",
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        rec.step_ended("ok");
        let redactor = Redactor::new();
        redactor.add("shop/p/1");
        let t = rec.finish(&redactor);
        let names: Vec<&str> = t.calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["navigate", "wait_for", "fill"]);
        assert!(t.calls.iter().all(|c| c.step.as_deref() == Some("product")));
        // Which fallback matched.
        assert_eq!(t.calls[1].result, "`#buy`");
        assert!(t.calls.iter().all(|c| c.ok));
        assert!(!t.calls[0].args.contains("shop/p/1"), "{:?}", t.calls[0]);
        let text = serde_json::to_string(&t).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert_eq!(t.steps.len(), 1);
        assert_eq!(t.steps[0].script, "product");
    }
}
