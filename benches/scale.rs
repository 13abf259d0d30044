//! Cost as targets grow (issue 15, part 4): one `baton run` with 10, 100
//! and 1,000 targets, monitors only (every target watches an out-of-stock
//! product of the embedded demo shop through the shipped HTML monitor, so
//! no run starts), and for each: the cycle time, baton's peak memory, and
//! the latency of `GET /api/status` and of the first event on the SSE
//! stream.
//!
//! `cargo bench --bench scale` (release build of baton; no browser is
//! started, since no target is in stock). `BATON_BENCH_TARGETS=10,100`
//! chooses the sizes.

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let sizes: Vec<usize> = std::env::var("BATON_BENCH_TARGETS")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "one baton, N targets, monitors only (cycle interval 100ms, so a cycle lasts as long as its monitors):"
    );
    println!(
        "  {:>6}  {:>11}  {:>10}  {:>16}  {:>14}",
        "targets", "cycle", "peak RSS", "/api/status p50", "SSE first event"
    );
    for n in sizes {
        let r = rt.block_on(measure(n));
        println!(
            "  {n:>6}  {:>8.0} ms  {:>7.1} MB  {:>13.2} ms  {:>11.2} ms",
            r.cycle.as_secs_f64() * 1000.0,
            r.rss_kb as f64 / 1024.0,
            r.status.as_secs_f64() * 1000.0,
            r.sse.as_secs_f64() * 1000.0
        );
    }
}

struct Figures {
    cycle: Duration,
    rss_kb: u64,
    status: Duration,
    sse: Duration,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

async fn measure(n: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    copy_dir(&root.join("scripts"), &dir.path().join("scripts"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let targets: String = (0..n)
        .map(|i| format!("  - {{ id: \"w{i}\", url: /p/1003, max_price: 20.0 }}\n"))
        .collect();
    let yaml = format!(
        "cycle: {{ interval: 100ms }}\nstate_dir: .baton\ndashboard: 127.0.0.1:{port}\ndemo_shop: {{ port: 0 }}\nsecrets:\n  card_number: {{ env: NO_SUCH_VAR, default: \"4242424242424242\" }}\n  card_cvv: {{ env: NO_SUCH_VAR, default: \"123\" }}\ntargets:\n{targets}flows:\n  purchase:\n    monitor: stock_check\n    steps: [product_page, checkout, {{ script: clear_cart, always: true }}]\n    outcomes: {{ out_of_stock: retry, price_too_high: retry }}\n"
    );
    std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run"])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let cycle_of = |v: &serde_json::Value| v["scheduler"]["cycle"].as_u64().unwrap_or(0);
    let status = || async {
        let t = Instant::now();
        let v: serde_json::Value = client
            .get(format!("{base}/api/status"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        Some((v, t.elapsed()))
    };
    // Warm up: two cycles done.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut latencies = Vec::new();
    let (mut c0, mut t0) = (0, Instant::now());
    loop {
        assert!(
            Instant::now() < deadline,
            "baton with {n} targets never got going"
        );
        if let Some((v, took)) = status().await {
            latencies.push(took);
            if cycle_of(&v) >= 2 && c0 == 0 {
                c0 = cycle_of(&v);
                t0 = Instant::now();
            }
            if c0 > 0 && cycle_of(&v) >= c0 + 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cycle = t0.elapsed() / 3;
    // The SSE stream: connect, time to the first event.
    let t = Instant::now();
    let mut resp = client
        .get(format!("{base}/api/events"))
        .send()
        .await
        .unwrap();
    let _first = resp.chunk().await.unwrap();
    let sse = t.elapsed();
    let rss_kb = peak_rss_kb(pid).unwrap_or(0);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let _ = child.wait();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    if err.contains("ERROR") {
        eprintln!("{err}");
    }
    latencies.sort();
    Figures {
        cycle,
        rss_kb,
        status: latencies[latencies.len() / 2],
        sse,
    }
}
