//! Browser-free HTTP: what monitors use to watch a shop without a page.
//!
//! - `http_get(url[, options])`: status, final URL, headers and body text,
//!   following up to [`MAX_REDIRECTS`] redirects; a body is read up to
//!   [`MAX_BODY`]. From a step it sends the cookies the run's browser
//!   session holds for the URL (so a logged-in session stays logged in);
//!   a monitor has no session and sends none. Cookies the answer sets are
//!   not stored.
//! - `http_get_json(url)`: the same request, parsed as JSON; non-2xx fails.
//! - `html(body)`: an HTML document to query with the page primitives'
//!   selector forms (`script::html`).
//!
//! Every request honours the host's pause (`script::politeness`): a monitor
//! that fetches from a paused host is skipped for the cycle without a
//! request; a step gets an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rhai::{Array, Dynamic, Engine, INT, Map};

use super::{End, Http, R, ScriptContext, doc_comments, json_to_dynamic, selectors};
use crate::browser::PageError;
use crate::script::html;
use crate::script::politeness::host_of;

/// Redirects followed before a request fails (reqwest's policy, set where
/// the client is built).
pub const MAX_REDIRECTS: usize = 10;
/// The largest body read; a larger one fails rather than filling memory.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// An answer, as `http_get` returns it.
#[derive(Clone, Debug, Default)]
struct Answer {
    status: u16,
    url: String,
    headers: BTreeMap<String, String>,
    body: String,
}

impl Answer {
    fn into_dynamic(self) -> Dynamic {
        let mut m = Map::new();
        m.insert("status".into(), INT::from(self.status).into());
        m.insert("url".into(), self.url.into());
        let headers: Map = self
            .headers
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        m.insert("headers".into(), headers.into());
        m.insert("body".into(), self.body.into());
        m.into()
    }
}

/// A parsed `html(body)`: the text, parsed again by each query (the
/// parsed trees are not `Send`, and a monitor queries a page a few times).
#[derive(Clone)]
pub struct HtmlDoc(Arc<str>);

/// A reqwest error with its causes, without the URL (which the call's
/// arguments show already, and which may carry a token in its query).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

async fn fetch(
    client: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    cookie: Option<String>,
    bound: Duration,
) -> Result<Answer, PageError> {
    let mut req = client.get(&url).timeout(bound);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(c) = cookie {
        req = req.header(reqwest::header::COOKIE, c);
    }
    let mut resp = req
        .send()
        .await
        .map_err(|e| PageError::Other(format!("request failed: {}", describe(e))))?;
    let mut answer = Answer {
        status: resp.status().as_u16(),
        url: resp.url().to_string(),
        ..Answer::default()
    };
    for (k, v) in resp.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        answer
            .headers
            .entry(k.as_str().to_owned())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(&v);
            })
            .or_insert(v);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| PageError::Other(format!("reading the body failed: {}", describe(e))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(PageError::Other(format!(
                "the body is larger than {} MB",
                MAX_BODY / (1024 * 1024)
            )));
        }
        body.extend_from_slice(&chunk);
    }
    answer.body = String::from_utf8_lossy(&body).into_owned();
    Ok(answer)
}

/// A fixture's answer: a string is the body; an object with `status`,
/// `body` or `headers` is the whole answer; anything else is a JSON body.
fn fixture_answer(url: &str, v: &serde_json::Value) -> Answer {
    let whole = v
        .as_object()
        .filter(|o| o.contains_key("status") || o.contains_key("body"));
    match (v, whole) {
        (serde_json::Value::String(s), _) => Answer {
            status: 200,
            url: url.to_owned(),
            headers: BTreeMap::new(),
            body: s.clone(),
        },
        (_, Some(o)) => Answer {
            status: o
                .get("status")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(200) as u16,
            url: url.to_owned(),
            headers: o
                .get("headers")
                .and_then(|h| h.as_object())
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.to_lowercase(), v.as_str().unwrap_or_default().into()))
                        .collect()
                })
                .unwrap_or_default(),
            body: match o.get("body") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
        },
        _ => Answer {
            status: 200,
            url: url.to_owned(),
            headers: BTreeMap::new(),
            body: v.to_string(),
        },
    }
}

impl ScriptContext {
    /// The per-host pauses, when requests are real (not a fixture's).
    pub(super) fn politeness(&self) -> Option<Arc<crate::script::politeness::Politeness>> {
        match &self.http {
            Http::Client { polite, .. } => Some(polite.clone()),
            Http::Fixture(_) => None,
        }
    }

    /// Refuses primitive `name`'s request to `host` while the host is
    /// paused: a monitor is skipped this cycle, quietly (the pause was
    /// logged once when it began); a step fails with why.
    pub(super) fn honour_pause(
        &self,
        polite: &crate::script::politeness::Politeness,
        name: &str,
        args: &str,
        host: Option<&str>,
    ) -> R<()> {
        let Some(h) = host else { return Ok(()) };
        let Err(msg) = polite.check(h) else {
            return Ok(());
        };
        self.trace(name, args, Err(&msg), Duration::ZERO);
        if self.page.is_none() {
            return Err(self.terminate(End::Step(crate::flow::StepEnd::Paused(msg))));
        }
        Err(self.error(format!("{name}({args}): {msg}")))
    }

    /// GETs `url` for primitive `name`, honouring the host's pause and
    /// recording its answer.
    fn get(&self, name: &str, args: &str, url: &str, headers: Vec<(String, String)>) -> R<Answer> {
        let bound = self.timeouts.http;
        let show = |a: &Answer| format!("HTTP {}, {} bytes", a.status, a.body.len());
        let (client, polite) = match &self.http {
            Http::Fixture(answers) => {
                let r = answers
                    .get(url)
                    .map(|v| fixture_answer(url, v))
                    .ok_or_else(|| {
                        PageError::Other(format!("the fixture has no answer for `{url}`"))
                    });
                return self.block(name, args, bound, async { r }, show);
            }
            Http::Client { client, polite } => (client.clone(), polite.clone()),
        };
        let host = host_of(url);
        self.honour_pause(&polite, name, args, host.as_deref())?;
        // The session's cookies for the URL are looked up inside the same
        // bounded, traced call; a page that cannot tell sends none.
        let page = self.page.clone();
        let url = url.to_owned();
        let answer = self.block(
            name,
            args,
            bound,
            async move {
                let cookie = match &page {
                    Some(p) => p.cookie_header(&url).await.ok().flatten(),
                    None => None,
                };
                fetch(client, url, headers, cookie, bound).await
            },
            show,
        )?;
        if let Some(h) = host_of(&answer.url).or(host) {
            polite.record(
                &h,
                answer.status,
                answer.headers.get("retry-after").map(String::as_str),
            );
        }
        Ok(answer)
    }
}

/// The `options` of `http_get`: only `headers` for now.
fn options(c: &ScriptContext, opts: &Map) -> R<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for (k, v) in opts {
        match k.as_str() {
            "headers" => {
                let Some(map) = v.clone().try_cast::<Map>() else {
                    return Err(c.error(format!(
                        "http_get: `headers` must be a map of names to strings, not a {}",
                        v.type_name()
                    )));
                };
                for (name, value) in map {
                    headers.push((name.to_string(), value.to_string()));
                }
            }
            other => {
                return Err(c.error(format!(
                    "http_get: unknown option `{other}` (known: headers)"
                )));
            }
        }
    }
    Ok(headers)
}

pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    let c = cx.clone();
    def!(
        engine,
        "http_get_json",
        &["url: &str", "?"],
        "GETs `url` and parses the body as JSON (bounded by `cycle.http_timeout`).\nFails on a non-2xx status.",
        move |url: &str| -> R<Dynamic> {
            let args = format!("{url:?}");
            let a = c.get("http_get_json", &args, url, Vec::new())?;
            if !(200..300).contains(&a.status) {
                let status = reqwest::StatusCode::from_u16(a.status)
                    .map_or_else(|_| a.status.to_string(), |s| s.to_string());
                return Err(c.error(format!("http_get_json({args}): HTTP {status}")));
            }
            let v: serde_json::Value = serde_json::from_str(&a.body).map_err(|e| {
                c.error(format!("http_get_json({args}): the body is not JSON: {e}"))
            })?;
            json_to_dynamic(&c, "http_get_json", v)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "http_get",
        &["url: &str", "map"],
        "GETs `url` without a browser (bounded by `cycle.http_timeout`, up to 10\nredirects) and returns `#{status, url, headers, body}`; any status is an\nanswer. From a step it sends the run's session cookies for the URL.",
        move |url: &str| -> R<Dynamic> {
            let args = format!("{url:?}");
            c.get("http_get", &args, url, Vec::new())
                .map(Answer::into_dynamic)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "http_get",
        &["url: &str", "options: map", "map"],
        "`http_get(url)` with options: `#{ headers: #{ \"Accept-Language\": \"en\" } }`.",
        move |url: &str, opts: Map| -> R<Dynamic> {
            let headers = options(&c, &opts)?;
            let args = format!("{url:?}, {{..}}");
            c.get("http_get", &args, url, headers)
                .map(Answer::into_dynamic)
        }
    );

    register_html(engine, cx);
}

/// `html(body)` and its queries.
fn register_html(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    engine.register_type_with_name::<HtmlDoc>("Html");
    def!(
        engine,
        "html",
        &["body: &str", "Html"],
        "Parses an HTML body (from `http_get`) to query it: `doc.exists(sel)`,\n`doc.count(sel)`, `doc.text(sel)`, `doc.attr(sel, name)`, `doc.all(sel)`.\nSelectors are CSS, `xpath:` or `text:`, or an array of fallbacks.",
        |body: &str| HtmlDoc(Arc::from(body))
    );
    // Every query: the first selector that matches anything, its matches.
    let run =
        |c: &ScriptContext, name: &str, doc: &HtmlDoc, sel: &Dynamic| -> R<Vec<html::Match>> {
            let s = selectors(c, name, sel)?;
            let found = html::query(&doc.0, &s).map_err(|e| c.error(format!("{name}: {e}")))?;
            Ok(found.map(|(_, m)| m).unwrap_or_default())
        };
    let first =
        move |c: &ScriptContext, name: &str, doc: &HtmlDoc, sel: &Dynamic| -> R<html::Match> {
            run(c, name, doc, sel)?.into_iter().next().ok_or_else(|| {
                c.error(format!(
                    "{name}({}): nothing in the HTML matches",
                    super::show_sel(sel)
                ))
            })
        };
    let c = cx.clone();
    def!(
        engine,
        "exists",
        &["doc: Html", "selector: string | array", "bool"],
        "Whether anything in the document matches.",
        move |doc: &mut HtmlDoc, sel: Dynamic| -> R<bool> {
            Ok(!run(&c, "exists", doc, &sel)?.is_empty())
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "count",
        &["doc: Html", "selector: string | array", "int"],
        "How many elements match (of the first selector that matches anything).",
        move |doc: &mut HtmlDoc, sel: Dynamic| -> R<INT> {
            Ok(run(&c, "count", doc, &sel)?.len() as INT)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "text",
        &["doc: Html", "selector: string | array", "string"],
        "The text of the first match, whitespace collapsed; an error if nothing\nmatches (check with `exists` first when absence is an answer).",
        move |doc: &mut HtmlDoc, sel: Dynamic| -> R<String> {
            first(&c, "text", doc, &sel).map(|m| m.text)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "attr",
        &["doc: Html", "selector: string | array", "name: &str", "?"],
        "An attribute of the first match, or `()` if it has none; an error if\nnothing matches.",
        move |doc: &mut HtmlDoc, sel: Dynamic, name: &str| -> R<Dynamic> {
            let m = first(&c, "attr", doc, &sel)?;
            Ok(m.attrs
                .get(name)
                .cloned()
                .map_or(Dynamic::UNIT, Dynamic::from))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "all",
        &["doc: Html", "selector: string | array", "array"],
        "Every match as `#{text, attrs}`, in document order.",
        move |doc: &mut HtmlDoc, sel: Dynamic| -> R<Array> {
            Ok(run(&c, "all", doc, &sel)?
                .into_iter()
                .map(|m| {
                    let mut map = Map::new();
                    map.insert("text".into(), m.text.into());
                    let attrs: Map = m
                        .attrs
                        .into_iter()
                        .map(|(k, v)| (k.into(), v.into()))
                        .collect();
                    map.insert("attrs".into(), attrs.into());
                    Dynamic::from(map)
                })
                .collect())
        }
    );
}
