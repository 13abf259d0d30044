//! Accounts: a shop login that runs share, one at a time (I10).
//!
//! An account from `flows.yaml` names its secrets (username, password, an
//! optional TOTP seed), how to tell that a session is logged in (a page and
//! a selector, or a script) and an optional login script. It has one
//! browser session of its own: an isolated context in the one Chromium,
//! started from the account's stored browser state and saved back after
//! every run, so a login survives restarts and relaunches.
//!
//! The stored state is `STATE_DIR/accounts/NAME.json` in Playwright's
//! `storageState` format, written atomically with mode 0600. Its values
//! are credentials and never reach a log. A process that drives an
//! account's session holds `NAME.lock` (an advisory lock the OS releases
//! when the process dies), so `baton login` or a dry run can never drive an
//! account beside a `baton run` that uses it: two copies of a bot on one
//! account is what gets accounts banned.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::browser::storage::StorageState;
use crate::browser::{Page, PageError, Selectors};
use crate::id::{AccountId, SessionId};

/// The outcome a run ends with when its account stays logged out.
pub const LOGGED_OUT: &str = "logged_out";

/// An account, resolved from `flows.yaml`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Account {
    pub id: AccountId,
    /// Its browser session: one per account.
    pub session: SessionId,
    /// The names of its secrets (in `secrets:`), for the login script.
    pub username: Option<String>,
    pub password: Option<String>,
    pub totp: Option<String>,
    pub check: Check,
    /// The script that logs in, run when the check says logged out.
    pub login: Option<String>,
    /// Where `baton login` opens the browser for a person to log in.
    pub login_url: Option<String>,
}

/// How to tell that a session is logged in.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Open `url`; logged in when any of `selector` is there.
    Page { url: String, selector: Vec<String> },
    /// Run a script; it ends with `outcome("logged_out")` when the session
    /// is logged out.
    Script(String),
}

impl Account {
    /// The scripts it uses: check first, then login.
    pub fn scripts(&self) -> impl Iterator<Item = &str> {
        let check = match &self.check {
            Check::Script(s) => Some(s.as_str()),
            Check::Page { .. } => None,
        };
        check.into_iter().chain(self.login.as_deref())
    }

    /// Where a person logs in: `login_url`, else the check page.
    pub fn login_page(&self) -> Option<&str> {
        self.login_url.as_deref().or(match &self.check {
            Check::Page { url, .. } => Some(url.as_str()),
            Check::Script(_) => None,
        })
    }
}

/// Accounts whose login failed, and why. Their targets are skipped until
/// `flows.yaml` changes (a fixed password) or baton restarts (after `baton
/// login`): logging in again and again with a wrong password is what gets
/// accounts locked. A run records its account here before it deregisters,
/// so the next run on the account, which waits for that, sees it.
#[derive(Debug, Default)]
pub struct LoggedOut {
    held: std::sync::Mutex<std::collections::BTreeMap<AccountId, String>>,
}

impl LoggedOut {
    fn held(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<AccountId, String>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn hold(&self, account: &AccountId, why: &str) {
        self.held().insert(account.clone(), why.to_owned());
    }

    /// Why `account`'s targets are skipped, if they are.
    pub fn why(&self, account: &AccountId) -> Option<String> {
        self.held().get(account).cloned()
    }

    /// Every held account and why.
    pub fn list(&self) -> Vec<(AccountId, String)> {
        self.held()
            .iter()
            .map(|(a, w)| (a.clone(), w.clone()))
            .collect()
    }

    /// Lets every account try again; returns the ones that were held.
    pub fn clear(&self) -> Vec<AccountId> {
        std::mem::take(&mut *self.held()).into_keys().collect()
    }
}

/// A check by page: open `url` and wait, up to `timeout`, for any of
/// `selector`. Waiting, not a glance: many shops render the account's name
/// by script after the page has loaded. The cost is one `timeout` when the
/// session is logged out. `Err` when the page itself could not be had.
pub async fn page_logged_in(
    page: &dyn Page,
    url: &str,
    selector: &[String],
    timeout: std::time::Duration,
) -> Result<bool, String> {
    page.navigate(url, timeout)
        .await
        .map_err(|e| format!("login check: {e}"))?;
    match page.wait_for(&Selectors::many(selector), timeout).await {
        Ok(_) => Ok(true),
        Err(PageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(format!("login check: {e}")),
    }
}

/// The origin (`scheme://host:port`) of `url`, if it has one.
pub fn origin_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let o = u.origin();
    o.is_tuple().then(|| o.ascii_serialization())
}

/// Why an account's stored state could not be read, written or claimed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("cannot read `{path}`: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot write `{path}`: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error(
        "account `{account}` is in use by another baton process (`{path}` is locked); stop it first, or let it do the work"
    )]
    InUse { account: AccountId, path: PathBuf },
}

/// Where accounts' stored browser states live: `STATE_DIR/accounts`.
#[derive(Clone, Debug)]
pub struct AccountStore {
    dir: PathBuf,
}

/// Proof that this process drives an account; released when dropped (or
/// when the process dies).
#[derive(Debug)]
pub struct AccountLock {
    _file: File,
}

impl AccountStore {
    pub fn new(state_dir: &Path) -> AccountStore {
        AccountStore {
            dir: state_dir.join("accounts"),
        }
    }

    /// The stored state's file.
    pub fn path(&self, account: &AccountId) -> PathBuf {
        self.dir.join(format!("{account}.json"))
    }

    /// The stored state, or `None` if the account has never been saved.
    pub fn load(&self, account: &AccountId) -> Result<Option<StorageState>, AccountError> {
        let path = self.path(account);
        match fs::read_to_string(&path) {
            Ok(text) => StorageState::from_json(&text)
                .map(Some)
                .map_err(|reason| AccountError::Read { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AccountError::Read {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Replaces the stored state: written whole or not at all, mode 0600.
    pub fn save(&self, account: &AccountId, state: &StorageState) -> Result<(), AccountError> {
        let path = self.path(account);
        let err = |reason: String| AccountError::Write {
            path: path.clone(),
            reason,
        };
        create_private_dir(&self.dir).map_err(|e| err(e.to_string()))?;
        // A temporary file (created 0600) synced and renamed over, then the
        // directory synced: the state module's crash-safe write.
        crate::state::write_atomic(&self.dir, &format!("{account}.json"), state)
            .map_err(|e| err(e.to_string()))
    }

    /// Claims the account for this process, or says it is in use.
    pub fn lock(&self, account: &AccountId) -> Result<AccountLock, AccountError> {
        let path = self.dir.join(format!("{account}.lock"));
        let err = |reason: String| AccountError::Write {
            path: path.clone(),
            reason,
        };
        create_private_dir(&self.dir).map_err(|e| err(e.to_string()))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        match file.try_lock() {
            Ok(()) => Ok(AccountLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(AccountError::InUse {
                account: account.clone(),
                path,
            }),
            Err(fs::TryLockError::Error(e)) => Err(err(e.to_string())),
        }
    }
}

/// Creates `dir` readable by its owner only: it holds logins.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn saved_state_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        let ada = AccountId::new("ada");
        assert!(store.load(&ada).unwrap().is_none());
        let state = StorageState::from_json(
            r#"{"cookies":[{"name":"a","value":"v","domain":"x","path":"/","expires":-1,"httpOnly":true,"secure":false,"sameSite":"Lax"}],"origins":[]}"#,
        )
        .unwrap();
        store.save(&ada, &state).unwrap();
        assert_eq!(store.load(&ada).unwrap(), Some(state));
        let mode = fs::metadata(store.path(&ada)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        let dmode = fs::metadata(dir.path().join("accounts"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700, "{dmode:o}");
    }

    #[test]
    fn a_locked_account_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        let ada = AccountId::new("ada");
        let held = store.lock(&ada).unwrap();
        let err = store.lock(&ada).unwrap_err();
        assert!(matches!(err, AccountError::InUse { .. }), "{err}");
        assert!(store.lock(&AccountId::new("grace")).is_ok());
        drop(held);
        assert!(store.lock(&ada).is_ok());
    }

    #[test]
    fn a_corrupt_state_file_is_a_located_error_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        let ada = AccountId::new("ada");
        fs::create_dir_all(dir.path().join("accounts")).unwrap();
        fs::write(store.path(&ada), "{\"cookies\": [\"s3cret\"]}").unwrap();
        let err = store.load(&ada).unwrap_err().to_string();
        assert!(err.contains("ada.json") && err.contains("line 1"), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
    }
}
