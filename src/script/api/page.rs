//! Browser primitives: navigation, waits, reads and trusted input on the
//! run's page. Each waits for its element up to `browser.timeout` (or the
//! commit's deadline inside `commit`) and is cancellable.

use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, INT};

use super::{R, ScriptContext, doc_comments, json_to_dynamic, ms, selectors, show_sel};

pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
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
}
