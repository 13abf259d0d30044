//! The dashboard's router, called without a socket: every endpoint, the
//! token rules, actions going through the scheduler, and no secret in any
//! response.

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use baton::dashboard::{self, Dashboard};
use baton::flow::{StepEnd, StepError};
use baton::logging::Recent;
use baton::redact::Redactor;
use baton::script::ScriptHost;
use baton::state::Status;
use common::{Harness, config, flow};
use tower::ServiceExt;

const SECRET: &str = "s3cr3t-card-9731";

struct Env {
    h: Harness,
    app: axum::Router,
    dashboard: Dashboard,
    _scripts: tempfile::TempDir,
}

fn env(token: Option<&str>) -> Env {
    let mut cfg = config(&["1001", "1002"], flow(&["work"]));
    // A secret that also ended up in a target's params and in an error.
    Arc::make_mut(&mut cfg.targets[0])
        .params
        .insert("card".into(), SECRET.into());
    let h = Harness::new(cfg);
    let redactor = Arc::new(Redactor::new());
    redactor.add(SECRET);
    h.state
        .update(&"1002".into(), |t| {
            t.status = Status::InDoubt;
            t.last_error = Some(format!("card {SECRET} declined"));
        })
        .unwrap();
    let scripts = tempfile::tempdir().unwrap();
    std::fs::write(scripts.path().join("work.rhai"), "1").unwrap();
    std::fs::write(scripts.path().join("broken.rhai"), "let = ;").unwrap();
    std::fs::create_dir_all(h.dir.path().join("shots")).unwrap();
    std::fs::write(h.dir.path().join("shots/r1.png"), b"\x89PNG\r\n\x1a\nfake").unwrap();
    let d = Dashboard {
        token: token.map(str::to_owned),
        hosts: vec!["baton.lan".into()],
        view: dashboard::View::new(dashboard::Sources {
            parts: Arc::new(baton::parts::Parts {
                scripts: ScriptHost::builder(scripts.path()).build(),
                ..h.parts()
            }),
            status: h.status.clone(),
            recent: Recent::new(redactor.clone()),
        }),
        commands: h.commands.clone(),
        redactor,
        stop: tokio_util::sync::CancellationToken::new(),
        logins: dashboard::Logins::default(),
    };
    Env {
        app: dashboard::app(d.clone()),
        dashboard: d,
        h,
        _scripts: scripts,
    }
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

const ACTION: (&str, &str) = ("x-baton-action", "1");

#[tokio::test]
async fn the_page_and_status_api() {
    let e = env(None);
    let (s, body) = call(&e.app, "GET", "/", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("<title>baton</title>") && body.contains("EventSource"));
    assert!(
        !body.contains("http://") || !body.contains("<script src="),
        "no assets from outside"
    );

    let (s, body) = call(&e.app, "GET", "/api/status", &[]).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["targets"][0]["id"], "1001");
    assert_eq!(v["targets"][1]["status"], "in_doubt");
    assert_eq!(v["browser"]["state"], "simulated");
    assert_eq!(v["scheduler"]["phase"], "starting");
    assert_eq!(v["quarantined"], serde_json::json!([]));

    // I9: the in-doubt target's session is quarantined, and with one
    // session that blocks the other target; the page says so.
    e.h.registry.quarantine(baton::registry::Quarantine {
        session: baton::id::SessionId(0),
        account: None,
        target: "1002".into(),
        run_id: Some(baton::id::RunId(4)),
    });
    let (_, body) = call(&e.app, "GET", "/api/status", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["quarantined"],
        serde_json::json!([{"session": 0, "target": "1002", "run_id": 4, "blocks": ["1001"]}])
    );
    let (_, page) = call(&e.app, "GET", "/", &[]).await;
    assert!(
        page.contains("quarantined by"),
        "the page renders quarantines"
    );
    let broken = v["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "broken")
        .unwrap();
    assert!(
        broken["error"]
            .as_str()
            .unwrap()
            .contains("broken.rhai:1:5: syntax error"),
        "{broken}"
    );
}

#[tokio::test]
async fn a_target_skipped_by_its_schedule_shows_when_it_is_due() {
    let e = env(None);
    e.h.steps.step("work", |_| async { Ok(StepEnd::Continue) });
    // A window that opens in two hours (UTC), so it is shut now.
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let open = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let shut = now
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap();
    let window = format!(
        "daily {}-{} UTC",
        open.strftime("%H:%M"),
        shut.strftime("%H:%M")
    );
    let mut cfg = baton::config::Config::clone(&e.h.config.load());
    Arc::make_mut(&mut cfg.targets[0]).schedule.windows =
        vec![baton::schedule::Window::parse(&window).unwrap()];
    e.h.config.store(Arc::new(cfg));
    e.h.run_cycles(1).await;

    let (_, body) = call(&e.app, "GET", "/api/status", &[]).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let t = &v["targets"][0];
    assert_eq!(t["id"], "1001");
    let why = t["not_due"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("outside its windows; next at ") && why.ends_with(" UTC"),
        "{t}"
    );
    assert_eq!(v["scheduler"]["not_due"][0]["target"], "1001");
    assert!(v["targets"][1].get("not_due").is_none(), "{v}");
    let (_, page) = call(&e.app, "GET", "/", &[]).await;
    assert!(page.contains("t.not_due"), "the page renders it");
}

#[tokio::test]
async fn target_edits_are_actions_and_need_a_flows_yaml() {
    let e = env(None);
    // Like every action: a page elsewhere cannot press it.
    let (s, body) = call(&e.app, "DELETE", "/api/targets/1001", &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, _) = call(&e.app, "PATCH", "/api/targets/1001", &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A baton not started from a file has nothing to edit.
    let (s, body) = call(&e.app, "DELETE", "/api/targets/1001", &[ACTION]).await;
    assert_eq!(s, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("not started from a flows.yaml"), "{body}");
}

#[tokio::test]
async fn secrets_never_appear_in_responses() {
    let e = env(None);
    for uri in ["/api/status", "/api/runs?limit=5"] {
        let (s, body) = call(&e.app, "GET", uri, &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(!body.contains(SECRET), "{uri} leaked the secret: {body}");
    }
    let (_, body) = call(&e.app, "GET", "/api/status", &[]).await;
    assert!(body.contains("card [redacted] declined"), "{body}");
}

#[tokio::test]
async fn a_token_guards_every_api_request_but_not_the_empty_page() {
    let e = env(Some("t0ken"));
    assert_eq!(call(&e.app, "GET", "/", &[]).await.0, StatusCode::OK);
    for (m, uri) in [
        ("GET", "/api/status"),
        ("GET", "/api/runs"),
        ("GET", "/api/events"),
        ("GET", "/metrics"),
        ("GET", "/shots/r1.png"),
        ("POST", "/api/pause"),
        ("POST", "/api/run-now"),
        ("POST", "/api/targets/1001/reset"),
    ] {
        let (s, body) = call(&e.app, m, uri, &[ACTION]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {uri} without a token");
        assert!(body.contains("a dashboard token is required"));
        let (s, _) = call(&e.app, m, uri, &[ACTION, ("authorization", "Bearer wrong")]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {uri} with a wrong token");
    }
    let (s, _) = call(
        &e.app,
        "GET",
        "/api/status",
        &[("authorization", "Bearer t0ken")],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = call(
        &e.app,
        "GET",
        "/api/status",
        &[(header::COOKIE.as_str(), "x=1; baton_token=t0ken")],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "the page's cookie works");
    // The token itself is never echoed.
    let (_, body) = call(
        &e.app,
        "GET",
        "/api/status",
        &[("authorization", "Bearer t0ken")],
    )
    .await;
    assert!(!body.contains("t0ken"));
}

#[tokio::test]
async fn actions_need_the_action_header() {
    let e = env(None);
    let (s, body) = call(&e.app, "POST", "/api/pause", &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("X-Baton-Action"));
}

/// Hardening, DNS rebinding: a page on `attacker.example` whose name
/// resolves to 127.0.0.1 used to read the status and reset a completed
/// target (baton then bought it again). Without a token only loopback
/// names and `dashboard.hosts` are served, and an action's `Origin` must be
/// the dashboard's own host.
#[tokio::test]
async fn a_foreign_host_or_origin_is_refused() {
    let e = env(None);
    let evil = [("host", "attacker.example:7941")];
    let (s, body) = call(&e.app, "GET", "/api/status", &evil).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("host `attacker.example` is not this dashboard's"),
        "{body}"
    );
    let rebinding = [
        ("host", "attacker.example:7941"),
        ("origin", "http://attacker.example:7941"),
        ACTION,
    ];
    let (s, _) = call(&e.app, "POST", "/api/targets/1001/reset", &rebinding).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A loopback host with a foreign origin (a cross-site form or fetch).
    let cross = [
        ("host", "127.0.0.1:7878"),
        ("origin", "http://attacker.example"),
        ACTION,
    ];
    let (s, body) = call(&e.app, "POST", "/api/pause", &cross).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body.contains("must come from the dashboard's own page"),
        "{body}"
    );
    // Another port on the same host is another site (the demo shop, any
    // local service), and so is another scheme.
    for origin in [
        "http://127.0.0.1:8099",
        "http://127.0.0.1",
        "https://127.0.0.1:7878",
        "null",
    ] {
        let other = [("host", "127.0.0.1:7878"), ("origin", origin), ACTION];
        let (s, body) = call(&e.app, "POST", "/api/pause", &other).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin}: {body}");
    }
    // What is allowed: loopback names, a configured name, the CLI (no
    // Origin), the page itself (same origin).
    for host in [
        "127.0.0.1:7878",
        "localhost:7878",
        "[::1]:7878",
        "baton.lan:7878",
    ] {
        let (s, body) = call(&e.app, "GET", "/api/status", &[("host", host)]).await;
        assert_eq!(s, StatusCode::OK, "{host}: {body}");
    }
    let same = [
        ("host", "localhost:7878"),
        ("origin", "http://localhost:7878"),
        ACTION,
    ];
    let answer = tokio::spawn({
        let app = e.app.clone();
        async move { call(&app, "POST", "/api/pause", &same).await }
    });
    // Play the scheduler's part: the action arrived as a command.
    let mut commands = e.h.scheduler(None).commands;
    match commands.recv().await {
        Some(baton::scheduler::Command::Pause(reply)) => reply.send(()).unwrap(),
        other => panic!("expected a pause command, got {other:?}"),
    }
    assert_eq!(answer.await.unwrap().0, StatusCode::OK);
}

/// Hardening: idle connections cannot lock the operator (and the state
/// store's file descriptors) out. With a cap of 4 connections, ten sockets
/// that never send a byte are closed after the first-byte timeout, and a
/// real request is then served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_capped_and_closed() {
    use tokio::io::AsyncReadExt;
    let e = env(None);
    let stop = tokio_util::sync::CancellationToken::new();
    let limits = dashboard::listener::Limits {
        connections: 4,
        first_byte: std::time::Duration::from_millis(300),
        idle: std::time::Duration::from_secs(5),
    };
    let running = dashboard::start_with(
        "127.0.0.1:0".parse().unwrap(),
        e.dashboard.clone(),
        stop.clone(),
        limits,
    )
    .await
    .unwrap();
    let mut idle = Vec::new();
    for _ in 0..10 {
        idle.push(tokio::net::TcpStream::connect(running.addr).await.unwrap());
    }
    // A real client gets through once the silent ones are dropped.
    let status = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        reqwest::get(format!("http://{}/api/status", running.addr)),
    )
    .await
    .expect("the dashboard stayed locked by idle connections")
    .unwrap()
    .status();
    assert_eq!(status, reqwest::StatusCode::OK);
    // The first ones accepted were closed by the server (EOF or reset).
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), idle[0].read(&mut buf))
        .await
        .expect("an idle connection was never closed");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    stop.cancel();
    let _ = running.task.await;
}

/// Regression (issue 24): Ctrl-C hung for as long as a dashboard tab stayed
/// open, because the graceful shutdown waited for the live page's event
/// stream and the stream never watched the stop. With three tabs streaming
/// (one of them not reading at all), the server now ends on the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_ends_open_event_streams() {
    let e = env(None);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = dashboard::start(
        "127.0.0.1:0".parse().unwrap(),
        e.dashboard.clone(),
        stop.clone(),
    )
    .await
    .unwrap();
    let url = format!("http://{}/api/events", running.addr);
    let mut tabs = Vec::new();
    for _ in 0..3 {
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        tabs.push(resp);
    }
    // Each tab has its first event: the streams are live.
    for tab in &mut tabs[..2] {
        let first = tab.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: status"));
    }
    stop.cancel();
    tokio::time::timeout(std::time::Duration::from_secs(10), running.task)
        .await
        .expect("the dashboard kept serving open event streams after its stop")
        .unwrap();
    // The reading tabs see their stream end rather than hang.
    for tab in &mut tabs[..2] {
        let rest = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Ok(Some(_)) = tab.chunk().await {}
        })
        .await;
        assert!(rest.is_ok(), "a stream was still open after the stop");
    }
}

/// Target ids may hold `/`, `?` or a space: clients build paths with
/// `routes::for_target`, which percent-encodes them, and the id arrives
/// whole. (The CLI's reset and resolve used to break on such ids.)
#[tokio::test]
async fn target_ids_with_reserved_characters_reach_the_scheduler_whole() {
    let e = env(None);
    let id = "a b/c?d";
    let path = baton::dashboard::routes::for_target(baton::dashboard::routes::RESET, id);
    assert_eq!(path, "/api/targets/a%20b%2Fc%3Fd/reset");
    let answer = tokio::spawn({
        let app = e.app.clone();
        async move { call(&app, "POST", &path, &[ACTION]).await }
    });
    let mut commands = e.h.scheduler(None).commands;
    match commands.recv().await {
        Some(baton::scheduler::Command::Reset(target, reply)) => {
            assert_eq!(target.as_str(), id);
            reply.send(Ok(())).unwrap();
        }
        other => panic!("expected a reset, got {other:?}"),
    }
    assert_eq!(answer.await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_and_screenshots() {
    let e = env(None);
    e.h.metrics.cycle_started();
    let (s, body) = call(&e.app, "GET", "/metrics", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("baton_cycles_total 1"), "{body}");
    assert!(
        body.contains("# TYPE baton_run_duration_seconds histogram"),
        "{body}"
    );
    let (s, body) = call(&e.app, "GET", "/shots/r1.png", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.starts_with("\u{fffd}PNG") || body.contains("PNG"));
    assert_eq!(
        call(&e.app, "GET", "/shots/..%2Fstate.json", &[]).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&e.app, "GET", "/shots/nope.png", &[]).await.0,
        StatusCode::NOT_FOUND
    );
}

/// Actions go to the scheduler: pause, resume, resolve and reset through
/// its command channel, with its checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_go_through_the_scheduler() {
    let e = env(None);
    e.h.steps
        .step("work", |_| async { Ok::<_, StepError>(StepEnd::Continue) });
    let mut cfg = (**e.h.config.load()).clone();
    cfg.cycle.interval = (
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(3600),
    );
    e.h.config.store(Arc::new(cfg));
    let sched = tokio::spawn(e.h.scheduler(None).run());
    // Let the first cycle finish (it runs 1001; 1002 is in doubt).
    let mut status = e.h.status.clone();
    status
        .wait_for(|s| s.cycle == 1 && s.phase == baton::scheduler::Phase::Sleeping)
        .await
        .unwrap();
    e.h.registry
        .wait_idle(std::time::Duration::from_secs(30))
        .await
        .unwrap();

    let (s, body) = call(&e.app, "POST", "/api/pause", &[ACTION]).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "{\"ok\":true}"));
    assert!(e.h.status.borrow().paused);
    let (s, _) = call(&e.app, "POST", "/api/resume", &[ACTION]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!e.h.status.borrow().paused);

    let (s, body) = call(
        &e.app,
        "POST",
        "/api/targets/1001/resolve?as=ready",
        &[ACTION],
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(
        body.contains("target `1001` is `completed`, not `in_doubt`: nothing to resolve"),
        "{body}"
    );
    let (s, body) = call(
        &e.app,
        "POST",
        "/api/targets/1002/resolve?as=sideways",
        &[ACTION],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (s, _) = call(
        &e.app,
        "POST",
        "/api/targets/1002/resolve?as=completed",
        &[ACTION],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e.h.state.get("1002").status, Status::Completed);
    let (s, _) = call(&e.app, "POST", "/api/targets/1001/reset", &[ACTION]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(e.h.state.get("1001").status, Status::Ready);
    let (s, body) = call(&e.app, "POST", "/api/targets/nope/reset", &[ACTION]).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(body.contains("unknown target `nope`"));

    // Run now starts a cycle at once (the interval is an hour).
    let (s, _) = call(&e.app, "POST", "/api/run-now", &[ACTION]).await;
    assert_eq!(s, StatusCode::OK);
    status
        .wait_for(|s| s.cycle == 2 && s.phase == baton::scheduler::Phase::Sleeping)
        .await
        .unwrap();
    e.h.registry
        .wait_idle(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let runs: Vec<_> =
        e.h.history()
            .into_iter()
            .filter(|r| r.target.as_str() == "1001")
            .collect();
    assert_eq!(runs.len(), 2, "run now ran 1001 again");

    e.h.shutdown.cancel();
    sched.await.unwrap();
}

/// "Run now" never bypasses the wait: with a run in progress, the cycle it
/// starts waits for that run before dispatching anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_waits_for_the_active_run() {
    let e = env(None);
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    e.h.steps.step("work", move |cx| {
        let mut gate = gate_rx.clone();
        async move {
            if cx.target.id.as_str() == "1001" {
                gate.wait_for(|open| *open).await.ok();
            }
            Ok(StepEnd::Continue)
        }
    });
    let mut cfg = (**e.h.config.load()).clone();
    cfg.cycle.interval = (
        std::time::Duration::from_secs(3600),
        std::time::Duration::from_secs(3600),
    );
    cfg.cycle.wait_for_active = std::time::Duration::from_secs(3600);
    cfg.cycle.run_timeout = std::time::Duration::from_secs(3600);
    cfg.cycle.step_timeout = std::time::Duration::from_secs(3600);
    e.h.config.store(Arc::new(cfg));
    let sched = tokio::spawn(e.h.scheduler(None).run());
    // Cycle 1 dispatched 1001 (1002 is in doubt) and went to sleep while
    // 1001 still runs.
    let mut status = e.h.status.clone();
    status
        .wait_for(|s| s.cycle == 1 && s.phase == baton::scheduler::Phase::Sleeping)
        .await
        .unwrap();
    let first = e.h.registry.get("1001").expect("1001 is running");

    let (s, _) = call(&e.app, "POST", "/api/run-now", &[ACTION]).await;
    assert_eq!(s, StatusCode::OK);
    let st = status
        .wait_for(|s| {
            s.cycle == 2 && s.phase == baton::scheduler::Phase::Waiting && !s.waiting_for.is_empty()
        })
        .await
        .unwrap()
        .clone();
    assert_eq!(st.waiting_for.len(), 1);
    assert_eq!(st.waiting_for[0].run_id, first.run_id);
    assert!(
        e.h.history().is_empty(),
        "nothing finished, nothing new started"
    );
    assert_eq!(e.h.registry.len(), 1);

    gate_tx.send(true).unwrap();
    status
        .wait_for(|s| s.cycle == 2 && s.phase == baton::scheduler::Phase::Sleeping)
        .await
        .unwrap();
    e.h.registry
        .wait_idle(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let h = e.h.history();
    let ones: Vec<_> = h.iter().filter(|r| r.target.as_str() == "1001").collect();
    assert_eq!(ones.len(), 2);
    assert!(
        ones[1].started_at >= ones[0].ended_at,
        "run now overlapped the active run"
    );
    assert_eq!(e.h.sim.overlaps(), 0);
    e.h.shutdown.cancel();
    sched.await.unwrap();
}
