//! A browser context's login in and out: cookies through the DevTools
//! `Storage` domain, local storage through a scratch page.
//!
//! Local storage belongs to an origin and can only be reached from a
//! document of that origin. Like Playwright, the scratch page intercepts
//! its own navigation to each origin (`Fetch`) and answers it with an empty
//! document, so no request reaches the shop, then reads or writes
//! `localStorage` there.

use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::browser::BrowserContextId;
use chromiumoxide::cdp::browser_protocol::fetch::{
    self, EventRequestPaused, FulfillRequestParams, RequestPattern, RequestStage,
};
use chromiumoxide::cdp::browser_protocol::network::{
    Cookie as CdpCookie, CookieParam, CookieSameSite, TimeSinceEpoch,
};
use chromiumoxide::cdp::browser_protocol::storage::{
    ClearCookiesParams, GetCookiesParams, SetCookiesParams,
};
use chromiumoxide::cdp::browser_protocol::target::CreateTargetParams;
use futures::StreamExt;
use serde_json::json;

use crate::browser::storage::{Cookie, Item, Origin, SameSite, StorageState};

/// The bound of each DevTools call here.
const CALL: Duration = Duration::from_secs(10);

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: timed out after {}",
            crate::time::short(CALL)
        )),
    }
}

/// Replaces the cookies of `context` (the default context if `None`) with
/// `state`'s, and writes its local storage.
pub(super) async fn apply(
    browser: &chromiumoxide::Browser,
    context: Option<&BrowserContextId>,
    state: &StorageState,
) -> Result<(), String> {
    let clear = ClearCookiesParams {
        browser_context_id: context.cloned(),
    };
    bounded("clearing cookies", browser.execute(clear)).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let state = state.clone().without_expired(now);
    if !state.cookies.is_empty() {
        let mut set = SetCookiesParams::new(state.cookies.iter().map(to_cdp).collect());
        set.browser_context_id = context.cloned();
        bounded("setting cookies", browser.execute(set)).await?;
    }
    let origins: Vec<&Origin> = state
        .origins
        .iter()
        .filter(|o| !o.local_storage.is_empty())
        .collect();
    if !origins.is_empty() {
        let names: Vec<String> = origins.iter().map(|o| o.origin.clone()).collect();
        let items: Vec<serde_json::Value> = origins
            .iter()
            .map(|o| {
                json!(
                    o.local_storage
                        .iter()
                        .map(|i| [i.name.as_str(), i.value.as_str()])
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        on_origins(browser, context, &names, |i| {
            format!(
                "(() => {{ for (const [k, v] of {}) localStorage.setItem(k, v); return []; }})()",
                items[i]
            )
        })
        .await?;
    }
    Ok(())
}

/// The cookies of `context` and the local storage of `origins`.
pub(super) async fn read(
    browser: &chromiumoxide::Browser,
    context: Option<&BrowserContextId>,
    origins: &[String],
) -> Result<StorageState, String> {
    let get = GetCookiesParams {
        browser_context_id: context.cloned(),
    };
    let cookies = bounded("reading cookies", browser.execute(get))
        .await?
        .result
        .cookies;
    let read_js = |_| {
        "Array.from({ length: localStorage.length }, (_, i) => { const k = localStorage.key(i); return [k, localStorage.getItem(k)]; })".to_owned()
    };
    let values = if origins.is_empty() {
        Vec::new()
    } else {
        on_origins(browser, context, origins, read_js).await?
    };
    let origins = origins
        .iter()
        .zip(values)
        .map(|(origin, v)| Origin {
            origin: origin.clone(),
            local_storage: serde_json::from_value::<Vec<(String, String)>>(v)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| Item { name, value })
                .collect(),
        })
        .filter(|o: &Origin| !o.local_storage.is_empty())
        .collect();
    Ok(StorageState {
        cookies: cookies.iter().map(from_cdp).collect(),
        origins,
    })
}

/// Opens a scratch page in `context`, visits each origin with its
/// navigation answered locally, evaluates `js(i)` there and collects the
/// results. The page is closed whatever happens.
async fn on_origins(
    browser: &chromiumoxide::Browser,
    context: Option<&BrowserContextId>,
    origins: &[String],
    js: impl Fn(usize) -> String,
) -> Result<Vec<serde_json::Value>, String> {
    let mut params = CreateTargetParams::new("about:blank");
    params.browser_context_id = context.cloned();
    // A background tab: nobody clicks here.
    params.background = Some(true);
    let page = bounded("opening a scratch page", browser.new_page(params)).await?;
    let result = async {
        let mut paused = bounded(
            "intercepting requests",
            page.event_listener::<EventRequestPaused>(),
        )
        .await?;
        let pattern = RequestPattern {
            url_pattern: Some("*".into()),
            resource_type: None,
            request_stage: Some(RequestStage::Request),
        };
        bounded(
            "intercepting requests",
            page.execute(fetch::EnableParams {
                patterns: Some(vec![pattern]),
                handle_auth_requests: None,
            }),
        )
        .await?;
        // Answers every request of the scratch page with an empty page.
        let answering = page.clone();
        let answer = tokio::spawn(async move {
            while let Some(ev) = paused.next().await {
                let mut ok = FulfillRequestParams::new(ev.request_id.clone(), 200);
                ok.body = Some(chromiumoxide::Binary::from(String::from(
                    // "<!doctype html><title>baton</title>", base64.
                    "PCFkb2N0eXBlIGh0bWw+PHRpdGxlPmJhdG9uPC90aXRsZT4=",
                )));
                let _ = answering.execute(ok).await;
            }
        });
        let mut out = Vec::with_capacity(origins.len());
        let mut failed = None;
        for (i, origin) in origins.iter().enumerate() {
            let url = format!("{}/", origin.trim_end_matches('/'));
            if let Err(e) = bounded("visiting an origin", page.goto(url.as_str())).await {
                failed = Some(format!("{origin}: {e}"));
                break;
            }
            match bounded("local storage", page.evaluate(js(i))).await {
                Ok(v) => out.push(v.value().cloned().unwrap_or(serde_json::Value::Null)),
                Err(e) => {
                    failed = Some(format!("{origin}: {e}"));
                    break;
                }
            }
        }
        answer.abort();
        failed.map_or(Ok(out), Err)
    }
    .await;
    let _ = tokio::time::timeout(CALL, page.close()).await;
    result
}

fn to_cdp(c: &Cookie) -> CookieParam {
    let mut p = CookieParam::new(c.name.clone(), c.value.clone());
    p.domain = Some(c.domain.clone());
    p.path = Some(c.path.clone());
    p.secure = Some(c.secure);
    p.http_only = Some(c.http_only);
    p.same_site = Some(match c.same_site {
        SameSite::Strict => CookieSameSite::Strict,
        SameSite::Lax => CookieSameSite::Lax,
        SameSite::None => CookieSameSite::None,
    });
    if c.expires > 0.0 {
        p.expires = Some(TimeSinceEpoch::new(c.expires));
    }
    p
}

fn from_cdp(c: &CdpCookie) -> Cookie {
    Cookie {
        name: c.name.clone(),
        value: c.value.clone(),
        domain: c.domain.clone(),
        path: c.path.clone(),
        expires: if c.session { -1.0 } else { c.expires },
        http_only: c.http_only,
        secure: c.secure,
        same_site: match c.same_site {
            Some(CookieSameSite::Strict) => SameSite::Strict,
            Some(CookieSameSite::None) => SameSite::None,
            _ => SameSite::Lax,
        },
    }
}
