//! The outbox: every message baton has still to deliver, persisted in the
//! state directory so that none is lost to a restart or a `kill -9`.
//!
//! `STATE_DIR/notify/outbox.jsonl` is an append-only log with the history's
//! rules (`state::open_log`): one write and one fdatasync per line, and a
//! line cut by a crash is moved aside when the log is next opened. Lines:
//!
//! - `add`: an event and the channels it is for;
//! - `done`: one channel is finished with one event (delivered, or dropped
//!   and why);
//! - `seen`: ids of events already handled, kept across a compaction so a
//!   re-derived event is still known;
//! - `head`: when the outbox was created (run events from before it are
//!   not sent: turning notifications on does not replay old orders).
//!
//! Replaying the lines gives what is pending. When most lines are `done`,
//! the log is compacted: rewritten whole, with the same rules as
//! `state.json` (temporary file, fsync, rename, fsync the directory).
//!
//! The outbox is bounded: past `max_messages` pending events the oldest is
//! dropped (and counted), so a channel that is down for days cannot fill
//! the disk.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::event::Event;
use crate::state::{self, StateError};

pub const DIR: &str = "notify";
pub const FILE: &str = "outbox.jsonl";

/// How many handled ids are kept to recognise a re-derived event.
const SEEN_KEPT: usize = 4096;

/// One line of the log. (`Add` is the big one and the common one: boxing
/// it would only add an allocation per line.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Head {
        #[serde(with = "crate::time::rfc3339")]
        created: SystemTime,
    },
    Add {
        seq: u64,
        channels: Vec<String>,
        event: Event,
    },
    Done {
        seq: u64,
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dropped: Option<String>,
    },
    Seen {
        ids: Vec<String>,
    },
}

/// A pending event and the channels that still owe it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending {
    pub seq: u64,
    pub event: Event,
    pub channels: BTreeSet<String>,
}

/// One message to deliver: an event on one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub seq: u64,
    pub channel: String,
    pub event: Event,
}

/// What opening found.
#[derive(Debug, Default)]
pub struct Opened {
    /// Bytes of a line cut by a crash, moved to `outbox.jsonl.dropped`.
    pub bytes_dropped: u64,
    /// Messages pending from before.
    pub pending: usize,
}

/// Events that adding pushed out of a full outbox.
#[derive(Debug, Default)]
pub struct Added {
    pub dropped: Vec<Message>,
}

#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
    max_messages: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    file: File,
    created: SystemTime,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// Ids of every event added (pending or handled), newest last.
    known: HashSet<String>,
    known_order: VecDeque<String>,
    /// Lines in the file, and how many of them `compact` would drop.
    lines: u64,
    /// Fail the next appends (tests of a full disk).
    failing: u32,
}

impl Outbox {
    /// Opens (or creates) the outbox under `state_dir`. The caller holds the
    /// state store's writer lock, so it is the only writer.
    pub fn open(state_dir: &Path, max_messages: usize) -> Result<(Outbox, Opened), StateError> {
        let dir = state_dir.join(DIR);
        fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(FILE);
        let fresh = !path.exists();
        let (file, bytes_dropped) =
            state::open_log(&path, |tail| serde_json::from_slice::<Line>(tail).is_ok())?;
        let mut inner = Inner {
            file,
            created: SystemTime::now(),
            next_seq: 1,
            pending: BTreeMap::new(),
            known: HashSet::new(),
            known_order: VecDeque::new(),
            lines: 0,
            failing: 0,
        };
        if fresh {
            inner.append(
                &path,
                &Line::Head {
                    created: inner.created,
                },
            )?;
        } else {
            let f = File::open(&path).map_err(|source| StateError::Read {
                path: path.clone(),
                source,
            })?;
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|source| StateError::Read {
                    path: path.clone(),
                    source,
                })?;
                inner.lines += 1;
                // A line this version cannot read (or a cut one already set
                // aside) is skipped rather than fatal: the rest still count.
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    inner.replay(l);
                }
            }
        }
        let outbox = Outbox {
            dir,
            max_messages: max_messages.max(1),
            inner: Mutex::new(inner),
        };
        let pending = outbox.lock().pending.len();
        outbox.compact_if_worth_it()?;
        Ok((
            outbox,
            Opened {
                bytes_dropped,
                pending,
            },
        ))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// When the outbox was first created.
    pub fn created(&self) -> SystemTime {
        self.lock().created
    }

    /// Whether an event with this id was ever added (and not forgotten).
    pub fn knows(&self, id: &str) -> bool {
        self.lock().known.contains(id)
    }

    /// Adds an event for `channels`, synced before it returns. When the
    /// outbox is full, the oldest pending events are dropped to make room
    /// (returned, so the caller can count them).
    pub fn add(&self, event: Event, channels: Vec<String>) -> Result<Added, StateError> {
        let path = self.path();
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.append(
            &path,
            &Line::Add {
                seq,
                channels: channels.clone(),
                event: event.clone(),
            },
        )?;
        inner.replay(Line::Add {
            seq,
            channels,
            event,
        });
        let mut added = Added::default();
        while inner.pending.len() > self.max_messages {
            let Some((&oldest, _)) = inner.pending.first_key_value() else {
                break;
            };
            let p = inner.pending[&oldest].clone();
            for channel in &p.channels {
                let done = Line::Done {
                    seq: oldest,
                    channel: channel.clone(),
                    dropped: Some("outbox full".into()),
                };
                // Not fatal: unwritten, the event is pending again after a
                // restart, which delivers it late rather than never.
                if let Err(e) = inner.append(&path, &done) {
                    tracing::warn!(error = %e, "cannot record a dropped notification");
                }
                inner.replay(done);
                added.dropped.push(Message {
                    seq: oldest,
                    channel: channel.clone(),
                    event: p.event.clone(),
                });
            }
        }
        Ok(added)
    }

    /// Marks `channel` finished with event `seq`: delivered (`dropped` is
    /// `None`) or given up on, and why.
    pub fn done(&self, seq: u64, channel: &str, dropped: Option<&str>) -> Result<(), StateError> {
        let path = self.path();
        {
            let mut inner = self.lock();
            let line = Line::Done {
                seq,
                channel: channel.to_owned(),
                dropped: dropped.map(str::to_owned),
            };
            let written = inner.append(&path, &line);
            // In memory either way, or the sender would deliver it again at
            // once; unwritten, it is delivered again after a restart.
            inner.replay(line);
            written?;
        }
        self.compact_if_worth_it()
    }

    /// The oldest message `channel` still owes.
    pub fn next_for(&self, channel: &str) -> Option<Message> {
        self.lock()
            .pending
            .values()
            .find(|p| p.channels.contains(channel))
            .map(|p| Message {
                seq: p.seq,
                channel: channel.to_owned(),
                event: p.event.clone(),
            })
    }

    /// How many messages `channel` still owes.
    pub fn pending_for(&self, channel: &str) -> usize {
        self.lock()
            .pending
            .values()
            .filter(|p| p.channels.contains(channel))
            .count()
    }

    /// Every pending event.
    pub fn pending(&self) -> Vec<Pending> {
        self.lock().pending.values().cloned().collect()
    }

    /// Makes the next `n` appends fail as a full disk would.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing = n;
    }

    /// Rewrites the log without its handled lines once they are most of it.
    fn compact_if_worth_it(&self) -> Result<(), StateError> {
        let mut inner = self.lock();
        let live = inner.pending.len() as u64 + 2;
        if inner.lines < 256 || inner.lines < live * 4 {
            return Ok(());
        }
        let mut lines = vec![
            Line::Head {
                created: inner.created,
            },
            Line::Seen {
                ids: inner.known_order.iter().cloned().collect(),
            },
        ];
        for p in inner.pending.values() {
            lines.push(Line::Add {
                seq: p.seq,
                channels: p.channels.iter().cloned().collect(),
                event: p.event.clone(),
            });
        }
        let mut bytes = Vec::new();
        for l in &lines {
            serde_json::to_writer(&mut bytes, l).expect("outbox lines always serialize");
            bytes.push(b'\n');
        }
        state::write_atomic_bytes(&self.dir, FILE, &bytes)?;
        let path = self.path();
        inner.file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| StateError::Write { path, source })?;
        inner.lines = lines.len() as u64;
        Ok(())
    }
}

impl Inner {
    fn append(&mut self, path: &Path, line: &Line) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: path.to_owned(),
            source,
        };
        if self.failing > 0 {
            self.failing -= 1;
            return Err(err(std::io::Error::from_raw_os_error(28)));
        }
        let mut bytes = serde_json::to_vec(line).expect("outbox lines always serialize");
        bytes.push(b'\n');
        // One write per line: a crash cuts at most this line.
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(err)?;
        self.lines += 1;
        Ok(())
    }

    fn remember(&mut self, id: &str) {
        if self.known.insert(id.to_owned()) {
            self.known_order.push_back(id.to_owned());
            while self.known_order.len() > SEEN_KEPT {
                if let Some(old) = self.known_order.pop_front() {
                    self.known.remove(&old);
                }
            }
        }
    }

    fn replay(&mut self, line: Line) {
        match line {
            Line::Head { created } => self.created = created,
            Line::Seen { ids } => ids.iter().for_each(|id| self.remember(id)),
            Line::Add {
                seq,
                channels,
                event,
            } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.remember(&event.id);
                if !channels.is_empty() {
                    self.pending.insert(
                        seq,
                        Pending {
                            seq,
                            event,
                            channels: channels.into_iter().collect(),
                        },
                    );
                }
            }
            Line::Done { seq, channel, .. } => {
                if let Some(p) = self.pending.get_mut(&seq) {
                    p.channels.remove(&channel);
                    if p.channels.is_empty() {
                        self.pending.remove(&seq);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::event::Kind;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            ..Event::new(Kind::Test, "t", "b")
        }
    }

    fn chans(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn pending_messages_survive_reopening_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = Outbox::open(dir.path(), 100).unwrap();
        o.add(event("a"), chans(&["x", "y"])).unwrap();
        o.add(event("b"), chans(&["x"])).unwrap();
        o.done(1, "x", None).unwrap();
        drop(o);
        let (o, opened) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(opened.pending, 2);
        assert_eq!(o.next_for("x").unwrap().event.id, "b");
        assert_eq!(o.next_for("y").unwrap().event.id, "a");
        assert!(o.knows("a") && o.knows("b") && !o.knows("c"));
        o.done(1, "y", None).unwrap();
        o.done(2, "x", None).unwrap();
        drop(o);
        let (o, opened) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(opened.pending, 0);
        assert!(o.next_for("x").is_none());
        assert!(o.knows("a"), "handled ids are still known");
        o.add(event("c"), chans(&["x"])).unwrap();
        assert_eq!(o.next_for("x").unwrap().seq, 3, "sequence numbers go on");
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = Outbox::open(dir.path(), 2).unwrap();
        o.add(event("a"), chans(&["x"])).unwrap();
        o.add(event("b"), chans(&["x"])).unwrap();
        let added = o.add(event("c"), chans(&["x"])).unwrap();
        assert_eq!(added.dropped.len(), 1);
        assert_eq!(added.dropped[0].event.id, "a");
        assert_eq!(o.pending_for("x"), 2);
        drop(o);
        let (o, _) = Outbox::open(dir.path(), 2).unwrap();
        assert_eq!(o.next_for("x").unwrap().event.id, "b");
    }

    #[test]
    fn a_cut_last_line_is_set_aside_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = Outbox::open(dir.path(), 100).unwrap();
        o.add(event("a"), chans(&["x"])).unwrap();
        drop(o);
        let path = dir.path().join(DIR).join(FILE);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"op":"add","seq":2,"chan"#).unwrap();
        drop(f);
        let (o, opened) = Outbox::open(dir.path(), 100).unwrap();
        assert!(opened.bytes_dropped > 0);
        assert_eq!(o.pending().len(), 1);
        o.add(event("b"), chans(&["x"])).unwrap();
        drop(o);
        let (o, _) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(o.pending().len(), 2, "the line after the repair reads");
        assert!(dir.path().join(DIR).join("outbox.jsonl.dropped").exists());
    }

    #[test]
    fn compaction_keeps_pending_and_known_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = Outbox::open(dir.path(), 10_000).unwrap();
        for i in 0..400 {
            o.add(event(&format!("e{i}")), chans(&["x"])).unwrap();
            if i != 7 {
                o.done(i + 1, "x", None).unwrap();
            }
        }
        let path = dir.path().join(DIR).join(FILE);
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 400, "compacted: {lines} lines");
        drop(o);
        let (o, _) = Outbox::open(dir.path(), 10_000).unwrap();
        assert_eq!(o.pending().len(), 1);
        assert_eq!(o.next_for("x").unwrap().event.id, "e7");
        assert!(o.knows("e0") && o.knows("e399"));
    }

    #[test]
    fn a_failed_write_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (o, _) = Outbox::open(dir.path(), 100).unwrap();
        o.fail_next_writes(1);
        assert!(o.add(event("a"), chans(&["x"])).is_err());
        assert!(o.next_for("x").is_none() && !o.knows("a"));
        o.add(event("a"), chans(&["x"])).unwrap();
        assert_eq!(o.next_for("x").unwrap().event.id, "a");
    }
}
