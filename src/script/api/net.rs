//! Browser-free HTTP: what monitors use to watch a shop without a page.

use std::sync::Arc;

use rhai::{Dynamic, Engine};

use super::{Http, R, ScriptContext, doc_comments, json_to_dynamic};
use crate::browser::PageError;

pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
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
}

/// A reqwest error without the URL (which may carry a token in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s.replace(u.as_str(), "<url>");
    }
    s
}
