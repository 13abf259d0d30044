//! One tab of real Chromium: the [`Page`] primitives, each one in-page
//! evaluation of `page.js` (waits run inside the page, event-driven) plus,
//! for clicks and typing, trusted input events; screenshots with masks.
//! Every call is bounded by a timeout of its own and fails at once when the
//! page is closed or the browser dies.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chromiumoxide::cdp::browser_protocol::input::{
    DispatchKeyEventParams, DispatchKeyEventType, DispatchMouseEventParams, DispatchMouseEventType,
    InsertTextParams, MouseButton,
};
use chromiumoxide::cdp::browser_protocol::page::{
    CaptureScreenshotFormat, CaptureScreenshotParams, EventScreencastFrame,
    ScreencastFrameAckParams, StartScreencastFormat, StartScreencastParams, StopScreencastParams,
};
use chromiumoxide::error::CdpError;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{CLOSE_TIMEOUT, frames, network};
use crate::browser::{Condition, Page, PageError, Selector, Selectors};
use crate::sync::lock;

pub(super) const HELPER: &str = include_str!("page.js");

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

/// One tab.
pub(super) struct ChromePage {
    pub(super) page: chromiumoxide::Page,
    /// Cancelled by `close` or when the browser dies.
    closed: CancellationToken,
    dead: CancellationToken,
    /// Requests in flight, for `network_idle`.
    net: Arc<network::Network>,
    /// How many main-frame documents had answered when the last
    /// `navigate` began, so `document_status` reports that navigation's.
    documents_before_navigate: std::sync::atomic::AtomicU64,
    /// Called once when the page is closed by its run (opens the
    /// session's spare page).
    on_close: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

pub(super) fn selector_json(sel: &Selectors) -> Value {
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
pub(super) fn is_navigation_race(msg: &str) -> bool {
    msg.contains("Execution context was destroyed")
        || msg.contains("Cannot find context")
        || msg.contains("Inspected target navigated or closed")
        || msg.contains("context with specified id")
}

impl ChromePage {
    pub(super) fn new(
        page: chromiumoxide::Page,
        closed: CancellationToken,
        dead: CancellationToken,
        net: Arc<network::Network>,
    ) -> ChromePage {
        ChromePage {
            page,
            closed,
            dead,
            net,
            documents_before_navigate: std::sync::atomic::AtomicU64::new(0),
            on_close: std::sync::Mutex::new(None),
        }
    }

    /// Sets what happens when the page's run closes it.
    pub(super) fn on_close(&self, f: Box<dyn FnOnce() + Send>) {
        *lock(&self.on_close) = Some(f);
    }

    /// Whether the page is open and its browser alive.
    pub(super) fn is_alive(&self) -> bool {
        !self.closed.is_cancelled() && !self.dead.is_cancelled()
    }

    /// Makes a spare page the foreground tab, and forgets what it saw
    /// while it waited.
    pub(super) async fn to_front(&self) -> Result<(), PageError> {
        self.guard(Duration::from_secs(5), async {
            self.page
                .bring_to_front()
                .await
                .map(drop)
                .map_err(|e| cdp_error(&e))
        })
        .await?;
        drop(self.net.take_events());
        Ok(())
    }

    /// Closes the tab without calling `on_close`.
    pub(super) async fn close_now(&self) {
        lock(&self.on_close).take();
        Page::close(self).await;
    }

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
        let (frames, inner) = sel.split_frames()?;
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
            // A wait longer than one evaluation may last is a series of
            // slices; only the last one's answer is the caller's.
            let slice = left.min(EVAL_SLICE);
            let sliced = left > EVAL_SLICE;
            let mut opts = opts.clone();
            opts["timeout"] = json!(slice.as_millis() as u64);
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
                    if sliced {
                        // This slice ran out, not the caller's time.
                        continue;
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
                // An evaluation whose answer never came (chromiumoxide gave
                // up at 30 s on a 20 s slice): Chromium can drop the answer
                // of a promise-awaiting evaluation when the page navigates
                // under it (a place-order POST answered after 45 s). The
                // caller's deadline still bounds the wait: evaluate again,
                // in whatever document is there now.
                Err(PageError::Timeout(_)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(op, "an in-page wait got no answer; waiting again");
                    continue;
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

    /// A trusted left click at viewport point (`x`, `y`): move, press,
    /// release, as a person's mouse does.
    async fn click_point(&self, x: f64, y: f64) -> Result<(), PageError> {
        self.mouse(DispatchMouseEventType::MouseMoved, x, y).await?;
        self.mouse(DispatchMouseEventType::MousePressed, x, y)
            .await?;
        self.mouse(DispatchMouseEventType::MouseReleased, x, y)
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

pub(super) fn cdp_error(e: &CdpError) -> PageError {
    match e {
        CdpError::Ws(_) | CdpError::ChannelSendError(_) | CdpError::Io(_) => {
            PageError::Disconnected(e.to_string())
        }
        CdpError::Timeout => PageError::Timeout(Duration::from_secs(30)),
        other => PageError::Other(other.to_string()),
    }
}

/// The longest one in-page evaluation may wait. chromiumoxide gives up on
/// every CDP command after 30 s, whatever its handler's `request_timeout`
/// says (`REQUEST_TIMEOUT` in its `commandfuture.rs`), so a wait that must
/// last longer (inside `commit`, up to `commit_timeout`) is cut into
/// evaluations of at most this long. Before, a place-order the shop
/// answered at 45 s failed at 30 s and left its target in doubt.
pub(super) const EVAL_SLICE: Duration = Duration::from_secs(20);

/// Margin for the answer of an in-page wait to arrive after the page's own
/// timer fired.
const MARGIN: Duration = Duration::from_millis(1500);

#[async_trait]
impl Page for ChromePage {
    async fn navigate(&self, url: &str, timeout: Duration) -> Result<(), PageError> {
        self.documents_before_navigate
            .store(self.net.documents(), std::sync::atomic::Ordering::SeqCst);
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

    async fn document_status(&self) -> Option<crate::browser::DocumentStatus> {
        let seen = self
            .documents_before_navigate
            .load(std::sync::atomic::Ordering::SeqCst);
        self.net.document_after(seen, Duration::from_secs(1)).await
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
            self.click_point(x, y).await
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

    async fn click_at(&self, x: f64, y: f64, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout, async { self.click_point(x, y).await })
            .await
    }

    async fn focused(&self, timeout: Duration) -> Result<String, PageError> {
        self.guard(timeout, self.focused_in_frames(timeout)).await
    }

    async fn type_text(&self, text: &str, timeout: Duration) -> Result<(), PageError> {
        self.guard(timeout, async {
            self.page
                .execute(InsertTextParams::new(text))
                .await
                .map(drop)
                .map_err(|e| cdp_error(&e))
        })
        .await
    }

    async fn screencast(&self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PageError> {
        use base64::Engine as _;
        use futures::StreamExt as _;
        let mut frames = self
            .page
            .event_listener::<EventScreencastFrame>()
            .await
            .map_err(|e| cdp_error(&e))?;
        let start = StartScreencastParams {
            format: Some(StartScreencastFormat::Jpeg),
            quality: Some(70),
            max_width: Some(1280),
            max_height: Some(900),
            every_nth_frame: Some(1),
        };
        self.page.execute(start).await.map_err(|e| cdp_error(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let page = self.page.clone();
        tokio::spawn(async move {
            while let Some(frame) = frames.next().await {
                // Chromium sends the next frame only after this one is
                // acknowledged: a slow viewer slows the stream, never
                // piles frames up.
                let _ = page
                    .execute(ScreencastFrameAckParams::new(frame.session_id))
                    .await;
                let Ok(jpeg) = base64::engine::general_purpose::STANDARD
                    .decode(AsRef::<str>::as_ref(&frame.data))
                else {
                    continue;
                };
                if tx.send(jpeg).await.is_err() {
                    break;
                }
            }
            let _ = page.execute(StopScreencastParams::default()).await;
        });
        Ok(rx)
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

    fn take_events(&self) -> Vec<crate::browser::PageEvent> {
        self.net.take_events()
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
            let then = lock(&self.on_close).take();
            if let Some(f) = then {
                f();
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
