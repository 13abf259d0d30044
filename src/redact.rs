//! Keeping secrets out of everything baton writes.
//!
//! Every secret value read for `secret(name)` (and the dashboard token) is
//! registered with a [`Redactor`]; the log writer, script error messages,
//! run history and the dry-run trace all pass through it, so a value can be
//! used by a script without ever being printed. The process-wide instance is
//! [`global`]; tests make their own.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock, RwLock};

/// What a secret is replaced with.
pub const MASK: &str = "[redacted]";

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
        let mut s = self.secrets.write().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|v| v == value) {
            s.push(value.to_owned());
            // Longest first, so a secret that contains another is masked
            // whole rather than leaving part of itself visible.
            s.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let s = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|v| text.contains(v.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_owned();
        for v in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
        Cow::Owned(out)
    }

    /// Like [`Redactor::apply`] for bytes that may not be UTF-8 (a log
    /// line): invalid sequences are kept as they are.
    pub fn apply_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        match std::str::from_utf8(bytes) {
            Ok(s) => match self.apply(s) {
                Cow::Borrowed(_) => Cow::Borrowed(bytes),
                Cow::Owned(o) => Cow::Owned(o.into_bytes()),
            },
            Err(_) => {
                let lossy = String::from_utf8_lossy(bytes);
                match self.apply(&lossy) {
                    Cow::Borrowed(_) => Cow::Borrowed(bytes),
                    Cow::Owned(o) => Cow::Owned(o.into_bytes()),
                }
            }
        }
    }
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
}
