//! The flow model: targets, flows and their steps, as the scheduler and the
//! run executor see them once `flows.yaml` has been read and checked.
//!
//! Also the seam between a run and whatever executes its steps: the
//! [`StepRunner`] trait, implemented by the Rhai script host and, in tests,
//! by plain Rust closures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::account::{Account, LOGGED_OUT};
use crate::browser::Page;
use crate::id::PinnedVersion;
use crate::id::TargetId;

/// Something to run a flow for, such as one product.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    pub id: TargetId,
    pub url: String,
    /// The flow this target runs.
    pub flow: String,
    /// The account it buys on; `None` for a guest.
    pub account: Option<crate::id::AccountId>,
    /// Free-form parameters from `flows.yaml`, for the scripts.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// What it may cost (I11): `max_price` and `currency`.
    pub budget: crate::budget::Budget,
    /// When it is due: its interval, windows and drops.
    #[serde(skip)]
    pub schedule: crate::schedule::Schedule,
}

/// A named sequence of steps.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flow {
    pub name: String,
    /// A script that decides whether a target runs this cycle.
    pub monitor: Option<String>,
    pub steps: Vec<Step>,
    /// What each named outcome does to the target's status.
    pub outcomes: BTreeMap<String, OutcomeAction>,
    /// The account whose login the run checks (and logs in again) before
    /// the steps; set per run by [`Flow::with_account`].
    pub account: Option<Arc<Account>>,
}

impl Flow {
    /// Every script the flow uses: monitor, the account's check and login,
    /// then the steps.
    pub fn scripts(&self) -> impl Iterator<Item = &str> {
        self.monitor
            .as_deref()
            .into_iter()
            .chain(self.account.iter().flat_map(|a| a.scripts()))
            .chain(self.steps.iter().map(|s| s.script.as_str()))
    }

    /// This flow run on `account`.
    pub fn with_account(&self, account: Arc<Account>) -> Flow {
        Flow {
            account: Some(account),
            ..self.clone()
        }
    }

    /// What outcome `name` does; an outcome not declared ends the run
    /// quietly and leaves the target ready, like `retry`, except
    /// `logged_out`, which fails the target: logging in again and again
    /// with a wrong password gets accounts locked.
    ///
    /// `over_budget`, the host's refusal (I11), is always retried: the
    /// price may come down, and no flow makes a refused purchase done.
    pub fn outcome_action(&self, name: &str) -> OutcomeAction {
        if name == crate::budget::OVER_BUDGET {
            return OutcomeAction::Retry;
        }
        self.outcomes
            .get(name)
            .copied()
            .unwrap_or(if name == LOGGED_OUT {
                OutcomeAction::Fail
            } else {
                OutcomeAction::Retry
            })
    }
}

/// One step: a script from `scripts/`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    pub script: String,
    /// Runs even when an earlier step failed, ended with an outcome or was
    /// cancelled (cart clearing).
    pub always: bool,
}

/// What a named outcome does to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeAction {
    /// The run ends quietly; the target stays `ready` for the next cycle.
    Retry,
    /// The target is `completed` with this outcome.
    Done,
    /// The target is `failed` with this outcome as its error.
    Fail,
}

/// How a step (or a monitor) ended when it did not fail: the one shape
/// every layer uses, from the script's own `outcome(...)` to the run's
/// record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepEnd {
    /// It ran to the end: go on with the next step.
    Continue,
    /// The script called `outcome(name)`: skip the remaining steps that are
    /// not `always`.
    Outcome(String),
    /// It fetched from a host that asked baton to slow down. A monitor
    /// skips its target this cycle; for a step it is a failure.
    Paused(String),
}

/// Why a step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepErrorKind {
    /// A script error, a failed primitive, `fail(reason)`.
    Failed,
    /// The step was cancelled (run cancelled or step timeout).
    Cancelled,
    /// A native function or the host panicked.
    Panicked,
}

/// A step failure with a message fit for an operator: for a script, it
/// starts with `file:line:column`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub kind: StepErrorKind,
    pub message: String,
}

impl StepError {
    pub fn failed(message: impl Into<String>) -> StepError {
        StepError {
            kind: StepErrorKind::Failed,
            message: message.into(),
        }
    }

    pub fn cancelled(message: impl Into<String>) -> StepError {
        StepError {
            kind: StepErrorKind::Cancelled,
            message: message.into(),
        }
    }
}

/// The point-of-no-return hooks `commit(label, ..)` calls. Called from the
/// script's thread, so they may block.
pub trait CommitSink: Send + Sync {
    /// Called before the commit closure runs. `Ok(true)`: run it, after the
    /// target has been persisted as `committing`. `Ok(false)`: skip it (a dry
    /// run). `Err`: the closure does not run; the run ends `over_budget`
    /// when the host refused it for its price (I11), failed otherwise.
    fn begin(&self, label: &str) -> Result<bool, CommitRefused>;
    /// A price the run saw on its own pages (`offer`, `observe_price`):
    /// the last one is what the budget is checked against at `begin`.
    fn observe(&self, price: crate::price::Price) {
        let _ = price;
    }
    /// Called when the closure returned, with what it returned (for
    /// example the order number; `None` if it returned nothing). The shop
    /// answered: the run persists `committed` with that order at once.
    fn done(&self, label: &str, result: Option<&str>);
    /// Called before `done` when the closure reported a price with its
    /// order (`#{ order: .., price: .. }`).
    fn priced(&self, price: &str) {
        let _ = price;
    }
    /// Called when the script said, inside the closure, that the shop
    /// refused the order (`not_placed(reason)`): nothing was placed, so the
    /// target may be retried.
    fn not_placed(&self, label: &str, reason: &str) {
        let _ = (label, reason);
    }
    /// While a commit is in flight: when its `commit_timeout` runs out.
    /// Waits inside the closure are bounded by this rather than by
    /// `browser.timeout`, so a slow shop gets its full time to answer.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        None
    }
}

/// Why `commit` did not begin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommitRefused {
    /// I11: the observed price is over the budget, in another currency,
    /// or missing.
    #[error("refused by baton (I11): {0}")]
    OverBudget(#[from] crate::budget::Refusal),
    /// Cancelled first, the cluster's marker, a failed write.
    #[error("{0}")]
    Other(String),
}

/// Where a script's `notify(..)` goes: a narrow handle, like
/// [`CommitSink`], so the script host knows nothing of the notifier.
pub trait Notices: Send + Sync {
    /// Queues `message` from a run of `target`: to `channel`, or where the
    /// rules send event `script`. Returns what to show in a dry run's
    /// trace; errs on a channel that does not exist.
    fn notify(
        &self,
        target: &str,
        channel: Option<&str>,
        message: &str,
    ) -> Result<String, NoticeError>;
}

/// Why a script's `notify(..)` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoticeError {
    #[error("no channel `{0}` under notify.channels")]
    NoChannel(String),
}

/// How a commit closure ended, as far as the shop's side is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitAnswer {
    /// The closure returned: the order is placed (with its number, if the
    /// script returned one).
    Placed(Option<String>),
    /// The script said the shop refused the order (`not_placed(reason)`).
    NotPlaced(String),
}

/// Bounds that apply inside a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    /// How long an action waits for its element, and the bound of every
    /// browser call.
    pub action: Duration,
    /// A whole step.
    pub step: Duration,
    /// `http_get_json`.
    pub http: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            action: Duration::from_secs(10),
            step: Duration::from_secs(30),
            http: Duration::from_secs(10),
        }
    }
}

/// Everything a step gets to work with: one shape from the run (or a
/// monitor, a dry run, a login check) down to a script's primitives.
#[derive(Clone)]
pub struct StepContext {
    /// Names what the step leaves behind (screenshots): the run's id, or
    /// what runs the step instead of a run (`monitor`, `login`, a dry run's
    /// script).
    pub label: String,
    /// `None` for a monitor, which watches without a browser.
    pub page: Option<Arc<dyn Page>>,
    pub target: Arc<Target>,
    /// Cancelled when the step must stop: the run was cancelled, or the step
    /// ran out of time. Every wait inside the step races it.
    pub cancel: CancellationToken,
    /// Where `commit` and observed prices go; `None` for a monitor and a
    /// login check, which cannot commit.
    pub commit: Option<Arc<dyn CommitSink>>,
    pub timeouts: Timeouts,
    /// The account the run is logged into, if any (scripts see it as
    /// `account`).
    pub account: Option<Arc<Account>>,
}

impl StepContext {
    /// A monitor's context: the target, no page, no commit, no account.
    pub fn monitor(target: Arc<Target>, cancel: CancellationToken, timeouts: Timeouts) -> Self {
        StepContext {
            label: "monitor".into(),
            page: None,
            target,
            cancel,
            commit: None,
            timeouts,
            account: None,
        }
    }

    /// The step's page; an error in a step that has none (a monitor).
    pub fn page(&self) -> Result<&Arc<dyn Page>, StepError> {
        self.page
            .as_ref()
            .ok_or_else(|| StepError::failed("this step has no page: it runs as a monitor"))
    }

    /// Where the step commits; an error where it cannot (a monitor).
    pub fn commit(&self) -> Result<&Arc<dyn CommitSink>, StepError> {
        self.commit
            .as_ref()
            .ok_or_else(|| StepError::failed("this step cannot commit: it runs as a monitor"))
    }
}

/// The versions of `scripts` as `generation` finds them (scripts it does
/// not know are left out): what a [`PinnedFlow`] reports.
pub fn versions_of<'a>(
    scripts: impl IntoIterator<Item = &'a String>,
    generation: impl Fn(&str) -> Option<u64>,
) -> Vec<PinnedVersion> {
    scripts
        .into_iter()
        .filter_map(|s| {
            generation(s).map(|generation| PinnedVersion {
                script: s.clone(),
                generation,
            })
        })
        .collect()
}

/// A flow whose scripts are pinned at one version each (I8).
pub trait PinnedFlow: Send + Sync {
    fn versions(&self) -> Vec<PinnedVersion>;
    /// Runs one step. The future may be dropped after `cx.cancel` fires;
    /// the step must then stop on its own promptly.
    fn run_step(
        &self,
        step: &Step,
        cx: StepContext,
    ) -> BoxFuture<'static, Result<StepEnd, StepError>>;
}

/// What executes steps and monitors.
pub trait StepRunner: Send + Sync + 'static {
    /// Pins the current version of every script `flow` uses. The run keeps
    /// the pin for its whole life, whatever reloads happen meanwhile.
    fn pin(&self, flow: &Flow) -> Result<Arc<dyn PinnedFlow>, StepError>;

    /// Runs `script` as a monitor for `cx.target`: `true` means run the
    /// target this cycle. Monitors get no page ([`StepContext::monitor`]).
    fn monitor(&self, script: &str, cx: StepContext)
    -> BoxFuture<'static, Result<bool, StepError>>;
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
