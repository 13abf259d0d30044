//! Notifications, against real local receivers (an HTTP endpoint that
//! records every request and can be down or slow, and an SMTP server):
//! every event kind in every channel's format, a running baton's own
//! events, at-least-once delivery across `kill -9` and across a receiver
//! that is down for a while, `Retry-After`, and secrets kept out of bodies.

use crate::common;
use crate::common::receiver::{Receiver, Seen, Smtp, delivered};

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use baton::config::Config;
use baton::flow::{StepEnd, StepError};
use baton::metrics::Metrics;
use baton::notify::{Event, Kind, Notifier, NotifyConfig};
use baton::redact::Redactor;
use baton::state::RunRecord;

const WAIT: Duration = Duration::from_secs(20);

/// A `notify:` section read through flows.yaml, as a user writes it (so
/// the config pass is exercised too), with its secrets.
fn notify_config(section: &str) -> (NotifyConfig, baton::secrets::Secrets) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(dir.path().join("scripts/step.rhai"), "").unwrap();
    let yaml = format!(
        "secrets:\n  api_key: {{ env: BATON_TEST_NO_SUCH_VAR, default: \"k-123-secret\" }}\n{section}targets:\n  - {{ id: a, url: \"http://shop.test/p/a\" }}\nflows:\n  f:\n    steps: [step]\n"
    );
    let path = dir.path().join("flows.yaml");
    std::fs::write(&path, yaml).unwrap();
    let cfg = Config::load(&path, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    (cfg.notify.expect("a notify section"), cfg.secrets)
}

/// Starts a notifier over `state_dir` with a redactor that knows the
/// secrets and credentials, as `baton run` sets it up.
fn start(
    cfg: NotifyConfig,
    secrets: baton::secrets::Secrets,
    state_dir: &Path,
) -> (Notifier, baton::notify::Running) {
    start_with(cfg, secrets, state_dir, Arc::new(Metrics::new()))
}

fn start_with(
    cfg: NotifyConfig,
    secrets: baton::secrets::Secrets,
    state_dir: &Path,
    metrics: Arc<Metrics>,
) -> (Notifier, baton::notify::Running) {
    let redactor = Arc::new(Redactor::new());
    for v in cfg.credentials().into_iter().chain(secrets.values()) {
        redactor.add(v);
    }
    Notifier::start(cfg, state_dir, secrets, redactor, metrics)
}

fn kinds(seen: &[Seen], path: &str, field: &str) -> BTreeSet<String> {
    seen.iter()
        .filter(|s| s.path == path && s.delivered())
        .map(|s| s.json()[field].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every event kind a run, the scheduler and the browser produce reaches
/// every channel, each in its own format: the generic webhook's JSON (and a
/// template), Discord, Slack, ntfy (with its token), Apprise, and email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_reaches_every_channel_in_its_format() {
    let r = Receiver::start().await;
    let smtp = Smtp::start().await;
    let u = &r.url;
    let (ncfg, secrets) = notify_config(&format!(
        r#"notify:
  retry: {{ first: 50ms, max: 200ms }}
  failures_in_a_row: 2
  link: http://baton.example/
  channels:
    hook: {{ type: webhook, url: "{u}/hook" }}
    templated: {{ type: webhook, url: "{u}/templated", template: '{{"msg": "{{{{title}}}}", "key": "{{{{secret.api_key}}}}"}}' }}
    discord: {{ type: discord, url: "{u}/discord", min_gap: 0s }}
    slack: {{ type: slack, url: "{u}/slack", min_gap: 0s }}
    ntfy: {{ type: ntfy, server: "{u}/", topic: baton-alerts, token: {{ secret: api_key }} }}
    apprise: {{ type: apprise, url: "{u}/notify/baton", tag: ops }}
    mail: {{ type: email, host: 127.0.0.1, port: {}, tls: none, username: baton, password: {{ secret: api_key }}, from: "baton <baton@example.com>", to: ops@example.com }}
"#,
        smtp.port
    ));

    let mut flow = common::flow(&["buy"]);
    Arc::make_mut(&mut flow).monitor = Some("watch".into());
    let mut cfg = common::config(&["bought", "doubt", "flaky"], flow);
    cfg.test_mode = false;
    cfg.cycle.interval = (Duration::from_millis(10), Duration::from_millis(10));
    // `doubt`'s session stays quarantined (I9): the others need their own.
    cfg.cycle.max_concurrent_runs = 3;
    let h = common::Harness::new(cfg);
    let (notifier, tasks) = start(ncfg, secrets, h.dir.path());
    *h.notifier.lock().unwrap() = notifier.clone();
    // `bought` is out of stock in cycle 1 and back in cycle 2: a restock.
    let cycle = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let c = cycle.clone();
    h.steps.monitor("watch", move |cx| {
        let c = c.clone();
        async move {
            if cx.target.id.as_str() == "bought" {
                return Ok(c.fetch_add(1, std::sync::atomic::Ordering::SeqCst) > 0);
            }
            Ok(true)
        }
    });
    h.steps.step("buy", |cx| async move {
        match cx.target.id.as_str() {
            "bought" => {
                baton::rust_steps::commit(&cx, "order", async { Ok("A-77".to_owned()) }).await?;
                Ok(StepEnd::Continue)
            }
            "doubt" => {
                baton::rust_steps::commit(&cx, "order", async {
                    Err(StepError::failed("the shop's answer was lost"))
                })
                .await?;
                Ok(StepEnd::Continue)
            }
            _ => Err(StepError::failed("the page changed")),
        }
    });
    h.run_cycles(2).await;

    // The browser: a relaunch, and a launch that fails.
    let (tx, rx) = tokio::sync::watch::channel(health("not_started", 0, None));
    let watcher = tokio::spawn(baton::notify::watch_browser(rx, notifier.clone()));
    for (state, restarts, err) in [
        ("running", 0, None),
        ("dead", 0, Some("the browser exited")),
        ("restarting", 1, Some("the browser exited")),
        ("running", 1, None),
        ("restarting", 2, None),
        ("dead", 2, Some("no Chromium found")),
    ] {
        tx.send(health(state, restarts, err)).unwrap();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A login that did not take, as its run's record says.
    let mut rec = h.history()[0].clone();
    rec.run_id = baton::id::RunId(999);
    rec.status = baton::state::Status::Failed;
    rec.outcome = Some("logged_out".into());
    rec.error = Some("the shop said: wrong password".into());
    notifier.run_finished(&rec);

    let want: BTreeSet<String> = [
        Kind::OrderPlaced,
        Kind::InDoubt,
        Kind::TargetFailing,
        Kind::Restock,
        Kind::BrowserRelaunched,
        Kind::BrowserUnreachable,
        Kind::LoggedOut,
    ]
    .iter()
    .map(|k| k.as_str().to_owned())
    .collect();
    let n = want.len();
    let seen = r
        .wait_until(WAIT, |s| {
            [
                "/hook",
                "/templated",
                "/discord",
                "/slack",
                "/",
                "/notify/baton",
            ]
            .iter()
            .all(|p| s.iter().filter(|x| x.path == *p && x.delivered()).count() >= n)
        })
        .await;
    watcher.abort();

    // The generic webhook: the event as JSON, with what an operator needs.
    assert_eq!(kinds(&seen, "/hook", "event"), want);
    let hook: Vec<serde_json::Value> = seen
        .iter()
        .filter(|s| s.path == "/hook")
        .map(Seen::json)
        .collect();
    let of = |k: &str| hook.iter().find(|v| v["event"] == k).unwrap().clone();
    let placed = of("order_placed");
    assert_eq!(placed["order"], "A-77");
    assert_eq!(placed["target"], "bought");
    assert_eq!(
        placed["id"],
        format!("run-{}-order_placed", placed["run_id"]),
        "run events carry ids derived from the run"
    );
    let doubt = of("in_doubt");
    assert_eq!(doubt["link"], "http://baton.example/");
    let command = doubt["command"].as_str().unwrap();
    assert!(
        command.contains("baton state resolve doubt --as completed")
            && command.contains("baton state resolve doubt --as ready"),
        "{command}"
    );
    assert!(
        of("target_failing")["title"]
            .as_str()
            .unwrap()
            .contains("2 times in a row")
    );
    assert_eq!(of("restock")["target"], "bought");
    assert!(
        of("browser_unreachable")["body"]
            .as_str()
            .unwrap()
            .contains("no Chromium found")
    );
    assert!(
        of("logged_out")["body"]
            .as_str()
            .unwrap()
            .contains("wrong password")
    );
    for s in seen.iter().filter(|s| s.path == "/hook") {
        assert_eq!(s.header("idempotency-key"), Some(s.id()));
    }

    // The template, the one place a secret may be put in a body.
    for s in seen.iter().filter(|s| s.path == "/templated") {
        assert_eq!(s.json()["key"], "k-123-secret");
        assert!(s.json()["msg"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Discord and Slack: their own fields, with the title in bold.
    for s in seen.iter().filter(|s| s.path == "/discord") {
        let v = s.json();
        assert!(v["content"].as_str().unwrap().starts_with("**"));
        assert_eq!(v["allowed_mentions"]["parse"], serde_json::json!([]));
    }
    for s in seen.iter().filter(|s| s.path == "/slack") {
        assert!(s.json()["text"].as_str().unwrap().starts_with('*'));
    }
    // ntfy: JSON publishing to the server's root, with the token.
    for s in seen.iter().filter(|s| s.path == "/") {
        let v = s.json();
        assert_eq!(v["topic"], "baton-alerts");
        assert!(v["priority"].as_u64().is_some_and(|p| (1..=5).contains(&p)));
        assert_eq!(s.header("authorization"), Some("Bearer k-123-secret"));
    }
    let failure = seen
        .iter()
        .find(|s| s.path == "/" && s.json()["tags"][0] == "in_doubt")
        .unwrap();
    assert_eq!(
        failure.json()["priority"],
        5,
        "an operator is needed: urgent"
    );
    assert_eq!(failure.json()["click"], "http://baton.example/");
    // Apprise: title, body, type.
    let apprise: BTreeSet<String> = kinds(&seen, "/notify/baton", "type");
    assert!(
        apprise.contains("success") && apprise.contains("failure"),
        "{apprise:?}"
    );
    assert!(
        seen.iter()
            .filter(|s| s.path == "/notify/baton")
            .all(|s| s.json()["tag"] == "ops")
    );

    // Email: one per event, with the id as its Message-ID.
    let mails = smtp.wait_for(n, WAIT).await;
    assert_eq!(mails.len(), n);
    let ids: BTreeSet<&str> = seen
        .iter()
        .filter(|s| s.path == "/hook")
        .map(Seen::id)
        .collect();
    for m in &mails {
        assert!(m.data.contains("Subject: [baton] "), "{}", m.data);
        assert!(m.to.iter().any(|t| t.contains("ops@example.com")));
        assert_eq!(m.auth.as_deref(), Some("baton k-123-secret"));
        assert!(
            ids.iter()
                .any(|id| m.data.contains(&format!("<{id}@baton>"))),
            "no event id in the Message-ID: {}",
            m.data
        );
    }
    tasks.stop(Duration::from_secs(1)).await;
}

fn health(state: &str, restarts: u64, err: Option<&str>) -> baton::browser::BrowserHealth {
    baton::browser::BrowserHealth {
        state: state.into(),
        pid: None,
        restarts,
        version: None,
        last_error: err.map(str::to_owned),
        endpoints: Vec::new(),
    }
}

/// A receiver that is down for a while gets every message once it is back,
/// in order and each once; while down, `Retry-After` is honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_every_message_once_it_is_back() {
    let r = Receiver::start().await;
    r.answer(429, Some("1"));
    let (ncfg, secrets) = notify_config(&format!(
        "notify:\n  retry: {{ first: 50ms, max: 200ms }}\n  channels:\n    hook: {{ type: webhook, url: \"{}/hook\" }}\n",
        r.url
    ));
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let (notifier, tasks) = start_with(ncfg, secrets, dir.path(), metrics.clone());
    let ids: Vec<String> = (0..20)
        .map(|i| {
            let e = Event::new(Kind::Script, format!("message {i}"), "body");
            let id = e.id.clone();
            notifier.emit(e);
            id
        })
        .collect();
    // Two refused attempts, then the receiver comes back.
    let refused = r.wait_until(WAIT, |s| s.len() >= 2).await;
    let gap = refused[1].at - refused[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: retried after {gap:?}: {:?}",
        refused
            .iter()
            .map(|s| (s.status, s.id().to_owned()))
            .collect::<Vec<_>>()
    );
    // Down shows: on the dashboard's channel list and in /metrics.
    let down = &notifier.status()[0];
    assert_eq!(down.state, "failing");
    assert!(
        down.last_error.as_deref().unwrap().contains("429"),
        "{down:?}"
    );
    assert_eq!(down.pending, 20);
    assert!(
        metrics
            .render()
            .contains(r#"baton_notifications_total{channel="hook",result="failed"}"#)
    );
    r.answer(200, None);
    let seen = r
        .wait_until(WAIT, |s| ids.iter().all(|id| delivered(s, id)))
        .await;
    let order: Vec<&str> = seen
        .iter()
        .filter(|s| s.delivered())
        .map(Seen::id)
        .collect();
    assert_eq!(order, ids, "every message once, oldest first");
    tasks.stop(Duration::from_secs(1)).await;
    let status = notifier.status();
    assert_eq!(status[0].delivered, 20);
    assert!(status[0].failed >= 2);
    assert_eq!(status[0].state, "ok");
    assert_eq!(status[0].pending, 0);
    assert!(
        metrics
            .render()
            .contains(r#"baton_notifications_total{channel="hook",result="delivered"} 20"#)
    );
}

/// Secrets never reach a message body unless a template asks for one: a
/// run error that holds a secret is masked in the message (and in the
/// outbox file), while `{{secret.NAME}}` in a template is filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_bodies_unless_a_template_names_them() {
    let r = Receiver::start().await;
    let (ncfg, secrets) = notify_config(&format!(
        r#"notify:
  failures_in_a_row: 1
  channels:
    plain: {{ type: webhook, url: "{0}/plain" }}
    chat: {{ type: slack, url: "{0}/slack", min_gap: 0s }}
    templated: {{ type: webhook, url: "{0}/templated", template: '{{"text": "{{{{text}}}}", "auth": "{{{{secret.api_key}}}}"}}' }}
"#,
        r.url
    ));
    let mut cfg = common::config(&["t"], common::flow(&["pay"]));
    cfg.cycle.interval = (Duration::from_millis(10), Duration::from_millis(10));
    let h = common::Harness::new(cfg);
    let (notifier, tasks) = start(ncfg, secrets, h.dir.path());
    *h.notifier.lock().unwrap() = notifier.clone();
    h.steps.step("pay", |_| async {
        Err(StepError::failed("card k-123-secret was declined"))
    });
    h.run_cycles(1).await;
    let seen = r
        .wait_until(WAIT, |s| s.iter().filter(|x| x.delivered()).count() >= 3)
        .await;
    for s in &seen {
        let text = s.body.replace("k-123-secret", "");
        assert!(text.contains("was declined"), "{}", s.body);
        if s.path == "/templated" {
            assert_eq!(s.json()["auth"], "k-123-secret", "asked for by name");
            assert!(!s.json()["text"].as_str().unwrap().contains("k-123-secret"));
        } else {
            assert!(
                !s.body.contains("k-123-secret"),
                "a secret in a body: {}",
                s.body
            );
        }
    }
    let outbox = std::fs::read_to_string(h.dir.path().join("notify/outbox.jsonl")).unwrap();
    assert!(outbox.contains("was declined") && !outbox.contains("k-123-secret"));
    tasks.stop(Duration::from_secs(1)).await;
}

/// The child of `messages_queued_before_a_kill_9_arrive_after_the_restart`:
/// a scheduler that buys every cycle, notifying a receiver that is down,
/// and says `answered ORDER` after each commit.
#[test]
#[ignore = "started by messages_queued_before_a_kill_9_arrive_after_the_restart"]
fn notify_crash_child() {
    use std::io::Write;
    let (Ok(dir), Ok(url)) = (
        std::env::var("BATON_NOTIFY_CRASH_DIR"),
        std::env::var("BATON_NOTIFY_URL"),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (ncfg, secrets) = notify_config(&format!(
            "notify:\n  retry: {{ first: 20ms, max: 50ms }}\n  channels:\n    hook: {{ type: webhook, url: \"{url}/hook\" }}\n"
        ));
        // A target of its own per start: a kill inside a commit leaves the
        // last one in_doubt (I7), never run again, and its session
        // quarantined (I9): there are sessions enough for every start.
        let target = std::env::var("BATON_NOTIFY_TARGET").unwrap_or_default();
        let mut cfg = common::config(&[target.as_str()], common::flow(&["buy"]));
        cfg.test_mode = true;
        cfg.cycle.max_concurrent_runs = 8;
        cfg.cycle.interval = (Duration::from_millis(30), Duration::from_millis(30));
        let h = common::Harness::in_dir(cfg, Path::new(&dir));
        let (notifier, _tasks) = start(ncfg, secrets, Path::new(&dir));
        *h.notifier.lock().unwrap() = notifier.clone();
        h.steps.step("buy", move |cx| {
            let notifier = notifier.clone();
            async move {
            // An event that is not about a run: only the outbox keeps it.
            notifier.emit(Event::new(Kind::Script, format!("run {} starts", cx.label), "from a step"));
            let order = format!("A-{}", cx.label);
            baton::rust_steps::commit(&cx, "order", async move { Ok(order.clone()) }).await?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "answered A-{}", cx.label);
            let _ = out.flush();
            Ok(StepEnd::Continue)
            }
        });
        h.run_cycles(u64::MAX).await;
    });
}

/// At least once across `kill -9`: a baton is killed at random moments
/// while its receiver is down, several times over. Once the receiver is up
/// and the next start has run, every message the down receiver was offered
/// (so every one that had reached the outbox, run events or not) arrives,
/// and every order in the history was announced, each under the id its run
/// gives it.
#[test]
fn messages_queued_before_a_kill_9_arrive_after_the_restart() {
    use rand::{Rng, SeedableRng};
    let _one = common::live::one_at_a_time_blocking();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(Receiver::start());
    r.answer(503, None);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(14);
    for start in 0..6 {
        let target = format!("t{start}");
        let mut child = common::child(
            module_path!(),
            "notify_crash_child",
            &[
                ("BATON_NOTIFY_CRASH_DIR", dir.path().as_os_str()),
                ("BATON_NOTIFY_URL", r.url.as_ref()),
                ("BATON_NOTIFY_TARGET", target.as_ref()),
            ],
        );
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("answered ") {
                    let _ = tx.send(());
                }
            }
        });
        // Some orders in, then a kill at a random moment of a later cycle.
        for _ in 0..rng.random_range(1..4) {
            rx.recv_timeout(Duration::from_secs(30))
                .expect("the child never bought");
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..40_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
    }
    let orders: Vec<RunRecord> = baton::state::read_history(dir.path(), usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|r| r.order.is_some())
        .collect();
    assert!(orders.len() >= 6, "{} orders", orders.len());
    // Whatever the down receiver was offered had reached the outbox.
    let offered: BTreeSet<String> = r.seen().iter().map(|s| s.id().to_owned()).collect();
    assert!(
        offered.iter().any(|id| id.starts_with("ev-")),
        "no event that is not about a run was offered: {offered:?}"
    );

    // The receiver is back; a new start delivers what the kills left.
    r.answer(200, None);
    rt.block_on(async {
        let (_store, _) = baton::state::StateStore::open(dir.path()).unwrap();
        let (ncfg, secrets) = notify_config(&format!(
            "notify:\n  retry: {{ first: 20ms, max: 50ms }}\n  channels:\n    hook: {{ type: webhook, url: \"{}/hook\" }}\n",
            r.url
        ));
        let (_notifier, tasks) = start(ncfg, secrets, dir.path());
        let want: Vec<String> = orders
            .iter()
            .map(|o| format!("run-{}-order_placed", o.run_id.0))
            .chain(offered.iter().cloned())
            .collect();
        let seen = r
            .wait_until(WAIT, |s| want.iter().all(|id| delivered(s, id)))
            .await;
        for o in &orders {
            let id = format!("run-{}-order_placed", o.run_id.0);
            let s = seen.iter().find(|s| s.delivered() && s.id() == id).unwrap();
            assert_eq!(s.json()["order"], o.order.clone().unwrap());
        }
        tasks.stop(Duration::from_secs(1)).await;
    });
}

/// The start-up catch-up: an order in the history whose event never
/// reached the outbox (a crash between the two), an order whose commit was
/// saved but whose run a crash cut before its history record, and a target
/// a crash left in_doubt, are announced at the next start; what was announced is not
/// again, and runs from before notifications were turned on are not
/// replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_announces_orders_whose_event_a_crash_kept_from_the_outbox() {
    let r = Receiver::start().await;
    let section = format!(
        "notify:\n  channels:\n    hook: {{ type: webhook, url: \"{}/hook\" }}\n",
        r.url
    );
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = baton::state::StateStore::open(dir.path()).unwrap();
    let order = |run: u64, at: std::time::SystemTime| RunRecord {
        run_id: baton::id::RunId(run),
        target: "t".into(),
        flow: "f".into(),
        started_at: at,
        ended_at: at,
        duration_ms: 1,
        status: baton::state::Status::Completed,
        outcome: None,
        order: Some(format!("A-{run}")),
        price: Some("12.50".into()),
        error: None,
        committed: true,
        cancelled: None,
        steps: vec![],
        screenshot: None,
        trace: None,
        repeats: None,
        first_at: None,
    };
    // Bought before notifications existed: never announced.
    store
        .append_history(&order(
            1,
            std::time::SystemTime::now() - Duration::from_secs(60),
        ))
        .unwrap();
    let (ncfg, secrets) = notify_config(&section);
    let (_n, tasks) = start(ncfg, secrets, dir.path());
    // The outbox is opened off the runs' path; a stop before it exists
    // would leave nothing to say when notifications were turned on.
    tasks.opened().await;
    tasks.stop(Duration::from_secs(1)).await;
    // Saved to the history, and then the process died; and another run
    // died inside its commit (the restart recovers it as in_doubt).
    store
        .append_history(&order(2, std::time::SystemTime::now()))
        .unwrap();
    store
        .update(&"d".into(), |t| {
            t.status = baton::state::Status::InDoubt;
            t.run_id = Some(baton::id::RunId(3));
        })
        .unwrap();
    // And a third one's commit answered and was saved, and then the process
    // died before its history record: the restart recovers it as completed.
    store
        .update(&"c".into(), |t| {
            t.status = baton::state::Status::Committed;
            t.run_id = Some(baton::id::RunId(4));
            t.last_order = Some("A-4".into());
        })
        .unwrap();
    drop(store);
    let (store, recovery) = baton::state::StateStore::open(dir.path()).unwrap();
    assert_eq!(recovery.completed, [baton::id::TargetId::new("c")]);

    let (ncfg, secrets) = notify_config(&section);
    let (n, tasks) = start(ncfg, secrets, dir.path());
    n.recovered_orders(&recovery.completed, |id| store.get(id.as_str()));
    let seen = r
        .wait_until(WAIT, |s| {
            delivered(s, "run-2-order_placed")
                && delivered(s, "run-3-in_doubt")
                && delivered(s, "run-4-order_placed")
        })
        .await;
    tasks.stop(Duration::from_secs(1)).await;
    let of = |id: &str| seen.iter().find(|s| s.id() == id).unwrap().json();
    assert_eq!(of("run-2-order_placed")["price"], "12.50");
    assert_eq!(of("run-4-order_placed")["order"], "A-4");
    assert!(
        of("run-3-in_doubt")["command"]
            .as_str()
            .unwrap()
            .contains("baton state resolve d --as completed")
    );
    let (ncfg, secrets) = notify_config(&section);
    let (_n, tasks) = start(ncfg, secrets, dir.path());
    tasks.stop(Duration::from_secs(1)).await;
    let mut ids: Vec<String> = r.seen().iter().map(|s| s.id().to_owned()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["run-2-order_placed", "run-3-in_doubt", "run-4-order_placed"],
        "each once, and nothing older"
    );
}

/// A running baton tells its receivers that it started, what its scripts
/// `notify(..)` (by the rules, and to one named channel), that a script or
/// flows.yaml edit failed to load, and that it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_baton_reports_start_script_messages_failed_reloads_and_stop() {
    common::init_tracing();
    let r = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    std::fs::write(
        dir.path().join("scripts/step.rhai"),
        "notify(`saw ${target.id}`);\nnotify(\"ops\", \"to ops alone\");",
    )
    .unwrap();
    let yaml = format!(
        r#"cycle: {{ interval: 200ms, wait_for_active: 5s }}
state_dir: .baton
dashboard: off
test_mode: true
notify:
  retry: {{ first: 50ms, max: 200ms }}
  channels:
    all: {{ type: webhook, url: "{0}/all" }}
    ops: {{ type: webhook, url: "{0}/ops" }}
  rules:
    - {{ events: "*", channels: all }}
targets:
  - {{ id: a, url: "http://shop.test/p/a" }}
flows:
  f:
    steps: [step]
"#,
        r.url
    );
    let flows = dir.path().join("flows.yaml");
    std::fs::write(&flows, &yaml).unwrap();
    let mut o = baton::app::Options::new(&flows);
    o.browser = Some(Arc::new(baton::browser::sim::SimBrowser::default()));
    let app = baton::app::App::start(o).await.unwrap();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());

    let event_on = |s: &[Seen], path: &str, kind: &str| {
        s.iter()
            .any(|x| x.path == path && x.delivered() && x.json()["event"] == kind)
    };
    let seen = r
        .wait_until(WAIT, |s| {
            event_on(s, "/all", "started")
                && event_on(s, "/all", "script")
                && event_on(s, "/ops", "script")
        })
        .await;
    let script = seen
        .iter()
        .find(|s| s.path == "/all" && s.json()["event"] == "script")
        .unwrap()
        .json();
    assert_eq!(script["title"], "a: saw a");
    assert_eq!(script["target"], "a");
    assert!(
        seen.iter()
            .filter(|s| s.path == "/all")
            .all(|s| s.json()["body"] != "to ops alone"),
        "notify(channel, ..) goes to that channel alone"
    );

    // A script that no longer compiles, then a flows.yaml that does not
    // parse: each reported, the running versions kept.
    std::fs::write(dir.path().join("scripts/step.rhai"), "let x = ;").unwrap();
    r.wait_until(WAIT, |s| {
        s.iter().any(|x| {
            x.path == "/all"
                && x.json()["event"] == "reload_failed"
                && x.json()["title"].as_str().unwrap().contains("step.rhai")
        })
    })
    .await;
    std::fs::write(&flows, yaml.replace("targets:", "targets: [oops")).unwrap();
    r.wait_until(WAIT, |s| {
        s.iter().any(|x| {
            x.path == "/all"
                && x.json()["event"] == "reload_failed"
                && x.json()["title"] == "flows.yaml reload failed"
        })
    })
    .await;

    shutdown.cancel();
    task.await.unwrap();
    // Delivered within the stop's grace, before `run` returned.
    assert!(event_on(&r.seen(), "/all", "stopped"));
}

/// Messages left for a channel that flows.yaml no longer has are given up
/// at the next start (they would wait forever), and the others still go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_a_removed_channel_are_given_up_at_start() {
    let r = Receiver::start().await;
    r.answer(503, None);
    let dir = tempfile::tempdir().unwrap();
    let both = format!(
        "notify:\n  channels:\n    a: {{ type: webhook, url: \"{0}/a\" }}\n    b: {{ type: webhook, url: \"{0}/b\" }}\n",
        r.url
    );
    let (ncfg, secrets) = notify_config(&both);
    let (n, tasks) = start(ncfg, secrets, dir.path());
    n.emit(Event::new(Kind::Script, "kept for a", "x"));
    r.wait_until(WAIT, |s| {
        s.iter().any(|x| x.path == "/a") && s.iter().any(|x| x.path == "/b")
    })
    .await;
    tasks.stop(Duration::ZERO).await;

    r.answer(200, None);
    let (ncfg, secrets) = notify_config(&format!(
        "notify:\n  channels:\n    a: {{ type: webhook, url: \"{}/a\" }}\n",
        r.url
    ));
    let (n, tasks) = start(ncfg, secrets, dir.path());
    r.wait_until(WAIT, |s| s.iter().any(|x| x.path == "/a" && x.delivered()))
        .await;
    tasks.stop(Duration::from_secs(1)).await;
    assert_eq!(n.status()[0].pending, 0);
    // Reopened, nothing is pending for `b` any more: the give-up was saved.
    let (o, opened) = baton::notify::outbox::Outbox::open(dir.path(), 100).unwrap();
    assert_eq!((opened.pending, o.pending_for("b")), (0, 0));
}

/// Regression (issue 24): an outbox of 400,000 lines stopped every cycle
/// for six minutes while it was read. The outbox is read on the notifier's
/// own task: here it is a pipe that nobody writes yet (a read that does
/// not end, as a huge file on a slow disk), and two cycles buy meanwhile.
/// When the "file" ends, the message pending in it and the runs' own
/// events are all delivered, and the pipe is replaced by a regular file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_run_while_the_outbox_is_still_being_read() {
    let r = Receiver::start().await;
    let (ncfg, secrets) = notify_config(&format!(
        "notify:\n  retry: {{ first: 50ms, max: 200ms }}\n  channels:\n    hook: {{ type: webhook, url: \"{}/hook\" }}\n",
        r.url
    ));
    let mut cfg = common::config(&["a"], common::flow(&["buy"]));
    cfg.cycle.interval = (Duration::from_millis(10), Duration::from_millis(10));
    let h = common::Harness::new(cfg);
    let fifo = h.dir.path().join("notify/outbox.jsonl");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (notifier, tasks) = start(ncfg, secrets, h.dir.path());
    *h.notifier.lock().unwrap() = notifier.clone();
    h.steps.step("buy", |cx| async move {
        baton::rust_steps::commit(&cx, "order", async { Ok("A-1".to_owned()) }).await?;
        Ok(StepEnd::Continue)
    });
    h.run_cycles(2).await;
    let runs = h.history();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    common::assert_all_completed(&runs);
    assert_eq!(
        notifier.status()[0].state,
        "opening",
        "both cycles ran while the outbox was unread"
    );

    // The "file" arrives: a message pending from before the restart.
    let old = Event {
        id: "old-1".into(),
        ..Event::new(Kind::Script, "from before", "pending since the last run")
    };
    let lines = format!(
        "{}\n{}\n",
        serde_json::json!({"op": "head", "created": "2026-01-01T00:00:00Z"}),
        serde_json::json!({"op": "add", "seq": 1, "channels": ["hook"], "event": old})
    );
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            f.write_all(lines.as_bytes()).unwrap();
        }
    });
    tokio::time::timeout(WAIT, tasks.opened())
        .await
        .expect("the outbox was not opened once its file ended");
    writer.join().unwrap();
    let first = runs[0].run_id.0;
    let seen = r
        .wait_until(WAIT, |s| {
            delivered(s, "old-1")
                && delivered(s, &format!("run-{first}-order_placed"))
                && delivered(s, &format!("run-{}-order_placed", first + 1))
        })
        .await;
    assert_eq!(
        seen.iter()
            .filter(|x| x.id() == "old-1" && x.delivered())
            .count(),
        1
    );
    tasks.stop(Duration::from_secs(1)).await;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_file(),
        "the pipe was replaced by a regular file"
    );
}

/// Rules route each event kind to its channels, and `min_interval` holds
/// back repeats of a kind on a channel (counted as suppressed), while a
/// channel with no interval for that kind gets every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_events_and_min_interval_holds_back_repeats() {
    let r = Receiver::start().await;
    let (ncfg, secrets) = notify_config(&format!(
        r#"notify:
  channels:
    quiet: {{ type: webhook, url: "{0}/quiet" }}
    loud: {{ type: webhook, url: "{0}/loud" }}
  rules:
    - {{ events: [script], channels: quiet, min_interval: 1h }}
    - {{ events: [script, order_placed], channels: loud }}
"#,
        r.url
    ));
    let dir = tempfile::tempdir().unwrap();
    let (n, tasks) = start(ncfg, secrets, dir.path());
    for i in 0..3 {
        n.emit(Event::new(Kind::Script, format!("m{i}"), "b"));
    }
    n.emit(Event::new(Kind::Restock, "no rule sends this", "b"));
    r.wait_until(WAIT, |s| {
        s.iter().filter(|x| x.path == "/loud").count() == 3
    })
    .await;
    tasks.stop(Duration::from_secs(1)).await;
    let seen = r.seen();
    let quiet: Vec<_> = seen.iter().filter(|s| s.path == "/quiet").collect();
    assert_eq!(quiet.len(), 1, "min_interval let a repeat through");
    assert_eq!(quiet[0].json()["title"], "m0");
    assert!(
        seen.iter().all(|s| s.json()["event"] == "script"),
        "restock has no rule"
    );
    let status = n.status();
    let quiet = status.iter().find(|c| c.name == "quiet").unwrap();
    assert_eq!((quiet.delivered, quiet.suppressed), (1, 2));
}

/// Email over STARTTLS and over TLS from the first byte, to a relay whose
/// certificate comes from a private CA that `ca:` names: the message
/// arrives encrypted, the password only inside TLS. Without `ca:` the
/// certificate is refused and the message waits in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_over_starttls_and_tls_to_a_relay_with_a_private_ca() {
    use crate::common::receiver::{SmtpTls, TestCa};
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.ca_pem).unwrap();
    for (tls, word) in [(SmtpTls::StartTls, "starttls"), (SmtpTls::Implicit, "tls")] {
        let smtp = crate::common::receiver::Smtp::start_with(tls, Some(&ca)).await;
        let channel = |ca: &str| {
            format!(
                "notify:\n  retry: {{ first: 50ms, max: 100ms }}\n  channels:\n    mail: {{ type: email, host: 127.0.0.1, port: {}, tls: {word}, username: baton, password: {{ secret: api_key }}, from: baton@example.com, to: ops@example.com{ca} }}\n",
                smtp.port
            )
        };
        // Without the CA: refused, kept, retried.
        let state = tempfile::tempdir().unwrap();
        let (ncfg, secrets) = notify_config(&channel(""));
        let (n, tasks) = start(ncfg, secrets, state.path());
        n.emit(Event::new(Kind::Script, "over tls", "b"));
        let deadline = tokio::time::Instant::now() + WAIT;
        while n.status()[0].failed == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never tried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tasks.stop(Duration::ZERO).await;
        let err = n.status()[0].last_error.clone().unwrap();
        assert!(
            err.to_lowercase().contains("certificate") || err.contains("TLS"),
            "{err}"
        );
        assert!(smtp.mails().is_empty());

        // With it: delivered, over TLS.
        let (ncfg, secrets) = notify_config(&channel(&format!(", ca: \"{}\"", ca_file.display())));
        let (n, tasks) = start(ncfg, secrets, state.path());
        let mails = tokio::select! {
            m = smtp.wait_for(1, WAIT) => m,
            () = async {
                while n.status()[0].failed < 3 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => panic!("{word}: {:?}", n.status()[0].last_error),
        };
        tasks.stop(Duration::from_secs(1)).await;
        assert!(mails[0].tls, "{word}: not over TLS");
        assert_eq!(mails[0].auth.as_deref(), Some("baton k-123-secret"));
        assert!(mails[0].data.contains("Subject: [baton] over tls"));
    }
}
