//! Price and stock history per target: every `offer()` a monitor or a step
//! reads, and every `observe_price(..)`, kept as an observation (when, the
//! price and currency, the availability, who saw it).
//!
//! Bounded, with a cost that does not grow with the history: the newest
//! [`KEEP`] observations of each target stay in memory, and
//! `STATE_DIR/observations.jsonl` gets one appended line per observation;
//! when the file holds twice what is kept, it is rewritten from memory
//! (atomically), so each observation costs one append plus, amortised,
//! one line of a rewrite. Observations are not safety state: a failed write
//! is logged and never fails a run, and lines are not synced one by one.
//!
//! Recording says what changed since the target's previous observation (a
//! restock, a price drop), for the `restock` and `price_drop`
//! notifications.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::offer::Availability;
use crate::sync::lock;

/// How many observations are kept per target.
pub const KEEP: usize = 500;

/// The history file in the state directory.
pub const FILE: &str = "observations.jsonl";

/// A line longer than this is not an observation; it is skipped unread.
const MAX_LINE: usize = 64 * 1024;

/// One observation of one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub target: String,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
    /// `None` when the page named no price.
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub availability: Availability,
    /// `monitor` or `step`.
    pub by: By,
}

/// Who made an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Monitor,
    Step,
}

/// What an observation changed.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Not buyable before, in stock now.
    Restock,
    /// The price went down (in the same currency).
    PriceDrop { from: f64, to: f64 },
}

/// The store. Cheap to share behind an `Arc`.
pub struct Observations {
    /// `None`: in memory only (a dry run, tests).
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
    /// Told of every change (the notifier's `price_drop`).
    on_change: std::sync::OnceLock<ChangeHook>,
}

type ChangeHook = Box<dyn Fn(&Observation, &Change) + Send + Sync>;

#[derive(Default)]
struct Inner {
    rings: HashMap<String, VecDeque<Observation>>,
    /// Lines in the file now.
    lines: usize,
    file: Option<std::fs::File>,
    /// The file ends in a line cut short (a crash mid-write): the next
    /// append starts on a new line.
    torn: bool,
}

impl Observations {
    /// A store that keeps observations in memory only.
    pub fn in_memory() -> Observations {
        Observations {
            path: None,
            inner: Mutex::default(),
            on_change: std::sync::OnceLock::new(),
        }
    }

    /// Opens `STATE_DIR/observations.jsonl`, keeping the newest [`KEEP`]
    /// of each target. A missing file is an empty history; unreadable or
    /// foreign lines are skipped.
    pub fn open(state_dir: &Path) -> std::io::Result<Observations> {
        let path = state_dir.join(FILE);
        let mut inner = Inner::default();
        match std::fs::File::open(&path) {
            Ok(f) => {
                let mut reader = std::io::BufReader::new(f);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    let n = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1)
                        .read_until(b'\n', &mut line)?;
                    if n == 0 {
                        break;
                    }
                    inner.torn = line.last() != Some(&b'\n');
                    if line.last() != Some(&b'\n') && n > MAX_LINE {
                        // Too long: skip to the end of this line.
                        let mut rest = Vec::new();
                        reader.read_until(b'\n', &mut rest)?;
                        inner.lines += 1;
                        continue;
                    }
                    inner.lines += 1;
                    if let Ok(o) = serde_json::from_slice::<Observation>(&line) {
                        push(&mut inner.rings, o);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Observations {
            path: Some(path),
            inner: Mutex::new(inner),
            on_change: std::sync::OnceLock::new(),
        })
    }

    /// Calls `f` with every change an observation makes (once set, it
    /// stays).
    pub fn on_change(&self, f: impl Fn(&Observation, &Change) + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    /// Keeps `o`, and says what it changed since the target's previous
    /// observation.
    pub fn record(&self, o: &Observation) -> Option<Change> {
        let change = self.keep(o.clone());
        if let (Some(c), Some(hook)) = (&change, self.on_change.get()) {
            hook(o, c);
        }
        change
    }

    fn keep(&self, o: Observation) -> Option<Change> {
        let mut inner = lock(&self.inner);
        let change = inner
            .rings
            .get(&o.target)
            .and_then(|r| r.back())
            .and_then(|prev| change(prev, &o));
        if let Some(path) = &self.path
            && let Err(e) = inner.write(path, &o)
        {
            tracing::warn!(target = %o.target, error = %e, "observation not saved to {}", path.display());
        }
        push(&mut inner.rings, o);
        let kept: usize = inner.rings.values().map(VecDeque::len).sum();
        if let Some(path) = &self.path
            && inner.lines > 2 * kept.max(KEEP)
            && let Err(e) = inner.compact(path)
        {
            tracing::warn!(error = %e, "observations not compacted in {}", path.display());
        }
        change
    }

    /// A target's newest observation and how many are kept: what the
    /// status page shows every second, without copying the history.
    pub fn last(&self, target: &str) -> Option<(Observation, usize)> {
        let inner = lock(&self.inner);
        let ring = inner.rings.get(target)?;
        ring.back().map(|o| (o.clone(), ring.len()))
    }

    /// A target's kept observations, oldest first.
    pub fn of(&self, target: &str) -> Vec<Observation> {
        lock(&self.inner)
            .rings
            .get(target)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Inner {
    fn write(&mut self, path: &Path, o: &Observation) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            );
        }
        let mut line = Vec::new();
        if self.torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, o).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // One write call: a crash cuts at most this line, which the next
        // open skips.
        self.file.as_mut().expect("opened above").write_all(&line)?;
        self.torn = false;
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the file with what is kept.
    fn compact(&mut self, path: &Path) -> std::io::Result<()> {
        let mut all: Vec<&Observation> = self.rings.values().flatten().collect();
        all.sort_by_key(|o| o.at);
        let mut bytes = Vec::new();
        for o in &all {
            serde_json::to_writer(&mut bytes, o).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(FILE);
        crate::state::write_atomic_bytes(dir, name, &bytes).map_err(std::io::Error::other)?;
        self.lines = all.len();
        // The old handle points at the replaced file.
        self.file = None;
        Ok(())
    }
}

fn push(rings: &mut HashMap<String, VecDeque<Observation>>, o: Observation) {
    let ring = rings.entry(o.target.clone()).or_default();
    if ring.len() == KEEP {
        ring.pop_front();
    }
    ring.push_back(o);
}

fn change(prev: &Observation, now: &Observation) -> Option<Change> {
    let buyable = |a: Availability| a == Availability::InStock;
    if buyable(now.availability)
        && !buyable(prev.availability)
        && prev.availability != Availability::Unknown
    {
        return Some(Change::Restock);
    }
    match (prev.price, now.price) {
        (Some(from), Some(to)) if to < from && prev.currency == now.currency => {
            Some(Change::PriceDrop { from, to })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn obs(target: &str, secs: u64, price: f64, a: Availability) -> Observation {
        Observation {
            target: target.into(),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs),
            price: Some(price),
            currency: Some("EUR".into()),
            availability: a,
            by: By::Monitor,
        }
    }

    #[test]
    fn changes_are_restocks_and_price_drops() {
        let s = Observations::in_memory();
        assert_eq!(s.record(&obs("a", 0, 50.0, Availability::OutOfStock)), None);
        assert_eq!(
            s.record(&obs("a", 1, 50.0, Availability::InStock)),
            Some(Change::Restock)
        );
        assert_eq!(
            s.record(&obs("a", 2, 45.0, Availability::InStock)),
            Some(Change::PriceDrop {
                from: 50.0,
                to: 45.0
            })
        );
        assert_eq!(s.record(&obs("a", 3, 60.0, Availability::InStock)), None);
        // Another target has its own previous observation.
        assert_eq!(s.record(&obs("b", 4, 10.0, Availability::InStock)), None);
        // Another currency is not a drop.
        let mut usd = obs("a", 5, 1.0, Availability::InStock);
        usd.currency = Some("USD".into());
        assert_eq!(s.record(&usd), None);
        assert_eq!(s.of("a").len(), 5);
    }

    #[test]
    fn the_file_stays_bounded_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = Observations::open(dir.path()).unwrap();
        let n = KEEP * 5;
        for i in 0..n {
            s.record(&obs("a", i as u64, i as f64, Availability::InStock));
        }
        s.record(&obs("b", 0, 1.0, Availability::InStock));
        let lines = std::fs::read_to_string(dir.path().join(FILE))
            .unwrap()
            .lines()
            .count();
        assert!(lines <= 2 * (KEEP + 1) + 1, "{lines} lines kept");
        drop(s);
        // A torn last line and a foreign one are skipped.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"not json\n{\"target\":\"a\",\"at\":").unwrap();
        drop(f);
        let s = Observations::open(dir.path()).unwrap();
        // The next line after the torn one is whole.
        s.record(&obs("c", 0, 2.0, Availability::InStock));
        drop(s);
        let s = Observations::open(dir.path()).unwrap();
        assert_eq!(s.of("c").len(), 1);
        let a = s.of("a");
        assert_eq!(a.len(), KEEP);
        assert_eq!(a.last().unwrap().price, Some((n - 1) as f64));
        assert_eq!(a.first().unwrap().price, Some((n - KEEP) as f64));
        assert_eq!(s.of("b").len(), 1);
    }
}
