//! The functions scripts call, and what they share: the [`ScriptContext`]
//! of one step execution, how a call blocks on the page, selector
//! arguments, tracing for dry runs.
//!
//! - [`page`]: the browser primitives on the run's page.
//! - [`flow`]: `commit`, `not_placed`, `outcome`, `fail`, `secret`, `log`,
//!   `sleep`.
//! - [`net`]: browser-free HTTP for monitors.
//! - [`price`]: offers, prices and what the run observed (I11).
//! - [`table`]: how each of them is declared once, registered, and
//!   written into the reference.
//!
//! A script runs on a blocking thread; each primitive bridges to the async
//! page with `Handle::block_on`, bounded by a timeout and raced against the
//! step's cancellation token, so a cancelled run's script stops at its next
//! primitive or, through the progress hook, at its next operation.
//! docs/scripting.md lists each primitive with its waits and errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Engine, EvalAltResult, INT, Module, Position, Shared};
use tokio::runtime::Handle;

use crate::browser::{Page, PageError, Selectors};
use crate::flow::{StepContext, StepEnd};
use crate::redact::Redactor;
use crate::secrets::Secrets;
use crate::sync::lock;

type R<T> = Result<T, Box<EvalAltResult>>;

/// Why a script stopped before its last line: the signal a primitive
/// leaves for the host when it terminates the script. An ending that is
/// not a failure is a [`StepEnd`]; the rest become a [`crate::flow::StepError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// `outcome(name)`, or a monitor's pause.
    Step(StepEnd),
    Fail(String),
    /// `not_placed(reason)` inside `commit`: the shop refused the order.
    NotPlaced(String),
    Cancelled,
}

/// One primitive call, as a dry run prints it.
#[derive(Debug)]
pub struct TracedCall<'a> {
    pub script: &'a str,
    pub name: &'a str,
    /// Arguments as Rhai would write them, secrets masked.
    pub args: &'a str,
    /// The result (or error) as text, secrets masked.
    pub result: Result<&'a str, &'a str>,
    pub took: Duration,
}

/// Receives every primitive call (the dry-run report).
pub trait Trace: Send + Sync {
    fn call(&self, call: &TracedCall<'_>);
}

/// Where `http_get` and `http_get_json` get their answers.
#[derive(Clone)]
pub enum Http {
    Client {
        client: reqwest::Client,
        /// Hosts that asked to slow down, shared by every run.
        polite: Arc<crate::script::politeness::Politeness>,
    },
    /// Answers by URL, from an offline fixture.
    Fixture(Arc<BTreeMap<String, serde_json::Value>>),
}

/// Everything the primitives of one step execution work with.
pub struct ScriptContext {
    /// The step as the run (or monitor, dry run, login check) gave it:
    /// page, target, cancellation, commit, timeouts, account.
    pub step: StepContext,
    pub script: String,
    /// The script's file as messages show it.
    pub file: String,
    pub secrets: Secrets,
    pub redactor: Arc<Redactor>,
    pub handle: Handle,
    pub http: Http,
    pub shots_dir: Option<PathBuf>,
    pub trace: Option<Arc<dyn Trace>>,
    pub end: Mutex<Option<End>>,
    /// The label of the `commit` whose closure is running, if one is.
    pub in_commit: Mutex<Option<String>>,
    /// Where `notify(..)` goes; `None` without a `notify:` section.
    pub notices: Option<Arc<dyn crate::flow::Notices>>,
    /// Where `offer()` and `observe_price()` keep what they saw; `None`
    /// keeps nothing (a dry run).
    pub observations: Option<Arc<crate::observations::Observations>>,
}

impl ScriptContext {
    /// Ends the script: not catchable by `try`/`catch`.
    fn terminate(&self, end: End) -> Box<EvalAltResult> {
        let mut slot = lock(&self.end);
        if slot.is_none() {
            *slot = Some(end);
        }
        EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
    }

    // Callers build the message in place with `format!`.
    #[allow(clippy::needless_pass_by_value)]
    fn error(&self, msg: String) -> Box<EvalAltResult> {
        EvalAltResult::ErrorRuntime(
            self.redactor.apply(&msg).into_owned().into(),
            Position::NONE,
        )
        .into()
    }

    fn trace(&self, name: &str, args: &str, result: Result<&str, &str>, took: Duration) {
        if let Some(t) = &self.trace {
            let args = self.redactor.apply(args);
            let result = match result {
                Ok(r) => Ok(self.redactor.apply(r)),
                Err(e) => Err(self.redactor.apply(e)),
            };
            t.call(&TracedCall {
                script: &self.script,
                name,
                args: &args,
                result: result
                    .as_ref()
                    .map(std::convert::AsRef::as_ref)
                    .map_err(std::convert::AsRef::as_ref),
                took,
            });
        }
    }

    /// How long an action waits by default. Inside a `commit` closure it
    /// is the time left of `commit_timeout` (at least `browser.timeout`):
    /// the closure keeps waiting for the shop's answer, which is what turns
    /// a slow order into `completed` instead of `in_doubt` (I9).
    fn action(&self) -> Duration {
        let a = self.step.timeouts.action;
        if lock(&self.in_commit).is_none() {
            return a;
        }
        match self.step.commit.as_ref().and_then(|c| c.deadline()) {
            Some(deadline) => {
                a.max(deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            None => a,
        }
    }

    fn page(&self, name: &str) -> R<Arc<dyn Page>> {
        self.step.page.clone().ok_or_else(|| {
            self.error(format!(
                "{name}: page primitives are not available in a monitor script; use http_get or http_get_json"
            ))
        })
    }

    /// Runs `fut` to completion on the runtime, bounded by `bound` and
    /// raced against cancellation, and records the call.
    fn block<T>(
        &self,
        name: &str,
        args: &str,
        bound: Duration,
        fut: impl Future<Output = Result<T, PageError>>,
        show: impl Fn(&T) -> String,
    ) -> R<T> {
        if self.step.cancel.is_cancelled() {
            self.trace(name, args, Err("cancelled"), Duration::ZERO);
            return Err(self.terminate(End::Cancelled));
        }
        let start = Instant::now();
        // The page bounds its own waits by `bound`; the outer timeout (with
        // a margin for the answer to arrive) catches a browser that hangs
        // in a way the page cannot see.
        let outer = bound + Duration::from_millis(500);
        let out = self.handle.block_on(async {
            tokio::select! {
                biased;
                () = self.step.cancel.cancelled() => None,
                r = tokio::time::timeout(outer, fut) => Some(r.unwrap_or(Err(PageError::Timeout(bound)))),
            }
        });
        let took = start.elapsed();
        match out {
            None => {
                self.trace(name, args, Err("cancelled"), took);
                Err(self.terminate(End::Cancelled))
            }
            Some(Ok(v)) => {
                self.trace(name, args, Ok(&show(&v)), took);
                Ok(v)
            }
            Some(Err(e)) => {
                let msg = format!("{name}({args}): {e}");
                self.trace(name, args, Err(&e.to_string()), took);
                Err(self.error(msg))
            }
        }
    }
}

/// A selector argument: a string, or an array of strings tried in order.
fn selectors(cx: &ScriptContext, name: &str, v: &Dynamic) -> R<Selectors> {
    if let Some(s) = v.clone().try_cast::<rhai::ImmutableString>() {
        return Ok(Selectors::one(&s));
    }
    if let Some(a) = v.clone().try_cast::<Array>() {
        let mut list = Vec::with_capacity(a.len());
        for item in a {
            match item.try_cast::<rhai::ImmutableString>() {
                Some(s) => list.push(s.to_string()),
                None => {
                    return Err(cx.error(format!(
                        "{name}: every selector in the array must be a string"
                    )));
                }
            }
        }
        if list.is_empty() {
            return Err(cx.error(format!("{name}: the selector array is empty")));
        }
        return Ok(Selectors::many(&list));
    }
    Err(cx.error(format!(
        "{name}: expected a selector (a string) or an array of selectors, got {}",
        v.type_name()
    )))
}

/// How a selector argument reads in a trace: `"#buy"` or `["#a", "#b"]`.
fn show_sel(v: &Dynamic) -> String {
    match v.clone().try_cast::<Array>() {
        Some(a) => format!(
            "[{}]",
            a.iter()
                .map(|s| format!("{:?}", s.to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("{:?}", v.to_string()),
    }
}

fn ms(cx: &ScriptContext, name: &str, ms: INT) -> R<Duration> {
    if ms < 0 {
        return Err(cx.error(format!("{name}: a duration cannot be negative ({ms} ms)")));
    }
    Ok(Duration::from_millis(ms as u64))
}

fn json_to_dynamic(cx: &ScriptContext, name: &str, v: serde_json::Value) -> R<Dynamic> {
    rhai::serde::to_dynamic(v)
        .map_err(|e| cx.error(format!("{name}: cannot convert the answer: {e}")))
}

mod flow;
pub mod net;
mod page;
pub mod price;
pub mod table;

/// Gives `engine` every primitive: the one module [`table::module`] builds
/// per process. They answer only once [`bind`] ties them to a step.
///
/// The module is registered ahead of the base engine's modules, so a
/// step's `sleep` takes the place of the compile time one; plugins
/// register into the global namespace, searched first.
pub fn register(engine: &mut Engine) {
    static PRIMITIVES: LazyLock<Shared<Module>> =
        LazyLock::new(|| table::module(primitives()).into());
    engine.register_type_with_name::<crate::script::html::Document>("Html");
    engine.register_global_module(PRIMITIVES.clone());
}

/// Ties the primitives of `engine` to the step `cx`: each call finds it
/// in the engine's default tag.
pub fn bind(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    engine.set_default_tag(Dynamic::from(cx.clone()));
}

/// Every primitive, in the order the reference lists them.
pub fn primitives() -> impl Iterator<Item = &'static table::Primitive> {
    page::PRIMITIVES
        .iter()
        .chain(flow::PRIMITIVES)
        .chain(net::PRIMITIVES)
        .chain(price::PRIMITIVES)
}
