//! Counters and histograms for `/metrics`, in the Prometheus text format.
//!
//! One [`Metrics`] is shared by the scheduler, the runs, the reloader and
//! the browser; recording is a few atomic operations and never blocks.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabel {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScriptLabel {
    script: String,
}

/// Every metric baton exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cycles: Counter,
    runs: Family<StatusLabel, Counter>,
    run_seconds: Histogram,
    step_seconds: Family<ScriptLabel, Histogram>,
    wait_seconds: Histogram,
    wait_timeouts: Counter,
    reloads: Counter,
    reload_failures: Counter,
    browser_restarts: Counter,
    active_runs: Gauge,
    notifications: Family<NotificationLabel, Counter>,
    notifications_pending: Family<ChannelLabel, Gauge>,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("baton");
        let cycles = Counter::default();
        registry.register("cycles", "Cycles started", cycles.clone());
        let runs = Family::<StatusLabel, Counter>::default();
        registry.register(
            "runs",
            "Runs finished, by the status they left",
            runs.clone(),
        );
        let run_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "run_duration_seconds",
            "Duration of runs",
            run_seconds.clone(),
        );
        let step_seconds = Family::<ScriptLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(seconds_buckets())
        });
        registry.register(
            "step_duration_seconds",
            "Duration of steps, by script",
            step_seconds.clone(),
        );
        let wait_seconds = Histogram::new(seconds_buckets());
        registry.register(
            "cycle_wait_seconds",
            "Time each cycle waited for the previous runs to deregister",
            wait_seconds.clone(),
        );
        let wait_timeouts = Counter::default();
        registry.register(
            "cycle_wait_timeouts",
            "Waits that hit wait_for_active and cancelled a stuck run",
            wait_timeouts.clone(),
        );
        let reloads = Counter::default();
        registry.register("script_reloads", "Scripts reloaded", reloads.clone());
        let reload_failures = Counter::default();
        registry.register(
            "script_reload_failures",
            "Script reloads that failed to compile (the last good version was kept)",
            reload_failures.clone(),
        );
        let browser_restarts = Counter::default();
        registry.register(
            "browser_restarts",
            "Times the browser was relaunched",
            browser_restarts.clone(),
        );
        let active_runs = Gauge::default();
        registry.register(
            "active_runs",
            "Runs registered right now",
            active_runs.clone(),
        );
        let notifications = Family::<NotificationLabel, Counter>::default();
        registry.register(
            "notifications",
            "Notification deliveries by channel and result (delivered, failed and retried, rejected, expired, dropped_full, dropped_unwritten, suppressed)",
            notifications.clone(),
        );
        let notifications_pending = Family::<ChannelLabel, Gauge>::default();
        registry.register(
            "notifications_pending",
            "Notifications in the outbox still to deliver, by channel",
            notifications_pending.clone(),
        );
        Metrics {
            registry,
            cycles,
            runs,
            run_seconds,
            step_seconds,
            wait_seconds,
            wait_timeouts,
            reloads,
            reload_failures,
            browser_restarts,
            active_runs,
            notifications,
            notifications_pending,
        }
    }

    pub fn cycle_started(&self) {
        self.cycles.inc();
    }

    pub fn cycles(&self) -> u64 {
        self.cycles.get()
    }

    pub fn run_started(&self) {
        self.active_runs.inc();
    }

    /// `status` is the run's final status name (`completed`, `failed`, ...).
    pub fn run_finished(&self, status: &str, d: Duration) {
        self.active_runs.dec();
        self.runs
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .inc();
        self.run_seconds.observe(d.as_secs_f64());
    }

    pub fn runs(&self, status: &str) -> u64 {
        self.runs
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .get()
    }

    pub fn step_finished(&self, script: &str, d: Duration) {
        self.step_seconds
            .get_or_create(&ScriptLabel {
                script: script.into(),
            })
            .observe(d.as_secs_f64());
    }

    pub fn waited(&self, d: Duration, timed_out: bool) {
        self.wait_seconds.observe(d.as_secs_f64());
        if timed_out {
            self.wait_timeouts.inc();
        }
    }

    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads.inc();
        } else {
            self.reload_failures.inc();
        }
    }

    pub fn notification(&self, channel: &str, result: &str) {
        self.notifications
            .get_or_create(&NotificationLabel {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn notifications_pending(&self, channel: &str, n: usize) {
        self.notifications_pending
            .get_or_create(&ChannelLabel {
                channel: channel.to_owned(),
            })
            .set(n as i64);
    }

    pub fn browser_restarted(&self) {
        self.browser_restarts.inc();
    }

    /// The text exposition, as served at `/metrics`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_by_status() {
        let m = Metrics::new();
        m.cycle_started();
        m.run_started();
        m.run_finished("completed", Duration::from_millis(1500));
        let text = m.render();
        assert!(text.contains("baton_cycles_total 1"), "{text}");
        assert!(
            text.contains("baton_runs_total{status=\"completed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("baton_run_duration_seconds_sum 1.5"),
            "{text}"
        );
    }
}
