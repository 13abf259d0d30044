//! The dashboard's read-only view of a running baton: snapshots and change
//! notifications. It holds the registry, the state store, the script host
//! and the browser privately and lends out none of them, so nothing in the
//! dashboard can register or cancel a run, write the state file, run a
//! script or kill the browser: actions go to the scheduler as `Command`s.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::browser::BrowserHealth;
use crate::config::Config;
use crate::logging::{Event, Recent};
use crate::parts::Parts;
use crate::registry::{Quarantine, RunInfo};
use crate::scheduler::SchedulerStatus;
use crate::script::ScriptStatus;
use crate::script::politeness::SlowHost;
use crate::state::{RunRecord, StateDoc, StateError};

/// What a [`View`] is made from: the running baton's parts, the
/// scheduler's status and the recent log.
pub struct Sources {
    pub parts: Arc<Parts>,
    pub status: watch::Receiver<SchedulerStatus>,
    pub recent: Recent,
}

/// Read-only access to a running baton. Cheap to clone.
#[derive(Clone)]
pub struct View {
    s: Arc<Sources>,
}

impl View {
    pub fn new(sources: Sources) -> View {
        View {
            s: Arc::new(sources),
        }
    }

    /// The configuration in force (it changes when flows.yaml reloads).
    pub fn config(&self) -> Arc<Config> {
        self.s.parts.config.load_full()
    }

    /// Every target's persisted status.
    pub fn targets(&self) -> StateDoc {
        self.s.parts.state.snapshot()
    }

    /// The last `limit` history records, newest first.
    pub async fn history(&self, limit: usize) -> Result<Vec<RunRecord>, StateError> {
        self.s.parts.state.blocking(move |s| s.history(limit)).await
    }

    /// The registered runs, oldest first.
    pub fn runs(&self) -> Vec<RunInfo> {
        self.s.parts.registry.snapshot()
    }

    /// Whether every one of `sessions` guest browser sessions is taken (by
    /// a run or a quarantine).
    pub fn starved(&self, sessions: u32) -> bool {
        self.s
            .parts
            .registry
            .free_session(&crate::registry::Pool::guests(sessions))
            .is_none()
    }

    /// The accounts a person is logging in.
    pub fn logins(&self) -> Vec<crate::id::AccountId> {
        self.s.parts.registry.logins()
    }

    /// Why `account`'s targets wait after a failed login, if they do.
    pub fn logged_out(&self, account: &crate::id::AccountId) -> Option<String> {
        self.s.parts.logged_out.why(account)
    }

    pub fn quarantined(&self) -> Vec<Quarantine> {
        self.s.parts.registry.quarantined()
    }

    /// Ticks whenever a run registers, changes or ends.
    pub fn run_changes(&self) -> watch::Receiver<u64> {
        self.s.parts.registry.watch()
    }

    pub fn scheduler(&self) -> watch::Receiver<SchedulerStatus> {
        self.s.status.clone()
    }

    /// Every finished run's record, from now on.
    pub fn finished(&self) -> broadcast::Receiver<RunRecord> {
        self.s.parts.finished.subscribe()
    }

    pub fn scripts(&self) -> Vec<ScriptStatus> {
        self.s.parts.scripts.status()
    }

    /// A target's price and stock history, oldest first.
    pub fn observations(&self, target: &str) -> Vec<crate::observations::Observation> {
        self.s.parts.observations.of(target)
    }

    /// A target's newest observation and how many are kept.
    pub fn last_observation(
        &self,
        target: &str,
    ) -> Option<(crate::observations::Observation, usize)> {
        self.s.parts.observations.last(target)
    }

    pub fn slowed_hosts(&self) -> Vec<SlowHost> {
        self.s.parts.scripts.slowed_hosts()
    }

    /// Each notification channel's state (empty without `notify:`).
    pub fn notifications(&self) -> Vec<crate::notify::ChannelStatus> {
        self.s.parts.notifier.status()
    }

    pub fn browser(&self) -> BrowserHealth {
        self.s.parts.browser.health()
    }

    /// The cluster's health, with `cluster:`.
    pub fn cluster(&self) -> Option<crate::cluster::ClusterHealth> {
        self.s.parts.leases.health()
    }

    pub fn recent(&self) -> Vec<Event> {
        self.s.recent.snapshot()
    }

    /// Runs finished with the status named `status`.
    pub fn runs_ended(&self, status: &str) -> u64 {
        self.s.parts.metrics.runs(status)
    }

    pub fn cycles(&self) -> u64 {
        self.s.parts.metrics.cycles()
    }

    /// The Prometheus text.
    pub fn metrics_text(&self) -> String {
        self.s.parts.metrics.render()
    }
}
