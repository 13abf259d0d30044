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

use rhai::{Array, Dynamic, INT, Map};

use super::table::{Args, Form, Param, Primitive, Section, Type};
use super::{End, Http, R, ScriptContext, json_to_dynamic, selectors};
use crate::browser::PageError;
use crate::script::html::{self, Document};
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
        let Err(paused) = polite.check(h) else {
            return Ok(());
        };
        let msg = paused.to_string();
        self.trace(name, args, Err(&msg), Duration::ZERO);
        if self.step.page.is_none() {
            return Err(self.terminate(End::Step(crate::flow::StepEnd::Paused(msg))));
        }
        Err(self.error(format!("{name}({args}): {msg}")))
    }

    /// GETs `url` for primitive `name`, honouring the host's pause and
    /// recording its answer.
    fn get(&self, name: &str, args: &str, url: &str, headers: Vec<(String, String)>) -> R<Answer> {
        let bound = self.step.timeouts.http;
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
        let page = self.step.page.clone();
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

const URL: Param = Param("url", Type::Str);
const DOC: Param = Param("doc", Type::Html);
const SEL: Param = Param("selector", Type::Selector);

/// HTTP and HTML primitives, in the reference's order.
pub(super) static PRIMITIVES: &[Primitive] = &[
    Primitive {
        name: "http_get",
        section: Section::Flow,
        forms: &[
            Form::new(&[URL], Type::Map, http_get),
            Form::new(&[URL, Param("options", Type::Map)], Type::Map, http_get),
        ],
        does: "GET without a browser: returns `#{status, url, headers, body}` (`url` after redirects, header names in lower case). Any status is an answer; bounded by `cycle.http_timeout`; up to 10 redirects; a body is read up to 16 MB. `options` may give headers: `#{ headers: #{ \"Accept-Language\": \"en\" } }`. From a step it sends the cookies the run's browser session holds for that URL (so a logged-in session stays logged in); a monitor has no session and sends none. Cookies the answer sets are not stored",
        errors: "`http_get: unknown option `x` (known: headers)`; the host is paused (429/503 with `Retry-After`); no answer within the timeout",
    },
    Primitive {
        name: "http_get_json",
        section: Section::Flow,
        forms: &[Form::new(&[URL], Type::Any, http_get_json)],
        does: "the same request, the body parsed as JSON into a Rhai value. For shops with a stock API",
        errors: "a non-2xx status (`HTTP 503 Service Unavailable`); `the body is not JSON`",
    },
    Primitive {
        name: "html",
        section: Section::Flow,
        forms: &[Form::new(&[Param("body", Type::Str)], Type::Html, html)],
        does: "parses an HTML body (HTML5, as a browser parses it) for queries with the page primitives' selectors: `doc.exists(sel)`, `doc.count(sel)`, `doc.text(sel)`, `doc.attr(sel, name)`, `doc.all(sel)`. There is no rendering, so text is the text content with whitespace collapsed, not the visible text",
        errors: "",
    },
    Primitive {
        name: "exists",
        section: Section::Html,
        forms: &[Form::new(&[DOC, SEL], Type::Bool, html_exists)],
        does: "whether anything in the document matches",
        errors: "",
    },
    Primitive {
        name: "count",
        section: Section::Html,
        forms: &[Form::new(&[DOC, SEL], Type::Int, html_count)],
        does: "how many elements match (of the first selector that matches anything)",
        errors: "",
    },
    Primitive {
        name: "text",
        section: Section::Html,
        forms: &[Form::new(&[DOC, SEL], Type::Str, html_text)],
        does: "the text of the first match, whitespace collapsed (check with `exists` first when absence is an answer)",
        errors: "`nothing in the HTML matches`",
    },
    Primitive {
        name: "attr",
        section: Section::Html,
        forms: &[Form::new(
            &[DOC, SEL, Param("name", Type::Str)],
            Type::OptStr,
            html_attr,
        )],
        does: "an attribute of the first match, or `()` if it has none",
        errors: "`nothing in the HTML matches`",
    },
    Primitive {
        name: "all",
        section: Section::Html,
        forms: &[Form::new(&[DOC, SEL], Type::Array, html_all)],
        does: "every match as `#{text, attrs}`, in document order",
        errors: "",
    },
];

fn http_get_json(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let url = a.str(0)?;
    let args = format!("{url:?}");
    let answer = c.get("http_get_json", &args, &url, Vec::new())?;
    if !(200..300).contains(&answer.status) {
        let status = reqwest::StatusCode::from_u16(answer.status)
            .map_or_else(|_| answer.status.to_string(), |s| s.to_string());
        return Err(c.error(format!("http_get_json({args}): HTTP {status}")));
    }
    let v: serde_json::Value = serde_json::from_str(&answer.body)
        .map_err(|e| c.error(format!("http_get_json({args}): the body is not JSON: {e}")))?;
    json_to_dynamic(c, "http_get_json", v)
}

/// `http_get(url)` or `http_get(url, options)`.
fn http_get(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let url = a.str(0)?;
    let (headers, args) = match a.opt::<Map>(1)? {
        Some(opts) => (options(c, &opts)?, format!("{url:?}, {{..}}")),
        None => (Vec::new(), format!("{url:?}")),
    };
    c.get("http_get", &args, &url, headers)
        .map(Answer::into_dynamic)
}

fn html(_: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let body = a.str(0)?;
    Ok(Dynamic::from(Document::new(&body)))
}

/// Every query: the first selector that matches anything, its matches.
fn query(c: &ScriptContext, a: &Args<'_, '_>, name: &str) -> R<Vec<html::Match>> {
    let doc: Document = a.get(0)?;
    let s = selectors(c, name, &a.value(1))?;
    let found = html::query(doc.text(), &s).map_err(|e| c.error(format!("{name}: {e}")))?;
    Ok(found.map(|(_, m)| m).unwrap_or_default())
}

fn first(c: &ScriptContext, a: &Args<'_, '_>, name: &str) -> R<html::Match> {
    query(c, a, name)?.into_iter().next().ok_or_else(|| {
        c.error(format!(
            "{name}({}): nothing in the HTML matches",
            super::show_sel(&a.value(1))
        ))
    })
}

fn html_exists(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    Ok((!query(c, a, "exists")?.is_empty()).into())
}

fn html_count(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    Ok((query(c, a, "count")?.len() as INT).into())
}

fn html_text(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    first(c, a, "text").map(|m| m.text.into())
}

fn html_attr(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let name = a.str(2)?;
    let m = first(c, a, "attr")?;
    Ok(m.attrs
        .get(name.as_str())
        .cloned()
        .map_or(Dynamic::UNIT, Dynamic::from))
}

fn html_all(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let all: Array = query(c, a, "all")?
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
        .collect();
    Ok(all.into())
}
