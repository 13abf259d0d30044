//! Micro-benchmarks of baton's own overheads, each next to its peer:
//!
//! - one primitive call through the script bridge (Rhai -> blocking thread
//!   -> async page -> back) with a page that does nothing, against a plain
//!   Rhai call of a native no-op function;
//! - cancelling a script stuck in `loop {}` (cancel to script ended);
//! - save-to-swap: writing a script file until the watcher has swapped the
//!   new version in;
//! - hand-off: a run's deregistration to the waiting cycle waking.
//!
//! `cargo bench --bench bridge` prints medians; docs/benchmarks.md has
//! the numbers and targets. Nothing here asserts: the machine is shared and
//! noisy, so compare ratios within one run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use baton::browser::{Condition, Page, PageError, Selectors};
use baton::flow::{StepContext, Target, Timeouts};
use baton::id::SessionId;
use baton::registry::{Registration, Registry};
use baton::script::{Probe, ScriptHost};
use tokio_util::sync::CancellationToken;

/// A page whose every call returns at once.
struct NoopPage;

#[async_trait]
impl Page for NoopPage {
    async fn navigate(&self, _: &str, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn reload(&self, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn url(&self) -> Result<String, PageError> {
        Ok(String::new())
    }
    async fn title(&self) -> Result<String, PageError> {
        Ok(String::new())
    }
    async fn wait_for(&self, _: &Selectors, _: Duration) -> Result<usize, PageError> {
        Ok(0)
    }
    async fn document_status(&self) -> Option<baton::browser::DocumentStatus> {
        None
    }
    async fn exists(&self, _: &Selectors) -> Result<bool, PageError> {
        Ok(true)
    }
    async fn count(&self, _: &Selectors) -> Result<usize, PageError> {
        Ok(1)
    }
    async fn text(&self, _: &Selectors, _: Duration) -> Result<String, PageError> {
        Ok(String::new())
    }
    async fn attr(&self, _: &Selectors, _: &str, _: Duration) -> Result<Option<String>, PageError> {
        Ok(None)
    }
    async fn value(&self, _: &Selectors, _: Duration) -> Result<String, PageError> {
        Ok(String::new())
    }
    async fn wait_until(&self, _: &Condition, _: Duration) -> Result<serde_json::Value, PageError> {
        Ok(serde_json::Value::Null)
    }
    async fn network_idle(&self, _: Duration, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn click(&self, _: &Selectors, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn fill(&self, _: &Selectors, _: &str, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn select(&self, _: &Selectors, _: &str, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn press(&self, _: &str, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn click_at(&self, _: f64, _: f64, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn type_text(&self, _: &str, _: Duration) -> Result<(), PageError> {
        Ok(())
    }
    async fn screencast(&self) -> Result<tokio::sync::mpsc::Receiver<Vec<u8>>, PageError> {
        Err(PageError::Other("no pixels".into()))
    }
    async fn eval(&self, _: &str, _: Duration) -> Result<serde_json::Value, PageError> {
        Ok(serde_json::Value::Null)
    }
    async fn screenshot(&self, _: Duration) -> Result<Vec<u8>, PageError> {
        Ok(Vec::new())
    }
    async fn html(&self, _: Duration) -> Result<String, PageError> {
        Ok(String::new())
    }
    async fn close(&self) {}
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn target() -> Arc<Target> {
    Arc::new(Target {
        id: "b".into(),
        url: "http://bench/p/b".into(),
        flow: "f".into(),
        account: None,
        params: serde_json::Map::new(),
        budget: baton::budget::Budget::NoLimit,
        schedule: baton::schedule::Schedule::default(),
    })
}

fn run_args(page: Option<Arc<dyn Page>>, cancel: CancellationToken) -> StepContext {
    StepContext {
        label: "bench".into(),
        page,
        target: target(),
        cancel,
        commit: None,
        timeouts: Timeouts::default(),
        account: None,
    }
}

async fn primitive_call(host: &ScriptHost) {
    const N: usize = 20_000;
    let page: Arc<dyn Page> = Arc::new(NoopPage);
    let mut bridged = Vec::new();
    let mut plain = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        host.run_script(
            "calls",
            run_args(Some(page.clone()), CancellationToken::new()),
            Probe::default(),
        )
        .await
        .unwrap();
        bridged.push(t.elapsed().as_secs_f64() / N as f64);
        let t = Instant::now();
        host.run_script(
            "plain",
            run_args(Some(page.clone()), CancellationToken::new()),
            Probe::default(),
        )
        .await
        .unwrap();
        plain.push(t.elapsed().as_secs_f64() / N as f64);
    }
    let (b, p) = (median(bridged), median(plain));
    println!(
        "primitive call through the bridge (no-op page): {:.2} µs/call; plain Rhai native call: {:.3} µs/call; ratio {:.0}x  (target: < 20 µs)",
        b * 1e6,
        p * 1e6,
        b / p
    );
}

async fn step_overhead(host: &ScriptHost) {
    let page: Arc<dyn Page> = Arc::new(NoopPage);
    let mut times = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        host.run_script(
            "empty",
            run_args(Some(page.clone()), CancellationToken::new()),
            Probe::default(),
        )
        .await
        .unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "one step of an empty script (engine set-up, blocking thread, scope): median {:.0} µs",
        median(times) * 1e6
    );
}

async fn cancel_latency(host: &ScriptHost) {
    let mut lat = Vec::new();
    for _ in 0..15 {
        let cancel = CancellationToken::new();
        let h = host.clone();
        let c = cancel.clone();
        let run = tokio::spawn(async move {
            h.run_script("spin", run_args(None, c), Probe::default())
                .await
        });
        // Let it spin for a moment first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = Instant::now();
        cancel.cancel();
        let _ = run.await.unwrap();
        lat.push(t.elapsed().as_secs_f64());
    }
    println!(
        "cancel a script in `loop {{}}`: median {:.2} ms, worst {:.2} ms  (target: < 100 ms)",
        median(lat.clone()) * 1e3,
        lat.iter().copied().fold(0.0, f64::max) * 1e3
    );
}

async fn reload_latency(host: &ScriptHost, dir: &std::path::Path) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _w = baton::script::reload::watch(host.clone(), move |r| {
        if !r.changed.is_empty() {
            let _ = tx.send(Instant::now());
        }
    })
    .unwrap();
    let mut lat = Vec::new();
    let mut rename_lat = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        if i % 2 == 0 {
            std::fs::write(dir.join("edit.rhai"), format!("{}", i + 1)).unwrap();
        } else {
            let tmp = dir.join(".edit.rhai.swp");
            std::fs::write(&tmp, format!("{}", i + 1)).unwrap();
            std::fs::rename(&tmp, dir.join("edit.rhai")).unwrap();
        }
        let swapped = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let d = swapped.duration_since(t).as_secs_f64();
        if i % 2 == 0 {
            lat.push(d);
        } else {
            rename_lat.push(d);
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        while rx.try_recv().is_ok() {}
    }
    println!(
        "save to swap: plain write {:.1} ms, write-and-rename {:.1} ms (median; debounce {} ms)  (target: < 100 ms)",
        median(lat) * 1e3,
        median(rename_lat) * 1e3,
        baton::watch::DEBOUNCE.as_millis()
    );
}

async fn handoff_latency() {
    let registry = Arc::new(Registry::default());
    let mut lat = Vec::new();
    let mut poll_lat = Vec::new();
    for _ in 0..200 {
        let g = registry
            .register(Registration {
                target: "t".into(),
                session: SessionId(0),
                account: None,
                flow: "f".into(),
                versions: vec![],
            })
            .unwrap();
        let r = registry.clone();
        let waiter = tokio::spawn(async move {
            r.wait_idle(Duration::from_secs(5)).await.unwrap();
            Instant::now()
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        let dropped = Instant::now();
        drop(g);
        let woke = waiter.await.unwrap();
        lat.push(woke.duration_since(dropped).as_secs_f64());
    }
    // The peer: the seed's approach, checking once a second, averages half
    // a second; here at 1 ms polling to show the order of magnitude.
    for _ in 0..50 {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = flag.clone();
        let waiter = tokio::spawn(async move {
            while !f.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(3)).await;
        let set = Instant::now();
        flag.store(true, std::sync::atomic::Ordering::SeqCst);
        poll_lat.push(waiter.await.unwrap().duration_since(set).as_secs_f64());
    }
    println!(
        "hand-off, deregistration to waiter awake: median {:.1} µs; a 1 ms polling loop: {:.1} µs; ratio {:.0}x  (target: < 1 ms)",
        median(lat.clone()) * 1e6,
        median(poll_lat.clone()) * 1e6,
        median(poll_lat) / median(lat)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("calls.rhai"),
            "for i in 0..20000 { url(); }",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("plain.rhai"),
            "for i in 0..20000 { abs(i); }",
        )
        .unwrap();
        std::fs::write(dir.path().join("spin.rhai"), "loop { }").unwrap();
        std::fs::write(dir.path().join("empty.rhai"), "").unwrap();
        std::fs::write(dir.path().join("edit.rhai"), "0").unwrap();
        let host = ScriptHost::builder(dir.path()).build();
        primitive_call(&host).await;
        step_overhead(&host).await;
        cancel_latency(&host).await;
        reload_latency(&host, dir.path()).await;
        handoff_latency().await;
    });
}
