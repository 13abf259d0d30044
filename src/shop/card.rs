//! The payment provider's side of the demo shop: card fields served from a
//! second origin (another port), shown in an iframe on the payment page,
//! the way hosted fields (Stripe, Adyen, Braintree) are. The fields turn
//! the card into a token and hand it to the shop's page by `postMessage`;
//! the shop never sees the fields themselves.

use axum::Router;
use axum::response::Html;
use axum::routing::get;
use base64::Engine as _;

/// The provider's routes.
pub fn router() -> Router {
    Router::new().route("/fields", get(fields))
}

async fn fields() -> Html<&'static str> {
    Html(FIELDS)
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
