//! Browser primitives: navigation, waits, reads and trusted input on the
//! run's page. Each waits for its element up to `browser.timeout` (or the
//! commit's deadline inside `commit`) and is cancellable.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, INT};

use super::table::{Args, Form, Param, Primitive, Section, Type};
use super::{R, ScriptContext, json_to_dynamic, ms, selectors, show_sel};
use crate::browser::{Cmp, Condition, Page, Selectors};

const SEL: Param = Param("selector", Type::Selector);
const MS: Param = Param("ms", Type::Int);

/// The page primitives, in the reference's order.
pub(super) static PRIMITIVES: &[Primitive] = &[
    Primitive {
        name: "navigate",
        section: Section::Page,
        forms: &[Form::new(&[Param("url", Type::Str)], Type::Unit, navigate)],
        does: "loads `url` and waits for its `load` event. A host that answered a page load with 429 or 503 (and `Retry-After`) is paused, as for `http_get`: loading from it fails until the pause ends",
        errors: "`navigation to `…` failed: …` (bad URL, refused, not loaded within the timeout)",
    },
    Primitive {
        name: "reload",
        section: Section::Page,
        forms: &[Form::new(&[], Type::Unit, reload)],
        does: "reloads and waits for `load`",
        errors: "as `navigate`",
    },
    Primitive {
        name: "url",
        section: Section::Page,
        forms: &[Form::new(&[], Type::Str, url)],
        does: "the current URL",
        errors: "",
    },
    Primitive {
        name: "title",
        section: Section::Page,
        forms: &[Form::new(&[], Type::Str, title)],
        does: "the document title",
        errors: "",
    },
    Primitive {
        name: "wait_for",
        section: Section::Page,
        forms: &[
            Form::new(&[SEL], Type::Str, wait_for),
            Form::new(&[SEL, MS], Type::Str, wait_for),
        ],
        does: "waits until it is visible, up to `browser.timeout` (or `ms`); returns the selector (of an array, the one) that matched",
        errors: "`selector `#x` not found within 10000ms`",
    },
    Primitive {
        name: "wait_gone",
        section: Section::Page,
        forms: &[
            Form::new(&[SEL], Type::Unit, wait_gone),
            Form::new(&[SEL, MS], Type::Unit, wait_gone),
        ],
        does: "waits until nothing matches visibly (removed or hidden): a basket line removed by AJAX, a spinner going away",
        errors: "`waited 10000ms for selector `.x` to be gone, but it still matches 1 element(s)`",
    },
    Primitive {
        name: "wait_count",
        section: Section::Page,
        forms: &[
            Form::new(&[SEL, Param("n", Type::Int)], Type::Int, wait_count),
            Form::new(
                &[SEL, Param("cmp", Type::Str), Param("n", Type::Int)],
                Type::Int,
                wait_count,
            ),
            Form::new(
                &[SEL, Param("cmp", Type::Str), Param("n", Type::Int), MS],
                Type::Int,
                wait_count,
            ),
        ],
        does: "waits until it matches exactly `n` elements (hidden ones count, as in `count`), or until the count compares with `n` by `cmp`: `\"==\"`, `\"!=\"`, `\"<\"`, `\"<=\"`, `\">\"`, `\">=\"` (`wait_count(\".line\", \"<\", before)` waits for a removal); returns the count",
        errors: "`..., but it matches 2 element(s), wanted == 1`; `unknown comparison \"=~\"`",
    },
    Primitive {
        name: "wait_text",
        section: Section::Page,
        forms: &[
            Form::new(&[SEL, Param("text", Type::Str)], Type::Str, wait_text),
            Form::new(&[SEL, Param("text", Type::Str), MS], Type::Str, wait_text),
        ],
        does: "waits until the first visible match's text contains `text`; returns the whole text",
        errors: "`..., but it has the text \"Processing\"`",
    },
    Primitive {
        name: "wait_until",
        section: Section::Page,
        forms: &[
            Form::new(&[Param("js", Type::Str)], Type::Any, wait_until),
            Form::new(&[Param("js", Type::Str), MS], Type::Any, wait_until),
        ],
        does: "waits until a JavaScript expression is truthy, re-checked on every change of the page; returns its value. `wait_until(\"window.cartReady\")`",
        errors: "`..., but it is still null`; `javascript error: ...`",
    },
    Primitive {
        name: "wait_idle",
        section: Section::Page,
        forms: &[
            Form::new(&[], Type::Unit, wait_idle),
            Form::new(&[Param("quiet_ms", Type::Int)], Type::Unit, wait_idle),
        ],
        does: "waits until no request has been in flight for 500 ms (or `quiet_ms`), up to `browser.timeout`; returns at once when the page is already quiet. Event streams and WebSockets are not counted; a page that polls without pause (long-polling, analytics beacons every few hundred ms) is never quiet, so there wait for what the page sets instead",
        errors: "`..., but it still has requests in flight (URL, ...)`",
    },
    Primitive {
        name: "exists",
        section: Section::Page,
        forms: &[Form::new(&[SEL], Type::Bool, exists)],
        does: "whether it matches now (does not wait)",
        errors: "",
    },
    Primitive {
        name: "count",
        section: Section::Page,
        forms: &[Form::new(&[SEL], Type::Int, count)],
        does: "how many elements the first selector that matches anything matches now; 0 if none (does not wait)",
        errors: "",
    },
    Primitive {
        name: "text",
        section: Section::Page,
        forms: &[Form::new(&[SEL], Type::Str, text)],
        does: "the element's visible text, trimmed; waits for it",
        errors: "not found",
    },
    Primitive {
        name: "attr",
        section: Section::Page,
        forms: &[Form::new(
            &[SEL, Param("name", Type::Str)],
            Type::OptStr,
            attr,
        )],
        does: "an attribute of the first matching element, `()` if absent; waits for the element",
        errors: "not found",
    },
    Primitive {
        name: "value",
        section: Section::Page,
        forms: &[Form::new(&[SEL], Type::Str, value)],
        does: "a form field's value; waits for it",
        errors: "not found; `element `…` is not a form field`",
    },
    Primitive {
        name: "click",
        section: Section::Page,
        forms: &[Form::new(&[SEL], Type::Unit, click)],
        does: "waits for the element, scrolls it into view and clicks its centre with trusted mouse events",
        errors: "not found; `element `…` was found but it is disabled` / `it is covered by div#overlay`",
    },
    Primitive {
        name: "fill",
        section: Section::Page,
        forms: &[Form::new(
            &[SEL, Param("text", Type::Str)],
            Type::Unit,
            fill,
        )],
        does: "waits for the field, focuses it, clears it, types `text` (trusted input). A field filled with a secret is masked in every screenshot",
        errors: "not found; `element `…` is not a text field`",
    },
    Primitive {
        name: "select",
        section: Section::Page,
        forms: &[Form::new(
            &[SEL, Param("value", Type::Str)],
            Type::Unit,
            select,
        )],
        does: "chooses the `<select>` option with that value or label",
        errors: "`option `XL` not found in `#size``",
    },
    Primitive {
        name: "press",
        section: Section::Page,
        forms: &[Form::new(&[Param("key", Type::Str)], Type::Unit, press)],
        does: "presses a key in the focused element: `\"Enter\"`, `\"Tab\"`, `\"Escape\"`, `\"a\"`",
        errors: "`unknown key`",
    },
    Primitive {
        name: "js",
        section: Section::Page,
        forms: &[Form::new(&[Param("code", Type::Str)], Type::Any, js)],
        does: "evaluates JavaScript in the page, awaits a promise, returns the result as a Rhai value",
        errors: "`javascript error: …`",
    },
    Primitive {
        name: "screenshot",
        section: Section::Page,
        forms: &[Form::new(
            &[Param("name", Type::Str)],
            Type::Str,
            screenshot,
        )],
        does: "saves a PNG under the state directory's `shots/` (`r12-name.png`); returns the path",
        errors: "`cannot write …`",
    },
];

fn unit(_: ()) -> Dynamic {
    Dynamic::UNIT
}

fn navigate(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let url = a.str(0)?;
    let p = c.page("navigate")?;
    let bound = c.action();
    let args = format!("{url:?}");
    let polite = c.politeness();
    let host = crate::script::politeness::host_of(&url);
    if let Some(polite) = &polite {
        c.honour_pause(polite, "navigate", &args, host.as_deref())?;
    }
    let status = c.block(
        "navigate",
        &args,
        bound,
        async {
            p.navigate(&url, bound).await?;
            Ok(p.document_status().await)
        },
        |_| String::new(),
    )?;
    if let (Some(polite), Some(h), Some((st, retry_after))) = (&polite, &host, status) {
        polite.record(h, st, retry_after.as_deref());
    }
    Ok(Dynamic::UNIT)
}

fn reload(c: &ScriptContext, _: &Args<'_, '_>) -> R<Dynamic> {
    let p = c.page("reload")?;
    let bound = c.action();
    c.block("reload", "", bound, p.reload(bound), |()| String::new())
        .map(unit)
}

fn url(c: &ScriptContext, _: &Args<'_, '_>) -> R<Dynamic> {
    let p = c.page("url")?;
    c.block("url", "", c.action(), p.url(), |v: &String| {
        format!("{v:?}")
    })
    .map(Dynamic::from)
}

fn title(c: &ScriptContext, _: &Args<'_, '_>) -> R<Dynamic> {
    let p = c.page("title")?;
    c.block("title", "", c.action(), p.title(), |v: &String| {
        format!("{v:?}")
    })
    .map(Dynamic::from)
}

/// A wait's bound: argument `i` in milliseconds when the call has it,
/// else the action timeout.
fn bound(c: &ScriptContext, a: &Args<'_, '_>, name: &str, i: usize) -> R<Duration> {
    match a.opt::<INT>(i)? {
        Some(t) => ms(c, name, t),
        None => Ok(c.action()),
    }
}

fn wait_for(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let sel = a.value(0);
    let bound = bound(c, a, "wait_for", 1)?;
    let p = c.page("wait_for")?;
    let s = selectors(c, "wait_for", &sel)?;
    let names: Vec<String> = s.0.iter().map(std::string::ToString::to_string).collect();
    let i = c.block(
        "wait_for",
        &show_sel(&sel),
        bound,
        p.wait_for(&s, bound),
        |i: &usize| names.get(*i).cloned().unwrap_or_default(),
    )?;
    Ok(match sel.clone().try_cast::<Array>() {
        Some(list) => list.get(i).map(ToString::to_string).unwrap_or_default(),
        None => sel.to_string(),
    }
    .into())
}

/// One body for every condition wait: the page waits on its own events
/// (a `MutationObserver` in Chromium), bounded and cancellable.
fn until(
    c: &ScriptContext,
    name: &str,
    args: &str,
    cond: &Condition,
    bound: Duration,
) -> R<Dynamic> {
    let p = c.page(name)?;
    let v = c.block(name, args, bound, p.wait_until(cond, bound), |v| {
        v.to_string()
    })?;
    json_to_dynamic(c, name, v)
}

fn wait_gone(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let sel = a.value(0);
    let s = selectors(c, "wait_gone", &sel)?;
    let b = bound(c, a, "wait_gone", 1)?;
    until(c, "wait_gone", &show_sel(&sel), &Condition::Gone(s), b).map(|_| Dynamic::UNIT)
}

fn wait_count(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    // `wait_count(sel, n)` or `wait_count(sel, cmp, n[, ms])`.
    let (op, n, b) = if a.count() == 2 {
        ("==".into(), a.int(1)?, c.action())
    } else {
        (a.str(1)?, a.int(2)?, bound(c, a, "wait_count", 3)?)
    };
    let sel = a.value(0);
    let s = selectors(c, "wait_count", &sel)?;
    let cmp = Cmp::parse(&op).ok_or_else(|| {
        c.error(format!(
            "wait_count: unknown comparison {op:?}; use one of ==, !=, <, <=, >, >="
        ))
    })?;
    let n = usize::try_from(n)
        .map_err(|_| c.error(format!("wait_count: a count cannot be negative ({n})")))?;
    let args = format!("{}, {:?}, {n}", show_sel(&sel), cmp.as_str());
    let v = until(c, "wait_count", &args, &Condition::Count(s, cmp, n), b)?;
    Ok(v.as_int().unwrap_or_default().into())
}

fn wait_text(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let sel = a.value(0);
    let text = a.str(1)?;
    let s = selectors(c, "wait_text", &sel)?;
    let b = bound(c, a, "wait_text", 2)?;
    let args = format!("{}, {text:?}", show_sel(&sel));
    let v = until(
        c,
        "wait_text",
        &args,
        &Condition::Text(s, text.to_string()),
        b,
    )?;
    Ok(v.into_string().unwrap_or_default().into())
}

fn wait_until(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let js = a.str(0)?;
    let b = bound(c, a, "wait_until", 1)?;
    until(
        c,
        "wait_until",
        &format!("{js:?}"),
        &Condition::Js(js.to_string()),
        b,
    )
}

/// How long `wait_idle` wants the network quiet by default, as Playwright's
/// `networkidle` does.
const QUIET: Duration = Duration::from_millis(500);

fn wait_idle(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let quiet = match a.opt::<INT>(0)? {
        Some(t) => ms(c, "wait_idle", t)?,
        None => QUIET,
    };
    let p = c.page("wait_idle")?;
    let bound = c.action();
    c.block(
        "wait_idle",
        &quiet.as_millis().to_string(),
        bound,
        p.network_idle(quiet, bound),
        |()| String::new(),
    )
    .map(unit)
}

/// What a primitive on an element starts from: the page, the selector
/// argument (the first), the wait's bound and the selector as the trace
/// shows it.
struct On {
    page: Arc<dyn Page>,
    sel: Selectors,
    bound: Duration,
    shown: String,
}

fn on(c: &ScriptContext, a: &Args<'_, '_>, name: &str) -> R<On> {
    let v = a.value(0);
    let page = c.page(name)?;
    let sel = selectors(c, name, &v)?;
    Ok(On {
        page,
        sel,
        bound: c.action(),
        shown: show_sel(&v),
    })
}

fn exists(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "exists")?;
    c.block("exists", &shown, bound, page.exists(&sel), |b| {
        b.to_string()
    })
    .map(Dynamic::from)
}

fn count(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "count")?;
    c.block(
        "count",
        &shown,
        bound,
        page.count(&sel),
        ToString::to_string,
    )
    .map(|n| (n as INT).into())
}

fn text(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "text")?;
    c.block("text", &shown, bound, page.text(&sel, bound), |v| {
        format!("{v:?}")
    })
    .map(Dynamic::from)
}

fn attr(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(1)?;
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "attr")?;
    let args = format!("{shown}, {name:?}");
    c.block("attr", &args, bound, page.attr(&sel, &name, bound), |v| {
        format!("{v:?}")
    })
    .map(|v| v.map_or(Dynamic::UNIT, Dynamic::from))
}

fn value(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "value")?;
    c.block("value", &shown, bound, page.value(&sel, bound), |v| {
        format!("{v:?}")
    })
    .map(Dynamic::from)
}

fn click(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "click")?;
    c.block("click", &shown, bound, page.click(&sel, bound), |()| {
        String::new()
    })
    .map(unit)
}

fn fill(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let text = a.str(1)?;
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "fill")?;
    let args = format!("{shown}, {text:?}");
    let filled = if c.redactor.holds_secret(&text) {
        // Marked in the page, so every screenshot masks the field.
        c.block(
            "fill",
            &args,
            bound,
            page.fill_secret(&sel, &text, bound),
            |()| String::new(),
        )
    } else {
        c.block("fill", &args, bound, page.fill(&sel, &text, bound), |()| {
            String::new()
        })
    };
    filled.map(unit)
}

fn select(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let value = a.str(1)?;
    let On {
        page,
        sel,
        bound,
        shown,
    } = on(c, a, "select")?;
    let args = format!("{shown}, {value:?}");
    c.block(
        "select",
        &args,
        bound,
        page.select(&sel, &value, bound),
        |()| String::new(),
    )
    .map(unit)
}

fn press(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let key = a.str(0)?;
    let p = c.page("press")?;
    let bound = c.action();
    c.block(
        "press",
        &format!("{key:?}"),
        bound,
        p.press(&key, bound),
        |()| String::new(),
    )
    .map(unit)
}

fn js(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let code = a.str(0)?;
    let p = c.page("js")?;
    let bound = c.action();
    let v = c.block(
        "js",
        &format!("{code:?}"),
        bound,
        p.eval(&code, bound),
        |v: &serde_json::Value| v.to_string(),
    )?;
    json_to_dynamic(c, "js", v)
}

fn screenshot(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(0)?;
    let p = c.page("screenshot")?;
    let bound = c.action();
    let png = c.block(
        "screenshot",
        &format!("{name:?}"),
        bound,
        p.screenshot(bound),
        |v: &Vec<u8>| format!("{} bytes", v.len()),
    )?;
    let Some(dir) = &c.shots_dir else {
        return Ok(String::new().into());
    };
    // A name that holds a secret must not put it in a file name.
    let safe: String = c
        .redactor
        .apply(&name)
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{}-{safe}.png", c.step.label));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, png))
        .map_err(|e| {
            c.error(format!(
                "screenshot({name:?}): cannot write `{}`: {e}",
                path.display()
            ))
        })?;
    Ok(path.display().to_string().into())
}
