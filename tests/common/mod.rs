//! Shared test scaffolding: a scheduler over the simulated browser and
//! native steps, in a temporary state directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use baton::browser::sim::SimBrowser;
use baton::config::Config;
use baton::flow::{Flow, OutcomeAction, Step, Target};
use baton::id::TargetId;
use baton::metrics::Metrics;
use baton::parts::Parts;
use baton::registry::Registry;
use baton::rust_steps::RustSteps;
use baton::scheduler::{Command, Scheduler, SchedulerStatus, Summary};
use baton::state::StateStore;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub(crate) mod live;
pub(crate) mod receiver;
pub(crate) mod redis;

/// Starts this test binary's ignored test `test` of `module` (its
/// `module_path!()`) as a child process with `env` set, its stdout piped:
/// the tests that `kill -9` a baton do it to a child of their own.
pub(crate) fn child(
    module: &str,
    test: &str,
    env: &[(&str, &std::ffi::OsStr)],
) -> std::process::Child {
    // Tests are named by their path inside the test binary.
    let test = match module.split_once("::") {
        Some((_, m)) => format!("{m}::{test}"),
        None => test.to_owned(),
    };
    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
    c.args([
        "--ignored",
        "--exact",
        &test,
        "--nocapture",
        "--test-threads=1",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("BATON_TEST_LOG"))
        .try_init();
}

/// A flow named `purchase` with the given steps; names ending in `!` are
/// `always` steps (the `!` is dropped).
pub(crate) fn flow(steps: &[&str]) -> Arc<Flow> {
    Arc::new(Flow {
        name: "purchase".into(),
        monitor: None,
        steps: steps
            .iter()
            .map(|s| Step {
                script: s.trim_end_matches('!').to_owned(),
                always: s.ends_with('!'),
            })
            .collect(),
        outcomes: BTreeMap::from([("out_of_stock".to_owned(), OutcomeAction::Retry)]),
        account: None,
    })
}

pub(crate) fn config(targets: &[&str], flow: Arc<Flow>) -> Config {
    let mut cfg = Config {
        test_mode: true,
        dashboard: None,
        ..Config::default()
    };
    cfg.cycle.interval = (Duration::from_secs(25), Duration::from_secs(35));
    cfg.targets = targets
        .iter()
        .map(|id| {
            Arc::new(Target {
                id: TargetId::new(id),
                url: format!("http://shop.test/p/{id}"),
                flow: "purchase".into(),
                account: None,
                params: serde_json::Map::new(),
                // The simulated shop's prices are not what these tests
                // are about; I11 has tests of its own.
                budget: baton::budget::Budget::NoLimit,
                schedule: baton::schedule::Schedule::default(),
            })
        })
        .collect();
    cfg.flows = BTreeMap::from([("purchase".to_owned(), flow)]);
    cfg
}

pub(crate) struct Harness {
    pub dir: tempfile::TempDir,
    pub config: Arc<ArcSwap<Config>>,
    pub registry: Arc<Registry>,
    pub state: Arc<StateStore>,
    pub sim: SimBrowser,
    pub steps: Arc<RustSteps>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
    pub commands: mpsc::Sender<Command>,
    pub status: watch::Receiver<SchedulerStatus>,
    /// Off unless a test sets one before taking the scheduler.
    pub notifier: Mutex<baton::notify::Notifier>,
    /// Every finished run, from the scheduler to the dashboard.
    pub finished: tokio::sync::broadcast::Sender<baton::state::RunRecord>,
    channels: Mutex<Option<(mpsc::Receiver<Command>, watch::Sender<SchedulerStatus>)>>,
}

impl Harness {
    pub(crate) fn new(cfg: Config) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().to_owned();
        Harness::with_state_dir(cfg, dir, &state_dir)
    }

    /// A harness whose state directory is in memory (tmpfs at /dev/shm,
    /// where the machine has one): for the soak, which checks that state
    /// and registry agree over 10,000 cycles, not what a disk does with an
    /// fsync (`crash.rs` kills baton on a real disk for that). Half of its
    /// time went to fsyncs on the shared disk.
    pub(crate) fn in_memory(cfg: Config) -> Harness {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let state_dir = dir.path().to_owned();
        Harness::with_state_dir(cfg, dir, &state_dir)
    }

    /// A harness whose state lives in `state_dir` (which outlives it).
    pub(crate) fn in_dir(cfg: Config, state_dir: &std::path::Path) -> Harness {
        Harness::with_state_dir(cfg, tempfile::tempdir().unwrap(), state_dir)
    }

    fn with_state_dir(cfg: Config, dir: tempfile::TempDir, state_dir: &std::path::Path) -> Harness {
        init_tracing();
        let mut cfg = cfg;
        cfg.state_dir = state_dir.to_owned();
        // Not the repository's flows.yaml: a harness has no file (and the
        // targets API must never edit the repository's).
        cfg.file = std::path::PathBuf::new();
        let (state, _) = StateStore::open(state_dir).unwrap();
        let state = Arc::new(state);
        state
            .ensure_targets(cfg.targets.iter().map(|t| &t.id))
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let (status_tx, status_rx) = watch::channel(SchedulerStatus::default());
        Harness {
            registry: Arc::new(Registry::new(state.last_run_id().saturating_add(1))),
            config: Arc::new(ArcSwap::from_pointee(cfg)),
            state,
            sim: SimBrowser::default(),
            steps: Arc::new(RustSteps::new()),
            metrics: Arc::new(Metrics::new()),
            shutdown: CancellationToken::new(),
            commands: tx,
            status: status_rx,
            channels: Mutex::new(Some((rx, status_tx))),
            notifier: Mutex::default(),
            finished: tokio::sync::broadcast::channel(64).0,
            dir,
        }
    }

    /// The parts of a baton on this harness: its config, registry, state,
    /// metrics, simulated browser, steps and notifier, everything else off.
    pub(crate) fn parts(&self) -> Parts {
        Parts {
            config: self.config.clone(),
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            notifier: self.notifier.lock().unwrap().clone(),
            finished: self.finished.clone(),
            ..Parts::new(
                Config::clone(&self.config.load()),
                self.state.clone(),
                Arc::new(self.sim.clone()),
                self.steps.clone(),
            )
        }
    }

    /// The scheduler, ready to run `cycles` cycles. Can be taken once.
    pub(crate) fn scheduler(&self, cycles: Option<u64>) -> Scheduler {
        self.scheduler_on(self.parts(), cycles)
    }

    /// The scheduler on `parts` (the harness's, with some replaced).
    pub(crate) fn scheduler_on(&self, parts: Parts, cycles: Option<u64>) -> Scheduler {
        let (commands, status) = self
            .channels
            .lock()
            .unwrap()
            .take()
            .expect("one scheduler per harness");
        Scheduler {
            parts: Arc::new(parts),
            shutdown: self.shutdown.clone(),
            commands,
            status,
            cycles,
            seed: 7,
        }
    }

    pub(crate) async fn run_cycles(&self, n: u64) -> Summary {
        self.scheduler(Some(n)).run().await
    }

    pub(crate) fn history(&self) -> Vec<baton::state::RunRecord> {
        let mut h = self.state.history(usize::MAX).unwrap();
        h.reverse();
        h
    }
}

/// Puts `targets` on account `name`, whose check is the step `check` and
/// whose login is the step `login`; its session follows the guest
/// sessions, as flows.yaml would number it.
pub(crate) fn on_account(cfg: &mut Config, name: &str, targets: &[&str]) {
    use baton::account::{Account, Check};
    use baton::id::{AccountId, SessionId};
    let account = Arc::new(Account {
        id: AccountId::new(name),
        session: SessionId(cfg.cycle.max_concurrent_runs),
        username: None,
        password: None,
        totp: None,
        check: Check::Script("check".into()),
        login: Some("login".into()),
        login_url: None,
    });
    cfg.accounts.insert(account.id.clone(), account);
    for t in &mut cfg.targets {
        if targets.contains(&t.id.as_str()) {
            Arc::make_mut(t).account = Some(AccountId::new(name));
        }
    }
}

/// The most runs registered at once, in all and among those `counted`
/// picks, followed through the registry's changes.
pub(crate) struct Peaks {
    counted: Arc<std::sync::atomic::AtomicUsize>,
    all: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Peaks {
    pub(crate) fn watch(
        registry: Arc<Registry>,
        counted: impl Fn(&baton::registry::RunInfo) -> bool + Send + 'static,
    ) -> Peaks {
        use std::sync::atomic::Ordering;
        let (c, a) = (Arc::default(), Arc::default());
        let (peak_c, peak_a): (
            Arc<std::sync::atomic::AtomicUsize>,
            Arc<std::sync::atomic::AtomicUsize>,
        ) = (Arc::clone(&c), Arc::clone(&a));
        let mut rx = registry.watch();
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let runs = registry.snapshot();
                peak_c.fetch_max(runs.iter().filter(|r| counted(r)).count(), Ordering::SeqCst);
                peak_a.fetch_max(runs.len(), Ordering::SeqCst);
            }
        });
        Peaks {
            counted: c,
            all: a,
            task,
        }
    }

    /// Stops watching; returns (the counted peak, the peak of all runs).
    pub(crate) fn stop(self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        self.task.abort();
        (
            self.counted.load(Ordering::SeqCst),
            self.all.load(Ordering::SeqCst),
        )
    }
}

/// Asserts that every run in `records` completed; on failure the message
/// lists them all, and points at the caller's line.
#[track_caller]
pub(crate) fn assert_all_completed(records: &[baton::state::RunRecord]) {
    let bad: Vec<String> = records
        .iter()
        .filter(|r| r.status != baton::state::Status::Completed)
        .map(|r| {
            format!(
                "{} of `{}`: {} ({})",
                r.run_id,
                r.target,
                r.status,
                r.error.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "runs that did not complete:\n{}",
        bad.join("\n")
    );
}

/// A log of (virtual) times at which things happened, shared by steps.
#[derive(Clone, Default)]
pub(crate) struct Timeline(pub Arc<Mutex<Vec<(String, Instant)>>>);

impl Timeline {
    pub(crate) fn mark(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push((what.into(), Instant::now()));
    }

    pub(crate) fn all(&self, what: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| w == what)
            .map(|(_, t)| *t)
            .collect()
    }
}
