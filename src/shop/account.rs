//! The demo shop's accounts, as real shops have them: a login form, an
//! optional one-time-code step, a session cookie that the server expires,
//! and, once logged in, a cart and a saved address that belong to the
//! account rather than to the browser. The login form carries a one-time
//! token, as real shops' do, so a login is a form a page rendered, not a
//! POST replayed from elsewhere. Two browsers logged into one
//! account share that cart, so the overlap detector sees them as one
//! session (the overlap I10 prevents).
//!
//! Built-in accounts: `ada` (password `lovelace`) and `grace` (password
//! `hopper`, with a TOTP step whose seed is [`GRACE_TOTP_SEED`]).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::time::Instant;

use super::Details;
use super::{Shop, cookie, pages};

/// The cookie that carries a login.
pub(super) const AUTH_COOKIE: &str = "shop_auth";
/// The cookie between the password and the one-time code.
const PENDING_COOKIE: &str = "shop_pending";

/// `grace`'s TOTP seed (base32), as an authenticator app would hold it.
pub const GRACE_TOTP_SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// How long a login lasts unless `/admin/session_ttl` says otherwise.
pub(super) const DEFAULT_TTL: Duration = Duration::from_secs(30 * 60);

#[derive(Clone, Debug)]
pub(super) struct ShopAccount {
    pub password: String,
    pub totp_seed: Option<String>,
    pub address: Details,
    /// Successful logins so far.
    pub logins: u64,
}

/// A login: which account, until when.
#[derive(Clone, Debug)]
pub(super) struct Auth {
    pub account: String,
    pub expires: Instant,
}

pub(super) fn default_accounts() -> HashMap<String, ShopAccount> {
    let account = |password: &str, totp: Option<&str>, name: &str, address: &str| ShopAccount {
        password: password.into(),
        totp_seed: totp.map(str::to_owned),
        address: Details {
            name: name.into(),
            email: format!(
                "{}@example.com",
                name.split(' ').next().unwrap_or("me").to_lowercase()
            ),
            address: address.into(),
        },
        logins: 0,
    };
    HashMap::from([
        (
            "ada".to_owned(),
            account(
                "lovelace",
                None,
                "Ada Lovelace",
                "12 Analytical Way, London",
            ),
        ),
        (
            "grace".to_owned(),
            account(
                "hopper",
                Some(GRACE_TOTP_SEED),
                "Grace Hopper",
                "1 Compiler Court, Arlington",
            ),
        ),
    ])
}

/// The account a request is logged into, if its login is still valid.
pub(super) fn account_of(shop: &Shop, headers: &HeaderMap) -> Option<String> {
    let token = cookie(headers, AUTH_COOKIE)?;
    let s = shop.lock();
    let auth = s.auths.get(&token)?;
    (auth.expires > Instant::now()).then(|| auth.account.clone())
}

fn random_token(prefix: &str) -> String {
    use rand::Rng;
    let n: u128 = rand::rng().random();
    format!("{prefix}{n:032x}")
}

#[derive(Deserialize)]
pub(super) struct Next {
    #[serde(default)]
    next: Option<String>,
}

/// Only a path on this shop: never an open redirect.
fn next_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") => n.to_owned(),
        _ => "/account".to_owned(),
    }
}

pub(super) async fn login_page(State(shop): State<Shop>, Query(q): Query<Next>) -> Response {
    SignInPage::Plain
        .page(&shop, &next_path(q.next.as_deref()), None)
        .into_response()
}

/// Which sign-in page a login came from: the shop's own form, or the
/// provider's in a cross-origin frame. An error shows the same page again.
#[derive(Clone, Copy)]
enum SignInPage {
    Plain,
    Hosted,
}

impl SignInPage {
    /// The page with a fresh one-time token.
    fn page(self, shop: &Shop, next: &str, error: Option<&str>) -> axum::response::Html<String> {
        let token = random_token("c");
        shop.lock().login_tokens.insert(token.clone());
        match self {
            SignInPage::Plain => pages::login(next, &token, error),
            SignInPage::Hosted => {
                pages::login_hosted(next, &token, error, shop.card_origin().as_deref())
            }
        }
    }
}

/// `GET /account/login-hosted`: the sign-in form in the provider's frame.
pub(super) async fn login_hosted_page(State(shop): State<Shop>, Query(q): Query<Next>) -> Response {
    SignInPage::Hosted
        .page(&shop, &next_path(q.next.as_deref()), None)
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct HostedForm {
    #[serde(default)]
    credential: String,
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    token: String,
}

/// `POST /account/login-hosted`: the frame's credential, then the same
/// sign-in as the plain form's.
pub(super) async fn login_hosted(State(shop): State<Shop>, Form(f): Form<HostedForm>) -> Response {
    let (username, password) = super::card::signed_in_as(&f.credential).unwrap_or_default();
    sign_in(
        &shop,
        SignInPage::Hosted,
        &LoginForm {
            username,
            password,
            next: f.next,
            token: f.token,
        },
    )
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
    /// The form's one-time token.
    #[serde(default)]
    token: String,
}

pub(super) async fn login(State(shop): State<Shop>, Form(f): Form<LoginForm>) -> Response {
    sign_in(&shop, SignInPage::Plain, &f)
}

/// Checks the one-time token and the password, then signs in (or asks
/// for the two-step code); an error shows `form`'s page again.
fn sign_in(shop: &Shop, form: SignInPage, f: &LoginForm) -> Response {
    let next = next_path(f.next.as_deref());
    if !shop.lock().login_tokens.remove(&f.token) {
        return (
            StatusCode::FORBIDDEN,
            form.page(
                shop,
                &next,
                Some("This form has expired. Please sign in again."),
            ),
        )
            .into_response();
    }
    let account = {
        let s = shop.lock();
        s.accounts
            .get(f.username.trim())
            .filter(|a| a.password == f.password)
            .map(|a| (f.username.trim().to_owned(), a.totp_seed.is_some()))
    };
    match account {
        None => (
            StatusCode::UNAUTHORIZED,
            form.page(shop, &next, Some("Wrong username or password.")),
        )
            .into_response(),
        Some((name, true)) => {
            let token = random_token("p");
            shop.lock().pending.insert(token.clone(), name);
            let mut resp =
                Redirect::to(&format!("/account/totp?next={}", encode(&next))).into_response();
            set_cookie(&mut resp, PENDING_COOKIE, &token, Some(300));
            resp
        }
        Some((name, false)) => logged_in(shop, &name, &next),
    }
}

pub(super) async fn totp_page(Query(q): Query<Next>) -> Response {
    pages::totp(&next_path(q.next.as_deref()), None).into_response()
}

#[derive(Deserialize)]
pub(super) struct TotpForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    next: Option<String>,
}

pub(super) async fn totp(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Form(f): Form<TotpForm>,
) -> Response {
    let next = next_path(f.next.as_deref());
    let pending = cookie(&headers, PENDING_COOKIE);
    let account = {
        let s = shop.lock();
        pending
            .as_ref()
            .and_then(|p| s.pending.get(p))
            .and_then(|name| {
                s.accounts
                    .get(name)
                    .map(|a| (name.clone(), a.totp_seed.clone()))
            })
    };
    let Some((name, Some(seed))) = account else {
        return Redirect::to(&format!("/account/login?next={}", encode(&next))).into_response();
    };
    if !code_matches(&seed, f.code.trim()) {
        return (
            StatusCode::UNAUTHORIZED,
            pages::totp(&next, Some("That code is not right. Try the current one.")),
        )
            .into_response();
    }
    if let Some(p) = &pending {
        shop.lock().pending.remove(p);
    }
    let mut resp = logged_in(&shop, &name, &next);
    set_cookie(&mut resp, PENDING_COOKIE, "", Some(0));
    resp
}

/// Whether `code` is `seed`'s code now, or one step either side (clock
/// skew, as servers allow).
fn code_matches(seed: &str, code: &str) -> bool {
    let Ok(secret) = totp_rs::Secret::try_from_base32(seed) else {
        return false;
    };
    let totp = totp_rs::Builder::new()
        .with_secret(secret)
        .with_skew(1)
        .build_noncompliant();
    totp.check_current(code).is_some()
}

fn logged_in(shop: &Shop, name: &str, next: &str) -> Response {
    let token = random_token("a");
    let ttl = {
        let mut s = shop.lock();
        let ttl = s.auth_ttl;
        s.auths.insert(
            token.clone(),
            Auth {
                account: name.to_owned(),
                expires: Instant::now() + ttl,
            },
        );
        if let Some(a) = s.accounts.get_mut(name) {
            a.logins += 1;
        }
        ttl
    };
    let mut resp = Redirect::to(next).into_response();
    // A persistent cookie, as shops use; the server ends it sooner when
    // the login expires.
    set_cookie(&mut resp, AUTH_COOKIE, &token, Some(ttl.as_secs().max(1)));
    resp
}

/// `GET /account`: who is logged in, with the saved address; a logged-out
/// visitor is sent to the login form.
pub(super) async fn account_page(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    let Some(name) = account_of(&shop, &headers) else {
        return Redirect::to("/account/login?next=/account").into_response();
    };
    let s = shop.lock();
    let Some(a) = s.accounts.get(&name) else {
        return Redirect::to("/account/login?next=/account").into_response();
    };
    let key = format!("@{name}");
    let orders = s.orders.iter().filter(|o| o.session == key).count();
    pages::account(&name, &a.address, orders).into_response()
}

/// `GET /api/account`: who is logged in, for the account page's script.
/// It takes the shop a moment, so the greeting appears after `load`.
pub(super) async fn account_api(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    tokio::time::sleep(ACCOUNT_API_DELAY).await;
    let Some(name) = account_of(&shop, &headers) else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let full = shop
        .lock()
        .accounts
        .get(&name)
        .map(|a| a.address.name.clone())
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "user": name, "name": full })).into_response()
}

/// How long the account API takes: the greeting is not there at `load`.
const ACCOUNT_API_DELAY: Duration = Duration::from_millis(250);

pub(super) async fn logout(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie(&headers, AUTH_COOKIE) {
        shop.lock().auths.remove(&token);
    }
    let mut resp = Redirect::to("/account/login").into_response();
    set_cookie(&mut resp, AUTH_COOKIE, "", Some(0));
    resp
}

// --- control API -----------------------------------------------------------

/// `GET /admin/accounts`: per account, its logins, live sessions, cart,
/// orders and overlaps.
pub(super) async fn admin_accounts(State(shop): State<Shop>) -> axum::Json<serde_json::Value> {
    let now = Instant::now();
    let s = shop.lock();
    let mut names: Vec<&String> = s.accounts.keys().collect();
    names.sort();
    let list: Vec<serde_json::Value> = names
        .into_iter()
        .map(|name| {
            let key = format!("@{name}");
            serde_json::json!({
                "name": name,
                "logins": s.accounts[name].logins,
                "sessions": s.auths.values().filter(|a| &a.account == name && a.expires > now).count(),
                "cart_lines": s.sessions.get(&key).map_or(0, |x| x.cart.len()),
                "orders": s.orders.iter().filter(|o| o.session == key).count(),
                "overlaps": s.overlaps_by.get(&key).copied().unwrap_or(0),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "accounts": list }))
}

/// `POST /admin/accounts/NAME/expire`: ends every login of the account now,
/// as a shop's session timeout would.
pub(super) async fn expire(State(shop): State<Shop>, Path(name): Path<String>) -> Response {
    let mut s = shop.lock();
    if !s.accounts.contains_key(&name) {
        return (StatusCode::NOT_FOUND, format!("no account {name}")).into_response();
    }
    let before = s.auths.len();
    s.auths.retain(|_, a| a.account != name);
    let ended = before - s.auths.len();
    axum::Json(serde_json::json!({ "account": name, "ended": ended })).into_response()
}

/// `POST /admin/session_ttl/MS`: how long logins made from now on last.
pub(super) async fn session_ttl(State(shop): State<Shop>, Path(ms): Path<u64>) -> Response {
    shop.lock().auth_ttl = Duration::from_millis(ms.max(1));
    axum::Json(serde_json::json!({ "session_ttl_ms": ms })).into_response()
}

fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: Option<u64>) {
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    let c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Percent-encodes a path for a query string.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
