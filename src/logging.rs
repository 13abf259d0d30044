//! Log output: plain lines or JSON, filtered by `RUST_LOG`, with every
//! secret masked on the way out, and a copy of recent events for the
//! dashboard.
//!
//! On a terminal, with neither `RUST_LOG` nor `-v`, the terminal gets
//! warnings and errors only (the run lines go to stdout, one per run) and
//! the INFO detail goes to `STATE_DIR/baton.log`, rotated by size
//! ([`LogFile`]). Anywhere else (a service's journal, a pipe, a test)
//! stderr gets INFO as before.
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
use crate::sync::lock;

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
        lock(&self.events).iter().cloned().collect()
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
        let mut events = lock(&self.events);
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

/// The terminal's filter when it is quiet: warnings and errors.
pub const QUIET_FILTER: &str = "warn,chromiumoxide::handler=error,chromiumoxide::conn=error";

/// Whether the terminal gets warnings only, the detail going to the log
/// file: text on a terminal, with neither `RUST_LOG` nor `-v`.
pub fn quiet(format: LogFormat, terminal: bool, rust_log: bool, verbose: bool) -> bool {
    format == LogFormat::Text && terminal && !rust_log && !verbose
}

/// The `RUST_LOG` filter, or `default`.
fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber: `RUST_LOG` (or [`DEFAULT_FILTER`]),
/// text or JSON on stderr (warnings only on a quiet terminal, the rest to
/// [`file`]), secrets masked, recent events kept in `recent`.
pub fn init(format: LogFormat, verbose: bool, recent: Recent, redactor: Arc<Redactor>) {
    use tracing_subscriber::Layer as _;
    let terminal = std::io::IsTerminal::is_terminal(&io::stderr());
    let rust_log = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let quiet = quiet(format, terminal, rust_log, verbose);
    let writer = Redacting::new(io::stderr, redactor.clone());
    let stderr_filter = if quiet {
        EnvFilter::new(QUIET_FILTER)
    } else {
        filter(DEFAULT_FILTER)
    };
    let stderr = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_target(false)
            .with_ansi(terminal)
            .with_filter(stderr_filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(writer)
            .with_filter(stderr_filter)
            .boxed(),
    };
    let to_file = quiet.then(|| {
        file()
            .enabled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        tracing_subscriber::fmt::layer()
            .with_writer(Redacting::new(file().clone(), redactor))
            .with_target(false)
            .with_ansi(false)
            .with_filter(EnvFilter::new(DEFAULT_FILTER))
    });
    let result = tracing_subscriber::registry()
        .with(stderr)
        .with(to_file)
        .with(recent.with_filter(filter(DEFAULT_FILTER)))
        .try_init();
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}

/// The log file of a quiet terminal: `STATE_DIR/baton.log`, moved to
/// `baton.log.1` when it passes [`LogFile::MAX_BYTES`] (one old file is
/// kept). Lines before [`LogFile::open`] (the config not read yet) are not
/// kept: they are warnings or errors, which the terminal showed.
#[derive(Clone, Default)]
pub struct LogFile {
    inner: Arc<Mutex<Option<Rotating>>>,
    enabled: Arc<std::sync::atomic::AtomicBool>,
}

struct Rotating {
    path: std::path::PathBuf,
    file: std::fs::File,
    len: u64,
    max: u64,
}

/// The process's log file.
pub fn file() -> &'static LogFile {
    static FILE: std::sync::LazyLock<LogFile> = std::sync::LazyLock::new(LogFile::default);
    &FILE
}

impl LogFile {
    pub const MAX_BYTES: u64 = 10 * 1024 * 1024;
    pub const NAME: &'static str = "baton.log";

    /// Starts writing to `dir/baton.log`, when the terminal is quiet;
    /// returns its path then.
    pub fn open(&self, dir: &std::path::Path) -> io::Result<Option<std::path::PathBuf>> {
        if !self.enabled.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        self.open_with(dir, Self::MAX_BYTES).map(Some)
    }

    fn open_with(&self, dir: &std::path::Path, max: u64) -> io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::NAME);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        *self.lock() = Some(Rotating {
            path: path.clone(),
            file,
            len,
            max,
        });
        Ok(path)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Rotating>> {
        lock(&self.inner)
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = self.lock();
        let Some(r) = guard.as_mut() else {
            return Ok(buf.len());
        };
        if r.len > 0 && r.len + buf.len() as u64 > r.max {
            let old = r.path.with_extension("log.1");
            std::fs::rename(&r.path, &old)?;
            r.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&r.path)?;
            r.len = 0;
        }
        r.file.write_all(buf)?;
        r.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.lock().as_mut() {
            Some(r) => r.file.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for LogFile {
    type Writer = LogFile;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
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

    /// Only text on a terminal with neither RUST_LOG nor -v is quiet.
    #[test]
    fn the_terminal_is_quiet_only_when_nobody_asked_for_detail() {
        assert!(quiet(LogFormat::Text, true, false, false));
        assert!(
            !quiet(LogFormat::Text, false, false, false),
            "a pipe or a journal"
        );
        assert!(!quiet(LogFormat::Text, true, true, false), "RUST_LOG");
        assert!(!quiet(LogFormat::Text, true, false, true), "-v");
        assert!(
            !quiet(LogFormat::Json, true, false, false),
            "a service's JSON"
        );
    }

    /// The log file takes lines once opened, and moves to `baton.log.1`
    /// past its size: one old file, the new one starting empty.
    #[test]
    fn the_log_file_rotates_by_size_and_keeps_one_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = LogFile::default();
        f.write_all(b"before open\n").unwrap();
        f.open_with(dir.path(), 100).unwrap();
        for i in 0..30 {
            f.write_all(format!("line {i:02}\n").as_bytes()).unwrap();
        }
        let now = std::fs::read_to_string(dir.path().join("baton.log")).unwrap();
        let old = std::fs::read_to_string(dir.path().join("baton.log.1")).unwrap();
        assert!(now.len() <= 100 && old.len() <= 100, "{now:?} {old:?}");
        assert!(now.ends_with("line 29\n"), "{now}");
        assert!(!now.contains("before open") && !old.contains("before open"));
        assert!(!dir.path().join("baton.log.2").exists());
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
