//! `baton login ACCOUNT`: a person logs an account in by hand (2FA, a
//! challenge) in a headed browser, and baton keeps the session; `--check`
//! says whether the saved session is still logged in; `--import` and
//! `--export` move a session in and out in Playwright's `storageState`
//! format.
//!
//! Every form takes the account's lock first, so none of them drives an
//! account a running baton is using. The session files are written with
//! mode 0600 and their contents never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Failure, Signals, demo_shop_base};
use crate::account::{Account, AccountStore, Check, LOGGED_OUT};
use crate::browser::chrome::ChromeBrowser;
use crate::browser::storage::StorageState;
use crate::browser::{Browser, Page};
use crate::config::Config;
use crate::script::ScriptHost;

pub(super) struct Args {
    pub account: String,
    pub check: bool,
    /// Log in through a page served on this address, the session headless
    /// (`--remote`).
    pub remote: Option<SocketAddr>,
    pub import: Option<PathBuf>,
    pub export: Option<PathBuf>,
    pub config: PathBuf,
}

pub(super) async fn run(args: Args) -> Result<(), Failure> {
    let mut cfg = super::load(&args.config)?;
    let Some(account) = cfg
        .accounts
        .get(args.account.as_str())
        .map(|a| (**a).clone())
    else {
        let known: Vec<String> = cfg.accounts.keys().map(|a| format!("`{a}`")).collect();
        return Err(Failure::usage(format!(
            "unknown account `{}` (accounts in {}: {})",
            args.account,
            args.config.display(),
            if known.is_empty() {
                "none; add one under `accounts:`".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    if let Some(addr) = args.remote
        && !addr.ip().is_loopback()
        && remote_token(&cfg).is_none()
    {
        return Err(Failure::usage(format!(
            "--listen {addr} is not loopback: set `dashboard.token` (or BATON_DASHBOARD_TOKEN) so only you can drive the session, or keep 127.0.0.1 and use an SSH tunnel"
        )));
    }
    let store = AccountStore::new(&cfg.state_dir);
    let _lock = store
        .lock(
            &account.id,
            &cfg.identity(&account),
            crate::account::Sharing::Alone,
        )
        .map_err(|e| Failure::runtime(e.to_string()))?;

    if let Some(file) = &args.import {
        import(&store, &account, file)?;
    }
    if let Some(file) = &args.export {
        export(&store, &account, file)?;
    }
    let interactive = !args.check && args.import.is_none() && args.export.is_none();
    if !(args.check || interactive) {
        return Ok(());
    }

    let stop = CancellationToken::new();
    let (_shop, base) = demo_shop_base(&cfg, &stop).await;
    if let Some(base) = &base {
        cfg.resolve_shop_urls(base);
    }
    let account = cfg
        .accounts
        .get(&account.id)
        .map_or(account, |a| (**a).clone());
    let profile = tempfile::Builder::new()
        .prefix("baton-login-")
        .tempdir()
        .map_err(|e| Failure::runtime(format!("cannot create a temporary profile: {e}")))?;
    let mut chrome = cfg.browser.chrome(profile.path().to_owned());
    chrome.headless = !interactive || args.remote.is_some();
    let browser = ChromeBrowser::new(chrome, None);
    let how = match (interactive, args.remote) {
        (false, _) => How::Check,
        (true, None) => How::Window,
        (true, Some(addr)) => How::Remote(addr),
    };
    let result = session(&cfg, &store, &account, &browser, how).await;
    browser.shutdown().await;
    stop.cancel();
    result
}

/// How a person logs the account in, if at all.
#[derive(Clone, Copy)]
enum How {
    /// `--check`: no person; the saved session is checked.
    Check,
    /// In a headed browser window on this machine.
    Window,
    /// Through the page served on this address (`--remote`).
    Remote(SocketAddr),
}

/// Opens the account's session, lets a person log in (a window or the
/// remote page), checks it and saves it when logged in.
async fn session(
    cfg: &Config,
    store: &AccountStore,
    account: &Account,
    browser: &ChromeBrowser,
    how: How,
) -> Result<(), Failure> {
    let interactive = !matches!(how, How::Check);
    let runtime = |e: &dyn std::fmt::Display| Failure::runtime(e.to_string());
    if let Some(saved) = store.load(&account.id).map_err(|e| runtime(&e))? {
        browser
            .seed(account.session, saved)
            .await
            .map_err(|e| runtime(&e))?;
    }
    let page = browser
        .new_page(account.session)
        .await
        .map_err(|e| runtime(&e))?;
    if interactive {
        let Some(url) = account.login_page() else {
            return Err(Failure::usage(format!(
                "account `{}` has no page to log in on: give it `login_url:`",
                account.id
            )));
        };
        page.navigate(url, cfg.browser.timeout)
            .await
            .map_err(|e| runtime(&e))?;
        let person_done = if let How::Remote(addr) = how {
            remote_login(cfg, account, page.clone(), addr).await?
        } else {
            say!(
                "Log in to account `{}` in the browser window (two-step codes and challenges included), then press Enter here. Ctrl-C leaves without saving.",
                account.id
            );
            enter_or_signal().await
        };
        if !person_done {
            page.close().await;
            return Err(Failure::runtime("stopped; nothing saved"));
        }
    }
    // The scripts are loaded only for a check that is a script.
    let scripts = match account.check {
        Check::Script(_) => ScriptHost::builder(&cfg.scripts_dir)
            .secrets(cfg.secrets.clone())
            .redactor(crate::redact::global())
            .build(),
        Check::Page { .. } => ScriptHost::off(),
    };
    let logged_in = crate::login::check(cfg, &scripts, account, page.clone()).await;
    page.close().await;
    match logged_in {
        Ok(true) => {
            let state = browser
                .storage_state(account.session, &cfg.account_origins(account))
                .await
                .map_err(|e| runtime(&e))?;
            store.save(&account.id, &state).map_err(|e| runtime(&e))?;
            say!(
                "account `{}`: logged in; session saved to {}",
                account.id,
                store.path(&account.id).display()
            );
            Ok(())
        }
        Ok(false) => Err(Failure::runtime(format!(
            "account `{}`: {LOGGED_OUT}{}",
            account.id,
            if interactive {
                "; nothing saved"
            } else {
                "; log in with `baton login ACCOUNT`, or let a run's login script do it"
            }
        ))),
        Err(e) => Err(Failure::runtime(format!(
            "account `{}`: the login check failed: {e}",
            account.id
        ))),
    }
}

/// Serves the remote login page for `page` until the person presses Done
/// (true), or Cancel, or baton is stopped (false).
async fn remote_login(
    cfg: &Config,
    account: &Account,
    page: Arc<dyn Page>,
    addr: SocketAddr,
) -> Result<bool, Failure> {
    let token = remote_token(cfg);
    let hosts = cfg
        .dashboard
        .as_ref()
        .map(|d| d.hosts.clone())
        .unwrap_or_default();
    let mut running = super::remote::start(addr, token.clone(), hosts, page)
        .await
        .map_err(|e| Failure::usage(e.to_string()))?;
    say!(
        "Open http://{}/ to log in account `{}` (two-step codes and challenges included), then press Done there.{} Ctrl-C leaves without saving.",
        running.addr,
        account.id,
        if token.is_some() {
            " The page asks for the dashboard token."
        } else {
            ""
        }
    );
    let mut signals = Signals::new();
    let done = tokio::select! {
        d = running.done.recv() => d.unwrap_or(false),
        () = signals.recv() => false,
    };
    running.stop().await;
    Ok(done)
}

/// The token the remote page asks for: the dashboard's.
fn remote_token(cfg: &Config) -> Option<String> {
    match &cfg.dashboard {
        Some(d) => d.token.clone(),
        None => std::env::var("BATON_DASHBOARD_TOKEN").ok(),
    }
}

/// Waits for a line on stdin (true) or a signal or closed stdin (false).
async fn enter_or_signal() -> bool {
    let mut signals = Signals::new();
    let line = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map(|n| n > 0)
    });
    tokio::select! {
        r = line => matches!(r, Ok(Ok(true))),
        () = signals.recv() => false,
    }
}

/// The largest `storageState` file `--import` reads: real ones are a few
/// kilobytes; this keeps `/dev/zero` or a wrong file from filling memory.
const MAX_IMPORT: u64 = 16 * 1024 * 1024;

/// Reads `file` as UTF-8, at most `max` bytes; a located error otherwise,
/// without the content.
fn read_capped(file: &Path, max: u64) -> Result<String, Failure> {
    use std::io::Read;
    let err = |why: String| Failure::usage(format!("cannot read `{}`: {why}", file.display()));
    let f = std::fs::File::open(file).map_err(|e| err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > max {
        return Err(err(format!(
            "it is larger than {} MB; a storageState file is a few kilobytes",
            max / (1024 * 1024)
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        err(format!(
            "byte {} is not UTF-8; a storageState file is JSON",
            e.utf8_error().valid_up_to()
        ))
    })
}

fn import(store: &AccountStore, account: &Account, file: &Path) -> Result<(), Failure> {
    let text = read_capped(file, MAX_IMPORT)?;
    let state = StorageState::from_json(&text)
        .map_err(|e| Failure::usage(format!("{}: {e}", file.display())))?;
    store
        .save(&account.id, &state)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    say!(
        "account `{}`: imported {} cookie(s) and local storage for {} origin(s) from {}; saved to {}",
        account.id,
        state.cookies.len(),
        state.origins.len(),
        file.display(),
        store.path(&account.id).display()
    );
    Ok(())
}

fn export(store: &AccountStore, account: &Account, file: &Path) -> Result<(), Failure> {
    let Some(state) = store
        .load(&account.id)
        .map_err(|e| Failure::runtime(e.to_string()))?
    else {
        return Err(Failure::runtime(format!(
            "account `{}` has no saved session to export; log in first (`baton login {}`)",
            account.id, account.id
        )));
    };
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| Failure::usage(format!("`{}` is not a file name", file.display())))?
        .to_string_lossy()
        .into_owned();
    // Whole or not at all, and mode 0600: it is a login.
    crate::state::write_atomic(&dir, &name, &state).map_err(|e| Failure::runtime(e.to_string()))?;
    say!(
        "account `{}`: exported {} cookie(s) and local storage for {} origin(s) to {}",
        account.id,
        state.cookies.len(),
        state.origins.len(),
        file.display()
    );
    Ok(())
}
