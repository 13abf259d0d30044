//! Logging an account in: a run's login gate (check, login script, check
//! again, save), the account's login check on a page (shared by every
//! form of `baton login` and by the dashboard), and, in a
//! running baton, the dashboard's **Log in**: the account held in the
//! registry like a run (I10) while a person drives its session through a
//! [`Screen`], then checked, saved, and let run again.
//!
//! A running baton holds its accounts' locks for its whole life, so `baton
//! login` in another terminal is refused; this is how the account of a
//! running baton is logged in. The scheduler makes the hold
//! ([`crate::scheduler::Command::Login`]), so a login starts between
//! cycles and never under a run; the dashboard keeps the [`Login`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::account::{Account, AccountStore, Check, CheckError, LOGGED_OUT};
use crate::browser::Page;
use crate::cluster::Claim;
use crate::config::Config;
use crate::flow::{StepContext, StepEnd, Target};
use crate::id::{AccountId, SessionId};
use crate::parts::Parts;
use crate::registry::{LoginHold, RunControl};
use crate::remote::Screen;
use crate::script::{Probe, ScriptHost};

/// How long a login from the dashboard may stay open: a forgotten tab
/// must not keep an account's targets waiting for ever.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs `account`'s login check on `page`: `Ok(true)` when logged in,
/// `Ok(false)` when logged out, `Err` when the check itself failed. A
/// check script runs on `scripts`, seeing the first target on the account
/// as in a run.
pub async fn check(
    cfg: &Config,
    scripts: &ScriptHost,
    account: &Account,
    page: Arc<dyn Page>,
) -> Result<bool, CheckError> {
    match &account.check {
        Check::Page {
            url,
            selector,
            logged_out,
        } => {
            crate::account::page_logged_in(
                page.as_ref(),
                url,
                selector,
                logged_out,
                cfg.browser.timeout,
            )
            .await
        }
        Check::Script(script) => {
            let target = cfg
                .targets
                .iter()
                .find(|t| t.account.as_ref() == Some(&account.id))
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(Target {
                        id: account.id.as_str().into(),
                        url: account.login_page().unwrap_or_default().to_owned(),
                        flow: String::new(),
                        account: Some(account.id.clone()),
                        params: serde_json::Map::new(),
                        budget: crate::budget::Budget::Unset,
                        schedule: crate::schedule::Schedule::default(),
                    })
                });
            let cx = StepContext {
                label: "login".into(),
                page: Some(page),
                target,
                cancel: CancellationToken::new(),
                commit: None,
                timeouts: cfg.timeouts(),
                account: Some(Arc::new(account.clone())),
            };
            match scripts
                .run_script(script, cx, Probe::default())
                .await
                .map(|r| r.end)
            {
                Ok(StepEnd::Outcome(o)) if o == LOGGED_OUT => Ok(false),
                Ok(StepEnd::Outcome(outcome)) => Err(CheckError::Outcome {
                    script: script.clone(),
                    outcome,
                }),
                Ok(_) => Ok(true),
                Err(e) => Err(CheckError::Script(e.message)),
            }
        }
    }
}

/// How a run's login gate went.
pub(crate) enum Gate {
    LoggedIn,
    /// Logged out, and logging in did not help (or was not possible).
    LoggedOut(String),
    /// The check itself failed (the page did not load): not a verdict.
    Failed(CheckError),
}

/// What the login gate needs of a run: the account's check and its login
/// script, run as the run's own steps on its page, and saving its session.
pub(crate) trait Session {
    fn target(&self) -> &Target;
    /// Whether the run's session is logged into `account`, by its check.
    async fn logged_in(&mut self, account: &Account) -> Result<bool, CheckError>;
    /// Runs the login script `script` as a step of the run.
    async fn run_login(&mut self, script: &str) -> Result<StepEnd, crate::flow::StepError>;
    /// Saves the session as the account's stored state (logged, never
    /// failing the run).
    async fn save(&mut self, account: &Account);
}

/// A run's login gate, before its steps (I10 holds the account already):
/// checks the account's login and, when the session is logged out, runs
/// its login script once and checks again. A run never buys on a session
/// it has not seen logged in; a login that does not take is not retried
/// (retrying a wrong password is what locks accounts).
pub(crate) async fn gate(run: &mut impl Session, account: &Account) -> Gate {
    match run.logged_in(account).await {
        Ok(true) => return Gate::LoggedIn,
        Ok(false) => {}
        Err(e) => return Gate::Failed(e),
    }
    let id = &account.id;
    let Some(script) = &account.login else {
        return Gate::LoggedOut(format!(
            "account `{id}` is logged out and has no login script; log it in from the dashboard (Log in), or with `baton login {id}` while baton is stopped"
        ));
    };
    tracing::info!(target = %run.target().id, account = %id, "account `{id}` is logged out; running `{script}`");
    match run.run_login(script).await {
        Ok(StepEnd::Continue | StepEnd::Paused(_)) => {}
        Ok(StepEnd::Outcome(name)) => {
            return Gate::LoggedOut(format!(
                "account `{id}`: the login script `{script}` ended with outcome `{name}`"
            ));
        }
        Err(e) => {
            return Gate::LoggedOut(format!(
                "account `{id}`: the login script `{script}` failed: {}",
                e.message
            ));
        }
    }
    match run.logged_in(account).await {
        Ok(true) => {
            tracing::info!(target = %run.target().id, account = %id, "logged in");
            // Saved at once: a crash later in the run keeps the login.
            run.save(account).await;
            Gate::LoggedIn
        }
        Ok(false) => Gate::LoggedOut(format!(
            "account `{id}` is still logged out after its login script `{script}` (a wrong password, or a challenge for a person: log it in from the dashboard, or with `baton login {id}` while baton is stopped)"
        )),
        Err(e) => Gate::Failed(e),
    }
}

/// Why a login from the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoginRefused {
    #[error("unknown account `{0}`")]
    Unknown(AccountId),
    #[error("account `{0}` has no page to log in on: give it `login_url:` in flows.yaml")]
    NoLoginPage(AccountId),
    /// A run (or another login) holds the account or its session, or it
    /// is quarantined.
    #[error("{0}; try again when it ends")]
    Busy(#[from] crate::registry::Refusal),
    #[error("the cluster refused the account's lease: {0}")]
    Cluster(#[from] crate::cluster::Refusal),
    #[error("cannot open the account's session: {0}")]
    Page(String),
    #[error("baton is stopping")]
    Stopping,
}

/// An account held for a person, as the scheduler hands it over: the
/// registry's hold, the cluster's lease, and what the login needs.
pub struct Held {
    pub(crate) hold: LoginHold,
    pub(crate) claim: Claim,
    /// Cancelled when the lease is lost.
    pub(crate) control: Arc<RunControl>,
    pub(crate) account: Arc<Account>,
    pub(crate) config: Arc<Config>,
    pub(crate) parts: Arc<Parts>,
    /// Cancelled when the scheduler finishes (a signal, or the last of
    /// `--cycles N`): a login ends with it.
    pub(crate) stop: CancellationToken,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("account", &self.account.id)
            .field("session", &self.hold.session())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Holds `account` in `parts`' registry and leases for a person. The
    /// scheduler's end of [`crate::scheduler::Command::Login`].
    pub(crate) async fn take(
        parts: &Arc<Parts>,
        config: Arc<Config>,
        account: &AccountId,
        stop: CancellationToken,
    ) -> Result<Held, LoginRefused> {
        let Some(a) = config.accounts.get(account).cloned() else {
            return Err(LoginRefused::Unknown(account.clone()));
        };
        if a.login_page().is_none() {
            return Err(LoginRefused::NoLoginPage(account.clone()));
        }
        // The cluster's lease first, as a run's: no other instance drives
        // the account while a person does. Its target is the login's own.
        let claim = parts
            .leases
            .claim(&format!("login:{account}").as_str().into(), Some(account))
            .await?;
        let hold = parts.registry.hold_for_login(a.session, account)?;
        let control = Arc::new(RunControl::default());
        claim.keep_alive(control.clone());
        Ok(Held {
            hold,
            claim,
            control,
            account: a,
            config,
            parts: parts.clone(),
            stop,
        })
    }
}

/// What pressing Done came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Logged in; the session is saved and the account's targets run
    /// again.
    Saved,
    /// The check says logged out: the login stays open to try again.
    StillLoggedOut,
    /// The check could not run (the login stays open), or the save failed.
    Failed(String),
}

/// A login in progress from the dashboard: the hold, and the account's
/// session on the person's screen. Shared (the dashboard's handlers each
/// borrow it); [`Login::close`] ends it once, whoever calls it first.
pub struct Login {
    account: Arc<Account>,
    config: Arc<Config>,
    parts: Arc<Parts>,
    session: SessionId,
    claim: Claim,
    /// Taken (and so dropped) by [`Login::close`], after the page closed.
    /// An async lock held for the whole close, so a second caller returns
    /// only once the first has freed the account.
    hold: tokio::sync::Mutex<Option<LoginHold>>,
    screen: Screen,
    /// Fires when the login has to end: Cancel, [`LOGIN_TIMEOUT`], a lost
    /// lease, or baton stopping. Whoever owns the login closes it then.
    ended: CancellationToken,
}

impl Login {
    /// Opens the held account's session on its login page and starts
    /// streaming it.
    pub async fn open(held: Held) -> Result<Login, LoginRefused> {
        let Held {
            hold,
            claim,
            control,
            account,
            config,
            parts,
            stop,
        } = held;
        let session = hold.session();
        let page_err = |e: &dyn std::fmt::Display| LoginRefused::Page(e.to_string());
        let page = parts
            .browser
            .new_page(session)
            .await
            .map_err(|e| page_err(&e))?;
        let url = account.login_page().unwrap_or_default();
        if let Err(e) = page.navigate(url, config.browser.timeout).await {
            page.close().await;
            return Err(page_err(&e));
        }
        let screen = match Screen::start(page.clone()).await {
            Ok(s) => s,
            Err(e) => {
                page.close().await;
                return Err(page_err(&e));
            }
        };
        let ended = stop.child_token();
        let end = ended.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = control.token().cancelled() => end.cancel(),
                () = tokio::time::sleep(LOGIN_TIMEOUT) => end.cancel(),
                () = end.cancelled() => {}
            }
        });
        tracing::info!(account = %account.id, "a person is logging account `{}` in from the dashboard", account.id);
        Ok(Login {
            account,
            config,
            parts,
            session,
            claim,
            hold: tokio::sync::Mutex::new(Some(hold)),
            screen,
            ended,
        })
    }

    pub fn account(&self) -> &AccountId {
        &self.account.id
    }

    pub fn screen(&self) -> &Screen {
        &self.screen
    }

    /// Fires when the login has to end: Cancel, [`LOGIN_TIMEOUT`], a
    /// lost lease, or baton stopping.
    pub fn ended(&self) -> &CancellationToken {
        &self.ended
    }

    /// Done: checks the session and, when logged in, saves it, makes it
    /// what the session starts from, and lets the account's targets run
    /// again (a hold after a failed login is lifted).
    pub async fn finish(&self) -> Finished {
        let a = &self.account;
        // The check runs on a page of its own in the same session, so the
        // person's page stays as they left it when it says "not yet".
        let page = match self.parts.browser.new_page(self.session).await {
            Ok(p) => p,
            Err(e) => {
                return Finished::Failed(format!("cannot open a page to check the login: {e}"));
            }
        };
        let checked = check(&self.config, &self.parts.scripts, a, page.clone()).await;
        page.close().await;
        match checked {
            Ok(true) => {}
            Ok(false) => return Finished::StillLoggedOut,
            Err(e) => return Finished::Failed(format!("the login check failed: {e}")),
        }
        let saved = AccountStore::new(&self.config.state_dir)
            .save_session(
                self.parts.browser.as_ref(),
                self.session,
                &self.config.account_origins(a),
                self.config.browser.timeout,
                &a.id,
            )
            .await;
        if let Err(e) = saved {
            return Finished::Failed(format!("logged in, but the session was not saved: {e}"));
        }
        if self.parts.logged_out.lift(&a.id) {
            tracing::info!(account = %a.id, "account `{}` logged in from the dashboard; its targets run again", a.id);
        } else {
            tracing::info!(account = %a.id, "account `{}` logged in from the dashboard; session saved", a.id);
        }
        Finished::Saved
    }

    /// Ends the login: the page closes, then the lease and the hold on
    /// the account and its session go. Once; later calls do nothing.
    pub async fn close(&self) {
        self.ended.cancel();
        let mut hold = self.hold.lock().await;
        if hold.is_none() {
            return;
        }
        // The page is closed before the hold goes, so no run can open the
        // session while the person's page is still in it.
        self.screen.stop();
        self.screen.page().close().await;
        self.claim.release().await;
        drop(hold.take());
    }
}
