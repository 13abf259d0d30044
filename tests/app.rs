//! A whole baton (as `baton run` assembles it) over the simulated browser:
//! flows.yaml hot reload, and the `state` commands reaching a running baton
//! through its dashboard.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use baton::app::{App, Options};
use baton::browser::sim::SimBrowser;
use baton::state::{RunRecord, Status};
use tokio::sync::broadcast;

fn project(targets: &[&str], extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/step.rhai"),
        "log(`run ${target.id}`);",
    )
    .unwrap();
    write_config(dir.path(), targets, extra);
    dir
}

fn write_config(dir: &std::path::Path, targets: &[&str], extra: &str) {
    let targets: String = targets
        .iter()
        .map(|t| format!("  - {{ id: \"{t}\", url: \"http://shop.test/p/{t}\" }}\n"))
        .collect();
    let yaml = format!(
        "cycle: {{ interval: 300ms, wait_for_active: 5s }}\nstate_dir: .baton\n{extra}targets:\n{targets}flows:\n  f:\n    steps: [step]\n"
    );
    // Write then rename, the way editors save.
    let tmp = dir.join(".flows.yaml.tmp");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(tmp, dir.join("flows.yaml")).unwrap();
}

async fn start(dir: &std::path::Path) -> App {
    common::init_tracing();
    let mut o = Options::new(dir.join("flows.yaml"));
    o.browser = Some(Arc::new(SimBrowser::default()));
    App::start(o).await.unwrap()
}

/// Waits (bounded) for a finished run of `target`.
async fn next_run_of(rx: &mut broadcast::Receiver<RunRecord>, target: &str) -> RunRecord {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match rx.recv().await {
                Ok(r) if r.target.as_str() == target => return r,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no run of `{target}`"))
}

/// A valid change to flows.yaml applies at the next cycle; an invalid one
/// is ignored and the running configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_yaml_reloads_at_the_next_cycle_and_bad_edits_are_ignored() {
    let dir = project(&["a"], "test_mode: true\ndashboard: off\n");
    let app = start(dir.path()).await;
    let mut runs = app.parts.finished.subscribe();
    let config = app.parts.config.clone();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());

    next_run_of(&mut runs, "a").await;
    write_config(dir.path(), &["a", "b"], "test_mode: true\ndashboard: off\n");
    let b = next_run_of(&mut runs, "b").await;
    assert_eq!(b.status, Status::Completed);
    assert_eq!(config.load().targets.len(), 2);

    // A broken edit: reported, ignored, cycles go on with both targets.
    std::fs::write(dir.path().join("flows.yaml"), "targets: [\n").unwrap();
    next_run_of(&mut runs, "a").await;
    next_run_of(&mut runs, "b").await;
    assert_eq!(
        config.load().targets.len(),
        2,
        "the broken edit replaced the config"
    );

    shutdown.cancel();
    task.await.unwrap();
}

/// Accounts own browser sessions and lock files from start-up, so an edit
/// that changes them is refused (the running configuration stays, and the
/// log says to restart) while the cycles go on, and a later edit that keeps
/// them applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_to_accounts_waits_for_a_restart() {
    let accounts = "accounts:\n  ada:\n    check: { script: step }\n";
    let dir = project(
        &["a"],
        &format!("test_mode: true\ndashboard: off\n{accounts}"),
    );
    let app = start(dir.path()).await;
    let mut runs = app.parts.finished.subscribe();
    let config = app.parts.config.clone();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());

    next_run_of(&mut runs, "a").await;
    write_config(
        dir.path(),
        &["a", "b"],
        &format!(
            "test_mode: true\ndashboard: off\n{accounts}  bob:\n    check: {{ script: step }}\n"
        ),
    );
    // A later edit that keeps the accounts applies (the refused one may be
    // coalesced into it; `app::needs_restart`'s own test covers the rule).
    write_config(
        dir.path(),
        &["a", "c"],
        &format!("test_mode: true\ndashboard: off\n{accounts}"),
    );
    next_run_of(&mut runs, "c").await;
    let cfg = config.load();
    assert_eq!(
        cfg.accounts.len(),
        1,
        "the accounts changed under a running baton"
    );
    assert!(cfg.target("b").is_none());

    shutdown.cancel();
    task.await.unwrap();
}

/// `baton state reset` and `state resolve` while `baton run` runs: the state
/// file has one writer, so the CLI goes through the running baton's
/// dashboard, and the scheduler applies the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_commands_reach_a_running_baton() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = project(&["a"], &format!("dashboard: 127.0.0.1:{port}\n"));
    let app = start(dir.path()).await;
    let mut runs = app.parts.finished.subscribe();
    let state = app.parts.state.clone();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());

    // Not test mode: once bought, `a` is not run again...
    assert_eq!(next_run_of(&mut runs, "a").await.status, Status::Completed);
    let baton = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // ...and resolving it is refused (it is not in doubt), by the scheduler.
    let o = baton(&["state", "resolve", "a", "--as", "ready"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("target `a` is `completed`, not `in_doubt`")
    );
    // ...until an operator resets it.
    let o = baton(&["state", "reset", "a"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "target `a` reset (through the running baton)"
    );
    let again = next_run_of(&mut runs, "a").await;
    assert_eq!(again.status, Status::Completed);
    assert_eq!(state.get("a").runs, 2);

    // `state show` reads the file while it runs.
    let o = baton(&["state"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("a       completed"));

    shutdown.cancel();
    task.await.unwrap();
}

/// Issue 15: every run leaves a trace, and only the last `traces.keep` are
/// kept. A failed run's trace says which call failed and keeps the page's
/// DOM and the screenshot; the dashboard serves it; a secret the script
/// used reaches neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_leave_bounded_traces_and_a_failed_one_keeps_its_dom() {
    const SECRET: &str = "tok-8bd1c0ffee";
    let dir = project(
        &["a"],
        &format!(
            "dashboard: 127.0.0.1:0\ntraces: {{ keep: 3 }}\nsecrets:\n  tok: {{ env: BATON_TEST_UNSET_TOKEN, default: \"{SECRET}\" }}\n"
        ),
    );
    std::fs::write(
        dir.path().join("scripts/step.rhai"),
        "navigate(target.url + \"?t=\" + secret(\"tok\"));\nwait_for([\"#gone\", \"#also-gone\"], 50);",
    )
    .unwrap();
    let app = start(dir.path()).await;
    let dash = format!("http://{}", app.dashboard.as_ref().unwrap().addr);
    let mut runs = app.parts.finished.subscribe();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());
    let mut last = None;
    for _ in 0..5 {
        last = Some(next_run_of(&mut runs, "a").await);
    }
    let last = last.unwrap();
    assert_eq!(last.status, Status::Failed);
    // Served at once (the next run needs a whole interval to start).
    let body = reqwest::get(format!("{dash}/api/runs/{}/trace", last.run_id.0))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"wait_for\""), "{body}");
    let gone = reqwest::get(format!("{dash}/api/runs/1/trace"))
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert!(gone.text().await.unwrap().contains("only the last runs"));
    shutdown.cancel();
    task.await.unwrap();

    // The newest three of all the runs are kept.
    let state = dir.path().join(".baton");
    let history = baton::state::read_history(&state, usize::MAX).unwrap();
    let mut newest: Vec<String> = history
        .iter()
        .take(3)
        .map(|r| format!("{}.json", r.run_id))
        .collect();
    newest.sort();
    let traces = state.join("traces");
    let mut kept: Vec<String> = std::fs::read_dir(&traces)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert!(history.len() >= 5);
    assert_eq!(kept, newest);

    let latest = &history[0];
    let t = baton::trace::TraceStore::read(&state, latest.run_id).unwrap();
    assert_eq!(t.status, "failed");
    assert_eq!(t.steps.len(), 1);
    assert_eq!(t.steps[0].result, "failed");
    let names: Vec<(&str, bool)> = t.calls.iter().map(|c| (c.name.as_str(), c.ok)).collect();
    // The failure's screenshot and DOM are read after the failed call.
    assert_eq!(
        &names[..3],
        [("open_page", true), ("navigate", true), ("wait_for", false)],
        "{t:#?}"
    );
    assert!(t.calls[2].result.contains("not found"), "{t:#?}");
    assert!(t.calls[2].took_ms >= 50.0, "{t:#?}");
    assert!(
        t.dom
            .as_deref()
            .is_some_and(|d| d.contains("simulated page")),
        "{t:#?}"
    );
    assert_eq!(t.screenshot, latest.screenshot);
    assert!(t.screenshot.is_some());
    let on_disk = std::fs::read_to_string(traces.join(format!("{}.json", latest.run_id))).unwrap();
    for text in [&body, &on_disk] {
        assert!(!text.contains(SECRET), "a secret in a trace: {text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
