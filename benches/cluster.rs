//! What coordinating on Redis costs a cycle: the claim, the lease
//! renewals, the check before `commit` with its `committing` marker,
//! `committed` and the release, against the same cycles without
//! `cluster:`.
//!
//! Runs the scheduler over the simulated browser (whose calls cost almost
//! nothing, so the cluster's own cost shows) for `BATON_BENCH_RUNS`
//! (default 300) cycles of one purchase each, in test mode, twice in the
//! same process: without a cluster, and with one on a `redis-server` the
//! bench starts on 127.0.0.1 with the durability scaling.md asks for
//! (append-only file, fsync on every write). Prints the time per cycle
//! (dispatch to completion) of each and their difference, which is what
//! a Chromium cycle of 1.3-2.1 s (benches/purchase.sh) gains.
//! `cargo bench --bench cluster`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use baton::browser::sim::SimBrowser;
use baton::cluster::{Cluster, ClusterConfig};
use baton::config::Config;
use baton::flow::{Flow, Step, StepEnd, Target};
use baton::id::TargetId;
use baton::metrics::Metrics;
use baton::notify::Notifier;
use baton::registry::Registry;
use baton::rust_steps::RustSteps;
use baton::scheduler::{Scheduler, SchedulerStatus};
use baton::state::StateStore;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let runs: u64 = std::env::var("BATON_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (redis, _redis_dir, url) = redis_server().await;
    // Alternate, so drift in the machine's load falls on both.
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..2 {
        off.push(measure(runs, None).await);
        let c = Cluster::new(ClusterConfig {
            redis: url.clone(),
            instance: "bench".into(),
            lease: Duration::from_secs(15),
            namespace: format!("bench{round}"),
        })
        .unwrap();
        on.push(measure(runs, Some(c)).await);
    }
    drop(redis);
    let off = ms(off.iter().sum::<Duration>() / 2);
    let on = ms(on.iter().sum::<Duration>() / 2);
    println!("per cycle over {runs} cycles, one purchase each (simulated browser):");
    println!("  without cluster   {off:>7.3} ms");
    println!("  with cluster      {on:>7.3} ms  (ratio {:.2})", on / off);
    println!(
        "  the cluster's cost: {:.3} ms per cycle, {:.2}% of a 1.3 s Chromium cycle",
        on - off,
        (on - off) / 1300.0 * 100.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A redis-server on a free port of 127.0.0.1, as the tests start it.
async fn redis_server() -> (tokio::process::Child, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server (apt-get install -y redis-server)");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(l) = lines.next_line().await.unwrap() {
        if l.contains("Ready to accept connections") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, dir, format!("redis://127.0.0.1:{port}/0"))
}

/// Wall time per cycle of `runs` cycles, each buying the one target.
async fn measure(runs: u64, cluster: Option<Cluster>) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config {
        state_dir: dir.path().to_owned(),
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
    let (state, _) = StateStore::open(dir.path()).unwrap();
    let state = Arc::new(state);
    state
        .ensure_targets(cfg.targets.iter().map(|t| &t.id))
        .unwrap();
    let steps = Arc::new(RustSteps::new());
    steps.step("buy", |cx| async move {
        baton::rust_steps::commit(&cx, "order", async move { Ok(format!("A-{}", cx.run_id)) })
            .await?;
        Ok(StepEnd::Continue)
    });
    let (_commands_tx, commands) = tokio::sync::mpsc::channel(4);
    let (status, _) = tokio::sync::watch::channel(SchedulerStatus::default());
    let (finished, mut rx) = tokio::sync::broadcast::channel(runs as usize + 8);
    let scheduler = Scheduler {
        config: Arc::new(ArcSwap::from_pointee(cfg)),
        registry: Arc::new(Registry::new(1)),
        state,
        browser: Arc::new(SimBrowser::default()),
        steps,
        metrics: Arc::new(Metrics::new()),
        shutdown: CancellationToken::new(),
        commands,
        status,
        cycles: Some(runs),
        seed: 1,
        finished: Some(finished),
        notifier: Notifier::off(),
        cluster,
    };
    let started = Instant::now();
    scheduler.run().await;
    let took = started.elapsed();
    let mut bought = 0;
    while let Ok(r) = rx.try_recv() {
        assert!(r.order.is_some(), "{r:?}");
        bought += 1;
    }
    assert_eq!(bought, runs, "every cycle buys");
    took / runs as u32
}
