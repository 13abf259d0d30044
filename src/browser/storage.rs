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
    /// Reads a `storageState` document: an object with a `cookies` list
    /// and an `origins` list (either may be empty, neither may be missing,
    /// so `[]` or `{}` is not taken for an empty login). The error says
    /// where it is wrong (line and column, or the field's path) and what
    /// kind of value is there, never the value.
    pub fn from_json(text: &str) -> Result<StorageState, StorageError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| StorageError::NotJson {
                line: e.line(),
                column: e.column(),
                reason: strip_position(&e.to_string()).to_owned(),
            })?;
        check_shape(&v).map_err(|(path, want, found)| StorageError::Shape { path, want, found })?;
        serde_json::from_value(v).map_err(|_| StorageError::WrongType)
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

/// Why a text is not a `storageState` document: where, and what kind of
/// value is there, never the value (it may be a credential).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("line {line}, column {column}: not JSON: {reason}")]
    NotJson {
        line: usize,
        column: usize,
        reason: String,
    },
    #[error(
        "not a storageState document ({{\"cookies\": [...], \"origins\": [...]}}): `{path}` must be {want}, not {found}"
    )]
    Shape {
        path: String,
        want: &'static str,
        found: &'static str,
    },
    #[error(
        "not a storageState document ({{\"cookies\": [...], \"origins\": [...]}}): a value has the wrong type"
    )]
    WrongType,
}

/// Where a document departs from the `storageState` shape: the field's
/// path, what it must be, and the kind of value found there (never the
/// value: it may be a credential).
type ShapeError = (String, &'static str, &'static str);

fn kind(v: Option<&serde_json::Value>) -> &'static str {
    use serde_json::Value;
    match v {
        None => "missing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
    }
}

/// Checks the shape serde would otherwise take loosely (a list for the
/// whole struct, missing lists as empty) or report with the value.
fn check_shape(v: &serde_json::Value) -> Result<(), ShapeError> {
    use serde_json::Value;
    let bad = |path: String, want, found: &Value| -> ShapeError { (path, want, kind(Some(found))) };
    let Value::Object(top) = v else {
        return Err(bad("(the document)".into(), "an object", v));
    };
    let list = |key: &str| match top.get(key) {
        Some(Value::Array(a)) => Ok(a),
        other => Err((key.to_owned(), "a list (`[]` for none)", kind(other))),
    };
    let field = |path: &str,
                 o: &serde_json::Map<String, Value>,
                 key: &str,
                 want: &'static str,
                 required: bool| {
        let v = o.get(key);
        let ok = match (v, want) {
            (None, _) => !required,
            (Some(Value::String(_)), "a string")
            | (Some(Value::Number(_)), "a number")
            | (Some(Value::Bool(_)), "true or false")
            | (Some(Value::Array(_)), "a list") => true,
            (Some(Value::String(s)), "`Strict`, `Lax` or `None`") => {
                matches!(s.as_str(), "Strict" | "Lax" | "None")
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            let found = match v {
                Some(Value::String(_)) if want.starts_with('`') => "another string",
                other => kind(other),
            };
            Err((format!("{path}.{key}"), want, found))
        }
    };
    for (i, c) in list("cookies")?.iter().enumerate() {
        let path = format!("cookies[{i}]");
        let Value::Object(c) = c else {
            return Err(bad(path, "an object", c));
        };
        for key in ["name", "value", "domain"] {
            field(&path, c, key, "a string", true)?;
        }
        field(&path, c, "path", "a string", false)?;
        field(&path, c, "expires", "a number", false)?;
        field(&path, c, "httpOnly", "true or false", false)?;
        field(&path, c, "secure", "true or false", false)?;
        field(&path, c, "sameSite", "`Strict`, `Lax` or `None`", false)?;
    }
    for (i, o) in list("origins")?.iter().enumerate() {
        let path = format!("origins[{i}]");
        let Value::Object(o) = o else {
            return Err(bad(path, "an object", o));
        };
        field(&path, o, "origin", "a string", true)?;
        field(&path, o, "localStorage", "a list", false)?;
        if let Some(Value::Array(items)) = o.get("localStorage") {
            for (j, it) in items.iter().enumerate() {
                let path = format!("{path}.localStorage[{j}]");
                let Value::Object(it) = it else {
                    return Err(bad(path, "an object", it));
                };
                field(&path, it, "name", "a string", true)?;
                field(&path, it, "value", "a string", true)?;
            }
        }
    }
    Ok(())
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
        let err = StorageState::from_json(
            r#"{"cookies": [{"name": "a", "value": "secret-v"}], "origins": []}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`cookies[0].domain` must be a string, not missing"),
            "{err}"
        );
        assert!(!err.contains("secret-v"), "{err}");
    }

    /// What `baton login --import` was fed: each is refused with where and
    /// what kind of value, never the value itself.
    #[test]
    fn a_document_of_another_shape_is_refused_by_path_without_values() {
        for (doc, want) in [
            ("[]", "`(the document)` must be an object, not a list"),
            (
                "{}",
                "`cookies` must be a list (`[]` for none), not missing",
            ),
            (
                r#"{"cookies": []}"#,
                "`origins` must be a list (`[]` for none), not missing",
            ),
            (
                r#"{"cookies": {}, "origins": []}"#,
                "`cookies` must be a list (`[]` for none), not an object",
            ),
            (
                r#"{"cookies": [{"name": "n", "value": 4242424242424242, "domain": "d"}], "origins": []}"#,
                "`cookies[0].value` must be a string, not a number",
            ),
            (
                r#"{"cookies": [], "origins": [{"origin": "o", "localStorage": [{"name": "k", "value": ["s3cret"]}]}]}"#,
                "`origins[0].localStorage[0].value` must be a string, not a list",
            ),
            (
                r#"{"cookies": [{"name": "n", "value": "v", "domain": "d", "sameSite": "s3cret"}], "origins": []}"#,
                "`cookies[0].sameSite` must be `Strict`, `Lax` or `None`, not another string",
            ),
            ("{\"cookies\": [\"s3cret", "line 1, column"),
        ] {
            let err = StorageState::from_json(doc).unwrap_err().to_string();
            assert!(err.contains(want), "{doc}: {err}");
            assert!(!err.contains("4242") && !err.contains("s3cret"), "{err}");
        }
        let empty = StorageState::from_json(r#"{"cookies": [], "origins": []}"#).unwrap();
        assert!(empty.is_empty(), "an explicit empty login is one");
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
