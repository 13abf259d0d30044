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
//! the disk. The bound holds when opening too: the log is read in one
//! streaming pass that keeps only the newest `max_messages` in memory, so
//! an outbox written under a larger bound, or by hand, costs its reading
//! time and nothing more (issue 24: 400,000 pending lines once took 919 MB
//! and six minutes of stalled cycles). What the pass gives up is counted
//! per channel, and the log is compacted at once, so the next start does
//! not read it again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::event::Event;
use crate::state::{self, StateError};
use crate::sync::lock;

pub const DIR: &str = "notify";
pub const FILE: &str = "outbox.jsonl";

/// How many handled ids are kept to recognise a re-derived event.
const SEEN_KEPT: usize = 4096;

/// The longest line the outbox reads. An event is a few KB at most; a
/// longer line is not one of ours, and is skipped without being held.
const MAX_LINE: usize = 1 << 20;

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
    /// Lines read.
    pub lines: u64,
    /// Lines that were not the outbox's (another version's, or too long):
    /// skipped.
    pub unreadable: u64,
    /// Messages given up while opening because more than `max_messages`
    /// events were pending, per channel: the oldest go.
    pub over_bound: BTreeMap<String, usize>,
}

impl Opened {
    /// Every message given up while opening.
    pub fn over_bound_total(&self) -> usize {
        self.over_bound.values().sum()
    }
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
    /// Lines in the file, and how many of them `compact` would drop.
    lines: u64,
    /// Fail the next appends (tests of a full disk).
    failing: u32,
    q: Queue,
}

/// What replaying the log gives: the pending events and the ids seen.
#[derive(Debug)]
struct Queue {
    created: SystemTime,
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    /// The pending events of each channel, so `next_for` and `pending_for`
    /// cost the same at a million pending as at ten.
    by_channel: HashMap<String, BTreeSet<u64>>,
    /// Ids of every event added (pending or handled), newest last.
    known: HashSet<String>,
    known_order: VecDeque<String>,
}

impl Outbox {
    /// Opens (or creates) the outbox under `state_dir`. The caller holds the
    /// state store's writer lock, so it is the only writer.
    ///
    /// One streaming pass, in memory bounded by `max_messages`: past the
    /// bound the oldest pending events are given up (counted in
    /// [`Opened::over_bound`]) and the log is compacted before this
    /// returns. It reads the whole file, so callers keep it off any path
    /// that must not wait (the notifier opens it on a task of its own).
    pub fn open(state_dir: &Path, max_messages: usize) -> Result<(Outbox, Opened), StateError> {
        let dir = state_dir.join(DIR);
        fs::create_dir_all(&dir).map_err(|source| StateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(FILE);
        let max_messages = max_messages.max(1);
        let mut q = Queue {
            created: SystemTime::now(),
            next_seq: 1,
            pending: BTreeMap::new(),
            by_channel: HashMap::new(),
            known: HashSet::new(),
            known_order: VecDeque::new(),
        };
        let mut opened = Opened::default();
        // Read first, through a descriptor of its own that is closed before
        // the log is opened for appending.
        let regular = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
        let fresh = match File::open(&path) {
            Ok(f) => {
                q.read(f, max_messages, &mut opened)
                    .map_err(|source| StateError::Read {
                        path: path.clone(),
                        source,
                    })?;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let (file, bytes_dropped) =
            state::open_log(&path, |tail| serde_json::from_slice::<Line>(tail).is_ok())?;
        if bytes_dropped > 0 {
            // The cut line was read (and skipped) as an unreadable one.
            opened.unreadable = opened.unreadable.saturating_sub(1);
        }
        opened.bytes_dropped = bytes_dropped;
        opened.pending = q.pending.len();
        let mut inner = Inner {
            file,
            lines: opened.lines,
            failing: 0,
            q,
        };
        if fresh {
            let head = Line::Head {
                created: inner.q.created,
            };
            inner.append(&path, &head)?;
        }
        let outbox = Outbox {
            dir,
            max_messages,
            inner: Mutex::new(inner),
        };
        // Given-up messages are gone for good only once the log says so:
        // rewrite it now rather than read them again at the next start. A
        // log that is not a regular file (a pipe, or a link: nothing baton
        // wrote) is replaced by one, so that appends are synced.
        outbox.compact(!opened.over_bound.is_empty() || (!fresh && !regular))?;
        Ok((outbox, opened))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// When the outbox was first created.
    pub fn created(&self) -> SystemTime {
        self.lock().q.created
    }

    /// Whether an event with this id was ever added (and not forgotten).
    pub fn knows(&self, id: &str) -> bool {
        self.lock().q.known.contains(id)
    }

    /// Adds an event for `channels`, synced before it returns. When the
    /// outbox is full, the oldest pending events are dropped to make room
    /// (returned, so the caller can count them).
    pub fn add(&self, event: Event, channels: Vec<String>) -> Result<Added, StateError> {
        let path = self.path();
        let mut inner = self.lock();
        let seq = inner.q.next_seq;
        inner.append(
            &path,
            &Line::Add {
                seq,
                channels: channels.clone(),
                event: event.clone(),
            },
        )?;
        inner.q.replay(Line::Add {
            seq,
            channels,
            event,
        });
        let mut added = Added::default();
        while inner.q.pending.len() > self.max_messages {
            let Some((&oldest, _)) = inner.q.pending.first_key_value() else {
                break;
            };
            let p = inner.q.pending[&oldest].clone();
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
                inner.q.replay(done);
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
            inner.q.replay(line);
            written?;
        }
        self.compact_if_worth_it()
    }

    /// The oldest message `channel` still owes.
    pub fn next_for(&self, channel: &str) -> Option<Message> {
        let inner = self.lock();
        let seq = *inner.q.by_channel.get(channel)?.first()?;
        inner.q.pending.get(&seq).map(|p| Message {
            seq,
            channel: channel.to_owned(),
            event: p.event.clone(),
        })
    }

    /// How many messages `channel` still owes.
    pub fn pending_for(&self, channel: &str) -> usize {
        self.lock()
            .q
            .by_channel
            .get(channel)
            .map_or(0, BTreeSet::len)
    }

    /// Every pending event.
    pub fn pending(&self) -> Vec<Pending> {
        self.lock().q.pending.values().cloned().collect()
    }

    /// Gives up every pending message of a channel not in `keep` (one
    /// removed from flows.yaml); returns how many. One compaction records
    /// them all, rather than a synced line each.
    pub fn give_up_channels(&self, keep: &BTreeSet<String>) -> Result<usize, StateError> {
        let given_up = {
            let mut inner = self.lock();
            let q = &mut inner.q;
            let gone: Vec<String> = q
                .by_channel
                .keys()
                .filter(|c| !keep.contains(*c))
                .cloned()
                .collect();
            let mut n = 0;
            for c in gone {
                for seq in q.by_channel.remove(&c).unwrap_or_default() {
                    n += 1;
                    if let Some(p) = q.pending.get_mut(&seq) {
                        p.channels.remove(&c);
                        if p.channels.is_empty() {
                            q.pending.remove(&seq);
                        }
                    }
                }
            }
            n
        };
        if given_up > 0 {
            self.compact(true)?;
        }
        Ok(given_up)
    }

    /// Makes the next `n` appends fail as a full disk would.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: u32) {
        self.lock().failing = n;
    }

    /// Rewrites the log without its handled lines once they are most of it.
    fn compact_if_worth_it(&self) -> Result<(), StateError> {
        self.compact(false)
    }

    /// Rewrites the log as its head, the ids it has seen and what is
    /// pending: when `force`, or when handled lines are most of it.
    fn compact(&self, force: bool) -> Result<(), StateError> {
        let mut inner = self.lock();
        let live = inner.q.pending.len() as u64 + 2;
        if !force && (inner.lines < 256 || inner.lines < live * 4) {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut lines = 0;
        let mut push = |l: &Line| {
            serde_json::to_writer(&mut bytes, l).expect("outbox lines always serialize");
            bytes.push(b'\n');
            lines += 1;
        };
        push(&Line::Head {
            created: inner.q.created,
        });
        push(&Line::Seen {
            ids: inner.q.known_order.iter().cloned().collect(),
        });
        for p in inner.q.pending.values() {
            push(&Line::Add {
                seq: p.seq,
                channels: p.channels.iter().cloned().collect(),
                event: p.event.clone(),
            });
        }
        state::write_atomic_bytes(&self.dir, FILE, &bytes)?;
        let path = self.path();
        inner.file = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| StateError::Write { path, source })?;
        inner.lines = lines;
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
}

impl Queue {
    /// Replays the log from `f` in one pass, keeping at most
    /// `max_messages` pending events.
    fn read(&mut self, f: File, max_messages: usize, opened: &mut Opened) -> std::io::Result<()> {
        let mut reader = BufReader::with_capacity(256 * 1024, f);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            opened.lines += 1;
            if line.len() > MAX_LINE && line.last() != Some(&b'\n') {
                // Not one of ours: skip the rest of it unread.
                reader.skip_until(b'\n')?;
                opened.unreadable += 1;
                continue;
            }
            // A line this version cannot read (or a cut one, set aside
            // after this pass) is skipped rather than fatal: the rest
            // still count.
            match serde_json::from_slice::<Line>(&line) {
                Ok(l) => self.replay(l),
                Err(_) => opened.unreadable += 1,
            }
            // The bound, as the pass goes: memory never holds more than
            // `max_messages` events.
            while self.pending.len() > max_messages {
                for channel in self.drop_oldest() {
                    *opened.over_bound.entry(channel).or_default() += 1;
                }
            }
        }
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
                    for c in &channels {
                        self.by_channel.entry(c.clone()).or_default().insert(seq);
                    }
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
                    if let Some(set) = self.by_channel.get_mut(&channel) {
                        set.remove(&seq);
                    }
                    if p.channels.is_empty() {
                        self.pending.remove(&seq);
                    }
                }
            }
        }
    }

    /// Forgets the oldest pending event (in memory only); returns the
    /// channels that owed it.
    fn drop_oldest(&mut self) -> Vec<String> {
        let Some((seq, p)) = self.pending.pop_first() else {
            return Vec::new();
        };
        for c in &p.channels {
            if let Some(set) = self.by_channel.get_mut(c) {
                set.remove(&seq);
            }
        }
        p.channels.into_iter().collect()
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

    /// Writes `n` pending `add` lines for channels x and y straight into
    /// the log, as a long outage under a larger bound would have left it.
    fn write_pending_lines(dir: &Path, n: u64) {
        fs::create_dir_all(dir.join(DIR)).unwrap();
        let mut text = String::new();
        text.push_str(
            &serde_json::to_string(&Line::Head {
                created: SystemTime::now(),
            })
            .unwrap(),
        );
        text.push('\n');
        for seq in 1..=n {
            let line = Line::Add {
                seq,
                channels: chans(&["x", "y"]),
                event: event(&format!("e{seq}")),
            };
            text.push_str(&serde_json::to_string(&line).unwrap());
            text.push('\n');
        }
        fs::write(dir.join(DIR).join(FILE), text).unwrap();
    }

    /// Regression (issue 24): 400,000 pending lines were all held in
    /// memory and dropped one synced line (and one log line) at a time.
    /// Opening keeps the newest `max_messages`, counts the rest per
    /// channel, and compacts, so the next start reads a small file.
    #[test]
    fn opening_an_outbox_over_its_bound_keeps_the_newest_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        write_pending_lines(dir.path(), 20_000);
        let (o, opened) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(opened.lines, 20_001);
        assert_eq!(opened.pending, 100);
        assert_eq!(opened.over_bound.get("x"), Some(&19_900));
        assert_eq!(opened.over_bound.get("y"), Some(&19_900));
        assert_eq!(o.pending_for("x"), 100);
        assert_eq!(
            o.next_for("y").unwrap().event.id,
            "e19901",
            "the newest are kept"
        );
        let text = fs::read_to_string(dir.path().join(DIR).join(FILE)).unwrap();
        assert_eq!(
            text.lines().count(),
            102,
            "compacted: head, seen, 100 pending"
        );
        drop(o);
        let (o, again) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(again.lines, 102);
        assert!(again.over_bound.is_empty());
        assert_eq!(o.next_for("x").unwrap().event.id, "e19901");
        o.add(event("new"), chans(&["x"])).unwrap();
        assert_eq!(
            o.next_for("x").unwrap().seq,
            19_902,
            "the oldest went to make room"
        );
    }

    #[test]
    fn a_line_that_is_not_ours_is_skipped_unread() {
        let dir = tempfile::tempdir().unwrap();
        write_pending_lines(dir.path(), 2);
        let path = dir.path().join(DIR).join(FILE);
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&vec![b'a'; MAX_LINE * 2]).unwrap();
        f.write_all(b"\nnot json\n").unwrap();
        let add = Line::Add {
            seq: 3,
            channels: chans(&["x"]),
            event: event("e3"),
        };
        writeln!(f, "{}", serde_json::to_string(&add).unwrap()).unwrap();
        drop(f);
        let (o, opened) = Outbox::open(dir.path(), 100).unwrap();
        assert_eq!(opened.unreadable, 2);
        assert_eq!(o.pending_for("x"), 3, "the lines after it still count");
    }

    #[test]
    fn the_messages_of_a_removed_channel_are_given_up_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        write_pending_lines(dir.path(), 300);
        let (o, _) = Outbox::open(dir.path(), 1000).unwrap();
        let keep = BTreeSet::from(["x".to_owned()]);
        assert_eq!(o.give_up_channels(&keep).unwrap(), 300);
        assert_eq!(o.pending_for("y"), 0);
        assert_eq!(o.pending_for("x"), 300);
        drop(o);
        let (o, _) = Outbox::open(dir.path(), 1000).unwrap();
        assert_eq!((o.pending_for("x"), o.pending_for("y")), (300, 0));
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
