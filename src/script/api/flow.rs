//! Primitives that steer the run rather than the page: `commit` and
//! `not_placed` (I9), `outcome`, `fail`, `secret`, `log` and `sleep`.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, FnPtr, INT, NativeCallContext};

use super::{End, R, ScriptContext, doc_comments, lock, ms};

pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
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
                |()| String::new(),
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
            // A failure in the trace too, not `ok`.
            c.trace("fail", &format!("{reason:?}"), Err(reason), Duration::ZERO);
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
            if let Some(v) = c.secrets.get(name) {
                c.redactor.add(v);
                c.trace(
                    "secret",
                    &format!("{name:?}"),
                    Ok(crate::redact::MASK),
                    Duration::ZERO,
                );
                Ok(v.to_owned())
            } else {
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
