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
}

impl Screen {
    /// Starts streaming `page`.
    pub async fn start(page: Arc<dyn Page>) -> Result<Screen, PageError> {
        let mut frames = page.screencast().await?;
        let (frame_tx, frame) = watch::channel(None);
        let stop = CancellationToken::new();
        let (stopped, seen_on) = (stop.clone(), page.clone());
        tokio::spawn(async move {
            use base64::Engine as _;
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
                // Followed into frames: a hosted sign-in form or a card
                // field in a frame shows as the field, not as `iframe`.
                let focus = seen_on.focused(INPUT_TIMEOUT).await.unwrap_or_default();
                let url = seen["url"].as_str().unwrap_or_default();
                let shown = serde_json::json!({
                    "url": crate::redact::url(url),
                    "ready": seen["ready"] == "complete",
                    "focus": focus,
                    "jpeg": base64::engine::general_purpose::STANDARD.encode(jpeg),
                });
                frame_tx.send_replace(Some(shown.to_string().into()));
            }
        });
        Ok(Screen { page, frame, stop })
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
