//! I6: crash safety of the state store. A child process writes state and
//! history in a loop and is killed with SIGKILL at random moments, 200
//! times. After every kill `state.json` must parse and hold either the last
//! document the child acknowledged or the one after it, and the history
//! must hold every acknowledged record.
//!
//! Then the same for a whole run (I9): a baton whose commit has returned is
//! killed before the run ends. On restart the target is `completed` with
//! that order, never `in_doubt`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use baton::id::RunId;
use baton::state::{self, RunRecord, StateStore, Status};
use rand::{Rng, SeedableRng};

const KILLS: usize = 200;

/// The child: writes until killed. Runs only when the parent starts it.
#[test]
#[ignore = "started by i6_state_file_survives_kill_9 as a child process"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var("BATON_CRASH_DIR") else {
        return;
    };
    let (store, _) = StateStore::open(Path::new(&dir)).expect("open store");
    let target = "t".into();
    loop {
        let before = store.snapshot().revision;
        store
            .update(&target, |t| {
                t.status = if before % 2 == 0 {
                    Status::Completed
                } else {
                    Status::Ready
                };
                t.last_order = Some(format!("order-{}", before + 1));
            })
            .expect("update");
        let rev = store.snapshot().revision;
        store
            .append_history(&RunRecord {
                run_id: RunId(rev),
                target: "t".into(),
                flow: "f".into(),
                started_at: SystemTime::now(),
                ended_at: SystemTime::now(),
                duration_ms: 1,
                status: Status::Completed,
                outcome: Some("completed".into()),
                order: Some(format!("order-{rev}")),
                price: None,
                error: None,
                committed: true,
                cancelled: None,
                // A long record, so kills land inside writes too.
                steps: vec![],
                screenshot: Some("x".repeat(4096)),
                trace: None,
                repeats: None,
                first_at: None,
            })
            .expect("append");
        println!("ack {rev}");
    }
}

#[test]
fn i6_state_file_survives_kill_9() {
    let _one = common::live::one_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut last_ack = 0u64;
    let mut kills_mid_write = 0;
    for i in 0..KILLS {
        let mut child = common::child(
            module_path!(),
            "crash_child_writer",
            &[("BATON_CRASH_DIR", dir.path().as_os_str())],
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    let _ = tx.send(n.parse::<u64>().unwrap());
                }
            }
        });
        // Let it write at least once, then kill it at a random moment.
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child wrote nothing");
        assert!(first > last_ack, "kill {i}: the child went back in time");
        std::thread::sleep(Duration::from_micros(rng.random_range(0..15_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        last_ack = rx.try_iter().last().unwrap_or(first).max(first);

        let doc = state::read_doc(dir.path())
            .unwrap_or_else(|e| panic!("kill {i}: state file unreadable: {e}"))
            .expect("state file exists");
        assert!(
            doc.revision == last_ack || doc.revision == last_ack + 1,
            "kill {i}: state holds revision {} but the last acknowledged was {last_ack}",
            doc.revision
        );
        if doc.revision == last_ack + 1 {
            kills_mid_write += 1;
        }
        assert_eq!(
            doc.targets["t"].last_order.as_deref(),
            Some(format!("order-{}", doc.revision).as_str()),
            "kill {i}: the document is a mix of two writes"
        );
        let history = state::read_history(dir.path(), usize::MAX).unwrap();
        let newest = history.first().map_or(0, |r| r.run_id.0);
        assert!(
            newest >= last_ack,
            "kill {i}: acknowledged record {last_ack} lost (newest {newest})"
        );
        last_ack = doc.revision;
    }
    // Some kills must have landed between a write and its acknowledgement,
    // or the test did not exercise anything.
    assert!(kills_mid_write > 0, "no kill landed inside a write");
    let (store, recovery) = StateStore::open(dir.path()).unwrap();
    assert_eq!(store.snapshot().revision, last_ack);
    let leftovers = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".tmp")
        })
        .count();
    assert_eq!(leftovers, 0, "temporary files were not cleaned up");
    eprintln!(
        "{KILLS} kills, {kills_mid_write} between a write and its ack, history repair: {recovery:?}"
    );
}

const RUN_KILLS: usize = 30;

/// The child of `a_kill_after_the_commit_answered_recovers_completed`: a
/// scheduler whose runs commit and then clear the cart slowly, printing
/// `answered ORDER` the moment each commit has returned.
#[test]
#[ignore = "started by a_kill_after_the_commit_answered_recovers_completed as a child process"]
fn crash_child_run() {
    use baton::flow::StepEnd;
    use std::io::Write;
    let Ok(dir) = std::env::var("BATON_CRASH_RUN_DIR") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut cfg = common::config(&["t"], common::flow(&["buy", "clear!"]));
        cfg.cycle.interval = (Duration::from_millis(100), Duration::from_millis(100));
        let h = common::Harness::in_dir(cfg, Path::new(&dir));
        h.steps.step("buy", |cx| async move {
            let order = format!("A-{}", cx.label);
            let placed = baton::rust_steps::commit(&cx, "order", async move { Ok(order) }).await?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "answered {}", placed.unwrap_or_default());
            let _ = out.flush();
            Ok(StepEnd::Continue)
        });
        h.steps.step("clear", |_cx| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(StepEnd::Continue)
        });
        h.run_cycles(u64::MAX).await;
    });
}

/// I9, crash-safe: `kill -9` at a random moment between a commit returning
/// and the run's end (the cart clearing after it). The commit's answer was
/// persisted as `committed` the moment it returned, so the next start
/// recovers the target as `completed` with that very order, not as
/// `in_doubt`. Guards: `RunCommit::done` persisting `committed`, and the
/// start-up recovery of `committed`.
#[test]
fn a_kill_after_the_commit_answered_recovers_completed() {
    let _one = common::live::one_at_a_time_blocking();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut mid_run = 0;
    for i in 0..RUN_KILLS {
        let mut child = common::child(
            module_path!(),
            "crash_child_run",
            &[("BATON_CRASH_RUN_DIR", dir.path().as_os_str())],
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(o) = line.strip_prefix("answered ") {
                    let _ = tx.send(o.to_owned());
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the child's run never committed");
        // Inside the 20 ms of cart clearing that follow, mostly.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..25_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let answered = rx.try_iter().last().unwrap_or(first);

        let before = state::read_doc(dir.path()).unwrap().unwrap();
        let before = before.targets["t"].clone();
        let (store, _) = StateStore::open(dir.path()).unwrap();
        let t = store.get("t");
        if before.status == Status::Committed {
            mid_run += 1;
            assert_eq!(
                (t.status, t.last_order.as_deref()),
                (Status::Completed, before.last_order.as_deref()),
                "kill {i}: a run whose commit answered did not recover as completed with its order"
            );
        }
        // Whatever run the kill cut, an order that was answered is never
        // lost: it is in the target's row or in the history.
        let in_history = store
            .history(usize::MAX)
            .unwrap()
            .iter()
            .any(|r| r.order.as_deref() == Some(answered.as_str()));
        assert!(
            in_history || t.last_order.as_deref() == Some(answered.as_str()),
            "kill {i}: order {answered} lost: {t:?}"
        );
        drop(store);
    }
    assert!(
        mid_run > 0,
        "no kill landed between a commit's answer and its run's end"
    );
    eprintln!("{RUN_KILLS} kills, {mid_run} between a commit's answer and the run's end");
}
