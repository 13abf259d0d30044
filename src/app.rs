//! A running baton: everything `baton run` assembles from `flows.yaml`.
//!
//! Start-up order matters and each failure is reported before anything
//! runs: the config, the state store (and its single-writer lock), the demo
//! shop, the scripts (every flow script must compile), the browser binary,
//! the dashboard. Then the scheduler runs until its cycle limit or a signal,
//! and everything is stopped in reverse.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::browser::chrome::ChromeBrowser;
use crate::browser::{Browser, BrowserError};
use crate::cluster::Leases;
use crate::config::{Config, ConfigError};
use crate::dashboard::{self, Dashboard};
use crate::logging::Recent;
use crate::metrics::Metrics;
use crate::notify::{Event, Kind, Notifier};
use crate::observations::Observations;
use crate::parts::Parts;
use crate::registry::Registry;
use crate::scheduler::{Command, Scheduler, SchedulerStatus, Summary};
use crate::script::{Plugin, ScriptError, ScriptHost};
use crate::state::{StateError, StateStore};
use crate::{redact, shop};

/// Raises the soft limit on open files to the hard one, and returns the
/// limit now in force. The common soft default (1024) is what idle
/// connections exhausted; a baton that buys needs headroom for the state
/// store, the browser's DevTools socket and the dashboard together.
pub fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    if current != maximum {
        let raised = Rlimit {
            current: maximum,
            maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open-files limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Why baton could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Scripts(Vec<ScriptError>),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{0}")]
    Browser(#[from] BrowserError),
    #[error("{0}")]
    Account(#[from] crate::account::AccountError),
    #[error("{0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(
        "cannot start the demo shop on 127.0.0.1:{port}: {source} (is another baton running? change `demo_shop.port`)"
    )]
    Shop { port: u16, source: std::io::Error },
    #[error(
        "cannot start the dashboard on {addr}: {source} (change `dashboard` in flows.yaml, or set it to `off`)"
    )]
    Dashboard {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

impl AppError {
    /// The exit code: 2 for what the operator must fix in files, 1 for the
    /// rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Config(_) | AppError::Scripts(_) => 2,
            _ => 1,
        }
    }
}

/// How to start.
pub struct Options {
    pub config: PathBuf,
    /// Stop after this many cycles.
    pub cycles: Option<u64>,
    pub plugins: Vec<Arc<dyn Plugin>>,
    /// Use this browser instead of launching Chromium (tests).
    pub browser: Option<Arc<dyn Browser>>,
    /// Where recent log events are kept for the dashboard.
    pub recent: Recent,
    /// Environment lookup for `flows.yaml`.
    pub env: fn(&str) -> Option<String>,
}

impl Options {
    pub fn new(config: impl Into<PathBuf>) -> Options {
        Options {
            config: config.into(),
            cycles: None,
            plugins: Vec::new(),
            browser: None,
            recent: Recent::default(),
            env: |k| std::env::var(k).ok(),
        }
    }
}

/// A started baton, ready to run.
pub struct App {
    /// The parts the scheduler, the runs and the dashboard share.
    pub parts: Arc<Parts>,
    pub shop: Option<shop::Running>,
    pub dashboard: Option<dashboard::Running>,
    pub shutdown: CancellationToken,
    pub commands: mpsc::Sender<Command>,
    pub status: watch::Receiver<SchedulerStatus>,
    scheduler: Scheduler,
    /// Stops the shop and dashboard servers.
    servers: CancellationToken,
    notifier_tasks: Option<crate::notify::Running>,
    _watches: Vec<crate::watch::Watch>,
    /// This process's claim on each account, for its whole life.
    _accounts: Vec<crate::account::AccountLock>,
}

impl App {
    /// Starts everything but the cycles, in the order the module's doc
    /// gives; the first failure is returned before anything runs.
    pub async fn start(opts: Options) -> Result<App, AppError> {
        let mut cfg = Config::load(&opts.config, &opts.env)?;
        let files = raise_open_files_limit();
        tracing::debug!(limit = ?files, "open files");
        let redactor = redact::global();
        register_secrets(&cfg, &redactor);

        let (state, recovered) = open_state(&cfg)?;
        let metrics = Arc::new(Metrics::new());
        // After the state store: its lock makes this the outbox's only
        // writer, and its recovery has settled what the catch-up reads.
        let (notifier, notifier_tasks) = match &cfg.notify {
            Some(n) => {
                let (notifier, tasks) = Notifier::start(
                    n.clone(),
                    &cfg.state_dir,
                    cfg.secrets.clone(),
                    redactor.clone(),
                    metrics.clone(),
                );
                (notifier, Some(tasks))
            }
            None => (Notifier::off(), None),
        };
        notifier.recovered_orders(&recovered, |id| state.get(id.as_str()));

        let servers = CancellationToken::new();
        let shop = match &cfg.demo_shop {
            Some(s) => {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port));
                let running = shop::start(addr, servers.child_token())
                    .await
                    .map_err(|source| AppError::Shop {
                        port: s.port,
                        source,
                    })?;
                cfg.resolve_shop_urls(&running.url());
                Some(running)
            }
            None => None,
        };
        for t in cfg.unbudgeted() {
            tracing::warn!(target = %t.id, "target `{}` has no max_price: baton will refuse its commits (I11); set `max_price: 60` or `max_price: none` in flows.yaml", t.id);
        }

        let observations = open_observations(&cfg, &notifier);
        let scripts = start_scripts(&cfg, &opts, &redactor, &metrics, &notifier, &observations)?;
        let browser = launch_browser(&cfg, opts.browser.clone(), &metrics)?;
        let account_locks = claim_accounts(&cfg, browser.as_ref()).await?;
        let leases = start_leases(&cfg)?;

        let parts = Arc::new(Parts {
            registry: Arc::new(Registry::new(state.last_run_id().saturating_add(1))),
            config: Arc::new(ArcSwap::from_pointee(cfg.clone())),
            state,
            metrics,
            browser,
            steps: Arc::new(scripts.clone()),
            scripts: scripts.clone(),
            notifier: notifier.clone(),
            leases,
            observations,
            logged_out: Arc::default(),
            finished: broadcast::channel(256).0,
            clock: crate::schedule::Clock::system(),
        });
        let shutdown = CancellationToken::new();
        let (commands_tx, commands_rx) = mpsc::channel(32);
        let (status_tx, status_rx) = watch::channel(SchedulerStatus::default());

        let dashboard = match &cfg.dashboard {
            Some(d) => Some(
                dashboard::start(
                    d.addr,
                    Dashboard {
                        token: d.token.clone(),
                        hosts: d.hosts.clone(),
                        view: dashboard::View::new(dashboard::Sources {
                            parts: parts.clone(),
                            status: status_rx.clone(),
                            recent: opts.recent.clone(),
                        }),
                        commands: commands_tx.clone(),
                        redactor: redactor.clone(),
                        stop: CancellationToken::new(),
                        logins: dashboard::Logins::default(),
                    },
                    servers.child_token(),
                )
                .await
                .map_err(|source| AppError::Dashboard {
                    addr: d.addr,
                    source,
                })?,
            ),
            None => None,
        };

        let watches = watch_files(&opts, &parts, shop.as_ref().map(shop::Running::url));
        let scheduler = Scheduler {
            parts: parts.clone(),
            shutdown: shutdown.clone(),
            commands: commands_rx,
            status: status_tx,
            cycles: opts.cycles,
            seed: rand::random(),
        };
        Ok(App {
            parts,
            shop,
            dashboard,
            shutdown,
            commands: commands_tx,
            status: status_rx,
            scheduler,
            servers,
            notifier_tasks,
            _watches: watches,
            _accounts: account_locks,
        })
    }

    /// Runs cycles until the limit or `shutdown`, then stops everything.
    pub async fn run(self) -> Summary {
        let cfg = self.parts.config.load_full();
        let notifier = &self.parts.notifier;
        notifier.emit(Event::new(
            Kind::Started,
            "baton started",
            format!(
                "baton {} started with {} target(s) on {}.",
                env!("CARGO_PKG_VERSION"),
                cfg.targets.len(),
                hostname()
            ),
        ));
        let browser_events = self
            .parts
            .browser
            .health_changes()
            .map(|rx| tokio::spawn(crate::notify::watch_browser(rx, notifier.clone())));
        let summary = self.scheduler.run().await;
        if let Some(t) = browser_events {
            t.abort();
        }
        notifier.emit(Event::new(
            Kind::Stopped,
            "baton stopped",
            format!(
                "baton stopped on {} after {} cycle(s) and {} run(s).",
                hostname(),
                summary.cycles,
                summary.runs
            ),
        ));
        if let Some(t) = self.notifier_tasks {
            // A short grace: the `stopped` message, and whatever else is
            // pending, goes now if the receivers are up; the rest waits in
            // the outbox for the next start.
            t.stop(NOTIFY_GRACE).await;
        }
        self.servers.cancel();
        // Each server ends its own long-lived responses on the stop; the
        // bound is for what neither knows of (a client that keeps a request
        // body open), so no client can hold a stopping baton.
        if let Some(s) = self.shop {
            stop_server("demo shop", s.task).await;
        }
        if let Some(d) = self.dashboard {
            stop_server("dashboard", d.task).await;
        }
        summary
    }
}

/// Makes every secret flows.yaml names unprintable in logs, traces and
/// the dashboard, before anything that could print one starts.
fn register_secrets(cfg: &Config, redactor: &redact::Redactor) {
    for v in cfg.secrets.values() {
        redactor.add(v);
    }
    if let Some(d) = &cfg.dashboard
        && let Some(t) = &d.token
    {
        redactor.add(t);
    }
    if let Some(n) = &cfg.notify {
        for v in n.credentials() {
            redactor.add(v);
        }
    }
}

/// Opens the state store (taking its single-writer lock), says what its
/// recovery changed, and adds rows for new targets. Returns the store and
/// the targets whose orders were found placed.
fn open_state(cfg: &Config) -> Result<(Arc<StateStore>, Vec<crate::id::TargetId>), AppError> {
    let (state, recovery) = StateStore::open(&cfg.state_dir)?;
    for t in &recovery.failed {
        tracing::warn!(target = %t, "recovered: was attempting when baton stopped; now failed");
    }
    for t in &recovery.in_doubt {
        tracing::warn!(target = %t, "recovered: was committing when baton stopped; now in_doubt until resolved (`baton state resolve`)");
    }
    for t in &recovery.completed {
        tracing::warn!(target = %t, "recovered: its order was placed and saved when baton stopped; now completed");
    }
    if recovery.history_bytes_dropped > 0 {
        tracing::warn!(
            bytes = recovery.history_bytes_dropped,
            "recovered: the last history record was cut by a crash; its {} byte(s) were moved to {}",
            recovery.history_bytes_dropped,
            cfg.state_dir.join("history.jsonl.dropped").display()
        );
    }
    let state = Arc::new(state);
    state.ensure_targets(cfg.targets.iter().map(|t| &t.id))?;
    Ok((state, recovery.completed))
}

/// The price and stock history, which tells `notifier` of price drops. A
/// history that cannot be read is started empty: it is a record, not
/// safety state.
fn open_observations(cfg: &Config, notifier: &Notifier) -> Arc<Observations> {
    let observations = Arc::new(Observations::open(&cfg.state_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "the price history in {} cannot be read; starting a new one", cfg.state_dir.display());
        Observations::in_memory()
    }));
    let told = notifier.clone();
    observations.on_change(move |o, change| {
        if let crate::observations::Change::PriceDrop { from, to } = change {
            let cur = o.currency.as_deref().unwrap_or("");
            told.emit(
                Event::new(
                    Kind::PriceDrop,
                    format!("Price drop: `{}` {to:.2} {cur}", o.target),
                    format!(
                        "`{}` was {from:.2} {cur} and is {to:.2} {cur} now.",
                        o.target
                    ),
                )
                .with_target(&o.target),
            );
        }
    });
    observations
}

/// Compiles the scripts; every script a flow uses must compile and name
/// only declared secrets.
fn start_scripts(
    cfg: &Config,
    opts: &Options,
    redactor: &Arc<redact::Redactor>,
    metrics: &Arc<Metrics>,
    notifier: &Notifier,
    observations: &Arc<Observations>,
) -> Result<ScriptHost, AppError> {
    let mut scripts = ScriptHost::builder(&cfg.scripts_dir)
        .plugins(opts.plugins.iter().cloned())
        .secrets(cfg.secrets.clone())
        .redactor(redactor.clone())
        .shots_dir(crate::state::shots_dir(&cfg.state_dir))
        .metrics(metrics.clone())
        .observations(observations.clone());
    if notifier.is_on() {
        scripts = scripts.notices(Arc::new(notifier.clone()));
    }
    let scripts = scripts.build();
    let lib = scripts.library();
    let used = cfg.scripts();
    let mut broken: Vec<ScriptError> = used
        .iter()
        .filter_map(|s| lib.errors.get(s).cloned())
        .collect();
    let used: Vec<String> = used.into_iter().collect();
    broken.extend(scripts.undeclared_secrets(Some(&used)));
    if broken.is_empty() {
        Ok(scripts)
    } else {
        Err(AppError::Scripts(broken))
    }
}

/// The browser: `given` (tests), the attached pool, or Chromium, whose
/// binary and profile are checked now rather than at the first run.
fn launch_browser(
    cfg: &Config,
    given: Option<Arc<dyn Browser>>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Browser>, AppError> {
    if let Some(b) = given {
        return Ok(b);
    }
    if !cfg.browser.pool.is_empty() {
        // Attached browsers only: no profile of ours to claim.
        return Ok(crate::browser::pool::PoolBrowser::new(
            &cfg.browser.pool,
            &cfg.browser.chrome(cfg.browser.profile_dir.clone()),
            Some(metrics),
        ));
    }
    if cfg.browser.connect.is_none() {
        crate::browser::chrome::find_executable(cfg.browser.executable.as_deref())?;
    }
    let chrome = ChromeBrowser::new(
        cfg.browser.chrome(cfg.browser.profile_dir.clone()),
        Some(metrics.clone()),
    );
    // Refuse now, not at the first run, if another baton has it.
    chrome.lock_profile()?;
    Ok(Arc::new(chrome))
}

/// Claims each account for this process (I10 across processes) and starts
/// its session from its stored login.
async fn claim_accounts(
    cfg: &Config,
    browser: &dyn Browser,
) -> Result<Vec<crate::account::AccountLock>, AppError> {
    let store = crate::account::AccountStore::new(&cfg.state_dir);
    let sharing = if cfg.cluster.is_some() {
        crate::account::Sharing::Cluster
    } else {
        crate::account::Sharing::Alone
    };
    let mut locks = Vec::new();
    for a in cfg.accounts.values() {
        locks.push(store.lock(&a.id, &cfg.identity(a), sharing)?);
        if let Some(saved) = store.load(&a.id)? {
            browser.seed(a.session, saved).await?;
        } else {
            tracing::info!(account = %a.id, "account `{}` has no saved session yet: its first run logs in{}", a.id,
                if a.login.is_some() { "" } else { " (it has no login script: run `baton login` first)" });
        }
    }
    Ok(locks)
}

/// The runs' leases: shared through Redis with `cluster:`, else local.
fn start_leases(cfg: &Config) -> Result<Arc<dyn Leases>, AppError> {
    let Some(c) = cfg.cluster.clone() else {
        return Ok(Arc::new(crate::cluster::Local));
    };
    let cluster = crate::cluster::Cluster::new(c)?;
    tracing::info!(
        instance = cluster.instance(),
        redis = %cluster.health().redis,
        lease = %crate::time::short(cluster.lease()),
        "cluster: claims and commit markers go through Redis"
    );
    Ok(Arc::new(cluster))
}

/// Hot reload: of the scripts (a failed reload is told to the notifier),
/// and of flows.yaml. A watch that cannot start is logged, not fatal.
fn watch_files(
    opts: &Options,
    parts: &Parts,
    shop_url: Option<String>,
) -> Vec<crate::watch::Watch> {
    let mut watches = Vec::new();
    let told = parts.notifier.clone();
    match crate::script::reload::watch(parts.scripts.clone(), move |report| {
        if !report.failed.is_empty() {
            let files: Vec<&str> = report.failed.iter().map(|e| e.file.as_str()).collect();
            let errors: Vec<String> = report.failed.iter().map(ToString::to_string).collect();
            told.emit(Event::new(
                Kind::ReloadFailed,
                format!("Script reload failed: {}", files.join(", ")),
                format!(
                    "The last good version keeps running.\n{}",
                    errors.join("\n")
                ),
            ));
        }
    }) {
        Ok(w) => watches.push(w),
        Err(e) => tracing::warn!(error = %e, "cannot watch scripts; hot reload is off"),
    }
    match watch_config(
        &opts.config,
        parts.config.clone(),
        parts.scripts.clone(),
        shop_url,
        opts.env,
        parts.notifier.clone(),
    ) {
        Ok(w) => watches.push(w),
        Err(e) => tracing::warn!(error = %e, "cannot watch the config; changes need a restart"),
    }
    watches
}

/// How long a stopped server may take to close its connections.
const SERVER_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Waits for a server task that has been told to stop, at most
/// [`SERVER_GRACE`]; then drops its connections.
async fn stop_server(name: &str, mut task: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(SERVER_GRACE, &mut task).await.is_err() {
        tracing::warn!(
            "the {name} still had open connections {} after the stop; closing them",
            crate::time::short(SERVER_GRACE)
        );
        task.abort();
    }
}

/// How long a stopping baton gives its senders to deliver what is pending.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// This machine's name, for start and stop messages.
fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this machine".into())
}

/// Whether `next` cannot replace `current` in a running baton. Accounts own
/// browser sessions and lock files from start-up; a change to them (or to
/// the session numbers after the guest sessions) would move a login to
/// another session under a running run.
fn needs_restart(current: &Config, next: &Config) -> bool {
    next.accounts != current.accounts
        || (!next.accounts.is_empty()
            && next.cycle.max_concurrent_runs != current.cycle.max_concurrent_runs)
}

/// Reloads `flows.yaml` when it changes: a valid version applies at the
/// next cycle, an invalid one is reported and ignored.
fn watch_config(
    path: &std::path::Path,
    config: Arc<ArcSwap<Config>>,
    scripts: ScriptHost,
    shop_url: Option<String>,
    env: fn(&str) -> Option<String>,
    notifier: Notifier,
) -> Result<crate::watch::Watch, notify::Error> {
    let file = path.to_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file.file_name().map(std::borrow::ToOwned::to_owned);
    crate::watch::watch(
        &dir,
        false,
        move |p| p.file_name().map(std::borrow::ToOwned::to_owned) == name,
        move |_| match Config::load(&file, &env) {
            Ok(mut next) => {
                if let Some(url) = &shop_url {
                    next.resolve_shop_urls(url);
                }
                let current = config.load();
                if needs_restart(&current, &next) {
                    tracing::error!(
                        "flows.yaml: accounts (or max_concurrent_runs, with accounts) changed; restart baton to apply it. Keeping the running configuration"
                    );
                    return;
                }
                if next.state_dir != current.state_dir
                    || next.notify != current.notify
                    || next.scripts_dir != current.scripts_dir
                    || next.dashboard != current.dashboard
                    || next.demo_shop != current.demo_shop
                    || next.browser != current.browser
                {
                    tracing::warn!(
                        "flows.yaml: changes to state_dir, scripts_dir, dashboard, demo_shop, browser and notify apply after a restart"
                    );
                }
                for v in next.secrets.values() {
                    redact::global().add(v);
                }
                scripts.set_secrets(next.secrets.clone());
                config.store(Arc::new(next));
                tracing::info!("flows.yaml reloaded; the change applies at the next cycle");
            }
            Err(e) => {
                tracing::error!("flows.yaml has errors; keeping the running configuration:\n{e}");
                notifier.emit(Event::new(
                    Kind::ReloadFailed,
                    "flows.yaml reload failed",
                    format!("The running configuration is kept.\n{e}"),
                ));
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{Account, Check};
    use crate::id::{AccountId, SessionId};

    #[test]
    fn a_change_to_accounts_needs_a_restart() {
        let ada = Arc::new(Account {
            id: AccountId::new("ada"),
            session: SessionId(1),
            username: None,
            password: None,
            totp: None,
            check: Check::Script("check".into()),
            login: None,
            login_url: None,
        });
        let mut current = Config::default();
        current.accounts.insert(ada.id.clone(), ada.clone());
        let mut next = current.clone();
        next.test_mode = true;
        assert!(!needs_restart(&current, &next), "other keys reload");
        next.cycle.max_concurrent_runs = 2;
        assert!(
            needs_restart(&current, &next),
            "account sessions would move"
        );
        let mut next = current.clone();
        Arc::make_mut(next.accounts.get_mut("ada").unwrap()).login = Some("login".into());
        assert!(needs_restart(&current, &next));
        let guests = Config::default();
        let mut more = guests.clone();
        more.cycle.max_concurrent_runs = 3;
        assert!(!needs_restart(&guests, &more), "guests alone reload");
    }
}
