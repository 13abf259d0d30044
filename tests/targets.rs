//! The targets API (issue 28) on a running baton, in real headless
//! Chromium against the demo shop: a target added with `POST /api/targets`
//! is bought, paused with `PATCH`, another removed with `DELETE`, and
//! flows.yaml keeps every comment and line of the user's around them.

use std::time::Duration;

use crate::common;

use baton::app::{App, Options};
use baton::state::Status;
use common::live::{Project, assert_no_chromium, target};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_added_through_the_api_is_bought_and_flows_yaml_keeps_its_comments() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(
        "  interval: 2s\n  wait_for_active: 30s\n  run_timeout: 60s\n  step_timeout: 30s",
        &target("1001", 60.0),
        "",
    );
    p.edit("dashboard: off\n", "dashboard: 127.0.0.1:0\n");
    p.edit(
        "targets:\n",
        "# Targets, kept by hand.\ntargets:\n  # Hand-picked.\n\n  # The espresso machine.\n",
    );
    let (srv, stop) = p.own_shop().await;
    let before = std::fs::read_to_string(p.config()).unwrap();

    common::init_tracing();
    let app = App::start(Options::new(p.config())).await.unwrap();
    let dash = format!("http://{}", app.dashboard.as_ref().unwrap().addr);
    let mut finished = app.parts.finished.subscribe();
    let mut status = app.status.clone();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());
    let client = reqwest::Client::new();
    let api = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{dash}{path}"))
            .header("x-baton-action", "1")
    };

    // Added while baton runs: validated as flows.yaml, then bought.
    let r = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({
            "id": "1002",
            "url": format!("{}/p/1002", srv.url()),
            "max_price": 60,
            "params": {"customer": {"name": "Ada", "email": "ada@example.com", "address": "1 Main St"}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let bought = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let rec = finished.recv().await.unwrap();
            if rec.target.as_str() == "1002" && rec.status == Status::Completed {
                return rec;
            }
        }
    })
    .await
    .expect("the added target was never bought");
    assert!(bought.order.is_some(), "{bought:?}");

    // A bad change is refused with the located problem; nothing written.
    let r = api(reqwest::Method::PATCH, "/api/targets/1002")
        .json(&json!({"windows": "mon-fry 09:00-18:00 UTC"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("unknown day `fry`"));
    let r = api(reqwest::Method::POST, "/api/targets")
        .json(&json!({"id": "1002", "url": "/p/1002", "max_price": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a second 1002");

    // Paused: the scheduler skips it from the next cycle on.
    let r = api(reqwest::Method::PATCH, "/api/targets/1002")
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|st| {
            st.not_due
                .iter()
                .any(|n| n.target.as_str() == "1002" && n.why == "paused")
        }),
    )
    .await
    .expect("the paused target was still considered")
    .unwrap();

    // The hand-written target goes (now, or when its run ends).
    let r = api(reqwest::Method::DELETE, "/api/targets/1001")
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 200 || r.status() == 202,
        "{}",
        r.text().await.unwrap()
    );
    let gone = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let text = std::fs::read_to_string(p.config()).unwrap();
            if !text.contains("id: \"1001\"") {
                return text;
            }
            // The removal waits for a run's end; no event reaches the test.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("1001 was never removed");
    shutdown.cancel();
    task.await.unwrap();
    stop.cancel();

    // Every line the user wrote is still there but 1001's, in order.
    let kept: Vec<&str> = before
        .lines()
        .filter(|l| !l.contains("id: \"1001\"") && !l.contains("espresso"))
        .collect();
    let mut rest = gone.lines();
    for l in &kept {
        assert!(rest.any(|g| g == *l), "lost or moved {l:?}:\n{gone}");
    }
    assert!(gone.contains("# Targets, kept by hand.") && gone.contains("# Hand-picked."));
    assert!(
        !gone.contains("espresso"),
        "1001's own comment goes with it"
    );
    assert!(
        gone.contains("  - id: \"1002\"\n") && gone.contains("    paused: true\n"),
        "{gone}"
    );
    assert!(
        srv.shop
            .orders_per_product()
            .get("1002")
            .is_some_and(|n| *n >= 1)
    );
    assert_no_chromium(&p.profile()).await;
}
