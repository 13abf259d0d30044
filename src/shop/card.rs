//! The demo shop's second origin (another port): hosted fields in an
//! iframe, the way payment providers (Stripe, Adyen, Braintree) and
//! embedded sign-in providers serve them.
//!
//! - `/fields`: card fields on the payment page. They turn the card into a
//!   token and hand it to the shop's page by `postMessage`; the shop never
//!   sees the fields themselves.
//! - `/signin`: a hosted sign-in form on `/account/login-hosted`. On
//!   submit it hands the shop's page a credential by `postMessage`, and the
//!   page posts that to the shop, which signs in as its own form does.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use base64::Engine as _;

/// The provider's routes.
pub fn router() -> Router {
    Router::new()
        .route("/fields", get(fields))
        .route("/signin", get(signin))
}

async fn fields() -> Html<&'static str> {
    Html(FIELDS)
}

async fn signin() -> Html<&'static str> {
    Html(SIGNIN)
}

const SIGNIN: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title><link rel="icon" href="data:,">
<style>body{font:16px system-ui,sans-serif;margin:0}input{font-size:1em;padding:6px;margin:2px 0 8px;width:100%;box-sizing:border-box}</style></head>
<body><form id="signin-form"><label>Username <input id="username" autocomplete="username"></label>
<label>Password <input id="password" type="password" autocomplete="current-password"></label>
<button id="sign-in" type="submit">Sign in</button></form>
<script>
// Enter or the button: the credential goes to the shop's page, which
// signs in at the top level (the frame cannot set the shop's cookie).
document.getElementById("signin-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const u = document.getElementById("username").value;
  const p = document.getElementById("password").value;
  parent.postMessage({ type: "baton-demo-signin", credential: "sig_" + btoa(u + "|" + p) }, "*");
});
</script></body></html>"#;

/// The username and password behind a hosted sign-in's credential.
pub fn signed_in_as(credential: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credential.strip_prefix("sig_")?)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once('|')?;
    Some((u.to_owned(), p.to_owned()))
}

const FIELDS: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Card</title><link rel="icon" href="data:,">
<style>body{font:16px system-ui,sans-serif;margin:0}input{font-size:1em;padding:6px;margin:2px 0 8px;width:100%;box-sizing:border-box}</style></head>
<body><label>Card number <input id="card-number" inputmode="numeric" autocomplete="cc-number"></label>
<label>Security code <input id="card-cvv" inputmode="numeric" autocomplete="cc-csc"></label>
<script>
const number = document.getElementById("card-number");
const cvv = document.getElementById("card-cvv");
// Tokenise on every change; the shop's page enables its Continue button
// once a valid card's token arrives.
const send = () => {
  const n = number.value.replace(/\s/g, "");
  const c = cvv.value.trim();
  const ok = /^\d{12,19}$/.test(n) && /^\d{3,4}$/.test(c);
  parent.postMessage({ type: "baton-demo-card", token: ok ? "tok_" + btoa(n + "|" + c) : null }, "*");
};
number.addEventListener("input", send);
cvv.addEventListener("input", send);
</script></body></html>"#;

/// The token the fields make for a card, as the shop receives it.
pub fn token(number: &str, cvv: &str) -> String {
    format!(
        "tok_{}",
        base64::engine::general_purpose::STANDARD.encode(format!("{number}|{cvv}"))
    )
}

/// The card behind a token, if it is one.
pub fn card_of(token: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.strip_prefix("tok_")?)
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (n, c) = s.split_once('|')?;
    Some((n.to_owned(), c.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_carries_its_card() {
        let t = super::token("4242424242424242", "123");
        assert_eq!(
            super::card_of(&t),
            Some(("4242424242424242".into(), "123".into()))
        );
        assert_eq!(super::card_of("tok_!!"), None);
        assert_eq!(super::card_of("4242"), None);
    }
}
