//! Primitives for what things cost: `offer` reads the schema.org offer a
//! page publishes, `parse_price` reads a price text in any locale, and
//! `observe_price` tells the host what the run is about to pay, so that
//! `commit` can hold it to the target's budget (I11).

use std::time::{Duration, Instant, SystemTime};

use rhai::{Dynamic, FLOAT, INT, ImmutableString, Map};

use super::table::{Args, Form, Param, Primitive, Section, Type};
use super::{R, ScriptContext};
use crate::observations::{By, Observation};
use crate::offer::{self, Availability, Offer};
use crate::price::{self, Context, Locale, Price};

/// The price primitives, in the reference's order.
pub(super) static PRIMITIVES: &[Primitive] = &[
    Primitive {
        name: "offer",
        section: Section::Price,
        forms: &[
            Form::new(&[], Type::Map, offer_of_page),
            Form::new(
                &[Param("html_or_answer", Type::StrOrMap)],
                Type::Map,
                offer_of,
            ),
        ],
        does: "reads the schema.org offer the current page publishes for search engines (or, given one, an HTML text or an `http_get` answer: its body, and its URL to pick the variant; monitors use this: `offer(http_get(target.url)).in_stock`): JSON-LD (`Product`, `ProductGroup` variants, `Offer` arrays, `AggregateOffer`, inside `@graph`, arrays or `mainEntity`), else microdata (`itemprop`), else OpenGraph product tags. Returns `#{ name, price, currency, availability, in_stock, sku, url, source, offers }`: `price` a float (or `()`), `availability` one of `in_stock`, `out_of_stock`, `preorder`, `backorder`, `unknown` (schema.org's InStock, LimitedAvailability, OnlineOnly... map to `in_stock`; OutOfStock, SoldOut, Discontinued to `out_of_stock`), `source` one of `json-ld`, `microdata`, `opengraph`, `offers` how many variants the product lists (the one returned is the page's own by URL, else the first in stock, else the first). In a step, its price counts as observed (as `observe_price`). Shopify, WooCommerce, BigCommerce, Magento and most shop builders publish this: `baton watch URL` shows what baton reads on a page",
        errors: "the page has no product data; its price is not a price",
    },
    Primitive {
        name: "parse_price",
        section: Section::Price,
        forms: &[
            Form::new(&[Param("text", Type::Str)], Type::Map, parse_price),
            Form::new(
                &[Param("text", Type::Str), Param("locale", Type::Str)],
                Type::Map,
                parse_price,
            ),
        ],
        does: "reads one price from a shop's text: `#{ amount, currency }` (currency `()` when the text has none). Grouping and decimal separators by locale (`de-DE`, `en-US`, `fr-FR`, `de-CH`, `en-IN`, `ja-JP`, `es-ES`, `it-IT`, `nl-NL`, `pt-BR`, `sv-SE`, `pl-PL`, `en-GB`) or inferred: `1.299,00 €` and `1 299,00 €` are 1299 EUR, `$1,299.00` 1299 USD, `CHF 1'299.–` 1299 CHF, `¥1,299` 1299 JPY. A lone separator before three digits (`1.299`) is a thousands separator when the currency has two decimals or none, and an **error** when nothing says which it is (give the locale). `$` is USD unless the target's `currency` is another dollar; `kr` has no currency unless the target's says",
        errors: "text with two numbers (`was $20 now $15`), none, or a minus; an ambiguous separator; an unknown locale",
    },
    Primitive {
        name: "observe_price",
        section: Section::Price,
        forms: &[
            Form::new(&[Param("text", Type::Str)], Type::Float, observe_price),
            Form::new(
                &[Param("amount", Type::Float), Param("currency", Type::Str)],
                Type::Float,
                observe_price,
            ),
            Form::new(
                &[Param("amount", Type::Int), Param("currency", Type::Str)],
                Type::Float,
                observe_price,
            ),
        ],
        does: "tells baton the price this run is about to pay, and returns the amount. `commit` is refused unless the last price observed in the run is within `target.max_price`. Call it on the last page before the order (the review page's total): a shop may change the price between pages. Text is read by `parse_price`, with the target's currency for text that has none",
        errors: "in a monitor (the run must see the price on its own pages); text that is not one price",
    },
];

fn offer_of_page(c: &ScriptContext, _: &Args<'_, '_>) -> R<Dynamic> {
    let p = c.page("offer")?;
    let bound = c.action();
    let (html, url) = c.block(
        "offer",
        "",
        bound,
        async move { Ok((p.html(bound).await?, p.url().await?)) },
        |(h, _): &(String, String)| format!("{} bytes of HTML", h.len()),
    )?;
    read(c, &html, Some(&url))
}

fn offer_of(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let source = a.value(0);
    let (body, url) = if let Some(s) = source.read_lock::<ImmutableString>() {
        (s.to_string(), None)
    } else if let Some(m) = source.read_lock::<Map>() {
        let field = |k: &str| m.get(k).and_then(|v| v.clone().into_string().ok());
        let Some(body) = field("body") else {
            return Err(c.error(
                "offer(answer): the map has no `body`; pass an http_get answer or an HTML text"
                    .into(),
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
    let out = read(c, &body, url.as_deref());
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

/// `parse_price(text)` or `parse_price(text, locale)`.
fn parse_price(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    let text = a.str(0)?;
    let locale = match a.opt::<ImmutableString>(1)? {
        Some(l) => Some(Locale::find(&l).map_err(|e| c.error(format!("parse_price: {e}")))?),
        None => None,
    };
    parse(c, &text, locale).map(|p| price_map(&p).into())
}

/// `observe_price(text)` or `observe_price(amount, currency)`.
fn observe_price(c: &ScriptContext, a: &Args<'_, '_>) -> R<Dynamic> {
    if a.count() == 1 {
        let text = a.str(0)?;
        let p = parse(c, &text, None)?;
        return observe(c, &format!("{text:?}"), p).map(Dynamic::from);
    }
    let amount = a.value(0);
    let amount = amount
        .as_float()
        .or_else(|_| amount.as_int().map(|i| i as FLOAT))
        .map_err(|t| c.error(format!("observe_price: the amount is a {t}, not a number")))?;
    let currency = a.str(1)?;
    let p = numeric(c, amount, &currency)?;
    observe(c, &format!("{amount}, {currency:?}"), p).map(Dynamic::from)
}

/// The target's currency reads prices whose text has none, and picks
/// which dollar `$` is.
fn parse(c: &ScriptContext, text: &str, locale: Option<Locale>) -> R<Price> {
    let cx = Context {
        locale,
        currency: c.step.target.budget.currency(),
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
    let Some(sink) = &c.step.commit else {
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
    if let (Some(sink), Some(p)) = (&c.step.commit, &o.price) {
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
        target: c.step.target.id.to_string(),
        at: SystemTime::now(),
        price: price.map(|p| p.amount.to_f64()),
        currency: price.and_then(|p| p.currency.clone()),
        availability,
        by: if c.step.commit.is_some() {
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
