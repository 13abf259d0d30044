//! Browser primitives: navigation, waits, reads and trusted input on the
//! run's page. Each waits for its element up to `browser.timeout` (or the
//! commit's deadline inside `commit`) and is cancellable.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, INT};

use super::{R, ScriptContext, doc_comments, json_to_dynamic, ms, selectors, show_sel};
use crate::browser::{Cmp, Condition};

#[expect(
    clippy::too_many_lines,
    reason = "one registration per primitive; issue 27 asks for them as a table"
)]
pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    let c = cx.clone();
    def!(
        engine,
        "navigate",
        &["url: &str", "()"],
        "Loads `url` in the run's page and waits for it to load.\nBounded by `browser.timeout`. A host that answered a page load with 429 or\n503 (and `Retry-After`) is paused, as for `http_get`: loading from it fails\nuntil the pause ends.",
        move |url: &str| -> R<()> {
            let p = c.page("navigate")?;
            let a = c.action();
            let args = format!("{url:?}");
            let polite = c.politeness();
            let host = crate::script::politeness::host_of(url);
            if let Some(polite) = &polite {
                c.honour_pause(polite, "navigate", &args, host.as_deref())?;
            }
            let status = c.block(
                "navigate",
                &args,
                a,
                async {
                    p.navigate(url, a).await?;
                    Ok(p.document_status().await)
                },
                |_| String::new(),
            )?;
            if let (Some(polite), Some(h), Some((st, retry_after))) = (&polite, &host, status) {
                polite.record(h, st, retry_after.as_deref());
            }
            Ok(())
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
            c.block("reload", "", a, p.reload(a), |()| String::new())
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
        let names: Vec<String> = s.0.iter().map(std::string::ToString::to_string).collect();
        let i = c.block(
            "wait_for",
            &args,
            bound,
            p.wait_for(&s, bound),
            |i: &usize| names.get(*i).cloned().unwrap_or_default(),
        )?;
        Ok(match sel.clone().try_cast::<Array>() {
            Some(list) => list
                .get(i)
                .map(std::string::ToString::to_string)
                .unwrap_or_default(),
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

    register_waits(engine, cx);

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
            .map(|v| v.map_or(Dynamic::UNIT, Dynamic::from))
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
            c.block("click", &show_sel(&sel), a, p.click(&s, a), |()| {
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
                return c.block("fill", &args, a, p.fill_secret(&s, text, a), |()| {
                    String::new()
                });
            }
            c.block("fill", &args, a, p.fill(&s, text, a), |()| String::new())
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
            c.block("select", &args, a, p.select(&s, value, a), |()| {
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
            c.block("press", &format!("{key:?}"), a, p.press(key, a), |()| {
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
}

/// How long `wait_idle` wants the network quiet by default, as Playwright's
/// `networkidle` does.
const QUIET: Duration = Duration::from_millis(500);

/// The waits for pages that change without navigating: `wait_gone`,
/// `wait_count`, `wait_text`, `wait_until`, and `wait_idle` for the network.
#[expect(
    clippy::too_many_lines,
    reason = "one registration per primitive; issue 27 asks for them as a table"
)]
fn register_waits(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    // One body for every condition wait: the page waits on its own events
    // (a MutationObserver in Chromium), bounded and cancellable.
    let until = |c: &ScriptContext, name: &str, args: String, cond: Condition, bound: Duration| {
        let p = c.page(name)?;
        let v = c.block(name, &args, bound, p.wait_until(&cond, bound), |v| {
            v.to_string()
        })?;
        json_to_dynamic(c, name, v)
    };
    let bound = |c: &ScriptContext, name: &str, t: Option<INT>| match t {
        Some(t) => ms(c, name, t),
        None => Ok(c.action()),
    };
    let count = |c: &ScriptContext, n: INT| -> R<usize> {
        usize::try_from(n)
            .map_err(|_| c.error(format!("wait_count: a count cannot be negative ({n})")))
    };
    let cmp = |c: &ScriptContext, op: &str| -> R<Cmp> {
        Cmp::parse(op).ok_or_else(|| {
            c.error(format!(
                "wait_count: unknown comparison {op:?}; use one of ==, !=, <, <=, >, >="
            ))
        })
    };

    for timed in [false, true] {
        let c = cx.clone();
        let (params, doc): (&[&str], &str) = if timed {
            (
                &["selector: string | array", "ms: int", "()"],
                "Waits up to `ms` milliseconds until nothing matches the selector visibly.",
            )
        } else {
            (
                &["selector: string | array", "()"],
                "Waits until nothing matches the selector visibly (the element was\nremoved or hidden), up to `browser.timeout`. For a basket line removed\nby AJAX, a spinner going away.",
            )
        };
        let f = move |sel: Dynamic, t: Option<INT>| -> R<()> {
            let s = selectors(&c, "wait_gone", &sel)?;
            let b = bound(&c, "wait_gone", t)?;
            until(&c, "wait_gone", show_sel(&sel), Condition::Gone(s), b).map(drop)
        };
        if timed {
            def!(
                engine,
                "wait_gone",
                params,
                doc,
                move |sel: Dynamic, t: INT| f(sel, Some(t))
            );
        } else {
            def!(engine, "wait_gone", params, doc, move |sel: Dynamic| f(
                sel, None
            ));
        }
    }

    let c = cx.clone();
    let wait_count = move |sel: Dynamic, op: &str, n: INT, t: Option<INT>| -> R<INT> {
        let s = selectors(&c, "wait_count", &sel)?;
        let cmp = cmp(&c, op)?;
        let n = count(&c, n)?;
        let b = bound(&c, "wait_count", t)?;
        let args = format!("{}, {:?}, {n}", show_sel(&sel), cmp.as_str());
        let v = until(&c, "wait_count", args, Condition::Count(s, cmp, n), b)?;
        Ok(v.as_int().unwrap_or_default())
    };
    let f = wait_count.clone();
    def!(
        engine,
        "wait_count",
        &["selector: string | array", "n: int", "int"],
        "Waits until the selector matches exactly `n` elements (hidden ones\ncount, as in `count`); returns the count.",
        move |sel: Dynamic, n: INT| f(sel, "==", n, None)
    );
    let f = wait_count.clone();
    def!(
        engine,
        "wait_count",
        &["selector: string | array", "cmp: &str", "n: int", "int"],
        "Waits until the count compares with `n` (`cmp` is one of ==, !=, <,\n<=, >, >=); returns the count. `wait_count(\".line\", \"<\", before)`\nwaits for a removal.",
        move |sel: Dynamic, op: &str, n: INT| f(sel, op, n, None)
    );
    let f = wait_count;
    def!(
        engine,
        "wait_count",
        &[
            "selector: string | array",
            "cmp: &str",
            "n: int",
            "ms: int",
            "int"
        ],
        "`wait_count(sel, cmp, n)` bounded by `ms` milliseconds.",
        move |sel: Dynamic, op: &str, n: INT, t: INT| f(sel, op, n, Some(t))
    );

    let c = cx.clone();
    let wait_text = move |sel: Dynamic, text: &str, t: Option<INT>| -> R<String> {
        let s = selectors(&c, "wait_text", &sel)?;
        let b = bound(&c, "wait_text", t)?;
        let args = format!("{}, {text:?}", show_sel(&sel));
        let v = until(
            &c,
            "wait_text",
            args,
            Condition::Text(s, text.to_owned()),
            b,
        )?;
        Ok(v.into_string().unwrap_or_default())
    };
    let f = wait_text.clone();
    def!(
        engine,
        "wait_text",
        &["selector: string | array", "text: &str", "string"],
        "Waits until the first visible match's text contains `text`; returns\nthe whole text.",
        move |sel: Dynamic, text: &str| f(sel, text, None)
    );
    let f = wait_text;
    def!(
        engine,
        "wait_text",
        &[
            "selector: string | array",
            "text: &str",
            "ms: int",
            "string"
        ],
        "`wait_text(sel, text)` bounded by `ms` milliseconds.",
        move |sel: Dynamic, text: &str, t: INT| f(sel, text, Some(t))
    );

    let c = cx.clone();
    let wait_until = move |js: &str, t: Option<INT>| -> R<Dynamic> {
        let b = bound(&c, "wait_until", t)?;
        until(
            &c,
            "wait_until",
            format!("{js:?}"),
            Condition::Js(js.to_owned()),
            b,
        )
    };
    let f = wait_until.clone();
    def!(
        engine,
        "wait_until",
        &["js: &str", "?"],
        "Waits until a JavaScript expression is truthy, re-checked on every\nchange of the page; returns its value. `wait_until(\"window.cartReady\")`",
        move |js: &str| f(js, None)
    );
    let f = wait_until;
    def!(
        engine,
        "wait_until",
        &["js: &str", "ms: int", "?"],
        "`wait_until(js)` bounded by `ms` milliseconds.",
        move |js: &str, t: INT| f(js, Some(t))
    );

    let c = cx.clone();
    let wait_idle = move |quiet: Duration| -> R<()> {
        let p = c.page("wait_idle")?;
        let a = c.action();
        c.block(
            "wait_idle",
            &quiet.as_millis().to_string(),
            a,
            p.network_idle(quiet, a),
            |()| String::new(),
        )
    };
    let f = wait_idle.clone();
    def!(
        engine,
        "wait_idle",
        &["()"],
        "Waits until the page has had no request in flight for 500 ms (late\nscripts, AJAX), up to `browser.timeout`. Returns at once on a page that\nis already quiet.",
        move || f(QUIET)
    );
    let c = cx.clone();
    let f = wait_idle;
    def!(
        engine,
        "wait_idle",
        &["quiet_ms: int", "()"],
        "Waits until no request has been in flight for `quiet_ms` milliseconds.",
        move |t: INT| {
            let quiet = ms(&c, "wait_idle", t)?;
            f(quiet)
        }
    );
}
