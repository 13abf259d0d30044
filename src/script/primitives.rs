//! The functions scripts call: browser primitives on the run's page, and
//! `commit`, `secret`, `outcome`, `fail`, `log`, `http_get_json`, `sleep`.
//!
//! A script runs on a blocking thread; each primitive bridges to the async
//! page with `Handle::block_on`, bounded by a timeout and raced against the
//! step's cancellation token, so a cancelled run's script stops at its next
//! primitive or, through the progress hook, at its next operation.
//! docs/scripting.md lists each primitive with its waits and errors.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, FuncRegistration, INT, NativeCallContext,
    Position,
};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::browser::{Page, PageError, Selectors};
use crate::config::Secrets;
use crate::flow::{CommitSink, Target, Timeouts};
use crate::redact::Redactor;

type R<T> = Result<T, Box<EvalAltResult>>;

/// How a script asked to end, or was made to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Outcome(String),
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

/// Where `http_get_json` gets its answers.
#[derive(Clone)]
pub enum Http {
    Client(reqwest::Client),
    /// Answers by URL, from an offline fixture.
    Fixture(Arc<BTreeMap<String, serde_json::Value>>),
}

/// Everything the primitives of one step execution work with.
pub struct ScriptContext {
    pub script: String,
    /// The script's file as messages show it.
    pub file: String,
    /// `None` for monitors, which get no page.
    pub page: Option<Arc<dyn Page>>,
    pub target: Arc<Target>,
    pub cancel: CancellationToken,
    /// `None` for monitors: they cannot commit.
    pub commit: Option<Arc<dyn CommitSink>>,
    pub timeouts: Timeouts,
    pub secrets: Secrets,
    pub redactor: Arc<Redactor>,
    /// `None` only for the engine that exports definitions.
    pub handle: Option<Handle>,
    pub http: Http,
    pub shots_dir: Option<PathBuf>,
    /// File name prefix for screenshots (the run id, or `dry-run`).
    pub shot_prefix: String,
    pub trace: Option<Arc<dyn Trace>>,
    pub end: Mutex<Option<End>>,
    /// The label of the `commit` whose closure is running, if one is.
    pub in_commit: Mutex<Option<String>>,
}

impl ScriptContext {
    /// Ends the script: not catchable by `try`/`catch`.
    fn terminate(&self, end: End) -> Box<EvalAltResult> {
        let mut slot = self.end.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(end);
        }
        EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
    }

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
                result: result.as_ref().map(|c| c.as_ref()).map_err(|c| c.as_ref()),
                took,
            });
        }
    }

    /// How long an action waits by default. Inside a `commit` closure it
    /// is the time left of `commit_timeout` (at least `browser.timeout`):
    /// the closure keeps waiting for the shop's answer, which is what turns
    /// a slow order into `completed` instead of `in_doubt` (I9).
    fn action(&self) -> Duration {
        let a = self.timeouts.action;
        if lock(&self.in_commit).is_none() {
            return a;
        }
        match self.commit.as_ref().and_then(|c| c.deadline()) {
            Some(deadline) => {
                a.max(deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            None => a,
        }
    }

    fn page(&self, name: &str) -> R<Arc<dyn Page>> {
        self.page.clone().ok_or_else(|| {
            self.error(format!(
                "{name}: page primitives are not available in a monitor script; use http_get_json"
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
        if self.cancel.is_cancelled() {
            self.trace(name, args, Err("cancelled"), Duration::ZERO);
            return Err(self.terminate(End::Cancelled));
        }
        let Some(handle) = &self.handle else {
            return Err(self.error(format!("{name}: no runtime")));
        };
        let start = Instant::now();
        // The page bounds its own waits by `bound`; the outer timeout (with
        // a margin for the answer to arrive) catches a browser that hangs
        // in a way the page cannot see.
        let outer = bound + Duration::from_millis(500);
        let out = handle.block_on(async {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => None,
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

/// `///` doc comments for the definitions file editors read.
fn doc_comments(doc: &str) -> String {
    doc.lines()
        .map(|l| format!("/// {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Registers a function with its signature and doc comment. A macro, not a
/// function, because the registration is generic over Rhai's internal
/// function traits.
macro_rules! def {
    ($engine:expr, $name:expr, $params:expr, $doc:expr, $f:expr) => {
        FuncRegistration::new($name)
            .with_volatility(true)
            .with_params_info($params)
            .with_comments([doc_comments($doc).as_str()])
            .register_into_engine($engine, $f)
    };
}

/// Registers every primitive into `engine`, bound to `cx`.
pub fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    let c = cx.clone();
    def!(
        engine,
        "navigate",
        &["url: &str", "()"],
        "Loads `url` in the run's page and waits for it to load.\nBounded by `browser.timeout`.",
        move |url: &str| -> R<()> {
            let p = c.page("navigate")?;
            let a = c.action();
            c.block(
                "navigate",
                &format!("{url:?}"),
                a,
                p.navigate(url, a),
                |_| String::new(),
            )
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "reload",
        &["()"],
        "Reloads the page and waits for it to load.",
        move || -> R<()> {
            let p = c.page("reload")?;
            let a = c.action();
            c.block("reload", "", a, p.reload(a), |_| String::new())
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "url",
        &["string"],
        "The page's current URL.",
        move || -> R<String> {
            let p = c.page("url")?;
            let a = c.action();
            c.block("url", "", a, p.url(), |v: &String| format!("{v:?}"))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "title",
        &["string"],
        "The page's title.",
        move || -> R<String> {
            let p = c.page("title")?;
            let a = c.action();
            c.block("title", "", a, p.title(), |v: &String| format!("{v:?}"))
        }
    );

    let wait_for = |c: Arc<ScriptContext>, sel: Dynamic, bound: Duration| -> R<String> {
        let p = c.page("wait_for")?;
        let s = selectors(&c, "wait_for", &sel)?;
        let args = show_sel(&sel);
        let names: Vec<String> = s.0.iter().map(|x| x.to_string()).collect();
        let i = c.block(
            "wait_for",
            &args,
            bound,
            p.wait_for(&s, bound),
            |i: &usize| names.get(*i).cloned().unwrap_or_default(),
        )?;
        Ok(match sel.clone().try_cast::<Array>() {
            Some(list) => list.get(i).map(|v| v.to_string()).unwrap_or_default(),
            None => sel.to_string(),
        })
    };
    let c = cx.clone();
    def!(
        engine,
        "wait_for",
        &["selector: string | array", "string"],
        "Waits until the selector (or the first of an array of selectors) matches,\nup to `browser.timeout`; returns the selector that matched.",
        move |sel: Dynamic| wait_for(c.clone(), sel, c.action())
    );
    let c = cx.clone();
    def!(
        engine,
        "wait_for",
        &["selector: string | array", "ms: int", "string"],
        "Waits up to `ms` milliseconds for the selector; returns the selector that matched.",
        move |sel: Dynamic, t: INT| {
            let bound = ms(&c, "wait_for", t)?;
            wait_for(c.clone(), sel, bound)
        }
    );

    let c = cx.clone();
    def!(
        engine,
        "exists",
        &["selector: string | array", "bool"],
        "Whether the selector matches now (does not wait).",
        move |sel: Dynamic| -> R<bool> {
            let p = c.page("exists")?;
            let a = c.action();
            let s = selectors(&c, "exists", &sel)?;
            c.block("exists", &show_sel(&sel), a, p.exists(&s), |b: &bool| {
                b.to_string()
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "count",
        &["selector: string | array", "int"],
        "How many elements the selector matches now (does not wait).",
        move |sel: Dynamic| -> R<INT> {
            let p = c.page("count")?;
            let a = c.action();
            let s = selectors(&c, "count", &sel)?;
            c.block("count", &show_sel(&sel), a, p.count(&s), |n: &usize| {
                n.to_string()
            })
            .map(|n| n as INT)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "text",
        &["selector: string | array", "string"],
        "The visible text of the first matching element, trimmed; waits for it.",
        move |sel: Dynamic| -> R<String> {
            let p = c.page("text")?;
            let a = c.action();
            let s = selectors(&c, "text", &sel)?;
            c.block("text", &show_sel(&sel), a, p.text(&s, a), |v: &String| {
                format!("{v:?}")
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "attr",
        &["selector: string | array", "name: &str", "?"],
        "An attribute of the first matching element, or `()` if it has none; waits for the element.",
        move |sel: Dynamic, name: &str| -> R<Dynamic> {
            let p = c.page("attr")?;
            let a = c.action();
            let s = selectors(&c, "attr", &sel)?;
            let args = format!("{}, {name:?}", show_sel(&sel));
            c.block(
                "attr",
                &args,
                a,
                p.attr(&s, name, a),
                |v: &Option<String>| format!("{v:?}"),
            )
            .map(|v| v.map(Dynamic::from).unwrap_or(Dynamic::UNIT))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "value",
        &["selector: string | array", "string"],
        "The value of the first matching form field; waits for it.",
        move |sel: Dynamic| -> R<String> {
            let p = c.page("value")?;
            let a = c.action();
            let s = selectors(&c, "value", &sel)?;
            c.block("value", &show_sel(&sel), a, p.value(&s, a), |v: &String| {
                format!("{v:?}")
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "click",
        &["selector: string | array", "()"],
        "Waits for the element, scrolls it into view and clicks it with a real\n(trusted) mouse click.",
        move |sel: Dynamic| -> R<()> {
            let p = c.page("click")?;
            let a = c.action();
            let s = selectors(&c, "click", &sel)?;
            c.block("click", &show_sel(&sel), a, p.click(&s, a), |_| {
                String::new()
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "fill",
        &["selector: string | array", "text: &str", "()"],
        "Waits for the field, clears it and types `text` into it.",
        move |sel: Dynamic, text: &str| -> R<()> {
            let p = c.page("fill")?;
            let a = c.action();
            let s = selectors(&c, "fill", &sel)?;
            let args = format!("{}, {text:?}", show_sel(&sel));
            if c.redactor.holds_secret(text) {
                // Marked in the page, so every screenshot masks the field.
                return c.block("fill", &args, a, p.fill_secret(&s, text, a), |_| {
                    String::new()
                });
            }
            c.block("fill", &args, a, p.fill(&s, text, a), |_| String::new())
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "select",
        &["selector: string | array", "value: &str", "()"],
        "Chooses the option with this value (or label) in a `<select>`.",
        move |sel: Dynamic, value: &str| -> R<()> {
            let p = c.page("select")?;
            let a = c.action();
            let s = selectors(&c, "select", &sel)?;
            let args = format!("{}, {value:?}", show_sel(&sel));
            c.block("select", &args, a, p.select(&s, value, a), |_| {
                String::new()
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "press",
        &["key: &str", "()"],
        "Presses a key (`Enter`, `Tab`, `Escape`, `a`, ...) in the focused element.",
        move |key: &str| -> R<()> {
            let p = c.page("press")?;
            let a = c.action();
            c.block("press", &format!("{key:?}"), a, p.press(key, a), |_| {
                String::new()
            })
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "js",
        &["code: &str", "?"],
        "Evaluates JavaScript in the page (awaiting a promise) and returns the\nresult as a Rhai value.",
        move |code: &str| -> R<Dynamic> {
            let p = c.page("js")?;
            let a = c.action();
            let v = c.block(
                "js",
                &format!("{code:?}"),
                a,
                p.eval(code, a),
                |v: &serde_json::Value| v.to_string(),
            )?;
            json_to_dynamic(&c, "js", v)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "screenshot",
        &["name: &str", "string"],
        "Saves a PNG of the page under the state directory's `shots/`; returns its path.",
        move |name: &str| -> R<String> {
            let p = c.page("screenshot")?;
            let a = c.action();
            let png = c.block(
                "screenshot",
                &format!("{name:?}"),
                a,
                p.screenshot(a),
                |v: &Vec<u8>| format!("{} bytes", v.len()),
            )?;
            let Some(dir) = &c.shots_dir else {
                return Ok(String::new());
            };
            // A name that holds a secret must not put it in a file name.
            let safe: String = c
                .redactor
                .apply(name)
                .chars()
                .map(|ch| {
                    if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                        ch
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{}-{safe}.png", c.shot_prefix));
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, png))
                .map_err(|e| {
                    c.error(format!(
                        "screenshot({name:?}): cannot write `{}`: {e}",
                        path.display()
                    ))
                })?;
            Ok(path.display().to_string())
        }
    );

    let c = cx.clone();
    def!(
        engine,
        "sleep",
        &["ms: int", "()"],
        "Waits `ms` milliseconds (cancellable). Prefer `wait_for`: it is\nevent-driven and returns as soon as the page is ready.",
        move |t: INT| -> R<()> {
            let d = ms(&c, "sleep", t)?;
            c.block(
                "sleep",
                &t.to_string(),
                d,
                async {
                    tokio::time::sleep(d).await;
                    Ok(())
                },
                |_| String::new(),
            )
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "log",
        &["message: ?", "()"],
        "Writes a line to baton's log (secrets are masked).",
        move |msg: Dynamic| {
            let text = msg.to_string();
            let text = c.redactor.apply(&text);
            tracing::info!(target: "baton::script", target = %c.target.id, script = %c.script, "{text}");
            c.trace("log", &format!("{text:?}"), Ok(""), Duration::ZERO);
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "http_get_json",
        &["url: &str", "?"],
        "GETs `url` and parses the body as JSON (bounded by `cycle.http_timeout`).\nFails on a non-2xx status.",
        move |url: &str| -> R<Dynamic> {
            let bound = c.timeouts.http;
            let args = format!("{url:?}");
            let v = match &c.http {
                Http::Fixture(answers) => {
                    let r = answers.get(url).cloned().ok_or_else(|| {
                        PageError::Other(format!("the fixture has no answer for `{url}`"))
                    });
                    c.block(
                        "http_get_json",
                        &args,
                        bound,
                        async { r },
                        |v: &serde_json::Value| v.to_string(),
                    )?
                }
                Http::Client(client) => {
                    let req = client.get(url).timeout(bound);
                    c.block(
                        "http_get_json",
                        &args,
                        bound,
                        async move {
                            let resp = req.send().await.map_err(|e| {
                                PageError::Other(format!("request failed: {}", without_url(&e)))
                            })?;
                            let status = resp.status();
                            if !status.is_success() {
                                return Err(PageError::Other(format!("HTTP {status}")));
                            }
                            resp.json::<serde_json::Value>().await.map_err(|e| {
                                PageError::Other(format!(
                                    "the body is not JSON: {}",
                                    without_url(&e)
                                ))
                            })
                        },
                        |v: &serde_json::Value| v.to_string(),
                    )?
                }
            };
            json_to_dynamic(&c, "http_get_json", v)
        }
    );

    let c = cx.clone();
    def!(
        engine,
        "outcome",
        &["name: &str", "()"],
        "Ends the step with a named outcome (such as `out_of_stock`) that the flow\nbranches on: the remaining steps are skipped, `always` steps still run.",
        move |name: &str| -> R<()> {
            c.trace("outcome", &format!("{name:?}"), Ok(""), Duration::ZERO);
            // Masked before it is stored in state.json and history.
            Err(c.terminate(End::Outcome(c.redactor.apply(name).into_owned())))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "fail",
        &["reason: &str", "()"],
        "Fails the step with `reason` (not catchable).",
        move |reason: &str| -> R<()> {
            c.trace("fail", &format!("{reason:?}"), Ok(""), Duration::ZERO);
            Err(c.terminate(End::Fail(reason.to_owned())))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "secret",
        &["name: &str", "string"],
        "The value of a secret declared under `secrets:` in flows.yaml. It is masked\nin every log line, error and record.",
        move |name: &str| -> R<String> {
            match c.secrets.get(name) {
                Some(v) => {
                    c.redactor.add(v);
                    c.trace(
                        "secret",
                        &format!("{name:?}"),
                        Ok(crate::redact::MASK),
                        Duration::ZERO,
                    );
                    Ok(v.to_owned())
                }
                None => {
                    let declared: Vec<_> = c.secrets.names().map(|n| format!("`{n}`")).collect();
                    let declared = if declared.is_empty() {
                        "none".to_owned()
                    } else {
                        declared.join(", ")
                    };
                    Err(c.error(format!(
                        "secret `{name}` is not declared in flows.yaml (declared: {declared})"
                    )))
                }
            }
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "commit",
        &["label: &str", "action: Fn", "?"],
        "The point of no return. Persists the target as `committing`, then runs\n`action` and records what it returns (the order number). In a dry run\n`action` is skipped and `()` returned.",
        move |ctx: NativeCallContext<'_>, label: &str, f: FnPtr| -> R<Dynamic> {
            let Some(sink) = &c.commit else {
                return Err(c.error(format!(
                    "commit({label:?}): not available in a monitor script"
                )));
            };
            if c.cancel.is_cancelled() {
                return Err(c.terminate(End::Cancelled));
            }
            let go = sink
                .begin(label)
                .map_err(|e| c.error(format!("commit({label:?}): {e}")))?;
            if !go {
                c.trace(
                    "commit",
                    &format!("{label:?}"),
                    Ok("skipped (dry run): would commit"),
                    Duration::ZERO,
                );
                return Ok(Dynamic::UNIT);
            }
            c.trace(
                "commit",
                &format!("{label:?}"),
                Ok("committing"),
                Duration::ZERO,
            );
            *lock(&c.in_commit) = Some(label.to_owned());
            let result = f.call_within_context::<Dynamic>(&ctx, ());
            *lock(&c.in_commit) = None;
            // An error or an `outcome` ends the closure without an answer:
            // the run settles it as in doubt. `not_placed` already told the
            // sink.
            let result = result?;
            let shown = if result.is_unit() {
                None
            } else {
                Some(c.redactor.apply(&result.to_string()).into_owned())
            };
            sink.done(label, shown.as_deref());
            Ok(result)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "not_placed",
        &["reason: &str", "()"],
        "Inside `commit` only: the shop answered with an explicit refusal (card\ndeclined, sold out at payment), so no order exists. The run ends `failed`\nwith `reason` and is retried next cycle. Any other error inside `commit`\nleaves the target `in_doubt`.",
        move |reason: &str| -> R<()> {
            let label = lock(&c.in_commit).clone();
            let (Some(label), Some(sink)) = (label, &c.commit) else {
                return Err(c.error(format!(
                    "not_placed({reason:?}): only allowed inside a commit(...) closure, where it tells baton the shop refused the order"
                )));
            };
            let reason = c.redactor.apply(reason).into_owned();
            c.trace("not_placed", &format!("{reason:?}"), Ok(""), Duration::ZERO);
            sink.not_placed(&label, &reason);
            Err(c.terminate(End::NotPlaced(reason)))
        }
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A reqwest error without the URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}
