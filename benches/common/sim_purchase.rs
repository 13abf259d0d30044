//! A scheduler that buys one target every cycle over the simulated
//! browser (whose calls cost almost nothing), for benches that measure
//! what a part around the run costs: notifications, the cluster. Included
//! by those benches with `#[path]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::browser::sim::SimBrowser;
use baton::config::Config;
use baton::flow::{Flow, Step, StepEnd, Target};
use baton::id::TargetId;
use baton::metrics::Metrics;
use baton::parts::Parts;
use baton::rust_steps::RustSteps;
use baton::scheduler::{Scheduler, SchedulerStatus};
use baton::state::{RunRecord, StateStore};
use tokio_util::sync::CancellationToken;

/// `runs` cycles in test mode with a 1 ms interval, each buying target
/// `t` through `commit`, with state in `dir`; every finished run is sent
/// on the returned channel.
pub(crate) fn scheduler(
    dir: &Path,
    runs: u64,
    metrics: Arc<Metrics>,
    notifier: baton::notify::Notifier,
    cluster: Option<baton::cluster::Cluster>,
) -> (Scheduler, tokio::sync::broadcast::Receiver<RunRecord>) {
    let mut cfg = Config {
        state_dir: dir.to_owned(),
        test_mode: true,
        dashboard: None,
        ..Config::default()
    };
    cfg.cycle.interval = (Duration::from_millis(1), Duration::from_millis(1));
    cfg.targets = vec![Arc::new(Target {
        id: TargetId::new("t"),
        url: "http://shop.test/p/t".into(),
        flow: "buy".into(),
        account: None,
        params: serde_json::Map::new(),
        budget: baton::budget::Budget::NoLimit,
        schedule: baton::schedule::Schedule::default(),
    })];
    cfg.flows = BTreeMap::from([(
        "buy".to_owned(),
        Arc::new(Flow {
            name: "buy".into(),
            monitor: None,
            steps: vec![Step {
                script: "buy".into(),
                always: false,
            }],
            outcomes: BTreeMap::new(),
            account: None,
        }),
    )]);
    let (state, _) = StateStore::open(dir).unwrap();
    let state = Arc::new(state);
    state
        .ensure_targets(cfg.targets.iter().map(|t| &t.id))
        .unwrap();
    let steps = Arc::new(RustSteps::new());
    steps.step("buy", |cx| async move {
        let order = format!("A-{}", cx.label);
        baton::rust_steps::commit(&cx, "order", async move { Ok(order) }).await?;
        Ok(StepEnd::Continue)
    });
    // Nobody sends commands; dropping the sender is fine.
    let (_commands_tx, commands) = tokio::sync::mpsc::channel(4);
    let (status, _) = tokio::sync::watch::channel(SchedulerStatus::default());
    let (finished, rx) = tokio::sync::broadcast::channel(runs as usize + 8);
    let leases: Arc<dyn baton::cluster::Leases> = match cluster {
        Some(c) => Arc::new(c),
        None => Arc::new(baton::cluster::Local),
    };
    let parts = Parts {
        metrics,
        notifier,
        leases,
        finished,
        ..Parts::new(cfg, state, Arc::new(SimBrowser::default()), steps)
    };
    let scheduler = Scheduler {
        parts: Arc::new(parts),
        shutdown: CancellationToken::new(),
        commands,
        status,
        cycles: Some(runs),
        seed: 1,
    };
    (scheduler, rx)
}
