//! Structured offers: the product, price and availability a shop publishes
//! for search engines as schema.org data, read without any per-shop code.
//!
//! Three sources, in the order they are trusted:
//!
//! 1. JSON-LD (`<script type="application/ld+json">`): a `Product` (or a
//!    `ProductGroup`'s variants) with `offers` as one `Offer`, an array of
//!    them or an `AggregateOffer`; found at the top level, in an array, in
//!    `@graph` or nested (`mainEntity`). Shopify, WooCommerce, BigCommerce
//!    and most shop builders emit this.
//! 2. Microdata (`itemscope itemtype=".../Product"` with `itemprop`s), as
//!    Magento's Luma theme and older templates do.
//! 3. OpenGraph product tags (`<meta property="product:price:amount">`).
//!
//! Prices go through [`crate::price`], so `"1.299,00"` in a sloppy JSON-LD
//! block is read right or refused, never read as 1.299.

use std::fmt;

use scraper::{ElementRef, Html, Selector};
use serde_json::Value;

use crate::price::{self, Amount, Price, PriceError};

/// Whether the offer can be bought now, in a few words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// InStock, LimitedAvailability, InStoreOnly, OnlineOnly.
    InStock,
    /// OutOfStock, SoldOut, Discontinued.
    OutOfStock,
    /// PreOrder, PreSale.
    PreOrder,
    /// BackOrder, MadeToOrder.
    BackOrder,
    /// Missing, or a value schema.org does not define.
    Unknown,
}

impl Availability {
    /// From schema.org's value in any spelling shops use
    /// (`https://schema.org/InStock`, `http://schema.org/InStock`,
    /// `schema:InStock`, `InStock`) or OpenGraph's (`instock`, `in stock`,
    /// `oos`, `out of stock`, `preorder`).
    pub fn parse(value: &str) -> Availability {
        let last = value.rsplit(['/', ':', '#']).next().unwrap_or(value).trim();
        let key: String = last
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        match key.as_str() {
            "instock" | "limitedavailability" | "instoreonly" | "onlineonly" | "available" => {
                Availability::InStock
            }
            "outofstock" | "soldout" | "discontinued" | "oos" | "unavailable" => {
                Availability::OutOfStock
            }
            "preorder" | "presale" => Availability::PreOrder,
            "backorder" | "madetoorder" | "availablefororder" => Availability::BackOrder,
            _ => Availability::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Availability::InStock => "in_stock",
            Availability::OutOfStock => "out_of_stock",
            Availability::PreOrder => "preorder",
            Availability::BackOrder => "backorder",
            Availability::Unknown => "unknown",
        }
    }
}

/// Where an offer was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Source {
    #[serde(rename = "json-ld")]
    JsonLd,
    #[serde(rename = "microdata")]
    Microdata,
    #[serde(rename = "opengraph")]
    OpenGraph,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::JsonLd => "json-ld",
            Source::Microdata => "microdata",
            Source::OpenGraph => "opengraph",
        })
    }
}

/// What a page says it sells.
#[derive(Clone, Debug, PartialEq)]
pub struct Offer {
    pub name: Option<String>,
    /// `None` when the page names the product but no price.
    pub price: Option<Price>,
    pub availability: Availability,
    pub sku: Option<String>,
    pub url: Option<String>,
    pub source: Source,
    /// How many offers the product has (variants); the one returned is
    /// the one for the page's URL, else the first in stock, else the first.
    pub offers: usize,
}

/// Why a page gave no offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error(
        "no schema.org product on the page (looked for JSON-LD, microdata and OpenGraph product tags){}",
        skipped.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
    )]
    NotFound { skipped: Option<String> },
    #[error("the {from} price {text:?} is not a price: {error}")]
    BadPrice {
        from: Source,
        text: String,
        error: PriceError,
    },
}

/// Reads the page's offer. `page_url` picks the variant whose `url` is the
/// page's, where a product lists several.
pub fn read(html: &str, page_url: Option<&str>) -> Result<Offer, OfferError> {
    let doc = Html::parse_document(html);
    let mut bad_json = Vec::new();
    let mut found: Option<Offer> = None;
    let candidates = [
        from_json_ld(&doc, page_url, &mut bad_json),
        from_microdata(&doc, page_url),
        from_open_graph(&doc),
    ];
    // The first source with a price wins; a source that names the product
    // without a price is kept in case none has one.
    for c in candidates {
        match c? {
            Some(o) if o.price.is_some() => return Ok(o),
            Some(o) if found.is_none() => found = Some(o),
            _ => {}
        }
    }
    found.ok_or_else(|| OfferError::NotFound {
        skipped: (!bad_json.is_empty()).then(|| bad_json.join("; ")),
    })
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).expect("a valid built-in selector")
}

// JSON-LD --------------------------------------------------------------------

fn from_json_ld(
    doc: &Html,
    page_url: Option<&str>,
    bad: &mut Vec<String>,
) -> Result<Option<Offer>, OfferError> {
    let mut blocks = Vec::new();
    for (i, script) in doc
        .select(&selector(r#"script[type="application/ld+json" i]"#))
        .enumerate()
    {
        let text: String = script.text().collect();
        match serde_json::from_str::<Value>(text.trim()) {
            Ok(v) => blocks.push(v),
            Err(e) => bad.push(format!("JSON-LD block {} is not JSON ({e})", i + 1)),
        }
    }
    let mut products = Vec::new();
    for v in &blocks {
        collect_products(v, &mut products, 0);
    }
    let Some(product) = products.first() else {
        return Ok(None);
    };
    let mut offers = Vec::new();
    collect_offers(product, &mut offers);
    // A ProductGroup's variants are Products with offers of their own.
    if let Some(variants) = product.get("hasVariant") {
        for v in as_list(variants) {
            let before = offers.len();
            collect_offers(v, &mut offers);
            // A variant's sku and name belong to its offers.
            for o in &mut offers[before..] {
                o.sku = o.sku.take().or_else(|| text_of(v.get("sku")));
                o.url = o.url.take().or_else(|| text_of(v.get("url")));
            }
        }
    }
    let name = text_of(product.get("name"));
    let chosen = choose(&offers, page_url);
    let Some(raw) = chosen else {
        return Ok(Some(Offer {
            name,
            price: None,
            availability: Availability::Unknown,
            sku: text_of(product.get("sku")),
            url: text_of(product.get("url")),
            source: Source::JsonLd,
            offers: 0,
        }));
    };
    Ok(Some(Offer {
        name,
        price: raw.price(Source::JsonLd)?,
        availability: raw.availability,
        sku: raw.sku.clone().or_else(|| text_of(product.get("sku"))),
        url: raw.url.clone().or_else(|| text_of(product.get("url"))),
        source: Source::JsonLd,
        offers: offers.len(),
    }))
}

fn is_type(v: &Value, names: &[&str]) -> bool {
    let matches = |t: &str| {
        let t = t.rsplit(['/', ':']).next().unwrap_or(t);
        names.contains(&t)
    };
    match v.get("@type") {
        Some(Value::String(t)) => matches(t),
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).any(matches),
        _ => false,
    }
}

fn as_list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Every Product in `v`, depth first, in document order. Bounded in depth:
/// a page controls this input.
fn collect_products<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
    if depth > 16 {
        return;
    }
    match v {
        Value::Array(items) => {
            for i in items {
                collect_products(i, out, depth + 1);
            }
        }
        Value::Object(map) => {
            if is_type(
                v,
                &[
                    "Product",
                    "ProductGroup",
                    "IndividualProduct",
                    "ProductModel",
                ],
            ) {
                out.push(v);
                return;
            }
            // An Offer at the top level with the product inside it.
            if is_type(v, &["Offer"])
                && let Some(item) = map.get("itemOffered")
                && is_type(item, &["Product"])
            {
                out.push(v);
                return;
            }
            for (k, child) in map {
                if k == "@graph" || k == "mainEntity" || k == "mainEntityOfPage" || k == "about" {
                    collect_products(child, out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// One offer as found, before its price is parsed.
#[derive(Debug)]
struct RawOffer {
    price: Option<String>,
    currency: Option<String>,
    availability: Availability,
    sku: Option<String>,
    url: Option<String>,
}

impl RawOffer {
    fn price(&self, source: Source) -> Result<Option<Price>, OfferError> {
        let Some(text) = &self.price else {
            return Ok(None);
        };
        // schema.org's `price` is a plain number with a `.` (`1299.00`);
        // anything else goes through the locale-aware parser.
        if let Some(amount) = Amount::from_plain(text.trim()) {
            return Ok(Some(Price {
                amount,
                currency: self.currency.clone(),
            }));
        }
        let cx = price::Context {
            locale: None,
            currency: self.currency.as_deref(),
        };
        price::parse(text, cx)
            .map(Some)
            .map_err(|error| OfferError::BadPrice {
                from: source,
                text: text.clone(),
                error,
            })
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => text_of(o.get("@id").or_else(|| o.get("name"))),
        Value::Array(a) => text_of(a.first()),
        _ => None,
    }
}

fn collect_offers(product: &Value, out: &mut Vec<RawOffer>) {
    // A top-level Offer that carries its product.
    if is_type(product, &["Offer"]) {
        out.push(raw_offer(product));
        return;
    }
    let Some(offers) = product.get("offers") else {
        return;
    };
    for o in as_list(offers) {
        if is_type(o, &["AggregateOffer"]) {
            // Its own offers when it lists them; else its lowest price.
            let before = out.len();
            if let Some(inner) = o.get("offers") {
                for i in as_list(inner) {
                    out.push(raw_offer(i));
                }
            }
            if out.len() == before {
                let mut agg = raw_offer(o);
                agg.price = agg.price.or_else(|| text_of(o.get("lowPrice")));
                out.push(agg);
            }
        } else {
            out.push(raw_offer(o));
        }
    }
}

fn raw_offer(o: &Value) -> RawOffer {
    // `priceSpecification` (WooCommerce) holds the price when `price` is
    // missing; a list price or strikethrough price there is not the price.
    let spec = o.get("priceSpecification").and_then(|s| {
        as_list(s).into_iter().find(|s| {
            !s.get("priceType")
                .and_then(Value::as_str)
                .is_some_and(|t| t.contains("ListPrice") || t.contains("Strikethrough"))
        })
    });
    RawOffer {
        price: text_of(o.get("price")).or_else(|| spec.and_then(|s| text_of(s.get("price")))),
        currency: text_of(o.get("priceCurrency"))
            .or_else(|| spec.and_then(|s| text_of(s.get("priceCurrency")))),
        availability: o
            .get("availability")
            .and_then(|a| text_of(Some(a)))
            .map_or(Availability::Unknown, |a| Availability::parse(&a)),
        sku: text_of(o.get("sku")),
        url: text_of(o.get("url")),
    }
}

/// The offer for `page_url`, else the first in stock, else the first.
fn choose<'a>(offers: &'a [RawOffer], page_url: Option<&str>) -> Option<&'a RawOffer> {
    let same = |u: &str| {
        page_url.is_some_and(|p| {
            let trim = |s: &str| s.trim_end_matches('/').to_owned();
            trim(p) == trim(u) || p.ends_with(u)
        })
    };
    offers
        .iter()
        .find(|o| o.url.as_deref().is_some_and(same) && offers.len() > 1)
        .or_else(|| {
            offers
                .iter()
                .find(|o| o.availability == Availability::InStock)
        })
        .or_else(|| offers.first())
}

// Microdata ------------------------------------------------------------------

/// An `itemprop`'s value as the microdata spec defines it: `content` on
/// meta, `href` on links, `value` on data, otherwise the text.
fn prop_value(el: ElementRef<'_>) -> Option<String> {
    let v = el.value();
    let raw = match v.name() {
        "meta" => v.attr("content").map(str::to_owned),
        "a" | "link" | "area" => v.attr("href").map(str::to_owned),
        "data" | "meter" => v.attr("value").map(str::to_owned),
        _ => v
            .attr("content")
            .map(str::to_owned)
            .or_else(|| Some(el.text().collect::<String>())),
    }?;
    let raw = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    (!raw.is_empty()).then_some(raw)
}

/// The first `itemprop=name` inside `scope` whose nearest item scope is
/// `scope` itself (not a nested offer's or brand's).
fn own_prop(scope: ElementRef<'_>, name: &str) -> Option<String> {
    let sel = selector(&format!(r#"[itemprop~="{name}"]"#));
    scope
        .select(&sel)
        .find(|el| {
            el.ancestors()
                .filter_map(ElementRef::wrap)
                .find(|a| a.value().attr("itemscope").is_some())
                .is_some_and(|a| a.id() == scope.id())
        })
        .and_then(prop_value)
}

fn from_microdata(doc: &Html, page_url: Option<&str>) -> Result<Option<Offer>, OfferError> {
    let Some(product) = doc.select(&selector("[itemscope][itemtype]")).find(|e| {
        e.value()
            .attr("itemtype")
            .is_some_and(|t| t.split_whitespace().any(|t| t.ends_with("/Product")))
    }) else {
        return Ok(None);
    };
    let offers: Vec<RawOffer> = product
        .select(&selector(r#"[itemprop~="offers"]"#))
        .map(|o| {
            let price = own_prop(o, "price").or_else(|| own_prop(o, "lowPrice"));
            RawOffer {
                price,
                currency: own_prop(o, "priceCurrency"),
                availability: own_prop(o, "availability")
                    .map_or(Availability::Unknown, |a| Availability::parse(&a)),
                sku: own_prop(o, "sku"),
                url: own_prop(o, "url"),
            }
        })
        .collect();
    let chosen = choose(&offers, page_url);
    Ok(Some(Offer {
        name: own_prop(product, "name"),
        price: match chosen {
            Some(o) => o.price(Source::Microdata)?,
            None => None,
        },
        availability: chosen.map_or(Availability::Unknown, |o| o.availability),
        sku: chosen
            .and_then(|o| o.sku.clone())
            .or_else(|| own_prop(product, "sku")),
        url: chosen
            .and_then(|o| o.url.clone())
            .or_else(|| own_prop(product, "url")),
        source: Source::Microdata,
        offers: offers.len(),
    }))
}

// OpenGraph ------------------------------------------------------------------

fn from_open_graph(doc: &Html) -> Result<Option<Offer>, OfferError> {
    let meta = |names: &[&str]| {
        names.iter().find_map(|n| {
            doc.select(&selector(&format!(
                r#"meta[property="{n}"], meta[name="{n}"]"#
            )))
            .find_map(|m| m.value().attr("content"))
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
        })
    };
    let amount = meta(&["product:price:amount", "og:price:amount"]);
    let is_product = meta(&["og:type"]).is_some_and(|t| t.contains("product"));
    if amount.is_none() && !is_product {
        return Ok(None);
    }
    let raw = RawOffer {
        price: amount,
        currency: meta(&["product:price:currency", "og:price:currency"]),
        availability: meta(&["product:availability", "og:availability"])
            .map_or(Availability::Unknown, |a| Availability::parse(&a)),
        sku: meta(&["product:retailer_item_id"]),
        url: meta(&["og:url"]),
    };
    Ok(Some(Offer {
        name: meta(&["og:title"]),
        price: raw.price(Source::OpenGraph)?,
        availability: raw.availability,
        sku: raw.sku,
        url: raw.url,
        source: Source::OpenGraph,
        offers: 1,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/offers")
            .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn amount(text: &str) -> Amount {
        Amount::from_plain(text).unwrap()
    }

    /// (fixture, page URL, name, price, currency, availability, sku, source, offers)
    #[test]
    fn the_shapes_the_big_platforms_emit() {
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            &'a str,
            &'a str,
            &'a str,
            Availability,
            &'a str,
            Source,
            usize,
        );
        let cases: [Case<'_>; 8] = [
            // No variant in the URL: the first in stock, not the first.
            (
                "shopify.html",
                None,
                "Aurora Lamp",
                "1299",
                "USD",
                Availability::InStock,
                "AUR-1-L",
                Source::JsonLd,
                2,
            ),
            // The variant the page is for, even out of stock.
            (
                "shopify.html",
                Some("https://shop.example/products/aurora-lamp?variant=111"),
                "Aurora Lamp",
                "49",
                "USD",
                Availability::OutOfStock,
                "AUR-1-S",
                Source::JsonLd,
                2,
            ),
            (
                "woocommerce.html",
                None,
                "Copper Kettle",
                "1299",
                "EUR",
                Availability::InStock,
                "KET-9",
                Source::JsonLd,
                1,
            ),
            (
                "bigcommerce.html",
                None,
                "Trail Pack 30L",
                "89.5",
                "GBP",
                Availability::PreOrder,
                "TP30",
                Source::JsonLd,
                1,
            ),
            (
                "aggregate.html",
                None,
                "Noise Cancelling Headphones",
                "199.99",
                "USD",
                Availability::InStock,
                "",
                Source::JsonLd,
                1,
            ),
            (
                "product_group.html",
                Some("https://coat.example/coat?size=medium"),
                "Wool Coat",
                "1399",
                "CHF",
                Availability::OutOfStock,
                "44E01-M",
                Source::JsonLd,
                2,
            ),
            (
                "magento.html",
                None,
                "Radiant Tee",
                "22",
                "USD",
                Availability::InStock,
                "WS12",
                Source::Microdata,
                1,
            ),
            (
                "opengraph.html",
                None,
                "Espresso Grinder",
                "1299",
                "EUR",
                Availability::OutOfStock,
                "GR-7",
                Source::OpenGraph,
                1,
            ),
        ];
        for (file, url, name, price, currency, availability, sku, source, offers) in cases {
            let o = read(&fixture(file), url).unwrap_or_else(|e| panic!("{file}: {e}"));
            let p = o
                .price
                .as_ref()
                .unwrap_or_else(|| panic!("{file}: no price"));
            assert_eq!(o.name.as_deref(), Some(name), "{file}");
            assert_eq!(p.amount, amount(price), "{file}");
            assert_eq!(p.currency.as_deref(), Some(currency), "{file}");
            assert_eq!(o.availability, availability, "{file}");
            assert_eq!(o.sku.as_deref().unwrap_or(""), sku, "{file}");
            assert_eq!(o.source, source, "{file}");
            assert_eq!(o.offers, offers, "{file}");
        }
    }

    #[test]
    fn a_product_group_picks_its_variant_by_url_else_the_first_in_stock() {
        let o = read(&fixture("product_group.html"), None).unwrap();
        assert_eq!(o.sku.as_deref(), Some("44E01-S"));
        // `1'299.00` is not schema.org's plain form; the price parser
        // reads it rather than refusing the page.
        assert_eq!(o.price.unwrap().amount, amount("1299"));
    }

    #[test]
    fn availability_in_every_spelling() {
        for (text, want) in [
            ("https://schema.org/InStock", Availability::InStock),
            ("http://schema.org/InStock", Availability::InStock),
            ("schema:InStock", Availability::InStock),
            ("InStock", Availability::InStock),
            ("instock", Availability::InStock),
            ("in stock", Availability::InStock),
            (
                "https://schema.org/LimitedAvailability",
                Availability::InStock,
            ),
            ("https://schema.org/OnlineOnly", Availability::InStock),
            ("https://schema.org/OutOfStock", Availability::OutOfStock),
            ("https://schema.org/SoldOut", Availability::OutOfStock),
            ("https://schema.org/Discontinued", Availability::OutOfStock),
            ("oos", Availability::OutOfStock),
            ("out of stock", Availability::OutOfStock),
            ("https://schema.org/PreOrder", Availability::PreOrder),
            ("https://schema.org/PreSale", Availability::PreOrder),
            ("preorder", Availability::PreOrder),
            ("https://schema.org/BackOrder", Availability::BackOrder),
            ("https://schema.org/MadeToOrder", Availability::BackOrder),
            ("https://schema.org/Reserved", Availability::Unknown),
            ("", Availability::Unknown),
        ] {
            assert_eq!(Availability::parse(text), want, "{text:?}");
        }
    }

    #[test]
    fn malformed_pages_give_a_clear_error_and_never_panic() {
        let e = read(&fixture("broken.html"), None).unwrap_err();
        assert!(
            matches!(&e, OfferError::NotFound { skipped: Some(s) } if s.contains("JSON-LD block 1 is not JSON")),
            "{e}"
        );
        assert!(matches!(
            read("<html><body>no data</body></html>", None),
            Err(OfferError::NotFound { skipped: None })
        ));
        // A price no locale writes is refused with where it came from.
        let bad = r#"<script type="application/ld+json">{"@type":"Product","name":"X","offers":{"@type":"Offer","price":"12.34.5","priceCurrency":"EUR"}}</script>"#;
        let e = read(bad, None).unwrap_err();
        assert!(
            matches!(
                &e,
                OfferError::BadPrice {
                    from: Source::JsonLd,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("12.34.5"), "{e}");
        // A product with no offer has no price and says so.
        let bare = r#"<script type="application/ld+json">{"@type":"Product","name":"Y"}</script>"#;
        let o = read(bare, None).unwrap();
        assert_eq!((o.name.as_deref(), o.price, o.offers), (Some("Y"), None, 0));
        // Deep nesting, odd types and empty input.
        let deep = format!(
            "<script type=\"application/ld+json\">{}1{}</script>",
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(read(&deep, None).is_err());
        for junk in [
            "",
            "<script type=\"application/ld+json\"></script>",
            "<script type=\"application/ld+json\">null</script>",
            "<script type=\"application/ld+json\">{\"@type\": 5, \"offers\": [1, \"x\", null]}</script>",
        ] {
            assert!(read(junk, None).is_err(), "{junk}");
        }
    }
}
