//! `baton dry-run`: one script, or a whole flow (`--flow`: the monitor,
//! then the steps in one page), once, with `commit` skipped, nothing
//! persisted and the registry untouched, printing every primitive call.
//!
//! Live runs use real Chromium with a throwaway profile; `--offline` runs
//! use the simulated browser, with the pages, JavaScript answers and HTTP
//! answers of a fixture file (`browser::sim::fixture`). A fixture may also
//! say what it expects (`expect:`), which makes it a test of the script
//! that needs no browser.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::{Failure, Signals, load};
use crate::browser::chrome::ChromeBrowser;
use crate::browser::sim::SimBrowser;
use crate::browser::sim::fixture::{Fixture, absolute, origin};
use crate::browser::{Browser, Page};
use crate::flow::CommitSink;
use crate::flow::{StepContext, StepEnd, StepError};
use crate::id::SessionId;
use crate::script::api::{Trace, TracedCall};
use crate::script::{Plugin, Probe, Ran, ScriptHost};
use crate::sync::lock;

/// What to dry-run.
pub(super) enum What {
    /// One script, as a path or a name.
    Script(String),
    /// A whole flow: its monitor, then its steps in order in one page.
    Flow(String),
}

pub(super) struct Args {
    pub what: What,
    pub target: String,
    pub offline: Option<PathBuf>,
    pub config: PathBuf,
    pub profile: Option<PathBuf>,
    pub plugins: Vec<Arc<dyn Plugin>>,
}

/// Prints each call as it happens.
struct Printer {
    start: Instant,
    out: Mutex<Vec<String>>,
}

impl Trace for Printer {
    fn call(&self, c: &TracedCall<'_>) {
        let at = self.start.elapsed();
        let result = match c.result {
            Ok("") => "ok".to_owned(),
            Ok(r) => format!("-> {r}"),
            Err(e) => format!("FAILED: {e}"),
        };
        let line = format!(
            "{:>8}  {}({}) {} [{}]",
            crate::time::short(at),
            c.name,
            c.args,
            result,
            crate::time::short(c.took)
        );
        say!("{line}");
        lock(&self.out).push(line);
    }
}

/// `commit` in a dry run: the host's budget check (I11) as a real run
/// makes it, then report and skip.
struct DrySink {
    budget: crate::budget::Budget,
    observed: Mutex<Option<crate::price::Price>>,
    labels: Mutex<Vec<String>>,
}

impl CommitSink for DrySink {
    fn begin(&self, label: &str) -> Result<bool, crate::flow::CommitRefused> {
        let observed = lock(&self.observed).clone();
        if let Err(refusal) = self.budget.admits(observed.as_ref()) {
            say!("          commit {label} would be refused by baton (I11): {refusal}");
            return Err(refusal.into());
        }
        say!("          would commit: {label} (skipped in a dry run)");
        lock(&self.labels).push(label.to_owned());
        Ok(false)
    }

    fn observe(&self, price: crate::price::Price) {
        *lock(&self.observed) = Some(price);
    }

    fn done(&self, _label: &str, _result: Option<&str>) {}
}

/// The script's name, from `scripts/x.rhai` or `x`.
fn script_name(arg: &str, scripts_dir: &Path) -> Result<String, Failure> {
    let p = Path::new(arg);
    if p.extension().is_some_and(|e| e == "rhai") || p.components().count() > 1 {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| Failure::usage(format!("`{arg}` is not a script path")))?;
        let in_dir = p
            .parent()
            .and_then(|d| d.canonicalize().ok())
            .zip(scripts_dir.canonicalize().ok())
            .is_some_and(|(d, s)| d == s);
        if !in_dir {
            return Err(Failure::usage(format!(
                "`{arg}` is not in the scripts directory `{}`: dry-run runs flow scripts from there",
                scripts_dir.display()
            )));
        }
        Ok(stem)
    } else {
        Ok(arg.to_owned())
    }
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let cfg = load(&args.config)?;
    let what = match args.what {
        What::Script(s) => What::Script(script_name(&s, &cfg.scripts_dir)?),
        What::Flow(f) => What::Flow(f),
    };
    let Some(target) = cfg.target(&args.target).cloned() else {
        let known: Vec<_> = cfg.targets.iter().map(|t| format!("`{}`", t.id)).collect();
        return Err(Failure::usage(format!(
            "unknown target `{}` (targets in {}: {})",
            args.target,
            cfg.file.display(),
            known.join(", ")
        )));
    };
    let redactor = crate::redact::global();
    for v in cfg.secrets.values() {
        redactor.add(v);
    }
    let report_dir = cfg.state_dir.join("dry-run");
    let host = ScriptHost::builder(&cfg.scripts_dir)
        .plugins(args.plugins)
        .secrets(cfg.secrets.clone())
        .redactor(redactor.clone())
        .shots_dir(report_dir.clone())
        .build();
    loaded(&cfg, &host, &what)?;
    let is_monitor = only_a_monitor(&cfg, &what);

    let stop = CancellationToken::new();
    let mut shop = None;
    let mut target = (*target).clone();
    let fixture = if let Some(path) = &args.offline {
        let f = Fixture::load(path).map_err(|e| Failure::usage(e.to_string()))?;
        if target.url.starts_with('/') {
            let port = cfg.demo_shop.as_ref().map_or(8099, |d| d.port);
            target.url = format!("http://127.0.0.1:{port}{}", target.url);
        }
        Some(f)
    } else {
        if target.url.starts_with('/') {
            let (running, base) = super::demo_shop_base(&cfg, &stop).await;
            shop = running;
            let base = base.unwrap_or_else(|| "http://127.0.0.1:8099".to_owned());
            target.url = format!("{base}{}", target.url);
        }
        None
    };
    let target = Arc::new(target);
    let origin = origin(&target.url);
    // A live run's throwaway profile lives until this function returns
    // (after the browser is shut down).
    let (browser, http_fixture, start_url, _profile_tmp) =
        browser_for(&cfg, fixture.as_ref(), &origin, args.profile.as_deref())?;

    let account = cfg.account_of(&target).cloned();
    let (session, _account_lock) =
        account_session(&cfg, account.as_deref(), &*browser, fixture.is_some()).await?;

    let printer = Arc::new(Printer {
        start: Instant::now(),
        out: Mutex::new(Vec::new()),
    });
    let sink = Arc::new(DrySink {
        budget: target.budget.clone(),
        observed: Mutex::new(None),
        labels: Mutex::new(Vec::new()),
    });
    let cancel = CancellationToken::new();
    let on_signal = {
        let cancel = cancel.clone();
        let mut sig = Signals::new();
        tokio::spawn(async move {
            sig.recv().await;
            cancel.cancel();
        })
    };
    let offline = if args.offline.is_some() {
        " (offline)"
    } else {
        ""
    };
    // Every page call goes into a trace too, printed at the end the way
    // the dashboard draws a run's.
    let recorder = crate::trace::Recorder::new();
    let cx = Dry {
        host: &host,
        cfg: &cfg,
        target: target.clone(),
        sink: sink.clone(),
        printer,
        http_fixture,
        cancel,
        report_dir,
        account,
        notices: Arc::new(crate::notify::DryRun(cfg.notify.clone())),
        recorder: recorder.clone(),
    };
    let mut pages = Pages {
        browser: crate::trace::TracedBrowser::wrap(browser.clone(), recorder.clone()),
        session,
        start_url,
        timeout: cfg.browser.timeout,
        page: None,
    };

    let ending = match &what {
        What::Script(name) => {
            say!(
                "dry run of `{name}` for target `{}`{offline}{}",
                target.id,
                if is_monitor { " as a monitor" } else { "" }
            );
            if is_monitor {
                cx.monitor(name).await
            } else {
                let p = pages.get().await?;
                cx.step(name, &p).await
            }
        }
        What::Flow(flow_name) => cx.flow(flow_name, offline, &mut pages).await?,
    };
    on_signal.abort();

    if let Some(p) = pages.page.take() {
        p.close().await;
        print_trace(&recorder, &redactor, &cx.report_dir);
    }
    browser.shutdown().await;
    stop.cancel();
    if let Some(s) = shop {
        let _ = s.task.await;
    }

    if let Some(expect) = fixture.and_then(|f| f.expect) {
        met(&expect, &ending, &sink)?;
        say!("expectations met");
        return Ok(());
    }
    if ending.end == "error" {
        return Err(Failure::runtime(match &what {
            What::Script(name) => format!("`{name}` failed"),
            What::Flow(name) => format!("flow `{name}` failed"),
        }));
    }
    Ok(())
}

/// How a dry run ended: `ok`, `outcome` or `error`, as fixtures name it.
struct Ending {
    end: &'static str,
    outcome: Option<String>,
    error: Option<String>,
    /// For a monitor: whether it said run.
    run: bool,
}

impl Ending {
    fn ok() -> Ending {
        Ending {
            end: "ok",
            outcome: None,
            error: None,
            run: true,
        }
    }
}

/// What one dry run shares between its scripts.
struct Dry<'a> {
    host: &'a ScriptHost,
    cfg: &'a crate::config::Config,
    target: Arc<crate::flow::Target>,
    sink: Arc<DrySink>,
    printer: Arc<Printer>,
    http_fixture: Option<Arc<BTreeMap<String, serde_json::Value>>>,
    cancel: CancellationToken,
    report_dir: PathBuf,
    account: Option<Arc<crate::account::Account>>,
    /// `notify(..)` prints where it would go and sends nothing.
    notices: Arc<crate::notify::DryRun>,
    recorder: Arc<crate::trace::Recorder>,
}

/// Prints the run's trace and saves it beside the report as `trace.json`.
fn print_trace(
    recorder: &crate::trace::Recorder,
    redactor: &crate::redact::Redactor,
    report_dir: &Path,
) {
    let trace = recorder.finish(redactor);
    say!("");
    for line in crate::trace::render(&trace, 30).lines() {
        say!("{line}");
    }
    let saved = std::fs::create_dir_all(report_dir).and_then(|()| {
        let bytes = serde_json::to_vec_pretty(&trace).map_err(std::io::Error::other)?;
        std::fs::write(report_dir.join("trace.json"), bytes)
    });
    match saved {
        Ok(()) => say!("trace:      {}", report_dir.join("trace.json").display()),
        Err(e) => say!("trace not saved: {e}"),
    }
}

impl Dry<'_> {
    async fn script(
        &self,
        name: &str,
        page: Option<Arc<dyn Page>>,
        monitor: bool,
    ) -> (Result<Ran, StepError>, String) {
        let started = Instant::now();
        let result = self
            .host
            .run_script(
                name,
                StepContext {
                    label: name.to_owned(),
                    page,
                    target: self.target.clone(),
                    cancel: self.cancel.clone(),
                    commit: if monitor {
                        None
                    } else {
                        Some(self.sink.clone() as Arc<dyn CommitSink>)
                    },
                    timeouts: self.cfg.timeouts(),
                    account: self.account.clone(),
                },
                Probe {
                    trace: Some(self.printer.clone()),
                    http_fixture: self.http_fixture.clone(),
                    notices: Some(self.notices.clone()),
                },
            )
            .await;
        (result, crate::time::short(started.elapsed()))
    }

    /// A whole flow: its monitor, then (if it says run) every step in one
    /// page, `always` steps included.
    async fn flow(
        &self,
        flow_name: &str,
        offline: &str,
        pages: &mut Pages,
    ) -> Result<Ending, Failure> {
        let flow = self.cfg.flows.get(flow_name).cloned().ok_or_else(|| {
            let known: Vec<_> = self.cfg.flows.keys().map(|f| format!("`{f}`")).collect();
            Failure::usage(format!(
                "unknown flow `{flow_name}` (flows in {}: {})",
                self.cfg.file.display(),
                known.join(", ")
            ))
        })?;
        say!(
            "dry run of flow `{flow_name}` for target `{}`{offline}",
            self.target.id
        );
        let mut ending = Ending::ok();
        let mut run = true;
        if let Some(m) = &flow.monitor {
            say!("== monitor `{m}`");
            let e = self.monitor(m).await;
            run = e.run;
            ending = e;
        }
        if run {
            let mut stopped = false;
            for step in &flow.steps {
                if stopped && !step.always {
                    say!("== step `{}`: skipped", step.script);
                    continue;
                }
                say!(
                    "== step `{}`{}",
                    step.script,
                    if step.always { " (always)" } else { "" }
                );
                let p = pages.get().await?;
                let e = self.step(&step.script, &p).await;
                // The first ending that stops the flow is its ending; a
                // cleanup step's failure counts when nothing else did.
                if !stopped && (e.end != "ok" || step.always) {
                    stopped = e.end != "ok";
                    ending = e;
                } else if !step.always {
                    ending = e;
                }
            }
        } else {
            say!("the monitor says skip: baton would not run the flow this cycle");
        }
        Ok(ending)
    }

    /// Runs a monitor: no page, no commit.
    async fn monitor(&self, name: &str) -> Ending {
        let (result, took) = self.script(name, None, true).await;
        match result {
            Ok(Ran {
                end: StepEnd::Continue,
                value,
            }) => {
                let run = value.as_bool().unwrap_or(false);
                say!(
                    "monitor says: {} ({took})",
                    if run { "run" } else { "skip" }
                );
                Ending {
                    run,
                    ..Ending::ok()
                }
            }
            Ok(Ran {
                end: StepEnd::Paused(why),
                ..
            }) => {
                say!("monitor says: skip ({took}): {why}");
                Ending {
                    run: false,
                    ..Ending::ok()
                }
            }
            Ok(Ran {
                end: StepEnd::Outcome(o),
                ..
            }) => {
                let msg = format!("a monitor ends with true or false, not outcome({o:?})");
                say!("FAILED ({took}): {msg}");
                Ending {
                    end: "error",
                    outcome: None,
                    error: Some(msg),
                    run: false,
                }
            }
            Err(e) => {
                say!("FAILED ({took}): {}", e.message);
                Ending {
                    end: "error",
                    outcome: None,
                    error: Some(e.message),
                    run: false,
                }
            }
        }
    }

    /// Runs a step on `page`; a failure saves the page's screenshot and
    /// HTML.
    async fn step(&self, name: &str, page: &Arc<dyn Page>) -> Ending {
        self.recorder.step_started(name);
        let (result, took) = self.script(name, Some(page.clone()), false).await;
        self.recorder.step_ended(match &result {
            Ok(Ran {
                end: StepEnd::Continue,
                ..
            }) => "ok",
            Ok(Ran {
                end: StepEnd::Outcome(_),
                ..
            }) => "outcome",
            _ => "failed",
        });
        // As in a run: only a monitor may pause; for a step it is a failure.
        let result = result.and_then(|r| match r.end {
            StepEnd::Paused(why) => Err(StepError::failed(why)),
            end => Ok(end),
        });
        match result {
            Ok(StepEnd::Continue | StepEnd::Paused(_)) => {
                say!("ok ({took})");
                Ending::ok()
            }
            Ok(StepEnd::Outcome(o)) => {
                say!("outcome `{o}` ({took})");
                Ending {
                    end: "outcome",
                    outcome: Some(o),
                    ..Ending::ok()
                }
            }
            Err(e) => {
                say!("FAILED ({took}): {}", e.message);
                save_failure(page.as_ref(), &self.report_dir, name, self.cfg).await;
                Ending {
                    end: "error",
                    outcome: None,
                    error: Some(e.message),
                    run: true,
                }
            }
        }
    }
}

/// The browser for a dry run: the simulated one with the fixture's pages
/// (and its HTTP answers and start page), or Chromium on `profile` or a
/// throwaway one (returned, to be deleted after the browser).
type Chosen = (
    Arc<dyn Browser>,
    Option<Arc<BTreeMap<String, serde_json::Value>>>,
    Option<String>,
    Option<tempfile::TempDir>,
);

fn browser_for(
    cfg: &crate::config::Config,
    fixture: Option<&Fixture>,
    origin: &str,
    profile: Option<&Path>,
) -> Result<Chosen, Failure> {
    if let Some(f) = fixture {
        let site = f.site(origin);
        let http = site.http.clone();
        let sim = SimBrowser::new(site);
        sim.set_fixed(true);
        return Ok((
            Arc::new(sim),
            Some(Arc::new(http)),
            f.start.clone().map(|s| absolute(origin, &s)),
            None,
        ));
    }
    let (profile, tmp) = if let Some(p) = profile {
        (p.to_owned(), None)
    } else {
        let t = tempfile::Builder::new()
            .prefix("baton-dry-run-")
            .tempdir()
            .map_err(|e| Failure::runtime(format!("cannot create a temporary profile: {e}")))?;
        (t.path().to_owned(), Some(t))
    };
    let chrome = ChromeBrowser::new(cfg.browser.chrome(profile), None);
    // A profile a running baton uses is refused, never taken over.
    chrome
        .lock_profile()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    Ok((Arc::new(chrome), None, None, tmp))
}

/// The session a dry run drives: a target on an account runs in the
/// account's session, from its saved login (read only: a dry run saves
/// nothing), and never beside another process that drives the account
/// (the returned lock). Offline, nothing real is touched.
async fn account_session(
    cfg: &crate::config::Config,
    account: Option<&crate::account::Account>,
    browser: &dyn Browser,
    offline: bool,
) -> Result<(SessionId, Option<crate::account::AccountLock>), Failure> {
    let Some(a) = account else {
        return Ok((SessionId(0), None));
    };
    if offline {
        return Ok((a.session, None));
    }
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(e.to_string());
    let store = crate::account::AccountStore::new(&cfg.state_dir);
    let lock = store
        .lock(&a.id, &cfg.identity(a), crate::account::Sharing::Alone)
        .map_err(|e| runtime(&e))?;
    if let Some(saved) = store.load(&a.id).map_err(|e| runtime(&e))? {
        browser
            .seed(a.session, saved)
            .await
            .map_err(|e| runtime(&e))?;
    }
    Ok((a.session, Some(lock)))
}

/// Every script the dry run needs must be loaded: a compile error is the
/// script's own message.
fn loaded(cfg: &crate::config::Config, host: &ScriptHost, what: &What) -> Result<(), Failure> {
    let lib = host.library();
    let names: Vec<String> = match what {
        What::Script(name) => vec![name.clone()],
        What::Flow(f) => cfg
            .flows
            .get(f.as_str())
            .map(|fl| fl.scripts().map(str::to_owned).collect())
            .unwrap_or_default(),
    };
    for name in &names {
        if !lib.scripts.contains_key(name) {
            return Err(match lib.errors.get(name) {
                Some(e) => Failure::usage(e.to_string()),
                None => Failure::usage(format!(
                    "no script `{name}` in `{}`",
                    cfg.scripts_dir.display()
                )),
            });
        }
    }
    Ok(())
}

/// Whether the script is only ever a monitor: then it runs as one, with no
/// page and no browser.
fn only_a_monitor(cfg: &crate::config::Config, what: &What) -> bool {
    match what {
        What::Script(name) => {
            cfg.flows
                .values()
                .any(|f| f.monitor.as_deref() == Some(name.as_str()))
                && !cfg
                    .flows
                    .values()
                    .any(|f| f.steps.iter().any(|s| s.script == *name))
        }
        What::Flow(_) => false,
    }
}

/// The one page every step of a dry run shares, opened on first use: a
/// monitor alone never starts a browser.
struct Pages {
    browser: Arc<dyn Browser>,
    session: SessionId,
    /// Where a fixture's run starts.
    start_url: Option<String>,
    timeout: std::time::Duration,
    page: Option<Arc<dyn Page>>,
}

impl Pages {
    async fn get(&mut self) -> Result<Arc<dyn Page>, Failure> {
        if let Some(p) = &self.page {
            return Ok(p.clone());
        }
        let p = self
            .browser
            .new_page(self.session)
            .await
            .map_err(|e| Failure::runtime(e.to_string()))?;
        if let Some(u) = &self.start_url {
            p.navigate(u, self.timeout)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
        }
        self.page = Some(p.clone());
        Ok(p)
    }
}

/// Whether the run did what the fixture's `expect:` says.
fn met(
    expect: &crate::browser::sim::fixture::Expect,
    ending: &Ending,
    sink: &DrySink,
) -> Result<(), Failure> {
    let mut problems = Vec::new();
    if let Some(want) = &expect.end
        && *want != ending.end
    {
        problems.push(format!(
            "expected the run to end with `{want}`, it ended with `{}`",
            ending.end
        ));
    }
    if let Some(want) = &expect.outcome
        && ending.outcome.as_ref() != Some(want)
    {
        problems.push(format!("expected outcome `{want}`"));
    }
    if let Some(want) = &expect.error
        && !ending
            .error
            .as_ref()
            .is_some_and(|e| e.contains(want.as_str()))
    {
        problems.push(format!("expected an error containing `{want}`"));
    }
    if let Some(want) = &expect.would_commit {
        let labels = lock(&sink.labels);
        if !labels.iter().any(|l| l == want) {
            problems.push(format!("expected the run to reach commit `{want}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure::runtime(format!(
            "the fixture's expectations were not met:\n  {}",
            problems.join("\n  ")
        )))
    }
}

/// Saves the page's screenshot and HTML next to the report.
async fn save_failure(page: &dyn Page, dir: &Path, name: &str, cfg: &crate::config::Config) {
    let stamp = crate::time::format(std::time::SystemTime::now()).replace([':', '.'], "-");
    let base = dir.join(format!("{name}-{stamp}"));
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let bound = cfg.browser.timeout.min(crate::browser::CAPTURE_TIMEOUT);
    if let Ok(png) = page.screenshot(bound).await {
        let p = base.with_extension("png");
        if std::fs::write(&p, png).is_ok() {
            say!("screenshot: {}", p.display());
        }
    }
    if let Ok(html) = page.html(bound).await {
        let p = base.with_extension("html");
        if std::fs::write(&p, html).is_ok() {
            say!("page HTML:  {}", p.display());
        }
    }
}
