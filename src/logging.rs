//! Log output: plain lines or JSON, filtered by `RUST_LOG`, with every
//! secret masked on the way out, and a copy of recent events for the
//! dashboard.
//!
//! Masking happens in the writer, after formatting, so it covers every
//! field of every event whatever code emitted it.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use crate::redact::Redactor;

/// How log lines look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// A [`MakeWriter`] whose writers mask secrets before writing.
#[derive(Clone)]
pub struct Redacting<M> {
    inner: M,
    redactor: Arc<Redactor>,
}

impl<M> Redacting<M> {
    pub fn new(inner: M, redactor: Arc<Redactor>) -> Self {
        Redacting { inner, redactor }
    }
}

/// The writer for one event. tracing-subscriber formats an event into a
/// buffer and writes it with one `write_all`, so each call sees whole lines.
pub struct RedactingWriter<W> {
    inner: W,
    redactor: Arc<Redactor>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let clean = self.redactor.apply_bytes(buf);
        self.inner.write_all(&clean)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
        }
    }
}

/// One recent event, as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    #[serde(with = "crate::time::rfc3339")]
    pub at: std::time::SystemTime,
    pub level: String,
    pub message: String,
}

/// The last [`Recent::CAPACITY`] events at INFO or above, secrets masked.
#[derive(Clone, Default)]
pub struct Recent {
    events: Arc<Mutex<VecDeque<Event>>>,
    redactor: Arc<Redactor>,
}

impl Recent {
    pub const CAPACITY: usize = 200;

    pub fn new(redactor: Arc<Redactor>) -> Recent {
        Recent {
            events: Arc::default(),
            redactor,
        }
    }

    /// Newest last.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// Collects an event's message and its fields as `message k=v k=v`.
#[derive(Default)]
struct MessageVisitor {
    message: String,
    fields: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else if !field.name().starts_with("log.") {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recent {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO || !meta.target().starts_with("baton") {
            return;
        }
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let line = format!("{}{}", v.message, v.fields);
        let message = self.redactor.apply_log(line.trim()).into_owned();
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if events.len() == Self::CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            at: std::time::SystemTime::now(),
            level: meta.level().to_string().to_lowercase(),
            message,
        });
    }
}

/// The default filter: baton at INFO, chromiumoxide's handler quiet (it
/// warns about every DevTools event it cannot parse, which is harmless).
pub const DEFAULT_FILTER: &str = "info,chromiumoxide::handler=error,chromiumoxide::conn=error";

/// Installs the global subscriber: `RUST_LOG` (or [`DEFAULT_FILTER`]),
/// text or JSON on stderr, secrets masked, recent events kept in `recent`.
pub fn init(format: LogFormat, recent: Recent, redactor: Arc<Redactor>) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let writer = Redacting::new(io::stderr, redactor);
    let ansi = std::io::IsTerminal::is_terminal(&io::stderr());
    let registry = tracing_subscriber::registry().with(filter).with(recent);
    let result = match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_target(false)
                    .with_ansi(ansi),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(writer),
            )
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_writer_masks_secrets_in_formatted_events() {
        let redactor = Arc::new(Redactor::new());
        redactor.add("hunter2");
        let buf = Buf::default();
        let b2 = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Redacting::new(move || b2.clone(), redactor))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(password = "hunter2", "logging in with hunter2");
        });
        let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!out.contains("hunter2"), "{out}");
        assert_eq!(out.matches("[redacted]").count(), 2, "{out}");
    }
}
