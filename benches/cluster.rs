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

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::cluster::{Cluster, ClusterConfig};
use baton::metrics::Metrics;
use baton::notify::Notifier;

#[path = "common/sim_purchase.rs"]
mod sim_purchase;
// The tests' own redis-server, started the same way; the bench uses
// only its start.
#[allow(dead_code)]
#[path = "../tests/common/redis.rs"]
mod redis_server;
use redis_server::Redis;

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
    let redis = Redis::start().await;
    let url = redis.url();
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

/// Wall time per cycle of `runs` cycles, each buying the one target.
async fn measure(runs: u64, cluster: Option<Cluster>) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let (scheduler, mut rx) = sim_purchase::scheduler(
        dir.path(),
        runs,
        Arc::new(Metrics::new()),
        Notifier::off(),
        cluster,
    );
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
