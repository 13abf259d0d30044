//! The demo shop's control API under `/admin`, for tests and benchmarks:
//! set stock, inject latency and failures per step, choose the page
//! profile, reset, and read the
//! orders placed, the carts and the overlaps the shop saw.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{Shop, ShopState, Step};

pub(super) async fn orders(State(shop): State<Shop>) -> Json<serde_json::Value> {
    let per_product = shop.orders_per_product();
    let s = shop.lock();
    Json(json!({
        "total": s.orders.len(),
        "per_product": per_product,
        "orders": s.orders,
    }))
}

pub(super) async fn overlaps(State(shop): State<Shop>) -> Json<serde_json::Value> {
    let in_flight = shop.in_flight();
    let s = shop.lock();
    Json(json!({"overlaps": s.overlaps, "events": s.overlap_events, "in_flight": in_flight}))
}

pub(super) async fn carts(State(shop): State<Shop>) -> Json<serde_json::Value> {
    let s = shop.lock();
    let lines: usize = s.sessions.values().map(|x| x.cart.len()).sum();
    let requests: BTreeMap<String, u64> = s
        .requests
        .iter()
        .map(|(k, v)| {
            (
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                *v,
            )
        })
        .collect();
    Json(json!({"lines": lines, "sessions": s.sessions.len(), "requests": requests}))
}

pub(super) async fn stock(
    State(shop): State<Shop>,
    Path((id, n)): Path<(String, u32)>,
) -> Response {
    if shop.set_stock(&id, n) {
        Json(json!({"id": id, "stock": n})).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no product {id}")})),
        )
            .into_response()
    }
}

pub(super) fn bad_step(step: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("unknown step `{step}`: use product, add_to_cart, cart, remove, checkout, place_order or order")})),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct DelayQuery {
    /// Apply to this many requests only.
    times: Option<u32>,
}

pub(super) async fn delay(
    State(shop): State<Shop>,
    Path((step, ms)): Path<(String, u64)>,
    Query(q): Query<DelayQuery>,
) -> Response {
    let Some(st) = Step::parse(&step) else {
        return bad_step(&step);
    };
    let mut s = shop.lock();
    if ms == 0 || q.times == Some(0) {
        s.delays.remove(&st);
    } else {
        s.delays.insert(st, (Duration::from_millis(ms), q.times));
    }
    Json(json!({"step": step, "delay_ms": ms, "times": q.times})).into_response()
}

pub(super) async fn fail(
    State(shop): State<Shop>,
    Path((step, n)): Path<(String, u32)>,
) -> Response {
    let Some(st) = Step::parse(&step) else {
        return bad_step(&step);
    };
    shop.lock().fails.insert(st, n);
    Json(json!({"step": step, "fail_next": n})).into_response()
}

pub(super) async fn reset(State(shop): State<Shop>) -> Json<serde_json::Value> {
    let mut s = shop.lock();
    let (profile, money) = (s.profile, s.money.clone());
    *s = ShopState::new();
    s.profile = profile;
    s.money = money;
    Json(json!({"reset": true}))
}

/// `GET /admin/served`: the time spent serving requests so far (think time
/// included), and how many.
pub(super) async fn served(State(shop): State<Shop>) -> Json<serde_json::Value> {
    let s = shop.lock();
    Json(json!({
        "ms": s.served.as_secs_f64() * 1000.0,
        "requests": s.served_requests,
        "images": s.served_images,
        "profile": format!("{:?}", s.profile).to_lowercase(),
    }))
}

/// `POST /admin/profile/light|realistic`: how heavy pages are from now on.
pub(super) async fn profile(State(shop): State<Shop>, Path(name): Path<String>) -> Response {
    match super::profile::Profile::parse(&name) {
        Some(p) => {
            shop.set_profile(p);
            Json(json!({"profile": name})).into_response()
        }
        None => (
            StatusCode::BAD_REQUEST,
            format!("unknown profile `{name}`: use light or realistic"),
        )
            .into_response(),
    }
}

/// `POST /admin/locale/de-DE/EUR`: show prices in that locale and
/// currency from now on (the amounts stay the same numbers).
pub(super) async fn locale(
    State(shop): State<Shop>,
    Path((locale, currency)): Path<(String, String)>,
) -> Response {
    let locale = match crate::price::Locale::find(&locale) {
        Ok(l) => l,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let currency = currency.to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{currency}` is not a currency code"),
        )
            .into_response();
    }
    shop.lock().money = super::Money {
        locale,
        currency: currency.clone(),
    };
    Json(json!({"locale": locale.name, "currency": currency})).into_response()
}

#[derive(Deserialize)]
pub(super) struct PriceQuery {
    /// Set only what the checkout charges (the product page keeps its
    /// price).
    checkout: Option<bool>,
}

/// `POST /admin/price/ID/CENTS`: the product's price from now on; with
/// `?checkout=true`, only what its checkout charges.
pub(super) async fn price(
    State(shop): State<Shop>,
    Path((id, cents)): Path<(String, u64)>,
    Query(q): Query<PriceQuery>,
) -> Response {
    let mut s = shop.lock();
    let Some(p) = s.products.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no product {id}")})),
        )
            .into_response();
    };
    if q.checkout == Some(true) {
        p.checkout_cents = Some(cents);
    } else {
        p.price_cents = cents;
        p.checkout_cents = None;
    }
    Json(json!({"id": id, "price_cents": p.price_cents, "checkout_cents": p.checkout_cents}))
        .into_response()
}
