//! One run: a flow's steps against one page, under a [`RunGuard`], ending in
//! the atomic completion step.
//!
//! The run owns three safety duties besides running steps:
//!
//! - Cleanup (`always` steps) runs inside the registered window, so the next
//!   cycle can never collide with cart clearing.
//! - Cancellation closes the page at once (so a script that ignores its
//!   cancellation cannot drive the browser any more), waits a short grace
//!   for the step to stop, and runs cleanup on a fresh page.
//! - I7: a run that entered `commit` and ended without a recorded result
//!   leaves its target `in_doubt`; test `i7_committed_run_without_result_is_in_doubt`.
//! - I9: a run's effects outlive its page. While its commit is in flight
//!   the run is bounded by `commit_timeout` (not by its step or run bound,
//!   and a cycle's wait leaves it alone); the moment the commit answers the
//!   target is persisted `committed` with its order; `always` steps never
//!   run while the commit may still be in flight; and a run that ends
//!   `in_doubt` quarantines its session before it deregisters. Tests
//!   `i9_a_slow_commit_holds_its_session_and_ends_completed`,
//!   `i9_an_unanswered_commit_quarantines_its_session`.
//!
//! Panics anywhere in the steps are caught here and recorded as a failure,
//! so even then the final state is persisted before the guard drops (I4).

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::account::{Account, AccountStore, Check, CheckError, LOGGED_OUT};
use crate::browser::Page;
use crate::cluster::Claim;
use crate::config::Config;
use crate::flow::{
    CommitAnswer, CommitRefused, CommitSink, Flow, OutcomeAction, PinnedFlow, Step, StepContext,
    StepEnd, StepError, StepErrorKind, Target, Timeouts, panic_message,
};
use crate::parts::Parts;
use crate::registry::{CancelReason, RunControl, RunGuard};
use crate::state::{RunMove, RunRecord, StateStore, Status, StepRecord, StepResult};
use crate::sync::lock;
use crate::trace::{Recorder, TraceStore};

/// How long a cancelled step gets to stop after its page was closed, before
/// the run moves on without it.
pub const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// How long opening a page may take, at least (it may launch the browser).
pub const PAGE_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a run needs besides its guard: the baton's parts, and what the
/// configuration it was dispatched under says for it.
#[derive(Clone)]
pub struct RunDeps {
    pub parts: Arc<Parts>,
    pub timeouts: Timeouts,
    pub run_timeout: Duration,
    /// How long a commit may wait for the shop's answer (I9).
    pub commit_timeout: Duration,
    /// Where failure screenshots go.
    pub shots_dir: PathBuf,
    /// Where the run's account session is saved.
    pub accounts: AccountStore,
    /// The origins whose local storage the run's account keeps.
    pub account_origins: Vec<String>,
    /// Where the run's trace is kept (when traces are on).
    pub traces: TraceStore,
    /// The run's leases: checked before its commit, released after its
    /// completion.
    pub claim: Arc<Claim>,
}

impl RunDeps {
    /// What a run of `account` (if any) dispatched under `cfg` needs.
    pub fn new(
        parts: Arc<Parts>,
        cfg: &Config,
        account: Option<&Account>,
        claim: Arc<Claim>,
    ) -> RunDeps {
        RunDeps {
            parts,
            timeouts: cfg.timeouts(),
            run_timeout: cfg.cycle.run_timeout,
            commit_timeout: cfg.cycle.commit_timeout,
            shots_dir: crate::state::shots_dir(&cfg.state_dir),
            accounts: AccountStore::new(&cfg.state_dir),
            account_origins: account.map(|a| cfg.account_origins(a)).unwrap_or_default(),
            traces: TraceStore::new(&cfg.state_dir, cfg.traces),
            claim,
        }
    }
}

/// The name history gives a login check by page and selector.
pub const LOGIN_CHECK: &str = "login_check";

/// Executes `flow` for `target` under `guard`, persists the result and
/// deregisters. Returns the history record that was written.
pub async fn execute(
    guard: RunGuard,
    target: Arc<Target>,
    flow: Arc<Flow>,
    pinned: Arc<dyn PinnedFlow>,
    deps: RunDeps,
) -> RunRecord {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let recorder = deps.traces.enabled().then(Recorder::new);
    let control = guard.control().clone();
    let sink = Arc::new(RunCommit {
        state: deps.parts.state.clone(),
        target: target.clone(),
        run: guard.run_id(),
        session: guard.session(),
        account: guard.account().cloned(),
        control: control.clone(),
        commit_timeout: deps.commit_timeout,
        claim: deps.claim.clone(),
        answer: Mutex::new(None),
        price: Mutex::new(None),
        observed: Mutex::new(None),
        refused: Mutex::new(None),
    });

    let mut report = AssertUnwindSafe(run_steps(
        &guard,
        target.clone(),
        &flow,
        pinned.as_ref(),
        sink.clone(),
        &deps,
        recorder.clone(),
    ))
    .catch_unwind()
    .await
    .unwrap_or_else(|panic| Report {
        error: Some(format!(
            "baton panicked while running the flow: {}",
            panic_message(&panic)
        )),
        ..Report::default()
    });
    report.refused = lock(&sink.refused)
        .as_ref()
        .map(|r| format!("refused by baton (I11): {r}"));

    let answer = sink.answer();
    let committed = control.committed();
    let (status, outcome, error) =
        settle(&flow, &report, committed, answer.as_ref(), control.reason());
    let order = match answer {
        Some(CommitAnswer::Placed(order)) => order,
        _ => None,
    };
    let duration = started.elapsed();
    let record = RunRecord {
        run_id: guard.run_id(),
        target: target.id.clone(),
        flow: flow.name.clone(),
        started_at,
        ended_at: SystemTime::now(),
        duration_ms: duration.as_millis() as u64,
        status,
        outcome: outcome.clone(),
        order: order.clone(),
        price: sink.price(),
        error: error.clone(),
        committed,
        cancelled: control.reason().map(|r| r.to_string()),
        steps: report.steps.clone(),
        screenshot: report.screenshot.clone(),
        trace: recorder
            .is_some()
            .then(|| crate::trace::TraceStore::record_name(guard.run_id())),
        repeats: None,
        first_at: None,
    };

    let state = deps.parts.state.clone();
    let rec = record.clone();
    let run_id = guard.run_id();
    let session = guard.session();
    let account = guard.account().cloned();
    if let (Some(a), Some(why)) = (&account, &report.why) {
        // Before the guard drops: the next run on this account waits for
        // that, and then finds the account held.
        deps.parts.logged_out.hold(a, why);
    }
    if status == Status::InDoubt {
        // I9: the order may still be in flight on the shop for this
        // session. Quarantine it while the guard still holds it, so no run
        // and no cleanup step can claim it until an operator resolves the
        // target.
        guard.quarantine();
        tracing::warn!(
            run = %run_id,
            target = %target.id,
            session = session.0,
            "browser session {session} quarantined until `{}` is resolved (`baton state resolve {}`)",
            target.id,
            target.id
        );
    }
    guard
        .complete(async move {
            let saved = state
                .blocking(move |state| {
                    state.run_moved(
                        &rec.target,
                        RunMove::Finished {
                            record: &rec,
                            session,
                            account: account.as_ref(),
                        },
                    )?;
                    state.append_history(&rec)
                })
                .await;
            // Logged here, inside the completion step, so the log reads in
            // the order things happen: completing, state saved, deregistered.
            match saved {
                Ok(()) => tracing::info!(run = %run_id, "state saved"),
                Err(e) => tracing::error!(run = %run_id, error = %e, "state not saved"),
            }
        })
        .await;
    // Deregistered: the cluster may hand the target and the account to
    // another instance (a commit marker, if any, stays).
    deps.claim.release().await;
    // After the run has saved its result and deregistered: a trace is a
    // diagnostic, and never delays the next run.
    if let Some(rec) = &recorder {
        keep_trace(&deps.traces, rec, &record).await;
    }
    deps.parts.metrics.run_finished(status.as_str(), duration);
    for s in &record.steps {
        deps.parts
            .metrics
            .step_finished(&s.script, Duration::from_millis(s.duration_ms));
    }
    deps.parts.notifier.run_finished(&record);
    // Nobody listening is fine.
    let _ = deps.parts.finished.send(record.clone());
    tracing::info!(
        run = %run_id,
        target = %target.id,
        status = %status,
        outcome = outcome.as_deref().unwrap_or("-"),
        order = order.as_deref().unwrap_or("-"),
        error = error.as_deref().unwrap_or("-"),
        duration = %crate::time::short(duration),
        "run finished"
    );
    record
}

/// What happened inside a run, before it is turned into a status.
#[derive(Default)]
struct Report {
    steps: Vec<StepRecord>,
    /// The outcome named by a step, if one ended the run early.
    outcome: Option<String>,
    /// The first error of a non-cleanup step, or of the run itself.
    error: Option<String>,
    /// The first error of a cleanup step.
    cleanup_error: Option<String>,
    /// Why the run reached its outcome, when the host decided it
    /// (`logged_out`).
    why: Option<String>,
    /// Why the host refused the run's commit (I11), if it did.
    refused: Option<String>,
    screenshot: Option<String>,
}

/// Turns a report into the target's new status, outcome and error.
fn settle(
    flow: &Flow,
    r: &Report,
    committed: bool,
    answer: Option<&CommitAnswer>,
    cancelled: Option<CancelReason>,
) -> (Status, Option<String>, Option<String>) {
    let error = r.error.clone().or_else(|| r.cleanup_error.clone());
    if committed {
        match answer {
            Some(CommitAnswer::Placed(_)) => {
                // The order is placed; a later failure (cleanup) is
                // reported but cannot undo that.
                return (Status::Completed, r.outcome.clone(), error);
            }
            Some(CommitAnswer::NotPlaced(reason)) => {
                // The shop said no in so many words: nothing was bought, so
                // the target is retried like any failure.
                return (
                    Status::Failed,
                    Some("not_placed".into()),
                    Some(format!("the shop did not place the order: {reason}")),
                );
            }
            None => {}
        }
        // An outcome with no answer can only have ended the commit closure
        // itself: keep its name, but whether the order went through is
        // unknown.
        let why = match (&r.outcome, error) {
            (_, Some(e)) => e,
            (Some(name), None) => format!(
                "the script ended with outcome `{name}` inside commit; use not_placed(reason) when the shop refused the order"
            ),
            (None, None) => "the commit closure did not return".into(),
        };
        return (
            Status::InDoubt,
            r.outcome.clone(),
            Some(format!(
                "passed its commit point without a recorded result: {why}"
            )),
        );
    }
    // I11: the host refused the commit for its price. Nothing reached the
    // shop; the target is tried again next cycle, whatever the script
    // did after the refusal.
    if let Some(why) = &r.refused {
        return (
            Status::Ready,
            Some(crate::budget::OVER_BUDGET.into()),
            Some(why.clone()),
        );
    }
    if let Some(reason) = cancelled {
        let status = match reason {
            CancelReason::Shutdown | CancelReason::LeaseLost => Status::Failed,
            CancelReason::WaitTimeout | CancelReason::RunTimeout | CancelReason::CommitTimeout => {
                Status::TimedOut
            }
        };
        let msg = format!("cancelled: {reason}");
        return (status, None, Some(msg));
    }
    if let Some(e) = &r.error {
        return (Status::Failed, None, Some(e.clone()));
    }
    if let Some(name) = &r.outcome {
        let status = match flow.outcome_action(name) {
            OutcomeAction::Retry => Status::Ready,
            OutcomeAction::Done => Status::Completed,
            OutcomeAction::Fail => Status::Failed,
        };
        let error = match (status, &r.why) {
            (Status::Failed, Some(why)) => Some(format!("outcome `{name}`: {why}")),
            (Status::Failed, None) => Some(format!("outcome `{name}`")),
            (_, why) => why.clone().or_else(|| r.cleanup_error.clone()),
        };
        return (status, Some(name.clone()), error);
    }
    if let Some(e) = &r.cleanup_error {
        return (Status::Failed, None, Some(e.clone()));
    }
    (Status::Completed, None, None)
}

/// Why a step stopped before it finished by itself.
enum Interrupt {
    /// The run was cancelled (wait timeout, run timeout, shutdown).
    Run,
    /// The step ran past `Timeouts::step`.
    Step,
}

/// Writes the run's trace, completed with what the record says.
async fn keep_trace(store: &TraceStore, rec: &Recorder, record: &RunRecord) {
    let mut trace = rec.finish(&crate::redact::global());
    trace.run_id = Some(record.run_id);
    trace.target = record.target.to_string();
    trace.flow.clone_from(&record.flow);
    trace.status = record.status.as_str().to_owned();
    trace.screenshot.clone_from(&record.screenshot);
    let (store, run) = (store.clone(), record.run_id);
    let written = tokio::task::spawn_blocking(move || store.write(run, &trace)).await;
    match written {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(run = %run, error = %e, "trace not kept"),
        Err(e) => tracing::warn!(run = %run, error = %e, "trace not kept"),
    }
}

async fn run_steps(
    guard: &RunGuard,
    target: Arc<Target>,
    flow: &Flow,
    pinned: &dyn PinnedFlow,
    sink: Arc<RunCommit>,
    deps: &RunDeps,
    recorder: Option<Arc<Recorder>>,
) -> Report {
    let control = guard.control().clone();
    let mut run = Steps {
        recorder,
        guard,
        target,
        pinned,
        sink,
        deps,
        run_deadline: Instant::now() + deps.run_timeout,
        control,
        account: flow.account.clone(),
        report: Report::default(),
        page: None,
        interrupted: false,
    };

    // The account's login first (I10 holds the account already): a run
    // never buys on a session it has not seen logged in.
    if let Some(account) = &flow.account {
        match crate::login::gate(&mut run, account).await {
            crate::login::Gate::LoggedIn => {}
            crate::login::Gate::LoggedOut(why) => {
                tracing::warn!(target = %run.target.id, account = %account.id, "{why}");
                run.report.outcome = Some(LOGGED_OUT.to_owned());
                run.report.why = Some(why);
            }
            crate::login::Gate::Failed(e) => record_failure(&mut run.report, false, &e.to_string()),
        }
    }

    for step in &flow.steps {
        let report = &run.report;
        let stopping = report.error.is_some() || report.outcome.is_some() || run.interrupted;
        // I9: a commit without an answer may still be in flight on the shop
        // for this session; a cleanup step would run beside it (clearing
        // the cart the order is being placed from).
        let skipped = |why: Option<&str>| StepRecord {
            script: step.script.clone(),
            generation: version_of(pinned, &step.script),
            duration_ms: 0,
            result: StepResult::Skipped,
            outcome: None,
            error: why.map(str::to_owned),
        };
        if step.always && run.control.committed() && run.sink.answer().is_none() {
            run.report.steps.push(skipped(Some(
                "not run: the commit may still be in flight in this browser session",
            )));
            continue;
        }
        if stopping && !step.always {
            run.report.steps.push(skipped(None));
            continue;
        }
        match run.exec(step).await {
            Ok(StepEnd::Outcome(name)) => {
                if !step.always && run.report.outcome.is_none() {
                    run.report.outcome = Some(name);
                }
            }
            // `exec` turns a pause into a failure: only monitors pause.
            Ok(StepEnd::Continue | StepEnd::Paused(_)) => {}
            Err(e) => record_failure(&mut run.report, step.always, &e.message),
        }
    }
    run.control.set_step(None);
    if let Some(account) = &flow.account {
        crate::login::Session::save(&mut run, account).await;
    }
    if let Some(p) = run.page.take() {
        p.close().await;
    }
    run.report
}

/// A run's steps in progress: the page they share and what they reported.
struct Steps<'a> {
    guard: &'a RunGuard,
    target: Arc<Target>,
    pinned: &'a dyn PinnedFlow,
    sink: Arc<RunCommit>,
    deps: &'a RunDeps,
    control: Arc<RunControl>,
    run_deadline: Instant,
    account: Option<Arc<Account>>,
    report: Report,
    page: Option<Arc<dyn Page>>,
    /// Records the run's trace; `None` when traces are off.
    recorder: Option<Arc<Recorder>>,
    /// Set once a step was interrupted: the page may be mid-action, so the
    /// cleanup steps get a fresh one.
    interrupted: bool,
}

impl Steps<'_> {
    /// The run's page, opened on first use.
    async fn page(&mut self, token: &CancellationToken) -> Result<Arc<dyn Page>, String> {
        if let Some(p) = &self.page {
            return Ok(p.clone());
        }
        let started = Instant::now();
        let opened = open_page(self.guard, self.deps, token).await;
        let p = match &self.recorder {
            Some(rec) => rec.opened(started, opened)?,
            None => opened?,
        };
        self.page = Some(p.clone());
        Ok(p)
    }

    /// Runs one step, bounded and cancellable, and records it. The caller
    /// decides what its ending means for the run.
    async fn exec(&mut self, step: &Step) -> Result<StepEnd, StepError> {
        let (deps, control) = (self.deps, self.control.clone());
        // Cleanup after a cancellation runs on its own clock: the run's
        // token is already cancelled and its deadline may have passed.
        let cleanup_after_cancel = step.always && (self.interrupted || control.is_cancelled());
        let token = if cleanup_after_cancel {
            CancellationToken::new()
        } else {
            control.token().child_token()
        };
        let step_started = Instant::now();
        let step_deadline = step_started + deps.timeouts.step;
        control.set_step(Some(&step.script));
        if let Some(rec) = &self.recorder {
            rec.step_started(&step.script);
        }
        let result = self
            .exec_bounded(
                step,
                token,
                step_started,
                step_deadline,
                cleanup_after_cancel,
            )
            .await;
        if let Some(rec) = &self.recorder {
            let shown = match &result {
                Ok(StepEnd::Outcome(name)) => format!("outcome {name}"),
                Ok(_) => "ok".to_owned(),
                Err(e) if e.kind == StepErrorKind::Cancelled => "cancelled".to_owned(),
                Err(_) => "failed".to_owned(),
            };
            rec.step_ended(&shown);
        }
        result
    }

    /// The body of [`Steps::exec`]: the step under its bounds.
    async fn exec_bounded(
        &mut self,
        step: &Step,
        token: CancellationToken,
        step_started: Instant,
        step_deadline: Instant,
        cleanup_after_cancel: bool,
    ) -> Result<StepEnd, StepError> {
        let (deps, control, pinned) = (self.deps, self.control.clone(), self.pinned);

        let p = match self.page(&token).await {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("step `{}`: {e}", step.script);
                self.report.steps.push(step_record(
                    pinned,
                    step,
                    step_started,
                    StepResult::Failed,
                    None,
                    Some(msg.clone()),
                ));
                return Err(StepError::failed(msg));
            }
        };

        let cx = StepContext {
            label: self.guard.run_id().to_string(),
            page: Some(p.clone()),
            target: self.target.clone(),
            cancel: token.clone(),
            commit: Some(self.sink.clone()),
            timeouts: deps.timeouts,
            account: self.account.clone(),
        };
        // A panic inside a step (a native function, a plugin) is that step's
        // failure: cleanup steps still run and the run still completes.
        let fut = AssertUnwindSafe(pinned.run_step(step, cx))
            .catch_unwind()
            .map(|r| {
                r.unwrap_or_else(|panic| {
                    Err(StepError {
                        kind: StepErrorKind::Panicked,
                        message: format!("panicked: {}", panic_message(&*panic)),
                    })
                })
            });
        tokio::pin!(fut);
        let result = loop {
            // Re-armed whenever the commit phase changes: time inside
            // `commit` counts against `commit_timeout` (I9), not against the
            // step's or the run's own bound, which move on by that time.
            let phase_changed = control.commit_changed();
            tokio::pin!(phase_changed);
            phase_changed.as_mut().enable();
            let in_commit = control.commit_in_flight();
            let shift = control.commit_time();
            let bound = match (cleanup_after_cancel, in_commit) {
                (true, _) => step_deadline,
                (false, Some(since)) => since + deps.commit_timeout,
                (false, None) => self.run_deadline.min(step_deadline) + shift,
            };
            tokio::select! {
                r = &mut fut => break Ok(r),
                () = token.cancelled() => break Err(Interrupt::Run),
                () = &mut phase_changed => continue,
                () = tokio::time::sleep_until(bound) => {
                    if cleanup_after_cancel {
                        break Err(Interrupt::Step);
                    }
                    if in_commit.is_some() {
                        if control.commit_in_flight().is_some() {
                            tracing::warn!(
                                run = %self.guard.run_id(),
                                target = %self.target.id,
                                "commit got no answer within commit_timeout ({}); giving up on it",
                                crate::time::short(deps.commit_timeout)
                            );
                            control.cancel(CancelReason::CommitTimeout);
                            break Err(Interrupt::Run);
                        }
                        continue;
                    }
                    if Instant::now() >= self.run_deadline + shift {
                        control.cancel(CancelReason::RunTimeout);
                        break Err(Interrupt::Run);
                    }
                    break Err(Interrupt::Step);
                }
            }
        };
        let result = match result {
            Ok(r) => r,
            Err(why) => {
                // Stop the step and take the page away from it first, then
                // give it a moment to notice.
                token.cancel();
                p.close().await;
                self.page = None;
                self.interrupted = true;
                if tokio::time::timeout(CANCEL_GRACE, &mut fut).await.is_err() {
                    tracing::warn!(
                        target = %self.target.id,
                        step = %step.script,
                        "step did not stop within {} of cancellation; its page is closed",
                        crate::time::short(CANCEL_GRACE)
                    );
                }
                Err(match why {
                    Interrupt::Run => StepError::cancelled(format!(
                        "step `{}` cancelled: {}",
                        step.script,
                        control.reason().map(|r| r.to_string()).unwrap_or_default()
                    )),
                    Interrupt::Step => StepError {
                        kind: StepErrorKind::Cancelled,
                        message: format!(
                            "step `{}` timed out after {}",
                            step.script,
                            crate::time::short(deps.timeouts.step)
                        ),
                    },
                })
            }
        };

        // A step that met a host asking baton to slow down failed: only a
        // monitor skips its target for that.
        let result = match result {
            Ok(StepEnd::Paused(why)) => Err(StepError::failed(why)),
            r => r,
        };
        let record = |result, outcome, error| {
            step_record(pinned, step, step_started, result, outcome, error)
        };
        match &result {
            Ok(StepEnd::Continue | StepEnd::Paused(_)) => {
                self.report.steps.push(record(StepResult::Ok, None, None));
            }
            Ok(StepEnd::Outcome(name)) => {
                self.report
                    .steps
                    .push(record(StepResult::Outcome, Some(name.clone()), None));
            }
            Err(e) => {
                let result = match e.kind {
                    StepErrorKind::Cancelled => StepResult::Cancelled,
                    StepErrorKind::Failed | StepErrorKind::Panicked => StepResult::Failed,
                };
                if e.kind != StepErrorKind::Cancelled
                    && self.report.screenshot.is_none()
                    && let Some(p) = &self.page
                {
                    self.report.screenshot = screenshot(p.as_ref(), self.guard, deps).await;
                    if let Some(rec) = &self.recorder
                        && let Ok(html) = p.html(crate::browser::CAPTURE_TIMEOUT).await
                    {
                        rec.dom(&html);
                    }
                }
                tracing::warn!(target = %self.target.id, step = %step.script, error = %e.message, "step {result}");
                self.report
                    .steps
                    .push(record(result, None, Some(e.message.clone())));
            }
        }
        result
    }
}

/// The login gate's side of a run: its check and its login script run as
/// the run's own steps (recorded in its history and trace), on its page.
impl crate::login::Session for Steps<'_> {
    fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the run's session is logged into `account`, by its check.
    async fn logged_in(&mut self, account: &Account) -> Result<bool, CheckError> {
        match &account.check {
            Check::Script(script) => {
                let step = Step {
                    script: script.clone(),
                    always: false,
                };
                match self.exec(&step).await {
                    Ok(StepEnd::Continue | StepEnd::Paused(_)) => Ok(true),
                    Ok(StepEnd::Outcome(name)) if name == LOGGED_OUT => Ok(false),
                    Ok(StepEnd::Outcome(outcome)) => Err(CheckError::Outcome {
                        script: script.clone(),
                        outcome,
                    }),
                    Err(e) => Err(CheckError::Script(e.message)),
                }
            }
            Check::Page {
                url,
                selector,
                logged_out,
            } => {
                let started = Instant::now();
                let token = self.control.token().child_token();
                let checked = async {
                    let page = self.page(&token).await.map_err(CheckError::Open)?;
                    crate::account::page_logged_in(
                        page.as_ref(),
                        url,
                        selector,
                        logged_out,
                        self.deps.timeouts.action,
                    )
                    .await
                };
                let checked = tokio::select! {
                    r = checked => r,
                    () = token.cancelled() => Err(CheckError::Cancelled),
                };
                let (result, error) = match &checked {
                    Ok(_) => (StepResult::Ok, None),
                    Err(e) => (StepResult::Failed, Some(e.to_string())),
                };
                self.report.steps.push(StepRecord {
                    script: LOGIN_CHECK.into(),
                    generation: 0,
                    duration_ms: started.elapsed().as_millis() as u64,
                    result,
                    outcome: matches!(checked, Ok(false)).then(|| LOGGED_OUT.to_owned()),
                    error,
                });
                checked
            }
        }
    }

    async fn run_login(&mut self, script: &str) -> Result<StepEnd, crate::flow::StepError> {
        let step = Step {
            script: script.to_owned(),
            always: false,
        };
        self.exec(&step).await
    }

    /// Saves the session as the account's stored state (logged, never
    /// failing the run).
    async fn save(&mut self, account: &Account) {
        let d = self.deps;
        // A failed save is logged by `save_session`; the run goes on.
        let _ = d
            .accounts
            .save_session(
                d.parts.browser.as_ref(),
                self.guard.session(),
                &d.account_origins,
                d.timeouts.action,
                &account.id,
            )
            .await;
    }
}

fn record_failure(report: &mut Report, always: bool, msg: &str) {
    let slot = if always {
        &mut report.cleanup_error
    } else {
        &mut report.error
    };
    if slot.is_none() {
        *slot = Some(msg.to_owned());
    }
}

async fn open_page(
    guard: &RunGuard,
    deps: &RunDeps,
    token: &CancellationToken,
) -> Result<Arc<dyn Page>, String> {
    // Opening a page may launch (or relaunch) Chromium, which takes longer
    // than an action; Chromium's own launch is bounded at 20 s.
    let bound = deps.timeouts.action.max(PAGE_OPEN_TIMEOUT);
    let opened = tokio::select! {
        r = tokio::time::timeout(bound, deps.parts.browser.new_page(guard.session())) => r,
        () = token.cancelled() => return Err("cancelled while opening a page".into()),
    };
    match opened {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "opening a page timed out after {}",
            crate::time::short(bound)
        )),
    }
}

async fn screenshot(page: &dyn Page, guard: &RunGuard, deps: &RunDeps) -> Option<String> {
    let dir = &deps.shots_dir;
    let png = page
        .screenshot(crate::browser::CAPTURE_TIMEOUT)
        .await
        .ok()?;
    let name = format!("{}.png", guard.run_id());
    let path = dir.join(&name);
    let written = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
        std::fs::write(&path, png)
    })
    .await;
    match written {
        Ok(Ok(())) => Some(crate::state::shot_record(&name)),
        _ => None,
    }
}

fn version_of(pinned: &dyn PinnedFlow, script: &str) -> u64 {
    pinned
        .versions()
        .iter()
        .find(|v| v.script == script)
        .map_or(0, |v| v.generation)
}

fn step_record(
    pinned: &dyn PinnedFlow,
    step: &crate::flow::Step,
    started: Instant,
    result: StepResult,
    outcome: Option<String>,
    error: Option<String>,
) -> StepRecord {
    StepRecord {
        script: step.script.clone(),
        generation: version_of(pinned, &step.script),
        duration_ms: started.elapsed().as_millis() as u64,
        result,
        outcome,
        error,
    }
}

/// The run's side of `commit(label, ..)`: persist `committing` before the
/// closure runs, persist `committed` with the order the moment it returns.
struct RunCommit {
    state: Arc<StateStore>,
    target: Arc<Target>,
    run: crate::id::RunId,
    session: crate::id::SessionId,
    account: Option<crate::id::AccountId>,
    control: Arc<RunControl>,
    commit_timeout: Duration,
    claim: Arc<Claim>,
    /// `Some` once the shop's answer is known.
    answer: Mutex<Option<CommitAnswer>>,
    /// The price the commit reported with its order.
    price: Mutex<Option<String>>,
    /// The last price the run's steps observed (I11).
    observed: Mutex<Option<crate::price::Price>>,
    /// Why the host refused the commit, if it did.
    refused: Mutex<Option<crate::budget::Refusal>>,
}

impl RunCommit {
    fn answer(&self) -> Option<CommitAnswer> {
        lock(&self.answer).clone()
    }

    fn price(&self) -> Option<String> {
        lock(&self.price).clone()
    }

    fn set_answer(&self, answer: CommitAnswer) {
        *lock(&self.answer) = Some(answer);
        self.control.answer_commit();
    }
}

impl CommitSink for RunCommit {
    fn begin(&self, label: &str) -> Result<bool, CommitRefused> {
        // I11 first: a refused commit touches nothing, here or on the shop.
        let observed = lock(&self.observed).clone();
        if let Err(refusal) = self.target.budget.admits(observed.as_ref()) {
            tracing::warn!(run = %self.run, target = %self.target.id, label, "commit refused: {refusal}");
            *lock(&self.refused) = Some(refusal.clone());
            return Err(refusal.into());
        }
        // Entering the commit and a cycle's cancellation exclude each other
        // (I9): a run cancelled first never commits; a run in its commit is
        // not cancelled by a cycle's wait.
        self.control.enter_commit().map_err(|reason| {
            CommitRefused::Other(format!("run cancelled before its commit point ({reason})"))
        })?;
        // With several instances: the leases must still be this run's, and
        // no instance may have marked the target; `committing` is written
        // in the same step, so no other instance runs it from here on.
        if let Err(refusal) = self.claim.begin_commit(self.run) {
            self.control.abandon_commit();
            return Err(CommitRefused::Other(format!(
                "the cluster refused the commit: {refusal}"
            )));
        }
        // Persist first: if baton dies inside the closure, the restart finds
        // `committing` and turns it into `in_doubt`, never a retry. The
        // order field is cleared so the row never shows an older run's.
        let saved = self.state.run_moved(
            &self.target.id,
            RunMove::Committing {
                run: self.run,
                session: self.session,
                account: self.account.as_ref(),
            },
        );
        if let Err(e) = saved {
            // The closure does not run, so nothing reached the shop.
            self.control.abandon_commit();
            self.claim.uncommitted();
            return Err(CommitRefused::Other(format!(
                "cannot persist `committing`: {e}"
            )));
        }
        tracing::info!(run = %self.run, target = %self.target.id, label, "committing");
        Ok(true)
    }

    fn done(&self, label: &str, result: Option<&str>) {
        // In memory first: even if the write below fails, this run ends
        // `completed` with its order.
        self.set_answer(CommitAnswer::Placed(result.map(str::to_owned)));
        self.claim.committed(self.run, result);
        tracing::info!(run = %self.run, target = %self.target.id, label, result = result.unwrap_or("-"), "committed");
        let saved = self.state.run_moved(
            &self.target.id,
            RunMove::Committed {
                run: self.run,
                order: result,
            },
        );
        if let Err(e) = saved {
            tracing::error!(run = %self.run, target = %self.target.id, error = %e, "`committed` not saved; a crash now would leave the target in_doubt");
        }
    }

    fn observe(&self, price: crate::price::Price) {
        *lock(&self.observed) = Some(price);
    }

    fn priced(&self, price: &str) {
        *lock(&self.price) = Some(price.to_owned());
    }

    fn not_placed(&self, label: &str, reason: &str) {
        tracing::info!(run = %self.run, target = %self.target.id, label, reason, "the shop did not place the order");
        self.set_answer(CommitAnswer::NotPlaced(reason.to_owned()));
        self.claim.uncommitted();
    }

    fn deadline(&self) -> Option<Instant> {
        self.control
            .commit_in_flight()
            .map(|since| since + self.commit_timeout)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::flow::Step;

    fn flow() -> Flow {
        Flow {
            name: "f".into(),
            monitor: None,
            steps: vec![Step {
                script: "s".into(),
                always: false,
            }],
            outcomes: BTreeMap::from([
                ("sold_out".to_owned(), OutcomeAction::Done),
                ("blocked".to_owned(), OutcomeAction::Fail),
            ]),
            account: None,
        }
    }

    fn report(error: Option<&str>, outcome: Option<&str>, cleanup: Option<&str>) -> Report {
        Report {
            error: error.map(str::to_owned),
            outcome: outcome.map(str::to_owned),
            cleanup_error: cleanup.map(str::to_owned),
            ..Report::default()
        }
    }

    #[test]
    fn how_a_run_ends_decides_the_status() {
        let f = flow();
        let status = |r: Report, committed, result: bool, cancel| {
            let placed = CommitAnswer::Placed(Some("A-1".into()));
            settle(&f, &r, committed, result.then_some(&placed), cancel).0
        };
        // Committed: an order with a result is final, whatever came after.
        assert_eq!(
            status(report(None, None, Some("cart")), true, true, None),
            Status::Completed
        );
        assert_eq!(
            status(
                report(Some("x"), None, None),
                true,
                true,
                Some(CancelReason::WaitTimeout)
            ),
            Status::Completed
        );
        // Committed without a result: in doubt, even when cancelled.
        assert_eq!(
            status(report(Some("x"), None, None), true, false, None),
            Status::InDoubt
        );
        assert_eq!(
            status(
                report(None, None, None),
                true,
                false,
                Some(CancelReason::Shutdown)
            ),
            Status::InDoubt
        );
        // Cancelled before the commit point.
        assert_eq!(
            status(
                report(None, None, None),
                false,
                false,
                Some(CancelReason::WaitTimeout)
            ),
            Status::TimedOut
        );
        assert_eq!(
            status(
                report(None, None, None),
                false,
                false,
                Some(CancelReason::RunTimeout)
            ),
            Status::TimedOut
        );
        assert_eq!(
            status(
                report(None, None, None),
                false,
                false,
                Some(CancelReason::Shutdown)
            ),
            Status::Failed
        );
        // Errors, outcomes, cleanup.
        assert_eq!(
            status(report(Some("x"), None, None), false, false, None),
            Status::Failed
        );
        assert_eq!(
            status(report(None, Some("out_of_stock"), None), false, false, None),
            Status::Ready
        );
        assert_eq!(
            status(report(None, Some("sold_out"), None), false, false, None),
            Status::Completed
        );
        assert_eq!(
            status(report(None, Some("blocked"), None), false, false, None),
            Status::Failed
        );
        assert_eq!(
            status(report(None, None, Some("cart")), false, false, None),
            Status::Failed
        );
        assert_eq!(
            status(report(None, None, None), false, false, None),
            Status::Completed
        );
    }

    #[test]
    fn a_refused_commit_is_a_failure_to_retry() {
        let refused = CommitAnswer::NotPlaced("card declined".into());
        let (status, outcome, error) = settle(
            &flow(),
            &report(None, None, None),
            true,
            Some(&refused),
            None,
        );
        assert_eq!(status, Status::Failed);
        assert!(status.is_runnable(), "retried next cycle");
        assert_eq!(outcome.as_deref(), Some("not_placed"));
        assert_eq!(
            error.as_deref(),
            Some("the shop did not place the order: card declined")
        );
    }

    #[test]
    fn an_outcome_inside_commit_keeps_its_name_and_stays_in_doubt() {
        let (status, outcome, error) = settle(
            &flow(),
            &report(None, Some("sold_out"), None),
            true,
            None,
            None,
        );
        assert_eq!(status, Status::InDoubt);
        assert_eq!(outcome.as_deref(), Some("sold_out"));
        assert!(
            error
                .as_deref()
                .unwrap()
                .contains("ended with outcome `sold_out` inside commit"),
            "{error:?}"
        );
    }

    #[test]
    fn in_doubt_says_why() {
        let (_, outcome, error) = settle(
            &flow(),
            &report(Some("step `checkout` cancelled"), None, None),
            true,
            None,
            None,
        );
        assert_eq!(
            outcome, None,
            "the status says in_doubt; no script named an outcome"
        );
        assert_eq!(
            error.as_deref(),
            Some("passed its commit point without a recorded result: step `checkout` cancelled")
        );
    }
}
