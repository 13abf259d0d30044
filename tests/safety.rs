//! The safety invariants (design section 2), each proven under tokio's
//! paused clock against the simulated browser. Each test names the
//! mechanism it guards; docs/safety.md records how each was checked to fail
//! with that mechanism removed.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use baton::browser::Selectors;
use baton::browser::sim::Fault;
use baton::flow::{StepEnd, StepError};
use baton::id::{AccountId, SessionId, TargetId};
use baton::registry::{Pool, Refusal, Registration, Registry, SessionWait};
use baton::rust_steps::commit;
use baton::scheduler::Command;
use baton::state::Status;
use common::{Harness, Timeline, config, flow};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(5);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A step that navigates to the target and then takes `d` (virtual) time.
fn timed_step(h: &Harness, name: &'static str, d: Duration, tl: &Timeline) {
    let tl = tl.clone();
    h.steps.step(name, move |cx| {
        let tl = tl.clone();
        async move {
            tl.mark(format!("{name}:start:{}", cx.target.id));
            cx.page()?
                .navigate(&cx.target.url, T)
                .await
                .map_err(|e| StepError::failed(e.to_string()))?;
            tokio::time::sleep(d).await;
            tl.mark(format!("{name}:end:{}", cx.target.id));
            Ok(StepEnd::Continue)
        }
    });
}

// I1 -----------------------------------------------------------------------

/// I1: with one session, three targets whose runs each take most of a cycle
/// never share the browser; with two sessions, runs do go two at a time
/// (so the sessions are really used) and still never share one.
/// Guards: the session claim in `Registry::register` and the session wait
/// in dispatch.
#[tokio::test(start_paused = true)]
async fn i1_no_overlap_on_a_session() {
    for sessions in [1u32, 2] {
        let mut cfg = config(&["a", "b", "c"], flow(&["work"]));
        cfg.cycle.max_concurrent_runs = sessions;
        let h = Harness::new(cfg);
        h.sim.set_latency("navigate", Duration::from_millis(700));
        let tl = Timeline::default();
        timed_step(&h, "work", secs(6), &tl);

        let live = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let watcher = {
            let (registry, live, peak) = (h.registry.clone(), live.clone(), peak.clone());
            let mut rx = registry.watch();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let n = registry.len() as u32;
                    live.store(n, Ordering::SeqCst);
                    peak.fetch_max(n, Ordering::SeqCst);
                }
            })
        };
        h.run_cycles(20).await;
        watcher.abort();

        assert_eq!(
            h.sim.overlaps(),
            0,
            "two runs drove one session ({sessions} sessions)"
        );
        assert_eq!(h.history().len(), 60, "every target ran every cycle");
        assert_eq!(peak.load(Ordering::SeqCst), sessions, "runs in parallel");
        assert!(h.registry.is_idle());
    }
}

// I2 -----------------------------------------------------------------------

/// I2: threads racing to register the same target: exactly one wins each
/// round. Guards: check-and-insert as one `DashMap::entry` call.
#[test]
fn i2_one_run_per_target() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2_000;
    let registry = Arc::new(Registry::default());
    let barrier = Arc::new(Barrier::new(THREADS));
    let winners = Arc::new(AtomicU64::new(0));
    let max_in_round = Arc::new(AtomicU64::new(0));
    let round_wins: Arc<Vec<AtomicU64>> =
        Arc::new((0..ROUNDS).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (registry, barrier, winners, round_wins, max_in_round) = (
                registry.clone(),
                barrier.clone(),
                winners.clone(),
                round_wins.clone(),
                max_in_round.clone(),
            );
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Each thread uses its own session, so only the target
                    // claim can stop a second winner.
                    let got = registry.register(Registration {
                        target: TargetId::new("a"),
                        session: SessionId(i as u32),
                        account: None,
                        flow: "f".into(),
                        versions: vec![],
                    });
                    if let Ok(_guard) = &got {
                        winners.fetch_add(1, Ordering::SeqCst);
                        let n = round_wins[round].fetch_add(1, Ordering::SeqCst) + 1;
                        max_in_round.fetch_max(n, Ordering::SeqCst);
                    }
                    // Everyone has tried before the winner lets go.
                    barrier.wait();
                    drop(got);
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        max_in_round.load(Ordering::SeqCst),
        1,
        "two runs of one target registered at once"
    );
    assert_eq!(
        winners.load(Ordering::SeqCst),
        ROUNDS as u64,
        "every round had a winner"
    );
    assert!(registry.is_idle());
}

// I3 -----------------------------------------------------------------------

/// I3: a run longer than the interval. The next cycle ticks while it runs,
/// waits, and starts its run only after the guard dropped, less than 1 ms
/// of virtual time later (the wait is woken by the drop, not by polling).
/// Guards: `Registry::wait_idle` and its Notify wake-up.
#[tokio::test(start_paused = true)]
async fn i3_next_cycle_waits_for_slow_run() {
    let mut cfg = config(&["a"], flow(&["slow"]));
    cfg.cycle.interval = (secs(30), secs(30));
    cfg.cycle.wait_for_active = secs(60);
    cfg.cycle.run_timeout = secs(120);
    cfg.cycle.step_timeout = secs(120);
    let h = Harness::new(cfg);
    let tl = Timeline::default();
    timed_step(&h, "slow", secs(45), &tl);

    // Record the virtual instant of every registry change, with its size.
    let changes = Arc::new(Mutex::new(Vec::new()));
    let watcher = {
        let (registry, changes) = (h.registry.clone(), changes.clone());
        let mut rx = registry.watch();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                changes
                    .lock()
                    .unwrap()
                    .push((Instant::now(), registry.len()));
            }
        })
    };
    let t0 = Instant::now();
    h.run_cycles(2).await;
    watcher.abort();

    let starts = tl.all("slow:start:a");
    let ends = tl.all("slow:end:a");
    assert_eq!(starts.len(), 2);
    // Cycle 2 ticked at 30 s but its run could only start after run 1.
    assert_eq!(ends[0] - t0, secs(45));
    assert!(starts[1] >= ends[0], "run 2 started before run 1 ended");
    let changes = changes.lock().unwrap().clone();
    let dropped = changes
        .iter()
        .find(|(t, n)| *n == 0 && *t >= ends[0])
        .expect("run 1 deregistered")
        .0;
    let handoff = starts[1] - dropped;
    assert!(
        handoff < Duration::from_millis(1),
        "hand-off took {handoff:?} of virtual time after the guard dropped"
    );
    assert_eq!(h.sim.overlaps(), 0);
    assert_eq!(h.metrics.cycles(), 2);
}

/// I3, the seed's exact race: a run that ends right at the tick, so its
/// completion straddles the next cycle's start. Every cycle must still run
/// the target once, after the previous run saved its state, never
/// alongside it. Guards: the wait before dispatch (without it the target
/// is refused as busy and a cycle is lost) and I4's ordering.
#[tokio::test(start_paused = true)]
async fn seed_race_run_ends_between_tick_and_wait() {
    let mut cfg = config(&["a"], flow(&["buy", "clear!"]));
    cfg.cycle.interval = (secs(30), secs(30));
    cfg.cycle.step_timeout = secs(40);
    cfg.cycle.wait_for_active = secs(40);
    let h = Harness::new(cfg);
    let tl = Timeline::default();
    // Runs end 1 ms before, exactly at, and 1 ms after the next tick.
    let n = Arc::new(AtomicU32::new(0));
    {
        let (tl, n) = (tl.clone(), n.clone());
        h.steps.step("buy", move |cx| {
            let (tl, n) = (tl.clone(), n.clone());
            async move {
                let i = n.fetch_add(1, Ordering::SeqCst);
                tl.mark("start");
                let d = Duration::from_millis(29_999 + u64::from(i % 3));
                tokio::time::sleep(d).await;
                commit(&cx, "order", async move { Ok(format!("o-{i}")) }).await?;
                Ok(StepEnd::Continue)
            }
        });
    }
    {
        let tl = tl.clone();
        h.steps.step("clear", move |_cx| {
            let tl = tl.clone();
            async move {
                tl.mark("end");
                Ok(StepEnd::Continue)
            }
        });
    }
    // Every time the state says `attempting`, the previous run's record
    // must already be in the history.
    h.run_cycles(30).await;
    let history = h.history();
    assert_eq!(history.len(), 30, "a cycle lost its run");
    for r in &history {
        assert_eq!(r.status, Status::Completed, "{r:?}");
    }
    let starts = tl.all("start");
    let ends = tl.all("end");
    for i in 1..starts.len() {
        assert!(
            starts[i] >= ends[i - 1],
            "run {i} started before run {} ended",
            i - 1
        );
    }
    for w in history.windows(2) {
        assert!(
            w[1].started_at >= w[0].ended_at,
            "runs overlapped in the history"
        );
    }
    assert_eq!(h.sim.overlaps(), 0);
}

/// I3: a stuck run. The next cycle waits `wait_for_active`, cancels it,
/// confirms its guard dropped (its page closed, its cleanup ran), records
/// it `timed_out`, and only then runs again. Guards: the bounded wait, the
/// cancellation reaching the browser call, and `wait_gone`.
#[tokio::test(start_paused = true)]
async fn i3_stuck_run_is_cancelled_and_confirmed_gone() {
    let mut cfg = config(&["a"], flow(&["work", "clear!"]));
    cfg.cycle.interval = (secs(30), secs(30));
    cfg.cycle.wait_for_active = secs(30);
    cfg.cycle.run_timeout = secs(600);
    cfg.cycle.step_timeout = secs(600);
    let h = Harness::new(cfg);
    let tl = Timeline::default();
    {
        let tl = tl.clone();
        h.steps.step("work", move |cx| {
            let tl = tl.clone();
            async move {
                tl.mark("work:start");
                cx.page()?
                    .navigate(&cx.target.url, T)
                    .await
                    .map_err(|e| StepError::failed(e.to_string()))?;
                let r = cx.page()?.click(&Selectors::one("#buy"), T).await;
                tl.mark("work:end");
                r.map(|()| StepEnd::Continue)
                    .map_err(|e| StepError::failed(e.to_string()))
            }
        });
    }
    {
        let tl = tl.clone();
        h.steps.step("clear", move |cx| {
            let tl = tl.clone();
            async move {
                cx.page()?
                    .navigate("http://shop.test/cart", T)
                    .await
                    .map_err(|e| StepError::failed(e.to_string()))?;
                tl.mark("clear");
                Ok(StepEnd::Continue)
            }
        });
    }
    h.sim.edit_site(|s| {
        s.pages
            .entry("http://shop.test/p/a".into())
            .or_default()
            .elements
            .insert("#buy".into(), baton::browser::sim::SimElement::default());
    });
    // The first click hangs forever.
    h.sim.inject("click", Some("`#buy`"), Fault::Hang, 1);
    let t0 = Instant::now();
    h.run_cycles(2).await;

    let history = h.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].status, Status::TimedOut);
    assert!(
        history[0]
            .error
            .as_deref()
            .unwrap()
            .contains("wait timed out"),
        "{:?}",
        history[0].error
    );
    assert_eq!(
        history[0].steps[1].result,
        baton::state::StepResult::Ok,
        "cleanup ran after the cancellation"
    );
    assert_eq!(history[1].status, Status::Completed);
    let starts = tl.all("work:start");
    // Cycle 2 ticked at 30 s and waited 30 s before cancelling.
    assert!(
        starts[1] - t0 >= secs(60),
        "run 2 started at {:?}",
        starts[1] - t0
    );
    // The cancelled run's cleanup finished before run 2 began.
    assert!(tl.all("clear")[0] <= starts[1]);
    assert_eq!(h.sim.overlaps(), 0);
    assert_eq!(h.sim.open_pages(), 0, "no page left open");
    assert!(h.registry.is_idle());
    assert!(
        h.metrics
            .render()
            .contains("baton_cycle_wait_timeouts_total 1")
    );
}

// I4 -----------------------------------------------------------------------

/// I4: the final state is persisted before the run deregisters, and under
/// the completion lock. Two observers watch a completion whose write is
/// slow: one woken by every registry change (as the next cycle's wait is),
/// which must never find the run gone while its state is still
/// `attempting`; and one that takes the completion lock, which must see the
/// run registered or finished, never in between. Guards:
/// `RunGuard::complete` persisting under the lock and deregistering last.
#[tokio::test(start_paused = true)]
async fn i4_completion_is_atomic_under_the_lock() {
    let registry = Arc::new(Registry::default());
    // The "persisted" status of target a, as a completion would write it.
    let status = Arc::new(Mutex::new(Status::Ready));
    let done = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::<&str>::new()));
    let checks = Arc::new(AtomicU32::new(0));
    let locked_observer = {
        let (registry, status, done, violations, checks) = (
            registry.clone(),
            status.clone(),
            done.clone(),
            violations.clone(),
            checks.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                {
                    let _lock = registry.completion_lock().await;
                    let s = *status.lock().unwrap();
                    if s.is_live() && !registry.is_registered("a") {
                        violations
                            .lock()
                            .unwrap()
                            .push("under the lock: attempting with no live run");
                    }
                    let completing = registry
                        .get("a")
                        .is_some_and(|r| r.status == baton::registry::RunStatus::Completing);
                    if completing || (s == Status::Completed && registry.is_registered("a")) {
                        violations
                            .lock()
                            .unwrap()
                            .push("under the lock: a completion seen half-way");
                    }
                    checks.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let change_observer = {
        let (registry, status, violations, checks) = (
            registry.clone(),
            status.clone(),
            violations.clone(),
            checks.clone(),
        );
        let mut rx = registry.watch();
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if !registry.is_registered("a") && status.lock().unwrap().is_live() {
                    violations
                        .lock()
                        .unwrap()
                        .push("deregistered before the final state was saved");
                }
                checks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    for _ in 0..20 {
        let guard = {
            let _lock = registry.completion_lock().await;
            let g = registry
                .register(Registration {
                    target: "a".into(),
                    session: SessionId(0),
                    account: None,
                    flow: "f".into(),
                    versions: vec![],
                })
                .unwrap();
            *status.lock().unwrap() = Status::Attempting;
            g
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let status = status.clone();
        guard
            .complete(async move {
                // A slow disk: the write takes 10 ms.
                tokio::time::sleep(Duration::from_millis(10)).await;
                *status.lock().unwrap() = Status::Completed;
            })
            .await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.store(true, Ordering::SeqCst);
    locked_observer.await.unwrap();
    change_observer.abort();
    assert!(
        checks.load(Ordering::SeqCst) > 300,
        "the observers looked often"
    );
    assert_eq!(*violations.lock().unwrap(), Vec::<&str>::new());
}

// I5 -----------------------------------------------------------------------

/// I5: a step that panics, a page call that panics, a step that errors and
/// a task that is aborted all leave the registry empty, and the first three
/// are recorded as failures with their cleanup run. Guards: `RunGuard`'s
/// `Drop` and the panic catching in `run`.
#[tokio::test(start_paused = true)]
async fn i5_deregistered_after_panic_and_error() {
    let cfg = config(
        &["panics", "page-panics", "errors"],
        flow(&["work", "clear!"]),
    );
    let h = Harness::new(cfg);
    h.steps.step("work", |cx| async move {
        match cx.target.id.as_str() {
            "panics" => panic!("native step blew up"),
            "page-panics" => {
                cx.page()?.click(&Selectors::one("#x"), T).await.ok();
                Ok(StepEnd::Continue)
            }
            _ => Err(StepError::failed("checkout refused the card")),
        }
    });
    let cleaned = Arc::new(AtomicU32::new(0));
    {
        let cleaned = cleaned.clone();
        h.steps.step("clear", move |_| {
            let cleaned = cleaned.clone();
            async move {
                cleaned.fetch_add(1, Ordering::SeqCst);
                Ok(StepEnd::Continue)
            }
        });
    }
    h.sim.inject("click", None, Fault::Panic, 1);
    h.run_cycles(1).await;

    assert!(h.registry.is_idle(), "a run stayed registered");
    assert_eq!(
        cleaned.load(Ordering::SeqCst),
        3,
        "cleanup ran after every failure"
    );
    let by_target = |id: &str| {
        h.history()
            .into_iter()
            .find(|r| r.target.as_str() == id)
            .unwrap()
    };
    let p = by_target("panics");
    assert_eq!(p.status, Status::Failed);
    assert!(p.error.unwrap().contains("panicked: native step blew up"));
    let pp = by_target("page-panics");
    assert_eq!(pp.status, Status::Failed);
    assert!(pp.error.unwrap().contains("simulated panic in `click`"));
    let e = by_target("errors");
    assert_eq!(e.error.as_deref(), Some("checkout refused the card"));
    assert_eq!(h.sim.open_pages(), 0);

    // An aborted task drops its guard too.
    let guard = h
        .registry
        .register(Registration {
            target: "x".into(),
            session: SessionId(0),
            account: None,
            flow: "f".into(),
            versions: vec![],
        })
        .unwrap();
    let task = tokio::spawn(async move {
        let _guard = guard;
        std::future::pending::<()>().await;
    });
    tokio::task::yield_now().await;
    assert!(h.registry.is_registered("x"));
    task.abort();
    let _ = task.await;
    assert!(h.registry.is_idle(), "an aborted run stayed registered");
}

/// Regression (issue 24): after a failed step, the failure screenshot and
/// the DOM for the trace each waited out a whole action timeout on a page
/// that had stopped answering, delaying the run's end (and the next cycle)
/// by 20 s. Each capture is now bounded by `CAPTURE_TIMEOUT`.
/// Guards: `browser::CAPTURE_TIMEOUT` in `run::screenshot` and the DOM
/// capture.
#[tokio::test(start_paused = true)]
async fn capturing_a_failed_page_is_bounded() {
    let cfg = config(&["1001"], flow(&["work"]));
    let h = Harness::new(cfg);
    h.steps.step("work", |cx| async move {
        cx.page()?
            .navigate(&cx.target.url, T)
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        Err(StepError::failed("the shop answered with an error page"))
    });
    // A page that no longer answers: captures never come back by themselves.
    h.sim.set_latency("screenshot", secs(3600));
    h.sim.set_latency("html", secs(3600));
    let started = Instant::now();
    h.run_cycles(1).await;
    let r = &h.history()[0];
    assert_eq!(r.status, Status::Failed);
    assert!(r.screenshot.is_none(), "no screenshot could be had");
    let action = baton::flow::Timeouts::default().action;
    let bound = baton::browser::CAPTURE_TIMEOUT * 2;
    assert!(
        Duration::from_millis(r.duration_ms) <= bound + secs(1),
        "the run took {}ms to end after its failure; captures are bounded by {bound:?}, not by the action timeout ({action:?})",
        r.duration_ms
    );
    assert!(
        started.elapsed() < action,
        "the cycle waited out the action timeout"
    );
}

// I7 -----------------------------------------------------------------------

/// I7: a run that entered `commit` and never returned from it (it hung and
/// was cancelled) leaves its target `in_doubt`, and no later cycle runs
/// that target again, even in test mode, until an operator resolves it. A
/// commit that returned is `completed` even if cleanup then failed.
/// Guards: `committed` in `RunControl` and `run::settle`.
#[tokio::test(start_paused = true)]
async fn i7_committed_run_without_result_is_in_doubt() {
    let mut cfg = config(&["hangs", "cleanup-fails"], flow(&["buy", "clear!"]));
    cfg.cycle.interval = (secs(30), secs(30));
    cfg.cycle.wait_for_active = secs(20);
    // The hanging commit holds its session until commit_timeout and then
    // quarantines it (I9); the other target buys in a second session.
    cfg.cycle.commit_timeout = secs(50);
    cfg.cycle.max_concurrent_runs = 2;
    let h = Harness::new(cfg);
    let buys = Arc::new(Mutex::new(Vec::new()));
    {
        let buys = buys.clone();
        h.steps.step("buy", move |cx| {
            let buys = buys.clone();
            async move {
                buys.lock().unwrap().push(cx.target.id.to_string());
                let page = cx.page()?.clone();
                let hang = cx.target.id.as_str() == "hangs";
                commit(&cx, "place order", async move {
                    if hang {
                        page.click(&Selectors::one("#place"), T)
                            .await
                            .map_err(|e| StepError::failed(e.to_string()))?;
                    }
                    Ok("A-1".to_owned())
                })
                .await?;
                Ok(StepEnd::Continue)
            }
        });
    }
    h.steps.step("clear", |cx| async move {
        if cx.target.id.as_str() == "cleanup-fails" {
            return Err(StepError::failed("cart still has 1 line"));
        }
        Ok(StepEnd::Continue)
    });
    h.sim.inject("click", Some("`#place`"), Fault::Hang, 1);
    let sched = h.scheduler(Some(4));
    let commands = h.commands.clone();
    let run = tokio::spawn(sched.run());
    run.await.unwrap();

    let hangs: Vec<_> = h
        .history()
        .into_iter()
        .filter(|r| r.target.as_str() == "hangs")
        .collect();
    assert_eq!(hangs.len(), 1, "an in_doubt target was run again");
    assert_eq!(hangs[0].status, Status::InDoubt);
    assert!(hangs[0].committed);
    assert!(
        hangs[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("passed its commit point without a recorded result")
    );
    assert_eq!(h.state.get("hangs").status, Status::InDoubt);
    let cf = h.state.get("cleanup-fails");
    assert_eq!(cf.status, Status::Completed, "the order was placed");
    assert_eq!(cf.last_order.as_deref(), Some("A-1"));
    assert_eq!(cf.last_error.as_deref(), Some("cart still has 1 line"));
    assert_eq!(
        buys.lock()
            .unwrap()
            .iter()
            .filter(|t| *t == "hangs")
            .count(),
        1
    );
    drop(commands);
}

// I9 -----------------------------------------------------------------------

/// A purchase step for the I9 tests: navigate, then inside `commit` click
/// `#place-<target>`, which the test may make slow on the shop's side
/// (`Fault::Server`): the shop finishes that request even after the page is
/// closed, and the simulated browser counts any other call on the session
/// meanwhile as an overlap.
fn place_order_step(h: &Harness, timeline: &Timeline) {
    let tl = timeline.clone();
    h.steps.step("buy", move |cx| {
        let tl = tl.clone();
        async move {
            tl.mark(format!("buy:start:{}", cx.target.id));
            let fail = |e: baton::browser::PageError| StepError::failed(e.to_string());
            cx.page()?.navigate(&cx.target.url, T).await.map_err(fail)?;
            let page = cx.page()?.clone();
            let id = cx.target.id.to_string();
            commit(&cx, "place order", async move {
                page.click(&Selectors::one(&format!("#place-{id}")), T)
                    .await
                    .map_err(fail)?;
                Ok(format!("A-{id}"))
            })
            .await?;
            Ok(StepEnd::Continue)
        }
    });
    let tl = timeline.clone();
    h.steps.step("clear", move |cx| {
        let tl = tl.clone();
        async move {
            cx.page()?
                .navigate("http://shop.test/cart", T)
                .await
                .map_err(|e| StepError::failed(e.to_string()))?;
            tl.mark(format!("clear:{}", cx.target.id));
            Ok(StepEnd::Continue)
        }
    });
    h.sim.edit_site(|s| {
        for id in ["a", "b"] {
            s.pages
                .entry(format!("http://shop.test/p/{id}"))
                .or_default()
                .elements
                .insert(
                    format!("#place-{id}"),
                    baton::browser::sim::SimElement::default(),
                );
        }
    });
}

/// I9, the race from the field: two targets share one browser session, and
/// the shop takes 100 s to answer `a`'s place-order request, far longer
/// than `wait_for_active`. The cycles' waits give up on `a` but do not
/// cancel it: it keeps its session and its page, the commit keeps waiting,
/// and the order ends `completed` with its number. `b` is skipped until the
/// session is free, and neither `b` nor `a`'s cart clearing ever runs
/// beside the shop's request. Guards: `RunControl::cancel_or_hold` (a wait
/// never cancels a run in its commit), the held session in dispatch, and
/// time inside commit counted against `commit_timeout` only.
#[tokio::test(start_paused = true)]
async fn i9_a_slow_commit_holds_its_session_and_ends_completed() {
    let mut cfg = config(&["a", "b"], flow(&["buy", "clear!"]));
    cfg.test_mode = false;
    cfg.cycle.interval = (secs(30), secs(30));
    cfg.cycle.wait_for_active = secs(20);
    cfg.cycle.step_timeout = secs(30);
    cfg.cycle.run_timeout = secs(60);
    cfg.cycle.commit_timeout = secs(300);
    let h = Harness::new(cfg);
    let tl = Timeline::default();
    place_order_step(&h, &tl);
    h.sim
        .inject("click", Some("`#place-a`"), Fault::Server(secs(100)), 1);
    h.run_cycles(6).await;

    assert_eq!(
        h.sim.overlaps(),
        0,
        "something drove the session while the shop was placing a's order"
    );
    let history = h.history();
    assert_eq!(history.len(), 2, "{history:#?}");
    let (a, b) = (&history[0], &history[1]);
    assert_eq!(a.target.as_str(), "a");
    assert_eq!(a.status, Status::Completed, "{a:#?}");
    assert_eq!(a.order.as_deref(), Some("A-a"));
    assert_eq!(a.cancelled, None, "the wait cancelled a run in its commit");
    assert_eq!(
        a.steps[1].result,
        baton::state::StepResult::Ok,
        "cleanup ran after the answer"
    );
    assert!(a.duration_ms >= 100_000, "{a:#?}");
    assert_eq!(b.status, Status::Completed);
    assert!(b.started_at >= a.ended_at, "b ran beside a: {history:#?}");
    assert_eq!(h.state.get("a").last_order.as_deref(), Some("A-a"));
    assert!(h.registry.is_idle());
    assert!(h.registry.quarantined().is_empty());
}

/// I9 when the shop never answers in time: after `commit_timeout` the run
/// gives up, ends `in_doubt` and quarantines its session before it
/// deregisters. Its cart clearing does not run (the order may still be in
/// flight), no run uses that session until an operator resolves the
/// target, and with a second session the other target keeps buying
/// meanwhile. The shop's abandoned request finishes at 1000 s, before the
/// operator resolves; after that the session is used again. Guards: the
/// `always` skip while a commit is unanswered, `RunGuard::quarantine`, and
/// the quarantine check in `Registry::register`/`free_session`.
#[tokio::test(start_paused = true)]
async fn i9_an_unanswered_commit_quarantines_its_session() {
    for sessions in [1u32, 2] {
        let mut cfg = config(&["a", "b"], flow(&["buy", "clear!"]));
        cfg.cycle.interval = (secs(30), secs(30));
        cfg.cycle.wait_for_active = secs(20);
        cfg.cycle.commit_timeout = secs(120);
        cfg.cycle.max_concurrent_runs = sessions;
        let h = Harness::new(cfg);
        let tl = Timeline::default();
        place_order_step(&h, &tl);
        h.sim
            .inject("click", Some("`#place-a`"), Fault::Server(secs(1000)), 1);
        let t0 = Instant::now();
        // The operator checks the shop once its request is over, and
        // resolves `a` as not bought.
        let operator = {
            let commands = h.commands.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(t0 + secs(1100)).await;
                let (tx, rx) = tokio::sync::oneshot::channel();
                commands
                    .send(Command::Resolve(TargetId::new("a"), Status::Ready, tx))
                    .await
                    .unwrap();
                rx.await.unwrap()
            })
        };
        let quarantined = Arc::new(Mutex::new(Vec::new()));
        let watcher = {
            let (registry, quarantined) = (h.registry.clone(), quarantined.clone());
            let mut rx = registry.watch();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    for q in registry.quarantined() {
                        quarantined.lock().unwrap().push((q, Instant::now()));
                    }
                }
            })
        };
        h.run_cycles(45).await;
        operator.await.unwrap().unwrap();
        watcher.abort();

        assert_eq!(h.sim.overlaps(), 0, "{sessions} session(s)");
        let history = h.history();
        let a: Vec<_> = history
            .iter()
            .filter(|r| r.target.as_str() == "a")
            .collect();
        let b: Vec<_> = history
            .iter()
            .filter(|r| r.target.as_str() == "b")
            .collect();
        assert_eq!(a[0].status, Status::InDoubt, "{:#?}", a[0]);
        assert_eq!(
            a[0].cancelled.as_deref(),
            Some("its commit got no answer within commit_timeout")
        );
        assert_eq!(
            a[0].steps[1].result,
            baton::state::StepResult::Skipped,
            "{:#?}",
            a[0]
        );
        assert!(
            tl.all("clear:a").len() == a.len() - 1,
            "a's first cleanup ran"
        );
        // Quarantined from the end of a's first run until the resolve.
        let q = quarantined.lock().unwrap();
        let (first, last) = (q.first().unwrap().1 - t0, q.last().unwrap().1 - t0);
        assert!(first >= secs(120) && first < secs(130), "{first:?}");
        assert!(last < secs(1100) + secs(1), "{last:?}");
        assert!(h.registry.quarantined().is_empty(), "lifted by the resolve");
        // After the resolve, a is bought again.
        assert!(a.len() >= 2, "{a:#?}");
        assert!(a[1].started_at >= a[0].ended_at);
        assert_eq!(a.last().unwrap().status, Status::Completed);
        let b_starts = tl.all("buy:start:b");
        if sessions == 1 {
            // Nothing ran in the only session from a's start until the
            // operator freed it.
            assert!(
                b_starts.iter().all(|t| *t - t0 >= secs(1100)),
                "{:?}",
                b_starts.iter().map(|t| *t - t0).collect::<Vec<_>>()
            );
        } else {
            // The other session kept buying every cycle meanwhile.
            let before = b_starts.iter().filter(|t| **t - t0 < secs(1100)).count();
            assert!(before >= 30, "b ran {before} times in the other session");
        }
        assert!(!b.is_empty());
        assert!(h.registry.is_idle());
    }
}

// I10 ----------------------------------------------------------------------

/// I10: threads racing to register different targets, each in its own
/// session, on one account: exactly one wins each round. Guards: the
/// account claim (one `DashMap::entry`) in `Registry::register`.
#[test]
fn i10_one_run_per_account() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2_000;
    let registry = Arc::new(Registry::default());
    let barrier = Arc::new(Barrier::new(THREADS));
    let round_wins: Arc<Vec<AtomicU64>> =
        Arc::new((0..ROUNDS).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let (registry, barrier, round_wins) =
                (registry.clone(), barrier.clone(), round_wins.clone());
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    barrier.wait();
                    // Own target, own session: only the account can refuse.
                    let got = registry.register(Registration {
                        target: TargetId::new(format!("t{i}")),
                        session: SessionId(i as u32),
                        account: Some(AccountId::new("ada")),
                        flow: "f".into(),
                        versions: vec![],
                    });
                    if got.is_ok() {
                        round_wins[round].fetch_add(1, Ordering::SeqCst);
                    } else {
                        assert!(matches!(got, Err(Refusal::AccountBusy { .. })), "{got:?}");
                    }
                    barrier.wait();
                    drop(got);
                    barrier.wait();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (round, wins) in round_wins.iter().enumerate() {
        assert_eq!(wins.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert!(registry.is_idle(), "refusals undid their session claims");
}

/// I10 under the paused clock: while a run holds account `ada` in one
/// session, no other session gets `ada`; a wait for it is woken by the
/// run's deregistration itself (at 7 s, not at its 30 s bound). A run that
/// ends `in_doubt` quarantines the account with its session, so waiting
/// cannot help until an operator resolves the target. Guards: the account
/// claim and account quarantine in `Registry::register`/`free_session`.
#[tokio::test(start_paused = true)]
async fn i10_an_account_waits_for_its_run_and_is_quarantined_with_it() {
    let r = Arc::new(Registry::default());
    let ada = || Some(AccountId::new("ada"));
    let reg = |target: &str, session: u32| Registration {
        target: target.into(),
        session: SessionId(session),
        account: ada(),
        flow: "f".into(),
        versions: vec![],
    };
    let first = r.register(reg("a", 1)).unwrap();
    assert!(matches!(
        r.register(reg("b", 2)),
        Err(Refusal::AccountBusy { .. })
    ));
    assert!(!r.is_registered("b"));
    let pool = |s: u32| Pool {
        sessions: vec![SessionId(s)],
        account: ada(),
    };
    assert_eq!(
        r.free_session(&pool(2)),
        None,
        "session 2 is free, ada is not"
    );
    let t0 = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(secs(7)).await;
        drop(first);
    });
    let got = r.wait_for_session(&pool(2), secs(30)).await.unwrap();
    assert_eq!((got, t0.elapsed()), (SessionId(2), secs(7)));

    // In doubt: the account is quarantined with the session.
    let g = r.register(reg("b", 2)).unwrap();
    g.quarantine();
    drop(g);
    assert!(matches!(
        r.register(reg("c", 3)),
        Err(Refusal::AccountQuarantined { .. })
    ));
    let t1 = Instant::now();
    assert!(matches!(
        r.wait_for_session(&pool(3), secs(30)).await,
        Err(SessionWait::Unavailable(_))
    ));
    assert_eq!(t1.elapsed(), Duration::ZERO, "waiting cannot help");
    r.lift_quarantine("b");
    assert_eq!(r.free_session(&pool(3)), Some(SessionId(3)));
    assert!(r.is_idle());
}

/// I10 through the scheduler: two targets on account `ada` and a guest,
/// two guest sessions. The account's runs never overlap (each waits for
/// the other), the guest runs beside them, the account logs in once (its
/// check says logged out only at first) and every run completes. Guards:
/// the account's own session pool in dispatch and the login gate.
#[tokio::test(start_paused = true)]
async fn i10_runs_on_one_account_take_turns_and_log_in_once() {
    let mut cfg = config(&["a", "b", "g"], flow(&["work"]));
    cfg.cycle.max_concurrent_runs = 2;
    common::on_account(&mut cfg, "ada", &["a", "b"]);
    let h = Harness::new(cfg);
    let tl = Timeline::default();
    timed_step(&h, "work", secs(6), &tl);
    let logged_in = Arc::new(AtomicBool::new(false));
    {
        let logged_in = logged_in.clone();
        h.steps.step("check", move |_cx| {
            let ok = logged_in.load(Ordering::SeqCst);
            async move {
                Ok(if ok {
                    StepEnd::Continue
                } else {
                    StepEnd::Outcome("logged_out".into())
                })
            }
        });
    }
    let logins = Arc::new(AtomicU32::new(0));
    {
        let (logged_in, logins) = (logged_in.clone(), logins.clone());
        h.steps.step("login", move |cx| {
            assert_eq!(
                cx.account.as_ref().map(|a| a.id.as_str()),
                Some("ada"),
                "the login step sees its account"
            );
            logins.fetch_add(1, Ordering::SeqCst);
            logged_in.store(true, Ordering::SeqCst);
            async { Ok(StepEnd::Continue) }
        });
    }
    // By target, not by the run's account: the check must not trust the
    // mechanism it checks.
    let peaks = common::Peaks::watch(h.registry.clone(), |r| r.target.as_str() != "g");
    h.run_cycles(5).await;
    let (peak_ada, peak_all) = peaks.stop();

    assert_eq!(peak_ada, 1, "two runs on one account");
    assert_eq!(peak_all, 2, "the guest ran beside them");
    assert_eq!(
        logins.load(Ordering::SeqCst),
        1,
        "logged in once, then kept"
    );
    let hist = h.history();
    assert_eq!(hist.len(), 15);
    common::assert_all_completed(&hist);
    for r in hist.iter().filter(|r| r.target.as_str() != "g") {
        assert_eq!(r.steps[0].script, "check", "{r:#?}");
    }
    assert_eq!(h.sim.overlaps(), 0);
    assert!(h.registry.is_idle());
}

/// I10 with a person: a Log in asked for while the account's run goes on
/// (the next cycle is waiting for that run) gets the account as soon as
/// the run ends, before that cycle dispatches the account's next run.
/// While the person holds it, the account's target is skipped at once
/// each cycle (the guest beside it runs on); released, it runs again.
/// Guards: the commands taken before dispatch, `Registry::hold_for_login`
/// and the scheduler's check of it.
#[tokio::test(start_paused = true)]
async fn i10_a_login_asked_for_mid_run_holds_the_account_before_its_next_run() {
    use baton::scheduler::Phase;
    let mut cfg = config(&["a", "g"], flow(&["work"]));
    cfg.cycle.max_concurrent_runs = 1;
    common::on_account(&mut cfg, "ada", &["a"]);
    let ada = AccountId::new("ada");
    Arc::make_mut(cfg.accounts.get_mut(&ada).unwrap()).login_url =
        Some("http://shop.test/login".into());
    let h = Harness::new(cfg);
    // Longer than the 25-35 s interval: the next cycle waits for it.
    timed_step(&h, "work", secs(40), &Timeline::default());
    h.steps.step("check", |_| async { Ok(StepEnd::Continue) });
    let runs_of = |h: &Harness, t: &str| {
        h.history()
            .iter()
            .filter(|r| r.target.as_str() == t)
            .count()
    };
    let mut status = h.status.clone();
    let task = tokio::spawn(h.scheduler(None).run());
    status
        .wait_for(|s| s.cycle == 2 && s.phase == Phase::Waiting)
        .await
        .unwrap();
    assert!(h.registry.is_registered("a"), "cycle 1's run goes on");
    let (tx, rx) = tokio::sync::oneshot::channel();
    h.commands
        .send(Command::Login(ada.clone(), tx))
        .await
        .unwrap();
    let held = rx
        .await
        .unwrap()
        .expect("the account, as soon as its run ended");
    assert_eq!(runs_of(&h, "a"), 1);
    assert!(h.registry.is_logging_in(&ada));

    // Two more whole cycles: `a` is not run, `g` is.
    let now = status.borrow().cycle;
    status
        .wait_for(|s| s.cycle >= now + 2 && s.phase == Phase::Sleeping)
        .await
        .unwrap();
    assert_eq!(runs_of(&h, "a"), 1, "a run started under the person");
    assert!(runs_of(&h, "g") >= 2, "the guest went on");

    drop(held);
    assert!(!h.registry.is_logging_in(&ada));
    let before = runs_of(&h, "a");
    let now = status.borrow().cycle;
    status
        .wait_for(|s| s.cycle >= now + 3 && s.phase == Phase::Sleeping)
        .await
        .unwrap();
    assert!(
        runs_of(&h, "a") > before,
        "released, the account runs again"
    );
    h.shutdown.cancel();
    task.await.unwrap();
    assert!(h.registry.is_idle());
    assert_eq!(h.sim.overlaps(), 0);
}

/// A login that does not take ends the run `logged_out`: the target fails
/// (a person must look: retrying a wrong password locks accounts), and no
/// step of the flow runs. The account's other target, dispatched while
/// that run was still going, is not run either: the login is tried once.
#[tokio::test(start_paused = true)]
async fn a_login_that_does_not_take_is_logged_out_and_runs_nothing() {
    let mut cfg = config(&["a", "b"], flow(&["work", "clear!"]));
    common::on_account(&mut cfg, "ada", &["a", "b"]);
    let h = Harness::new(cfg);
    let worked = Arc::new(AtomicU32::new(0));
    {
        let worked = worked.clone();
        h.steps.step("work", move |_| {
            worked.fetch_add(1, Ordering::SeqCst);
            async { Ok(StepEnd::Continue) }
        });
    }
    h.steps.step("clear", |_| async { Ok(StepEnd::Continue) });
    h.steps.step("check", |_| async {
        Ok(StepEnd::Outcome("logged_out".into()))
    });
    let logins = Arc::new(AtomicU32::new(0));
    {
        let logins = logins.clone();
        h.steps.step("login", move |_| {
            logins.fetch_add(1, Ordering::SeqCst);
            async { Ok(StepEnd::Continue) }
        });
    }
    h.run_cycles(2).await;
    assert_eq!(
        logins.load(Ordering::SeqCst),
        1,
        "the wrong login was tried again"
    );
    let hist = h.history();
    assert_eq!(hist.len(), 1, "a failed target is not retried: {hist:#?}");
    let r = &hist[0];
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.outcome.as_deref(), Some("logged_out"));
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("still logged out after its login script")),
        "{r:#?}"
    );
    assert_eq!(worked.load(Ordering::SeqCst), 0, "bought nothing");
    let shown = h.status.borrow().logged_out.clone();
    assert_eq!(shown.len(), 1, "the dashboard shows the held account");
    assert_eq!(shown[0].account.as_str(), "ada");
    let clear = r.steps.iter().find(|s| s.script == "clear").unwrap();
    assert_eq!(
        clear.result,
        baton::state::StepResult::Ok,
        "cleanup still ran"
    );
}

// Hardening ------------------------------------------------------------------

/// A transient write failure (a full disk) at a run's completion used to
/// leave its target `attempting`, with no live run, until a restart: never
/// run again. The next cycle now repairs it as start-up would (`failed`,
/// so it runs again) once writing works. Guards: `Loop::repair_orphans`
/// and `StateStore::repair_orphans`.
#[tokio::test(start_paused = true)]
async fn a_final_write_that_failed_is_repaired_next_cycle() {
    let mut cfg = config(&["a"], flow(&["work"]));
    cfg.cycle.interval = (secs(30), secs(30));
    let h = Harness::new(cfg);
    let runs = Arc::new(AtomicU32::new(0));
    {
        let (runs, state) = (runs.clone(), h.state.clone());
        h.steps.step("work", move |_cx| {
            let (runs, state) = (runs.clone(), state.clone());
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    // The disk fills up just as the first run completes.
                    // (Twice: the store retries a failed write once.)
                    state.fail_next_writes(2);
                }
                Ok(StepEnd::Continue)
            }
        });
    }
    h.run_cycles(3).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3, "the target ran again");
    assert_eq!(h.state.get("a").status, Status::Completed);
    assert!(h.registry.is_idle());
    let history = h.history();
    assert_eq!(
        history.len(),
        2,
        "the first run's record was lost with its write"
    );
}

// I8 -----------------------------------------------------------------------

/// I8: a step replaced while a run is in progress does not change that run;
/// the next run gets the new version. Guards: `StepRunner::pin` at dispatch.
#[tokio::test(start_paused = true)]
async fn i8_reload_never_changes_a_running_flow() {
    let cfg = config(&["a"], flow(&["first", "second"]));
    let h = Harness::new(cfg);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let steps = h.steps.clone();
    {
        let (seen, steps) = (seen.clone(), steps.clone());
        h.steps.step("first", move |_| {
            let (seen, steps) = (seen.clone(), steps.clone());
            async move {
                seen.lock().unwrap().push("first".to_owned());
                // A reload lands in the middle of the run.
                let seen2 = seen.clone();
                steps.step("second", move |_| {
                    let seen2 = seen2.clone();
                    async move {
                        seen2.lock().unwrap().push("second v2".to_owned());
                        Ok(StepEnd::Continue)
                    }
                });
                Ok(StepEnd::Continue)
            }
        });
    }
    {
        let seen = seen.clone();
        h.steps.step("second", move |_| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push("second v1".to_owned());
                Ok(StepEnd::Continue)
            }
        });
    }
    let v1 = h.steps.generation("second").unwrap();
    h.run_cycles(2).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec!["first", "second v1", "first", "second v2"]
    );
    let history = h.history();
    assert_eq!(
        history[0].steps[1].generation, v1,
        "history records the pinned version"
    );
    assert!(history[1].steps[1].generation > v1);
}

// I11: the budget ---------------------------------------------------------------

/// I11: when a run enters `commit`, the price it observed last must be
/// within its target's `max_price`, in the budget's currency, or the host
/// refuses: the commit body never runs, the run ends `over_budget` with
/// the reason, the target stays `ready` (retried next cycle), and the
/// `always` cleanup still runs. The steps here commit whatever the price:
/// the host is all that stands between them and the shop.
/// Guards: `Budget::admits` in `RunCommit::begin`.
#[tokio::test(start_paused = true)]
async fn i11_a_commit_over_budget_is_refused_by_the_host() {
    use baton::budget::Budget;
    use baton::price::{Amount, Price};
    let mut cfg = config(
        &["within", "over", "silent", "dollars", "unbounded", "unset"],
        flow(&["buy", "clear!"]),
    );
    let eur60 = Budget::Max {
        amount: Amount::from_plain("60").unwrap(),
        currency: Some("EUR".into()),
    };
    cfg.targets = cfg
        .targets
        .iter()
        .map(|t| {
            let budget = match t.id.as_str() {
                "unbounded" => Budget::NoLimit,
                "unset" => Budget::Unset,
                _ => eur60.clone(),
            };
            Arc::new(baton::flow::Target {
                budget,
                ..(**t).clone()
            })
        })
        .collect();
    let h = Harness::new(cfg);
    let placed = Arc::new(Mutex::new(Vec::new()));
    let cleaned = Arc::new(AtomicU32::new(0));
    {
        let placed = placed.clone();
        h.steps.step("buy", move |cx| {
            let placed = placed.clone();
            async move {
                let seen = match cx.target.id.as_str() {
                    "within" => Some(("60.00", Some("EUR"))),
                    "over" => Some(("60.01", Some("EUR"))),
                    "dollars" => Some(("10", Some("USD"))),
                    "unset" | "unbounded" => Some(("1", None)),
                    _ => None,
                };
                if let Some((amount, currency)) = seen {
                    cx.commit()?.observe(Price {
                        amount: Amount::from_plain(amount).unwrap(),
                        currency: currency.map(str::to_owned),
                    });
                }
                let id = cx.target.id.to_string();
                commit(&cx, "place order", async move {
                    placed.lock().unwrap().push(id);
                    Ok("A-1".to_owned())
                })
                .await?;
                Ok(StepEnd::Continue)
            }
        });
    }
    {
        let cleaned = cleaned.clone();
        h.steps.step("clear", move |_| {
            let cleaned = cleaned.clone();
            async move {
                cleaned.fetch_add(1, Ordering::SeqCst);
                Ok(StepEnd::Continue)
            }
        });
    }
    h.scheduler(Some(1)).run().await;

    let mut placed = placed.lock().unwrap().clone();
    placed.sort();
    assert_eq!(
        placed,
        ["unbounded", "within"],
        "the host let a commit through"
    );
    assert_eq!(cleaned.load(Ordering::SeqCst), 6, "every run cleaned up");
    let history = h.history();
    for (id, why) in [
        ("over", "the price 60.01 EUR is over the budget 60.00 EUR"),
        ("silent", "no price was observed in this run"),
        (
            "dollars",
            "the price 10.00 USD is in USD, the budget 60.00 EUR is in EUR",
        ),
        ("unset", "the target has no max_price"),
    ] {
        let r = history.iter().find(|r| r.target.as_str() == id).unwrap();
        assert_eq!(r.status, Status::Ready, "{r:#?}");
        assert_eq!(r.outcome.as_deref(), Some("over_budget"), "{r:#?}");
        assert!(!r.committed, "{r:#?}");
        assert!(
            r.error.as_deref().is_some_and(|e| e.contains(why)),
            "{id}: {:?}",
            r.error
        );
        assert_eq!(h.state.get(id).status, Status::Ready, "{id}");
    }
    for id in ["within", "unbounded"] {
        assert_eq!(h.state.get(id).status, Status::Completed, "{id}");
    }
}

// Soak -----------------------------------------------------------------------

/// 10,000 cycles of mixed fast, slow, stuck, failing, panicking and
/// committing runs over four targets and two sessions. After every registry
/// change a checker asserts that no two runs shared a session and that,
/// under the completion lock, the persisted state agrees with the registry
/// (a target is `attempting`/`committing` exactly when it has a live run).
#[tokio::test(start_paused = true)]
async fn soak_10000_cycles() {
    let _one = common::live::one_at_a_time().await;
    const CYCLES: u64 = 10_000;
    let seed: u64 = std::env::var("BATON_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut cfg = config(&["a", "b", "c", "d"], flow(&["work", "clear!"]));
    cfg.cycle.max_concurrent_runs = 2;
    cfg.cycle.interval = (secs(25), secs(35));
    cfg.cycle.wait_for_active = secs(30);
    cfg.cycle.run_timeout = secs(50);
    cfg.cycle.step_timeout = secs(40);
    cfg.cycle.commit_timeout = secs(120);
    let h = Harness::in_memory(cfg);
    h.sim.set_latency("*", Duration::from_millis(40));
    h.sim.edit_site(|s| {
        for id in ["a", "b", "c", "d"] {
            s.pages
                .entry(format!("http://shop.test/p/{id}"))
                .or_default()
                .elements
                .insert("#place".into(), baton::browser::sim::SimElement::default());
        }
    });
    let rng = Arc::new(Mutex::new(StdRng::seed_from_u64(seed)));
    let kinds = Arc::new(Mutex::new([0u32; 9]));
    {
        let (rng, kinds, sim) = (rng.clone(), kinds.clone(), h.sim.clone());
        h.steps.step("work", move |cx| {
            let (rng, kinds, sim) = (rng.clone(), kinds.clone(), sim.clone());
            async move {
                let (kind, ms) = {
                    let mut r = rng.lock().unwrap();
                    (r.random_range(0..9u32), r.random_range(0..50_000u64))
                };
                kinds.lock().unwrap()[kind as usize] += 1;
                let fail = |e: baton::browser::PageError| StepError::failed(e.to_string());
                cx.page()?.navigate(&cx.target.url, T).await.map_err(fail)?;
                match kind {
                    // fast
                    0 | 1 => tokio::time::sleep(Duration::from_millis(ms % 3_000)).await,
                    // slow: longer than the interval
                    2 => tokio::time::sleep(Duration::from_millis(25_000 + ms % 20_000)).await,
                    // stuck in the browser
                    3 => {
                        let page = cx.page()?.clone();
                        let never = async move {
                            loop {
                                page.wait_for(&Selectors::one("#never"), T).await.ok();
                                tokio::time::sleep(secs(1)).await;
                            }
                        };
                        never.await;
                    }
                    // failing
                    4 => return Err(StepError::failed("simulated failure")),
                    // panicking
                    5 => panic!("simulated panic"),
                    // commits and completes
                    6 => {
                        commit(&cx, "order", async { Ok("o".to_owned()) }).await?;
                    }
                    // commits and hangs: in_doubt
                    7 => {
                        commit(&cx, "order", async {
                            std::future::pending::<Result<String, StepError>>().await
                        })
                        .await?;
                    }
                    // commits, and the shop takes up to 200 s to answer,
                    // finishing the request even after the page is closed
                    // (I9): completed, or in_doubt past commit_timeout
                    _ => {
                        sim.inject(
                            "click",
                            Some("`#place`"),
                            Fault::Server(Duration::from_millis(ms * 4)),
                            1,
                        );
                        let page = cx.page()?.clone();
                        commit(&cx, "order", async move {
                            page.click(&Selectors::one("#place"), T)
                                .await
                                .map_err(|e| StepError::failed(e.to_string()))?;
                            Ok("o".to_owned())
                        })
                        .await?;
                    }
                }
                Ok(StepEnd::Continue)
            }
        });
    }
    h.steps.step("clear", |cx| async move {
        cx.page()?
            .navigate("http://shop.test/cart", T)
            .await
            .map_err(|e| StepError::failed(e.to_string()))?;
        Ok(StepEnd::Continue)
    });

    // The checker: after every registry change.
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let checks = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let checker = {
        let (registry, state, sim, violations, checks, stop) = (
            h.registry.clone(),
            h.state.clone(),
            h.sim.clone(),
            violations.clone(),
            checks.clone(),
            stop.clone(),
        );
        let mut rx = registry.watch();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    r = rx.changed() => if r.is_err() { break },
                }
                if sim.overlaps() > 0 {
                    violations
                        .lock()
                        .unwrap()
                        .push("two runs on one session".into());
                }
                let _lock = registry.completion_lock().await;
                let doc = state.snapshot();
                for (id, t) in &doc.targets {
                    let registered = registry.is_registered(id.as_str());
                    if t.status.is_live() != registered {
                        violations.lock().unwrap().push(format!(
                            "target {id}: state `{}` but registered = {registered}",
                            t.status
                        ));
                    }
                }
                checks.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // An operator who resolves in_doubt targets, so they keep running. Like
    // a real one, they first check the shop, which takes longer than any
    // abandoned request there (at most 200 s, given up on after 120 s).
    let resolver = {
        let (commands, mut status, state) = (h.commands.clone(), h.status.clone(), h.state.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::HashMap::new();
            while status.changed().await.is_ok() {
                let now = Instant::now();
                let doubtful: Vec<_> = state
                    .snapshot()
                    .targets
                    .into_iter()
                    .filter(|(_, t)| t.status == Status::InDoubt)
                    .map(|(id, _)| id)
                    .collect();
                seen.retain(|id, _| doubtful.contains(id));
                for id in doubtful {
                    let since = *seen.entry(id.clone()).or_insert(now);
                    if now - since < secs(100) {
                        continue;
                    }
                    seen.remove(&id);
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    if commands
                        .send(Command::Resolve(id, Status::Ready, tx))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = rx.await;
                }
            }
        })
    };

    let summary = h.run_cycles(CYCLES).await;
    stop.cancel();
    checker.await.unwrap();
    resolver.abort();

    let violations = violations.lock().unwrap();
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations, first: {:?}",
        violations.len(),
        violations.first()
    );
    assert_eq!(summary.cycles, CYCLES);
    assert!(h.registry.is_idle());
    assert_eq!(h.sim.overlaps(), 0);
    assert_eq!(h.sim.open_pages(), 0);
    let history = h.history();
    assert_eq!(
        history.len() as u64,
        summary.runs,
        "every run left one record"
    );
    let count = |s: Status| history.iter().filter(|r| r.status == s).count();
    for s in [
        Status::Completed,
        Status::Failed,
        Status::TimedOut,
        Status::InDoubt,
    ] {
        assert!(
            count(s) > 100,
            "seed {seed}: too few `{s}` runs ({})",
            count(s)
        );
    }
    assert!(checks.load(Ordering::SeqCst) > 10_000, "the checker ran");
    eprintln!(
        "soak seed {seed}: {} cycles, {} runs, {} checks, kinds {:?}",
        summary.cycles,
        summary.runs,
        checks.load(Ordering::SeqCst),
        kinds.lock().unwrap()
    );
}
