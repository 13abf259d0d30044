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
//! - **I9 a session is held while its run's effects may be in flight.** A
//!   run's commit entry and a wait's cancellation exclude each other
//!   ([`RunControl::enter_commit`], [`RunControl::cancel_or_hold`]): a wait
//!   that runs out holds a run past its commit point instead of cancelling
//!   it, and [`Registry::wait_settled`] and [`Registry::wait_for_session`]
//!   go on without held runs and quarantined sessions. A run that ends
//!   `in_doubt` quarantines its own session before its guard drops
//!   ([`RunGuard::quarantine`]); [`Registry::register`] refuses a
//!   quarantined session. Tests: `i9_a_slow_commit_holds_its_session_and_ends_completed`,
//!   `i9_an_unanswered_commit_quarantines_its_session`.
//! - **I10 one run per account.** A run on an account claims the account
//!   in [`Registry::register`], in the same step as its session and target
//!   (each claim one `DashMap::entry`, undone in reverse on refusal), so two
//!   sessions logged into one account never run at once. A run that ends
//!   `in_doubt` quarantines its account with its session.
//!   Test: `i10_one_run_per_account`.
//! - I6 (crash-safe state) belongs to `state`, I7 (no double commit) to
//!   `run`, I8 (hot reload pins versions) to `script`; their tests are
//!   `tests/crash.rs`, `i7_committed_run_without_result_is_in_doubt` and
//!   `i8_reload_never_changes_a_running_flow`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use crate::id::PinnedVersion;
use crate::id::{AccountId, RunId, SessionId, TargetId};
use crate::sync::lock;

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
    /// The run's commit got no answer within `commit_timeout` (I9).
    CommitTimeout,
    /// The run's cluster lease expired or was taken (several instances).
    LeaseLost,
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::WaitTimeout => "the next cycle's wait timed out",
            CancelReason::RunTimeout => "the run exceeded run_timeout",
            CancelReason::Shutdown => "baton is shutting down",
            CancelReason::CommitTimeout => "its commit got no answer within commit_timeout",
            CancelReason::LeaseLost => "its cluster lease was lost",
        })
    }
}

/// Where a run is with respect to its point of no return (I7, I9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitPhase {
    /// The run has not entered `commit`: cancelling it cannot leave
    /// anything behind on the shop's side.
    #[default]
    Before,
    /// The commit closure is running: a request that places an order may be
    /// in flight on the shop. The run's session is held (I9).
    InFlight { since: Instant },
    /// The commit closure ended (the shop answered, or the script said it
    /// refused); `took` is how long the commit lasted.
    Answered { took: Duration },
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
    /// A std mutex, not a tokio one: nothing awaits while it is held. It
    /// makes entering the commit and a cycle's cancellation mutually
    /// exclusive, so a run is either cancelled before its commit point or
    /// holding its commit, never both half-way (I9).
    commit: Mutex<CommitPhase>,
    /// Set when a bounded wait ran out while the commit was in flight and
    /// left the run alone instead of cancelling it: from then on the run
    /// holds its session and later waits do not wait for it again (I9).
    held: std::sync::atomic::AtomicBool,
    step: Mutex<Option<String>>,
    /// Woken whenever the commit phase changes, so a run re-arms its
    /// bound from `commit_timeout` to its step bound and back.
    commit_changed: tokio::sync::Notify,
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

    /// Enters the commit (I7, I9): from now on the run has crossed its
    /// point of no return, and a cycle's wait no longer cancels it. Refused
    /// if the run was already cancelled, so a cancelled run never starts a
    /// commit.
    pub fn enter_commit(&self) -> Result<(), CancelReason> {
        {
            let mut phase = lock(&self.commit);
            if self.cancel.is_cancelled() {
                return Err(self.reason().unwrap_or(CancelReason::Shutdown));
            }
            *phase = CommitPhase::InFlight {
                since: Instant::now(),
            };
        }
        self.changed();
        Ok(())
    }

    /// Undoes [`RunControl::enter_commit`] when `committing` could not be
    /// persisted: the closure never ran, so nothing reached the shop.
    pub fn abandon_commit(&self) {
        *lock(&self.commit) = CommitPhase::Before;
        self.changed();
    }

    /// Records that the commit closure ended: the shop answered.
    pub fn answer_commit(&self) {
        {
            let mut phase = lock(&self.commit);
            if let CommitPhase::InFlight { since } = *phase {
                *phase = CommitPhase::Answered {
                    took: since.elapsed(),
                };
            }
        }
        self.changed();
    }

    /// What a bounded wait does to a run it gave up on: cancels it, unless
    /// its commit is in flight, in which case the run is marked as holding
    /// its session (I9) and left to finish (cancelling it would close its
    /// page, not the shop's request). Returns whether it was cancelled.
    pub fn cancel_or_hold(&self, reason: CancelReason) -> bool {
        let phase = lock(&self.commit);
        if matches!(*phase, CommitPhase::InFlight { .. }) {
            self.held.store(true, Ordering::SeqCst);
            drop(phase);
            self.changed();
            return false;
        }
        self.cancel(reason);
        true
    }

    /// Whether the run holds its session for a commit in flight that a
    /// bounded wait already gave up waiting for (I9).
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) && self.commit_in_flight().is_some()
    }

    pub fn commit_phase(&self) -> CommitPhase {
        *lock(&self.commit)
    }

    /// Whether the run has crossed its point of no return (I7).
    pub fn committed(&self) -> bool {
        self.commit_phase() != CommitPhase::Before
    }

    /// Since when the commit is in flight, if it is.
    pub fn commit_in_flight(&self) -> Option<Instant> {
        match self.commit_phase() {
            CommitPhase::InFlight { since } => Some(since),
            _ => None,
        }
    }

    /// Time spent inside `commit` so far. It counts against
    /// `commit_timeout`, not against the step's or the run's own bounds.
    pub fn commit_time(&self) -> Duration {
        match self.commit_phase() {
            CommitPhase::Before => Duration::ZERO,
            CommitPhase::InFlight { since } => since.elapsed(),
            CommitPhase::Answered { took } => took,
        }
    }

    /// Resolves at the next change of the commit phase.
    pub fn commit_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.commit_changed.notified()
    }

    fn changed(&self) {
        self.commit_changed.notify_waiters();
        if let Some(r) = self.registry.upgrade() {
            r.bump();
        }
    }

    pub fn set_step(&self, step: Option<&str>) {
        *lock(&self.step) = step.map(str::to_owned);
        self.changed();
    }

    pub fn step(&self) -> Option<String> {
        lock(&self.step).clone()
    }
}

/// What a run registers with.
#[derive(Clone, Debug)]
pub struct Registration {
    pub target: TargetId,
    pub session: SessionId,
    /// The account the session is logged into, if any (I10).
    pub account: Option<AccountId>,
    pub flow: String,
    pub versions: Vec<PinnedVersion>,
}

/// The sessions a run may take: the guest sessions, or an account's own
/// (with the account, which I10 claims too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    pub sessions: Vec<SessionId>,
    pub account: Option<AccountId>,
}

impl Pool {
    /// Sessions `0..n`, logged into no account.
    pub fn guests(n: u32) -> Pool {
        Pool {
            sessions: (0..n).map(SessionId).collect(),
            account: None,
        }
    }
}

/// A registry entry. Only the registry mutates it; everyone else sees
/// [`RunInfo`] copies.
#[derive(Debug)]
struct ActiveRun {
    run_id: RunId,
    session: SessionId,
    account: Option<AccountId>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub flow: String,
    #[serde(skip)]
    pub started: Instant,
    #[serde(with = "crate::time::rfc3339")]
    pub started_at: SystemTime,
    pub elapsed_ms: u64,
    pub status: RunStatus,
    pub step: Option<String>,
    pub committed: bool,
    /// How long its commit has been in flight, while it is (I9: the run
    /// holds its session and a cycle's wait leaves it alone).
    pub commit_in_flight_ms: Option<u64>,
    pub versions: Vec<PinnedVersion>,
    /// Whether, when the copy was taken, the run held its session for a
    /// commit in flight that a bounded wait already gave up on (I9): waits
    /// go on without it.
    pub held: bool,
}

impl RunInfo {
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// What [`Registry::cancel`] did to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cancel {
    /// The run's token fired; its guard drops once it has wound down.
    Cancelled,
    /// Its commit is in flight, so it was held instead (I9): cancelling
    /// would close its page, not the shop's request.
    Held,
    /// No such run is registered (it ended meanwhile).
    NotRunning,
}

/// A browser session no run may use until an operator resolves `target`:
/// its run ended `in_doubt`, so a request that places an order may still be
/// in flight on the shop for that session (I9).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantine {
    pub session: SessionId,
    /// The account the session was logged into: quarantined with it (I10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    pub target: TargetId,
    pub run_id: Option<RunId>,
}

/// Why no browser session could be had without waiting: every one is held
/// by a commit in flight or quarantined (I9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Run `run_id` of `target` holds the session while its commit is in
    /// flight.
    Held {
        session: SessionId,
        run_id: RunId,
        target: TargetId,
        for_: Duration,
    },
    Quarantined(Quarantine),
    /// A person is logging `account` in from the dashboard.
    LoggingIn {
        account: AccountId,
    },
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unavailable::Held {
                session,
                run_id,
                target,
                for_,
            } => write!(
                f,
                "browser session {session} is held by run {run_id} of `{target}`, whose commit may still be in flight ({})",
                crate::time::short(*for_)
            ),
            Unavailable::Quarantined(q) => write!(
                f,
                "browser session {}{} is quarantined: target `{}` is in_doubt{}; resolve it to free the session",
                q.session,
                q.account
                    .as_ref()
                    .map(|a| format!(" (account `{a}`)"))
                    .unwrap_or_default(),
                q.target,
                q.run_id.map(|r| format!(" (run {r})")).unwrap_or_default()
            ),
            Unavailable::LoggingIn { account } => write!(
                f,
                "account `{account}` is being logged in from the dashboard; its targets wait until that ends"
            ),
        }
    }
}

/// Why [`Registry::wait_for_session`] returned without a session.
#[derive(Debug, Clone)]
pub enum SessionWait {
    /// Runs that could free a session did not within the bound.
    Stuck(Stuck),
    /// No session can be freed by waiting: each is held by a commit in
    /// flight or quarantined.
    Unavailable(Vec<Unavailable>),
}

/// Why [`Registry::register`] said no.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    #[error("target `{target}` already has run {run_id} registered")]
    TargetBusy { target: TargetId, run_id: RunId },
    #[error("browser session {session} is driven by run {run_id}")]
    SessionBusy { session: SessionId, run_id: RunId },
    #[error("browser session {session} is quarantined until target `{target}` is resolved")]
    SessionQuarantined {
        session: SessionId,
        target: TargetId,
    },
    #[error("account `{account}` is in use by run {run_id}")]
    AccountBusy { account: AccountId, run_id: RunId },
    #[error("account `{account}` is being logged in from the dashboard")]
    LoggingIn { account: AccountId },
    #[error("account `{account}` is quarantined until target `{target}` is resolved")]
    AccountQuarantined {
        account: AccountId,
        target: TargetId,
    },
    /// Run ids are never reused (screenshots and history are keyed by
    /// them), so when they run out no run starts.
    #[error(
        "run ids are exhausted (the state's `last_run_id` is at its maximum); no run can start"
    )]
    RunIdsExhausted,
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
    /// Which run holds each account (I10). Claimed after the session and
    /// released before it.
    accounts: DashMap<AccountId, RunId>,
    /// Sessions no run may claim until an operator resolves the target
    /// named (I9). Added by a run's own guard before it deregisters, so a
    /// session goes from held to quarantined with no moment in between.
    quarantine: DashMap<SessionId, Quarantine>,
    /// Accounts a person is logging in (the dashboard's Log in), with the
    /// hold's id in `sessions` and `accounts`: held like a run's (I1,
    /// I10), but no run, so a cycle's wait never waits for a person.
    logins: DashMap<AccountId, RunId>,
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
            accounts: DashMap::new(),
            quarantine: DashMap::new(),
            logins: DashMap::new(),
            changed: Notify::new(),
            version: watch::Sender::new(0),
            completion: tokio::sync::Mutex::new(()),
            next_run: AtomicU64::new(first_run_id.max(1)),
        }
    }

    /// Claims `reg.session`, `reg.account` and `reg.target` for a new run,
    /// or refuses.
    ///
    /// Each claim is one `DashMap::entry` call, so there is no window between
    /// checking and inserting. The session is claimed first, then the
    /// account, then the target; a refusal undoes the claims already made
    /// before returning, and because they are matched by run id the undo
    /// can never release someone else's.
    pub fn register(self: &Arc<Self>, reg: Registration) -> Result<RunGuard, Refusal> {
        let run_id = self.take_run_id()?;
        match self.sessions.entry(reg.session) {
            Entry::Occupied(e) => {
                return Err(Refusal::SessionBusy {
                    session: reg.session,
                    run_id: *e.get(),
                });
            }
            Entry::Vacant(e) => {
                // Only the run holding a session quarantines it, and nobody
                // holds this one: the check cannot race an insertion.
                if let Some(q) = self.quarantine.get(&reg.session) {
                    return Err(Refusal::SessionQuarantined {
                        session: reg.session,
                        target: q.target.clone(),
                    });
                }
                e.insert(run_id);
            }
        }
        let undo_session = || {
            self.sessions.remove_if(&reg.session, |_, r| *r == run_id);
        };
        if let Some(account) = &reg.account {
            match self.accounts.entry(account.clone()) {
                Entry::Occupied(e) => {
                    let holder = *e.get();
                    // Release the shard lock before touching the other map.
                    drop(e);
                    undo_session();
                    return Err(Refusal::AccountBusy {
                        account: account.clone(),
                        run_id: holder,
                    });
                }
                Entry::Vacant(e) => {
                    // As for sessions: only the run holding an account
                    // quarantines it, and nobody holds this one.
                    let quarantined = self
                        .quarantine
                        .iter()
                        .find(|q| q.account.as_ref() == Some(account))
                        .map(|q| q.target.clone());
                    if let Some(target) = quarantined {
                        drop(e);
                        undo_session();
                        return Err(Refusal::AccountQuarantined {
                            account: account.clone(),
                            target,
                        });
                    }
                    e.insert(run_id);
                }
            }
        }
        let control = Arc::new(RunControl {
            registry: Arc::downgrade(self),
            ..RunControl::default()
        });
        match self.runs.entry(reg.target.clone()) {
            Entry::Occupied(e) => {
                let holder = e.get().run_id;
                // Release the shard lock before touching the other maps.
                drop(e);
                if let Some(account) = &reg.account {
                    self.accounts.remove_if(account, |_, r| *r == run_id);
                }
                undo_session();
                return Err(Refusal::TargetBusy {
                    target: reg.target,
                    run_id: holder,
                });
            }
            Entry::Vacant(e) => {
                e.insert(ActiveRun {
                    run_id,
                    session: reg.session,
                    account: reg.account.clone(),
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
            account = reg.account.as_ref().map_or("-", AccountId::as_str),
            flow = %reg.flow,
            "registered"
        );
        Ok(RunGuard {
            registry: self.clone(),
            target: reg.target,
            session: reg.session,
            account: reg.account,
            run_id,
            control,
        })
    }

    /// Holds `account` and its `session` for a person logging it in (the
    /// dashboard's Log in), or refuses as [`register`](Self::register)
    /// would: the session and the account are claimed the same way, in the
    /// same order, so no run can drive either while the person does (I1,
    /// I10), and none is left held: [`LoginHold`] releases both when
    /// dropped. Not a run: cycles do not wait for it, and the account's
    /// targets are skipped with [`Unavailable::LoggingIn`] meanwhile.
    pub fn hold_for_login(
        self: &Arc<Self>,
        session: SessionId,
        account: &AccountId,
    ) -> Result<LoginHold, Refusal> {
        // Only for the message: the claims below are what keep it apart.
        if self.logins.contains_key(account) {
            return Err(Refusal::LoggingIn {
                account: account.clone(),
            });
        }
        let run_id = self.take_run_id()?;
        match self.sessions.entry(session) {
            Entry::Occupied(e) => {
                return Err(Refusal::SessionBusy {
                    session,
                    run_id: *e.get(),
                });
            }
            Entry::Vacant(e) => {
                if let Some(q) = self.quarantine.get(&session) {
                    return Err(Refusal::SessionQuarantined {
                        session,
                        target: q.target.clone(),
                    });
                }
                e.insert(run_id);
            }
        }
        let undo_session = || {
            self.sessions.remove_if(&session, |_, r| *r == run_id);
        };
        match self.accounts.entry(account.clone()) {
            Entry::Occupied(e) => {
                let holder = *e.get();
                drop(e);
                undo_session();
                if self.logins.contains_key(account) {
                    return Err(Refusal::LoggingIn {
                        account: account.clone(),
                    });
                }
                return Err(Refusal::AccountBusy {
                    account: account.clone(),
                    run_id: holder,
                });
            }
            Entry::Vacant(e) => {
                if let Some(q) = self.account_quarantine(account) {
                    drop(e);
                    undo_session();
                    return Err(Refusal::AccountQuarantined {
                        account: account.clone(),
                        target: q.target,
                    });
                }
                e.insert(run_id);
            }
        }
        self.logins.insert(account.clone(), run_id);
        self.bump();
        tracing::info!(account = %account, session = session.0, "account `{account}` held for a login from the dashboard");
        Ok(LoginHold {
            registry: self.clone(),
            session,
            account: account.clone(),
            run_id,
        })
    }

    /// Whether a person is logging `account` in.
    pub fn is_logging_in(&self, account: &AccountId) -> bool {
        self.logins.contains_key(account)
    }

    /// The accounts a person is logging in, by name.
    pub fn logins(&self) -> Vec<AccountId> {
        let mut a: Vec<AccountId> = self.logins.iter().map(|e| e.key().clone()).collect();
        a.sort();
        a
    }

    /// Whether no run is registered.
    pub fn is_idle(&self) -> bool {
        self.runs.is_empty() && self.sessions.is_empty() && self.accounts.is_empty()
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

    /// Cancels run `run` with `reason`, unless its commit is in flight, in
    /// which case it is held (see [`RunControl::cancel_or_hold`]). The one
    /// way for code outside a run to stop it.
    pub fn cancel(&self, run: RunId, reason: CancelReason) -> Cancel {
        let control = self
            .runs
            .iter()
            .find(|e| e.value().run_id == run)
            .map(|e| e.value().control.clone());
        match control {
            None => Cancel::NotRunning,
            Some(c) if c.cancel_or_hold(reason) => Cancel::Cancelled,
            Some(_) => Cancel::Held,
        }
    }

    /// Copies of every registered run, oldest first.
    pub fn snapshot(&self) -> Vec<RunInfo> {
        // Copy out under each shard's read lock and sort afterwards, so no
        // map reference outlives this call.
        let mut runs: Vec<RunInfo> = self.runs.iter().map(|e| info(e.key(), e.value())).collect();
        runs.sort_by_key(|r| r.run_id);
        runs
    }

    /// The first session of `pool` that no run holds and that is not
    /// quarantined, if the pool's account is free too.
    pub fn free_session(&self, pool: &Pool) -> Option<SessionId> {
        if let Some(a) = &pool.account
            && (self.accounts.contains_key(a) || self.account_quarantine(a).is_some())
        {
            return None;
        }
        pool.sessions
            .iter()
            .copied()
            .find(|s| !self.sessions.contains_key(s) && !self.quarantine.contains_key(s))
    }

    fn account_quarantine(&self, account: &AccountId) -> Option<Quarantine> {
        self.quarantine
            .iter()
            .find(|q| q.account.as_ref() == Some(account))
            .map(|q| q.value().clone())
    }

    /// Quarantines `q.session` (and `q.account`) for `q.target` (I9, I10):
    /// at start-up, for targets the state file holds `in_doubt`. Runs
    /// quarantine their own with [`RunGuard::quarantine`].
    pub fn quarantine(&self, q: Quarantine) {
        self.quarantine.insert(q.session, q);
        self.bump();
    }

    /// Lifts every quarantine `target` holds (an operator resolved or reset
    /// it). Returns the sessions freed.
    pub fn lift_quarantine(&self, target: &str) -> Vec<SessionId> {
        let sessions: Vec<SessionId> = self
            .quarantine
            .iter()
            .filter(|q| q.target.as_str() == target)
            .map(|q| *q.key())
            .collect();
        for s in &sessions {
            self.quarantine
                .remove_if(s, |_, q| q.target.as_str() == target);
        }
        if !sessions.is_empty() {
            self.bump();
        }
        sessions
    }

    /// Every quarantined session, by session.
    pub fn quarantined(&self) -> Vec<Quarantine> {
        let mut q: Vec<Quarantine> = self.quarantine.iter().map(|e| e.value().clone()).collect();
        q.sort_by_key(|q| q.session);
        q
    }

    /// Why no session of `pool` can be had by waiting, or `None` if one is
    /// free or a run that could free one is still going.
    fn unavailable(&self, pool: &Pool) -> Option<Vec<Unavailable>> {
        let mut why = Vec::new();
        if let Some(q) = pool
            .account
            .as_ref()
            .and_then(|a| self.account_quarantine(a))
        {
            return Some(vec![Unavailable::Quarantined(q)]);
        }
        if let Some(a) = &pool.account
            && self.logins.contains_key(a)
        {
            return Some(vec![Unavailable::LoggingIn { account: a.clone() }]);
        }
        if let Some(a) = &pool.account
            && let Some(run_id) = self.accounts.get(a).map(|r| *r)
        {
            // The account is busy in a session outside the pool: only that
            // run can free it.
            return self.held_run(run_id).map(|held| vec![held]);
        }
        for &s in &pool.sessions {
            if let Some(q) = self.quarantine.get(&s) {
                why.push(Unavailable::Quarantined(q.clone()));
                continue;
            }
            // A free session: nothing is unavailable.
            let run_id = self.sessions.get(&s).map(|r| *r)?;
            // A run that is not held will end, or be cancelled or held when
            // the wait runs out: worth waiting for.
            why.push(self.held_run(run_id)?);
        }
        Some(why)
    }

    /// Run `run_id` as [`Unavailable::Held`], if it holds its session for a
    /// commit in flight that a wait already gave up on.
    fn held_run(&self, run_id: RunId) -> Option<Unavailable> {
        self.runs.iter().find(|e| e.run_id == run_id).and_then(|e| {
            match (e.control.commit_in_flight(), e.control.is_held()) {
                (Some(since), true) => Some(Unavailable::Held {
                    session: e.session,
                    run_id,
                    target: e.key().clone(),
                    for_: since.elapsed(),
                }),
                _ => None,
            }
        })
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

    /// Waits until every registered run is gone or held (I3 with its I9
    /// exception), at most `timeout`.
    ///
    /// Returns how long it waited, or the runs still going at the deadline
    /// that are not held; the caller cancels or holds each with
    /// [`RunControl::cancel_or_hold`]. Held runs keep their sessions until
    /// their commit answers or their own `commit_timeout` ends them.
    pub async fn wait_settled(&self, timeout: Duration) -> Result<Duration, Stuck> {
        let start = Instant::now();
        let settled = |r: &Registry| r.runs.iter().all(|e| e.control.is_held());
        if self.wait_until(timeout, settled).await {
            Ok(start.elapsed())
        } else {
            Err(Stuck {
                runs: self.snapshot().into_iter().filter(|r| !r.held).collect(),
                waited: start.elapsed(),
            })
        }
    }

    /// Waits until a session of `pool` (and its account) is free, at most
    /// `timeout`.
    ///
    /// Returns at once with [`SessionWait::Unavailable`] when waiting cannot
    /// help: every session is quarantined or held (I9), or the account is.
    pub async fn wait_for_session(
        &self,
        pool: &Pool,
        timeout: Duration,
    ) -> Result<SessionId, SessionWait> {
        let start = Instant::now();
        self.wait_until(timeout, |r| {
            r.free_session(pool).is_some() || r.unavailable(pool).is_some()
        })
        .await;
        if let Some(s) = self.free_session(pool) {
            return Ok(s);
        }
        if let Some(why) = self.unavailable(pool) {
            return Err(SessionWait::Unavailable(why));
        }
        Err(SessionWait::Stuck(Stuck {
            runs: self
                .snapshot()
                .into_iter()
                .filter(|r| {
                    !r.held
                        && (pool.sessions.contains(&r.session)
                            || (r.account.is_some() && r.account == pool.account))
                })
                .collect(),
            waited: start.elapsed(),
        }))
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

    /// A run id never handed out before. Never wraps: a reused id would
    /// overwrite an older run's screenshots and confuse its history.
    /// `u64::MAX` itself is never handed out, so the counter can always
    /// hold "exhausted".
    fn take_run_id(&self) -> Result<RunId, Refusal> {
        self.next_run
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < u64::MAX - 1).then_some(n + 1)
            })
            .map(RunId)
            .map_err(|_| Refusal::RunIdsExhausted)
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
        account: run.account.clone(),
        flow: run.flow.clone(),
        started: run.started,
        started_at: run.started_at,
        elapsed_ms: run.started.elapsed().as_millis() as u64,
        status: run.status,
        step: run.control.step(),
        committed: run.control.committed(),
        commit_in_flight_ms: run
            .control
            .commit_in_flight()
            .map(|since| since.elapsed().as_millis() as u64),
        versions: run.versions.clone(),
        held: run.control.is_held(),
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
    account: Option<AccountId>,
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

    pub fn account(&self) -> Option<&AccountId> {
        self.account.as_ref()
    }

    pub fn control(&self) -> &Arc<RunControl> {
        &self.control
    }

    /// Quarantines this run's session and account for its target (I9,
    /// I10), before the guard deregisters: they go from held to quarantined
    /// with no moment at which another run could claim them.
    pub fn quarantine(&self) {
        self.registry.quarantine(Quarantine {
            session: self.session,
            account: self.account.clone(),
            target: self.target.clone(),
            run_id: Some(self.run_id),
        });
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

/// An account and its session held for a person logging it in
/// ([`Registry::hold_for_login`]); dropping it frees both, account first,
/// as a run's guard does.
#[derive(Debug)]
pub struct LoginHold {
    registry: Arc<Registry>,
    session: SessionId,
    account: AccountId,
    run_id: RunId,
}

impl LoginHold {
    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn account(&self) -> &AccountId {
        &self.account
    }
}

impl Drop for LoginHold {
    fn drop(&mut self) {
        let (r, run_id) = (&self.registry, self.run_id);
        r.logins.remove_if(&self.account, |_, h| *h == run_id);
        r.accounts.remove_if(&self.account, |_, h| *h == run_id);
        r.sessions.remove_if(&self.session, |_, h| *h == run_id);
        r.bump();
        tracing::info!(account = %self.account, "account `{}` released by its login", self.account);
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
        if let Some(account) = &self.account {
            self.registry
                .accounts
                .remove_if(account, |_, r| *r == run_id);
        }
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
            account: None,
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
        assert_eq!(r.free_session(&Pool::guests(2)), Some(SessionId(1)));
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

    /// Hardening: a maxed `last_run_id` used to wrap to run 1 and
    /// overwrite its screenshots.
    #[test]
    fn run_ids_never_wrap() {
        let r = Arc::new(Registry::new(u64::MAX - 2));
        let last = r.register(reg("a", 0)).unwrap();
        assert_eq!(last.run_id(), RunId(u64::MAX - 2));
        drop(last);
        assert_eq!(
            r.register(reg("a", 0)).unwrap_err(),
            Refusal::RunIdsExhausted
        );
        assert!(r.is_idle(), "the refused attempt claimed nothing");
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

    fn on_account(target: &str, session: u32, account: &str) -> Registration {
        Registration {
            account: Some(AccountId::new(account)),
            ..reg(target, session)
        }
    }

    /// A person logging an account in holds it like a run (I10): no run
    /// on the account starts, the account's targets are told why at once
    /// (no cycle waits for a person), other accounts and guests go on, and
    /// dropping the hold frees both.
    #[tokio::test(start_paused = true)]
    async fn a_login_holds_its_account_and_session_until_it_ends() {
        let r = Arc::new(Registry::default());
        let ada = AccountId::new("ada");
        let hold = r.hold_for_login(SessionId(7), &ada).unwrap();
        assert_eq!(r.logins(), vec![ada.clone()]);
        assert_eq!(
            r.hold_for_login(SessionId(7), &ada).unwrap_err(),
            Refusal::LoggingIn {
                account: ada.clone()
            }
        );
        assert!(matches!(
            r.register(on_account("t", 7, "ada")).unwrap_err(),
            Refusal::SessionBusy { .. }
        ));
        assert!(matches!(
            r.register(on_account("t", 8, "ada")).unwrap_err(),
            Refusal::AccountBusy { .. }
        ));
        let pool = Pool {
            sessions: vec![SessionId(7)],
            account: Some(ada.clone()),
        };
        let started = Instant::now();
        match r.wait_for_session(&pool, Duration::from_secs(60)).await {
            Err(SessionWait::Unavailable(why)) => {
                assert_eq!(
                    why,
                    vec![Unavailable::LoggingIn {
                        account: ada.clone()
                    }]
                );
            }
            other => panic!("expected LoggingIn, got {other:?}"),
        }
        assert_eq!(started.elapsed(), Duration::ZERO, "no wait for a person");
        // A cycle's wait for runs does not wait for a login either.
        assert!(r.wait_settled(Duration::ZERO).await.is_ok());
        let guest = r.register(reg("g", 0)).unwrap();
        drop(guest);

        drop(hold);
        assert!(r.is_idle());
        assert!(r.logins().is_empty());
        assert!(r.register(on_account("t", 7, "ada")).is_ok());
    }

    /// A login is refused while a run holds the account, or while the
    /// account is quarantined, and the refusal claims nothing.
    #[test]
    fn a_login_waits_for_the_run_on_its_account() {
        let r = Arc::new(Registry::default());
        let ada = AccountId::new("ada");
        let run = r.register(on_account("t", 7, "ada")).unwrap();
        assert_eq!(
            r.hold_for_login(SessionId(8), &ada).unwrap_err(),
            Refusal::AccountBusy {
                account: ada.clone(),
                run_id: run.run_id()
            }
        );
        assert!(r.free_session(&Pool::guests(9)).is_some());
        assert_eq!(r.sessions.len(), 1, "the refused login released session 8");
        run.quarantine();
        drop(run);
        assert!(matches!(
            r.hold_for_login(SessionId(9), &ada).unwrap_err(),
            Refusal::AccountQuarantined { .. }
        ));
        assert!(r.sessions.is_empty() && r.accounts.is_empty());
    }
}
