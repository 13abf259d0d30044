//! The dashboard's **Log in**: a person logs an account of the running
//! baton in, from any browser, while the other accounts go on buying.
//!
//! `POST /api/accounts/ACCOUNT/login` asks the scheduler to hold the account
//! (between cycles, never under its run: I10), opens its session on its
//! login page and answers where the login's page is: `/login/ACCOUNT/`,
//! the same page `baton login --remote` serves. Its stream and input sit
//! behind the dashboard's gate like every other API call. **Done** checks
//! and saves the session and lets the account's targets run again;
//! **Cancel**, 15 minutes, a lost lease or baton stopping end it without
//! saving. The account's targets are skipped meanwhile, with the reason on
//! the dashboard.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use tokio::sync::oneshot;

use super::{Dashboard, error, routes};
use crate::id::AccountId;
use crate::login::{Finished, Held, Login, LoginRefused};
use crate::remote::{Input, PAGE};
use crate::scheduler::Command;

/// The logins open on this dashboard, by account.
#[derive(Clone, Default)]
pub struct Logins(Arc<std::sync::Mutex<HashMap<AccountId, Arc<Login>>>>);

impl Logins {
    fn get(&self, account: &AccountId) -> Option<Arc<Login>> {
        crate::sync::lock(&self.0).get(account).cloned()
    }

    /// Forgets `login` if it is still the account's.
    fn forget(&self, login: &Arc<Login>) {
        let mut open = crate::sync::lock(&self.0);
        if open
            .get(login.account())
            .is_some_and(|l| Arc::ptr_eq(l, login))
        {
            open.remove(login.account());
        }
    }
}

fn page_of(account: &AccountId) -> String {
    routes::for_target(routes::LOGIN_PAGE, account.as_str())
}

/// `POST /api/accounts/{account}/login`: starts a login (201), or points
/// at the one already open (200).
pub(super) async fn start(State(d): State<Dashboard>, Path(account): Path<String>) -> Response {
    let id = AccountId::new(&account);
    if d.logins.get(&id).is_some() {
        return Json(json!({"page": page_of(&id)})).into_response();
    }
    let held = match hold(&d, &id).await {
        Ok(held) => held,
        Err(why) => return error(StatusCode::SERVICE_UNAVAILABLE, why),
    };
    let login = match held {
        Ok(held) => Login::open(held).await,
        Err(e) => Err(e),
    };
    let login = match login {
        Ok(l) => Arc::new(l),
        Err(e) => {
            let status = match e {
                LoginRefused::Unknown(_) => StatusCode::NOT_FOUND,
                LoginRefused::NoLoginPage(_) => StatusCode::UNPROCESSABLE_ENTITY,
                LoginRefused::Busy(_) | LoginRefused::Cluster(_) => StatusCode::CONFLICT,
                LoginRefused::Page(_) => StatusCode::BAD_GATEWAY,
                LoginRefused::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            };
            return error(status, e.to_string());
        }
    };
    crate::sync::lock(&d.logins.0).insert(id.clone(), login.clone());
    // Whatever ends it (Cancel, the time limit, baton stopping), it is
    // closed and forgotten here.
    let logins = d.logins.clone();
    tokio::spawn(async move {
        login.ended().cancelled().await;
        logins.forget(&login);
        login.close().await;
    });
    (StatusCode::CREATED, Json(json!({"page": page_of(&id)}))).into_response()
}

/// How long Log in waits for a run on the account to end.
const WAIT_FOR_RUN: Duration = Duration::from_secs(30);

/// Asks the scheduler to hold `account`. A run on the account (or on its
/// session) is waited for, woken by the registry's changes, for up to
/// [`WAIT_FOR_RUN`]: a person pressing Log in mid-run gets the account
/// when the run ends, not an error.
async fn hold(
    d: &Dashboard,
    account: &AccountId,
) -> Result<Result<Held, LoginRefused>, &'static str> {
    use crate::registry::Refusal;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_RUN;
    let mut changes = d.view.run_changes();
    loop {
        changes.borrow_and_update();
        let (tx, rx) = oneshot::channel();
        if d.commands
            .send(Command::Login(account.clone(), tx))
            .await
            .is_err()
        {
            return Err("the scheduler has stopped");
        }
        // A reply that comes too late is dropped, and the hold with it.
        let Ok(Ok(held)) = tokio::time::timeout_at(deadline, rx).await else {
            return Err("the scheduler is busy with a cycle; try again when it is sleeping");
        };
        let busy = matches!(
            held,
            Err(LoginRefused::Busy(
                Refusal::AccountBusy { .. } | Refusal::SessionBusy { .. }
            ))
        );
        if !busy {
            return Ok(held);
        }
        let changed = tokio::time::timeout_at(deadline, changes.changed()).await;
        if !matches!(changed, Ok(Ok(()))) {
            return Ok(held);
        }
    }
}

/// The open login of `account`.
fn open(d: &Dashboard, account: &str) -> Option<Arc<Login>> {
    d.logins.get(&AccountId::new(account))
}

/// The answer when `account` has no open login: how to start one.
fn not_open(account: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no login of account `{account}` is open; press Log in on the dashboard"),
    )
}

/// `GET /login/{account}/`: the page itself, an empty shell (public, like
/// the dashboard's own page).
pub(super) async fn page() -> Html<&'static str> {
    Html(PAGE)
}

pub(super) async fn frames(State(d): State<Dashboard>, Path(account): Path<String>) -> Response {
    match open(&d, &account) {
        Some(l) => l.screen().frames(d.stop.clone()).into_response(),
        None => not_open(&account),
    }
}

pub(super) async fn input(
    State(d): State<Dashboard>,
    Path(account): Path<String>,
    Json(i): Json<Input>,
) -> Response {
    match open(&d, &account) {
        Some(l) => l.screen().input(i).await,
        None => not_open(&account),
    }
}

/// Done: saved (and ended), or still logged out (and still open).
pub(super) async fn done(State(d): State<Dashboard>, Path(account): Path<String>) -> Response {
    let Some(login) = open(&d, &account) else {
        return not_open(&account);
    };
    match login.finish().await {
        Finished::Saved => {
            d.logins.forget(&login);
            login.close().await;
            Json(json!({
                "ended": true,
                "logged_in": true,
                "message": format!("account `{account}` is logged in; its session is saved and its targets run again. You can close this page."),
            }))
            .into_response()
        }
        Finished::StillLoggedOut => Json(json!({
            "ended": false,
            "logged_in": false,
            "message": format!("account `{account}` is still logged out by its check; finish logging in, then press Done again"),
        }))
        .into_response(),
        Finished::Failed(why) => Json(json!({
            "ended": false,
            "logged_in": false,
            "message": format!("{why}; press Done to try again, or Cancel"),
        }))
        .into_response(),
    }
}

/// Cancel: ends the login; nothing saved.
pub(super) async fn cancel(State(d): State<Dashboard>, Path(account): Path<String>) -> Response {
    let Some(login) = open(&d, &account) else {
        return not_open(&account);
    };
    d.logins.forget(&login);
    login.close().await;
    Json(json!({"ended": true, "message": "left without saving; the account's targets run again"}))
        .into_response()
}
