//! The one handle to a running baton's parts, built once (by `app.rs`, or
//! by a test) and borrowed by the scheduler, every run and the dashboard.
//!
//! Every part is always present. A part a flows.yaml may leave out has an
//! off state instead of an `Option`: [`Notifier::off`] sends nothing,
//! [`Local`] leases hold nothing beyond the registry, an in-memory
//! [`Observations`] keeps the history for this process only. So adding a
//! part means one field here and its own module, not a branch in every
//! place that passes parts along.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::account::LoggedOut;
use crate::browser::Browser;
use crate::cluster::{Leases, Local};
use crate::config::Config;
use crate::flow::StepRunner;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::observations::Observations;
use crate::registry::Registry;
use crate::schedule::Clock;
use crate::script::ScriptHost;
use crate::state::{RunRecord, StateStore};

/// How many finished runs a slow listener may fall behind before it
/// misses some (the dashboard then reloads its table).
const FINISHED_BACKLOG: usize = 256;

/// A running baton's parts. Cheap to share behind an `Arc`.
pub struct Parts {
    /// The configuration in force; a valid flows.yaml reload replaces it.
    pub config: Arc<ArcSwap<Config>>,
    /// The active runs (I1, I2, I10).
    pub registry: Arc<Registry>,
    /// The crash-safe state and history.
    pub state: Arc<StateStore>,
    pub metrics: Arc<Metrics>,
    pub browser: Arc<dyn Browser>,
    /// What runs a flow's steps (the script host, or Rust steps in tests).
    pub steps: Arc<dyn StepRunner>,
    /// The scripts, for what the dashboard shows of them.
    pub scripts: ScriptHost,
    /// Where events go; [`Notifier::off`] without `notify:`.
    pub notifier: Notifier,
    /// The run's leases; [`Local`] without `cluster:`.
    pub leases: Arc<dyn Leases>,
    /// The price and stock history.
    pub observations: Arc<Observations>,
    /// Accounts whose login failed: their targets wait for a new config.
    pub logged_out: Arc<LoggedOut>,
    /// Every finished run is announced here (the CLI's run lines, the
    /// dashboard); nobody listening is fine.
    pub finished: broadcast::Sender<RunRecord>,
    /// Wall time for schedules (a test starts it where it likes).
    pub clock: Clock,
}

impl Parts {
    /// The parts of a baton on `config` and `state` that drives `browser`
    /// with `steps`, with every optional part off and no scripts: what a test starts from, replacing the fields it needs.
    pub fn new(
        config: Config,
        state: Arc<StateStore>,
        browser: Arc<dyn Browser>,
        steps: Arc<dyn StepRunner>,
    ) -> Parts {
        Parts {
            registry: Arc::new(Registry::new(state.last_run_id().saturating_add(1))),
            config: Arc::new(ArcSwap::from_pointee(config)),
            state,
            metrics: Arc::new(Metrics::new()),
            browser,
            steps,
            scripts: ScriptHost::off(),
            notifier: Notifier::off(),
            leases: Arc::new(Local),
            observations: Arc::new(Observations::in_memory()),
            logged_out: Arc::default(),
            finished: broadcast::channel(FINISHED_BACKLOG).0,
            clock: Clock::system(),
        }
    }
}
