//! The demo shop's storefront: the product pages (stock shown in the HTML),
//! the cart (lines added by a form, removed by AJAX once its late-bound
//! handlers are in place), the order page and the stock API for monitors.
//! The checkout's pages are in `checkout`.

use axum::Json;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Line, Product, Shop, Step, pages, session_of, with_session};

pub(super) async fn index(State(shop): State<Shop>) -> Response {
    let products: Vec<Product> = shop.lock().products.values().cloned().collect();
    pages::index(&shop.money(), &products).into_response()
}

pub(super) async fn product(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::Product).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let (p, lines) = {
        let s = shop.lock();
        let lines = s.sessions.get(&sid.id).map_or(0, |x| x.cart.len());
        (s.products.get(&id).cloned(), lines)
    };
    match p {
        Some(p) => with_session(&sid, pages::product(&shop.money(), &p, lines)),
        None => with_session(
            &sid,
            (
                StatusCode::NOT_FOUND,
                pages::error("Not found", &format!("There is no product {id}.")),
            ),
        ),
    }
}

#[derive(Deserialize)]
pub(super) struct AddForm {
    #[serde(default = "one")]
    qty: u32,
}

pub(super) fn one() -> u32 {
    1
}

pub(super) async fn add_to_cart(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<AddForm>,
) -> Response {
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::AddToCart).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let mut s = shop.lock();
    let Some(p) = s.products.get(&id).cloned() else {
        return with_session(
            &sid,
            (
                StatusCode::NOT_FOUND,
                pages::error("Not found", "No such product."),
            ),
        );
    };
    if p.stock == 0 || f.qty == 0 {
        return with_session(&sid, Redirect::to(&format!("/p/{id}")));
    }
    let line = s.next_line;
    s.next_line += 1;
    let qty = f.qty.min(p.stock);
    s.sessions
        .entry(sid.id.clone())
        .or_default()
        .cart
        .push(Line {
            id: line,
            product: id,
            qty,
        });
    with_session(&sid, Redirect::to("/cart"))
}

pub(super) async fn cart(State(shop): State<Shop>, headers: HeaderMap) -> Response {
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::Cart).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let s = shop.lock();
    let lines = s
        .sessions
        .get(&sid.id)
        .map(|x| x.cart.clone())
        .unwrap_or_default();
    let rows: Vec<(Line, Option<Product>)> = lines
        .into_iter()
        .map(|l| {
            let p = s.products.get(&l.product).cloned();
            (l, p)
        })
        .collect();
    with_session(&sid, pages::cart(&s.money, &rows))
}

/// What the basket's script asks for before it binds its buttons. It takes
/// the shop a moment, as a real basket's settings request does.
pub(super) async fn cart_settings() -> Json<serde_json::Value> {
    tokio::time::sleep(CART_SETTINGS_DELAY).await;
    Json(serde_json::json!({ "ajax": true }))
}

/// How long the basket's settings take: long enough that a click straight
/// after the page loads finds no handler yet.
const CART_SETTINGS_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

pub(super) async fn remove(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Path(line): Path<u64>,
) -> Response {
    let ajax = headers.get("x-requested-with").is_some();
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::Remove).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let mut s = shop.lock();
    if let Some(sess) = s.sessions.get_mut(&sid.id) {
        sess.cart.retain(|l| l.id != line);
        if sess.cart.is_empty() {
            // An emptied cart abandons any checkout in progress.
            sess.in_checkout = false;
        }
    }
    if ajax {
        let lines = s.sessions.get(&sid.id).map_or(0, |x| x.cart.len());
        return with_session(&sid, Json(serde_json::json!({ "lines": lines })));
    }
    with_session(&sid, Redirect::to("/cart"))
}

pub(super) async fn order(
    State(shop): State<Shop>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    let sid = session_of(&shop, &headers);
    let _flight = match shop.enter(&sid.id, Step::Order).await {
        Ok(g) => g,
        Err(r) => return with_session(&sid, r),
    };
    let o = shop
        .lock()
        .orders
        .iter()
        .find(|o| o.number == number && o.session == sid.id)
        .cloned();
    match o {
        Some(o) => with_session(&sid, pages::order(&shop.money(), &o.number, o.total_cents)),
        None => with_session(
            &sid,
            (
                StatusCode::NOT_FOUND,
                pages::error("Not found", "No such order."),
            ),
        ),
    }
}

pub(super) async fn stock_api(State(shop): State<Shop>, Path(id): Path<String>) -> Response {
    let s = shop.lock();
    match s.products.get(&id) {
        Some(p) => Json(json!({
            "id": p.id,
            "name": p.name,
            "price": p.price_cents as f64 / 100.0,
            "currency": s.money.currency,
            "stock": p.stock,
            "in_stock": p.stock > 0,
        }))
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no product {id}")})),
        )
            .into_response(),
    }
}
