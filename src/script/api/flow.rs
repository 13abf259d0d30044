//! Primitives that steer the run rather than the page: `commit` and
//! `not_placed` (I9), `outcome`, `fail`, `secret`, `totp`, `log`,
//! `notify` and `sleep`.

use std::time::Duration;

use rhai::{Dynamic, FnPtr};

use super::table::{Args, Form, Param, Primitive, Section, Type};
use super::{End, R, ScriptContext, lock, ms};
use crate::flow::CommitRefused;

const MESSAGE: Param = Param("message", Type::Any);

/// The primitives that steer the run, in the reference's order.
pub(super) static PRIMITIVES: &[Primitive] = &[
    Primitive {
        name: "sleep",
        section: Section::Page,
        forms: &[Form::new(&[Param("ms", Type::Int)], Type::Unit, sleep)],
        does: "waits `ms` milliseconds (cancellable). Prefer `wait_for`: it is event-driven and returns as soon as the page is ready. Rhai's own `sleep(seconds)` is replaced: it could not be cancelled, and in a module's top level it ran while scripts compiled, so `sleep(2.5)` and a `sleep` outside a running step are errors",
        errors: "negative duration; `sleep(20.0): baton's sleep takes whole milliseconds`",
    },
    Primitive {
        name: "commit",
        section: Section::Flow,
        forms: &[Form::new(
            &[Param("label", Type::Str), Param("action", Type::Fn)],
            Type::Any,
            commit,
        )],
        does: "the point of no return (placing the order): `commit(\"place order\", || { click(\"#place\"); text(\"#order-number\") })`. Persists the target as `committing`, runs `action`, and the moment it returns persists `committed` with what it returned as the run's order (a string, `()`, or `#{ order, price }`). Inside the closure waits last until the shop answers (see [Inside commit](#inside-commit)). Refused by baton unless the last price the run observed is within the target's budget (see [the budget](#prices-and-offers)). In a dry run the closure is skipped, `()` is returned, and the trace says `would commit: LABEL`. Not available to monitors",
        errors: "outcome `over_budget` (not catchable); an error inside the closure leaves the target `in_doubt`",
    },
    Primitive {
        name: "not_placed",
        section: Section::Flow,
        forms: &[Form::new(
            &[Param("reason", Type::Str)],
            Type::Unit,
            not_placed,
        )],
        does: "inside a `commit` closure only: the shop answered with an explicit refusal (card declined, sold out at payment, invalid details), so no order exists. The run ends `failed` with outcome `not_placed` and error `the shop did not place the order: REASON`, and is retried next cycle. Not catchable",
        errors: "outside `commit`: `only allowed inside a commit(...) closure`",
    },
    Primitive {
        name: "outcome",
        section: Section::Flow,
        forms: &[Form::new(&[Param("name", Type::Str)], Type::Unit, outcome)],
        does: "ends the step with a named outcome (such as `out_of_stock`); the flow's `outcomes:` decide what it means (`retry`, `done`, `fail`; undeclared outcomes retry). Remaining steps are skipped, `always` steps still run. Not catchable",
        errors: "",
    },
    Primitive {
        name: "fail",
        section: Section::Flow,
        forms: &[Form::new(&[Param("reason", Type::Str)], Type::Unit, fail)],
        does: "fails the step with `reason`. Not catchable",
        errors: "",
    },
    Primitive {
        name: "secret",
        section: Section::Flow,
        forms: &[Form::new(&[Param("name", Type::Str)], Type::Str, secret)],
        does: "the value of a secret declared under `secrets:` in flows.yaml. The value is masked (`[redacted]`) in every log line, error message, history record, dry-run trace and dashboard response",
        errors: "`secret `x` is not declared in flows.yaml (declared: ...)`",
    },
    Primitive {
        name: "totp",
        section: Section::Flow,
        forms: &[Form::new(
            &[Param("secret_name", Type::Str)],
            Type::Str,
            totp,
        )],
        does: "the current one-time code (RFC 6238: SHA-1, 6 digits, 30 s steps, through the `totp-rs` crate) for the base32 seed held by secret `secret_name`, as an authenticator app would show it (spaces and case in the seed do not matter). The code is masked like a secret. Call it just before typing the code: it changes every 30 s",
        errors: "not declared; `the seed is not base32`",
    },
    Primitive {
        name: "notify",
        section: Section::Flow,
        forms: &[
            Form::new(&[MESSAGE], Type::Unit, notify),
            Form::new(&[Param("channel", Type::Str), MESSAGE], Type::Unit, notify),
        ],
        does: "queues a message for the channels the rules give event `script` (or for the one channel named, whatever the rules say). Secrets are masked. Never waits for delivery: the message goes through the outbox ([notifications.md](notifications.md)). Without a `notify:` section it is logged only; in a dry run it is printed with where it would go, and nothing is sent",
        errors: "an unknown channel",
    },
    Primitive {
        name: "log",
        section: Section::Flow,
        forms: &[Form::new(&[MESSAGE], Type::Unit, log)],
        does: "an INFO line in baton's log (and the dashboard's recent activity), tagged with the target and script; secrets are masked. `print` and `debug` go to the log too",
        errors: "",
    },
];

fn sleep(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let t = a.int(0)?;
    let d = ms(c, "sleep", t)?;
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
    .map(|()| Dynamic::UNIT)
}

#[expect(clippy::unnecessary_wraps, reason = "a form's function returns `R`")]
fn log(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let text = a.value(0).to_string();
    let text = c.redactor.apply(&text);
    tracing::info!(target: "baton::script", target = %c.step.target.id, script = %c.script, "{text}");
    c.trace("log", &format!("{text:?}"), Ok(""), Duration::ZERO);
    Ok(Dynamic::UNIT)
}

/// `notify(message)` or `notify(channel, message)`.
fn notify(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let (channel, msg) = if a.count() == 2 {
        (Some(a.str(0)?), a.value(1))
    } else {
        (None, a.value(0))
    };
    let text = c.redactor.apply(&msg.to_string()).into_owned();
    let args = match &channel {
        Some(ch) => format!("{ch:?}, {text:?}"),
        None => format!("{text:?}"),
    };
    let Some(n) = &c.notices else {
        tracing::warn!(target: "baton::script", target = %c.step.target.id, script = %c.script, "notify(): flows.yaml has no `notify:` section, so this goes to the log only: {text}");
        c.trace(
            "notify",
            &args,
            Ok("not sent: no notify section"),
            Duration::ZERO,
        );
        return Ok(Dynamic::UNIT);
    };
    match n.notify(c.step.target.id.as_str(), channel.as_deref(), &text) {
        Ok(said) => {
            c.trace("notify", &args, Ok(&said), Duration::ZERO);
            Ok(Dynamic::UNIT)
        }
        Err(e) => {
            c.trace("notify", &args, Err(&e.to_string()), Duration::ZERO);
            Err(c.error(format!("notify({args}): {e}")))
        }
    }
}

fn outcome(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(0)?;
    c.trace("outcome", &format!("{name:?}"), Ok(""), Duration::ZERO);
    // Masked before it is stored in state.json and history.
    Err(c.terminate(End::Step(crate::flow::StepEnd::Outcome(
        c.redactor.apply(&name).into_owned(),
    ))))
}

fn fail(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let reason = a.str(0)?;
    // A failure in the trace too, not `ok`.
    c.trace("fail", &format!("{reason:?}"), Err(&reason), Duration::ZERO);
    Err(c.terminate(End::Fail(reason.to_string())))
}

fn secret(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(0)?;
    if let Some(v) = c.secrets.get(&name) {
        c.redactor.add(v);
        c.trace(
            "secret",
            &format!("{name:?}"),
            Ok(crate::redact::MASK),
            Duration::ZERO,
        );
        return Ok(v.to_owned().into());
    }
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

fn totp(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(0)?;
    let Some(seed) = c.secrets.get(&name) else {
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
    Ok(code.into())
}

fn commit(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let label = a.str(0)?;
    let f: FnPtr = a.get(1)?;
    let Some(sink) = &c.step.commit else {
        return Err(c.error(format!(
            "commit({label:?}): not available in a monitor script"
        )));
    };
    if c.step.cancel.is_cancelled() {
        return Err(c.terminate(End::Cancelled));
    }
    let go = match sink.begin(&label) {
        Ok(go) => go,
        Err(CommitRefused::OverBudget(why)) => {
            // I11: the host said no. The run ends `over_budget` (retried
            // next cycle); the script cannot catch this.
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
    *lock(&c.in_commit) = Some(label.to_string());
    let result = f.call_within_context::<Dynamic>(a.context(), ());
    *lock(&c.in_commit) = None;
    // An error or an `outcome` ends the closure without an answer: the run
    // settles it as in doubt. `not_placed` already told the sink.
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
    sink.done(&label, shown.as_deref());
    Ok(result)
}

fn not_placed(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let reason = a.str(0)?;
    let label = lock(&c.in_commit).clone();
    let (Some(label), Some(sink)) = (label, &c.step.commit) else {
        return Err(c.error(format!(
            "not_placed({reason:?}): only allowed inside a commit(...) closure, where it tells baton the shop refused the order"
        )));
    };
    let reason = c.redactor.apply(&reason).into_owned();
    c.trace("not_placed", &format!("{reason:?}"), Ok(""), Duration::ZERO);
    sink.not_placed(&label, &reason);
    Err(c.terminate(End::NotPlaced(reason)))
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
