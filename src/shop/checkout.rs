//! The demo shop's checkout, in pages as real shops have it: address,
//! then payment (card fields hosted on a second origin, in an iframe),
//! then review, then place. Each form answers with a redirect to the next
//! page, and a page reached out of order sends the buyer back to the step
//! that is missing.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::{Details, Order, Product, Shop, Step, card, pages, session_of, with_session};

/// Where a session's checkout stands: the page it may see next.
enum Stage {
    Cart,
    Address,
    Payment,
    Review,
}

impl Stage {
    fn url(&self) -> &'static str {
        match self {
            Stage::Cart => "/cart",
            Stage::Address => "/checkout/address",
            Stage::Payment => "/checkout/payment",
            Stage::Review => "/checkout/review",
        }
    }
}

/// The session's stage and its cart total, with the session marked as in
/// checkout (the overlap detector watches for product pages meanwhile).
fn stage(shop: &Shop, sid: &str) -> (Stage, u64) {
    let mut guard = shop.lock();
    let s = &mut *guard;
    let sess = s.sessions.entry(sid.to_owned()).or_default();
    if sess.cart.is_empty() {
        return (Stage::Cart, 0);
    }
    sess.in_checkout = true;
    let total = sess
        .cart
        .iter()
        .map(|l| u64::from(l.qty) * s.products.get(&l.product).map_or(0, Product::charged_cents))
        .sum();
    let stage = match (&sess.details, &sess.card) {
        (None, _) => Stage::Address,
        (Some(_), None) => Stage::Payment,
        (Some(_), Some(_)) => Stage::Review,
    };
    (stage, total)
}

/// Runs a checkout page: counted as the `checkout` step, and redirected
/// to an earlier page when the session has not got this far.
async fn page(
    shop: &Shop,
    headers: &HeaderMap,
    at_least: u8,
    render: impl FnOnce(&Shop, &str, u64) -> Response,
) -> Response {
    let sid = session_of(shop, headers);
    let _flight = match shop.enter(&sid.id, Step::Checkout).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let (stage, total) = stage(shop, &sid.id);
    let reached = match stage {
        Stage::Cart => 0,
        Stage::Address => 1,
        Stage::Payment => 2,
        Stage::Review => 3,
    };
    if reached < at_least {
        return with_session(&sid, Redirect::to(stage.url()));
    }
    with_session(&sid, render(shop, &sid.id, total))
}

/// `GET /checkout`: the cart's Checkout link; starts at the address page.
pub(super) async fn start(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    page(&shop, &headers, 1, |_, _, _| {
        Redirect::to(Stage::Address.url()).into_response()
    })
    .await
}

pub(super) async fn address_page(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    page(&shop, &headers, 1, |shop, sid, total| {
        // An account's saved address fills the form in.
        let saved = sid
            .strip_prefix('@')
            .and_then(|name| shop.lock().accounts.get(name).map(|a| a.address.clone()));
        pages::address(&shop.money(), total, saved.as_ref()).into_response()
    })
    .await
}

pub(super) async fn save_address(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Form(d): Form<Details>,
) -> Response {
    page(&shop, &headers, 1, |shop, sid, _| {
        if d.name.trim().is_empty() || d.email.trim().is_empty() || d.address.trim().is_empty() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::refused(
                    "Check your details",
                    "Please fill in your name, email and address.",
                ),
            )
                .into_response();
        }
        if let Some(sess) = shop.lock().sessions.get_mut(sid) {
            sess.details = Some(d);
        }
        Redirect::to(Stage::Payment.url()).into_response()
    })
    .await
}

pub(super) async fn payment_page(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    page(&shop, &headers, 2, |shop, _, total| {
        let origin = shop.card_origin();
        pages::payment(&shop.money(), total, origin.as_deref()).into_response()
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct Payment {
    #[serde(default)]
    card_token: String,
}

pub(super) async fn save_payment(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Form(p): Form<Payment>,
) -> Response {
    page(&shop, &headers, 2, |shop, sid, _| {
        let Some(card) = card::card_of(&p.card_token) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::refused("Check your card", "The card could not be read."),
            )
                .into_response();
        };
        if let Some(sess) = shop.lock().sessions.get_mut(sid) {
            sess.card = Some(card);
        }
        Redirect::to(Stage::Review.url()).into_response()
    })
    .await
}

pub(super) async fn review_page(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    page(&shop, &headers, 3, |shop, sid, total| {
        let s = shop.lock();
        let sess = &s.sessions[sid];
        let name = sess.details.as_ref().map_or("", |d| d.name.as_str());
        let last4 = sess.card.as_ref().map_or(String::new(), |(n, _)| {
            n.chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect()
        });
        pages::review(&s.money, total, name, &last4).into_response()
    })
    .await
}

/// `POST /checkout/place`: the point of no return. Places the order from
/// the cart as it stands when the request gets to it, with the saved
/// details and card; a shop's explicit refusal (invalid details, sold out)
/// is `#order-refused`.
pub(super) async fn place_order(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::PlaceOrder).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let (details, card) = {
        let s = shop.lock();
        let sess = s.sessions.get(&sid.id);
        (
            sess.and_then(|x| x.details.clone()),
            sess.and_then(|x| x.card.clone()),
        )
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let problem = match (&details, &card) {
        (None, _) => Some("Please fill in your name, email and address."),
        (_, None) => Some("Please enter a card."),
        (_, Some((n, _))) if !digits(n) || !(12..=19).contains(&n.len()) => {
            Some("The card number is not valid.")
        }
        (_, Some((_, c))) if !digits(c) || !(3..=4).contains(&c.len()) => {
            Some("The security code is not valid.")
        }
        _ => None,
    };
    if let Some(p) = problem {
        return with_session(
            &sid,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                pages::refused("Check your details", p),
            ),
        );
    }
    let name = details
        .map(|d| d.name.trim().to_owned())
        .unwrap_or_default();
    let mut guard = shop.lock();
    let s = &mut *guard;
    let lines = s
        .sessions
        .get(&sid.id)
        .map(|x| x.cart.clone())
        .unwrap_or_default();
    if lines.is_empty() {
        return with_session(&sid, Redirect::to("/cart"));
    }
    for l in &lines {
        let stock = s.products.get(&l.product).map_or(0, |p| p.stock);
        if stock < l.qty {
            return with_session(
                &sid,
                (
                    StatusCode::CONFLICT,
                    pages::refused(
                        "Sold out",
                        "An item in your cart sold out before you ordered.",
                    ),
                ),
            );
        }
    }
    let mut total = 0;
    for l in &lines {
        if let Some(p) = s.products.get_mut(&l.product) {
            p.stock -= l.qty;
            total += p.charged_cents() * u64::from(l.qty);
        }
    }
    let number = format!("A-{}", s.next_order);
    s.next_order += 1;
    s.orders.push(Order {
        number: number.clone(),
        session: sid.id.clone(),
        lines,
        total_cents: total,
        name,
        placed_at: std::time::SystemTime::now(),
    });
    if let Some(sess) = s.sessions.get_mut(&sid.id) {
        sess.cart.clear();
        sess.in_checkout = false;
        // The next purchase enters its details again, as a guest does.
        sess.details = None;
        sess.card = None;
    }
    with_session(&sid, Redirect::to(&format!("/order/{number}")))
}
