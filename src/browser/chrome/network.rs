//! What a page has in flight on the network, for `wait_idle`: a task per
//! page follows the DevTools network events and keeps the set of requests
//! not yet finished, and when the last one ended.
//!
//! Event streams, not polling: a wait on a page that is already quiet
//! returns at once, and a wait on a busy page wakes when a request ends.
//!
//! The same task keeps what a run's trace shows of the page: console
//! errors, uncaught exceptions, failed requests, 4xx/5xx responses and the
//! main frame's navigations ([`Network::take_events`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::collections::VecDeque;

use chromiumoxide::cdp::browser_protocol::fetch::{
    self, EventRequestPaused, FailRequestParams, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::ErrorReason;
use chromiumoxide::cdp::browser_protocol::network::{
    EventLoadingFailed, EventLoadingFinished, EventRequestWillBeSent, EventResponseReceived,
    ResourceType,
};
use chromiumoxide::cdp::browser_protocol::page::EventFrameNavigated;
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown, RemoteObject,
};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::browser::{Blocked, MAX_PAGE_EVENTS, PageError, PageEvent, PageEventKind};
use crate::sync::lock;

struct Request {
    url: String,
    frame: Option<String>,
    /// The document the request belongs to.
    loader: String,
}

#[derive(Default)]
struct Flight {
    /// Request id to what is known of it.
    open: HashMap<String, Request>,
    /// Requests whose end was seen before their start (a cache hit's
    /// events come in one burst), so their start does not open them.
    ended_early: std::collections::VecDeque<String>,
    /// When a request last started or ended.
    last: Option<Instant>,
}

/// How many early ends a page remembers.
const MAX_ENDED_EARLY: usize = 256;

impl Flight {
    /// A request started, unless its end came first.
    fn start(&mut self, id: String, r: Request) {
        match self.ended_early.iter().position(|e| *e == id) {
            Some(i) => {
                self.ended_early.remove(i);
            }
            None => {
                self.open.insert(id, r);
            }
        }
    }

    /// A request ended: it is no longer in flight, or, if its start has
    /// not been seen yet, it will not be.
    fn end(&mut self, id: &str) -> Option<Request> {
        let r = self.open.remove(id);
        if r.is_none() {
            if self.ended_early.len() >= MAX_ENDED_EARLY {
                self.ended_early.pop_front();
            }
            self.ended_early.push_back(id.to_owned());
        }
        r
    }
}

/// The network activity of one page.
#[derive(Default)]
pub(super) struct Network {
    flight: Mutex<Flight>,
    changed: Notify,
    /// What the trace shows, since the last `take_events`.
    events: Mutex<VecDeque<PageEvent>>,
    /// The main frame's last document response: how many there have been,
    /// and the last one's status and `Retry-After`.
    document: Mutex<(u64, Option<crate::browser::DocumentStatus>)>,
}

/// How long a console message or exception text may be in a trace.
const MAX_TEXT: usize = 1000;

impl Network {
    /// Starts following `page`'s requests until `closed` fires. Requests
    /// that never end by design (event streams, WebSockets) are left out,
    /// or a page with a live feed would never be idle.
    pub(super) async fn follow(
        page: &chromiumoxide::Page,
        closed: CancellationToken,
        block: &[Blocked],
    ) -> Result<Arc<Network>, PageError> {
        let err = |e: chromiumoxide::error::CdpError| PageError::Other(e.to_string());
        // Requests of a blocked kind are paused by the browser before they
        // leave it, and failed here (`browser.block`).
        let mut paused = page
            .event_listener::<EventRequestPaused>()
            .await
            .map_err(err)?;
        if !block.is_empty() {
            let patterns = block
                .iter()
                .map(|b| RequestPattern {
                    url_pattern: Some("*".into()),
                    resource_type: Some(match b {
                        Blocked::Image => ResourceType::Image,
                        Blocked::Font => ResourceType::Font,
                        Blocked::Media => ResourceType::Media,
                    }),
                    request_stage: Some(RequestStage::Request),
                })
                .collect();
            page.execute(fetch::EnableParams {
                patterns: Some(patterns),
                handle_auth_requests: None,
            })
            .await
            .map_err(err)?;
        }
        let blocker = page.clone();
        // Chromium names a tab's main frame after its target.
        let main_frame = page.target_id().inner().clone();
        let mut sent = page
            .event_listener::<EventRequestWillBeSent>()
            .await
            .map_err(err)?;
        let mut done = page
            .event_listener::<EventLoadingFinished>()
            .await
            .map_err(err)?;
        let mut failed = page
            .event_listener::<EventLoadingFailed>()
            .await
            .map_err(err)?;
        let mut committed = page
            .event_listener::<EventFrameNavigated>()
            .await
            .map_err(err)?;
        let mut responses = page
            .event_listener::<EventResponseReceived>()
            .await
            .map_err(err)?;
        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .map_err(err)?;
        let mut thrown = page
            .event_listener::<EventExceptionThrown>()
            .await
            .map_err(err)?;
        // A frame in another renderer (site isolation on, in a browser
        // baton attaches to) reports its requests to its own target, not
        // to this page: only the main frame's documents are followed, so a
        // frame's document request is never left open forever.
        let main = page
            .mainframe()
            .await
            .ok()
            .flatten()
            .map(|f| f.inner().clone());
        let net = Arc::new(Network::default());
        let n = net.clone();
        tokio::spawn(async move {
            loop {
                // Each kind of event has its own stream, so the order
                // between kinds is lost unless starts are always taken
                // first: a cache hit's start and end arrive together, and
                // an end handled before its start left the request open
                // for ever (`wait_idle` then timed out on a cached
                // stylesheet).
                tokio::select! {
                    biased;
                    () = closed.cancelled() => break,
                    Some(e) = sent.next() => {
                        let streaming = matches!(
                            e.r#type,
                            Some(ResourceType::EventSource | ResourceType::WebSocket)
                        );
                        let frame = e.frame_id.as_ref().map(|f| f.inner().clone());
                        let loader = e.loader_id.inner().clone();
                        let document = e.r#type == Some(ResourceType::Document);
                        n.update(|f| {
                            if document {
                                // A frame loading a new document cancels
                                // the old document's requests, and Chromium
                                // does not always report each of them.
                                f.open.retain(|_, r| r.frame != frame || r.loader == loader);
                            }
                            let subframe_document = document && frame != main;
                            if !streaming && !subframe_document {
                                f.start(
                                    e.request_id.inner().clone(),
                                    Request { url: e.request.url.clone(), frame, loader },
                                );
                            }
                        });
                    }
                    Some(e) = done.next() => n.update(|f| {
                        f.end(e.request_id.inner());
                    }),
                    Some(e) = failed.next() => {
                        let mut url = None;
                        n.update(|f| {
                            url = f.end(e.request_id.inner()).map(|r| r.url);
                        });
                        // A request a navigation cancelled is the page
                        // moving on, and one `browser.block` stopped was
                        // asked for: neither is a failure.
                        if e.canceled != Some(true) && !e.error_text.contains("BLOCKED_BY_CLIENT") {
                            n.record(PageEventKind::RequestFailed, &e.error_text, url);
                        }
                    }
                    // A frame committed a new document: what the old one
                    // still had in flight is cancelled, including requests
                    // it started after the new document was requested.
                    Some(e) = committed.next() => {
                        let frame = Some(e.frame.id.inner().clone());
                        let loader = e.frame.loader_id.inner().clone();
                        if e.frame.parent_id.is_none() {
                            n.record(PageEventKind::Navigated, "", Some(e.frame.url.clone()));
                        }
                        n.update(|f| f.open.retain(|_, r| r.frame != frame || r.loader == loader));
                    }
                    Some(e) = paused.next() => {
                        let fail = FailRequestParams::new(e.request_id.clone(), ErrorReason::BlockedByClient);
                        let page = blocker.clone();
                        // Its own task: the answer is a round trip, and the
                        // events behind it must not wait for it.
                        tokio::spawn(async move { page.execute(fail).await });
                    }
                    Some(e) = responses.next() => {
                        if e.r#type == ResourceType::Document
                            && e.frame_id.as_ref().is_some_and(|f| *f.inner() == main_frame)
                        {
                            n.document_answered(&e.response);
                        }
                        if e.response.status >= 400 {
                            let text = format!("{} {}", e.response.status, e.response.status_text)
                                .trim()
                                .to_owned();
                            n.record(PageEventKind::HttpError, &text, Some(e.response.url.clone()));
                        }
                    }
                    Some(e) = console.next() => {
                        if matches!(e.r#type, ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert) {
                            let text = e.args.iter().map(show).collect::<Vec<_>>().join(" ");
                            n.record(PageEventKind::Console, &text, None);
                        }
                    }
                    Some(e) = thrown.next() => {
                        let d = &e.exception_details;
                        let text = d
                            .exception
                            .as_ref()
                            .and_then(|x| x.description.clone())
                            .unwrap_or_else(|| d.text.clone());
                        n.record(PageEventKind::Exception, &text, d.url.clone());
                    }
                    else => break,
                }
            }
        });
        Ok(net)
    }

    fn record(&self, kind: PageEventKind, text: &str, url: Option<String>) {
        let text = crate::browser::clip(text, MAX_TEXT);
        let mut events = lock(&self.events);
        if events.len() >= MAX_PAGE_EVENTS {
            events.pop_front();
        }
        events.push_back(PageEvent {
            at: Instant::now(),
            kind,
            text,
            url,
        });
    }

    fn document_answered(&self, r: &chromiumoxide::cdp::browser_protocol::network::Response) {
        let retry_after = r.headers.inner().as_object().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
        });
        {
            let mut d = lock(&self.document);
            d.0 += 1;
            d.1 = u16::try_from(r.status).ok().map(|s| (s, retry_after));
        }
        self.changed.notify_waiters();
    }

    /// How many main-frame documents have answered so far.
    pub(super) fn documents(&self) -> u64 {
        lock(&self.document).0
    }

    /// The status and `Retry-After` of the first main-frame document to
    /// answer after `seen` had, waiting for its event up to `timeout` (a
    /// navigation's load completes on another channel than its events).
    pub(super) async fn document_after(
        &self,
        seen: u64,
        timeout: Duration,
    ) -> Option<crate::browser::DocumentStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let d = lock(&self.document);
                if d.0 > seen {
                    return d.1.clone();
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// The events recorded since the last call.
    pub(super) fn take_events(&self) -> Vec<PageEvent> {
        lock(&self.events).drain(..).collect()
    }

    fn update(&self, f: impl FnOnce(&mut Flight)) {
        let mut flight = lock(&self.flight);
        f(&mut flight);
        flight.last = Some(Instant::now());
        drop(flight);
        self.changed.notify_waiters();
    }

    /// Waits until no request has been in flight for `quiet`, up to
    /// `timeout`.
    pub(super) async fn idle(&self, quiet: Duration, timeout: Duration) -> Result<(), PageError> {
        let deadline = Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (open, quiet_until) = {
                let f = lock(&self.flight);
                let open: Vec<String> = f.open.values().take(3).map(|r| r.url.clone()).collect();
                (open, f.last.map(|l| l + quiet))
            };
            let now = Instant::now();
            if open.is_empty() && quiet_until.is_none_or(|t| t <= now) {
                return Ok(());
            }
            let wake = match quiet_until {
                Some(t) if open.is_empty() => t.min(deadline),
                _ => deadline,
            };
            if now >= deadline {
                let now = if open.is_empty() {
                    "had a request end less than the quiet time ago".to_owned()
                } else {
                    format!("still has requests in flight ({})", open.join(", "))
                };
                return Err(PageError::Unmet {
                    cond: format!("the network to be quiet for {}ms", quiet.as_millis()),
                    now,
                    waited: timeout,
                });
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// A console argument as the console shows it.
fn show(o: &RemoteObject) -> String {
    match &o.value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => o
            .description
            .clone()
            .unwrap_or_else(|| format!("{:?}", o.r#type)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(url: &str) -> Request {
        Request {
            url: url.into(),
            frame: None,
            loader: "l".into(),
        }
    }

    /// Either order of a request's start and end leaves nothing in
    /// flight: a cache hit's end can be handled before its start.
    #[test]
    fn a_request_ends_whichever_event_comes_first() {
        let mut f = Flight::default();
        f.start("1".into(), request("/a.css"));
        assert_eq!(f.end("1").map(|r| r.url), Some("/a.css".into()));
        assert!(f.end("2").is_none());
        f.start("2".into(), request("/b.css"));
        assert!(f.open.is_empty());
        assert!(f.ended_early.is_empty());
        // Early ends are bounded.
        for i in 0..2 * MAX_ENDED_EARLY {
            f.end(&format!("x{i}"));
        }
        assert_eq!(f.ended_early.len(), MAX_ENDED_EARLY);
    }
}
