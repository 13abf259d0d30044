//! The command line: `run`, `check`, `dry-run`, `login`, `notify`,
//! `demo-shop`, `state`, `defs`. Each command turns its outcome into a message and an exit code:
//! 0 success, 1 runtime failure, 2 usage or configuration error.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{self, App};
use crate::config::Config;
use crate::logging::{LogFormat, Recent};
use crate::script::Plugin;
use crate::state::{self, Status};

/// Writes a line to stdout, ignoring a closed pipe (`baton state | head -1`):
/// output that nobody reads is no reason to fail, let alone panic as
/// `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Writes a command's answer to stdout. Unlike [`say!`], a failure to write
/// (`> /dev/full`, a closed pipe) is the command's failure: its output was
/// the point, and exiting 0 with it lost would lie.
fn answer(text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::runtime(format!("cannot write to standard output: {e}")))
}

mod dry_run;
mod init;
mod login;
mod notify;
mod remote;
mod watch;

const EXAMPLES: &str = "\
Examples:
  baton init shop && cd shop                  a starter project: flows.yaml and the scripts
  baton run                                   buy from the embedded demo shop, every 25-35 s
  baton run --cycles 3                        three cycles, then exit
  baton check                                 validate flows.yaml and compile every script
  baton dry-run scripts/product_page.rhai --target 1001
  baton dry-run scripts/checkout.rhai --target 1001 --offline tests/fixtures/checkout.yaml
  baton state                                 every target's status
  baton state resolve 1001 --as completed     settle an in_doubt target
  baton cluster accept-loss                   claim again after Redis lost its data
  baton login ada                             log an account in by hand, keep the session
  baton login ada --check                     is the saved session still logged in?
  baton notify test                           send a test message to every channel
  baton demo-shop --port 8099                 serve the demo shop alone

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error.
Logs go to stderr; RUST_LOG filters them (e.g. RUST_LOG=debug).";

/// Runs browser flows written in Rhai, in cycles, and guarantees that no two
/// runs ever drive the same browser at once.
#[derive(Parser, Debug)]
#[command(name = "baton", version, after_help = EXAMPLES)]
struct Cli {
    /// Log lines as readable text or as one JSON object each.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,

    /// On a terminal, show the INFO detail there too (it goes to
    /// STATE_DIR/baton.log otherwise). RUST_LOG does the same.
    #[arg(short, long, global = true)]
    verbose: bool,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a starter project (flows.yaml and the scripts) to DIR.
    ///
    /// The demo's own files, embedded in the binary: `baton init shop &&
    /// cd shop && baton run` buys from the embedded demo shop. Refuses to
    /// overwrite anything.
    #[command(after_help = "Examples:\n  baton init shop\n  baton init .")]
    Init {
        /// Where to write it (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run cycles: monitor the targets and run their flows (the main job).
    ///
    /// Stops after `--cycles N`, or on Ctrl-C/SIGTERM: dispatching stops,
    /// the active run gets `wait_for_active` to finish, then baton exits 0.
    /// A second Ctrl-C stops the browser at once.
    #[command(
        after_help = "Examples:\n  baton run\n  baton run --config staging.yaml --cycles 5\n  BATON_TEST_MODE=1 baton run --cycles 3"
    )]
    Run {
        /// The flows file.
        #[arg(short, long, default_value = "flows.yaml")]
        config: PathBuf,
        /// Stop after this many cycles (and their runs).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        cycles: Option<u64>,
    },
    /// Validate flows.yaml and compile every script and its imports.
    ///
    /// Prints each problem with its file, line and column. Exit 0 when all
    /// is well, 2 otherwise: usable in an editor's save hook or CI.
    #[command(after_help = "Examples:\n  baton check\n  baton check --config staging.yaml")]
    Check {
        #[arg(short, long, default_value = "flows.yaml")]
        config: PathBuf,
    },
    /// Run one script once, with commit skipped and nothing persisted.
    ///
    /// Live against Chromium by default; `--offline FIXTURE` runs it against
    /// the simulated browser with page answers from the fixture. Prints
    /// every primitive call with its arguments (secrets masked), result and
    /// time. On failure saves a screenshot and the page's HTML and exits 1.
    #[command(
        after_help = "Examples:\n  baton dry-run scripts/product_page.rhai --target 1001\n  baton dry-run scripts/checkout.rhai --target 1001 --offline tests/fixtures/checkout.yaml\n  baton dry-run --flow purchase --target 1001"
    )]
    DryRun {
        /// The script, as a path (`scripts/checkout.rhai`) or a name (`checkout`).
        #[arg(required_unless_present = "flow", conflicts_with = "flow")]
        script: Option<String>,
        /// Dry-run a whole flow instead: its monitor (without a browser),
        /// then its steps in order in one page, `always` steps included.
        #[arg(long)]
        flow: Option<String>,
        /// The target from flows.yaml to run it for.
        #[arg(long)]
        target: String,
        /// A fixture file for the simulated browser (see docs/cli.md).
        #[arg(long)]
        offline: Option<PathBuf>,
        #[arg(short, long, default_value = "flows.yaml")]
        config: PathBuf,
        /// Chromium profile for a live dry run (default: a fresh temporary
        /// one, so it neither disturbs nor shares a running baton's).
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Log an account in by hand and keep the session, or check, import or
    /// export its saved session.
    ///
    /// Without options, opens a headed browser on the account's session at
    /// its login page: log in (two-step codes and challenges included), then
    /// press Enter, and baton checks and saves the session. `--check` says
    /// whether the saved session is still logged in (exit 0) or not (exit
    /// 1). `--import`/`--export` read and write Playwright's `storageState`
    /// JSON (files mode 0600). Refused while a running baton uses the
    /// account.
    #[command(
        after_help = "Examples:\n  baton login ada\n  baton login ada --check\n  baton login ada --import state.json --check\n  baton login ada --export state.json"
    )]
    Login {
        /// The account, as named under `accounts:` in flows.yaml.
        account: String,
        /// Check the saved session in a headless browser instead.
        #[arg(long)]
        check: bool,
        /// Save this `storageState` file as the account's session.
        #[arg(long, value_name = "FILE")]
        import: Option<PathBuf>,
        /// Write the account's saved session to this file.
        #[arg(long, value_name = "FILE")]
        export: Option<PathBuf>,
        /// Log in with no display: the session runs headless and is shown
        /// on a page served on --listen, where you click and type.
        #[arg(long, conflicts_with_all = ["check", "import", "export"])]
        remote: bool,
        /// Where --remote serves its page (needs `dashboard.token` unless
        /// loopback).
        #[arg(
            long,
            value_name = "ADDR",
            default_value = "127.0.0.1:7879",
            requires = "remote"
        )]
        listen: std::net::SocketAddr,
        #[arg(short, long, default_value = "flows.yaml")]
        config: PathBuf,
    },
    /// Send a test message to the notification channels and say how each
    /// went.
    #[command(after_help = "Examples:\n  baton notify test\n  baton notify test phone")]
    Notify {
        #[arg(short, long, default_value = "flows.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: NotifyCmd,
    },
    /// Serve the demo shop alone.
    #[command(
        after_help = "Examples:\n  baton demo-shop\n  baton demo-shop --port 9000\n  curl -X POST http://127.0.0.1:8099/admin/stock/1003/5"
    )]
    DemoShop {
        #[arg(long, default_value_t = 8099)]
        port: u16,
        /// How heavy pages are: `light`, or `realistic` (server think time,
        /// real-sized scripts, styles and images) for benchmarks.
        #[arg(long, value_enum, default_value = "light")]
        profile: crate::shop::profile::Profile,
    },
    /// Show targets' statuses, or reset or resolve one.
    ///
    /// Works while `baton run` is running: changes then go through its
    /// dashboard API (the state file has one writer).
    #[command(
        after_help = "Examples:\n  baton state\n  baton state reset 1001\n  baton state resolve 1001 --as completed"
    )]
    State {
        #[arg(short, long, default_value = "flows.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<StateCmd>,
    },
    /// Settle this instance's view of its cluster (`cluster:`).
    #[command(after_help = "Examples:\n  baton cluster accept-loss")]
    Cluster {
        #[arg(short, long, default_value = "flows.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: ClusterCmd,
    },
    /// Show what baton reads on a product page: name, price, availability
    /// and the schema.org source (JSON-LD, microdata, OpenGraph).
    ///
    /// Tells in seconds whether a shop works with `offer()` and no
    /// selectors. Exit 0 with the offer, 1 when the page has none.
    #[command(after_help = "Examples:
  baton watch https://shop.example/products/lamp
  baton watch --browser https://shop.example/products/lamp")]
    Watch {
        /// The product page's full URL.
        url: String,
        /// Render the page in headless Chromium first (for shops that
        /// write their product data from script).
        #[arg(long)]
        browser: bool,
    },
    /// Print the script API as a Rhai definition file, for the Rhai
    /// language server.
    #[command(after_help = "Examples:\n  baton defs > scripts/baton.d.rhai")]
    Defs {
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum NotifyCmd {
    /// Deliver a test message now (not through the outbox), to one channel
    /// or to all. Exit 0 when every one was delivered, 1 otherwise.
    Test {
        /// A channel under `notify.channels`; all of them without it.
        channel: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// After Redis lost its data, let this instance claim again at its next
    /// start. Run it once the targets its message named are settled (or
    /// Redis was restored from its AOF or RDB).
    AcceptLoss,
}

#[derive(Subcommand, Debug)]
enum StateCmd {
    /// A table of targets: status, last outcome, last order, last error, time.
    Show,
    /// Put a target back to `ready`.
    Reset { id: String },
    /// Settle an `in_doubt` target after checking the shop.
    Resolve {
        id: String,
        /// `completed`: the order was placed. `ready`: it was not; buy again.
        #[arg(long = "as", value_enum)]
        to: ResolveAs,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ResolveAs {
    Completed,
    Ready,
}

/// What a program built on the library adds to the CLI.
#[derive(Default)]
pub struct Options {
    pub plugins: Vec<Arc<dyn Plugin>>,
}

/// A command's failure: the message and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    pub fn runtime(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

/// `baton`'s `main`.
pub fn main() -> ExitCode {
    main_with(Options::default())
}

/// `main` for a binary built on the library, with its own plugins.
pub fn main_with(opts: Options) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // clap prints help, versions and usage errors itself (exit 0 or 2).
        Err(e) => e.exit(),
    };
    let recent = Recent::new(crate::redact::global());
    crate::logging::init(
        cli.log_format,
        cli.verbose,
        recent.clone(),
        crate::redact::global(),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            // Not eprintln!: it panics when stderr is closed or full.
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {e}"
            );
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(dispatch(cli.command, opts, recent));
    // Scripts may still be winding down on blocking threads; do not wait.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let msg = crate::redact::global().apply_log(&f.message).into_owned();
            let _ = writeln!(std::io::stderr(), "error: {msg}");
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cmd: Cmd, opts: Options, recent: Recent) -> Result<(), Failure> {
    match cmd {
        Cmd::Run { config, cycles } => run(config, cycles, opts, recent).await,
        Cmd::Check { config } => check(&config, opts),
        Cmd::Notify {
            config,
            action: NotifyCmd::Test { channel },
        } => notify::test(&load(&config)?, channel.as_deref()).await,
        Cmd::DryRun {
            script,
            flow,
            target,
            offline,
            config,
            profile,
        } => {
            let what = match (script, flow) {
                (_, Some(f)) => dry_run::What::Flow(f),
                (Some(s), None) => dry_run::What::Script(s),
                // clap requires one of them.
                (None, None) => return Err(Failure::usage("name a script or a --flow")),
            };
            dry_run::run(dry_run::Args {
                what,
                target,
                offline,
                config,
                profile,
                plugins: opts.plugins,
            })
            .await
        }
        Cmd::Login {
            account,
            check,
            import,
            export,
            remote,
            listen,
            config,
        } => {
            login::run(login::Args {
                account,
                check,
                remote: remote.then_some(listen),
                import,
                export,
                config,
            })
            .await
        }
        Cmd::DemoShop { port, profile } => demo_shop(port, profile).await,
        Cmd::State { config, action } => state_cmd(&config, action.unwrap_or(StateCmd::Show)).await,
        Cmd::Cluster { config, action } => cluster_cmd(&config, &action),
        Cmd::Init { dir } => init::init(&dir),
        Cmd::Watch { url, browser } => watch::watch(&url, browser).await,
        Cmd::Defs { out } => defs(out, opts),
    }
}

fn cluster_cmd(config: &Path, action: &ClusterCmd) -> Result<(), Failure> {
    let cfg = load(config)?;
    if cfg.cluster.is_none() {
        return Err(Failure::usage(format!(
            "{} has no `cluster:` section; there is nothing to accept",
            cfg.file.display()
        )));
    }
    match action {
        ClusterCmd::AcceptLoss => {
            let mut memory = crate::cluster::Memory::load(&cfg.state_dir)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            memory.accept_loss = true;
            memory
                .save(&cfg.state_dir)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            answer(&format!(
                "accepted: at its next start this instance takes the cluster's epoch as Redis has it now and claims again ({})\n",
                cfg.state_dir.join(crate::cluster::MEMORY_FILE).display()
            ))
        }
    }
}

/// The embedded demo shop, for a command that needs it (flows.yaml has
/// `demo_shop:`): started on its configured port, or the one already
/// serving there. Returns the shop to keep alive and its base URL.
async fn demo_shop_base(
    cfg: &Config,
    stop: &tokio_util::sync::CancellationToken,
) -> (Option<crate::shop::Running>, Option<String>) {
    let Some(d) = &cfg.demo_shop else {
        return (None, None);
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], d.port));
    if let Ok(s) = crate::shop::start(addr, stop.clone()).await {
        say!("demo shop on {}", s.url());
        // Its real address: port 0 in flows.yaml means any.
        let base = s.url();
        (Some(s), Some(base))
    } else {
        say!(
            "demo shop port {} is taken; using the shop already there",
            d.port
        );
        (None, Some(format!("http://127.0.0.1:{}", d.port)))
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn load(config: &Path) -> Result<Config, Failure> {
    Config::load(config, &env).map_err(|e| Failure::usage(format!("invalid configuration:\n{e}")))
}

/// Ctrl-C, SIGTERM and SIGHUP, listened for from the moment this is
/// created (so a signal that arrives before anyone awaits is not lost).
/// SIGHUP (the terminal closed) stops baton like SIGTERM does: gracefully,
/// letting the active run finish, instead of killing it mid-commit.
pub(crate) struct Signals {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub(crate) fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
                hup: signal(SignalKind::hangup()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on the next Ctrl-C, SIGTERM or SIGHUP.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            let int = async {
                match &mut self.int {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let term = async {
                match &mut self.term {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let hup = async {
                match &mut self.hup {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = int => {}
                () = term => {}
                () = hup => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn run(
    config: PathBuf,
    cycles: Option<u64>,
    opts: Options,
    recent: Recent,
) -> Result<(), Failure> {
    // Listen before anything starts, so an early Ctrl-C is not lost.
    let mut sig = Signals::new();
    let mut o = app::Options::new(&config);
    o.cycles = cycles;
    o.plugins = opts.plugins;
    o.recent = recent;
    let app = App::start(o).await.map_err(|e| Failure {
        code: e.exit_code(),
        message: e.to_string(),
    })?;
    {
        let cfg = app.parts.config.load();
        // On a quiet terminal the INFO detail goes to the state directory.
        let log = match crate::logging::file().open(&cfg.state_dir) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(error = %e, "cannot open the log file in {}", cfg.state_dir.display());
                None
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "baton {}: {} target(s), state in {}",
            env!("CARGO_PKG_VERSION"),
            cfg.targets.len(),
            cfg.state_dir.display()
        );
        if let Some(log) = log {
            let _ = writeln!(out, "log:        {} (-v shows it here)", log.display());
        }
        if let Some(s) = &app.shop {
            let _ = writeln!(out, "demo shop:  {}", s.url());
        }
        if let Some(d) = &app.dashboard {
            let _ = writeln!(out, "dashboard:  http://{}", d.addr);
        }
        let _ = writeln!(out, "Ctrl-C stops after the active run.");
    }

    // One line per finished run on stdout.
    let mut finished = app.parts.finished.subscribe();
    let printer = tokio::spawn(async move {
        loop {
            match finished.recv().await {
                Ok(r) => say!("{}", run_line(&r)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    });

    let shutdown = app.shutdown.clone();
    let browser = app.parts.browser.clone();
    let signals = tokio::spawn(async move {
        sig.recv().await;
        tracing::info!(
            "stopping: no new runs; waiting for the active run (Ctrl-C again to stop now)"
        );
        shutdown.cancel();
        sig.recv().await;
        tracing::warn!("stopping now");
        browser.kill().await;
        std::process::exit(130);
    });
    let summary = app.run().await;
    signals.abort();
    // The broadcast sender is gone with the app; the printer drains and ends.
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    say!(
        "stopped after {} cycle(s), {} run(s)",
        summary.cycles,
        summary.runs
    );
    Ok(())
}

/// `1001  completed  order A-10001  2.3s`
pub fn run_line(r: &state::RunRecord) -> String {
    let mut line = format!(
        "{}  {:<8} {:<10}",
        crate::time::format(r.ended_at).get(11..19).unwrap_or(""),
        r.target.as_str(),
        r.status.as_str()
    );
    match (&r.order, &r.outcome) {
        (Some(o), _) => line.push_str(&format!(" order {o}")),
        (None, Some(o)) => line.push_str(&format!(" {o}")),
        _ => {}
    }
    line.push_str(&format!(
        "  {}",
        crate::time::short(Duration::from_millis(r.duration_ms))
    ));
    if let Some(e) = &r.error {
        line.push_str(&format!("  ({e})"));
    }
    line
}

fn check(config: &Path, opts: Options) -> Result<(), Failure> {
    let cfg = load(config)?;
    let host = crate::script::ScriptHost::builder(&cfg.scripts_dir)
        .plugins(opts.plugins)
        .secrets(cfg.secrets.clone())
        .build();
    let lib = host.library();
    let undeclared = host.undeclared_secrets(None);
    if !lib.errors.is_empty() || !undeclared.is_empty() {
        let msgs: Vec<String> = lib
            .errors
            .values()
            .chain(&undeclared)
            .map(std::string::ToString::to_string)
            .collect();
        return Err(Failure::usage(format!(
            "{} script problem(s):\n{}",
            msgs.len(),
            msgs.join("\n")
        )));
    }
    let accounts = if cfg.accounts.is_empty() {
        String::new()
    } else {
        format!(", {} account(s)", cfg.accounts.len())
    };
    let channels = cfg
        .notify
        .as_ref()
        .map(|n| format!(", {} notification channel(s)", n.channels.len()))
        .unwrap_or_default();
    for t in cfg.unbudgeted() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "warning: target `{}` has no max_price: baton will refuse its commits (I11); set `max_price: 60` or `max_price: none`",
            t.id
        );
    }
    // The built-in scripts are not the project's.
    let files = lib
        .scripts
        .values()
        .filter(|s| !s.file.starts_with(crate::script::BUILTIN_FILE))
        .count();
    answer(&format!(
        "{}: ok ({} target(s), {} flow(s){accounts}{channels}); {}: ok ({files} script(s))\n",
        cfg.file.display(),
        cfg.targets.len(),
        cfg.flows.len(),
        cfg.scripts_dir.display(),
    ))
}

async fn demo_shop(port: u16, profile: crate::shop::profile::Profile) -> Result<(), Failure> {
    let mut sig = Signals::new();
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let running = crate::shop::start(addr, stop.clone())
        .await
        .map_err(|e| Failure::runtime(format!("cannot listen on {addr}: {e}")))?;
    running.shop.set_profile(profile);
    say!("demo shop on {}", running.url());
    say!("  products:  {0}/p/1001 .. {0}/p/1004", running.url());
    say!(
        "  control:   POST {}/admin/stock/ID/N, /admin/delay/STEP/MS, /admin/fail/STEP/N, /admin/reset",
        running.url()
    );
    say!(
        "  reports:   GET {0}/admin/orders, {0}/admin/overlaps, {0}/admin/carts",
        running.url()
    );
    say!(
        "  pages:     {} (POST /admin/profile/light|realistic to change)",
        match profile {
            crate::shop::profile::Profile::Light => "light",
            crate::shop::profile::Profile::Realistic => "realistic: think time, real-sized assets",
        }
    );
    say!("Ctrl-C to stop.");
    sig.recv().await;
    stop.cancel();
    let _ = running.task.await;
    Ok(())
}

fn defs(out: Option<PathBuf>, opts: Options) -> Result<(), Failure> {
    let host = crate::script::ScriptHost::builder("scripts")
        .plugins(opts.plugins)
        .build();
    let text = host.definitions();
    match out {
        Some(p) => std::fs::write(&p, text)
            .map_err(|e| Failure::runtime(format!("cannot write `{}`: {e}", p.display()))),
        None => answer(&text),
    }
}

async fn state_cmd(config: &Path, action: StateCmd) -> Result<(), Failure> {
    let cfg = load(config)?;
    match action {
        StateCmd::Show => {
            let doc = state::read_doc(&cfg.state_dir)
                .map_err(|e| Failure::runtime(e.to_string()))?
                .unwrap_or_default();
            answer(&state_table(&cfg, &doc))
        }
        StateCmd::Reset { id } => change_state(&cfg, &id, None).await,
        StateCmd::Resolve { id, to } => {
            let to = match to {
                ResolveAs::Completed => Status::Completed,
                ResolveAs::Ready => Status::Ready,
            };
            change_state(&cfg, &id, Some(to)).await
        }
    }
}

/// The `state show` table, targets in config order, then any the state
/// knows that the config no longer lists.
pub fn state_table(cfg: &Config, doc: &state::StateDoc) -> String {
    let mut ids: Vec<String> = cfg.targets.iter().map(|t| t.id.to_string()).collect();
    for id in doc.targets.keys() {
        if !ids.iter().any(|i| i == id.as_str()) {
            ids.push(id.to_string());
        }
    }
    let mut rows: Vec<[String; 7]> = vec![[
        "TARGET".to_owned(),
        "STATUS".to_owned(),
        "RUN".to_owned(),
        "LAST OUTCOME".to_owned(),
        "LAST ORDER".to_owned(),
        "UPDATED".to_owned(),
        "LAST ERROR".to_owned(),
    ]];
    for id in ids {
        let t = doc.targets.get(id.as_str()).cloned().unwrap_or_default();
        rows.push([
            id,
            t.status.to_string(),
            t.run_id.map_or_else(|| "-".into(), |r| r.to_string()),
            t.last_outcome.unwrap_or_else(|| "-".into()),
            t.last_order.unwrap_or_else(|| "-".into()),
            t.updated_at.map_or_else(|| "-".into(), crate::time::format),
            t.last_error.unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", r[c], w = *w));
        }
        out.push_str(&r[6]);
        out.push('\n');
    }
    out
}

/// Resets (`to` = None) or resolves a target: through the running baton's
/// dashboard if one holds the state lock, else directly.
async fn change_state(cfg: &Config, id: &str, to: Option<Status>) -> Result<(), Failure> {
    let known = cfg.target(id).is_some()
        || state::read_doc(&cfg.state_dir)
            .ok()
            .flatten()
            .is_some_and(|d| d.targets.contains_key(id));
    if !known {
        return Err(Failure::usage(format!(
            "unknown target `{id}`: it is neither in flows.yaml nor in the state file"
        )));
    }
    let verb = if to.is_some() { "resolved" } else { "reset" };
    if state::is_locked(&cfg.state_dir) {
        let Some(d) = &cfg.dashboard else {
            return Err(Failure::runtime(
                "`baton run` is running with the dashboard off, and the state file has one writer; stop it, or enable the dashboard to change state while it runs",
            ));
        };
        use crate::dashboard::routes;
        let path = match to {
            None => routes::for_target(routes::RESET, id),
            Some(s) => format!("{}?as={s}", routes::for_target(routes::RESOLVE, id)),
        };
        let url = format!("http://{}{path}", d.addr);
        let mut req = reqwest::Client::new()
            .post(&url)
            .header("X-Baton-Action", "1")
            .timeout(Duration::from_secs(40));
        if let Some(t) = &d.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| {
            Failure::runtime(format!("cannot reach the running baton at {}: {e}", d.addr))
        })?;
        let ok = resp.status().is_success();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if !ok {
            return Err(Failure::runtime(
                body["error"]
                    .as_str()
                    .unwrap_or("the running baton refused the change")
                    .to_owned(),
            ));
        }
        say!("target `{id}` {verb} (through the running baton)");
        return Ok(());
    }
    let (store, _) =
        state::StateStore::open(&cfg.state_dir).map_err(|e| Failure::runtime(e.to_string()))?;
    let change = match to {
        Some(to) => state::OperatorChange::Resolve(to),
        None => state::OperatorChange::Reset,
    };
    store
        .operator_change(&id.into(), change)
        .map_err(|e| match e {
            state::OperatorError::State(e) => Failure::runtime(e.to_string()),
            other => Failure::usage(other.to_string()),
        })?;
    // With several instances, this instance's marker follows: a target
    // resolved as bought stays bought for the cluster; otherwise it is
    // free again.
    if let Some(cc) = &cfg.cluster {
        let completed = store.get(id).status == Status::Completed;
        let cluster = crate::cluster::Cluster::new(cc.clone())
            .map_err(|e| Failure::runtime(e.to_string()))?;
        cluster
            .settled(&id.into(), completed)
            .await
            .map_err(|e| {
                Failure::runtime(format!(
                    "target `{id}` {verb} here, but the cluster's marker was not updated ({e}); run this again when Redis answers"
                ))
            })?;
    }
    say!("target `{id}` {verb}");
    Ok(())
}
