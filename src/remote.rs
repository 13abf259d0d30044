//! A browser page shown to a person far away and driven by them: what
//! `baton login --remote` and the dashboard's **Log in** both serve. The
//! page's pictures come as a CDP screencast (a new one whenever the page
//! changes) with where the page is, whether it has loaded and what has the
//! focus; what the person does goes back into the page as trusted input:
//! a click at a point of the picture, typed text, a named key.
//!
//! This module owns the stream and the input; whoever serves it owns the
//! gate in front (the dashboard's token, Host and Origin checks) and what
//! **Done** means. Typed text is never logged or traced.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::browser::{Page, PageError};

/// How long one forwarded input may take.
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// The page the person sees: the picture, the keys, Done (and Cancel).
/// Its requests are relative (`frames`, `input`, `done`, `cancel`), so it
/// works wherever it is served: at `/` or at `/login/ACCOUNT/`.
pub const PAGE: &str = include_str!("remote.html");

/// The page's address and load state.
const WHERE: &str = "({ url: location.href, ready: document.readyState })";

/// One thing the person did.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    Click { x: f64, y: f64 },
    Text { text: String },
    Key { key: String },
}

/// A page being streamed. Stops streaming when dropped.
pub struct Screen {
    page: Arc<dyn Page>,
    /// The newest frame: `{"url", "ready", "focus", "jpeg"}`: the page's
    /// address (secrets masked), whether it has loaded and what has the
    /// focus, shown above the picture, and the picture as base64 JPEG.
    frame: watch::Receiver<Option<Arc<str>>>,
    stop: CancellationToken,
    /// When the person last did something: the focus is read again for
    /// a while after it.
    last_input: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// The focus readout, read again only when it may have moved. A page
/// changes its picture on its own (a blinking caret, an animation), and
/// reading the focus inside a frame costs a CDP isolated world each time:
/// a person idling on a framed field must not pile them up.
#[derive(Default)]
struct Focus {
    shown: String,
    url: String,
    ready: bool,
    at: Option<Instant>,
}

impl Focus {
    /// How long after an input the focus is read on every picture (a
    /// page's script may move it a moment later: auto-advancing code
    /// fields).
    const AFTER_INPUT: Duration = Duration::from_secs(2);
    /// How often it is read when nothing happens.
    const IDLE: Duration = Duration::from_secs(5);

    fn stale(&self, url: &str, ready: bool, input: Option<Instant>) -> bool {
        let Some(at) = self.at else {
            return true;
        };
        url != self.url
            || ready != self.ready
            || at.elapsed() >= Self::IDLE
            || input.is_some_and(|i| i.elapsed() < Self::AFTER_INPUT || i > at)
    }

    fn read(&mut self, url: &str, ready: bool) {
        url.clone_into(&mut self.url);
        self.ready = ready;
        self.at = Some(Instant::now());
    }
}

impl Screen {
    /// Starts streaming `page`.
    pub async fn start(page: Arc<dyn Page>) -> Result<Screen, PageError> {
        let mut frames = page.screencast().await?;
        let (frame_tx, frame) = watch::channel(None);
        let stop = CancellationToken::new();
        let (stopped, seen_on) = (stop.clone(), page.clone());
        let last_input = Arc::new(std::sync::Mutex::new(None::<Instant>));
        let inputs = last_input.clone();
        tokio::spawn(async move {
            use base64::Engine as _;
            let mut focus = Focus::default();
            loop {
                let jpeg = tokio::select! {
                    () = stopped.cancelled() => break,
                    f = frames.recv() => match f {
                        Some(jpeg) => jpeg,
                        None => break,
                    },
                };
                // Where the page is, whether it has loaded, and what has
                // the focus: what a person reads off a window (the address
                // bar, the spinner, the caret) before typing.
                let seen = seen_on.eval(WHERE, INPUT_TIMEOUT).await.unwrap_or_default();
                let url = seen["url"].as_str().unwrap_or_default();
                let ready = seen["ready"] == "complete";
                // Followed into frames: a hosted sign-in form or a card
                // field in a frame shows as the field, not as `iframe`.
                let input = *crate::sync::lock(&inputs);
                if focus.stale(url, ready, input) {
                    focus.shown = seen_on.focused(INPUT_TIMEOUT).await.unwrap_or_default();
                    focus.read(url, ready);
                }
                let shown = serde_json::json!({
                    "url": crate::redact::url(url),
                    "ready": ready,
                    "focus": focus.shown,
                    "jpeg": base64::engine::general_purpose::STANDARD.encode(jpeg),
                });
                frame_tx.send_replace(Some(shown.to_string().into()));
            }
        });
        Ok(Screen {
            page,
            frame,
            stop,
            last_input,
        })
    }

    /// Stops streaming: every open stream of it ends.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn page(&self) -> &Arc<dyn Page> {
        &self.page
    }

    /// Server-sent `frame` events (JSON, see [`Screen::frame`]): the newest
    /// at once, then each new one. A slow viewer skips frames, never
    /// queues them. Ends when the screen stops or `also` fires (the
    /// server's own stop: an open stream must never keep a stopping
    /// server alive).
    pub fn frames(&self, also: CancellationToken) -> impl IntoResponse + use<> {
        let rx = self.frame.clone();
        let stop = self.stop.clone();
        let stream = futures::stream::unfold(
            (rx, stop, also, true),
            |(mut rx, stop, also, first)| async move {
                if !first {
                    tokio::select! {
                        changed = rx.changed() => if changed.is_err() { return None },
                        () = stop.cancelled() => return None,
                        () = also.cancelled() => return None,
                    }
                }
                let data = rx.borrow_and_update().clone();
                let event = match data {
                    Some(frame) => Event::default().event("frame").data(&*frame),
                    None => Event::default().comment("no picture yet"),
                };
                Some((
                    Ok::<_, std::convert::Infallible>(event),
                    (rx, stop, also, false),
                ))
            },
        );
        Sse::new(stream).keep_alive(KeepAlive::default())
    }

    /// Sends the person's input to the page: 204, or 422 with what went
    /// wrong (never with what was typed).
    pub async fn input(&self, i: Input) -> Response {
        *crate::sync::lock(&self.last_input) = Some(Instant::now());
        let done = match i {
            Input::Click { x, y } => self.page.click_at(x, y, INPUT_TIMEOUT).await,
            Input::Text { text } => self.page.type_text(&text, INPUT_TIMEOUT).await,
            Input::Key { key } => self.page.press(&key, INPUT_TIMEOUT).await,
        };
        match done {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::json!({"error": e.to_string()}).to_string(),
            )
                .into_response(),
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The focus is read again when the page moved, after an input, and
    /// every few seconds, not on every picture of an idle page.
    #[tokio::test(start_paused = true)]
    async fn the_focus_is_read_again_only_when_it_may_have_moved() {
        let mut f = Focus::default();
        assert!(f.stale("https://shop/login", true, None), "never read");
        f.read("https://shop/login", true);
        let sec = Duration::from_secs(1);
        tokio::time::advance(sec).await;
        assert!(
            !f.stale("https://shop/login", true, None),
            "an idle picture"
        );
        assert!(f.stale("https://shop/code", true, None), "another page");
        assert!(f.stale("https://shop/login", false, None), "loading again");
        let typed = Instant::now();
        assert!(
            f.stale("https://shop/login", true, Some(typed)),
            "just typed"
        );
        f.read("https://shop/login", true);
        tokio::time::advance(sec).await;
        assert!(
            f.stale("https://shop/login", true, Some(typed)),
            "a page may move the focus a moment after an input"
        );
        tokio::time::advance(2 * sec).await;
        f.read("https://shop/login", true);
        tokio::time::advance(sec).await;
        assert!(!f.stale("https://shop/login", true, Some(typed)));
        tokio::time::advance(Focus::IDLE).await;
        assert!(
            f.stale("https://shop/login", true, Some(typed)),
            "at least every 5 s"
        );
    }
}
