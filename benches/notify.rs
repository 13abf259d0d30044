//! Does a slow or dead notification receiver slow runs? It must not:
//! runs only queue events, and senders deliver them on their own tasks.
//!
//! Runs the scheduler over the simulated browser for `BATON_BENCH_RUNS`
//! (default 200) runs, each placing an order (so each one queues an
//! `order_placed` message), three ways in the same process: without
//! notifications, with a webhook receiver that takes 2 s per request, and
//! with one that refuses connections. Prints the median and p95 run
//! duration of each and their ratios to the first. `cargo bench --bench
//! notify`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton::metrics::Metrics;
use baton::notify::channel::{Channel, ChannelKind};
use baton::notify::{Notifier, NotifyConfig};

#[path = "common/sim_purchase.rs"]
mod sim_purchase;

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
        .unwrap_or(200);
    let slow = slow_receiver(Duration::from_secs(2)).await;
    // A port nothing listens on: every delivery is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let off = measure(runs, None).await;
    let slowed = measure(runs, Some(&format!("{slow}/hook"))).await;
    let refused = measure(runs, Some(&format!("{dead}/hook"))).await;
    println!("run duration over {runs} runs (each queues an order_placed message):");
    for (name, d) in [
        ("no notifications", &off),
        ("receiver takes 2 s", &slowed),
        ("receiver refuses", &refused),
    ] {
        println!(
            "  {name:<20} median {:>7.3} ms  p95 {:>7.3} ms  ratio to none: {:.2}",
            ms(d.0),
            ms(d.1),
            ms(d.0) / ms(off.0)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A webhook receiver that answers each request after `delay`.
async fn slow_receiver(delay: Duration) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        "ok"
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

/// Median and p95 of `runs` runs' durations.
async fn measure(runs: u64, hook: Option<&str>) -> (Duration, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (notifier, tasks) = match hook {
        Some(url) => {
            let channel = Channel {
                name: "hook".into(),
                kind: ChannelKind::Webhook {
                    url: url.to_owned(),
                    headers: Vec::new(),
                    template: None,
                },
                min_gap: Duration::ZERO,
            };
            let n = NotifyConfig {
                channels: BTreeMap::from([("hook".to_owned(), Arc::new(channel))]),
                retry: (Duration::from_millis(100), Duration::from_secs(1)),
                ..NotifyConfig::default()
            };
            let (n, t) = Notifier::start(
                n,
                dir.path(),
                baton::secrets::Secrets::default(),
                Arc::new(baton::redact::Redactor::new()),
                metrics.clone(),
            );
            (n, Some(t))
        }
        None => (Notifier::off(), None),
    };
    let (scheduler, mut rx) = sim_purchase::scheduler(dir.path(), runs, metrics, notifier, None);
    scheduler.run().await;
    let mut d = Vec::new();
    while let Ok(r) = rx.try_recv() {
        d.push(r.ended_at.duration_since(r.started_at).unwrap_or_default());
    }
    if let Some(t) = tasks {
        t.stop(Duration::ZERO).await;
    }
    d.sort();
    (d[d.len() / 2], d[d.len() * 95 / 100])
}
