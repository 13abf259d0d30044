//! HTML queries over a response body, for monitors that watch a shop
//! without a browser: the same selector forms as the page primitives.
//!
//! - CSS through `scraper` (html5ever, the HTML5 parsing algorithm
//!   browsers use, so broken markup parses as a browser would parse it);
//! - `xpath:` through `sxd-xpath` (XPath 1.0) over the same HTML5 parse,
//!   scraper's tree copied into `sxd-document`'s (one HTML parser in the
//!   build, not two); an expression may select elements, attributes or
//!   text, or compute a value (`xpath:count(//li)`);
//! - `text:` finds the elements whose own text contains the string.
//!
//! There is no rendering, so "text" is the text content with runs of
//! whitespace collapsed, not the visible text a page primitive reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::browser::{Selector, Selectors};

/// A parsed `html(body)`, as scripts hold it (type `Html`): the text,
/// parsed again by each query (the parsed trees are not `Send`, and a
/// monitor queries a page a few times).
#[derive(Clone, Debug)]
pub struct Document(Arc<str>);

impl Document {
    pub fn new(body: &str) -> Document {
        Document(Arc::from(body))
    }

    pub fn text(&self) -> &str {
        &self.0
    }
}

/// One element (or attribute, text node or computed value) a query found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub text: String,
    pub attrs: BTreeMap<String, String>,
}

/// Why a query could not run: the selector, not the document, is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("invalid CSS selector `{css}`: {reason}")]
    Css { css: String, reason: String },
    #[error("invalid XPath `{expr}`: {reason}")]
    XPath { expr: String, reason: String },
    #[error("XPath `{expr}` failed: {reason}")]
    XPathFailed { expr: String, reason: String },
    #[error("{selector}: a fetched body has no frames; fetch the frame's own URL")]
    Framed { selector: String },
}

/// The matches of the first selector of `sel` that matches anything (the
/// fallbacks of an array, as in the page primitives), and its index.
pub fn query(body: &str, sel: &Selectors) -> Result<Option<(usize, Vec<Match>)>, QueryError> {
    for (i, s) in sel.0.iter().enumerate() {
        let found = match s {
            Selector::Css(css) => css_query(body, css)?,
            Selector::XPath(x) => xpath_query(body, x)?,
            Selector::Text(t) => text_query(body, t),
            Selector::Framed { .. } => {
                return Err(QueryError::Framed {
                    selector: s.to_string(),
                });
            }
        };
        if !found.is_empty() {
            return Ok(Some((i, found)));
        }
    }
    Ok(None)
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn element_match(el: scraper::ElementRef<'_>) -> Match {
    Match {
        text: collapse(&el.text().collect::<String>()),
        attrs: el
            .value()
            .attrs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    }
}

fn css_query(body: &str, css: &str) -> Result<Vec<Match>, QueryError> {
    let sel = scraper::Selector::parse(css).map_err(|e| QueryError::Css {
        css: css.to_owned(),
        reason: e.to_string(),
    })?;
    let doc = scraper::Html::parse_document(body);
    Ok(doc.select(&sel).map(element_match).collect())
}

fn text_query(body: &str, text: &str) -> Vec<Match> {
    let doc = scraper::Html::parse_document(body);
    let mut out: Vec<Match> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    // The element holding a text node that contains the string: the
    // innermost element, unless the string spans several nodes.
    for node in doc.tree.nodes() {
        let Some(t) = node.value().as_text() else {
            continue;
        };
        if !collapse(t).contains(text) {
            continue;
        }
        let Some(parent) = node.parent().and_then(scraper::ElementRef::wrap) else {
            continue;
        };
        if matches!(parent.value().name(), "script" | "style" | "template") {
            continue;
        }
        if seen.insert(parent.id()) {
            out.push(element_match(parent));
        }
    }
    out
}

fn xpath_query(body: &str, expr: &str) -> Result<Vec<Match>, QueryError> {
    use sxd_xpath::nodeset::Node;
    use sxd_xpath::{Context, Factory, Value};

    let invalid = |reason: String| QueryError::XPath {
        expr: expr.to_owned(),
        reason,
    };
    let xpath = Factory::new()
        .build(expr)
        .map_err(|e| invalid(e.to_string()))?
        .ok_or_else(|| invalid("it is empty".into()))?;
    let package = xml_of(body);
    let doc = package.as_document();
    let value =
        xpath
            .evaluate(&Context::new(), doc.root())
            .map_err(|e| QueryError::XPathFailed {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
    let scalar = |text: String| {
        vec![Match {
            text,
            attrs: BTreeMap::new(),
        }]
    };
    Ok(match value {
        Value::Nodeset(nodes) => nodes
            .document_order()
            .into_iter()
            .map(|n| match n {
                Node::Element(e) => Match {
                    text: collapse(&Node::Element(e).string_value()),
                    attrs: e
                        .attributes()
                        .iter()
                        .map(|a| (a.name().local_part().to_owned(), a.value().to_owned()))
                        .collect(),
                },
                other => Match {
                    text: collapse(&other.string_value()),
                    attrs: BTreeMap::new(),
                },
            })
            .collect(),
        Value::String(s) => scalar(s),
        // XPath numbers are floats; a count reads as `2`, not `2.0`.
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => scalar(format!("{}", n as i64)),
        Value::Number(n) => scalar(n.to_string()),
        Value::Boolean(true) => scalar("true".into()),
        // `false` is no match, so `exists("xpath:...")` reads naturally.
        Value::Boolean(false) => Vec::new(),
    })
}

/// The document XPath runs over: scraper's HTML5 parse (the one CSS
/// queries use) copied into sxd-document's tree, element by element, as
/// `sxd_html` built it from html5ever (HTML elements with no namespace,
/// SVG and MathML with theirs). Iterative, because a page controls how
/// deep its tree is.
fn xml_of(body: &str) -> sxd_document::Package {
    use sxd_document::QName;
    use sxd_document::dom::Element;

    const HTML_NS: &str = "http://www.w3.org/1999/xhtml";
    let html = scraper::Html::parse_document(body);
    let package = sxd_document::Package::new();
    {
        let doc = package.as_document();
        let mut stack: Vec<(Option<Element<'_>>, _)> = html
            .tree
            .root()
            .children()
            .rev()
            .map(|c| (None, c))
            .collect();
        while let Some((parent, node)) = stack.pop() {
            match node.value() {
                scraper::Node::Element(e) => {
                    let ns: &str = e.name.ns.as_ref();
                    let ns = (!ns.is_empty() && ns != HTML_NS).then_some(ns);
                    let el = doc.create_element(QName::with_namespace_uri(ns, e.name()));
                    for (k, v) in e.attrs() {
                        el.set_attribute_value(k, v);
                    }
                    match parent {
                        Some(p) => p.append_child(el),
                        None => doc.root().append_child(el),
                    }
                    stack.extend(node.children().rev().map(|c| (Some(el), c)));
                }
                scraper::Node::Text(t) => {
                    if let Some(p) = parent {
                        p.append_child(doc.create_text(t));
                    }
                }
                scraper::Node::Comment(c) => {
                    let c = doc.create_comment(c);
                    match parent {
                        Some(p) => p.append_child(c),
                        None => doc.root().append_child(c),
                    }
                }
                _ => {}
            }
        }
    }
    package
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!doctype html><html><head><title>Widget</title>
<script>var stock = "In stock";</script></head><body>
<h1 class="name">Widget <small>v2</small></h1>
<p class="stock out" data-qty="0">Sold   out</p>
<ul id="sizes"><li data-sku="S-1">S</li><li data-sku="M-1">M</li><li>L
</ul>
<div><p>unclosed paragraph<div>block</div></body></html>"#;

    fn q(sel: &[&str]) -> Vec<Match> {
        query(PAGE, &Selectors::many(sel))
            .unwrap()
            .map(|(_, m)| m)
            .unwrap_or_default()
    }

    #[test]
    fn css_finds_elements_their_text_and_attributes() {
        let m = q(&[".stock"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].text, "Sold out");
        assert_eq!(m[0].attrs["data-qty"], "0");
        assert_eq!(
            q(&["#sizes li"]).len(),
            3,
            "an unclosed <li> is closed as HTML5 says"
        );
        assert_eq!(q(&["h1.name"])[0].text, "Widget v2");
        assert!(q(&[".in-stock"]).is_empty());
    }

    #[test]
    fn fallbacks_use_the_first_selector_that_matches() {
        let (i, m) = query(PAGE, &Selectors::many(&[".in-stock", ".stock"]))
            .unwrap()
            .unwrap();
        assert_eq!((i, m[0].text.as_str()), (1, "Sold out"));
    }

    #[test]
    fn xpath_runs_over_a_deeply_nested_page() {
        let deep = format!("{}x{}", "<div>".repeat(5_000), "</div>".repeat(5_000));
        let m = query(&deep, &Selectors::one("xpath:count(//div)"))
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(m[0].text, "5000");
    }

    #[test]
    fn xpath_selects_nodes_and_computes_values() {
        assert_eq!(q(&["xpath://li[@data-sku='M-1']"])[0].text, "M");
        assert_eq!(q(&["xpath://li/@data-sku"]).len(), 2);
        assert_eq!(q(&["xpath://li/@data-sku"])[1].text, "M-1");
        assert_eq!(q(&["xpath:count(//li)"])[0].text, "3");
        assert_eq!(q(&["xpath:string(//title)"])[0].text, "Widget");
        assert!(q(&["xpath:count(//li) > 5"]).is_empty());
        assert_eq!(
            q(&["xpath://p[contains(@class, 'out')]"])[0].text,
            "Sold out"
        );
    }

    #[test]
    fn text_finds_the_element_holding_the_text_and_skips_scripts() {
        let m = q(&["text:Sold out"]);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].attrs["class"], "stock out");
        // "In stock" is only inside a <script>.
        assert!(q(&["text:In stock"]).is_empty());
    }

    #[test]
    fn bad_selectors_are_clear_errors() {
        let e = query(PAGE, &Selectors::one("li[")).unwrap_err();
        assert!(matches!(&e, QueryError::Css { css, .. } if css == "li["));
        assert!(
            e.to_string().starts_with("invalid CSS selector `li[`"),
            "{e}"
        );
        let e = query(PAGE, &Selectors::one("xpath://li[")).unwrap_err();
        assert!(matches!(&e, QueryError::XPath { expr, .. } if expr == "//li["));
        assert!(e.to_string().starts_with("invalid XPath `//li[`"), "{e}");
    }
}
