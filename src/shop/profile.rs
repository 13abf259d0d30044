//! The demo shop's page profiles. `light` (the default) serves small
//! self-contained pages: what the safety tests need, but it flatters
//! every speed figure. `realistic` makes each page cost what a real
//! storefront's does, for the benchmarks:
//!
//! - server think time before each HTML page (a template rendered from a
//!   database, 40 ms) and each asset (5 ms);
//! - page weight: a stylesheet (~90 KB) and a vendor script (~280 KB) in
//!   the head, a parser-blocking script as themes load theirs, an app script
//!   that runs late (`defer`) and does work on load, and three product
//!   images (~40 KB each);
//! - assets cacheable for five minutes, as shops serve them, so a second
//!   visit is cheaper than the first (a browser that keeps its cache
//!   between runs benefits, one that does not, pays);
//! - the noise of a real storefront: a tracking pixel that answers 404 and
//!   an app script that logs a console error (a consent banner nobody
//!   configured), which run traces must show and flows must shrug off.
//!
//! The checkout's pages, the AJAX basket with late-bound handlers and the
//! card frame are the same in both profiles: they are the shop's own.

use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::Shop;

/// How heavy the shop's pages are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    #[default]
    Light,
    Realistic,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s {
            "light" => Some(Profile::Light),
            "realistic" => Some(Profile::Realistic),
            _ => None,
        }
    }
}

/// Server time for an HTML page and for an asset, in the realistic profile.
pub const PAGE_THINK: Duration = Duration::from_millis(40);
pub const ASSET_THINK: Duration = Duration::from_millis(5);

/// The tags a realistic page gets in its head and at the end of its body.
const HEAD: &str =
    r#"<link rel="stylesheet" href="/assets/site.css"><script src="/assets/vendor.js"></script>"#;
const TAIL: &str = r#"<div class="gallery"><img src="/assets/img-1.svg" alt="" width="120" height="90"><img src="/assets/img-2.svg" alt="" width="120" height="90"><img src="/assets/img-3.svg" alt="" width="120" height="90"></div><img src="/assets/pixel.gif" alt="" width="1" height="1"><script src="/assets/app.js" defer></script>"#;

/// Adds the realistic profile's server time and page weight to HTML pages.
pub(super) async fn apply(State(shop): State<Shop>, req: Request, next: Next) -> Response {
    if shop.profile() != Profile::Realistic || req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    let is_asset = req.uri().path().starts_with("/assets/");
    tokio::time::sleep(if is_asset { ASSET_THINK } else { PAGE_THINK }).await;
    let resp = next.run(req).await;
    let html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_asset || !html {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let text = String::from_utf8_lossy(&bytes)
        .replacen("</head>", &format!("{HEAD}</head>"), 1)
        .replacen("</body>", &format!("{TAIL}</body>"), 1);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// `GET /assets/NAME`: the realistic profile's stylesheet, scripts and
/// images, cacheable for five minutes.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    let (kind, body): (&str, &'static str) = match name.as_str() {
        "site.css" => ("text/css", css()),
        "vendor.js" => ("text/javascript", vendor_js()),
        "app.js" => ("text/javascript", APP_JS),
        "img-1.svg" | "img-2.svg" | "img-3.svg" => ("image/svg+xml", svg()),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

fn css() -> &'static str {
    static CSS: OnceLock<String> = OnceLock::new();
    CSS.get_or_init(|| {
        // Rules as a theme ships them: most match nothing on the page, but
        // every one is parsed, and the few that match are styled.
        (0..1500u64)
            .map(|i| {
                format!(
                    ".c{i} .item-{i}:not(.hidden)>a{{margin:{}px {}px;color:#{:06x};transition:opacity .2s}}\n",
                    i % 13,
                    i % 7,
                    (i * 2_654_435) % 0xff_ffff
                )
            })
            .collect::<String>()
            + ".gallery img{border:1px solid #ddd;margin:4px}\n"
    })
}

fn vendor_js() -> &'static str {
    static JS: OnceLock<String> = OnceLock::new();
    JS.get_or_init(|| {
        // A library's worth of functions, parsed and compiled on every
        // page that does not have it cached, and a little run at load.
        let mut js = String::from("(function(){var lib={};\n");
        for i in 0..2800 {
            js.push_str(&format!(
                "lib.f{i}=function(a,b){{var s=0;for(var k=0;k<(a|0)%7;k++){{s+=(k*{i})^(b|0);}}return s+'{i}'.length;}};\n"
            ));
        }
        js.push_str("var t=0;for(var j=0;j<400;j++){t+=lib['f'+j](j,j+1);}window.__vendor=t;})();\n");
        js
    })
}

/// Runs after the document is parsed, as a shop's app bundle does: it
/// walks the page and decorates links.
const APP_JS: &str = r#"(function(){
  var n=0;
  document.querySelectorAll('a,button,input').forEach(function(el){ el.dataset.seen='1'; n++; });
  window.__app=n;
  console.error('analytics: no consent recorded; beacon not sent');
})();
"#;

fn svg() -> &'static str {
    static SVG: OnceLock<String> = OnceLock::new();
    SVG.get_or_init(|| {
        let mut s = String::from(r#"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="90" viewBox="0 0 120 90">"#);
        for i in 0..700u64 {
            s.push_str(&format!(
                r##"<rect x="{}" y="{}" width="3" height="3" fill="#{:06x}"/>"##,
                (i * 7) % 120,
                (i * 11) % 90,
                (i * 40_503) % 0xff_ffff
            ));
        }
        s.push_str("</svg>");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_weigh_what_a_real_shops_do() {
        assert!(css().len() > 80_000, "{}", css().len());
        assert!(vendor_js().len() > 250_000, "{}", vendor_js().len());
        assert!(svg().len() > 30_000, "{}", svg().len());
    }
}
