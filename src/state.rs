//! The state store: each target's persisted status and the run history.
//!
//! Part of the safety core with `registry`; it imports nothing but ids and
//! time helpers. Two files live in the state directory:
//!
//! - `state.json`, one document with every target's status and last result.
//!   It is never edited in place: each change writes a temporary file in the
//!   same directory, fsyncs it, renames it over the old one and fsyncs the
//!   directory. A `kill -9` at any instant leaves the old document or the new
//!   one, never a mix or nothing (I6, proven by `tests/crash.rs`).
//! - `history.jsonl`, one JSON record per finished run, appended and
//!   fdatasynced. A crash can only cut the record being written; the cut
//!   tail is dropped when the store is next opened. Watching runs that end
//!   as the target's previous one did (`ready`, same outcome, every 30 s
//!   for days) are held back and written as one record with `repeats` and
//!   `first_at`; failures and purchases are always one record each.
//!
//! A store has one writer: the process that holds `state.lock` (an advisory
//! lock, released by the OS when the process dies). Others read the
//! documents, which are always whole, and send changes to that process.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::id::{AccountId, RunId, SessionId, TargetId};
use crate::sync::lock;

pub const STATE_FILE: &str = "state.json";
pub const HISTORY_FILE: &str = "history.jsonl";
pub const LOCK_FILE: &str = "state.lock";
/// Where screenshots go under the state directory: one layout, known here
/// only. History records name them relative to the state directory
/// (`shots/r12.png`, see [`shot_record`]); the dashboard serves them from
/// there.
pub const SHOTS_DIR: &str = "shots";

/// The screenshots directory of the state in `state_dir`.
pub fn shots_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(SHOTS_DIR)
}

/// How a history record names the screenshot file `name`.
pub fn shot_record(name: &str) -> String {
    format!("{SHOTS_DIR}/{name}")
}

/// The `format` of `state.json` this baton reads and writes.
pub const FORMAT: u32 = 1;

/// A target's persisted status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Eligible for the next cycle.
    #[default]
    Ready,
    /// A run is registered and executing (set under the completion lock at
    /// dispatch).
    Attempting,
    /// The run has entered its `commit` closure: the point of no return.
    Committing,
    /// The commit closure returned (the shop answered) and `last_order`
    /// holds what it returned; the run is finishing its remaining steps.
    /// Persisted the moment `commit` returns, so a crash after it recovers
    /// as `completed` with that order, not as `in_doubt`.
    Committed,
    /// The flow finished; not run again unless test mode resets it.
    Completed,
    /// The last run failed before its commit point; retried next cycle.
    Failed,
    /// The last run was cancelled after its bound, before its commit point;
    /// retried next cycle.
    TimedOut,
    /// A run crossed its commit point without a recorded result. Never run
    /// again until an operator resolves it (I7).
    InDoubt,
}

impl Status {
    /// A status that only a live run may hold.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Status::Attempting | Status::Committing | Status::Committed
        )
    }

    /// Whether a cycle may start a run for a target with this status.
    pub fn is_runnable(self) -> bool {
        matches!(self, Status::Ready | Status::Failed | Status::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "ready",
            Status::Attempting => "attempting",
            Status::Committing => "committing",
            Status::Committed => "committed",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::InDoubt => "in_doubt",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One target's entry in `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetState {
    pub status: Status,
    /// The live run while `attempting`/`committing`/`committed`, else the
    /// last run.
    pub run_id: Option<RunId>,
    /// The browser session of that run. An `in_doubt` target keeps its
    /// session quarantined until an operator resolves it (I9), also across
    /// a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<crate::id::SessionId>,
    /// The account that session was logged into: quarantined with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<crate::id::AccountId>,
    pub last_outcome: Option<String>,
    /// The order of run `run_id`: never an older run's.
    pub last_order: Option<String>,
    pub last_error: Option<String>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub updated_at: Option<SystemTime>,
    /// Runs finished for this target.
    pub runs: u64,
}

/// The whole of `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    /// Bumped when the format changes incompatibly.
    pub format: u32,
    /// Highest run id ever handed out, so ids stay unique across restarts.
    pub last_run_id: u64,
    /// Bumped on every write; lets readers and tests tell documents apart.
    pub revision: u64,
    pub targets: BTreeMap<TargetId, TargetState>,
}

/// How one step of a run ended, as history records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub script: String,
    pub generation: u64,
    pub duration_ms: u64,
    pub result: StepResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a step ended, as history records it (the same words as before it
/// was a type, so older lines read the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResult {
    /// It ran to its end.
    Ok,
    /// It called `outcome(name)` (the record's `outcome`).
    Outcome,
    /// An error, `fail(..)`, or a panic (the record's `error`).
    Failed,
    /// The run was cancelled or the step ran out of time.
    Cancelled,
    /// It did not run: an earlier step ended the run, or a commit may still
    /// be in flight in the session.
    Skipped,
}

impl StepResult {
    pub fn as_str(self) -> &'static str {
        match self {
            StepResult::Ok => "ok",
            StepResult::Outcome => "outcome",
            StepResult::Failed => "failed",
            StepResult::Cancelled => "cancelled",
            StepResult::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for StepResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of `history.jsonl`: a finished run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: RunId,
    pub target: TargetId,
    pub flow: String,
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: SystemTime,
    #[serde(with = "crate::time::rfc3339")]
    pub ended_at: SystemTime,
    pub duration_ms: u64,
    /// The status the target was left in.
    pub status: Status,
    /// The outcome a script named (`outcome(name)`), or `not_placed`; never
    /// a status name (the status says that). Lines written before this
    /// rule, which repeated the status here, read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// The price, when the commit reported one (`#{ order, price }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub committed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<String>,
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// File name of the failure screenshot, relative to the state directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshot: Option<String>,
    /// The run's trace, relative to the state directory, when traces are
    /// on (`traces/r12.json`; only the last runs' are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// When this record stands for several runs in a row that ended alike
    /// (a target watched every cycle, `ready` for the same outcome): how
    /// many. The record is the last of them; `first_at` is when the first
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::time::rfc3339_opt"
    )]
    pub first_at: Option<SystemTime>,
}

/// Runs of a target that ended as the one before them are held back and
/// written as one record: at most this many ...
const MAX_REPEATS: u32 = 1000;
/// ... or this long after the first of them started, so a crash loses the
/// count of an hour's watching at most (never an outcome: the first run of
/// a streak is always written).
const MAX_REPEAT_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// What a run ended as, for telling repeats apart.
type RepeatKey = (String, Status, Option<String>);

/// A target's streak of runs that ended alike.
#[derive(Debug)]
struct Streak {
    key: RepeatKey,
    /// The last run held back, how many are, and when the first started.
    held: Option<(RunRecord, u32, SystemTime)>,
}

impl RunRecord {
    /// Whether a repeat of it may be held back: a watching run that left
    /// the target `ready` with nothing else to tell (no error, no order, no
    /// screenshot). Failures and purchases are always written one by one.
    fn repeat_key(&self) -> Option<RepeatKey> {
        (self.status == Status::Ready
            && self.error.is_none()
            && self.order.is_none()
            && !self.committed
            && self.screenshot.is_none()
            && self.cancelled.is_none())
        .then(|| (self.flow.clone(), self.status, self.outcome.clone()))
    }
}

impl RunRecord {
    /// Older records repeated the status as the outcome (`completed`,
    /// `failed`, `timed_out`, `in_doubt`); the outcome is a script's now.
    fn forget_status_outcome(&mut self) {
        if self.outcome.as_deref() == Some(self.status.as_str()) {
            self.outcome = None;
        }
    }
}

impl StateStore {
    /// The store's async face: runs `f` on a blocking thread (the store
    /// fsyncs, which must not stall the async workers) and returns what it
    /// returned. A worker thread that panicked is an error, not a panic.
    pub async fn blocking<T, E>(
        self: &std::sync::Arc<Self>,
        f: impl FnOnce(&StateStore) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StateError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .unwrap_or_else(|e| Err(StateError::Worker(e.to_string()).into()))
    }
}

/// A run's moves through its target's row. Every write a run makes to the
/// row is one of these, applied here and nowhere else, so what the row
/// says about the live run (its run, session and account; never an older
/// run's order) is decided in one place.
#[derive(Clone, Copy, Debug)]
pub enum RunMove<'a> {
    /// Dispatched: registered and `attempting` under the completion lock
    /// (I4). The row describes the live run, with no older order.
    Attempting {
        run: RunId,
        session: SessionId,
        account: Option<&'a AccountId>,
    },
    /// Entering `commit`, persisted before the closure runs (I7): a crash
    /// from here on restarts `in_doubt`, never a retry.
    Committing {
        run: RunId,
        session: SessionId,
        account: Option<&'a AccountId>,
    },
    /// The shop placed the order (`done`).
    Committed { run: RunId, order: Option<&'a str> },
    /// The run's final result, written in its completion step with its
    /// history record.
    Finished {
        record: &'a RunRecord,
        session: SessionId,
        account: Option<&'a AccountId>,
    },
}

impl RunMove<'_> {
    fn apply(self, t: &mut TargetState) {
        match self {
            RunMove::Attempting {
                run,
                session,
                account,
            }
            | RunMove::Committing {
                run,
                session,
                account,
            } => {
                t.status = if matches!(self, RunMove::Attempting { .. }) {
                    Status::Attempting
                } else {
                    Status::Committing
                };
                t.run_id = Some(run);
                t.session = Some(session);
                t.account = account.cloned();
                t.last_order = None;
            }
            RunMove::Committed { run, order } => {
                t.status = Status::Committed;
                t.run_id = Some(run);
                t.last_order = order.map(str::to_owned);
            }
            RunMove::Finished {
                record,
                session,
                account,
            } => {
                t.status = record.status;
                t.run_id = Some(record.run_id);
                t.session = Some(session);
                t.account = account.cloned();
                t.last_outcome.clone_from(&record.outcome);
                // The row shows this run's order, never an older one.
                t.last_order.clone_from(&record.order);
                t.last_error.clone_from(&record.error);
                t.runs += 1;
            }
        }
    }
}

/// What an operator asks of a target, from the dashboard or `baton state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorChange {
    /// Back to `ready`, whatever it was.
    Reset,
    /// Settle an `in_doubt` target as `completed` (the order was placed) or
    /// `ready` (it was not).
    Resolve(Status),
}

/// Why an operator's change was refused.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("target `{target}` is `{current}`, not `in_doubt`: nothing to resolve")]
    NotInDoubt { target: TargetId, current: Status },
    #[error("a target is resolved as `completed` or `ready`, not `{0}`")]
    BadResolution(Status),
    #[error("{0}")]
    State(#[from] StateError),
}

impl StateStore {
    /// The one policy for operator changes, whichever door they come
    /// through (the running baton's dashboard and CLI route, or the CLI on
    /// a stopped baton's state). The caller makes sure the target has no
    /// live run. Returns the status it had.
    pub fn operator_change(
        &self,
        target: &TargetId,
        change: OperatorChange,
    ) -> Result<Status, OperatorError> {
        let current = self.get(target.as_str()).status;
        let (to, note) = match change {
            OperatorChange::Reset => (
                Status::Ready,
                format!("reset by an operator (was `{current}`)"),
            ),
            OperatorChange::Resolve(to) => {
                if !matches!(to, Status::Completed | Status::Ready) {
                    return Err(OperatorError::BadResolution(to));
                }
                if current != Status::InDoubt {
                    return Err(OperatorError::NotInDoubt {
                        target: target.clone(),
                        current,
                    });
                }
                (
                    to,
                    format!("resolved by an operator as `{to}` (was `{current}`)"),
                )
            }
        };
        self.update(target, |t| {
            t.status = to;
            t.last_error = Some(note);
        })?;
        Ok(current)
    }
}

/// Repairs one target whose persisted status says a run is live when no run
/// is (`why` says how that came about).
fn recover(id: &TargetId, t: &mut TargetState, now: SystemTime, why: &str, r: &mut Recovery) {
    let (status, note, list) = match t.status {
        Status::Attempting => (
            Status::Failed,
            format!("{why} while this run was attempting"),
            &mut r.failed,
        ),
        Status::Committing => (
            Status::InDoubt,
            format!("{why} after this run passed its commit point; the order may have been placed"),
            &mut r.in_doubt,
        ),
        // The shop answered and the order was saved; only the steps after
        // the commit (cart clearing) were cut off.
        Status::Committed => (
            Status::Completed,
            format!("{why} after this run's order was placed and saved, before its last steps"),
            &mut r.completed,
        ),
        _ => return,
    };
    t.status = status;
    t.last_error = Some(note);
    t.updated_at = Some(now);
    list.push(id.clone());
}

/// What opening a store repaired.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// Targets found `attempting` (now `failed`).
    pub failed: Vec<TargetId>,
    /// Targets found `committing` (now `in_doubt`).
    pub in_doubt: Vec<TargetId>,
    /// Targets found `committed` (now `completed`, with their order).
    pub completed: Vec<TargetId>,
    /// Bytes of a cut history record that were dropped.
    pub history_bytes_dropped: u64,
}

impl Recovery {
    /// Whether no target needed repair.
    pub fn is_empty(&self) -> bool {
        self.failed.is_empty() && self.in_doubt.is_empty() && self.completed.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory `{path}`: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "`{path}` is not a valid state file ({source}); baton will not overwrite it: move it aside or fix it"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write `{path}`: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "`{path}` is locked by another baton process (is `baton run` running?); changes must go through it"
    )]
    Locked { path: PathBuf },
    #[error("target `{0}` is not in the state file")]
    UnknownTarget(TargetId),
    #[error("the state store's worker thread failed: {0}")]
    Worker(String),
    #[error(
        "`{path}` has format {found}, newer than this baton reads ({FORMAT}); it was written by a newer baton: run that one, or move the file aside"
    )]
    NewerFormat { path: PathBuf, found: u32 },
}

/// A held-back streak as the one record that stands for it.
fn repeated((mut last, count, since): (RunRecord, u32, SystemTime)) -> RunRecord {
    if count > 1 {
        last.repeats = Some(count);
        last.first_at = Some(since);
    }
    last
}

impl Drop for StateStore {
    fn drop(&mut self) {
        if let Err(e) = self.flush_history() {
            tracing::warn!(error = %e, "the last repeated runs' history record was not written");
        }
    }
}

/// The store. Methods take `&self` and serialise writers on an internal
/// mutex; callers in async code run them on a blocking thread.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// The document as last written. Updated only after a write succeeds,
    /// so memory never runs ahead of disk.
    doc: Mutex<StateDoc>,
    history: Mutex<File>,
    /// Held for the life of the store: the single-writer lock.
    _lock: File,
    /// Writes still to fail, for tests of a full disk (see
    /// [`StateStore::fail_next_writes`]).
    failing: std::sync::atomic::AtomicU32,
    /// Each target's streak of runs that ended alike; the held-back ones
    /// are written as one record (see [`StateStore::append_history`]).
    streaks: Mutex<std::collections::HashMap<TargetId, Streak>>,
    /// File descriptors held in reserve: when the process runs out
    /// (EMFILE, say from a flood of connections), a state write gives these
    /// back and tries again, so a run can still persist its result.
    reserve: Mutex<Vec<File>>,
}

/// How many descriptors the state store keeps in reserve (a write needs a
/// temporary file and the directory).
const RESERVED_FDS: usize = 4;

fn reserve_fds() -> Vec<File> {
    (0..RESERVED_FDS)
        .filter_map(|_| File::open("/dev/null").ok())
        .collect()
}

impl StateStore {
    /// Opens (or creates) the store in `dir`, takes the writer lock and
    /// repairs what a crash left behind: `attempting` becomes `failed`,
    /// `committing` becomes `in_doubt`, a cut history record is dropped.
    pub fn open(dir: &Path) -> Result<(StateStore, Recovery), StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StateError::Write {
                path: lock_path.clone(),
                source,
            })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked { path: lock_path });
            }
            Err(fs::TryLockError::Error(source)) => {
                return Err(StateError::Write {
                    path: lock_path,
                    source,
                });
            }
        }

        remove_stale_temp_files(dir);
        let mut doc = read_doc(dir)?.unwrap_or(StateDoc {
            format: FORMAT,
            ..StateDoc::default()
        });
        let mut recovery = Recovery::default();
        let now = SystemTime::now();
        for (id, t) in &mut doc.targets {
            recover(id, t, now, "baton stopped", &mut recovery);
        }

        let history_path = dir.join(HISTORY_FILE);
        let (history, dropped) = open_log(&history_path, |tail| {
            serde_json::from_slice::<RunRecord>(tail).is_ok()
        })?;
        recovery.history_bytes_dropped = dropped;

        let store = StateStore {
            dir: dir.to_owned(),
            doc: Mutex::new(doc.clone()),
            history: Mutex::new(history),
            streaks: Mutex::new(std::collections::HashMap::new()),
            _lock: lock,
            failing: std::sync::atomic::AtomicU32::new(0),
            reserve: Mutex::new(reserve_fds()),
        };
        if !recovery.is_empty() {
            store.write(&doc)?;
        }
        Ok((store, recovery))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of the document as last written.
    pub fn snapshot(&self) -> StateDoc {
        self.lock_doc().clone()
    }

    /// One target's state (the default, `ready`, for a target never seen).
    pub fn get(&self, target: &str) -> TargetState {
        self.lock_doc()
            .targets
            .get(target)
            .cloned()
            .unwrap_or_default()
    }

    /// The highest run id ever persisted.
    pub fn last_run_id(&self) -> u64 {
        self.lock_doc().last_run_id
    }

    /// Makes sure every id in `targets` has an entry, so `state show` lists
    /// targets that have never run.
    pub fn ensure_targets<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a TargetId>,
    ) -> Result<(), StateError> {
        let mut doc = self.lock_doc();
        let mut next = doc.clone();
        let mut changed = false;
        for t in targets {
            if !next.targets.contains_key(t.as_str()) {
                next.targets.insert(t.clone(), TargetState::default());
                changed = true;
            }
        }
        if changed {
            self.commit(&mut doc, next)?;
        }
        Ok(())
    }

    /// Test mode: `targets` (completed ones) back to `ready`.
    pub fn reset_to_ready(&self, targets: &[TargetId]) -> Result<(), StateError> {
        targets
            .iter()
            .try_for_each(|id| self.update(id, |t| t.status = Status::Ready).map(drop))
    }

    /// Writes `step` of a run into `target`'s row (see [`RunMove`]).
    pub fn run_moved(
        &self,
        target: &TargetId,
        step: RunMove<'_>,
    ) -> Result<TargetState, StateError> {
        self.update(target, |t| step.apply(t))
    }

    /// Changes one target's state and persists the whole document
    /// atomically before returning. `f` sees the current state (the default
    /// for a new target). If the write fails nothing changes, in memory or
    /// on disk.
    pub fn update(
        &self,
        target: &TargetId,
        f: impl FnOnce(&mut TargetState),
    ) -> Result<TargetState, StateError> {
        let mut doc = self.lock_doc();
        let mut next = doc.clone();
        let entry = next.targets.entry(target.clone()).or_default();
        f(entry);
        entry.updated_at = Some(SystemTime::now());
        if let Some(id) = entry.run_id {
            next.last_run_id = next.last_run_id.max(id.0);
        }
        let updated = entry.clone();
        self.commit(&mut doc, next)?;
        Ok(updated)
    }

    /// Appends one record to the history and syncs it. A watching run
    /// that ended as the target's previous one did (`ready`, same outcome)
    /// is held back instead, and the streak is written as one record (the
    /// last run, with `repeats` and `first_at`) when it ends, reaches
    /// [`MAX_REPEATS`] or [`MAX_REPEAT_AGE`], or the store closes.
    pub fn append_history(&self, record: &RunRecord) -> Result<(), StateError> {
        let mut streaks = lock(&self.streaks);
        let key = record.repeat_key();
        if let Some(k) = &key
            && let Some(s) = streaks.get_mut(&record.target)
            && s.key == *k
        {
            let (count, since) = match &s.held {
                Some((_, n, since)) => (n + 1, *since),
                None => (1, record.started_at),
            };
            s.held = Some((record.clone(), count, since));
            let age = record.ended_at.duration_since(since).unwrap_or_default();
            if (count >= MAX_REPEATS || age >= MAX_REPEAT_AGE)
                && let Some(held) = s.held.take()
            {
                self.write_record(&repeated(held))?;
            }
            return Ok(());
        }
        if let Some(held) = streaks.remove(&record.target).and_then(|s| s.held) {
            self.write_record(&repeated(held))?;
        }
        self.write_record(record)?;
        if let Some(key) = key {
            streaks.insert(record.target.clone(), Streak { key, held: None });
        }
        Ok(())
    }

    /// Writes every held-back streak (at stop; also when the store drops).
    pub fn flush_history(&self) -> Result<(), StateError> {
        let mut streaks = lock(&self.streaks);
        for s in streaks.values_mut() {
            if let Some(held) = s.held.take() {
                self.write_record(&repeated(held))?;
            }
        }
        Ok(())
    }

    fn write_record(&self, record: &RunRecord) -> Result<(), StateError> {
        let mut line = serde_json::to_vec(record).expect("run records always serialize");
        line.push(b'\n');
        let mut file = lock(&self.history);
        // One write call per record: a crash cuts at most this record.
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(|source| StateError::Write {
                path: self.dir.join(HISTORY_FILE),
                source,
            })
    }

    /// The last `limit` records of the history, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        read_history(&self.dir, limit)
    }

    fn commit(
        &self,
        doc: &mut std::sync::MutexGuard<'_, StateDoc>,
        mut next: StateDoc,
    ) -> Result<(), StateError> {
        next.revision = doc.revision + 1;
        self.write(&next)?;
        **doc = next;
        Ok(())
    }

    /// Makes the next `n` writes of `state.json` fail as a full disk would
    /// (ENOSPC). For tests of what baton does when writing stops working.
    #[doc(hidden)]
    pub fn fail_next_writes(&self, n: u32) {
        self.failing.store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Repairs targets whose persisted status says a run is live when none
    /// is (`live` says which are): a final write that failed (a full disk,
    /// no file descriptors) left them so. The same repair as at start-up:
    /// `attempting` → `failed`, `committing` → `in_doubt`, `committed` →
    /// `completed`. The caller holds the completion lock, so no run can
    /// register or complete meanwhile.
    pub fn repair_orphans(&self, live: impl Fn(&TargetId) -> bool) -> Result<Recovery, StateError> {
        let mut doc = self.lock_doc();
        // The common case, every cycle: nothing to repair, and no copy of
        // the document made to find that out.
        if !doc
            .targets
            .iter()
            .any(|(id, t)| t.status.is_live() && !live(id))
        {
            return Ok(Recovery::default());
        }
        let mut next = doc.clone();
        let mut recovery = Recovery::default();
        let now = SystemTime::now();
        for (id, t) in &mut next.targets {
            if !t.status.is_live() || live(id) {
                continue;
            }
            recover(
                id,
                t,
                now,
                "its run ended but its final state could not be saved (repaired when writing worked again)",
                &mut recovery,
            );
        }
        if recovery.is_empty() {
            return Ok(recovery);
        }
        self.commit(&mut doc, next)?;
        Ok(recovery)
    }

    fn write(&self, doc: &StateDoc) -> Result<(), StateError> {
        match self.write_once(doc) {
            // Out of descriptors (EMFILE, however the error wraps it): use
            // the reserve for one more try, then take it back as soon as
            // descriptors are free again. Other failures fail the same way
            // twice; the retry costs nothing then.
            Err(StateError::Write { .. }) => {
                let mut reserve = lock(&self.reserve);
                reserve.clear();
                let r = self.write_once(doc);
                *reserve = reserve_fds();
                r
            }
            r => r,
        }
    }

    fn write_once(&self, doc: &StateDoc) -> Result<(), StateError> {
        if self
            .failing
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(StateError::Write {
                path: self.dir.join(STATE_FILE),
                source: io::Error::from_raw_os_error(28),
            });
        }
        write_atomic(&self.dir, STATE_FILE, doc)
    }

    fn lock_doc(&self) -> std::sync::MutexGuard<'_, StateDoc> {
        // A panic while holding this lock cannot leave the document half
        // changed (changes go to a copy), so a poisoned lock is safe to use.
        lock(&self.doc)
    }
}

/// Reads `state.json` from `dir` without taking the writer lock. `None` if
/// there is no file yet.
pub fn read_doc(dir: &Path) -> Result<Option<StateDoc>, StateError> {
    let path = dir.join(STATE_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let mut doc: StateDoc =
                serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                    path: path.clone(),
                    source,
                })?;
            // Fields this baton does not know would be lost on its next
            // write: refuse rather than half-understand.
            if doc.format > FORMAT {
                return Err(StateError::NewerFormat {
                    path,
                    found: doc.format,
                });
            }
            // Older documents repeated the status as the last outcome.
            for t in doc.targets.values_mut() {
                if t.last_outcome.as_deref() == Some(t.status.as_str()) {
                    t.last_outcome = None;
                }
            }
            Ok(Some(doc))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read { path, source }),
    }
}

/// Whether another process holds the writer lock of the store in `dir`.
pub fn is_locked(dir: &Path) -> bool {
    let Ok(f) = OpenOptions::new().write(true).open(dir.join(LOCK_FILE)) else {
        return false;
    };
    matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))
}

/// The last `limit` history records in `dir`, newest first. Lines that do
/// not parse (a record cut by a crash) are skipped.
///
/// Read from the end, a block at a time, and only as far back as `limit`
/// records go: the cost follows `limit`, not the file, which a year of
/// 30-second cycles makes a million lines long.
pub fn read_history(dir: &Path, limit: usize) -> Result<Vec<RunRecord>, StateError> {
    let path = dir.join(HISTORY_FILE);
    let err = |source| StateError::Read {
        path: path.clone(),
        source,
    };
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    let mut out = Vec::with_capacity(limit.min(1024));
    if limit == 0 {
        return Ok(out);
    }
    let mut end = file.metadata().map_err(err)?.len();
    // Bytes after the last newline seen so far: the start of a line whose
    // beginning is in an earlier block.
    let mut tail: Vec<u8> = Vec::new();
    let mut block = vec![0u8; HISTORY_BLOCK];
    let take = |line: &[u8], out: &mut Vec<RunRecord>| {
        if let Ok(mut rec) = serde_json::from_slice::<RunRecord>(line) {
            rec.forget_status_outcome();
            out.push(rec);
        }
    };
    while end > 0 && out.len() < limit {
        let start = end.saturating_sub(HISTORY_BLOCK as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(err)?;
        file.read_exact(&mut block[..n]).map_err(err)?;
        // Lines in this block, last first; the first piece may continue
        // in the block before.
        let mut rest = &block[..n];
        while let Some(i) = rest.iter().rposition(|&b| b == b'\n') {
            let mut line = rest[i + 1..].to_vec();
            line.extend_from_slice(&tail);
            tail.clear();
            take(&line, &mut out);
            if out.len() == limit {
                return Ok(out);
            }
            rest = &rest[..i];
        }
        let mut joined = rest.to_vec();
        joined.extend_from_slice(&tail);
        tail = joined;
        end = start;
    }
    if out.len() < limit && !tail.is_empty() {
        take(&tail, &mut out);
    }
    Ok(out)
}

/// How much of the history a read takes at a time, from the end.
const HISTORY_BLOCK: usize = 64 * 1024;

/// Writes `value` as pretty JSON to `dir/name` so that the file is, at
/// every instant, either the old document or the new one.
pub fn write_atomic<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("state documents always serialize");
    bytes.push(b'\n');
    write_atomic_bytes(dir, name, &bytes)
}

/// Writes `bytes` to `dir/name` so that the file is, at every instant,
/// either the old contents or the new ones.
pub fn write_atomic_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StateError> {
    let path = dir.join(name);
    let err = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    // The temporary file lives in the same directory so the rename cannot
    // cross file systems (which would make it a copy, not atomic).
    let mut tmp = tempfile::Builder::new()
        .prefix(".state-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    // Data must be on disk before the rename makes it visible, or a crash
    // could leave a renamed but empty file.
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(&path).map_err(|e| err(e.error))?;
    // The rename itself is only durable once the directory is synced.
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Removes temporary files a killed writer left behind. Only the lock
/// holder calls this, so none of them can be in use.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".state-") && name.ends_with(".tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Opens an append-only JSON-lines log (the history, the notification
/// outbox) for appending, first repairing its end: a last record that
/// `is_whole` accepts but lacks its newline is kept (the newline is added);
/// a cut one is moved to `NAME.dropped` beside it (never just deleted) and
/// cut off. Returns the file and how many bytes were moved.
pub fn open_log(path: &Path, is_whole: impl Fn(&[u8]) -> bool) -> Result<(File, u64), StateError> {
    let err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    if len == 0 {
        return Ok((file, 0));
    }
    // Find the last newline; anything after it is a cut record.
    let mut keep = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut end = len;
    'scan: while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let n = (end - start) as usize;
        file.seek(SeekFrom::Start(start)).map_err(err)?;
        file.read_exact(&mut buf[..n]).map_err(err)?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            keep = start + i as u64 + 1;
            break 'scan;
        }
        end = start;
    }
    if keep == len {
        return Ok((file, 0));
    }
    let mut tail = vec![0u8; (len - keep) as usize];
    file.seek(SeekFrom::Start(keep)).map_err(err)?;
    file.read_exact(&mut tail).map_err(err)?;
    if is_whole(&tail) {
        // A whole record whose newline the crash cut off: keep it.
        file.write_all(b"\n")
            .and_then(|()| file.sync_data())
            .map_err(err)?;
        return Ok((file, 0));
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".dropped");
    let aside = PathBuf::from(aside);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&aside)
        .and_then(|mut f| {
            f.write_all(&tail)?;
            f.write_all(b"\n")?;
            f.sync_all()
        })
        .map_err(|source| StateError::Write {
            path: aside.clone(),
            source,
        })?;
    file.set_len(keep).map_err(err)?;
    file.sync_all().map_err(err)?;
    Ok((file, len - keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A finished run, run id 1.
    fn record() -> RunRecord {
        RunRecord {
            run_id: RunId(1),
            target: "a".into(),
            flow: "f".into(),
            started_at: SystemTime::UNIX_EPOCH,
            ended_at: SystemTime::UNIX_EPOCH,
            duration_ms: 5,
            status: Status::Completed,
            outcome: None,
            order: Some("o-1".into()),
            price: None,
            error: None,
            committed: true,
            cancelled: None,
            steps: vec![],
            screenshot: None,
            trace: None,
            repeats: None,
            first_at: None,
        }
    }

    /// A target `ready` for the same outcome every cycle writes its first
    /// run, then one record for the rest of the streak (with the count and
    /// when it began) when the outcome changes; a streak still held when
    /// the store closes is written then. Failures are never collapsed.
    #[test]
    fn repeated_watching_runs_are_one_record_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let watch = |run: u64, outcome: &str| RunRecord {
            run_id: RunId(run),
            status: Status::Ready,
            outcome: Some(outcome.into()),
            order: None,
            committed: false,
            started_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(run * 30),
            ended_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(run * 30 + 1),
            ..record()
        };
        {
            let (s, _) = StateStore::open(dir.path()).unwrap();
            for run in 1..=5 {
                s.append_history(&watch(run, "price_too_high")).unwrap();
            }
            s.append_history(&watch(6, "out_of_stock")).unwrap();
            for run in 7..=9 {
                let mut failed = watch(run, "x");
                failed.status = Status::Failed;
                failed.error = Some("boom".into());
                s.append_history(&failed).unwrap();
            }
            s.append_history(&watch(10, "out_of_stock")).unwrap();
            s.append_history(&watch(11, "out_of_stock")).unwrap();
            s.append_history(&watch(12, "out_of_stock")).unwrap();
        }
        let (s, _) = StateStore::open(dir.path()).unwrap();
        let mut h = s.history(100).unwrap();
        h.reverse();
        let shown: Vec<(u64, Option<u32>)> = h.iter().map(|r| (r.run_id.0, r.repeats)).collect();
        assert_eq!(
            shown,
            [
                (1, None),
                (5, Some(4)),
                (6, None),
                (7, None),
                (8, None),
                (9, None),
                (10, None),
                (12, Some(2)),
            ]
        );
        assert_eq!(
            h[1].first_at,
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60))
        );
    }

    /// Reading from the end gives what reading the whole file gives: the
    /// last `limit` records, newest first, across block boundaries, lines
    /// longer than a block, a cut last line and a missing final newline.
    #[test]
    fn the_history_read_from_its_end_matches_a_whole_read() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let mut all = Vec::new();
        let mut f = File::create(dir.path().join(HISTORY_FILE)).unwrap();
        for i in 0..600u64 {
            let mut r = record();
            r.run_id = RunId(i);
            // Some records far longer than a read block.
            let len = if i % 97 == 0 {
                3 * HISTORY_BLOCK
            } else {
                (i as usize * 37) % 900
            };
            r.error = Some("x".repeat(len));
            let mut line = serde_json::to_vec(&r).unwrap();
            line.push(b'\n');
            f.write_all(&line).unwrap();
            all.push(r);
        }
        let newest_first: Vec<u64> = all.iter().rev().map(|r| r.run_id.0).collect();
        for limit in [0, 1, 2, 7, 97, 599, 600, 601, 5000] {
            let got: Vec<u64> = read_history(dir.path(), limit)
                .unwrap()
                .iter()
                .map(|r| r.run_id.0)
                .collect();
            assert_eq!(got, newest_first[..limit.min(600)], "limit {limit}");
        }
        // A cut record at the end is skipped; a whole one without its
        // newline is read.
        f.write_all(br#"{"run_id":600,"target":"a","#).unwrap();
        assert_eq!(read_history(dir.path(), 1).unwrap()[0].run_id, RunId(599));
        drop(f);
        let mut whole = record();
        whole.run_id = RunId(700);
        let mut text = std::fs::read(dir.path().join(HISTORY_FILE)).unwrap();
        text.truncate(text.len() - br#"{"run_id":600,"target":"a","#.len());
        text.extend(serde_json::to_vec(&whole).unwrap());
        std::fs::write(dir.path().join(HISTORY_FILE), text).unwrap();
        let two = read_history(dir.path(), 2).unwrap();
        assert_eq!((two[0].run_id, two[1].run_id), (RunId(700), RunId(599)));
    }

    /// Lines written by earlier versions, which repeated the status as the
    /// outcome and stored step results as plain words, still read: the
    /// steps' results map to `StepResult`, a status-name outcome reads as
    /// none, a script's outcome is kept, and new lines write the same
    /// words.
    #[test]
    fn older_history_lines_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let old = [
            r#"{"run_id":1,"target":"a","flow":"f","started_at":"2026-11-01T10:00:00Z","ended_at":"2026-11-01T10:00:01Z","duration_ms":900,"status":"completed","outcome":"completed","order":"A-1","committed":true,"steps":[{"script":"p","generation":1,"duration_ms":400,"result":"ok"},{"script":"c","generation":1,"duration_ms":0,"result":"skipped"}]}"#,
            r#"{"run_id":2,"target":"a","flow":"f","started_at":"2026-11-01T10:01:00Z","ended_at":"2026-11-01T10:01:01Z","duration_ms":900,"status":"ready","outcome":"out_of_stock","committed":false,"steps":[{"script":"p","generation":1,"duration_ms":400,"result":"outcome","outcome":"out_of_stock"}]}"#,
            r#"{"run_id":3,"target":"a","flow":"f","started_at":"2026-11-01T10:02:00Z","ended_at":"2026-11-01T10:02:01Z","duration_ms":900,"status":"timed_out","outcome":"timed_out","error":"cancelled: run timeout","committed":false,"steps":[{"script":"p","generation":1,"duration_ms":400,"result":"cancelled","error":"x"}]}"#,
        ];
        std::fs::write(dir.path().join(HISTORY_FILE), old.join("\n") + "\n").unwrap();
        let h = read_history(dir.path(), 10).unwrap();
        assert_eq!(h.len(), 3);
        let (timed_out, ready, done) = (&h[0], &h[1], &h[2]);
        assert_eq!(done.outcome, None);
        assert_eq!(done.steps[0].result, StepResult::Ok);
        assert_eq!(done.steps[1].result, StepResult::Skipped);
        assert_eq!(ready.outcome.as_deref(), Some("out_of_stock"));
        assert_eq!(ready.steps[0].result, StepResult::Outcome);
        assert_eq!(timed_out.outcome, None);
        assert_eq!(timed_out.steps[0].result, StepResult::Cancelled);
        let line = serde_json::to_string(&timed_out.steps[0]).unwrap();
        assert!(line.contains(r#""result":"cancelled""#), "{line}");
    }

    #[test]
    fn recovers_live_statuses_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = StateStore::open(dir.path()).unwrap();
            s.update(&"a".into(), |t| {
                t.status = Status::Attempting;
                t.run_id = Some(RunId(7));
            })
            .unwrap();
            s.update(&"b".into(), |t| t.status = Status::Committing)
                .unwrap();
            s.update(&"c".into(), |t| t.status = Status::Completed)
                .unwrap();
            s.update(&"d".into(), |t| {
                t.status = Status::Committed;
                t.last_order = Some("A-7".into());
            })
            .unwrap();
        }
        let (s, rec) = StateStore::open(dir.path()).unwrap();
        assert_eq!(rec.failed, vec![TargetId::new("a")]);
        assert_eq!(rec.in_doubt, vec![TargetId::new("b")]);
        assert_eq!(rec.completed, vec![TargetId::new("d")]);
        assert_eq!(s.get("a").status, Status::Failed);
        assert_eq!(s.get("b").status, Status::InDoubt);
        assert_eq!(s.get("c").status, Status::Completed);
        // A run whose commit answered is not in doubt: its order stands.
        assert_eq!(s.get("d").status, Status::Completed);
        assert_eq!(s.get("d").last_order.as_deref(), Some("A-7"));
        assert_eq!(s.last_run_id(), 7);
        // The repair was persisted, not just applied in memory.
        let on_disk = read_doc(dir.path()).unwrap().unwrap();
        assert_eq!(on_disk.targets["b"].status, Status::InDoubt);
    }

    /// Hardening: `format: 99` used to be read as if it were format 1.
    #[test]
    fn a_newer_format_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let text = "{\"format\":99,\"last_run_id\":0,\"revision\":1,\"targets\":{}}";
        fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("has format 99, newer than this baton reads (1)"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(STATE_FILE)).unwrap(),
            text
        );
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_s, _) = StateStore::open(dir.path()).unwrap();
        assert!(is_locked(dir.path()));
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_state_file_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{\"format\": 1,").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("is not a valid state file"),
            "{err}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(STATE_FILE)).unwrap(),
            "{\"format\": 1,"
        );
    }

    #[test]
    fn a_cut_history_record_is_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record();
        {
            let (s, _) = StateStore::open(dir.path()).unwrap();
            s.append_history(&rec).unwrap();
        }
        let path = dir.path().join(HISTORY_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"run_id\": 2, \"tar").unwrap();
        drop(f);
        let (s, recovery) = StateStore::open(dir.path()).unwrap();
        assert_eq!(recovery.history_bytes_dropped, 18);
        s.append_history(&RunRecord {
            run_id: RunId(3),
            ..rec.clone()
        })
        .unwrap();
        let h = s.history(10).unwrap();
        assert_eq!(
            h.iter().map(|r| r.run_id).collect::<Vec<_>>(),
            vec![RunId(3), RunId(1)]
        );
        // The cut bytes were kept aside, not just deleted.
        assert_eq!(
            fs::read_to_string(dir.path().join("history.jsonl.dropped")).unwrap(),
            "{\"run_id\": 2, \"tar\n"
        );
    }

    /// Hardening: a whole last record without its newline was deleted, and
    /// a history with no newline at all was emptied, silently.
    #[test]
    fn a_whole_last_record_without_its_newline_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record();
        // The only record, with no newline at all.
        fs::write(
            dir.path().join(HISTORY_FILE),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let (s, recovery) = StateStore::open(dir.path()).unwrap();
        assert_eq!(recovery.history_bytes_dropped, 0);
        s.append_history(&RunRecord {
            run_id: RunId(2),
            ..rec.clone()
        })
        .unwrap();
        let ids: Vec<RunId> = s.history(10).unwrap().iter().map(|r| r.run_id).collect();
        assert_eq!(ids, vec![RunId(2), RunId(1)]);
    }
}
