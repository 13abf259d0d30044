//! Selectors inside frames (`frame:#card >> #number`): the execution
//! context of each frame and where its viewport sits in the page's.
//!
//! Each frame element is waited for in its parent document like any
//! element, scrolled into view, and measured; `DOM.describeNode` gives the
//! frame it owns, and `Page.createIsolatedWorld` a context in that frame in
//! which the helper runs. Chromium runs with site isolation off, so a
//! cross-origin frame (hosted card fields) is in the page's renderer and
//! this works for it too. Points the helper returns are in the frame's
//! viewport; adding the frames' offsets gives page coordinates for trusted
//! mouse input.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::dom::DescribeNodeParams;
use chromiumoxide::cdp::browser_protocol::page::CreateIsolatedWorldParams;
use chromiumoxide::cdp::js_protocol::runtime::{
    CallFunctionOnParams, EvaluateParams, ExecutionContextId,
};
use serde_json::{Value, json};

use super::page::{ChromePage, EVAL_SLICE, HELPER, cdp_error, is_navigation_race, selector_json};
use crate::browser::{FOCUSED, PageError, Selector, Selectors};

/// Where a helper call runs: the page's main world, or a frame's world
/// with the frame's viewport offset in page coordinates.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Frame {
    pub context: Option<ExecutionContextId>,
    pub offset: (f64, f64),
}

/// The frame element's content box in its parent's viewport.
const CONTENT_ORIGIN: &str = "function () { const r = this.getBoundingClientRect(); const s = getComputedStyle(this); return [r.left + this.clientLeft + parseFloat(s.paddingLeft), r.top + this.clientTop + parseFloat(s.paddingTop)]; }";

impl ChromePage {
    /// Evaluates `expression` in `frame` (awaiting a promise).
    /// `by_value: false` returns the remote object's id instead.
    pub(super) async fn evaluate_in(
        &self,
        expression: String,
        frame: Frame,
        by_value: bool,
    ) -> Result<Value, PageError> {
        let mut b = EvaluateParams::builder()
            .expression(expression)
            .await_promise(true)
            .return_by_value(by_value);
        if let Some(c) = frame.context {
            b = b.context_id(c);
        }
        let params = b.build().map_err(PageError::Other)?;
        let resp = self.page.execute(params).await.map_err(|e| cdp_error(&e))?;
        if let Some(ex) = resp.result.exception_details {
            let detail = ex.exception.and_then(|o| o.description).unwrap_or(ex.text);
            return Err(PageError::Script(detail));
        }
        let r = resp.result.result;
        if by_value {
            return Ok(r.value.unwrap_or(Value::Null));
        }
        Ok(
            match (
                r.subtype.as_ref().map(std::convert::AsRef::as_ref),
                r.object_id,
            ) {
                (Some("node"), Some(id)) => json!({ "object": id.inner() }),
                _ => Value::Null,
            },
        )
    }

    /// What has the keyboard focus, followed into frames, cross-origin
    /// ones included (`iframe#card-frame > input#card-number`): the
    /// focused frame element of each document is entered (by its place
    /// among the document's frames) and asked in turn, at most four frames
    /// deep. A frame that cannot be entered within a second ends the path
    /// where it is.
    pub(super) async fn focused_in_frames(&self, timeout: Duration) -> Result<String, PageError> {
        let deadline = tokio::time::Instant::now() + timeout.min(Duration::from_secs(1));
        let mut path: Vec<String> = Vec::new();
        let mut frames: Vec<Selector> = Vec::new();
        loop {
            let frame = if frames.is_empty() {
                Frame::default()
            } else {
                match self.enter(&frames, deadline).await {
                    Ok(f) => f,
                    Err(_) if !path.is_empty() => break,
                    Err(e) => return Err(e),
                }
            };
            let v = self.evaluate_in(FOCUSED.to_owned(), frame, true).await?;
            let focus = v["focus"].as_str().unwrap_or_default();
            if focus.is_empty() {
                break;
            }
            path.push(focus.to_owned());
            let Some(n) = v["frame"].as_u64().filter(|n| *n > 0) else {
                break;
            };
            if frames.len() >= 4 {
                break;
            }
            frames.push(Selector::parse(&format!("xpath:(//iframe|//frame)[{n}]")));
        }
        Ok(path.join(" > "))
    }

    /// Enters `frames` in turn, each waited for up to `timeout` as a whole.
    pub(super) async fn enter(
        &self,
        frames: &[Selector],
        deadline: tokio::time::Instant,
    ) -> Result<Frame, PageError> {
        let mut at = Frame::default();
        for f in frames {
            at = loop {
                match self.enter_one(f, at, deadline).await {
                    Err(PageError::Script(m) | PageError::Other(m)) if is_navigation_race(&m) => {
                        if tokio::time::Instant::now() >= deadline {
                            return Err(PageError::Other(format!(
                                "frame {f} has no document yet (it is still loading)"
                            )));
                        }
                    }
                    other => break other?,
                }
            };
        }
        Ok(at)
    }

    async fn enter_one(
        &self,
        f: &Selector,
        parent: Frame,
        deadline: tokio::time::Instant,
    ) -> Result<Frame, PageError> {
        let sel = Selectors(vec![f.clone()]);
        let waited = deadline.saturating_duration_since(tokio::time::Instant::now());
        // In slices, as `ChromePage::helper` waits (see `EVAL_SLICE`).
        let found = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let slice = left.min(EVAL_SLICE);
            let expr = format!(
                "({HELPER})({}, \"element\", {})",
                selector_json(&sel),
                json!({"timeout": slice.as_millis() as u64, "visible": true})
            );
            let found = self.evaluate_in(expr, parent, false).await?;
            if found["object"].is_string() || left <= EVAL_SLICE {
                break found;
            }
        };
        let Some(object) = found["object"].as_str() else {
            return Err(PageError::NotFound {
                selector: sel,
                waited,
            });
        };
        let object = chromiumoxide::cdp::js_protocol::runtime::RemoteObjectId::new(object);
        let call = CallFunctionOnParams::builder()
            .function_declaration(CONTENT_ORIGIN)
            .object_id(object.clone())
            .return_by_value(true)
            .build()
            .map_err(PageError::Other)?;
        let origin = self.page.execute(call).await.map_err(|e| cdp_error(&e))?;
        let xy = origin.result.result.value.unwrap_or(Value::Null);
        let (x, y) = (xy[0].as_f64().unwrap_or(0.0), xy[1].as_f64().unwrap_or(0.0));
        let node = self
            .page
            .execute(DescribeNodeParams::builder().object_id(object).build())
            .await
            .map_err(|e| cdp_error(&e))?;
        let Some(frame_id) = node.result.node.frame_id.clone() else {
            return Err(PageError::WrongElement {
                selector: sel,
                expected: "frame (iframe or frame element)",
            });
        };
        let world = CreateIsolatedWorldParams::builder()
            .frame_id(frame_id)
            .world_name("baton")
            .build()
            .map_err(PageError::Other)?;
        let world = self.page.execute(world).await.map_err(|e| cdp_error(&e))?;
        Ok(Frame {
            context: Some(world.result.execution_context_id),
            offset: (parent.offset.0 + x, parent.offset.1 + y),
        })
    }
}
