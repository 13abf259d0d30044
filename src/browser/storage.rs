//! A browser session's login, as data: its cookies and the local storage of
//! its origins, in Playwright's `storageState` JSON format, so a session
//! saved by Playwright (`context.storageState({ path })`) can be brought to
//! baton and back.
//!
//! The values are credentials: [`StorageState`]'s `Debug` shows cookie and
//! key names only, and nothing here logs.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Cookies and local storage, as Playwright writes them. Unknown fields
/// are ignored, so files from newer Playwright versions still load.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageState {
    #[serde(default)]
    pub cookies: Vec<Cookie>,
    #[serde(default)]
    pub origins: Vec<Origin>,
}

/// One cookie. `expires` is in seconds since the epoch, `-1` for a session
/// cookie.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub domain: String,
    #[serde(default = "root")]
    pub path: String,
    #[serde(default = "session_cookie")]
    pub expires: f64,
    #[serde(default)]
    pub http_only: bool,
    #[serde(default)]
    pub secure: bool,
    #[serde(default)]
    pub same_site: SameSite,
}

fn root() -> String {
    "/".into()
}

fn session_cookie() -> f64 {
    -1.0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SameSite {
    Strict,
    #[default]
    Lax,
    None,
}

/// The local storage of one origin (`https://shop.example`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub origin: String,
    #[serde(default)]
    pub local_storage: Vec<Item>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    pub name: String,
    pub value: String,
}

impl StorageState {
    /// Reads a `storageState` document. The error says where it is wrong
    /// (line and column), never what the values are.
    pub fn from_json(text: &str) -> Result<StorageState, String> {
        serde_json::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let msg = strip_position(&msg);
            // serde_json quotes the offending value in some messages
            // (`invalid type: string "..."`): that may be a credential.
            let msg = if msg.contains('"') {
                "a value has the wrong type"
            } else {
                msg
            };
            format!(
                "line {}, column {}: not a storageState document ({{\"cookies\": [...], \"origins\": [...]}}): {msg}",
                e.line(),
                e.column(),
            )
        })
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }

    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty() && self.origins.iter().all(|o| o.local_storage.is_empty())
    }

    /// Drops cookies that have expired by `now` (seconds since the epoch):
    /// Chromium refuses to set them.
    pub fn without_expired(mut self, now: f64) -> StorageState {
        self.cookies.retain(|c| c.expires < 0.0 || c.expires > now);
        self
    }

    /// Replaces the local storage of the origins in `fresh`, keeping the
    /// others: a session read from some origins updates those and leaves
    /// what it did not read.
    pub fn merge_origins(&mut self, fresh: Vec<Origin>) {
        for o in fresh {
            self.origins.retain(|old| old.origin != o.origin);
            if !o.local_storage.is_empty() {
                self.origins.push(o);
            }
        }
        self.origins.sort_by(|a, b| a.origin.cmp(&b.origin));
    }
}

fn strip_position(msg: &str) -> &str {
    msg.find(" at line ").map_or(msg, |i| &msg[..i])
}

impl fmt::Debug for StorageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StorageState")
            .field(
                "cookies",
                &self
                    .cookies
                    .iter()
                    .map(|c| format!("{}@{}", c.name, c.domain))
                    .collect::<Vec<_>>(),
            )
            .field(
                "origins",
                &self
                    .origins
                    .iter()
                    .map(|o| format!("{} ({} keys)", o.origin, o.local_storage.len()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({}@{})", self.name, self.domain)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Origin({}, {} keys)",
            self.origin,
            self.local_storage.len()
        )
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Item({})", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file as Playwright 1.5x writes it.
    const PLAYWRIGHT: &str = r#"{
  "cookies": [
    {
      "name": "shop_auth",
      "value": "tok-123",
      "domain": "127.0.0.1",
      "path": "/",
      "expires": 1900000000.5,
      "httpOnly": true,
      "secure": false,
      "sameSite": "Lax"
    }
  ],
  "origins": [
    {
      "origin": "http://127.0.0.1:8099",
      "localStorage": [{ "name": "cart-view", "value": "compact" }]
    }
  ]
}"#;

    #[test]
    fn reads_and_writes_playwright_files() {
        let s = StorageState::from_json(PLAYWRIGHT).unwrap();
        assert_eq!(s.cookies[0].name, "shop_auth");
        assert!(s.cookies[0].http_only);
        assert_eq!(s.cookies[0].same_site, SameSite::Lax);
        assert_eq!(s.origins[0].local_storage[0].value, "compact");
        let back: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        let orig: serde_json::Value = serde_json::from_str(PLAYWRIGHT).unwrap();
        assert_eq!(back, orig, "the round trip keeps every field");
    }

    #[test]
    fn debug_and_errors_never_show_values() {
        let s = StorageState::from_json(PLAYWRIGHT).unwrap();
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("shop_auth") && !dbg.contains("tok-123"),
            "{dbg}"
        );
        assert!(!dbg.contains("compact"), "{dbg}");
        let err = StorageState::from_json(r#"{"cookies": [{"name": "a", "value": "secret-v"}]}"#)
            .unwrap_err();
        assert!(err.starts_with("line 1, column"), "{err}");
        assert!(err.contains("domain") && !err.contains("secret-v"), "{err}");
    }

    #[test]
    fn expired_cookies_are_dropped_and_origins_merge() {
        let mut s = StorageState::from_json(PLAYWRIGHT).unwrap();
        assert_eq!(s.clone().without_expired(1_950_000_000.0).cookies.len(), 0);
        assert_eq!(s.clone().without_expired(1_000.0).cookies.len(), 1);
        s.merge_origins(vec![Origin {
            origin: "http://127.0.0.1:8099".into(),
            local_storage: vec![],
        }]);
        assert!(s.origins.is_empty(), "an origin read empty is dropped");
    }
}
