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
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Failure, Signals, load};
use crate::browser::chrome::ChromeBrowser;
use crate::browser::sim::SimBrowser;
use crate::browser::sim::fixture::{Fixture, absolute, origin};
use crate::browser::{Browser, Page};
use crate::flow::CommitSink;
use crate::flow::{StepEnd, StepError};
use crate::id::SessionId;
use crate::script::api::{Trace, TracedCall};
use crate::script::{Plugin, Ran, ScriptHost, ScriptRun};

/// What to dry-run.
pub enum What {
    /// One script, as a path or a name.
    Script(String),
    /// A whole flow: its monitor, then its steps in order in one page.
    Flow(String),
}

pub struct Args {
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
        self.out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }
}

/// `commit` in a dry run: report, skip.
#[derive(Default)]
struct DrySink {
    labels: Mutex<Vec<String>>,
}

impl CommitSink for DrySink {
    fn begin(&self, label: &str) -> Result<bool, String> {
        say!("          would commit: {label} (skipped in a dry run)");
        self.labels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(label.to_owned());
        Ok(false)
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

pub async fn run(args: Args) -> Result<(), Failure> {
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
    let lib = host.library();
    let names: Vec<String> = match &what {
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
    // A script that is only ever a monitor runs as one: no page, no
    // browser.
    let is_monitor = match &what {
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
    };

    let stop = CancellationToken::new();
    let mut shop = None;
    let mut target = (*target).clone();
    let fixture = if let Some(path) = &args.offline {
        let f = Fixture::load(path).map_err(Failure::usage)?;
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
    // A live run's throwaway profile, deleted when this function returns
    // (after the browser is shut down).
    let mut _profile_tmp = None;

    let (browser, http_fixture, start_url): (Arc<dyn Browser>, _, _) = if let Some(f) =
        fixture.as_ref()
    {
        let site = f.site(&origin);
        let http = site.http.clone();
        let sim = SimBrowser::new(site);
        sim.set_fixed(true);
        (
            Arc::new(sim),
            Some(Arc::new(http)),
            f.start.clone().map(|s| absolute(&origin, &s)),
        )
    } else {
        let profile = if let Some(p) = &args.profile {
            p.clone()
        } else {
            let t = tempfile::Builder::new()
                .prefix("baton-dry-run-")
                .tempdir()
                .map_err(|e| Failure::runtime(format!("cannot create a temporary profile: {e}")))?;
            let p = t.path().to_owned();
            _profile_tmp = Some(t);
            p
        };
        let chrome = ChromeBrowser::new(cfg.browser.chrome(profile), None);
        // A profile a running baton uses is refused, never taken over.
        chrome
            .lock_profile()
            .map_err(|e| Failure::runtime(e.to_string()))?;
        (Arc::new(chrome), None, None)
    };

    // A target on an account runs in the account's session, from its saved
    // login (read only: a dry run saves nothing), and never beside another
    // process that drives the account.
    let account = cfg.account_of(&target).cloned();
    let mut _account_lock = None;
    let session = match &account {
        Some(a) => {
            if fixture.is_none() {
                let store = crate::account::AccountStore::new(&cfg.state_dir);
                _account_lock = Some(
                    store
                        .lock(&a.id)
                        .map_err(|e| Failure::runtime(e.to_string()))?,
                );
                if let Some(saved) = store
                    .load(&a.id)
                    .map_err(|e| Failure::runtime(e.to_string()))?
                {
                    browser
                        .seed(a.session, saved)
                        .await
                        .map_err(|e| Failure::runtime(e.to_string()))?;
                }
            }
            a.session
        }
        None => SessionId(0),
    };

    let printer = Arc::new(Printer {
        start: Instant::now(),
        out: Mutex::new(Vec::new()),
    });
    let sink = Arc::new(DrySink::default());
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
    };
    // Opens the one page every step of the run shares, on first use: a
    // monitor alone never starts a browser.
    let mut page: Option<Arc<dyn Page>> = None;
    let open = async |page: &mut Option<Arc<dyn Page>>| -> Result<Arc<dyn Page>, Failure> {
        if let Some(p) = page {
            return Ok(p.clone());
        }
        let p = browser
            .new_page(session)
            .await
            .map_err(|e| Failure::runtime(e.to_string()))?;
        if let Some(u) = &start_url {
            p.navigate(u, cfg.browser.timeout)
                .await
                .map_err(|e| Failure::runtime(e.to_string()))?;
        }
        *page = Some(p.clone());
        Ok(p)
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
                let p = open(&mut page).await?;
                cx.step(name, &p).await
            }
        }
        What::Flow(flow_name) => {
            let flow = cfg.flows.get(flow_name.as_str()).cloned().ok_or_else(|| {
                let known: Vec<_> = cfg.flows.keys().map(|f| format!("`{f}`")).collect();
                Failure::usage(format!(
                    "unknown flow `{flow_name}` (flows in {}: {})",
                    cfg.file.display(),
                    known.join(", ")
                ))
            })?;
            say!(
                "dry run of flow `{flow_name}` for target `{}`{offline}",
                target.id
            );
            let mut ending = Ending::ok();
            let mut run = true;
            if let Some(m) = &flow.monitor {
                say!("== monitor `{m}`");
                let e = cx.monitor(m).await;
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
                    let p = open(&mut page).await?;
                    let e = cx.step(&step.script, &p).await;
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
            ending
        }
    };
    on_signal.abort();

    if let Some(p) = page {
        p.close().await;
    }
    browser.shutdown().await;
    stop.cancel();
    if let Some(s) = shop {
        let _ = s.task.await;
    }

    if let Some(expect) = fixture.and_then(|f| f.expect) {
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
            let labels = sink
                .labels
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !labels.iter().any(|l| l == want) {
                problems.push(format!("expected the run to reach commit `{want}`"));
            }
        }
        if !problems.is_empty() {
            return Err(Failure::runtime(format!(
                "the fixture's expectations were not met:\n  {}",
                problems.join("\n  ")
            )));
        }
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
                ScriptRun {
                    page,
                    target: self.target.clone(),
                    cancel: self.cancel.clone(),
                    commit: if monitor {
                        None
                    } else {
                        Some(self.sink.clone() as Arc<dyn CommitSink>)
                    },
                    timeouts: self.cfg.timeouts(),
                    shot_prefix: name.to_owned(),
                    trace: Some(self.printer.clone()),
                    http_fixture: self.http_fixture.clone(),
                    account: self.account.clone(),
                },
            )
            .await;
        (result, crate::time::short(started.elapsed()))
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
        let (result, took) = self.script(name, Some(page.clone()), false).await;
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

/// Saves the page's screenshot and HTML next to the report.
async fn save_failure(page: &dyn Page, dir: &Path, name: &str, cfg: &crate::config::Config) {
    let stamp = crate::time::format(std::time::SystemTime::now()).replace([':', '.'], "-");
    let base = dir.join(format!("{name}-{stamp}"));
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    let bound = cfg.browser.timeout.min(Duration::from_secs(10));
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
