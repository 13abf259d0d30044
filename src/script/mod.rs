//! The script host: compiles the flow scripts in `scripts/`, keeps the last
//! good version of each, and runs them against a page.
//!
//! - [`engine`]: limits, sandbox, confined imports, located errors.
//! - [`api`]: the functions scripts call.
//! - [`reload`]: the file watcher that recompiles on save.
//! - [`plugin`]: how a Rust program adds its own functions.
//!
//! Versions: every compiled script has a generation, bumped whenever its
//! source or a module it imports changes. A run pins the whole library
//! snapshot when it is dispatched ([`StepRunner::pin`]) and finishes with
//! it, whatever reloads happen meanwhile (I8, tests
//! `tests/scripting.rs::i8_a_run_keeps_its_versions_across_a_reload` and
//! `tests/safety.rs::i8_reload_never_changes_a_running_flow`). A script that
//! fails to compile never replaces its last good version.

pub mod api;
pub mod engine;
pub mod html;
pub mod plugin;
pub mod politeness;
pub mod reload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use futures::FutureExt;
use futures::future::BoxFuture;
use rhai::{AST, Dynamic, Module, Scope, Shared};
use serde::Serialize;

use crate::flow::{
    Flow, PinnedFlow, Step, StepContext, StepEnd, StepError, StepErrorKind, StepRunner, Target,
};
use crate::id::PinnedVersion;
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::secrets::Secrets;
use crate::sync::lock;
use api::{End, Http, ScriptContext, Trace};
pub use engine::ScriptError;
pub use plugin::Plugin;

/// One compiled script.
#[derive(Debug)]
pub struct Script {
    pub name: String,
    /// The file as messages show it (`scripts/checkout.rhai`).
    pub file: String,
    pub generation: u64,
    pub ast: Arc<AST>,
    pub fingerprint: u64,
    pub imports: Vec<PathBuf>,
    pub loaded_at: SystemTime,
}

/// Scripts baton carries itself, used when `scripts/` has none of that
/// name: the generic monitor of any shop that publishes schema.org offers.
pub const BUILTIN: &[(&str, &str)] = &[(
    "offer",
    "// Built in: run when the page's schema.org offer says in stock.\noffer(http_get(target.url)).in_stock\n",
)];

/// How a built-in script's file shows in messages (`(built in) offer`).
pub const BUILTIN_FILE: &str = "(built in)";

/// Whether `name` is a built-in script (see [`BUILTIN`]).
pub fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|(n, _)| *n == name)
}

/// A snapshot of every script: what runs pin.
#[derive(Debug, Default)]
pub struct Library {
    pub scripts: BTreeMap<String, Arc<Script>>,
    /// The last compile error of each script (or `lib/` module) whose
    /// newest version did not compile. The script may still have a last
    /// good version in `scripts`.
    pub errors: BTreeMap<String, ScriptError>,
}

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReloadReport {
    /// Scripts swapped in, with their new generation.
    pub changed: Vec<(String, u64)>,
    /// Scripts that failed to compile (their last good version is kept).
    pub failed: Vec<ScriptError>,
}

/// A script's version and health, for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptStatus {
    pub name: String,
    pub file: String,
    pub generation: Option<u64>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub loaded_at: Option<SystemTime>,
    pub error: Option<String>,
}

struct Inner {
    dir: PathBuf,
    std: Shared<Module>,
    library: ArcSwap<Library>,
    generation: AtomicU64,
    plugins: Vec<Arc<dyn Plugin>>,
    secrets: ArcSwap<Secrets>,
    redactor: Arc<Redactor>,
    http: reqwest::Client,
    polite: Arc<politeness::Politeness>,
    shots_dir: Option<PathBuf>,
    metrics: Option<Arc<Metrics>>,
    notices: Option<Arc<dyn crate::flow::Notices>>,
    /// Where `offer()` and `observe_price()` keep what they saw.
    observations: Option<Arc<crate::observations::Observations>>,
    /// Reloads come from the watcher thread and from commands; one at a
    /// time keeps generations in order.
    reloading: Mutex<()>,
}

impl Inner {
    /// The real network, shared by every run: one client, one set of pauses.
    fn http(&self) -> Http {
        Http::Client {
            client: self.http.clone(),
            polite: self.polite.clone(),
        }
    }
}

/// The script host. Cheap to clone.
#[derive(Clone)]
pub struct ScriptHost {
    inner: Arc<Inner>,
}

/// Builds a [`ScriptHost`].
pub struct Builder {
    dir: PathBuf,
    plugins: Vec<Arc<dyn Plugin>>,
    secrets: Secrets,
    redactor: Arc<Redactor>,
    shots_dir: Option<PathBuf>,
    metrics: Option<Arc<Metrics>>,
    notices: Option<Arc<dyn crate::flow::Notices>>,
    observations: Option<Arc<crate::observations::Observations>>,
}

impl Builder {
    /// Adds a native plugin: its functions are registered into every
    /// script's engine.
    pub fn plugin(mut self, p: Arc<dyn Plugin>) -> Builder {
        self.plugins.push(p);
        self
    }

    pub fn plugins(mut self, ps: impl IntoIterator<Item = Arc<dyn Plugin>>) -> Builder {
        self.plugins.extend(ps);
        self
    }

    pub fn secrets(mut self, s: Secrets) -> Builder {
        self.secrets = s;
        self
    }

    pub fn redactor(mut self, r: Arc<Redactor>) -> Builder {
        self.redactor = r;
        self
    }

    /// Where `screenshot(name)` writes.
    pub fn shots_dir(mut self, d: PathBuf) -> Builder {
        self.shots_dir = Some(d);
        self
    }

    pub fn metrics(mut self, m: Arc<Metrics>) -> Builder {
        self.metrics = Some(m);
        self
    }

    /// Where scripts' `notify(..)` goes.
    pub fn notices(mut self, n: Arc<dyn crate::flow::Notices>) -> Builder {
        self.notices = Some(n);
        self
    }

    /// Where the price and stock history goes (`offer()`,
    /// `observe_price()`); none kept without it (a dry run).
    pub fn observations(mut self, o: Arc<crate::observations::Observations>) -> Builder {
        self.observations = Some(o);
        self
    }

    /// Compiles every script once. Compile errors do not fail the build:
    /// they are in [`ScriptHost::library`]`.errors` for the caller to report.
    pub fn build(self) -> ScriptHost {
        let host = self.build_unloaded();
        host.reload_inner(true);
        host
    }

    /// The host, with no script compiled yet.
    fn build_unloaded(self) -> ScriptHost {
        let host = ScriptHost {
            inner: Arc::new(Inner {
                dir: self.dir,
                std: engine::standard_package(),
                library: ArcSwap::from_pointee(Library::default()),
                generation: AtomicU64::new(0),
                plugins: self.plugins,
                secrets: ArcSwap::from_pointee(self.secrets.clone()),
                redactor: self.redactor,
                http: reqwest::Client::builder()
                    .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
                    .redirect(reqwest::redirect::Policy::limited(api::net::MAX_REDIRECTS))
                    .build()
                    .unwrap_or_default(),
                polite: Arc::default(),
                shots_dir: self.shots_dir,
                metrics: self.metrics,
                notices: self.notices,
                observations: self.observations,
                reloading: Mutex::new(()),
            }),
        };
        for v in self.secrets.values() {
            host.inner.redactor.add(v);
        }
        host
    }
}

/// What a dry run (or a test) puts around a step besides its
/// [`StepContext`]: a trace of every primitive call, offline answers, and
/// its own notices. A run's steps have none of these.
#[derive(Clone, Default)]
pub struct Probe {
    pub trace: Option<Arc<dyn Trace>>,
    /// Offline answers for `http_get` and `http_get_json`; `None` to use
    /// the network.
    pub http_fixture: Option<Arc<BTreeMap<String, serde_json::Value>>>,
    /// Where `notify(..)` goes instead of the host's (a dry run's printer).
    pub notices: Option<Arc<dyn crate::flow::Notices>>,
}

impl ScriptHost {
    /// A host with no scripts that reads no directory: for a baton whose
    /// steps are not scripts (tests, benches).
    pub fn off() -> ScriptHost {
        ScriptHost::builder(PathBuf::new()).build_unloaded()
    }

    pub fn builder(dir: impl Into<PathBuf>) -> Builder {
        Builder {
            dir: dir.into(),
            plugins: Vec::new(),
            secrets: Secrets::default(),
            redactor: Arc::new(Redactor::new()),
            shots_dir: None,
            metrics: None,
            notices: None,
            observations: None,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The current library snapshot.
    pub fn library(&self) -> Arc<Library> {
        self.inner.library.load_full()
    }

    /// Replaces the secrets (after `flows.yaml` changed).
    pub fn set_secrets(&self, s: Secrets) {
        for v in s.values() {
            self.inner.redactor.add(v);
        }
        self.inner.secrets.store(Arc::new(s));
    }

    /// `secret("NAME")` calls, in the loaded scripts named by `scripts`
    /// (every one when `None`), whose NAME is not declared: each a located
    /// error, so `check` and start-up report them before a run fails.
    pub fn undeclared_secrets(&self, scripts: Option<&[String]>) -> Vec<ScriptError> {
        let lib = self.library();
        let secrets = self.inner.secrets.load();
        let declared: Vec<String> = secrets.names().map(|n| format!("`{n}`")).collect();
        let declared = if declared.is_empty() {
            "none".to_owned()
        } else {
            declared.join(", ")
        };
        let mut out = Vec::new();
        for (name, script) in &lib.scripts {
            if scripts.is_some_and(|only| !only.contains(name)) {
                continue;
            }
            for (secret, pos) in engine::secret_names(&script.ast) {
                if secrets.get(&secret).is_none() {
                    out.push(ScriptError {
                        file: script.file.clone(),
                        line: pos.line(),
                        column: pos.position(),
                        message: format!(
                            "secret `{secret}` is not declared in flows.yaml (declared: {declared})"
                        ),
                        called_from: vec![],
                    });
                }
            }
        }
        out
    }

    /// Each script's version and last error, by name.
    /// The hosts that asked baton to slow down and whose monitors are
    /// paused now (the dashboard's mark).
    pub fn slowed_hosts(&self) -> Vec<politeness::SlowHost> {
        self.inner.polite.slowed()
    }

    pub fn status(&self) -> Vec<ScriptStatus> {
        let lib = self.library();
        let mut names: Vec<&String> = lib.scripts.keys().chain(lib.errors.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|n| {
                let s = lib.scripts.get(n);
                ScriptStatus {
                    name: n.clone(),
                    file: s
                        .map(|s| s.file.clone())
                        .or_else(|| lib.errors.get(n).map(|e| e.file.clone()))
                        .unwrap_or_default(),
                    generation: s.map(|s| s.generation),
                    loaded_at: s.map(|s| s.loaded_at),
                    error: lib.errors.get(n).map(std::string::ToString::to_string),
                }
            })
            .collect()
    }

    fn display(&self, rel: &Path) -> String {
        self.inner.dir.join(rel).display().to_string()
    }

    /// Recompiles every script and swaps in those that changed and
    /// compiled. Scripts that fail keep their last good version.
    /// Puts a compiled script into `next` as a new generation, unless
    /// `old` already has this very version.
    fn install(
        &self,
        old: &Library,
        next: &mut Library,
        report: &mut ReloadReport,
        name: &str,
        file: String,
        c: engine::Compiled,
    ) {
        if old
            .scripts
            .get(name)
            .is_some_and(|s| s.fingerprint == c.fingerprint)
        {
            return;
        }
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        next.scripts.insert(
            name.to_owned(),
            Arc::new(Script {
                name: name.to_owned(),
                file,
                generation,
                ast: Arc::new(c.ast),
                fingerprint: c.fingerprint,
                imports: c.imports.into_iter().collect(),
                loaded_at: SystemTime::now(),
            }),
        );
        report.changed.push((name.to_owned(), generation));
    }

    pub fn reload(&self) -> ReloadReport {
        self.reload_inner(false)
    }

    fn reload_inner(&self, initial: bool) -> ReloadReport {
        let _one_at_a_time = lock(&self.inner.reloading);
        let old = self.inner.library.load_full();
        let mut next = Library {
            scripts: old.scripts.clone(),
            errors: BTreeMap::new(),
        };
        let mut report = ReloadReport::default();
        let (scripts, modules, refused) = list_scripts(&self.inner.dir);
        for (name, why) in refused {
            let err = ScriptError {
                file: self.display(&PathBuf::from(format!("{name}.rhai"))),
                line: None,
                column: None,
                message: why,
                called_from: vec![],
            };
            next.errors.insert(name, err.clone());
            report.failed.push(err);
        }

        for name in &scripts {
            let rel = PathBuf::from(format!("{name}.rhai"));
            let display = self.display(&rel);
            let source = match std::fs::read_to_string(self.inner.dir.join(&rel)) {
                Ok(s) => s,
                Err(e) => {
                    let err = ScriptError {
                        file: display,
                        line: None,
                        column: None,
                        message: format!("cannot read: {e}"),
                        called_from: vec![],
                    };
                    next.errors.insert(name.clone(), err.clone());
                    report.failed.push(err);
                    continue;
                }
            };
            match engine::compile(&self.inner.std, &self.inner.dir, &display, &source) {
                Ok(c) => self.install(&old, &mut next, &mut report, name, display, c),
                Err(e) => {
                    next.errors.insert(name.clone(), e.clone());
                    report.failed.push(e);
                }
            }
        }
        // Built-in scripts, unless a file of the same name replaces them.
        for (name, source) in BUILTIN {
            if scripts.iter().any(|s| s == name) {
                continue;
            }
            let display = format!("{BUILTIN_FILE} {name}");
            let c = engine::compile(&self.inner.std, &self.inner.dir, &display, source)
                .expect("a built-in script compiles");
            self.install(&old, &mut next, &mut report, name, display, c);
        }
        // A file that is gone keeps its last good version (a flow may still
        // use it), with an error saying so.
        for (name, s) in &old.scripts {
            if !scripts.contains(name) && !is_builtin(name) {
                let err = ScriptError {
                    file: s.file.clone(),
                    line: None,
                    column: None,
                    message: format!(
                        "the file is gone; generation {} stays loaded until it is back",
                        s.generation
                    ),
                    called_from: vec![],
                };
                if !old.errors.contains_key(name) {
                    report.failed.push(err.clone());
                }
                next.errors.insert(name.clone(), err);
            }
        }
        // Modules under lib/ are compiled with the scripts that import them.
        // The ones nothing imports yet are compiled here on their own, their
        // imports resolved too, so `check` reports their syntax errors and
        // import cycles before a script first imports them; the imported
        // ones get a syntax check (their import errors are their scripts').
        let imported: std::collections::BTreeSet<&PathBuf> =
            next.scripts.values().flat_map(|s| &s.imports).collect();
        for rel in &modules {
            let display = self.display(rel);
            if let Ok(source) = std::fs::read_to_string(self.inner.dir.join(rel)) {
                let checked = if imported.contains(rel) {
                    engine::base_engine(&self.inner.std)
                        .compile(&source)
                        .map(|_| ())
                        .map_err(|e| engine::parse_error(&display, &e))
                } else {
                    engine::compile(&self.inner.std, &self.inner.dir, &display, &source).map(|_| ())
                };
                if let Err(err) = checked {
                    let key = rel.with_extension("").display().to_string();
                    next.errors.insert(key, err.clone());
                    if !report.failed.contains(&err) {
                        report.failed.push(err);
                    }
                }
            }
        }

        for (name, generation) in &report.changed {
            if initial {
                tracing::debug!(script = %name, generation, "script loaded: `{name}` generation {generation}");
            } else {
                tracing::info!(script = %name, generation, "script reloaded: `{name}` generation {generation}");
            }
        }
        for e in &report.failed {
            // The first load's errors are the caller's to report; later
            // ones are reported once each.
            if initial || old.errors.values().any(|o| o == e) {
                continue;
            }
            tracing::error!("script reload failed, keeping the last good version: {e}");
        }
        if let Some(m) = &self.inner.metrics {
            for _ in &report.changed {
                m.reloaded(true);
            }
            for e in &report.failed {
                if !old.errors.values().any(|o| o == e) {
                    m.reloaded(false);
                }
            }
        }
        self.inner.library.store(Arc::new(next));
        report
    }

    /// Runs the current version of `name` once. For the dry run; runs
    /// dispatched by the scheduler use [`StepRunner::pin`].
    pub async fn run_script(
        &self,
        name: &str,
        cx: StepContext,
        probe: Probe,
    ) -> Result<Ran, StepError> {
        let lib = self.library();
        let Some(script) = lib.scripts.get(name).cloned() else {
            return Err(StepError::failed(match lib.errors.get(name) {
                Some(e) => e.to_string(),
                None => format!(
                    "script `{name}` not found in `{}`",
                    self.inner.dir.display()
                ),
            }));
        };
        execute(self.inner.clone(), script, cx, probe).await
    }

    /// Writes the script API as a Rhai definition file (for the Rhai
    /// language server) and returns it.
    pub fn definitions(&self) -> String {
        // Not the base engine: its compile-time `sleep` stand-ins are not
        // part of the API.
        let mut engine = rhai::Engine::new_raw();
        api::register(&mut engine);
        for p in &self.inner.plugins {
            p.register(&mut engine);
        }
        let mut scope = Scope::new();
        scope.push_constant("target", rhai::Map::new());
        let header = "// The baton script API, for the Rhai language server.\n// Generated by `baton defs`; see docs/scripting.md.\n\n";
        let defs = engine
            .definitions_with_scope(&scope)
            .include_standard_packages(false)
            .single_file();
        // Rhai separates its modules by blank lines, an empty one (no
        // plugins) included.
        let mut text = format!("{header}{defs}");
        while text.contains("\n\n\n") {
            text = text.replace("\n\n\n", "\n\n");
        }
        text
    }
}

/// Top-level scripts (by name), `lib/` modules (relative paths), and
/// the scripts refused because they are links to outside the directory.
///
/// Discovery stays inside `dir` the way imports do: a linked directory is
/// never entered (`scripts/lnk -> ..` made `check` walk the whole parent
/// tree), and a linked file counts only if it resolves inside `dir`.
fn list_scripts(dir: &Path) -> (Vec<String>, Vec<PathBuf>, Vec<(String, String)>) {
    let mut scripts = Vec::new();
    let mut modules = Vec::new();
    let mut refused = Vec::new();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let Ok(kind) = e.file_type() else { continue };
            let is_rhai = p.extension().is_some_and(|x| x == "rhai");
            if kind.is_dir() {
                collect_modules(dir, &p, &mut modules);
            } else if is_rhai && let Some(stem) = p.file_stem() {
                let name = stem.to_string_lossy().into_owned();
                if kind.is_symlink() && !links_inside(&p, &root) {
                    refused.push((
                        name,
                        "it is a link to outside the scripts directory; scripts must live inside it"
                            .to_owned(),
                    ));
                } else if p.is_file() {
                    scripts.push(name);
                }
            }
        }
    }
    scripts.sort();
    modules.sort();
    (scripts, modules, refused)
}

/// Whether the link `p` resolves to a file inside `root` (canonical).
fn links_inside(p: &Path, root: &Path) -> bool {
    p.canonicalize()
        .is_ok_and(|real| real.starts_with(root) && real.is_file())
}

fn collect_modules(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let Ok(kind) = e.file_type() else { continue };
        // A linked directory is not entered: it may lead outside, or back
        // up into a loop.
        if kind.is_dir() {
            collect_modules(root, &p, out);
        } else if kind.is_file()
            && p.extension().is_some_and(|x| x == "rhai")
            && let Ok(rel) = p.strip_prefix(root)
        {
            out.push(rel.to_owned());
        }
    }
}

/// The `target` constant scripts see.
fn target_map(t: &Target) -> Dynamic {
    let mut m = rhai::Map::new();
    m.insert("id".into(), t.id.as_str().into());
    m.insert("url".into(), t.url.clone().into());
    m.insert("flow".into(), t.flow.clone().into());
    let params = rhai::serde::to_dynamic(&t.params).unwrap_or_else(|_| rhai::Map::new().into());
    m.insert("params".into(), params);
    // The budget the host enforces (I11), for a script's own early check.
    m.insert(
        "max_price".into(),
        t.budget.max_f64().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m.insert(
        "currency".into(),
        t.budget
            .currency()
            .map_or(Dynamic::UNIT, |c| Dynamic::from(c.to_owned())),
    );
    m.into()
}

/// The `account` constant scripts see: its name and the names of its
/// secrets (pass them to `secret` and `totp`), or `()` for a guest run.
fn account_map(a: Option<&crate::account::Account>) -> Dynamic {
    let Some(a) = a else {
        return Dynamic::UNIT;
    };
    let name = |n: &Option<String>| n.clone().map_or(Dynamic::UNIT, Dynamic::from);
    let mut m = rhai::Map::new();
    m.insert("name".into(), a.id.as_str().into());
    m.insert("username".into(), name(&a.username));
    m.insert("password".into(), name(&a.password));
    m.insert("totp".into(), name(&a.totp));
    m.into()
}

/// How a script ended when it did not fail, with its last value when it
/// ran to the end (`()` otherwise): a monitor's verdict, what a dry run
/// prints.
#[derive(Debug, Clone)]
pub struct Ran {
    pub end: StepEnd,
    pub value: Dynamic,
}

impl Ran {
    fn ended(end: StepEnd) -> Ran {
        Ran {
            end,
            value: Dynamic::UNIT,
        }
    }
}

/// Runs `script` on a blocking thread and maps its ending.
async fn execute(
    inner: Arc<Inner>,
    script: Arc<Script>,
    step: StepContext,
    probe: Probe,
) -> Result<Ran, StepError> {
    let cancel = step.cancel.clone();
    let redactor = inner.redactor.clone();
    let file = script.file.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let cx = Arc::new(ScriptContext {
            step,
            script: script.name.clone(),
            file: script.file.clone(),
            secrets: Secrets::clone(&inner.secrets.load()),
            redactor: inner.redactor.clone(),
            handle: tokio::runtime::Handle::current(),
            http: match probe.http_fixture {
                Some(f) => Http::Fixture(f),
                None => inner.http(),
            },
            shots_dir: inner.shots_dir.clone(),
            trace: probe.trace,
            end: Mutex::new(None),
            in_commit: Mutex::new(None),
            notices: probe.notices.or_else(|| inner.notices.clone()),
            observations: inner.observations.clone(),
        });
        let mut engine = engine::base_engine(&inner.std);
        api::register(&mut engine);
        for p in &inner.plugins {
            p.register(&mut engine);
        }
        // After the plugins, so a plugin cannot unbind the primitives from
        // this step. (A plugin's function of the same name and types still
        // wins: the global namespace, where plugins register, is searched
        // first.)
        api::bind(&mut engine, &cx);
        // The progress hook runs between operations: a cancelled script
        // stops here even in `loop {}`, with no primitive to notice.
        let token = cx.step.cancel.clone();
        engine.on_progress(move |_| token.is_cancelled().then(|| Dynamic::from("cancelled")));
        let (t, s) = (cx.step.target.id.clone(), script.name.clone());
        let red = inner.redactor.clone();
        engine.on_print(move |msg| {
            tracing::info!(target: "baton::script", target = %t, script = %s, "{}", red.apply(msg));
        });
        let (t, s) = (cx.step.target.id.clone(), script.name.clone());
        let red = inner.redactor.clone();
        engine.on_debug(move |msg, _src, pos| {
            tracing::debug!(target: "baton::script", target = %t, script = %s, "{}: {}", pos, red.apply(msg));
        });
        let mut scope = Scope::new();
        scope.push_constant("target", target_map(&cx.step.target));
        scope.push_constant("account", account_map(cx.step.account.as_deref()));
        let result = engine.eval_ast_with_scope::<Dynamic>(&mut scope, &script.ast);
        let end = lock(&cx.end).take();
        (result, end)
    });
    let (result, end) = match handle.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => {
            let msg = crate::flow::panic_message(&*e.into_panic());
            return Err(StepError {
                kind: StepErrorKind::Panicked,
                message: redactor
                    .apply(&format!("{file}: panicked in a native function: {msg}"))
                    .into_owned(),
            });
        }
        Err(e) => return Err(StepError::cancelled(format!("{file}: {e}"))),
    };
    match (result, end) {
        (Ok(value), _) => Ok(Ran {
            end: StepEnd::Continue,
            value,
        }),
        (Err(_), Some(End::Step(end))) => Ok(Ran::ended(end)),
        (Err(e), Some(End::Fail(reason))) => {
            let mut se = engine::eval_error(&file, &e);
            se.message = format!("fail: {reason}");
            Err(StepError::failed(
                redactor.apply(&se.to_string()).into_owned(),
            ))
        }
        (Err(_), Some(End::NotPlaced(reason))) => Err(StepError::failed(format!(
            "{file}: not_placed: {}",
            redactor.apply(&reason)
        ))),
        (Err(_), Some(End::Cancelled)) => Err(StepError::cancelled(format!("{file}: cancelled"))),
        (Err(e), None)
            if cancel.is_cancelled() && matches!(*e, rhai::EvalAltResult::ErrorTerminated(..)) =>
        {
            Err(StepError::cancelled(format!("{file}: cancelled")))
        }
        (Err(e), None) => Err(StepError::failed(
            redactor
                .apply(&engine::eval_error(&file, &e).to_string())
                .into_owned(),
        )),
    }
}

fn step_end(r: Result<Ran, StepError>) -> Result<StepEnd, StepError> {
    match r?.end {
        // Only monitors pause; a step gets an error instead.
        StepEnd::Paused(why) => Err(StepError::failed(why)),
        end => Ok(end),
    }
}

/// A flow's scripts, pinned at the versions current at dispatch.
struct PinnedScripts {
    inner: Arc<Inner>,
    lib: Arc<Library>,
    scripts: Vec<String>,
}

impl PinnedFlow for PinnedScripts {
    fn versions(&self) -> Vec<PinnedVersion> {
        crate::flow::versions_of(&self.scripts, |s| {
            self.lib.scripts.get(s).map(|v| v.generation)
        })
    }

    fn run_step(
        &self,
        step: &Step,
        cx: StepContext,
    ) -> BoxFuture<'static, Result<StepEnd, StepError>> {
        let inner = self.inner.clone();
        let script = self.lib.scripts.get(&step.script).cloned();
        let name = step.script.clone();
        async move {
            let Some(script) = script else {
                return Err(StepError::failed(format!("script `{name}` is not loaded")));
            };
            step_end(execute(inner, script, cx, Probe::default()).await)
        }
        .boxed()
    }
}

impl StepRunner for ScriptHost {
    fn pin(&self, flow: &Flow) -> Result<Arc<dyn PinnedFlow>, StepError> {
        let lib = self.library();
        for s in flow.scripts() {
            if !lib.scripts.contains_key(s) {
                return Err(StepError::failed(match lib.errors.get(s) {
                    Some(e) => format!("script `{s}` has no version that compiles: {e}"),
                    None => format!("script `{s}` not found in `{}`", self.inner.dir.display()),
                }));
            }
        }
        Ok(Arc::new(PinnedScripts {
            inner: self.inner.clone(),
            lib,
            scripts: flow.scripts().map(str::to_owned).collect(),
        }))
    }

    fn monitor(
        &self,
        script: &str,
        cx: StepContext,
    ) -> BoxFuture<'static, Result<bool, StepError>> {
        let host = self.clone();
        let name = script.to_owned();
        async move {
            let ran = host.run_script(&name, cx, Probe::default()).await?;
            let v = match ran.end {
                StepEnd::Continue => ran.value,
                StepEnd::Outcome(o) => {
                    return Err(StepError::failed(format!(
                        "monitor `{name}` called outcome({o:?}); a monitor ends with `true` or `false`"
                    )));
                }
                StepEnd::Paused(why) => {
                    tracing::debug!(monitor = %name, "{why}: target skipped this cycle");
                    return Ok(false);
                }
            };
            v.as_bool().map_err(|t| {
                StepError::failed(format!(
                    "monitor `{name}` must end with `true` (run the target) or `false` (skip it), not a {t}"
                ))
            })
        }
        .boxed()
    }
}
