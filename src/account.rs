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
//! are credentials and never reach a log.
//!
//! A process that drives an account's session holds two advisory locks
//! (the OS releases both when the process dies): `NAME.lock` beside the
//! stored state, which guards that file, and a machine-wide lock keyed on
//! the account's [`Identity`] (the shop's origin and the user name,
//! hashed) in the per-user runtime directory. The second is what keeps two
//! batons with different state directories, or a `baton login` beside a
//! `baton run`, off one shop account: two copies of a bot on one account
//! is what gets accounts banned.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::browser::storage::StorageState;
use crate::browser::{Browser, Page, PageError, Selectors};
use crate::id::{AccountId, SessionId};
use crate::sync::lock;

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
    /// Open `url`; logged in when any of `selector` is there, logged out
    /// when any of `logged_out` is (or when neither appears in time).
    Page {
        url: String,
        selector: Vec<String>,
        logged_out: Vec<String>,
    },
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
        lock(&self.held)
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
    /// Lets `account` try again (it was logged in by a person); whether
    /// it was held.
    pub fn lift(&self, account: &AccountId) -> bool {
        self.held().remove(account).is_some()
    }

    pub fn clear(&self) -> Vec<AccountId> {
        std::mem::take(&mut *self.held()).into_keys().collect()
    }
}

/// A check by page: open `url` and wait, up to `timeout`, for any of
/// `selector` (logged in) or of `logged_out`. Waiting, not a glance: many
/// shops render the account's name by script after the page has loaded.
/// Without `logged_out` signs, a logged-out session costs one `timeout`;
/// with them, it costs the page load. `Err` when the page itself could not
/// be had.
pub async fn page_logged_in(
    page: &dyn Page,
    url: &str,
    selector: &[String],
    logged_out: &[String],
    timeout: std::time::Duration,
) -> Result<bool, CheckError> {
    page.navigate(url, timeout).await?;
    // One wait for both: the logged-in signs first, so a page showing both
    // (a header login link beside the account's name) counts as logged in.
    let signs: Vec<&String> = selector.iter().chain(logged_out).collect();
    match page.wait_for(&Selectors::many(&signs), timeout).await {
        Ok(i) => Ok(i < selector.len()),
        Err(PageError::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Why an account's login check gave no verdict (logged in or out).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The check page could not be loaded or read.
    #[error("login check: {0}")]
    Page(#[from] PageError),
    /// The run's page could not be opened for the check.
    #[error("{0}")]
    Open(String),
    /// A check script ended with an outcome other than `logged_out`.
    #[error(
        "login check `{script}` ended with outcome `{outcome}`; a check ends with `logged_out` or not at all"
    )]
    Outcome { script: String, outcome: String },
    /// A check script failed; its own message.
    #[error("{0}")]
    Script(String),
    #[error("login check cancelled")]
    Cancelled,
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
        "account `{account}`{shop} is in use by another baton process{holder} (`{path}` is locked); stop it first, or let it do the work (to log the account in while it runs, use Log in on its dashboard)",
        shop = shop.as_ref().map(|s| format!(" on {s}")).unwrap_or_default()
    )]
    InUse {
        account: AccountId,
        /// The shop's origin, when the account's pages name one.
        shop: Option<String>,
        /// Who holds it, as it wrote it into the lock file: ` (pid N)`.
        holder: String,
        path: PathBuf,
    },
    #[error(
        "the runtime directory `{path}` {reason}; remove it or set BATON_RUNTIME_DIR to a private directory"
    )]
    RuntimeDir { path: PathBuf, reason: String },
    #[error("cannot read the browser session: {0}")]
    Session(String),
}

/// Who an account is to its shop: the shop's origin and the user name.
/// Two configurations that name the same shop account, whatever their
/// account names or state directories, have the same identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `scheme://host:port` of the account's check page, else of its first
    /// target, else of its login page (last: a single sign-on page may
    /// live on another site than the shop); `None` when none of them is
    /// absolute yet (the
    /// demo shop's relative pages before it starts, or a script check
    /// with no targets).
    pub origin: Option<String>,
    /// The username secret's value; the account's name when it has none.
    user: String,
    /// Where the identity is unknown, the state directory stands in, so
    /// the lock is no weaker than the per-directory one.
    fallback: Option<PathBuf>,
}

impl Identity {
    /// The identity of the account `user` on the shop at `origin`
    /// ([`crate::config::Config::identity`] finds them); `fallback` (the
    /// state directory) stands in for an unknown origin.
    pub fn new(origin: Option<String>, user: String, fallback: Option<PathBuf>) -> Identity {
        Identity {
            origin,
            user,
            fallback,
        }
    }

    /// The lock file's name: a hash, so the user name (a secret's value)
    /// never appears in a path.
    fn file_name(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for part in [
            self.origin.as_deref().unwrap_or_default().as_bytes(),
            self.user.as_bytes(),
            self.fallback
                .as_deref()
                .map(|p| p.as_os_str().as_encoded_bytes())
                .unwrap_or_default(),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let digest = h.finalize();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.lock")
    }
}

/// The per-user directory for machine-wide locks: `$BATON_RUNTIME_DIR`,
/// else `$XDG_RUNTIME_DIR/baton`, else `/tmp/baton-UID`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BATON_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("baton");
    }
    std::env::temp_dir().join(format!("baton-{}", rustix::process::getuid().as_raw()))
}

/// Creates the runtime directory, or checks the one that is there is a
/// directory of ours that nobody else can write to (in `/tmp`, anyone
/// could have made it first).
fn private_runtime_dir(dir: &Path) -> Result<(), AccountError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let bad = |reason: String| AccountError::RuntimeDir {
        path: dir.to_owned(),
        reason,
    };
    create_private_dir(dir).map_err(|e| bad(format!("cannot be created: {e}")))?;
    let m = fs::symlink_metadata(dir).map_err(|e| bad(format!("cannot be read: {e}")))?;
    if !m.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    if m.uid() != rustix::process::getuid().as_raw() {
        return Err(bad(format!("belongs to another user (uid {})", m.uid())));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err(bad("can be written by other users".into()));
    }
    Ok(())
}

/// How a process holds an account's machine-wide lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// Alone: no other process may drive the account.
    Alone,
    /// As an instance of a cluster (`cluster:`), whose Redis lease keeps
    /// its instances' runs on the account apart: other instances may hold
    /// it too, a baton outside the cluster may not.
    Cluster,
}

/// Who holds a lock, as its holder wrote it into the file.
const CLUSTER_HOLDER: &str = "cluster";

/// Takes the advisory lock on `path` (shared for [`Sharing::Cluster`]) and
/// writes who holds it: this process's pid, or `cluster`. The inner `Err`
/// when another process holds it, with what it wrote.
fn lock_file(path: &Path, sharing: Sharing) -> Result<Result<File, String>, std::io::Error> {
    use std::io::{Read, Seek, Write};
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    let taken = match sharing {
        Sharing::Alone => file.try_lock(),
        Sharing::Cluster => file.try_lock_shared(),
    };
    match taken {
        Ok(()) => {
            // Shared holders all write the same word, so their writes
            // cannot garble each other.
            file.set_len(0)?;
            file.seek(std::io::SeekFrom::Start(0))?;
            match sharing {
                Sharing::Alone => writeln!(file, "{}", std::process::id())?,
                Sharing::Cluster => writeln!(file, "{CLUSTER_HOLDER}")?,
            }
            Ok(Ok(file))
        }
        Err(fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.take(64).read_to_string(&mut text);
            let text = text.trim();
            Ok(Err(if text == CLUSTER_HOLDER {
                " (the instances of a cluster on this machine)".to_owned()
            } else if let Ok(pid) = text.parse::<u32>() {
                format!(" (pid {pid})")
            } else {
                String::new()
            }))
        }
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Where accounts' stored browser states live: `STATE_DIR/accounts`.
#[derive(Clone, Debug)]
pub struct AccountStore {
    dir: PathBuf,
    /// Where the machine-wide locks live.
    runtime: PathBuf,
}

/// Proof that this process drives an account; released when dropped (or
/// when the process dies).
#[derive(Debug)]
pub struct AccountLock {
    _state: File,
    _machine: File,
}

impl AccountStore {
    pub fn new(state_dir: &Path) -> AccountStore {
        AccountStore::with_runtime_dir(state_dir, runtime_dir())
    }

    /// A store whose machine-wide locks live in `runtime`.
    pub fn with_runtime_dir(state_dir: &Path, runtime: PathBuf) -> AccountStore {
        AccountStore {
            dir: state_dir.join("accounts"),
            runtime,
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
                .map_err(|e| AccountError::Read {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(AccountError::Read {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Saves `session`'s cookies and the local storage of `origins` as
    /// `account`'s stored state, and makes them what the session starts
    /// from after a relaunch. A failure is logged, and returned for a
    /// caller that tells a person; a run goes on without it (its own result
    /// does not change with a lost save).
    pub async fn save_session(
        &self,
        browser: &dyn Browser,
        session: SessionId,
        origins: &[String],
        bound: std::time::Duration,
        account: &AccountId,
    ) -> Result<(), AccountError> {
        let read = tokio::time::timeout(bound, browser.storage_state(session, origins)).await;
        let state = match read {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => Err(AccountError::Session(e.to_string()))?,
            Err(_) => Err(AccountError::Session("reading it timed out".into()))?,
        };
        let (store, id, s) = (self.clone(), account.clone(), state.clone());
        let saved = tokio::task::spawn_blocking(move || store.save(&id, &s))
            .await
            .unwrap_or_else(|e| {
                Err(AccountError::Write {
                    path: self.path(account),
                    reason: e.to_string(),
                })
            });
        match saved {
            Ok(()) => {
                let _ = browser.seed(session, state).await;
                tracing::debug!(account = %account, "account's session saved");
                Ok(())
            }
            Err(e) => Err(e),
        }
        .inspect_err(
            |e| tracing::warn!(account = %account, error = %e, "account's session not saved"),
        )
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

    /// Claims the account for this process, or says it is in use (and by
    /// which pid): first in this state directory, then machine-wide by
    /// its identity.
    pub fn lock(
        &self,
        account: &AccountId,
        who: &Identity,
        sharing: Sharing,
    ) -> Result<AccountLock, AccountError> {
        let state = self.dir.join(format!("{account}.lock"));
        create_private_dir(&self.dir).map_err(|e| AccountError::Write {
            path: state.clone(),
            reason: e.to_string(),
        })?;
        let state = Self::take(account, who, state, Sharing::Alone)?;
        private_runtime_dir(&self.runtime)?;
        let machine = self.runtime.join("accounts");
        create_private_dir(&machine).map_err(|e| AccountError::RuntimeDir {
            path: machine.clone(),
            reason: format!("cannot be created: {e}"),
        })?;
        let machine = Self::take(account, who, machine.join(who.file_name()), sharing)?;
        Ok(AccountLock {
            _state: state,
            _machine: machine,
        })
    }

    fn take(
        account: &AccountId,
        who: &Identity,
        path: PathBuf,
        sharing: Sharing,
    ) -> Result<File, AccountError> {
        match lock_file(&path, sharing) {
            Ok(Ok(file)) => Ok(file),
            Ok(Err(holder)) => Err(AccountError::InUse {
                account: account.clone(),
                shop: who.origin.clone(),
                holder,
                path,
            }),
            Err(e) => Err(AccountError::Write {
                path,
                reason: e.to_string(),
            }),
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

    /// User `user` on `https://shop.example`.
    fn on_shop_example(user: &str) -> Identity {
        Identity {
            origin: Some("https://shop.example".into()),
            user: user.into(),
            fallback: None,
        }
    }

    #[test]
    fn a_locked_account_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        let store = AccountStore::with_runtime_dir(dir.path(), runtime.path().join("b"));
        let ada = AccountId::new("ada");
        let who = on_shop_example;
        let held = store.lock(&ada, &who("ada"), Sharing::Alone).unwrap();
        let err = store.lock(&ada, &who("ada"), Sharing::Alone).unwrap_err();
        assert!(
            matches!(&err, AccountError::InUse { holder, .. } if *holder == format!(" (pid {})", std::process::id())),
            "{err}"
        );
        assert!(
            store
                .lock(&AccountId::new("grace"), &who("grace"), Sharing::Alone)
                .is_ok()
        );
        drop(held);
        assert!(store.lock(&ada, &who("ada"), Sharing::Alone).is_ok());
    }

    /// Two state directories, one shop account: the second is refused
    /// with the holder's pid, though its own `NAME.lock` is free; another
    /// user name on the same shop is not.
    #[test]
    fn one_shop_account_is_locked_across_state_dirs() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let runtime = tempfile::tempdir().unwrap();
        let rt = runtime.path().join("baton");
        let a = AccountStore::with_runtime_dir(one.path(), rt.clone());
        let b = AccountStore::with_runtime_dir(two.path(), rt.clone());
        let who = on_shop_example;
        let _held = a
            .lock(
                &AccountId::new("ada"),
                &who("ada@example.com"),
                Sharing::Alone,
            )
            .unwrap();
        let err = b
            .lock(
                &AccountId::new("main"),
                &who("ada@example.com"),
                Sharing::Alone,
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!("pid {}", std::process::id()))
                && text.contains("https://shop.example"),
            "{text}"
        );
        assert!(
            !text.contains("ada@example.com"),
            "the user name is a secret's value: {text}"
        );
        assert!(
            b.lock(
                &AccountId::new("main"),
                &who("grace@example.com"),
                Sharing::Alone
            )
            .is_ok()
        );
        let mode = fs::metadata(&rt).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    }

    /// Instances of a cluster share the account (their Redis lease keeps
    /// their runs apart); a baton outside the cluster is refused while any
    /// of them holds it, and they are refused while it does.
    #[test]
    fn cluster_instances_share_an_account_and_keep_others_out() {
        let runtime = tempfile::tempdir().unwrap();
        let rt = runtime.path().join("baton");
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let store = |i: usize| AccountStore::with_runtime_dir(dirs[i].path(), rt.clone());
        let who = on_shop_example("ada");
        let ada = AccountId::new("ada");
        let one = store(0).lock(&ada, &who, Sharing::Cluster).unwrap();
        let two = store(1).lock(&ada, &who, Sharing::Cluster).unwrap();
        let err = store(2)
            .lock(&ada, &who, Sharing::Alone)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the instances of a cluster"), "{err}");
        drop((one, two));
        let alone = store(2).lock(&ada, &who, Sharing::Alone).unwrap();
        let err = store(0)
            .lock(&ada, &who, Sharing::Cluster)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(alone);
    }

    /// A runtime directory someone else could write to is refused, not
    /// used: in /tmp, another user could have made it first.
    #[test]
    fn a_shared_runtime_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tempfile::tempdir().unwrap();
        fs::set_permissions(runtime.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let store = AccountStore::with_runtime_dir(dir.path(), runtime.path().to_owned());
        let who = Identity {
            origin: None,
            user: "ada".into(),
            fallback: None,
        };
        let err = store
            .lock(&AccountId::new("ada"), &who, Sharing::Alone)
            .unwrap_err();
        assert!(matches!(err, AccountError::RuntimeDir { .. }), "{err}");
    }

    /// A logged-out page that shows its login form answers the check as
    /// soon as it loads; without a `logged_out` sign, the check waits its
    /// whole timeout (virtual time, under the paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_logged_out_sign_ends_the_check_without_waiting_the_timeout() {
        use crate::browser::Browser;
        use crate::browser::sim::{SimBrowser, SimElement, SimPage, SimSite};
        let mut site = SimSite::default();
        let page_with = |sel: &str| SimPage {
            elements: [(sel.to_owned(), SimElement::default())].into(),
            ..SimPage::default()
        };
        site.pages
            .insert("http://shop.test/out".into(), page_with("form#login"));
        site.pages
            .insert("http://shop.test/in".into(), page_with("#name"));
        let browser = SimBrowser::new(site);
        let page = browser.new_page(SessionId(0)).await.unwrap();
        let timeout = std::time::Duration::from_secs(10);
        let (name, form) = (vec!["#name".to_owned()], vec!["form#login".to_owned()]);

        let t = tokio::time::Instant::now();
        let out =
            page_logged_in(page.as_ref(), "http://shop.test/out", &name, &form, timeout).await;
        assert_eq!(out.ok(), Some(false));
        assert!(t.elapsed() < timeout, "waited {:?}", t.elapsed());

        let t = tokio::time::Instant::now();
        let out = page_logged_in(page.as_ref(), "http://shop.test/out", &name, &[], timeout).await;
        assert_eq!(out.ok(), Some(false));
        assert!(
            t.elapsed() >= timeout,
            "without the sign the check waits: {:?}",
            t.elapsed()
        );

        let inn = page_logged_in(page.as_ref(), "http://shop.test/in", &name, &form, timeout).await;
        assert_eq!(inn.ok(), Some(true));
    }

    #[test]
    fn a_corrupt_state_file_is_a_located_error_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = AccountStore::new(dir.path());
        let ada = AccountId::new("ada");
        fs::create_dir_all(dir.path().join("accounts")).unwrap();
        fs::write(store.path(&ada), "{\"cookies\": [\"s3cret\"]}").unwrap();
        let err = store.load(&ada).unwrap_err().to_string();
        assert!(
            err.contains("ada.json") && err.contains("`cookies[0]`"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
}
