//! Primitives for what things cost: `offer` reads the schema.org offer a
//! page publishes, `parse_price` reads a price text in any locale, and
//! `observe_price` tells the host what the run is about to pay, so that
//! `commit` can hold it to the target's budget (I11).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rhai::{Dynamic, Engine, FLOAT, INT, ImmutableString, Map};

use super::{R, ScriptContext, doc_comments};
use crate::observations::{By, Observation};
use crate::offer::{self, Availability, Offer};
use crate::price::{self, Context, Locale, Price};

pub(super) fn register(engine: &mut Engine, cx: &Arc<ScriptContext>) {
    let c = cx.clone();
    def!(
        engine,
        "offer",
        &["map"],
        "The offer the current page publishes as schema.org data (JSON-LD,\nmicrodata or OpenGraph product tags): `#{ name, price, currency,\navailability, in_stock, sku, url, source, offers }`. `availability` is\none of in_stock, out_of_stock, preorder, backorder, unknown. In a step,\nits price is what the run observed (I11), as with `observe_price`. Fails\nwhen the page has no product data.",
        move || -> R<Dynamic> {
            let p = c.page("offer")?;
            let a = c.action();
            let page = p.clone();
            let (html, url) = c.block(
                "offer",
                "",
                a,
                async move { Ok((page.html(a).await?, page.url().await?)) },
                |(h, _): &(String, String)| format!("{} bytes of HTML", h.len()),
            )?;
            read(&c, &html, Some(&url))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "offer",
        &["source: string | map", "map"],
        "`offer()` over an HTML text, or over an `http_get` answer (its body,\nand its URL to pick the page's variant). Monitors use this form.",
        move |source: Dynamic| -> R<Dynamic> {
            let (body, url) = if let Some(s) = source.read_lock::<ImmutableString>() {
                (s.to_string(), None)
            } else if let Some(m) = source.read_lock::<Map>() {
                let field = |k: &str| m.get(k).and_then(|v| v.clone().into_string().ok());
                let Some(body) = field("body") else {
                    return Err(c.error(
                        "offer(answer): the map has no `body`; pass an http_get answer or an HTML text".into(),
                    ));
                };
                (body, field("url"))
            } else {
                return Err(c.error(format!(
                    "offer(..): expected an HTML text or an http_get answer, not {}",
                    source.type_name()
                )));
            };
            let start = Instant::now();
            let out = read(&c, &body, url.as_deref());
            let shown = match &out {
                Ok(_) => Ok(format!("{} bytes of HTML", body.len())),
                Err(e) => Err(e.to_string()),
            };
            c.trace(
                "offer",
                "..",
                shown.as_deref().map_err(String::as_str),
                start.elapsed(),
            );
            out
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "parse_price",
        &["text: &str", "map"],
        "Reads one price from a shop's text in any locale (`1.299,00 €`,\n`$1,299.00`, `CHF 1'299.–`, `¥1,299`): `#{ amount, currency }`\n(currency `()` when the text has none). Fails on text that is not one\nprice, or is ambiguous (`1.299` alone: give the locale).",
        move |text: &str| -> R<Map> { parse(&c, text, None).map(|p| price_map(&p)) }
    );
    let c = cx.clone();
    def!(
        engine,
        "parse_price",
        &["text: &str", "locale: &str", "map"],
        "`parse_price(text)` in a locale (`de-DE`, `en-US`, `fr-FR`, `de-CH`,\n`ja-JP`, ...), which decides what a lone `.` or `,` is.",
        move |text: &str, locale: &str| -> R<Map> {
            let l = Locale::find(locale).map_err(|e| c.error(format!("parse_price: {e}")))?;
            parse(&c, text, Some(l)).map(|p| price_map(&p))
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "observe_price",
        &["text: &str", "float"],
        "Tells baton the price this run is about to pay, from the page's text\n(`observe_price(text(\"#total\"))`). `commit` is refused unless the\nlast price observed is within the target's `max_price` (I11). Returns\nthe amount.",
        move |text: &str| -> R<FLOAT> {
            let p = parse(&c, text, None)?;
            observe(&c, &format!("{text:?}"), p)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "observe_price",
        &["amount: float", "currency: &str", "float"],
        "`observe_price` with the amount and its currency code (`EUR`).",
        move |amount: FLOAT, currency: &str| -> R<FLOAT> {
            let p = numeric(&c, amount, currency)?;
            observe(&c, &format!("{amount}, {currency:?}"), p)
        }
    );
    let c = cx.clone();
    def!(
        engine,
        "observe_price",
        &["amount: int", "currency: &str", "float"],
        "`observe_price` with a whole amount.",
        move |amount: INT, currency: &str| -> R<FLOAT> {
            let p = numeric(&c, amount as FLOAT, currency)?;
            observe(&c, &format!("{amount}, {currency:?}"), p)
        }
    );
}

/// The target's currency reads prices whose text has none, and picks
/// which dollar `$` is.
fn parse(c: &ScriptContext, text: &str, locale: Option<Locale>) -> R<Price> {
    let cx = Context {
        locale,
        currency: c.target.budget.currency(),
    };
    price::parse(text, cx).map_err(|e| c.error(format!("parse_price: {e}")))
}

fn numeric(c: &ScriptContext, amount: FLOAT, currency: &str) -> R<Price> {
    let a = price::Amount::from_f64(amount).ok_or_else(|| {
        c.error(format!(
            "observe_price({amount}, ..): not a price (negative or not a number)"
        ))
    })?;
    let currency = currency.trim().to_ascii_uppercase();
    Ok(Price {
        amount: a,
        currency: (!currency.is_empty()).then_some(currency),
    })
}

fn observe(c: &ScriptContext, args: &str, price: Price) -> R<FLOAT> {
    let Some(sink) = &c.commit else {
        return Err(c.error(
            "observe_price: only a flow's steps observe prices; a monitor's price does not count for the budget (the run must see it on its own pages)".into(),
        ));
    };
    c.trace(
        "observe_price",
        args,
        Ok(&price.to_string()),
        Duration::ZERO,
    );
    keep(c, Some(&price), Availability::Unknown);
    let amount = price.amount.to_f64();
    sink.observe(price);
    Ok(amount)
}

fn read(c: &ScriptContext, body: &str, url: Option<&str>) -> R<Dynamic> {
    let o = offer::read(body, url).map_err(|e| c.error(format!("offer: {e}")))?;
    if let (Some(sink), Some(p)) = (&c.commit, &o.price) {
        c.trace(
            "observe_price",
            "(from offer)",
            Ok(&p.to_string()),
            Duration::ZERO,
        );
        sink.observe(p.clone());
    }
    keep(c, o.price.as_ref(), o.availability);
    Ok(offer_map(&o).into())
}

/// Into the target's price and stock history (monitors' too).
fn keep(c: &ScriptContext, price: Option<&Price>, availability: Availability) {
    let Some(store) = &c.observations else {
        return;
    };
    store.record(&Observation {
        target: c.target.id.to_string(),
        at: SystemTime::now(),
        price: price.map(|p| p.amount.to_f64()),
        currency: price.and_then(|p| p.currency.clone()),
        availability,
        by: if c.commit.is_some() {
            By::Step
        } else {
            By::Monitor
        },
    });
}

fn price_map(p: &Price) -> Map {
    let mut m = Map::new();
    m.insert("amount".into(), p.amount.to_f64().into());
    m.insert(
        "currency".into(),
        p.currency.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    m
}

/// The map scripts get from `offer`.
pub fn offer_map(o: &Offer) -> Map {
    let text = |v: &Option<String>| v.clone().map_or(Dynamic::UNIT, Dynamic::from);
    let mut m = Map::new();
    m.insert("name".into(), text(&o.name));
    m.insert(
        "price".into(),
        o.price
            .as_ref()
            .map_or(Dynamic::UNIT, |p| p.amount.to_f64().into()),
    );
    m.insert(
        "currency".into(),
        text(&o.price.as_ref().and_then(|p| p.currency.clone())),
    );
    m.insert("availability".into(), o.availability.as_str().into());
    m.insert(
        "in_stock".into(),
        (o.availability == offer::Availability::InStock).into(),
    );
    m.insert("sku".into(), text(&o.sku));
    m.insert("url".into(), text(&o.url));
    m.insert("source".into(), o.source.to_string().into());
    m.insert("offers".into(), (o.offers as INT).into());
    m
}
