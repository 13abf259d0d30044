//! Primitives that steer the run rather than the page: `commit` and
//! `not_placed` (I9), `outcome`, `fail`, `secret`, `totp`, `log`,
//! `notify` and `sleep`.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Dynamic, Engine, FnPtr, INT, NativeCallContext};

use super::{End, R, ScriptContext, doc_comments, lock, ms};
use crate::flow::CommitRefused;

#[expect(
    clippy::too_many_lines,
    reason = "one registration per primitive; issue 27 asks for them as a table"
)]
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
    for with_channel in [false, true] {
        let c = cx.clone();
        let send = move |channel: Option<&str>, msg: &Dynamic| -> R<()> {
            let text = c.redactor.apply(&msg.to_string()).into_owned();
            let args = match channel {
                Some(ch) => format!("{ch:?}, {text:?}"),
                None => format!("{text:?}"),
            };
            let Some(n) = &c.notices else {
                tracing::warn!(target: "baton::script", target = %c.target.id, script = %c.script, "notify(): flows.yaml has no `notify:` section, so this goes to the log only: {text}");
                c.trace(
                    "notify",
                    &args,
                    Ok("not sent: no notify section"),
                    Duration::ZERO,
                );
                return Ok(());
            };
            match n.notify(c.target.id.as_str(), channel, &text) {
                Ok(said) => {
                    c.trace("notify", &args, Ok(&said), Duration::ZERO);
                    Ok(())
                }
                Err(e) => {
                    c.trace("notify", &args, Err(&e.to_string()), Duration::ZERO);
                    Err(c.error(format!("notify({args}): {e}")))
                }
            }
        };
        if with_channel {
            def!(
                engine,
                "notify",
                &["channel: &str", "message: ?", "()"],
                "Sends `message` to one channel of `notify.channels`, whatever the rules\nsay. Queued, never waited for; a dry run only prints it.",
                move |channel: &str, msg: Dynamic| -> R<()> { send(Some(channel), &msg) }
            );
        } else {
            def!(
                engine,
                "notify",
                &["message: ?", "()"],
                "Sends `message` to the channels the rules give event `script` (secrets\nare masked). Queued, never waited for; a dry run only prints it.",
                move |msg: Dynamic| -> R<()> { send(None, &msg) }
            );
        }
    }
    let c = cx.clone();
    def!(
        engine,
        "outcome",
        &["name: &str", "()"],
        "Ends the step with a named outcome (such as `out_of_stock`) that the flow\nbranches on: the remaining steps are skipped, `always` steps still run.",
        move |name: &str| -> R<()> {
            c.trace("outcome", &format!("{name:?}"), Ok(""), Duration::ZERO);
            // Masked before it is stored in state.json and history.
            Err(c.terminate(End::Step(crate::flow::StepEnd::Outcome(
                c.redactor.apply(name).into_owned(),
            ))))
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
        "totp",
        &["secret_name: &str", "string"],
        "The current one-time code (RFC 6238: SHA-1, 6 digits, 30 s) for the TOTP\nseed held by secret `secret_name` (base32, as authenticator apps show it).\nThe code is masked like the secret.",
        move |name: &str| -> R<String> {
            let Some(seed) = c.secrets.get(name) else {
                return Err(c.error(format!(
                    "totp({name:?}): secret `{name}` is not declared in flows.yaml"
                )));
            };
            c.redactor.add(seed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let code = totp_code(seed, now).map_err(|e| c.error(format!("totp({name:?}): {e}")))?;
            c.redactor.add(&code);
            c.trace(
                "totp",
                &format!("{name:?}"),
                Ok(crate::redact::MASK),
                Duration::ZERO,
            );
            Ok(code)
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
            let go = match sink.begin(label) {
                Ok(go) => go,
                Err(CommitRefused::OverBudget(why)) => {
                    // I11: the host said no. The run ends `over_budget`
                    // (retried next cycle); the script cannot catch this.
                    let why = why.to_string();
                    c.trace("commit", &format!("{label:?}"), Err(&why), Duration::ZERO);
                    return Err(c.terminate(End::Step(crate::flow::StepEnd::Outcome(
                        crate::budget::OVER_BUDGET.into(),
                    ))));
                }
                Err(e) => return Err(c.error(format!("commit({label:?}): {e}"))),
            };
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
            // The order number, or a map with the order and its price.
            let (order, price) = match result.read_lock::<rhai::Map>() {
                Some(m) => (
                    m.get("order").filter(|v| !v.is_unit()).cloned(),
                    m.get("price").filter(|v| !v.is_unit()).cloned(),
                ),
                None => ((!result.is_unit()).then(|| result.clone()), None),
            };
            if let Some(p) = price {
                sink.priced(&c.redactor.apply(&p.to_string()));
            }
            let shown = order.map(|o| c.redactor.apply(&o.to_string()).into_owned());
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

/// The RFC 6238 code (SHA-1, 6 digits, 30 s steps) of a base32 `seed` at
/// `unix_time`. Spaces and case in the seed are ignored, as authenticator
/// apps show it in groups.
pub(super) fn totp_code(seed: &str, unix_time: u64) -> Result<String, String> {
    let seed: String = seed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let secret = totp_rs::Secret::try_from_base32(seed.trim_end_matches('='))
        .map_err(|_| "the seed is not base32 (letters A-Z and digits 2-7)".to_owned())?;
    // Shops hand out 80-bit seeds too, below RFC 4226's recommended 128.
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .build_noncompliant();
    Ok(totp.generate(unix_time).to_string())
}

#[cfg(test)]
mod tests {
    use super::totp_code;

    /// RFC 6238 appendix B, SHA-1 (the 8-digit codes end in these 6).
    #[test]
    fn rfc_6238_vectors() {
        let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(totp_code(seed, 59).unwrap(), "287082");
        assert_eq!(totp_code(seed, 1_111_111_109).unwrap(), "081804");
        assert_eq!(totp_code(seed, 2_000_000_000).unwrap(), "279037");
        assert_eq!(
            totp_code("gezd gnbv gy3t qojq gezd gnbv gy3t qojq", 59).unwrap(),
            "287082"
        );
        assert!(totp_code("not base32!", 59).is_err());
    }
}
