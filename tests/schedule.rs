//! Schedules (issue 28) under tokio's paused clock, on a wall clock the
//! test starts where it likes: a target is run only inside its windows,
//! windows stay local time across a change to summer time, and a drop is
//! watched at its own interval from `before` to `after`. One cycle loop
//! throughout: the runs still go through the registry and state as every
//! other run does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::config::Config;
use baton::flow::StepEnd;
use baton::parts::Parts;
use baton::schedule::{Clock, DROP_AFTER, DROP_BEFORE, DropTime, Schedule, Window};
use jiff::Timestamp;

use crate::common::{Harness, config, flow};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// One target `t` on `schedule`, cycles every 30 s.
fn scheduled(schedule: Schedule) -> Config {
    let mut cfg = config(&["t"], flow(&["buy"]));
    cfg.cycle.interval = (Duration::from_secs(30), Duration::from_secs(30));
    Arc::make_mut(&mut cfg.targets[0]).schedule = schedule;
    cfg
}

/// Runs baton on a wall clock that reads `from` now until it reads
/// `until`; returns the wall time of every run's step, and the harness.
async fn runs(cfg: Config, from: &str, until: &str) -> (Vec<Timestamp>, Harness) {
    let h = Harness::new(cfg);
    let clock = Clock::starting_at(at(from));
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let seen = seen.clone();
        h.steps.step("buy", move |_| {
            seen.lock().unwrap().push(clock.now());
            async { Ok(StepEnd::Continue) }
        });
    }
    let scheduler = h.scheduler_on(Parts { clock, ..h.parts() }, None);
    let stop = h.shutdown.clone();
    let end = clock.instant(at(until));
    tokio::spawn(async move {
        tokio::time::sleep_until(end).await;
        stop.cancel();
    });
    scheduler.run().await;
    let seen = seen.lock().unwrap().clone();
    (seen, h)
}

#[tokio::test(start_paused = true)]
async fn a_target_runs_only_inside_its_window() {
    let schedule = Schedule {
        windows: vec![Window::parse("mon-fri 09:00-18:00 Europe/London").unwrap()],
        ..Schedule::default()
    };
    // Friday 4 December 2026: London is on GMT.
    let (runs, h) = runs(
        scheduled(schedule),
        "2026-12-04T08:58:10Z",
        "2026-12-04T18:03:00Z",
    )
    .await;
    assert_eq!(runs[0], at("2026-12-04T09:00:00Z"), "the window's opening");
    let last = *runs.last().unwrap();
    assert!(
        last < at("2026-12-04T18:00:00Z"),
        "ran at {last} after the window"
    );
    assert!(
        last >= at("2026-12-04T17:59:30Z"),
        "stopped early at {last}"
    );
    // Every 30 s in between, as the cycle's interval says.
    assert_eq!(runs.len(), 9 * 60 * 2, "{} runs", runs.len());
    // After the window the dashboard says when the target is due again.
    let status = h.status.borrow().clone();
    let why = &status
        .not_due
        .iter()
        .find(|n| n.target.as_str() == "t")
        .expect("the target is listed as not due")
        .why;
    assert_eq!(
        why,
        "outside its windows; next at Mon 7 Dec 09:00 Europe/London"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_keeps_local_time_across_the_change_to_summer_time() {
    let schedule = Schedule {
        windows: vec![Window::parse("daily 09:00-09:30 Europe/London").unwrap()],
        ..Schedule::default()
    };
    // Saturday noon, GMT; the clocks go forward at 01:00 on Sunday 28 March
    // 2027, so Sunday's 09:00 is 08:00 UTC.
    let (runs, _) = runs(
        scheduled(schedule),
        "2027-03-27T12:00:00Z",
        "2027-03-28T09:00:00Z",
    )
    .await;
    assert_eq!(runs[0], at("2027-03-28T08:00:00Z"), "09:00 BST");
    assert!(
        runs.iter().all(|r| *r < at("2027-03-28T08:30:00Z")),
        "{runs:?}"
    );
    assert_eq!(runs.len(), 60, "every 30 s for half an hour");
}

#[tokio::test(start_paused = true)]
async fn a_drop_is_watched_at_its_own_interval_from_before_to_after() {
    let schedule = Schedule {
        interval: Some((Duration::from_secs(300), Duration::from_secs(300))),
        drops: vec![
            DropTime::parse("2026-12-05 10:00 Europe/London", DROP_BEFORE, DROP_AFTER).unwrap(),
        ],
        drop_interval: Duration::from_secs(5),
        ..Schedule::default()
    };
    let (runs, _) = runs(
        scheduled(schedule),
        "2026-12-05T09:50:00Z",
        "2026-12-05T10:30:00Z",
    )
    .await;
    let before: Vec<_> = runs
        .iter()
        .filter(|r| **r < at("2026-12-05T09:58:00Z"))
        .copied()
        .collect();
    assert_eq!(
        before,
        [at("2026-12-05T09:50:00Z"), at("2026-12-05T09:55:00Z")],
        "its own 5 minutes before the drop"
    );
    let during: Vec<_> = runs
        .iter()
        .filter(|r| at("2026-12-05T09:58:00Z") <= **r && **r <= at("2026-12-05T10:10:00Z"))
        .copied()
        .collect();
    assert_eq!(
        during[0],
        at("2026-12-05T09:58:00Z"),
        "from 2 minutes before"
    );
    assert_eq!(during.len(), 12 * 12 + 1, "every 5 s for 12 minutes");
    assert!(
        during
            .windows(2)
            .all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_secs(5)),
        "{during:?}"
    );
    let after: Vec<_> = runs
        .iter()
        .filter(|r| **r > at("2026-12-05T10:10:00Z"))
        .copied()
        .collect();
    assert_eq!(
        after,
        [
            at("2026-12-05T10:10:05Z"),
            at("2026-12-05T10:15:05Z"),
            at("2026-12-05T10:20:05Z"),
            at("2026-12-05T10:25:05Z"),
        ],
        "back to its 5 minutes after the drop"
    );
}
