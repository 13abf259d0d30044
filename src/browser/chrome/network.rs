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

use crate::browser::{MAX_PAGE_EVENTS, PageError, PageEvent, PageEventKind};

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
    /// When a request last started or ended.
    last: Option<Instant>,
}

/// The network activity of one page.
#[derive(Default)]
pub(super) struct Network {
    flight: Mutex<Flight>,
    changed: Notify,
    /// What the trace shows, since the last `take_events`.
    events: Mutex<VecDeque<PageEvent>>,
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
    ) -> Result<Arc<Network>, PageError> {
        let err = |e: chromiumoxide::error::CdpError| PageError::Other(e.to_string());
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
                tokio::select! {
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
                                f.open.insert(
                                    e.request_id.inner().clone(),
                                    Request { url: e.request.url.clone(), frame, loader },
                                );
                            }
                        });
                    }
                    Some(e) = done.next() => n.update(|f| {
                        f.open.remove(e.request_id.inner());
                    }),
                    Some(e) = failed.next() => {
                        let mut url = None;
                        n.update(|f| {
                            url = f.open.remove(e.request_id.inner()).map(|r| r.url);
                        });
                        // A request a navigation cancelled is the page
                        // moving on, not a failure.
                        if e.canceled != Some(true) {
                            n.record(PageEventKind::RequestFailed, e.error_text.clone(), url);
                        }
                    }
                    // A frame committed a new document: what the old one
                    // still had in flight is cancelled, including requests
                    // it started after the new document was requested.
                    Some(e) = committed.next() => {
                        let frame = Some(e.frame.id.inner().clone());
                        let loader = e.frame.loader_id.inner().clone();
                        if e.frame.parent_id.is_none() {
                            n.record(PageEventKind::Navigated, String::new(), Some(e.frame.url.clone()));
                        }
                        n.update(|f| f.open.retain(|_, r| r.frame != frame || r.loader == loader));
                    }
                    Some(e) = responses.next() => {
                        if e.response.status >= 400 {
                            let text = format!("{} {}", e.response.status, e.response.status_text)
                                .trim()
                                .to_owned();
                            n.record(PageEventKind::HttpError, text, Some(e.response.url.clone()));
                        }
                    }
                    Some(e) = console.next() => {
                        if matches!(e.r#type, ConsoleApiCalledType::Error | ConsoleApiCalledType::Assert) {
                            let text = e.args.iter().map(show).collect::<Vec<_>>().join(" ");
                            n.record(PageEventKind::Console, text, None);
                        }
                    }
                    Some(e) = thrown.next() => {
                        let d = &e.exception_details;
                        let text = d
                            .exception
                            .as_ref()
                            .and_then(|x| x.description.clone())
                            .unwrap_or_else(|| d.text.clone());
                        n.record(PageEventKind::Exception, text, d.url.clone());
                    }
                    else => break,
                }
            }
        });
        Ok(net)
    }

    fn record(&self, kind: PageEventKind, text: String, url: Option<String>) {
        let mut text = text;
        if text.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    /// The events recorded since the last call.
    pub(super) fn take_events(&self) -> Vec<PageEvent> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    fn update(&self, f: impl FnOnce(&mut Flight)) {
        let mut flight = self
            .flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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
                let f = self
                    .flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
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
