//! `baton watch URL`: what baton sees on a product page (name, price,
//! availability, and the schema.org source it came from), so a user knows
//! in seconds whether a shop works with `offer()` and no selectors.
//!
//! A plain HTTP GET by default, as a monitor fetches; `--browser` renders
//! the page in headless Chromium first, for shops that write their
//! structured data from script.

use std::time::Duration;

use super::{Failure, answer};
use crate::browser::Browser;
use crate::offer::{self, Offer};

/// How long the page may take to arrive.
const TIMEOUT: Duration = Duration::from_secs(30);

pub(super) async fn watch(url: &str, browser: bool) -> Result<(), Failure> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Failure::usage(format!(
            "`{url}` is not a URL ({e}); give the product page's full address, http:// or https://"
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::usage(format!(
            "`{url}`: only http:// and https:// pages can be watched"
        )));
    }
    let (html, final_url) = if browser {
        rendered(url).await?
    } else {
        fetched(url).await?
    };
    let shown = crate::redact::url(&final_url);
    match offer::read(&html, Some(&final_url)) {
        Ok(o) => answer(&describe(&shown, &o)),
        Err(e) => {
            let hint = if browser {
                "the page has no product data baton can read; a flow for it needs selectors (`text(\"#price\")` with `observe_price`)"
            } else {
                "if the page builds its product data in script, try `baton watch --browser`"
            };
            Err(Failure::runtime(format!("{shown}: {e}\n{hint}")))
        }
    }
}

/// What `baton watch` prints for an offer.
pub(super) fn describe(url: &str, o: &Offer) -> String {
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let price = o
        .price
        .as_ref()
        .map_or_else(|| "- (no price)".into(), ToString::to_string);
    let mut out = format!(
        "{url}\n  name          {}\n  price         {price}\n  availability  {}\n  sku           {}\n  source        {}",
        or_dash(&o.name),
        o.availability.as_str(),
        or_dash(&o.sku),
        o.source,
    );
    if o.offers > 1 {
        out.push_str(&format!(
            "\n  offers        {} (variants; this is the page's own, else the first in stock)",
            o.offers
        ));
    }
    out
}

async fn fetched(url: &str) -> Result<(String, String), Failure> {
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::runtime(format!("cannot make an HTTP client: {e}")))?;
    let shown = crate::redact::url(url);
    let r = client
        .get(url)
        .send()
        .await
        .map_err(|e| Failure::runtime(format!("{shown}: {e}")))?;
    let status = r.status();
    let final_url = r.url().to_string();
    if !status.is_success() {
        return Err(Failure::runtime(format!("{shown} answered HTTP {status}")));
    }
    let body = r
        .text()
        .await
        .map_err(|e| Failure::runtime(format!("{shown}: {e}")))?;
    Ok((body, final_url))
}

async fn rendered(url: &str) -> Result<(String, String), Failure> {
    let profile = tempfile::Builder::new()
        .prefix("baton-watch-")
        .tempdir()
        .map_err(|e| Failure::runtime(format!("cannot make a browser profile: {e}")))?;
    let chrome = crate::browser::chrome::ChromeBrowser::new(
        crate::browser::chrome::ChromeConfig::headless(profile.path()),
        None,
    );
    let out = async {
        let page = chrome
            .new_page(crate::id::SessionId(0))
            .await
            .map_err(|e| Failure::runtime(format!("cannot start Chromium: {e}")))?;
        let shown = crate::redact::url(url);
        page.navigate(url, TIMEOUT)
            .await
            .map_err(|e| Failure::runtime(format!("{shown}: {e}")))?;
        let html = page
            .html(TIMEOUT)
            .await
            .map_err(|e| Failure::runtime(format!("{shown}: {e}")))?;
        let at = page.url().await.unwrap_or_else(|_| url.to_owned());
        page.close().await;
        Ok((html, at))
    }
    .await;
    chrome.shutdown().await;
    out
}
