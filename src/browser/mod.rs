//! The browser layer: the [`Browser`] and [`Page`] abstraction flows run
//! against, and its two implementations.
//!
//! - [`chrome`]: real Chromium over the DevTools protocol (chromiumoxide).
//! - [`sim`]: a simulated browser for deterministic tests and the offline
//!   dry-run, whose actions take configurable (virtual) time and can fail,
//!   hang or panic on demand.
//!
//! This layer knows nothing of scripts, the registry or the scheduler. A
//! page method waits for its element up to the timeout it is given, and
//! every implementation must return within that bound (callers still wrap
//! calls in their own timeout, because a browser can hang in ways a page
//! cannot see).

pub mod chrome;
pub mod pool;
pub mod settings;
pub mod sim;
pub mod storage;

pub use settings::BrowserConfig;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::id::SessionId;

/// One way of finding an element.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Selector {
    /// A CSS selector (the default).
    Css(String),
    /// An XPath expression, written `xpath://button[@id='buy']`.
    XPath(String),
    /// The innermost element whose visible text contains the string,
    /// written `text:Add to cart`.
    Text(String),
    /// A selector inside frames: each of `frames` names an `<iframe>` in
    /// the document before it, outermost first. Written
    /// `frame:#card >> frame:#inner >> #number`.
    Framed {
        frames: Vec<Selector>,
        inner: Box<Selector>,
    },
}

impl Selector {
    /// Parses the `xpath:` and `text:` prefixes and `frame:... >>` chains;
    /// anything else is CSS.
    pub fn parse(s: &str) -> Selector {
        let parts: Vec<&str> = s.split(" >> ").collect();
        if parts.len() > 1
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| p.trim_start().starts_with("frame:"))
        {
            let frames = parts[..parts.len() - 1]
                .iter()
                .map(|p| Selector::parse(p.trim_start().trim_start_matches("frame:").trim()))
                .collect();
            let inner = Box::new(Selector::parse(parts[parts.len() - 1].trim()));
            return Selector::Framed { frames, inner };
        }
        Selector::single(s)
    }

    fn single(s: &str) -> Selector {
        if let Some(x) = s.strip_prefix("xpath:") {
            Selector::XPath(x.trim().to_owned())
        } else if let Some(t) = s.strip_prefix("text:") {
            Selector::Text(t.trim().to_owned())
        } else {
            Selector::Css(s.to_owned())
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Css(s) => write!(f, "`{s}`"),
            Selector::XPath(s) => write!(f, "`xpath:{s}`"),
            Selector::Text(s) => write!(f, "`text:{s}`"),
            Selector::Framed { frames, inner } => {
                f.write_str("`")?;
                for fr in frames {
                    write!(f, "frame:{} >> ", fr.bare())?;
                }
                write!(f, "{}`", inner.bare())
            }
        }
    }
}

impl Selector {
    /// As written, without the backticks of `Display`.
    pub fn bare(&self) -> String {
        let s = self.to_string();
        s.trim_matches('`').to_owned()
    }
}

/// An ordered list of fallbacks: the first that matches is used.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Selectors(pub Vec<Selector>);

impl Selectors {
    pub fn one(s: &str) -> Selectors {
        Selectors(vec![Selector::parse(s)])
    }

    pub fn many<S: AsRef<str>>(list: &[S]) -> Selectors {
        Selectors(list.iter().map(|s| Selector::parse(s.as_ref())).collect())
    }
}

impl Selectors {
    /// The frames the selectors are in (outermost first) and the
    /// selectors inside them. The fallbacks of one call must all be in the
    /// same frames: a page wait runs in one document.
    pub fn split_frames(&self) -> Result<(Vec<Selector>, Selectors), PageError> {
        let frames_of = |s: &Selector| match s {
            Selector::Framed { frames, .. } => frames.clone(),
            _ => Vec::new(),
        };
        let frames = self.0.first().map(frames_of).unwrap_or_default();
        if self.0.iter().any(|s| frames_of(s) != frames) {
            return Err(PageError::MixedFrames {
                selector: self.clone(),
            });
        }
        let inner = self
            .0
            .iter()
            .map(|s| match s {
                Selector::Framed { inner, .. } => (**inner).clone(),
                other => other.clone(),
            })
            .collect();
        Ok((frames, Selectors(inner)))
    }
}

impl fmt::Display for Selectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" or ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// A comparison for [`Condition::Count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cmp {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Cmp {
    /// Parses `==`, `!=`, `<`, `<=`, `>`, `>=`.
    pub fn parse(s: &str) -> Option<Cmp> {
        Some(match s.trim() {
            "==" => Cmp::Eq,
            "!=" => Cmp::Ne,
            "<" => Cmp::Lt,
            "<=" => Cmp::Le,
            ">" => Cmp::Gt,
            ">=" => Cmp::Ge,
            _ => return None,
        })
    }

    pub fn holds(self, a: usize, b: usize) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// What [`Page::wait_until`] waits for: a change of the page that need not
/// navigate (an AJAX basket, a status line).
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// No element matches any of the selectors visibly (removed or hidden).
    Gone(Selectors),
    /// The number of elements the first matching selector matches (0 if
    /// none) compares with `n`.
    Count(Selectors, Cmp, usize),
    /// The first visible match's text contains the string.
    Text(Selectors, String),
    /// A JavaScript expression is truthy.
    Js(String),
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Gone(s) => write!(f, "selector {s} to be gone"),
            Condition::Count(s, c, n) => write!(f, "the count of {s} {} {n}", c.as_str()),
            Condition::Text(s, t) => write!(f, "{s} to contain {t:?}"),
            Condition::Js(js) => write!(f, "`{js}` to be true"),
        }
    }
}

/// Why a page call failed. The messages are what a script error shows after
/// the primitive's name.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PageError {
    #[error("selector {selector} not found within {}ms", .waited.as_millis())]
    NotFound {
        selector: Selectors,
        waited: Duration,
    },
    #[error("element {selector} has no attribute `{name}`")]
    NoAttribute { selector: Selectors, name: String },
    #[error("element {selector} is not a {expected}")]
    WrongElement {
        selector: Selectors,
        expected: &'static str,
    },
    #[error("option `{value}` not found in {selector}")]
    NoOption { selector: Selectors, value: String },
    #[error("navigation to `{url}` failed: {reason}")]
    Navigation { url: String, reason: String },
    #[error("timed out after {}ms", .0.as_millis())]
    Timeout(Duration),
    /// A [`Condition`] did not come true in time; `now` says what the page
    /// showed instead.
    #[error("waited {}ms for {cond}, but it {now}", .waited.as_millis())]
    Unmet {
        cond: String,
        now: String,
        waited: Duration,
    },
    #[error("javascript error: {0}")]
    Script(String),
    #[error("the page was closed")]
    Closed,
    #[error("the browser is gone: {0}")]
    Disconnected(String),
    /// A fallback array whose selectors are in different frames: a wait
    /// runs in one document.
    #[error(
        "the fallbacks {selector} are in different frames; a fallback array must stay in one frame"
    )]
    MixedFrames { selector: Selectors },
    #[error("{0}")]
    Other(String),
}

/// Why a browser could not give a page.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "no Chromium found (looked at `browser.executable`, $BATON_CHROME and chromium, chromium-browser, google-chrome on PATH); install it with `apt-get install -y chromium`"
    )]
    NotFound,
    #[error("cannot launch `{path}`: {reason}")]
    Launch { path: String, reason: String },
    #[error("cannot connect to `{url}`: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot open a page: {0}")]
    NewPage(String),
    #[error("the browser is shut down")]
    ShutDown,
    #[error(
        "browser profile `{profile}` is in use by another baton ({holder}); give each baton its own `browser.profile_dir` (by default each `state_dir` has its own)"
    )]
    ProfileInUse { profile: String, holder: String },
    #[error("cannot lock browser profile `{profile}`: {reason}")]
    ProfileLock { profile: String, reason: String },
    #[error("cannot read or write the session's cookies and storage: {0}")]
    Storage(String),
}

/// What the dashboard shows about the browser.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrowserHealth {
    /// `not_started`, `running`, `restarting`, `dead` or `simulated`.
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub version: Option<String>,
    pub last_error: Option<String>,
    /// With `browser.pool`: each endpoint's health.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<pool::EndpointHealth>,
}

/// A kind of request a browser can be told never to make
/// (`browser.block`): what a flow rarely needs and a page spends time on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blocked {
    Image,
    Font,
    Media,
}

impl Blocked {
    /// Every kind, as flows.yaml names it.
    pub const ALL: [(&'static str, Blocked); 3] = [
        ("image", Blocked::Image),
        ("font", Blocked::Font),
        ("media", Blocked::Media),
    ];

    pub fn parse(s: &str) -> Option<Blocked> {
        Blocked::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, b)| *b)
    }
}

/// `s` cut to `max` bytes (at a character boundary), marked `…` when cut:
/// what a page says can be of any length, and a trace keeps it bounded.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// What kind of thing a page did that a run's trace records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageEventKind {
    /// `console.error` or a failed `console.assert`.
    Console,
    /// An uncaught exception in the page's scripts.
    Exception,
    /// A request that failed on the network (refused, reset, blocked),
    /// not one a navigation cancelled.
    RequestFailed,
    /// A response with a 4xx or 5xx status.
    HttpError,
    /// The main frame committed a new document.
    Navigated,
}

/// Something a page did on its own, with when it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct PageEvent {
    pub at: tokio::time::Instant,
    pub kind: PageEventKind,
    /// The message, the error, or the status.
    pub text: String,
    pub url: Option<String>,
}

/// How many events a page keeps between two [`Page::take_events`]: a page
/// that logs in a loop must not grow without bound. The oldest go first.
pub const MAX_PAGE_EVENTS: usize = 500;

/// How long the capture of a failed page (its screenshot, its DOM) may
/// take. A failure is often a page that stopped answering, and waiting out
/// an action's whole timeout for each capture only delays the run's end
/// (and the next run): a capture that cannot be had in this long is
/// skipped.
pub const CAPTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A source of pages, one browser process (or a simulation of one).
#[async_trait]
pub trait Browser: Send + Sync + 'static {
    /// A fresh page in `session`, in the foreground. The caller closes it.
    async fn new_page(&self, session: SessionId) -> Result<Arc<dyn Page>, BrowserError>;

    /// Sets the cookies and local storage `session` starts from (an
    /// account's login) whenever its context is created: at first use and
    /// after a relaunch. A context already open keeps what it has.
    async fn seed(
        &self,
        session: SessionId,
        state: storage::StorageState,
    ) -> Result<(), BrowserError>;

    /// The cookies of `session` and the local storage of `origins`.
    async fn storage_state(
        &self,
        session: SessionId,
        origins: &[String],
    ) -> Result<storage::StorageState, BrowserError>;

    fn health(&self) -> BrowserHealth;

    /// Every change of [`Browser::health`], for a browser that has them
    /// (a simulated one does not).
    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<BrowserHealth>> {
        None
    }

    /// Tears the browser down now: every page and call in flight fails. The
    /// next `new_page` starts a fresh one. The last resort against a run
    /// that will not stop.
    async fn kill(&self);

    /// Ends the browser and waits for its processes to exit.
    async fn shutdown(&self);
}

/// One page (tab) that one run drives.
///
/// A main document's HTTP status and `Retry-After` header.
pub type DocumentStatus = (u16, Option<String>);

/// Methods that take a selector wait for it up to `timeout`; methods that do
/// not (`navigate`, `eval`, ...) are bounded by `timeout` as a whole.
/// The focused element of one document (`{focus, frame}`: its label, and,
/// when it is a frame the focus went into, its place among the document's
/// frames, from 1, for entering it).
pub const FOCUSED: &str = r#"(() => {
  const e = document.activeElement;
  if (!e || e === document.body || e === document.documentElement) return { focus: '', frame: 0 };
  const tag = e.tagName.toLowerCase();
  const label = e.id ? '#' + e.id : ' "' + (e.getAttribute('aria-label') || e.getAttribute('title') || e.name || e.textContent || '').trim().slice(0, 24) + '"';
  const frame = tag === 'iframe' || tag === 'frame' ? [...document.querySelectorAll('iframe, frame')].indexOf(e) + 1 : 0;
  return { focus: tag + label, frame };
})()"#;

#[async_trait]
pub trait Page: Send + Sync + 'static {
    async fn navigate(&self, url: &str, timeout: Duration) -> Result<(), PageError>;
    async fn reload(&self, timeout: Duration) -> Result<(), PageError>;
    async fn url(&self) -> Result<String, PageError>;
    async fn title(&self) -> Result<String, PageError>;
    /// Waits for the first matching selector; returns its index in the list.
    async fn wait_for(&self, sel: &Selectors, timeout: Duration) -> Result<usize, PageError>;
    /// Whether any selector matches now (no waiting).
    async fn exists(&self, sel: &Selectors) -> Result<bool, PageError>;
    /// How many elements the first selector that matches anything matches
    /// now (0 if none; no waiting).
    async fn count(&self, sel: &Selectors) -> Result<usize, PageError>;
    async fn text(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError>;
    async fn attr(
        &self,
        sel: &Selectors,
        name: &str,
        timeout: Duration,
    ) -> Result<Option<String>, PageError>;
    async fn value(&self, sel: &Selectors, timeout: Duration) -> Result<String, PageError>;
    /// Waits until `cond` holds, event-driven, up to `timeout`. Returns what
    /// it saw: the count, the text, or the expression's value.
    async fn wait_until(
        &self,
        cond: &Condition,
        timeout: Duration,
    ) -> Result<serde_json::Value, PageError>;
    /// Waits until the page has had no network request in flight for
    /// `quiet`, up to `timeout`. Returns at once when the page has already
    /// been quiet that long.
    async fn network_idle(&self, quiet: Duration, timeout: Duration) -> Result<(), PageError>;
    async fn click(&self, sel: &Selectors, timeout: Duration) -> Result<(), PageError>;
    async fn fill(&self, sel: &Selectors, text: &str, timeout: Duration) -> Result<(), PageError>;
    /// [`Page::fill`] with a secret (a card number): the field is also
    /// marked, so every later screenshot masks it.
    async fn fill_secret(
        &self,
        sel: &Selectors,
        text: &str,
        timeout: Duration,
    ) -> Result<(), PageError> {
        self.fill(sel, text, timeout).await
    }
    async fn select(
        &self,
        sel: &Selectors,
        value: &str,
        timeout: Duration,
    ) -> Result<(), PageError>;
    async fn press(&self, key: &str, timeout: Duration) -> Result<(), PageError>;
    /// A trusted left click at viewport point (`x`, `y`): what a person
    /// logging in remotely clicks on the streamed picture.
    async fn click_at(&self, x: f64, y: f64, timeout: Duration) -> Result<(), PageError>;
    /// Types `text` into the focused element as trusted input (remote
    /// login). Never traced or logged: it may be a password.
    async fn type_text(&self, text: &str, timeout: Duration) -> Result<(), PageError>;
    /// The page as a stream of JPEG frames (a CDP screencast, a new frame
    /// when the page changes), until the receiver is dropped.
    async fn screencast(&self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PageError>;
    /// What has the keyboard focus, as a person reads a caret: `input#code`,
    /// `a "Cart"` for an element without an id, `""` for nothing. A page
    /// that can see into frames follows the focus into them:
    /// `iframe#login > input#username`. This one reads the top document.
    async fn focused(&self, timeout: Duration) -> Result<String, PageError> {
        let v = self.eval(FOCUSED, timeout).await?;
        Ok(v["focus"].as_str().unwrap_or_default().to_owned())
    }
    async fn eval(&self, js: &str, timeout: Duration) -> Result<serde_json::Value, PageError>;
    /// A PNG of the viewport, with every field that received a secret,
    /// every password and card field (`autocomplete` `cc-*`, `*password`)
    /// and every cross-origin frame (hosted card fields) painted over, the
    /// way Playwright's `mask` option does.
    async fn screenshot(&self, timeout: Duration) -> Result<Vec<u8>, PageError>;
    /// The page's current HTML.
    async fn html(&self, timeout: Duration) -> Result<String, PageError>;
    /// The `Cookie` header this page's browser session would send to
    /// `url`, if it holds any cookies for it (`http_get` from a step uses
    /// the run's session).
    async fn cookie_header(&self, url: &str) -> Result<Option<String>, PageError> {
        let _ = url;
        Ok(None)
    }

    /// The HTTP status and `Retry-After` header of the main document the
    /// last `navigate` loaded, when the page can tell: a shop that answers
    /// a page load with 429 or 503 slows its host, as `http_get` does.
    /// No default: a wrapper that forgot it would lose the pause.
    async fn document_status(&self) -> Option<crate::browser::DocumentStatus>;
    /// The console errors, failed requests and navigations the page has
    /// seen since the last call, oldest first (at most
    /// [`MAX_PAGE_EVENTS`]). A browser that reports none returns none.
    fn take_events(&self) -> Vec<PageEvent> {
        Vec::new()
    }
    /// Closes the page. Later calls fail with [`PageError::Closed`]; a call
    /// in flight is aborted. Idempotent.
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_prefixes() {
        assert_eq!(Selector::parse("#buy"), Selector::Css("#buy".into()));
        assert_eq!(
            Selector::parse("xpath://a[1]"),
            Selector::XPath("//a[1]".into())
        );
        assert_eq!(
            Selector::parse("text: Add to cart"),
            Selector::Text("Add to cart".into())
        );
        assert_eq!(
            Selectors::many(&["#a", "text:b"]).to_string(),
            "`#a` or `text:b`"
        );
        let framed = Selector::parse("frame:#card >> frame:iframe[name=x] >> #number");
        assert_eq!(
            framed,
            Selector::Framed {
                frames: vec![
                    Selector::Css("#card".into()),
                    Selector::Css("iframe[name=x]".into())
                ],
                inner: Box::new(Selector::Css("#number".into())),
            }
        );
        assert_eq!(
            framed.to_string(),
            "`frame:#card >> frame:iframe[name=x] >> #number`"
        );
        // Only frame: segments chain; anything else stays one selector.
        assert_eq!(
            Selector::parse("div >> span"),
            Selector::Css("div >> span".into())
        );
        let (frames, inner) = Selectors::many(&["frame:#card >> #n", "frame:#card >> #m"])
            .split_frames()
            .unwrap();
        assert_eq!(frames, vec![Selector::Css("#card".into())]);
        assert_eq!(inner, Selectors::many(&["#n", "#m"]));
        assert!(
            Selectors::many(&["frame:#card >> #n", "#n"])
                .split_frames()
                .unwrap_err()
                .to_string()
                .contains("different frames")
        );
    }
}
