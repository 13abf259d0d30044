//! Offline fixtures: a simulated site in a YAML file, for dry runs that
//! need no browser (`baton dry-run --offline FIXTURE`), and optionally what
//! the run should come to, which makes the fixture a test of the script.
//! docs/cli.md describes the format.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{SimPage, SimSite};

/// An offline fixture: the simulated site, and optionally what the run
/// should come to.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    /// Pages by URL; a key starting with `/` is relative to the target's
    /// origin.
    #[serde(default)]
    pub pages: BTreeMap<String, SimPage>,
    /// Answers to `js(code)` on any page.
    #[serde(default)]
    pub eval: BTreeMap<String, serde_json::Value>,
    /// Answers to `http_get_json(url)`; keys as for `pages`.
    #[serde(default)]
    pub http: BTreeMap<String, serde_json::Value>,
    /// Where the page starts (default `about:blank`).
    #[serde(default)]
    pub start: Option<String>,
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// What a fixture expects.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `ok`, `outcome` or `error`.
    pub end: Option<String>,
    /// The outcome's name, for `end: outcome`.
    pub outcome: Option<String>,
    /// Text the error must contain, for `end: error`.
    pub error: Option<String>,
    /// The label of a commit the script must reach (and, dry, skip).
    pub would_commit: Option<String>,
}

/// Why a fixture file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot read fixture `{}`: {source}", .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// Located: `file:line:column: message`.
    #[error("{}{location}: {message}", .path.display())]
    Invalid {
        path: std::path::PathBuf,
        /// `:LINE:COLUMN`, or empty when the parser gives no place.
        location: String,
        message: String,
    },
}

impl Fixture {
    /// Reads `path`; the error is located (`file:line:column: message`).
    pub fn load(path: &Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.to_owned(),
            source,
        })?;
        let options = serde_saphyr::options! {
            strict_booleans: true,
            reject_unsupported_tags: true,
            reject_tagged_field_names: true,
        };
        serde_saphyr::from_str_with_options(&text, options).map_err(|e| FixtureError::Invalid {
            path: path.to_owned(),
            location: e
                .location()
                .map(|l| format!(":{}:{}", l.line(), l.column()))
                .unwrap_or_default(),
            message: serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::UserMessageFormatter,
                e.without_snippet(),
            )
            .to_string(),
        })
    }

    /// The simulated site, with keys and links written as paths made
    /// absolute against `origin` (the target's).
    pub fn site(&self, origin: &str) -> SimSite {
        let page = |p: &SimPage| {
            let mut p = p.clone();
            for el in p.elements.values_mut() {
                if let Some(nav) = el.on_click.as_mut().and_then(|c| c.navigate.as_mut()) {
                    *nav = absolute(origin, nav);
                }
            }
            p
        };
        SimSite {
            pages: self
                .pages
                .iter()
                .map(|(k, v)| (absolute(origin, k), page(v)))
                .collect(),
            eval: self.eval.clone(),
            http: self
                .http
                .iter()
                .map(|(k, v)| (absolute(origin, k), v.clone()))
                .collect(),
        }
    }
}

/// The origin (`scheme://host:port`) of a URL.
pub fn origin(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(j) => url[..after + j].to_owned(),
        None => url.to_owned(),
    }
}

/// `key` made absolute against `origin` when it is a path.
pub fn absolute(origin: &str, key: &str) -> String {
    if key.starts_with('/') {
        format!("{origin}{key}")
    } else {
        key.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_relative_keys() {
        assert_eq!(origin("http://127.0.0.1:8099/p/1"), "http://127.0.0.1:8099");
        assert_eq!(absolute("http://a:1", "/cart"), "http://a:1/cart");
        assert_eq!(absolute("http://a:1", "https://x/y"), "https://x/y");
    }
}
