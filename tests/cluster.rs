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
    a.claim(&t("1001"), None).await.unwrap().release().await;
    let mut c = r.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut c).await.unwrap();
    let refusal = a.claim(&t("1001"), None).await.unwrap_err();
    assert_eq!(refusal, Refusal::StoreLost);
    assert!(refusal.stops_dispatch());
    assert_eq!(a.health().state, "store_lost");
    // It stays stopped, even once Redis has an epoch again.
    let fresh = cluster(&r, "b", Duration::from_secs(30));
    fresh.claim(&t("1002"), None).await.unwrap();
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
