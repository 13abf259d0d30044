//! The cycle loop: tick, wait for the previous cycle's runs, reset (test
//! mode), monitor, dispatch. It wires the safety core (registry, state) to
//! the browser and the step runner, and it is the only part that starts
//! runs.
//!
//! One cycle (design section 4):
//!
//! 1. Tick. The interval is drawn from the configured range and counted from
//!    the start of the previous cycle; ticks missed while a cycle overran are
//!    coalesced into one.
//! 2. Wait until the registry is idle, at most `wait_for_active` (I3). The
//!    wait is woken by deregistration, never by polling. On expiry each stuck
//!    run is cancelled, and the cycle goes on only once its guard has
//!    dropped; if that cannot be confirmed the cycle dispatches nothing.
//!    The exception is I9: a run whose commit is in flight is neither waited
//!    for nor cancelled. It keeps its browser session (closing its page
//!    would not stop the shop's request) until its commit answers or its own
//!    `commit_timeout` ends it; the cycle goes on for the other sessions, and
//!    a session whose run ended `in_doubt` stays quarantined until an
//!    operator resolves the target.
//! 3. Test mode: completed targets go back to `ready`.
//! 4. Monitor: a script per target decides whether it runs this cycle.
//! 5. Dispatch: each selected target in turn waits for a free browser
//!    session, is checked against the registry and the persisted state under
//!    the completion lock, registered, persisted as `attempting`, and spawned.
//!
//! Commands (pause, resume, run now, reset, resolve) arrive on a channel from
//! the dashboard and the CLI; they go through the same locks as dispatch.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::account::Account;
use crate::config::Config;
use crate::id::{AccountId, RunId, TargetId};
use crate::parts::Parts;
use crate::registry::{
    Cancel, CancelReason, Pool, Quarantine, Registration, RunInfo, SessionWait, Stuck,
};
use crate::run::{self, CANCEL_GRACE, RunDeps};
use crate::state::{OperatorChange, RunMove, RunRecord, Status};

/// What the scheduler is doing, for observers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Sleeping,
    Paused,
    Waiting,
    Monitoring,
    Dispatching,
    ShuttingDown,
    Stopped,
}

/// A run a cycle is waiting for.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingFor {
    pub run_id: crate::id::RunId,
    pub target: TargetId,
    pub status: crate::registry::RunStatus,
    pub step: Option<String>,
}

/// The scheduler's published status.
#[derive(Clone, Debug, Serialize)]
pub struct SchedulerStatus {
    pub cycle: u64,
    pub phase: Phase,
    pub paused: bool,
    pub test_mode: bool,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub next_cycle_at: Option<SystemTime>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub wait_started_at: Option<SystemTime>,
    pub waiting_for: Vec<WaitingFor>,
    pub last_wait_ms: Option<u64>,
    /// Accounts whose login failed: their targets wait for a new config.
    pub logged_out: Vec<LoggedOutAccount>,
    /// Targets the last cycle skipped by their schedule, and when each is
    /// next due.
    pub not_due: Vec<NotDue>,
}

/// A target skipped by its schedule, as the dashboard shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct NotDue {
    pub target: TargetId,
    /// `next at 09:58:00 Europe/London`, `outside its windows; next at ...`.
    pub why: String,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub next_at: Option<SystemTime>,
}

/// An account held after a failed login, as the dashboard shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoggedOutAccount {
    pub account: AccountId,
    pub why: String,
}

impl Default for SchedulerStatus {
    fn default() -> Self {
        SchedulerStatus {
            cycle: 0,
            phase: Phase::Starting,
            paused: false,
            test_mode: false,
            next_cycle_at: None,
            wait_started_at: None,
            waiting_for: Vec::new(),
            logged_out: Vec::new(),
            not_due: Vec::new(),
            last_wait_ms: None,
        }
    }
}

/// An operator command. Each carries a channel for its answer.
#[derive(Debug)]
pub enum Command {
    Pause(oneshot::Sender<()>),
    Resume(oneshot::Sender<()>),
    /// Start a cycle now (it still waits for the previous one).
    RunNow(oneshot::Sender<()>),
    /// Put a target back to `ready`.
    Reset(TargetId, oneshot::Sender<Result<(), CommandError>>),
    /// Settle an `in_doubt` target as `completed` or `ready`.
    Resolve(TargetId, Status, oneshot::Sender<Result<(), CommandError>>),
    /// Hold an account for a person logging it in (the dashboard's Log
    /// in): between cycles, never under a run (I10).
    Login(
        crate::id::AccountId,
        oneshot::Sender<Result<crate::login::Held, crate::login::LoginRefused>>,
    ),
}

/// Why an operator's change to a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("unknown target `{0}`")]
    Unknown(TargetId),
    #[error("target `{target}` has run {run} in progress; try again when it ends")]
    Live { target: TargetId, run: RunId },
    /// Refused by the operator policy (a resolve of a target that is not
    /// `in_doubt`), or not saved.
    #[error(transparent)]
    Refused(#[from] crate::state::OperatorError),
    #[error(
        "saved here, but the cluster's marker for `{target}` was not updated ({refusal}); try again when Redis answers"
    )]
    Cluster {
        target: TargetId,
        refusal: crate::cluster::Refusal,
    },
}

/// Everything the scheduler runs with.
pub struct Scheduler {
    /// The running baton's parts, shared with its runs and the dashboard.
    pub parts: Arc<Parts>,
    pub shutdown: CancellationToken,
    pub commands: mpsc::Receiver<Command>,
    pub status: watch::Sender<SchedulerStatus>,
    /// Stop after this many cycles (and their runs).
    pub cycles: Option<u64>,
    /// Seed for the interval jitter; tests fix it.
    pub seed: u64,
}

/// How a scheduler ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub cycles: u64,
    pub runs: u64,
}

/// Why the scheduler woke from its sleep.
enum Wake {
    Tick,
    Shutdown,
}

struct Loop {
    s: Scheduler,
    /// The config the holds were made under.
    held_under: Option<Arc<Config>>,
    rng: StdRng,
    runs: JoinSet<RunRecord>,
    finished_runs: u64,
    paused: bool,
    cycle: u64,
    /// Each monitored target's last answer, to tell a restock (skip, then
    /// run) from a target that stays in stock.
    in_stock: std::collections::HashMap<crate::id::TargetId, bool>,
    /// When each target is next due by its schedule.
    due: std::collections::HashMap<TargetId, Instant>,
    /// This cycle's next tick by `cycle.interval`: when a target on the
    /// cycle's own interval is next due.
    cycle_next: Instant,
    /// Targets skipped by their schedule this cycle.
    not_due: Vec<NotDue>,
    /// This cycle was asked for by an operator (`Run now`): schedules are
    /// not consulted in it.
    forced: bool,
    /// Ends every login from the dashboard: cancelled when the scheduler
    /// finishes, on a signal or after the last of `--cycles N`, so no open
    /// login keeps a stopping baton waiting.
    logins: CancellationToken,
}

impl Scheduler {
    /// Runs cycles until shutdown or the cycle limit, then waits for the last
    /// runs (within `wait_for_active`, cancelling them after it) and shuts
    /// the browser down.
    pub async fn run(self) -> Summary {
        let rng = StdRng::seed_from_u64(self.seed);
        let mut l = Loop {
            s: self,
            held_under: None,
            rng,
            runs: JoinSet::new(),
            finished_runs: 0,
            paused: false,
            cycle: 0,
            in_stock: std::collections::HashMap::new(),
            due: std::collections::HashMap::new(),
            cycle_next: Instant::now(),
            not_due: Vec::new(),
            forced: false,
            logins: CancellationToken::new(),
        };
        l.run().await
    }
}

impl Loop {
    async fn run(&mut self) -> Summary {
        self.restore_quarantines();
        self.s.parts.leases.start(self.s.parts.state.clone());
        let mut next_tick = Instant::now();
        loop {
            if let Wake::Shutdown = self.sleep_until(next_tick).await {
                break;
            }
            let cfg = self.s.parts.config.load_full();
            if self
                .held_under
                .as_ref()
                .is_some_and(|c| !Arc::ptr_eq(c, &cfg))
            {
                for a in self.s.parts.logged_out.clear() {
                    tracing::info!(account = %a, "flows.yaml changed: account `{a}` may try to log in again");
                }
            }
            self.held_under = Some(cfg.clone());
            self.publish_logged_out();
            let cycle_start = Instant::now();
            self.cycle_next = cycle_start + self.draw_interval(cfg.cycle.interval);
            self.cycle += 1;
            self.s.parts.metrics.cycle_started();
            tracing::info!(cycle = self.cycle, "cycle started");
            self.cycle_once(&cfg).await;
            self.reap();
            if self.s.shutdown.is_cancelled() {
                break;
            }
            if self.s.cycles.is_some_and(|n| self.cycle >= n) {
                tracing::info!(cycles = self.cycle, "cycle limit reached");
                break;
            }
            next_tick = self.next_tick(&cfg);
            let wait = next_tick.saturating_duration_since(Instant::now());
            self.publish(|st| {
                st.next_cycle_at = Some(SystemTime::now() + wait);
            });
        }
        self.finish().await
    }

    /// Sleeps until `at`, serving commands meanwhile. A paused scheduler
    /// sleeps until resumed; ticks missed meanwhile coalesce into one.
    async fn sleep_until(&mut self, at: Instant) -> Wake {
        loop {
            let phase = if self.paused {
                Phase::Paused
            } else {
                Phase::Sleeping
            };
            self.publish(|st| st.phase = phase);
            let tick = async {
                if self.paused {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep_until(at).await;
                }
            };
            tokio::select! {
                biased;
                () = self.s.shutdown.cancelled() => return Wake::Shutdown,
                cmd = self.s.commands.recv() => match cmd {
                    Some(Command::RunNow(reply)) => {
                        let _ = reply.send(());
                        if !self.paused {
                            tracing::info!("cycle requested by an operator");
                            // An operator's cycle considers every target,
                            // whatever its schedule says.
                            self.forced = true;
                            return Wake::Tick;
                        }
                    }
                    Some(cmd) => self.command(cmd).await,
                    // Nobody can send commands any more; keep ticking.
                    None => {
                        tokio::select! {
                            () = self.s.shutdown.cancelled() => return Wake::Shutdown,
                            () = tokio::time::sleep_until(at), if !self.paused => return Wake::Tick,
                        }
                    }
                },
                () = tick => return Wake::Tick,
            }
        }
    }

    /// I9 across a restart: a target left `in_doubt` keeps the browser
    /// session its run used quarantined until an operator resolves it. The
    /// shop may still place the order from that session's cart.
    fn restore_quarantines(&self) {
        for (id, t) in self.s.parts.state.snapshot().targets {
            if t.status != Status::InDoubt {
                continue;
            }
            if let Some(session) = t.session {
                tracing::warn!(
                    target = %id,
                    session = session.0,
                    account = t.account.as_ref().map_or("-", AccountId::as_str),
                    "browser session {session} stays quarantined: target `{id}` is in_doubt; resolve it with `baton state resolve {id}`"
                );
                self.s.parts.registry.quarantine(Quarantine {
                    session,
                    account: t.account.clone(),
                    target: id,
                    run_id: t.run_id,
                });
            } else {
                tracing::warn!(
                    target = %id,
                    "target `{id}` is in_doubt (its session is not recorded, so none is quarantined); resolve it with `baton state resolve {id}`"
                );
            }
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Pause(reply) => {
                self.paused = true;
                tracing::info!("cycles paused by an operator");
                self.publish(|st| st.paused = true);
                let _ = reply.send(());
            }
            Command::Resume(reply) => {
                self.paused = false;
                tracing::info!("cycles resumed by an operator");
                self.publish(|st| st.paused = false);
                let _ = reply.send(());
            }
            Command::RunNow(reply) => {
                let _ = reply.send(());
            }
            Command::Reset(target, reply) => {
                let r = self.operator_change(&target, OperatorChange::Reset).await;
                let _ = reply.send(r);
            }
            Command::Resolve(target, to, reply) => {
                let r = self
                    .operator_change(&target, OperatorChange::Resolve(to))
                    .await;
                let _ = reply.send(r);
            }
            Command::Login(account, reply) => {
                let cfg = self.s.parts.config.load_full();
                let stop = self.logins.child_token();
                let held = crate::login::Held::take(&self.s.parts, cfg, &account, stop).await;
                let _ = reply.send(held);
            }
        }
    }

    /// Applies an operator's change ([`StateStore::operator_change`]) under
    /// the completion lock and never while the target has a live run; a
    /// settled target's quarantined session is released.
    async fn operator_change(
        &self,
        target: &TargetId,
        change: OperatorChange,
    ) -> Result<(), CommandError> {
        let cfg = self.s.parts.config.load();
        let known = cfg.target(target.as_str()).is_some()
            || self
                .s
                .parts
                .state
                .snapshot()
                .targets
                .contains_key(target.as_str());
        if !known {
            return Err(CommandError::Unknown(target.clone()));
        }
        let _lock = self.s.parts.registry.completion_lock().await;
        if let Some(run) = self.s.parts.registry.get(target.as_str()) {
            return Err(CommandError::Live {
                target: target.clone(),
                run: run.run_id,
            });
        }
        let t = target.clone();
        let saved = self
            .s
            .parts
            .state
            .blocking(move |state| state.operator_change(&t, change))
            .await;
        match saved {
            Ok(was) => {
                let now = self.s.parts.state.get(target.as_str()).status;
                tracing::info!(target = %target, from = %was, to = %now, "target status set by an operator");
                // The operator has settled the target: whatever its run may
                // have left in flight on the shop is accounted for.
                for session in self.s.parts.registry.lift_quarantine(target.as_str()) {
                    tracing::info!(target = %target, session = session.0, "browser session {session} released from quarantine");
                }
                if let Err(e) = self
                    .s
                    .parts
                    .leases
                    .settled(target, now == Status::Completed)
                    .await
                {
                    return Err(CommandError::Cluster {
                        target: target.clone(),
                        refusal: e,
                    });
                }
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// When the next cycle starts: at the cycle's own interval, or sooner
    /// when a target's schedule is due sooner (a drop, a short interval, a
    /// window opening). Only times still ahead count, so a stale one (a
    /// target held `in_doubt`) never makes the loop spin.
    fn next_tick(&self, cfg: &Config) -> Instant {
        let now = Instant::now();
        cfg.targets
            .iter()
            .filter_map(|t| self.due.get(&t.id))
            .filter(|d| **d > now)
            .fold(self.cycle_next, |a, d| a.min(*d))
    }

    /// Whether `t` is considered this cycle by its schedule; if so, when it
    /// is next due. A skipped target is listed with why and when.
    fn is_due(&mut self, t: &crate::flow::Target) -> bool {
        let clock = self.s.parts.clock;
        let now = Instant::now();
        let wall = clock.wall(now);
        let s = &t.schedule;
        if s.paused && !self.forced {
            self.skip(t, "paused".to_owned(), None);
            return false;
        }
        if !self.forced && !s.open(wall) {
            let next = s.next_open(wall);
            if let Some(at) = next {
                self.due.insert(t.id.clone(), clock.instant(at));
            }
            let why = match next {
                Some(at) => format!(
                    "outside its windows; next at {}",
                    crate::schedule::show(at, wall, s.zone())
                ),
                None => "outside its windows, and none opens again".to_owned(),
            };
            self.skip(t, why, next);
            return false;
        }
        if let Some(due) = self.due.get(&t.id).copied()
            && due > now
            && !self.forced
        {
            let at = clock.wall(due);
            let why = format!("next at {}", crate::schedule::show(at, wall, s.zone()));
            self.skip(t, why, Some(at));
            return false;
        }
        let mut next = match s.interval(wall) {
            None => self.cycle_next,
            Some(range) => now + self.draw_interval(range),
        };
        if let Some(drop) = s.next_drop(wall) {
            next = next.min(clock.instant(drop));
        }
        self.due.insert(t.id.clone(), next);
        true
    }

    fn skip(&mut self, t: &crate::flow::Target, why: String, at: Option<jiff::Timestamp>) {
        tracing::debug!(target = %t.id, "target `{}` not due: {why}", t.id);
        self.not_due.push(NotDue {
            target: t.id.clone(),
            why,
            next_at: at.and_then(|t| SystemTime::try_from(t).ok()),
        });
    }

    fn draw_interval(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        if lo >= hi {
            return lo;
        }
        let ms = self
            .rng
            .random_range(lo.as_millis() as u64..=hi.as_millis() as u64);
        Duration::from_millis(ms)
    }

    async fn cycle_once(&mut self, cfg: &Arc<Config>) {
        let n = self.cycle;
        // The cycle number and its first phase change together, so an
        // observer never sees the new cycle still "sleeping".
        self.publish(|st| {
            st.cycle = n;
            st.phase = Phase::Waiting;
            st.test_mode = cfg.test_mode;
            st.next_cycle_at = None;
        });

        // 2. The bounded, event-driven wait for the previous cycle (I3).
        if !self.wait_for_previous(cfg).await {
            tracing::error!(
                "the previous cycle's runs could not be confirmed gone; this cycle dispatches nothing"
            );
            return;
        }
        if self.s.shutdown.is_cancelled() {
            return;
        }
        // What operators asked during the wait acts before this cycle
        // dispatches: a Log in pressed while the account's run went on
        // gets the account now, not after yet another run; a Pause
        // dispatches nothing; a Run now is this cycle.
        while let Ok(cmd) = self.s.commands.try_recv() {
            match cmd {
                Command::RunNow(reply) => {
                    let _ = reply.send(());
                    self.forced = !self.paused;
                }
                cmd => self.command(cmd).await,
            }
        }
        if self.paused {
            return;
        }

        // A final write that failed (a full disk) left a target looking
        // live with no run: repair it now that nothing runs.
        self.repair_orphans().await;

        // 3. Test mode.
        if cfg.test_mode {
            self.reset_completed(cfg).await;
        }

        // 4. Monitor.
        self.publish(|st| st.phase = Phase::Monitoring);
        let selected = self.monitor(cfg).await;

        // 5. Dispatch.
        self.publish(|st| st.phase = Phase::Dispatching);
        for target in selected {
            if self.s.shutdown.is_cancelled() {
                break;
            }
            if !self.dispatch(cfg, &target).await {
                break;
            }
            self.reap();
        }
    }

    /// Waits until every run is gone or held (I9: past its commit point when
    /// an earlier wait ran out).
    /// Returns false if a stuck run could not be confirmed gone (the cycle
    /// must then not dispatch).
    async fn wait_for_previous(&mut self, cfg: &Config) -> bool {
        let started = Instant::now();
        let all = self.s.parts.registry.snapshot();
        for r in all.iter().filter(|r| r.held) {
            tracing::info!(
                run = %r.run_id,
                target = %r.target,
                session = r.session.0,
                "run {} keeps browser session {} while its commit is in flight ({}); the cycle goes on for other sessions",
                r.run_id,
                r.session,
                crate::time::short(Duration::from_millis(r.commit_in_flight_ms.unwrap_or(0)))
            );
        }
        let active: Vec<RunInfo> = all.into_iter().filter(|r| !r.held).collect();
        if active.is_empty() {
            self.s.parts.metrics.waited(Duration::ZERO, false);
            self.publish(|st| st.last_wait_ms = Some(0));
            return true;
        }
        self.publish(|st| {
            st.phase = Phase::Waiting;
            st.wait_started_at = Some(SystemTime::now());
            st.waiting_for = waiting_for(&active);
        });
        for r in &active {
            tracing::info!(
                run = %r.run_id,
                target = %r.target,
                elapsed = %crate::time::short(r.elapsed()),
                status = %r.status,
                step = r.step.as_deref().unwrap_or("-"),
                "waiting for run {} ({}, {})",
                r.run_id,
                crate::time::short(r.elapsed()),
                r.status
            );
        }
        let result = self.wait_settled_logged(cfg.cycle.wait_for_active).await;
        let ok = match result {
            Ok(waited) => {
                tracing::info!(
                    waited_ms = waited.as_millis() as u64,
                    "wait finished after {}ms",
                    waited.as_millis()
                );
                self.s.parts.metrics.waited(waited, false);
                true
            }
            Err(stuck) => {
                self.s.parts.metrics.waited(stuck.waited, true);
                self.cancel_stuck(cfg, stuck).await
            }
        };
        let waited = started.elapsed();
        self.publish(|st| {
            st.wait_started_at = None;
            st.waiting_for.clear();
            st.last_wait_ms = Some(waited.as_millis() as u64);
        });
        ok
    }

    /// `Registry::wait_settled`, with a "still waiting" line every 10 s so a
    /// long wait is visible in the log.
    async fn wait_settled_logged(&self, bound: Duration) -> Result<Duration, Stuck> {
        const EVERY: Duration = Duration::from_secs(10);
        let start = Instant::now();
        loop {
            let left = bound.saturating_sub(start.elapsed());
            match self.s.parts.registry.wait_settled(left.min(EVERY)).await {
                Ok(_) => return Ok(start.elapsed()),
                Err(stuck) if left <= EVERY => {
                    return Err(Stuck {
                        waited: start.elapsed(),
                        ..stuck
                    });
                }
                Err(stuck) => {
                    self.publish(|st| st.waiting_for = waiting_for(&stuck.runs));
                    for r in &stuck.runs {
                        tracing::info!(
                            run = %r.run_id,
                            target = %r.target,
                            "still waiting for run {} ({}, {})",
                            r.run_id,
                            crate::time::short(r.elapsed()),
                            r.status
                        );
                    }
                }
            }
        }
    }

    /// Cancels runs a bounded wait gave up on and waits for each guard to
    /// drop. Returns whether all are confirmed gone. A run past its commit
    /// point is held instead of cancelled (I9).
    async fn cancel_stuck(&mut self, cfg: &Config, stuck: Stuck) -> bool {
        let mut cancelled = Vec::new();
        for r in stuck.runs {
            let done = self
                .s
                .parts
                .registry
                .cancel(r.run_id, CancelReason::WaitTimeout);
            if done == Cancel::NotRunning {
                continue;
            }
            if done == Cancel::Held {
                // Cancelling would close the page, not the shop's request:
                // the run keeps its session until its commit answers or its
                // commit_timeout ends it.
                tracing::warn!(
                    run = %r.run_id,
                    target = %r.target,
                    session = r.session.0,
                    "wait timed out after {}: run {} is past its commit point, so it is not cancelled; it keeps browser session {} until the shop answers (at most commit_timeout, {}); the cycle goes on for other sessions",
                    crate::time::short(stuck.waited),
                    r.run_id,
                    r.session,
                    crate::time::short(cfg.cycle.commit_timeout)
                );
                continue;
            }
            tracing::warn!(
                run = %r.run_id,
                target = %r.target,
                status = %r.status,
                step = r.step.as_deref().unwrap_or("-"),
                committed = r.committed,
                "wait timed out after {}: cancelling run {} ({}, {})",
                crate::time::short(stuck.waited),
                r.run_id,
                crate::time::short(r.elapsed()),
                r.status
            );
            cancelled.push(r);
        }
        // A cancelled run closes its page, gives its step a grace period,
        // runs its cleanup steps (each bounded by step_timeout) and
        // completes. Allow for all of that before escalating.
        let bound = cancel_bound(cfg);
        let mut all_gone = true;
        for r in &cancelled {
            if self.s.parts.registry.wait_gone(r.run_id, bound).await {
                tracing::info!(run = %r.run_id, target = %r.target, "cancelled run {} is gone", r.run_id);
                continue;
            }
            tracing::error!(
                run = %r.run_id,
                target = %r.target,
                "run {} did not deregister within {} of cancellation; restarting the browser",
                r.run_id,
                crate::time::short(bound)
            );
            // Not counted here: the browser counts its own relaunch, and
            // counting the kill too made one restart count twice.
            self.s.parts.browser.kill().await;
            if !self.s.parts.registry.wait_gone(r.run_id, bound).await {
                all_gone = false;
            }
        }
        self.reap();
        all_gone
    }

    /// Never `attempting` without a live run: a target whose final state
    /// could not be saved (ENOSPC, EMFILE) is repaired as at start-up once a
    /// write works again; until then each cycle tries anew.
    async fn repair_orphans(&self) {
        let _lock = self.s.parts.registry.completion_lock().await;
        let registry = self.s.parts.registry.clone();
        let repaired = self
            .s
            .parts
            .state
            .blocking(move |state| state.repair_orphans(|id| registry.is_registered(id.as_str())))
            .await;
        match repaired {
            Ok(r) => {
                for id in r.failed.iter().chain(&r.completed) {
                    let t = self.s.parts.state.get(id.as_str());
                    tracing::warn!(target = %id, status = %t.status, "target repaired: its final state had not been saved");
                }
                for id in &r.in_doubt {
                    let t = self.s.parts.state.get(id.as_str());
                    tracing::warn!(target = %id, "target repaired as in_doubt: its final state had not been saved");
                    if let Some(session) = t.session {
                        self.s.parts.registry.quarantine(Quarantine {
                            session,
                            account: t.account.clone(),
                            target: id.clone(),
                            run_id: t.run_id,
                        });
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot repair targets whose final state was not saved; trying again next cycle");
            }
        }
    }

    /// Test mode: completed targets go back to `ready`.
    async fn reset_completed(&mut self, cfg: &Config) {
        let _lock = self.s.parts.registry.completion_lock().await;
        let doc = self.s.parts.state.snapshot();
        let ids: Vec<TargetId> = cfg
            .targets
            .iter()
            .filter(|t| {
                doc.targets
                    .get(t.id.as_str())
                    .is_some_and(|s| s.status == Status::Completed)
                    && !self.s.parts.registry.is_registered(t.id.as_str())
            })
            .map(|t| t.id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let n = ids.len();
        if let Err(e) = self.s.parts.leases.forget_committed(&ids).await {
            // The targets stay bought for the cluster, and completed here.
            tracing::warn!(error = %e, "test mode reset waits: the cluster's markers cannot be cleared");
            return;
        }
        let saved = self
            .s
            .parts
            .state
            .blocking(move |state| state.reset_to_ready(&ids))
            .await;
        match saved {
            Ok(()) => tracing::info!(targets = n, "test mode: completed targets reset to ready"),
            Err(e) => tracing::error!(error = %e, "test mode reset not saved"),
        }
    }

    /// Runs each runnable target's monitor; returns the targets to run.
    async fn monitor(&mut self, cfg: &Arc<Config>) -> Vec<Arc<crate::flow::Target>> {
        let mut selected = Vec::new();
        self.not_due.clear();
        let doc = self.s.parts.state.snapshot();
        for t in &cfg.targets {
            if self.s.shutdown.is_cancelled() {
                break;
            }
            let status = doc
                .targets
                .get(t.id.as_str())
                .map(|s| s.status)
                .unwrap_or_default();
            if !status.is_runnable() {
                match status {
                    // Skipped until an operator acts: say so every cycle, or
                    // `--cycles 3` ends with `0 run(s)` and no reason.
                    Status::InDoubt => tracing::info!(
                        target = %t.id,
                        "target `{}` skipped: in_doubt (its last run passed its commit point without an answer; the order may have been placed); check the shop, then `baton state resolve {}`",
                        t.id,
                        t.id
                    ),
                    _ if self.s.parts.registry.is_registered(t.id.as_str()) => tracing::info!(
                        target = %t.id,
                        status = %status,
                        "target `{}` skipped: its run is still going ({status})",
                        t.id
                    ),
                    _ => tracing::debug!(target = %t.id, status = %status, "not runnable"),
                }
                continue;
            }
            if !self.is_due(t) {
                continue;
            }
            let Some(flow) = cfg.flow_of(t) else { continue };
            let Some(script) = &flow.monitor else {
                selected.push(t.clone());
                continue;
            };
            let cancel = self.s.shutdown.child_token();
            let cx = crate::flow::StepContext::monitor(t.clone(), cancel.clone(), cfg.timeouts());
            let check = self.s.parts.steps.monitor(script, cx);
            let bound = cfg.cycle.step_timeout;
            match tokio::time::timeout(bound, check).await {
                Ok(Ok(true)) => {
                    // A flow with no steps (the built-in `watch`) only
                    // watches: its target is never run, only reported.
                    let watch_only = flow.steps.is_empty();
                    if watch_only {
                        tracing::info!(target = %t.id, monitor = %script, "monitor: in stock (watched only: flow `{}` has no steps)", flow.name);
                    } else {
                        tracing::info!(target = %t.id, monitor = %script, "monitor: run");
                    }
                    if self.in_stock.insert(t.id.clone(), true) == Some(false) {
                        let then = if watch_only {
                            "baton only watches it (no steps to buy it with)"
                        } else {
                            "baton is starting a run"
                        };
                        self.s.parts.notifier.emit(
                            crate::notify::Event::new(
                                crate::notify::Kind::Restock,
                                format!("Restock: `{}`", t.id),
                                format!(
                                    "The monitor `{script}` says `{}` can be bought again; {then}.\n{}",
                                    t.id, t.url
                                ),
                            )
                            .with_target(t.id.as_str()),
                        );
                    }
                    if !watch_only {
                        selected.push(t.clone());
                    }
                }
                Ok(Ok(false)) => {
                    self.in_stock.insert(t.id.clone(), false);
                    tracing::info!(target = %t.id, monitor = %script, "monitor: skip");
                }
                Ok(Err(e)) => {
                    tracing::warn!(target = %t.id, monitor = %script, error = %e, "monitor failed; target skipped this cycle");
                }
                Err(_) => {
                    cancel.cancel();
                    tracing::warn!(target = %t.id, monitor = %script, "monitor timed out after {}; target skipped this cycle", crate::time::short(bound));
                }
            }
        }
        self.forced = false;
        let not_due = std::mem::take(&mut self.not_due);
        // A cycle cut short by the stop saw only some targets: the list of
        // the last whole cycle stays.
        if !self.s.shutdown.is_cancelled() {
            self.publish(|st| st.not_due = not_due);
        }
        selected
    }

    /// Starts one run. Returns false when dispatching must stop for this
    /// cycle (shutdown, or no session could be freed).
    async fn dispatch(&mut self, cfg: &Arc<Config>, target: &Arc<crate::flow::Target>) -> bool {
        let Some(flow) = cfg.run_flow(target) else {
            return true;
        };
        // A guest takes any guest session; an account's target only the
        // account's own session, and the account with it (I10).
        let account = cfg.account_of(target).cloned();
        if self.account_held(target, account.as_deref()) {
            return true;
        }
        let sessions = match &account {
            Some(a) => Pool {
                sessions: vec![a.session],
                account: Some(a.id.clone()),
            },
            None => Pool::guests(cfg.cycle.max_concurrent_runs),
        };
        // A free browser session (I1). The wait is bounded and races
        // shutdown; a run that holds its session too long is cancelled like
        // a stuck run at the start of a cycle.
        let session = tokio::select! {
            () = self.s.shutdown.cancelled() => return false,
            r = self.s.parts.registry.wait_for_session(&sessions, cfg.cycle.wait_for_active) => r,
        };
        let session = match session {
            Ok(s) => s,
            Err(SessionWait::Unavailable(why)) => {
                // I9: waiting cannot free a session held by a commit in
                // flight or quarantined; this target waits for a later
                // cycle, and says why.
                let why: Vec<String> = why.iter().map(ToString::to_string).collect();
                tracing::info!(
                    target = %target.id,
                    "target `{}` skipped this cycle: {}",
                    target.id,
                    why.join("; ")
                );
                return true;
            }
            Err(SessionWait::Stuck(stuck)) => {
                if !self.cancel_stuck(cfg, stuck).await {
                    return false;
                }
                if let Some(s) = self.s.parts.registry.free_session(&sessions) {
                    s
                } else {
                    tracing::info!(target = %target.id, "target `{}` skipped this cycle: no browser session is free", target.id);
                    return true;
                }
            }
        };

        let pinned = match self.s.parts.steps.pin(&flow) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(target = %target.id, flow = %flow.name, error = %e, "cannot start run: flow not loaded");
                return true;
            }
        };

        // With several instances: the target's and the account's leases,
        // claimed in one step on the shared store (I10 across instances).
        let claim = match self
            .s
            .parts
            .leases
            .claim(&target.id, sessions.account.as_ref())
            .await
        {
            Ok(claim) => Arc::new(claim),
            Err(refusal) if refusal.stops_dispatch() => {
                tracing::warn!(target = %target.id, "dispatching stops this cycle: {refusal}");
                return false;
            }
            Err(refusal) => {
                tracing::info!(target = %target.id, "target `{}` skipped this cycle: {refusal}", target.id);
                return true;
            }
        };

        // Check, register and persist `attempting` under the completion
        // lock (I4): a lock holder sees the target registered and
        // attempting, or neither.
        let guard = {
            let _lock = self.s.parts.registry.completion_lock().await;
            let status = self.s.parts.state.get(target.id.as_str()).status;
            if !status.is_runnable() {
                tracing::info!(target = %target.id, status = %status, "not dispatched: status changed");
                return true;
            }
            // Likewise the account: a run on it may have failed its login
            // while this target waited for it (the run holds the account
            // before it deregisters). The same login is not tried again.
            if self.account_held(target, account.as_deref()) {
                return true;
            }
            let guard = match self.s.parts.registry.register(Registration {
                target: target.id.clone(),
                session,
                account: sessions.account.clone(),
                flow: flow.name.clone(),
                versions: pinned.versions(),
            }) {
                Ok(g) => g,
                Err(refusal) => {
                    tracing::warn!(target = %target.id, "not dispatched: {refusal}");
                    return true;
                }
            };
            let (id, run_id) = (target.id.clone(), guard.run_id());
            let account_id = sessions.account.clone();
            let saved = self
                .s
                .parts
                .state
                .blocking(move |state| {
                    state.run_moved(
                        &id,
                        RunMove::Attempting {
                            run: run_id,
                            session,
                            account: account_id.as_ref(),
                        },
                    )
                })
                .await;
            match saved {
                Ok(_) => guard,
                Err(e) => {
                    tracing::error!(target = %target.id, error = %e, "not dispatched: cannot persist `attempting`");
                    return true;
                }
            }
        };
        self.s.parts.metrics.run_started();
        claim.keep_alive(guard.control().clone());
        let deps = RunDeps::new(self.s.parts.clone(), cfg, account.as_deref(), claim);
        self.runs
            .spawn(run::execute(guard, target.clone(), flow, pinned, deps));
        true
    }

    /// Whether `target`'s account is held back (and says so): a person is
    /// logging it in from the dashboard, or its login failed.
    fn account_held(&self, target: &crate::flow::Target, account: Option<&Account>) -> bool {
        let Some(a) = account else {
            return false;
        };
        if self.s.parts.registry.is_logging_in(&a.id) {
            let why = crate::registry::Unavailable::LoggingIn {
                account: a.id.clone(),
            };
            tracing::info!(target = %target.id, "target `{}` skipped this cycle: {why}", target.id);
            return true;
        }
        let Some(why) = self.s.parts.logged_out.why(&a.id) else {
            return false;
        };
        tracing::info!(
            target = %target.id,
            "target `{}` skipped: {why}. Its account is not tried again until it is logged in from the dashboard, flows.yaml changes or baton restarts",
            target.id
        );
        true
    }

    /// Shows the accounts held after a failed login.
    /// Called on every reap: observers are woken only when it changed.
    fn publish_logged_out(&self) {
        let held: Vec<LoggedOutAccount> = self
            .s
            .parts
            .logged_out
            .list()
            .into_iter()
            .map(|(account, why)| LoggedOutAccount { account, why })
            .collect();
        self.s.status.send_if_modified(|st| {
            let changed = st.logged_out != held;
            st.logged_out = held;
            changed
        });
    }

    /// Collects finished run tasks without waiting.
    fn reap(&mut self) {
        self.publish_logged_out();
        while let Some(r) = self.runs.try_join_next() {
            self.finished_runs += 1;
            if let Err(e) = r {
                // execute() catches panics itself; this is a bug report.
                tracing::error!(error = %e, "run task ended abnormally");
            }
        }
    }

    /// Shutdown: dispatch has stopped; wait for the active runs within
    /// `wait_for_active`, cancel what remains, then close the browser.
    async fn finish(&mut self) -> Summary {
        self.logins.cancel();
        let cfg = self.s.parts.config.load_full();
        self.publish(|st| {
            st.phase = Phase::ShuttingDown;
            st.next_cycle_at = None;
        });
        let active = self.s.parts.registry.snapshot();
        if !active.is_empty() {
            for r in &active {
                tracing::info!(run = %r.run_id, target = %r.target, "waiting for run {} to finish before exiting", r.run_id);
            }
            // After the last of `--cycles N` the runs may finish on their
            // own (each is bounded by run_timeout); on a signal they get
            // `wait_for_active`, like a cycle would give them.
            let bound = if self.s.shutdown.is_cancelled() {
                cfg.cycle.wait_for_active
            } else {
                cfg.cycle.run_timeout + cancel_bound(&cfg)
            };
            if let Err(stuck) = self.s.parts.registry.wait_idle(bound).await {
                let mut waits = Vec::new();
                for r in &stuck.runs {
                    let done = self
                        .s
                        .parts
                        .registry
                        .cancel(r.run_id, CancelReason::Shutdown);
                    if done == Cancel::Cancelled {
                        tracing::warn!(run = %r.run_id, target = %r.target, "cancelling run {}: baton is shutting down", r.run_id);
                        waits.push((r.run_id, cancel_bound(&cfg)));
                    } else if done == Cancel::Held {
                        // I9: stopping now would leave the order in doubt;
                        // the run ends by itself within its commit_timeout.
                        tracing::warn!(
                            run = %r.run_id,
                            target = %r.target,
                            "waiting for run {}'s commit to get its answer (at most commit_timeout, {}) before exiting; Ctrl-C again stops now and leaves `{}` in_doubt",
                            r.run_id,
                            crate::time::short(cfg.cycle.commit_timeout),
                            r.target
                        );
                        waits.push((r.run_id, cfg.cycle.commit_timeout + cancel_bound(&cfg)));
                    }
                }
                for (run_id, bound) in waits {
                    if !self.s.parts.registry.wait_gone(run_id, bound).await {
                        tracing::error!(run = %run_id, "run {run_id} did not stop; closing the browser under it");
                    }
                }
            }
        }
        // Every run task has deregistered (or is being torn down with the
        // browser); collect them so none outlives the scheduler.
        self.s.parts.browser.shutdown().await;
        self.s.parts.leases.shutdown().await;
        let drain = async {
            while let Some(r) = self.runs.join_next().await {
                self.finished_runs += 1;
                if let Err(e) = r {
                    tracing::error!(error = %e, "run task ended abnormally");
                }
            }
        };
        if tokio::time::timeout(cancel_bound(&cfg), drain)
            .await
            .is_err()
        {
            self.runs.abort_all();
        }
        self.publish(|st| st.phase = Phase::Stopped);
        tracing::info!(
            cycles = self.cycle,
            runs = self.finished_runs,
            "scheduler stopped"
        );
        Summary {
            cycles: self.cycle,
            runs: self.finished_runs,
        }
    }

    fn publish(&self, f: impl FnOnce(&mut SchedulerStatus)) {
        self.s.status.send_modify(f);
    }
}

/// How long a cancelled run may take to deregister: the grace its step gets,
/// plus its cleanup steps, plus a margin for persisting.
pub fn cancel_bound(cfg: &Config) -> Duration {
    let cleanup_steps = cfg
        .flows
        .values()
        .map(|f| f.steps.iter().filter(|s| s.always).count())
        .max()
        .unwrap_or(0) as u32;
    CANCEL_GRACE + cfg.cycle.step_timeout * cleanup_steps + Duration::from_secs(5)
}

fn waiting_for(runs: &[RunInfo]) -> Vec<WaitingFor> {
    runs.iter()
        .map(|r| WaitingFor {
            run_id: r.run_id,
            target: r.target.clone(),
            status: r.status,
            step: r.step.clone(),
        })
        .collect()
}
