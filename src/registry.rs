//! The active-run registry: who is driving a browser right now.
//!
//! This is the safety core. It owns the map of live runs, the [`RunGuard`]
//! that proves a run is registered, the completion lock, and the
//! event-driven waits the scheduler uses before each cycle. It knows nothing
//! of scripts, browsers or files: the state store and the scheduler build on
//! it, never the other way round.
//!
//! # Invariants, and the test that proves each
//!
//! Tests live in `tests/safety.rs` unless named otherwise; each was checked
//! to fail with its mechanism removed (docs/safety.md lists how).
//!
//! - **I1 no overlap.** At most one run drives a browser session at any
//!   instant. [`Registry::register`] claims the session and the target in one
//!   step and refuses when either is taken.
//!   Test: `i1_no_overlap_on_a_session`.
//! - **I2 one run per target.** The target's entry is claimed with
//!   `DashMap::entry`, so check and insert are one atomic step.
//!   Test: `i2_one_run_per_target`.
//! - **I3 a cycle starts nothing until the previous cycle is gone.**
//!   [`Registry::wait_idle`] is woken by deregistration itself (no polling)
//!   and bounded; on expiry the scheduler cancels the stuck run and waits
//!   for its guard with [`Registry::wait_gone`].
//!   Tests: `i3_next_cycle_waits_for_slow_run`,
//!   `i3_stuck_run_is_cancelled_and_confirmed_gone`,
//!   `seed_race_run_ends_between_tick_and_wait`.
//! - **I4 atomic completion.** [`RunGuard::complete`] marks the run
//!   `completing`, persists under the completion lock and deregisters before
//!   releasing it; dispatch registers and persists `attempting` under the same
//!   lock. A holder of the lock sees a run registered or finished, never
//!   `attempting` with no live run.
//!   Tests: `i4_completion_is_atomic_under_the_lock`, and the soak.
//! - **I5 deregistration on every exit path.** Deregistration is
//!   [`RunGuard`]'s `Drop`, which runs on success, error, panic, timeout and
//!   task abort alike. Test: `i5_deregistered_after_panic_and_error`.
//! - I6 (crash-safe state) belongs to `state`, I7 (no double commit) to
//!   `run`, I8 (hot reload pins versions) to `script`; their tests are
//!   `tests/crash.rs`, `i7_committed_run_without_result_is_in_doubt` and
//!   `i8_reload_never_changes_a_running_flow`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::id::{RunId, SessionId, TargetId};

/// Where a registered run is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Steps are running against the page.
    Executing,
    /// The final state is being persisted under the completion lock.
    Completing,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Executing => "executing",
            RunStatus::Completing => "completing",
        })
    }
}

/// Why a run was asked to stop early. The first reason given wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The next cycle waited `wait_for_active` and gave up on it.
    WaitTimeout,
    /// The run exceeded its own `run_timeout`.
    RunTimeout,
    /// baton is shutting down (Ctrl-C, SIGTERM).
    Shutdown,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::WaitTimeout => "the next cycle's wait timed out",
            CancelReason::RunTimeout => "the run exceeded run_timeout",
            CancelReason::Shutdown => "baton is shutting down",
        })
    }
}

/// The shared handle between a run and whoever may need to stop it.
///
/// The registry entry and the run task each hold an `Arc` of it, so the
/// scheduler can cancel a run without holding a map reference across an
/// `.await`.
#[derive(Debug, Default)]
pub struct RunControl {
    cancel: CancellationToken,
    reason: OnceLock<CancelReason>,
    committed: AtomicBool,
    step: Mutex<Option<String>>,
    /// The registry's change counter, bumped when the step or the commit
    /// point changes so observers (the dashboard) see it. Weak: the
    /// registry owns this control through its entry.
    registry: std::sync::Weak<Registry>,
}

impl RunControl {
    /// Asks the run to stop. Scripts see it through the progress hook and
    /// every browser call races it.
    pub fn cancel(&self, reason: CancelReason) {
        // Only the first reason is kept: a run cancelled for a wait timeout
        // and then again by shutdown timed out.
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    /// Records that the run has crossed its point of no return (I7).
    pub fn mark_committed(&self) {
        self.committed.store(true, Ordering::SeqCst);
        self.changed();
    }

    fn changed(&self) {
        if let Some(r) = self.registry.upgrade() {
            r.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    pub fn committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    pub fn set_step(&self, step: Option<&str>) {
        *self.step.lock().unwrap_or_else(|e| e.into_inner()) = step.map(str::to_owned);
        self.changed();
    }

    pub fn step(&self) -> Option<String> {
        self.step.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The compiled version of one script a run pinned when it started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PinnedVersion {
    pub script: String,
    pub generation: u64,
}

/// What a run registers with.
#[derive(Clone, Debug)]
pub struct Registration {
    pub target: TargetId,
    pub session: SessionId,
    pub flow: String,
    pub versions: Vec<PinnedVersion>,
}

/// A registry entry. Only the registry mutates it; everyone else sees
/// [`RunInfo`] copies.
#[derive(Debug)]
struct ActiveRun {
    run_id: RunId,
    session: SessionId,
    flow: String,
    started: Instant,
    started_at: SystemTime,
    status: RunStatus,
    versions: Vec<PinnedVersion>,
    control: Arc<RunControl>,
}

/// A point-in-time copy of a registered run, safe to hold across awaits.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub run_id: RunId,
    pub target: TargetId,
    pub session: SessionId,
    pub flow: String,
    #[serde(skip)]
    pub started: Instant,
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: SystemTime,
    pub elapsed_ms: u64,
    pub status: RunStatus,
    pub step: Option<String>,
    pub committed: bool,
    pub versions: Vec<PinnedVersion>,
    #[serde(skip)]
    pub control: Arc<RunControl>,
}

impl RunInfo {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Why [`Registry::register`] said no.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("target `{target}` already has run {run_id} registered")]
    TargetBusy { target: TargetId, run_id: RunId },
    #[error("browser session {session} is driven by run {run_id}")]
    SessionBusy { session: SessionId, run_id: RunId },
}

/// The runs a bounded wait gave up on.
#[derive(Debug, Clone)]
pub struct Stuck {
    pub runs: Vec<RunInfo>,
    pub waited: Duration,
}

/// The active-run registry. Shared as `Arc<Registry>`; every [`RunGuard`]
/// holds one so it can deregister itself.
#[derive(Debug)]
pub struct Registry {
    /// One entry per target with a live run (I2).
    runs: DashMap<TargetId, ActiveRun>,
    /// Which run holds each browser session (I1). Claimed before the target
    /// and released after it, so a session is never free while a run it
    /// carries is still registered.
    sessions: DashMap<SessionId, RunId>,
    /// Woken by every deregistration and status change; waiters re-check
    /// the maps themselves, so a spurious wake is harmless.
    changed: Notify,
    /// A counter bumped on every change, for observers (the dashboard) that
    /// want to redraw when the registry moves. Never used for safety.
    version: watch::Sender<u64>,
    /// The completion lock (I4). A tokio mutex because its holders await the
    /// state store while holding it.
    completion: tokio::sync::Mutex<()>,
    next_run: AtomicU64,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(1)
    }
}

impl Registry {
    /// A registry whose first run id is `first_run_id`.
    pub fn new(first_run_id: u64) -> Self {
        Registry {
            runs: DashMap::new(),
            sessions: DashMap::new(),
            changed: Notify::new(),
            version: watch::Sender::new(0),
            completion: tokio::sync::Mutex::new(()),
            next_run: AtomicU64::new(first_run_id.max(1)),
        }
    }

    /// Claims `reg.session` and `reg.target` for a new run, or refuses.
    ///
    /// Each claim is one `DashMap::entry` call, so there is no window between
    /// checking and inserting. The session is claimed first; if the target
    /// is then found busy the session claim is undone before returning, and
    /// because it is matched by run id the undo can never release someone
    /// else's session.
    pub fn register(self: &Arc<Self>, reg: Registration) -> Result<RunGuard, Refusal> {
        let run_id = RunId(self.next_run.fetch_add(1, Ordering::SeqCst));
        match self.sessions.entry(reg.session) {
            Entry::Occupied(e) => {
                return Err(Refusal::SessionBusy {
                    session: reg.session,
                    run_id: *e.get(),
                });
            }
            Entry::Vacant(e) => {
                e.insert(run_id);
            }
        }
        let control = Arc::new(RunControl {
            registry: Arc::downgrade(self),
            ..RunControl::default()
        });
        match self.runs.entry(reg.target.clone()) {
            Entry::Occupied(e) => {
                let holder = e.get().run_id;
                // Release the shard lock before touching the other map.
                drop(e);
                self.sessions.remove_if(&reg.session, |_, r| *r == run_id);
                return Err(Refusal::TargetBusy {
                    target: reg.target,
                    run_id: holder,
                });
            }
            Entry::Vacant(e) => {
                e.insert(ActiveRun {
                    run_id,
                    session: reg.session,
                    flow: reg.flow.clone(),
                    started: Instant::now(),
                    started_at: SystemTime::now(),
                    status: RunStatus::Executing,
                    versions: reg.versions,
                    control: control.clone(),
                });
            }
        }
        self.bump();
        tracing::info!(
            run = %run_id,
            target = %reg.target,
            session = reg.session.0,
            flow = %reg.flow,
            "registered"
        );
        Ok(RunGuard {
            registry: self.clone(),
            target: reg.target,
            session: reg.session,
            run_id,
            control,
        })
    }

    /// Whether no run is registered.
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty() && self.sessions.is_empty()
    }

    /// How many runs are registered.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether `target` has a live run.
    pub fn is_registered(&self, target: &str) -> bool {
        self.runs.contains_key(target)
    }

    /// The live run of `target`, if any.
    pub fn get(&self, target: &str) -> Option<RunInfo> {
        self.runs.get(target).map(|e| info(e.key(), e.value()))
    }

    /// Copies of every registered run, oldest first.
    pub fn snapshot(&self) -> Vec<RunInfo> {
        // Copy out under each shard's read lock and sort afterwards, so no
        // map reference outlives this call.
        let mut runs: Vec<RunInfo> = self.runs.iter().map(|e| info(e.key(), e.value())).collect();
        runs.sort_by_key(|r| r.run_id);
        runs
    }

    /// How many sessions out of `sessions` are free.
    pub fn free_session(&self, sessions: u32) -> Option<SessionId> {
        (0..sessions)
            .map(SessionId)
            .find(|s| !self.sessions.contains_key(s))
    }

    /// A receiver that changes whenever a run registers, changes status or
    /// deregisters. For observers only.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Takes the completion lock (I4). While it is held no run can complete
    /// or be dispatched, so a registry and state read together agree.
    pub async fn completion_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.completion.lock().await
    }

    /// Waits until no run is registered, at most `timeout`.
    ///
    /// Returns how long it waited, or the runs still registered at the
    /// deadline. Woken by deregistration itself: the hand-off costs no
    /// polling interval.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<Duration, Stuck> {
        let start = Instant::now();
        if self.wait_until(timeout, Registry::is_idle).await {
            Ok(start.elapsed())
        } else {
            Err(Stuck {
                runs: self.snapshot(),
                waited: start.elapsed(),
            })
        }
    }

    /// Waits until one of `sessions` sessions is free, at most `timeout`.
    pub async fn wait_for_session(
        &self,
        sessions: u32,
        timeout: Duration,
    ) -> Result<SessionId, Stuck> {
        let start = Instant::now();
        if self
            .wait_until(timeout, |r| r.free_session(sessions).is_some())
            .await
            && let Some(s) = self.free_session(sessions)
        {
            return Ok(s);
        }
        Err(Stuck {
            runs: self.snapshot(),
            waited: start.elapsed(),
        })
    }

    /// Waits until run `run_id` has deregistered, at most `timeout`.
    /// Returns whether it is gone.
    pub async fn wait_gone(&self, run_id: RunId, timeout: Duration) -> bool {
        self.wait_until(timeout, |r| {
            !r.runs.iter().any(|e| e.run_id == run_id)
                && !r.sessions.iter().any(|e| *e.value() == run_id)
        })
        .await
    }

    /// The one waiting primitive: re-check `done` on every registry change
    /// until it holds or `timeout` passes.
    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Registry) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Register interest before checking, so a deregistration between
            // the check and the await still wakes us (no lost wake-up).
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return done(self);
            }
        }
    }

    fn set_status(&self, target: &TargetId, run_id: RunId, status: RunStatus) {
        if let Some(mut e) = self.runs.get_mut(target)
            && e.run_id == run_id
        {
            e.status = status;
        }
        self.bump();
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        self.changed.notify_waiters();
    }
}

fn info(target: &TargetId, run: &ActiveRun) -> RunInfo {
    RunInfo {
        run_id: run.run_id,
        target: target.clone(),
        session: run.session,
        flow: run.flow.clone(),
        started: run.started,
        started_at: run.started_at,
        elapsed_ms: run.started.elapsed().as_millis() as u64,
        status: run.status,
        step: run.control.step(),
        committed: run.control.committed(),
        versions: run.versions.clone(),
        control: run.control.clone(),
    }
}

/// Proof that a run is registered. Dropping it deregisters the run (I5).
///
/// Bind it to a named variable: `let _ = registry.register(..)` drops it at
/// once.
#[must_use = "dropping a RunGuard deregisters the run immediately"]
#[derive(Debug)]
pub struct RunGuard {
    registry: Arc<Registry>,
    target: TargetId,
    session: SessionId,
    run_id: RunId,
    control: Arc<RunControl>,
}

impl RunGuard {
    pub fn run_id(&self) -> RunId {
        self.run_id
    }

    pub fn target(&self) -> &TargetId {
        &self.target
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn control(&self) -> &Arc<RunControl> {
        &self.control
    }

    /// The completion step (I4): under the completion lock, mark the run
    /// `completing`, run `persist` (which writes the final state and the
    /// history record), and deregister before the lock is released.
    ///
    /// If this future is dropped half-way the guard still drops, so the run
    /// deregisters; only the record is lost, which is what I6 allows.
    pub async fn complete<T>(self, persist: impl Future<Output = T>) -> T {
        let registry = self.registry.clone();
        let _lock = registry.completion.lock().await;
        registry.set_status(&self.target, self.run_id, RunStatus::Completing);
        tracing::info!(run = %self.run_id, target = %self.target, "completing");
        let out = persist.await;
        // Deregister while the lock is still held: a lock holder can never
        // observe the final state missing with the run gone.
        drop(self);
        out
    }
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        // Match on run id: a guard only ever removes its own entries, even if
        // (by a bug elsewhere) a newer run had claimed the same key.
        let run_id = self.run_id;
        self.registry
            .runs
            .remove_if(&self.target, |_, e| e.run_id == run_id);
        // The session goes last, so the session is never free while this
        // run is still in `runs`.
        self.registry
            .sessions
            .remove_if(&self.session, |_, r| *r == run_id);
        self.registry.bump();
        tracing::info!(run = %run_id, target = %self.target, "deregistered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(target: &str, session: u32) -> Registration {
        Registration {
            target: TargetId::new(target),
            session: SessionId(session),
            flow: "f".into(),
            versions: vec![],
        }
    }

    #[test]
    fn refuses_a_second_run_of_the_same_target() {
        let r = Arc::new(Registry::default());
        let first = r.register(reg("a", 0)).unwrap();
        let err = r.register(reg("a", 1)).unwrap_err();
        assert_eq!(
            err,
            Refusal::TargetBusy {
                target: TargetId::new("a"),
                run_id: first.run_id()
            }
        );
        // The refused attempt released the session it had claimed.
        assert_eq!(r.free_session(2), Some(SessionId(1)));
    }

    #[test]
    fn refuses_a_busy_session() {
        let r = Arc::new(Registry::default());
        let first = r.register(reg("a", 0)).unwrap();
        let err = r.register(reg("b", 0)).unwrap_err();
        assert_eq!(
            err,
            Refusal::SessionBusy {
                session: SessionId(0),
                run_id: first.run_id()
            }
        );
        assert!(!r.is_registered("b"));
    }

    #[test]
    fn drop_removes_only_its_own_entry() {
        let r = Arc::new(Registry::default());
        let g = r.register(reg("a", 0)).unwrap();
        assert!(r.is_registered("a"));
        drop(g);
        assert!(r.is_idle());
        let g2 = r.register(reg("a", 0)).unwrap();
        assert_eq!(r.get("a").unwrap().run_id, g2.run_id());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_reports_who_is_stuck() {
        let r = Arc::new(Registry::default());
        let g = r.register(reg("a", 0)).unwrap();
        let stuck = r.wait_idle(Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(stuck.runs.len(), 1);
        assert_eq!(stuck.runs[0].run_id, g.run_id());
        assert_eq!(stuck.waited, Duration::from_secs(30));
    }
}
