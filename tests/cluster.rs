//! Instances coordinated on Redis (issue 16), against a real
//! `redis-server` the tests start on 127.0.0.1: the claim, the check
//! before `commit` and its markers, lease expiry after a holder dies, a
//! lost lease stopping its run, a Redis that lost its data, and, end to
//! end in real Chromium against one demo shop, two and three instances on
//! one set of targets and accounts, `kill -9` of an instance holding a
//! lease or in its commit, and Redis restarted mid-run.

use crate::common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use baton::cluster::{Cluster, ClusterConfig, Refusal};
use baton::id::{AccountId, RunId, SessionId, TargetId};
use baton::registry::{CancelReason, Registration, Registry};
use common::redis::Redis;

fn cluster(r: &Redis, instance: &str, lease: Duration) -> Cluster {
    Cluster::new(ClusterConfig {
        redis: r.url(),
        instance: instance.into(),
        lease,
        namespace: "t".into(),
    })
    .unwrap()
}

fn t(id: &str) -> TargetId {
    TargetId::new(id)
}

async fn pttl(r: &Redis, key: &str) -> i64 {
    let mut c = r.conn().await;
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut c)
        .await
        .unwrap()
}

/// One claim per target and per account across instances; tokens only
/// grow; a released claim frees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_and_an_account_are_claimed_by_one_instance_at_a_time() {
    let r = Redis::start().await;
    let (a, b) = (
        cluster(&r, "a", Duration::from_secs(30)),
        cluster(&r, "b", Duration::from_secs(30)),
    );
    let ada = AccountId::new("ada");
    let first = a.claim(&t("1001"), Some(&ada)).await.unwrap();
    assert_eq!(
        b.claim(&t("1001"), None).await.unwrap_err(),
        Refusal::Held {
            what: "target",
            holder: "a".into()
        }
    );
    // Another target on the same account: the account is taken (I10).
    assert_eq!(
        b.claim(&t("1002"), Some(&ada)).await.unwrap_err(),
        Refusal::Held {
            what: "account",
            holder: "a".into()
        }
    );
    // Refused claims took nothing: 1002 is still free for a guest run.
    let other = b.claim(&t("1002"), None).await.unwrap();
    assert!(other.token() > first.token());
    // The same instance is refused too (a lease left from its last life).
    assert!(a.claim(&t("1001"), None).await.is_err());
    first.release().await;
    let again = b.claim(&t("1001"), Some(&ada)).await.unwrap();
    assert!(again.token() > other.token());
    assert_eq!(a.health().state, "connected");
    assert_eq!(b.health().leases, 2);
}

/// The check before `commit`: `committing` is written with it, and from
/// then on no instance claims the target; `committed` keeps it bought,
/// and an order the shop refused frees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_markers_keep_a_target_from_every_other_instance() {
    let r = Redis::start().await;
    let (a, b) = (
        cluster(&r, "a", Duration::from_secs(30)),
        cluster(&r, "b", Duration::from_secs(30)),
    );
    let claim = Arc::new(a.claim(&t("1001"), None).await.unwrap());
    let c = claim.clone();
    tokio::task::spawn_blocking(move || c.begin_commit(RunId(7)))
        .await
        .unwrap()
        .unwrap();
    // Even once the lease is given back, the marker holds the target.
    claim.release().await;
    assert!(matches!(
        b.claim(&t("1001"), None).await.unwrap_err(),
        Refusal::Committing { holder } if holder == "a"
    ));
    let c = claim.clone();
    tokio::task::spawn_blocking(move || c.committed(RunId(7), Some("A-1")))
        .await
        .unwrap();
    assert_eq!(
        b.claim(&t("1001"), None).await.unwrap_err(),
        Refusal::Committed {
            holder: "a".into(),
            order: "A-1".into()
        }
    );

    // The shop refused 1002's order: nothing was bought, so it is free.
    let claim = Arc::new(a.claim(&t("1002"), None).await.unwrap());
    let c = claim.clone();
    tokio::task::spawn_blocking(move || {
        c.begin_commit(RunId(8)).unwrap();
        c.uncommitted();
    })
    .await
    .unwrap();
    claim.release().await;
    b.claim(&t("1002"), None).await.unwrap();

    // An operator settles an in-doubt target on the instance that holds
    // it: as not bought, it is free for the cluster; as bought, it stays
    // bought.
    let claim = Arc::new(a.claim(&t("1003"), None).await.unwrap());
    let c = claim.clone();
    tokio::task::spawn_blocking(move || c.begin_commit(RunId(9)).unwrap())
        .await
        .unwrap();
    claim.release().await;
    b.settled(&t("1003"), false).await.unwrap();
    assert!(
        matches!(
            b.claim(&t("1003"), None).await,
            Err(Refusal::Committing { .. })
        ),
        "another instance's marker is not settled from here"
    );
    a.settled(&t("1003"), false).await.unwrap();
    b.claim(&t("1003"), None).await.unwrap().release().await;
    a.settled(&t("1003"), true).await.unwrap();
    assert!(matches!(
        b.claim(&t("1003"), None).await,
        Err(Refusal::Committed { .. })
    ));

    // Test mode: an instance forgets only its own `committed` markers.
    b.forget_committed(&[t("1001")]).await.unwrap();
    assert!(b.claim(&t("1001"), None).await.is_err());
    a.forget_committed(&[t("1001")]).await.unwrap();
    b.claim(&t("1001"), None).await.unwrap();
}

/// A holder that died (its claim never released, never renewed): another
/// instance gets the target only once Redis has expired the lease, and a
/// stale holder's check before `commit` then fails: the fencing token in
/// the lease is no longer its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_frees_its_target_only_when_it_expires() {
    let r = Redis::start().await;
    let lease = Duration::from_millis(1500);
    let (a, b) = (cluster(&r, "a", lease), cluster(&r, "b", lease));
    let stale = Arc::new(a.claim(&t("1001"), None).await.unwrap());
    let left = pttl(&r, "t:lease:target:1001").await;
    let refused_from = SystemTime::now();
    assert!(left > 0);
    let mut refusals = 0;
    let got = loop {
        match b.claim(&t("1001"), None).await {
            Ok(c) => break c,
            Err(Refusal::Held { .. }) => refusals += 1,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let waited = refused_from.elapsed().unwrap();
    assert!(refusals > 0);
    assert!(
        waited.as_millis() as i64 >= left - 50,
        "taken after {waited:?}, {left} ms before the lease ran out"
    );
    assert!(got.token() > stale.token());
    let s = stale.clone();
    let late = tokio::task::spawn_blocking(move || s.begin_commit(RunId(1)))
        .await
        .unwrap();
    assert_eq!(late.unwrap_err(), Refusal::Lost);
    // The live holder commits.
    let g = Arc::new(got);
    let c = g.clone();
    tokio::task::spawn_blocking(move || c.begin_commit(RunId(2)))
        .await
        .unwrap()
        .unwrap();
}

/// A run whose lease is taken from it (here: deleted, as an expiry during
/// a stall would) is cancelled before its commit; a renewing holder keeps
/// its lease well past one lease time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_loses_its_lease_is_stopped_and_a_renewed_one_is_kept() {
    let r = Redis::start().await;
    let lease = Duration::from_millis(900);
    let a = cluster(&r, "a", lease);
    let registry = Arc::new(Registry::new(1));
    let reg = |id: &str, s: u32| Registration {
        target: t(id),
        session: SessionId(s),
        account: None,
        flow: "f".into(),
        versions: vec![],
    };
    let kept = registry.register(reg("1001", 0)).unwrap();
    let kept_claim = a.claim(&t("1001"), None).await.unwrap();
    kept_claim.keep_alive(kept.control().clone());
    let lost = registry.register(reg("1002", 1)).unwrap();
    let lost_claim = a.claim(&t("1002"), None).await.unwrap();
    lost_claim.keep_alive(lost.control().clone());

    let mut c = r.conn().await;
    let _: () = redis::cmd("DEL")
        .arg("t:lease:target:1002")
        .query_async(&mut c)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), lost.control().token().cancelled())
        .await
        .expect("the run without its lease was not stopped");
    assert_eq!(lost.control().reason(), Some(CancelReason::LeaseLost));

    // Three lease times later, the renewed lease is still there and ours.
    let b = cluster(&r, "b", lease);
    for _ in 0..3 {
        tokio::time::sleep(lease).await;
        assert!(!kept.control().is_cancelled());
        assert!(matches!(
            b.claim(&t("1001"), None).await,
            Err(Refusal::Held { .. })
        ));
    }
    kept_claim.release().await;
}

/// A Redis that comes back empty has lost the markers: every instance
/// that knew it stops claiming and says so, rather than buy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_stops_dispatch() {
    let r = Redis::start().await;
    let a = cluster(&r, "a", Duration::from_secs(30));
    // What a's own state knows: 1005 bought, 1006 in doubt.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = baton::state::StateStore::open(dir.path()).unwrap();
    state
        .update(&t("1005"), |s| {
            s.status = Status::Completed;
            s.last_order = Some("A-5".into());
        })
        .unwrap();
    state
        .update(&t("1006"), |s| s.status = Status::InDoubt)
        .unwrap();
    a.attach_state(Arc::new(state));
    a.claim(&t("1001"), None).await.unwrap().release().await;
    let mut c = r.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let refusal = a.claim(&t("1001"), None).await.unwrap_err();
    assert_eq!(refusal, Refusal::StoreLost);
    assert!(refusal.stops_dispatch());
    assert_eq!(a.health().state, "store_lost");
    // It wrote back what it knows before saying so.
    let b = cluster(&r, "b", Duration::from_secs(30));
    assert_eq!(
        b.claim(&t("1005"), None).await.unwrap_err(),
        Refusal::Committed {
            holder: "a".into(),
            order: "A-5".into()
        }
    );
    assert!(matches!(
        b.claim(&t("1006"), None).await,
        Err(Refusal::Committing { holder }) if holder == "a"
    ));
    // It stays stopped, even once Redis has an epoch again.
    b.claim(&t("1002"), None).await.unwrap();
    assert_eq!(
        a.claim(&t("1003"), None).await.unwrap_err(),
        Refusal::StoreLost
    );
}

/// Redis unreachable: a claim is refused as such (dispatch stops), not
/// an error that ends baton; when it is back, claims work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_wait_while_redis_is_down_and_go_on_when_it_is_back() {
    let mut r = Redis::start().await;
    let a = cluster(&r, "a", Duration::from_secs(30));
    a.claim(&t("1001"), None).await.unwrap().release().await;
    r.kill().await;
    let down = a.claim(&t("1002"), None).await.unwrap_err();
    assert!(matches!(down, Refusal::Unreachable(_)), "{down:?}");
    assert!(down.stops_dispatch());
    assert_eq!(a.health().state, "unreachable");
    r.restart().await;
    // The connection comes back on its own (the manager reconnects).
    let mut tries = 0;
    loop {
        match a.claim(&t("1002"), None).await {
            Ok(_) => break,
            Err(Refusal::Unreachable(_)) if tries < 50 => tries += 1,
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(a.health().state, "connected");
}

// ---------------------------------------------------------------------------
// Whole instances, in real Chromium, against one demo shop.

use baton::app::{App, Options};
use baton::state::{RunRecord, Status};
use common::live::{Project, ShopApi, target};

const CYCLE: &str =
    "  interval: 1s\n  wait_for_active: 30s\n  run_timeout: 60s\n  step_timeout: 30s";

/// One demo shop for every instance of a test, outliving them.
async fn shared_shop() -> (baton::shop::Running, tokio_util::sync::CancellationToken) {
    let stop = tokio_util::sync::CancellationToken::new();
    let shop = baton::shop::start("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    // Every product can be bought many times over: a double purchase
    // would succeed, and show.
    for id in ["1001", "1002", "1003", "1004"] {
        assert!(shop.shop.set_stock(id, 50));
    }
    (shop, stop)
}

/// An instance's project: its own state and browser, `targets` on the
/// shared shop, the accounts, and `cluster:` on `redis`.
fn instance(shop: &str, redis: &str, name: &str, lease: &str, targets: &str) -> Project {
    let p = Project::new(
        CYCLE,
        targets,
        &format!(
            "{}cluster: {{ redis: \"{redis}\", instance: {name}, lease: {lease}, namespace: baton }}\n",
            crate::accounts::accounts("lovelace")
        ),
    );
    p.edit("test_mode: true", "test_mode: false");
    p.edit("demo_shop: { port: 0 }\n", "");
    p.edit("url: /", &format!("url: {shop}/"));
    p
}

/// Every product of the fleet's targets: two on `ada`, one on `grace`,
/// one a guest's.
fn fleet_targets() -> String {
    [
        crate::accounts::on("ada", "1001", 60.0),
        crate::accounts::on("ada", "1002", 30.0),
        crate::accounts::on("grace", "1004", 100.0),
        target("1003", 20.0),
    ]
    .concat()
}

async fn start(p: &Project, cycles: Option<u64>) -> App {
    common::init_tracing();
    let mut o = Options::new(p.config());
    o.cycles = cycles;
    App::start(o)
        .await
        .unwrap_or_else(|e| panic!("baton did not start: {e}"))
}

/// Every finished run of every app, on one channel, with the app's index.
fn merged(apps: &[App]) -> tokio::sync::mpsc::UnboundedReceiver<(usize, RunRecord)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (i, a) in apps.iter().enumerate() {
        let mut f = a.parts.finished.subscribe();
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Ok(r) = f.recv().await {
                if tx.send((i, r)).is_err() {
                    return;
                }
            }
        });
    }
    rx
}

/// Waits until `app` has started `n` more cycles.
async fn cycles_pass(
    status: &mut tokio::sync::watch::Receiver<baton::scheduler::SchedulerStatus>,
    n: u64,
) {
    let from = status.borrow().cycle;
    status.wait_for(|s| s.cycle >= from + n).await.unwrap();
}

/// `n` instances on one set of targets and accounts: every target bought
/// exactly once in the fleet, never two runs on one account at once (the
/// shop's per-account overlap counter), and the instances that did not
/// buy a target never do, cycles after.
async fn a_fleet_buys_each_target_once(n: usize) {
    let _one = common::live::one_at_a_time().await;
    let r = Redis::start().await;
    let (shop, stop_shop) = shared_shop().await;
    let projects: Vec<Project> = (0..n)
        .map(|i| {
            instance(
                &shop.url(),
                &r.url(),
                &format!("i{i}"),
                "5s",
                &fleet_targets(),
            )
        })
        .collect();
    let mut apps = Vec::new();
    for p in &projects {
        apps.push(start(p, None).await);
    }
    let mut records = merged(&apps);
    let states: Vec<_> = apps.iter().map(|a| a.parts.state.clone()).collect();
    let mut statuses: Vec<_> = apps.iter().map(|a| a.status.clone()).collect();
    let stops: Vec<_> = apps.iter().map(|a| a.shutdown.clone()).collect();
    let runs: Vec<_> = apps.into_iter().map(|a| tokio::spawn(a.run())).collect();

    let all = ["1001", "1002", "1003", "1004"];
    let mut bought = std::collections::BTreeMap::new();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(300), async {
        while bought.len() < all.len() {
            let (i, rec) = records.recv().await.unwrap();
            if rec.status == Status::Completed && rec.order.is_some() {
                bought.insert(rec.target.as_str().to_owned(), rec.ended_at);
            }
            seen.push((i, rec));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bought only {bought:?}"));
    // Two more cycles everywhere: nobody buys again.
    for s in &mut statuses {
        cycles_pass(s, 2).await;
    }
    for s in &stops {
        s.cancel();
    }
    for run in runs {
        run.await.unwrap();
    }
    // Once bought, a target is never run again anywhere: the claim sees
    // the `committed` marker (the check before commit would only catch
    // the run at its last step).
    while let Ok(r) = records.try_recv() {
        seen.push(r);
    }
    for (i, rec) in &seen {
        let t = rec.target.as_str();
        assert!(
            rec.started_at <= bought[t],
            "instance {i} ran {t} again after it was bought: {rec:#?}"
        );
    }
    shop.shop.quiesce().await;
    let orders = shop.shop.orders_per_product();
    for t in all {
        assert_eq!(orders.get(t), Some(&1), "{t}: {orders:?}");
        let buyers = states
            .iter()
            .filter(|s| s.get(t).status == Status::Completed)
            .count();
        assert_eq!(buyers, 1, "{t} completed on {buyers} instances");
    }
    assert_eq!(
        shop.shop.account_overlaps("ada"),
        0,
        "{:?}",
        shop.shop.overlap_events()
    );
    assert_eq!(
        shop.shop.account_overlaps("grace"),
        0,
        "{:?}",
        shop.shop.overlap_events()
    );
    assert_eq!(shop.shop.overlaps(), 0, "{:?}", shop.shop.overlap_events());
    stop_shop.cancel();
    for p in &projects {
        common::live::assert_no_chromium(&p.profile()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_targets_and_accounts_without_overlap_or_double_buy() {
    a_fleet_buys_each_target_once(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_targets_and_accounts_without_overlap_or_double_buy() {
    a_fleet_buys_each_target_once(3).await;
}

/// `baton run` in `p` as a child process, its log on a line stream.
fn spawn_baton(
    p: &Project,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["run", "--config"])
        .arg(p.config())
        .current_dir(p.dir.path())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// Reads `lines` until one contains `needle`.
async fn until_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.contains(needle) {
                return l;
            }
        }
        panic!("baton ended before logging `{needle}`");
    })
    .await
    .unwrap_or_else(|_| panic!("no `{needle}` in the log"))
}

/// `kill -9` of baton leaves its Chromium behind (it is the test's to
/// clean up, as a supervisor's restart of baton would).
fn kill_9(child: &tokio::process::Child, p: &Project) {
    common::live::signal(child.id().unwrap(), rustix::process::Signal::KILL);
    for pid in common::live::processes_mentioning(&p.profile()) {
        common::live::signal(pid, rustix::process::Signal::KILL);
    }
}

/// Starts instance `p`, whose place-order the shop answers only after 5 s,
/// and kills it (`kill -9`) once the order has reached the shop: a
/// `committing` marker of its own is left in Redis, and one order.
async fn kill_inside_its_commit(shop: &baton::shop::Running, p: &Project) {
    ShopApi::new(&shop.url())
        .post("/admin/delay/place_order/5000?times=1")
        .await;
    let (mut child, mut log) = spawn_baton(p);
    until_line(&mut log, "committing").await;
    shop.shop.arrived("place_order", 1).await;
    kill_9(&child, p);
    child.wait().await.unwrap();
}

/// An instance killed (`kill -9`) while it holds a lease, before its
/// commit: another instance takes the target only once Redis has expired
/// the lease, and buys it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_holders_target_is_taken_only_after_its_lease_expires() {
    let _one = common::live::one_at_a_time().await;
    let r = Redis::start().await;
    let (shop, stop_shop) = shared_shop().await;
    let a = instance(&shop.url(), &r.url(), "a", "4s", &target("1001", 60.0));
    let b = instance(&shop.url(), &r.url(), "b", "4s", &target("1001", 60.0));
    // a's run waits on the product page while it holds the lease.
    ShopApi::new(&shop.url())
        .post("/admin/delay/product/20000?times=1")
        .await;
    let (mut child, mut log) = spawn_baton(&a);
    until_line(&mut log, "registered").await;
    kill_9(&child, &a);
    let killed_at = SystemTime::now();
    let left = pttl(&r, "baton:lease:target:1001").await;
    child.wait().await.unwrap();
    assert!(left > 0, "the lease was gone at once ({left})");

    let app = start(&b, None).await;
    let (state, stop) = (app.parts.state.clone(), app.shutdown.clone());
    let mut finished = app.parts.finished.subscribe();
    let run = tokio::spawn(app.run());
    let rec = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let rec = finished.recv().await.unwrap();
            if rec.status == Status::Completed {
                return rec;
            }
        }
    })
    .await
    .expect("b never bought 1001");
    stop.cancel();
    run.await.unwrap();
    let waited = rec.started_at.duration_since(killed_at).unwrap();
    assert!(
        waited.as_millis() as i64 >= left - 100,
        "b started after {waited:?}; the lease had {left} ms left"
    );
    assert_eq!(state.get("1001").status, Status::Completed);
    shop.shop.quiesce().await;
    assert_eq!(shop.shop.orders_per_product().get("1001"), Some(&1));
    stop_shop.cancel();
    common::live::assert_no_chromium(&a.profile()).await;
    common::live::assert_no_chromium(&b.profile()).await;
}

/// An instance killed (`kill -9`) inside its commit, its order request in
/// flight on the shop: its lease expires, but its `committing` marker
/// does not, so no other instance ever runs the target; the shop places
/// the one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_in_its_commit_leaves_the_target_to_nobody() {
    let _one = common::live::one_at_a_time().await;
    let r = Redis::start().await;
    let (shop, stop_shop) = shared_shop().await;
    let a = instance(&shop.url(), &r.url(), "a", "2s", &target("1001", 60.0));
    let b = instance(&shop.url(), &r.url(), "b", "2s", &target("1001", 60.0));
    kill_inside_its_commit(&shop, &a).await;

    // b runs well past a's lease, cycle after cycle.
    let app = start(&b, Some(6)).await;
    let state = app.parts.state.clone();
    app.run().await;
    shop.shop.quiesce().await;
    assert_eq!(shop.shop.orders_per_product().get("1001"), Some(&1));
    assert_eq!(state.get("1001").status, Status::Ready);
    assert!(state.history(usize::MAX).unwrap().is_empty());
    let mut c = r.conn().await;
    let marker: String = redis::cmd("GET")
        .arg("baton:committing:1001")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(marker.starts_with("a|"), "{marker}");
    stop_shop.cancel();
    common::live::assert_no_chromium(&a.profile()).await;
    common::live::assert_no_chromium(&b.profile()).await;
}

/// Issue 24.5: a kill inside a's commit, then Redis loses everything
/// (FLUSHALL). b, which had copied a's `committing` marker, writes it back
/// and names it; restarted, b claims nothing (not even its own other
/// target) until an operator runs `baton cluster accept-loss`; after that
/// it buys its other target, and a's target stays a's: bought once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_flushall_a_restart_claims_nothing_until_the_loss_is_accepted() {
    let _one = common::live::one_at_a_time().await;
    let r = Redis::start().await;
    let (shop, stop_shop) = shared_shop().await;
    let a = instance(&shop.url(), &r.url(), "a", "2s", &target("1001", 60.0));
    let b = instance(
        &shop.url(),
        &r.url(),
        "b",
        "2s",
        &[target("1001", 60.0), target("1002", 30.0)].concat(),
    );
    kill_inside_its_commit(&shop, &a).await;
    // 1002 is out of stock until after the loss, so b has bought nothing
    // of its own when Redis loses its data.
    ShopApi::new(&shop.url()).post("/admin/stock/1002/0").await;

    // b runs until its copy of the markers holds a's.
    let app = start(&b, None).await;
    let cluster = app.parts.leases.clone();
    let stop = app.shutdown.clone();
    let run = tokio::spawn(app.run());
    let memory = b.dir.path().join(".baton/cluster.json");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = baton::cluster::Memory::load(memory.parent().unwrap()).unwrap();
            if m.markers
                .get("committing:1001")
                .is_some_and(|v| v.starts_with("a|"))
            {
                break;
            }
            // The heartbeat writes the copy every third of a lease; no
            // event tells the test when.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("b never copied a's marker");

    let mut c = r.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let mut health = cluster
        .health_changes()
        .expect("with cluster:, the leases are the cluster's");
    let lost = tokio::time::timeout(
        Duration::from_secs(30),
        health.wait_for(|h| h.state == "store_lost"),
    )
    .await
    .expect("b did not notice the loss")
    .unwrap()
    .clone();
    let why = lost.last_error.unwrap_or_default();
    assert!(
        why.contains("1001 (committing by a)") && why.contains("accept-loss"),
        "{why}"
    );
    stop.cancel();
    run.await.unwrap();
    // The handle holds the state store (and its lock) while it lives.
    drop((cluster, health));

    // Restarted: a's marker is back in Redis and b claims nothing, though
    // 1002 is in stock now.
    let marker: Option<String> = redis::cmd("GET")
        .arg("baton:committing:1001")
        .query_async(&mut c)
        .await
        .unwrap();
    assert!(
        marker.as_deref().is_some_and(|m| m.starts_with("a|")),
        "{marker:?}"
    );
    ShopApi::new(&shop.url()).post("/admin/stock/1002/50").await;
    let app = start(&b, Some(3)).await;
    let cluster = app.parts.leases.clone();
    app.run().await;
    let h = cluster
        .health()
        .expect("with cluster:, the leases are the cluster's");
    assert_eq!(h.state, "store_lost");
    assert!(
        h.last_error
            .as_deref()
            .is_some_and(|e| e.contains("1001 (committing by a)")),
        "{h:?}"
    );
    drop(cluster);
    shop.shop.quiesce().await;
    assert_eq!(
        shop.shop.orders_per_product().get("1002"),
        None,
        "b claimed before the loss was accepted"
    );

    // The operator settles, accepts; b buys 1002, and 1001 stays a's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["cluster", "accept-loss", "--config"])
        .arg(b.config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = start(&b, Some(2)).await;
    let state = app.parts.state.clone();
    app.run().await;
    shop.shop.quiesce().await;
    assert_eq!(state.get("1002").status, Status::Completed);
    let orders = shop.shop.orders_per_product();
    assert_eq!(orders.get("1001"), Some(&1), "{orders:?}");
    assert_eq!(orders.get("1002"), Some(&1), "{orders:?}");
    stop_shop.cancel();
    common::live::assert_no_chromium(&a.profile()).await;
    common::live::assert_no_chromium(&b.profile()).await;
}

/// Redis restarted mid-run: while it is down both instances stop
/// dispatching (and say so on their dashboards' cluster health), neither
/// crashes, and once it is back they finish buying: every target once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_run_stops_dispatch_and_never_double_buys() {
    let _one = common::live::one_at_a_time().await;
    let mut r = Redis::start().await;
    let (shop, stop_shop) = shared_shop().await;
    let targets = [
        target("1001", 60.0),
        target("1002", 30.0),
        target("1004", 100.0),
    ]
    .concat();
    let projects: Vec<Project> = ["a", "b"]
        .iter()
        .map(|n| instance(&shop.url(), &r.url(), n, "3s", &targets))
        .collect();
    ShopApi::new(&shop.url())
        .post("/admin/delay/place_order/1500")
        .await;
    let mut apps = Vec::new();
    for p in &projects {
        apps.push(start(p, None).await);
    }
    let mut records = merged(&apps);
    let clusters: Vec<_> = apps.iter().map(|a| a.parts.leases.clone()).collect();
    let mut statuses: Vec<_> = apps.iter().map(|a| a.status.clone()).collect();
    let stops: Vec<_> = apps.iter().map(|a| a.shutdown.clone()).collect();
    let runs: Vec<_> = apps.into_iter().map(|a| tokio::spawn(a.run())).collect();

    let mut bought = std::collections::BTreeSet::new();
    let mut seen = Vec::new();
    let (_, first) = records.recv().await.unwrap();
    if first.status == Status::Completed {
        bought.insert(first.target.as_str().to_owned());
    }
    seen.push((0, first));
    r.kill().await;
    // For each instance: a whole cycle (from one cycle's start to the
    // next) while Redis is down and known to be.
    let mut outage = Vec::new();
    for (c, s) in clusters.iter().zip(&mut statuses) {
        c.health_changes()
            .expect("a cluster")
            .wait_for(|h| h.state == "unreachable")
            .await
            .unwrap();
        cycles_pass(s, 1).await;
        let from = SystemTime::now();
        cycles_pass(s, 1).await;
        outage.push((from, SystemTime::now()));
    }
    r.restart().await;
    tokio::time::timeout(Duration::from_secs(240), async {
        while bought.len() < 3 {
            let (i, rec) = records.recv().await.unwrap();
            if rec.status == Status::Completed && rec.order.is_some() {
                bought.insert(rec.target.as_str().to_owned());
            }
            seen.push((i, rec));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("bought only {bought:?}"));
    for s in &mut statuses {
        cycles_pass(s, 1).await;
    }
    for c in &clusters {
        assert_eq!(c.health().expect("a cluster").state, "connected");
    }
    // Nothing was dispatched in those cycles.
    while let Ok(r) = records.try_recv() {
        seen.push(r);
    }
    for (i, rec) in &seen {
        let (from, to) = outage[*i];
        assert!(
            rec.started_at < from || rec.started_at > to,
            "instance {i} started run {} while Redis was down: {rec:#?}",
            rec.run_id
        );
    }
    for s in &stops {
        s.cancel();
    }
    for run in runs {
        run.await.expect("an instance crashed");
    }
    shop.shop.quiesce().await;
    let orders = shop.shop.orders_per_product();
    for t in ["1001", "1002", "1004"] {
        assert_eq!(orders.get(t), Some(&1), "{t}: {orders:?}");
    }
    assert_eq!(shop.shop.overlaps(), 0, "{:?}", shop.shop.overlap_events());
    stop_shop.cancel();
    for p in &projects {
        common::live::assert_no_chromium(&p.profile()).await;
    }
}

/// Through the scheduler and a run (simulated browser, Rust steps): before
/// its first claim an instance writes the markers its own state knows (a
/// target it bought while Redis was elsewhere), and a run's commit leaves
/// `committed` with its order for every other instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_publishes_what_it_bought_and_its_runs_commit_through_markers() {
    let r = Redis::start().await;
    let a = cluster(&r, "a", Duration::from_secs(30));
    let b = cluster(&r, "b", Duration::from_secs(30));
    let mut cfg = common::config(&["bought", "fresh"], common::flow(&["buy"]));
    cfg.test_mode = false;
    let h = common::Harness::new(cfg);
    h.state
        .update(&t("bought"), |s| {
            s.status = Status::Completed;
            s.last_order = Some("o-0".into());
        })
        .unwrap();
    h.steps.step("buy", |cx| async move {
        baton::rust_steps::commit(&cx, "order", async { Ok("o-1".to_owned()) }).await?;
        Ok(baton::flow::StepEnd::Continue)
    });
    let scheduler = h.scheduler_on(
        baton::parts::Parts {
            leases: Arc::new(a.clone()),
            ..h.parts()
        },
        Some(1),
    );
    scheduler.run().await;

    let h_runs = h.history();
    assert_eq!(h_runs.len(), 1, "{h_runs:#?}");
    assert_eq!(h_runs[0].target.as_str(), "fresh");
    assert_eq!(h_runs[0].status, Status::Completed);
    assert_eq!(
        b.claim(&t("bought"), None).await.unwrap_err(),
        Refusal::Committed {
            holder: "a".into(),
            order: "o-0".into()
        }
    );
    assert_eq!(
        b.claim(&t("fresh"), None).await.unwrap_err(),
        Refusal::Committed {
            holder: "a".into(),
            order: "o-1".into()
        }
    );
    // The run gave its lease back when it ended.
    assert_eq!(a.health().leases, 0);
}
