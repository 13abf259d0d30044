//! Costs that must not grow with what is behind them (issue 15, part 4):
//!
//! - reading the last 50 runs (`/api/runs`, `baton state`, the notifier's
//!   start-up catch-up) from a history of 10 thousand to 1 million lines,
//!   against the peer that parses the whole file (how it was read before);
//! - rewriting `state.json` once per completion with 10, 100 and 1,000
//!   targets.
//!
//! `cargo bench --bench history` (writes about 450 MB in a temporary
//! directory, then removes it). `BATON_BENCH_MAX_LINES` lowers the top.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use baton::id::{RunId, TargetId};
use baton::state::{self, RunRecord, StateStore, Status, StepRecord, StepResult};

fn record(i: u64) -> RunRecord {
    RunRecord {
        run_id: RunId(i),
        target: TargetId::new(format!("{}", 1000 + i % 7)),
        flow: "purchase".into(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(i * 30),
        ended_at: SystemTime::UNIX_EPOCH + Duration::from_secs(i * 30 + 2),
        duration_ms: 2100,
        status: Status::Ready,
        outcome: Some("out_of_stock".into()),
        order: None,
        price: None,
        error: None,
        committed: false,
        cancelled: None,
        steps: vec![
            StepRecord {
                script: "product_page".into(),
                generation: 3,
                duration_ms: 450,
                result: StepResult::Outcome,
                outcome: Some("out_of_stock".into()),
                error: None,
            },
            StepRecord {
                script: "clear_cart".into(),
                generation: 3,
                duration_ms: 820,
                result: StepResult::Ok,
                outcome: None,
                error: None,
            },
        ],
        screenshot: None,
        trace: None,
        repeats: None,
        first_at: None,
    }
}

/// How it was read before: every line parsed, the last `limit` kept.
fn whole_file(dir: &Path, limit: usize) -> usize {
    let f = std::fs::File::open(dir.join(state::HISTORY_FILE)).unwrap();
    let mut kept = std::collections::VecDeque::new();
    for line in BufReader::new(f).lines() {
        if let Ok(r) = serde_json::from_str::<RunRecord>(&line.unwrap()) {
            if kept.len() == limit {
                kept.pop_front();
            }
            kept.push_back(r);
        }
    }
    kept.len()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let max: u64 = std::env::var("BATON_BENCH_MAX_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(dir.path().join(state::HISTORY_FILE)).unwrap(),
    );
    let mut written = 0u64;
    println!("last 50 runs of a history of N lines (median of 5):");
    println!(
        "  {:>9}  {:>12}  {:>16}  {:>7}",
        "lines", "from the end", "whole file (was)", "ratio"
    );
    for n in [10_000u64, 100_000, 1_000_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        while written < n {
            let mut line = serde_json::to_vec(&record(written)).unwrap();
            line.push(b'\n');
            f.write_all(&line).unwrap();
            written += 1;
        }
        f.flush().unwrap();
        let tail = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    assert_eq!(state::read_history(dir.path(), 50).unwrap().len(), 50);
                    t.elapsed()
                })
                .collect(),
        );
        let whole = median(
            (0..5)
                .map(|_| {
                    let t = Instant::now();
                    assert_eq!(whole_file(dir.path(), 50), 50);
                    t.elapsed()
                })
                .collect(),
        );
        println!(
            "  {n:>9}  {:>9.3} ms  {:>13.1} ms  {:>6.4}",
            ms(tail),
            ms(whole),
            ms(tail) / ms(whole)
        );
    }
    drop(f);
    drop(dir);

    println!("state.json rewrite per completion (median of 200, fsyncs included):");
    for targets in [10usize, 100, 1_000] {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = StateStore::open(dir.path()).unwrap();
        let ids: Vec<TargetId> = (0..targets)
            .map(|i| TargetId::new(format!("t{i}")))
            .collect();
        store.ensure_targets(ids.iter()).unwrap();
        let d = median(
            (0..200)
                .map(|i| {
                    let t = Instant::now();
                    store
                        .update(&ids[i % targets], |t| {
                            t.status = Status::Completed;
                            t.runs += 1;
                        })
                        .unwrap();
                    t.elapsed()
                })
                .collect(),
        );
        let size = std::fs::metadata(dir.path().join(state::STATE_FILE))
            .unwrap()
            .len();
        println!(
            "  {targets:>5} targets: {:>7.3} ms  ({} KB)",
            ms(d),
            size / 1024
        );
    }
}
