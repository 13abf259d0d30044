//! I6: crash safety of the state store. A child process writes state and
//! history in a loop and is killed with SIGKILL at random moments, 200
//! times. After every kill `state.json` must parse and hold either the last
//! document the child acknowledged or the one after it, and the history
//! must hold every acknowledged record.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
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
                error: None,
                committed: true,
                cancelled: None,
                // A long record, so kills land inside writes too.
                steps: vec![],
                screenshot: Some("x".repeat(4096)),
            })
            .expect("append");
        println!("ack {rev}");
    }
}

#[test]
fn i6_state_file_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let mut last_ack = 0u64;
    let mut kills_mid_write = 0;
    for i in 0..KILLS {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "crash_child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("BATON_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
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
        let newest = history.first().map(|r| r.run_id.0).unwrap_or(0);
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
