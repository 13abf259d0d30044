//! Keeping secrets out of everything baton writes.
//!
//! Every secret value read for `secret(name)` (and the dashboard token) is
//! registered with a [`Redactor`]; the log writer, script error messages,
//! run history and the dry-run trace all pass through it, so a value can be
//! used by a script without ever being printed. The process-wide instance is
//! [`global`]; tests make their own.
//!
//! Masking must never corrupt what it masks. A short secret (a CVV such as
//! the demo's `123`) replaced wherever its characters appear turned
//! `"duration_ms":1234` into invalid JSON and `A-10123` into `A-10[redacted]`,
//! and showed where the secret's digits were. So:
//!
//! - a secret of [`SHORT`] characters or more is masked wherever it
//!   appears: a chance match is negligible, and it may be glued to other
//!   text (`card4242...`);
//! - a shorter one only as a whole token (no letter or digit on either
//!   side), and only where script-made text enters baton ([`Redactor::apply`]:
//!   errors, outcomes, commit results, traces, screenshot names), never in
//!   baton's own log lines ([`Redactor::apply_log`]), whose numbers are not
//!   secrets;
//! - JSON is masked structurally ([`Redactor::json`]): string values only,
//!   so numbers and the document's syntax are never touched.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, RwLock};

use crate::sync::{read, write};

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

/// JSON keys whose string values are names from flows.yaml that baton
/// shows as such (targets, accounts, flows, channels), never masked by
/// [`Redactor::json`].
const IDENTIFIERS: &[&str] = &["id", "target", "account", "flow", "channel"];

/// `url` as baton shows it (logs, errors, the dashboard): credentials
/// (`user:pass@`) become `***@` and the query (hosted browser pools take
/// their token there) becomes `?…`. Not registered secrets, but secrets
/// all the same, and in any URL an operator configures.
pub fn url(url: &str) -> String {
    if let Ok(mut u) = reqwest::Url::parse(url) {
        let has_secret = !u.username().is_empty()
            || u.password().is_some()
            || u.query().is_some()
            || u.fragment().is_some();
        if !has_secret {
            // As the operator wrote it, not as the parser normalises it.
            return url.to_owned();
        }
        if !u.username().is_empty() || u.password().is_some() {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
        }
        let had_query = u.query().is_some();
        u.set_query(None);
        u.set_fragment(None);
        let mut shown = u.to_string();
        if had_query {
            shown.push_str("?…");
        }
        return shown;
    }
    // Not a URL the parser takes: cut what could be credentials or a
    // query all the same.
    let (base, query) = match url.split_once('?') {
        Some((b, _)) => (b, "?…"),
        None => (url, ""),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}://***@{}", &base[..s], &base[a + 1..]),
        _ => base.to_owned(),
    };
    format!("{base}{query}")
}

/// Secrets at least this long are masked wherever they appear; shorter
/// ones only as whole tokens in script-made text.
pub const SHORT: usize = 6;

/// A set of strings to mask wherever they appear.
#[derive(Debug, Default)]
pub struct Redactor {
    secrets: RwLock<Vec<String>>,
}

static GLOBAL: LazyLock<Arc<Redactor>> = LazyLock::new(|| Arc::new(Redactor::default()));

/// The process-wide redactor, used by the log writer.
pub fn global() -> Arc<Redactor> {
    GLOBAL.clone()
}

impl Redactor {
    pub fn new() -> Redactor {
        Redactor::default()
    }

    /// Masks `value` from now on. Empty values are ignored (masking the
    /// empty string would mean masking between every character).
    pub fn add(&self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut s = write(&self.secrets);
        if !s.iter().any(|v| v == value) {
            s.push(value.to_owned());
            // Longest first, so a secret that contains another is masked
            // whole rather than leaving part of itself visible.
            s.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// Script-made `text` (an error, an outcome, a commit result) with
    /// every secret replaced by [`MASK`]: long ones anywhere, short ones as
    /// whole tokens.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.mask(text, true)
    }

    /// One of baton's own log lines: only secrets of [`SHORT`] characters or
    /// more are masked, so a duration or an id that happens to equal a short
    /// secret is left alone (short secrets are masked where script-made
    /// text enters baton, before it reaches a log line).
    pub fn apply_log<'a>(&self, text: &'a str) -> Cow<'a, str> {
        self.mask(text, false)
    }

    /// Whether `text` holds any secret (long ones anywhere, short ones as a
    /// whole token).
    pub fn holds_secret(&self, text: &str) -> bool {
        matches!(self.mask(text, true), Cow::Owned(_))
    }

    /// `value` with secrets masked in its strings (keys and values) only.
    pub fn json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(m) = self.apply(s) {
                    *s = m;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| self.json(v)),
            Value::Object(o) => {
                let entries = std::mem::take(o);
                for (k, mut v) in entries {
                    // An identifier baton shows (an account's or a
                    // target's name from flows.yaml) is not a secret,
                    // though a secret's value may equal it: the demo
                    // account `ada` logs in as user `ada`.
                    if !(IDENTIFIERS.contains(&k.as_str()) && v.is_string()) {
                        self.json(&mut v);
                    }
                    o.insert(self.apply(&k).into_owned(), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn mask<'a>(&self, text: &'a str, short_too: bool) -> Cow<'a, str> {
        let s = read(&self.secrets);
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        for v in s.iter() {
            let long = v.chars().count() >= SHORT;
            if !long && !short_too {
                continue;
            }
            if !out.contains(v.as_str()) {
                continue;
            }
            out = Cow::Owned(if long {
                out.replace(v.as_str(), MASK)
            } else {
                replace_tokens(&out, v)
            });
        }
        match out {
            Cow::Owned(o) if o == text => Cow::Borrowed(text),
            other => other,
        }
    }

    /// Like [`Redactor::apply`] for bytes that may not be UTF-8 (a log
    /// line): invalid sequences are kept as they are.
    pub fn apply_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if let Ok(s) = std::str::from_utf8(bytes) {
            match self.apply_log(s) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            }
        } else {
            let lossy = String::from_utf8_lossy(bytes);
            match self.apply_log(&lossy) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            }
        }
    }
}

/// `text` with each occurrence of `needle` that has no letter or digit
/// right before or after it replaced by [`MASK`].
fn replace_tokens(text: &str, needle: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut prev: Option<char> = None;
    while let Some(i) = rest.find(needle) {
        let before = rest[..i].chars().next_back().or(prev);
        let after = rest[i + needle.len()..].chars().next();
        let glued = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
        out.push_str(&rest[..i]);
        if glued(before) || glued(after) {
            out.push_str(needle);
        } else {
            out.push_str(MASK);
        }
        prev = needle.chars().next_back();
        rest = &rest[i + needle.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let r = Redactor::new();
        r.add("4242");
        r.add("4242424242424242");
        r.add("");
        assert_eq!(
            r.apply("card 4242424242424242, last four 4242"),
            "card [redacted], last four [redacted]"
        );
        assert!(matches!(r.apply("nothing here"), Cow::Borrowed(_)));
    }

    /// Hardening: the demo CVV `123` used to turn `"duration_ms":1234` into
    /// `[redacted]4` (invalid JSON) and `A-10123` into `A-10[redacted]`.
    #[test]
    fn a_short_secret_never_corrupts_numbers_ids_or_json() {
        let r = Redactor::new();
        r.add("123");
        // Script-made text: only the whole token.
        assert_eq!(
            r.apply("cvv 123, order A-10123, took 1234ms, ref x123"),
            "cvv [redacted], order A-10123, took 1234ms, ref x123"
        );
        assert!(r.holds_secret("cvv=123"));
        assert!(!r.holds_secret("A-10123"));
        // baton's own log lines: short secrets are not masked there.
        assert_eq!(r.apply_log("waited 123 ms"), "waited 123 ms");
        // JSON: strings only; numbers and syntax untouched.
        let mut v =
            serde_json::json!({"duration_ms": 123, "order": "A-10123", "outcome": "123", "123": 1});
        r.json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"duration_ms": 123, "order": "A-10123", "outcome": "[redacted]", "[redacted]": 1})
        );
        // A long secret is masked even when glued to other text.
        r.add("4242424242424242");
        assert_eq!(r.apply_log("card4242424242424242x"), "card[redacted]x");
    }

    /// The dashboard showed account `ada` as `[redacted]` because its
    /// username secret is `ada`: names from flows.yaml stay, while the
    /// same value in free text is still masked.
    #[test]
    fn an_identifier_equal_to_a_secret_is_shown() {
        let r = Redactor::new();
        r.add("ada");
        let mut v = serde_json::json!({
            "targets": [{"id": "1005", "account": "ada", "why": "login as ada refused"}],
            "logged_out": [{"account": "ada"}],
        });
        r.json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "targets": [{"id": "1005", "account": "ada", "why": "login as [redacted] refused"}],
                "logged_out": [{"account": "ada"}],
            })
        );
    }
}
