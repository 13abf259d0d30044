//! The demo shop: a small storefront on loopback for the demo, the tests and
//! the benchmarks. It stands alone (it imports nothing else of baton's).
//!
//! - `storefront`: product pages (stock in the HTML), the AJAX cart with
//!   late-bound handlers, the order page, a stock API for monitors.
//! - `checkout`: address, payment, review and place, with redirects;
//!   `card`: the payment provider's card fields on a second origin.
//! - `account`: logins (password, optional one-time code), sessions the
//!   server expires, and carts and addresses that belong to accounts.
//! - `admin`: the control API under `/admin` (stock, latency, failures,
//!   orders, carts, overlaps, accounts).
//! - `pages`: the HTML.
//!
//! Like a real server, the shop finishes every request it accepted even
//! when the client goes away: each request runs on a task of its own, so a
//! browser page closed mid-checkout does not stop the order (I9). A delay
//! injected with `/admin/delay/STEP/MS` applies before the request reads the
//! session's cart, the way a busy server queues a request.
//!
//! The overlap detector is the shop's view of invariants I1 and I10. A
//! session is the `shop_session` cookie, or, once logged in, the account:
//! every browser logged into one account shares its cart. An overlap is counted when two of a
//! session's page requests are in flight at once, or when a product-page or
//! add-to-cart request arrives while that session is between starting
//! checkout and placing its order (or emptying its cart).

pub mod account;
mod admin;
pub mod card;
mod checkout;
mod pages;
pub mod profile;
mod storefront;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// A step of the purchase flow, as the control API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Product,
    AddToCart,
    Cart,
    Remove,
    Checkout,
    PlaceOrder,
    Order,
}

impl Step {
    fn parse(s: &str) -> Option<Step> {
        Some(match s {
            "product" => Step::Product,
            "add_to_cart" => Step::AddToCart,
            "cart" => Step::Cart,
            "remove" => Step::Remove,
            "checkout" => Step::Checkout,
            "place_order" => Step::PlaceOrder,
            "order" => Step::Order,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Product {
    pub id: String,
    pub name: String,
    pub price_cents: u64,
    pub stock: u32,
    /// What the checkout charges, when it is not the product page's price:
    /// a shop that adds a surcharge, or changes its price, between the
    /// product page and the review page (I11's live test).
    pub checkout_cents: Option<u64>,
}

impl Product {
    /// What a line of this product costs at checkout.
    pub fn charged_cents(&self) -> u64 {
        self.checkout_cents.unwrap_or(self.price_cents)
    }

    /// Which platform's schema.org shape its page carries.
    fn shape(&self) -> Shape {
        match self.id.bytes().last().map_or(0, |b| b % 4) {
            1 => Shape::Shopify,
            2 => Shape::WooCommerce,
            3 => Shape::BigCommerce,
            _ => Shape::Microdata,
        }
    }
}

/// The structured-data shapes of real platforms the product pages use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    Shopify,
    WooCommerce,
    BigCommerce,
    Microdata,
}

/// How the shop shows money: a locale and a currency (`en-US` and USD
/// unless `POST /admin/locale/LOCALE/CURRENCY` says otherwise), as a real
/// shop shows each visitor theirs.
#[derive(Clone, Debug)]
pub struct Money {
    pub locale: crate::price::Locale,
    pub currency: String,
}

impl Default for Money {
    fn default() -> Money {
        Money {
            locale: crate::price::Locale::ALL[0],
            currency: "USD".into(),
        }
    }
}

impl Money {
    pub fn show(&self, cents: u64) -> String {
        crate::price::format(
            crate::price::Amount::new(cents, 2),
            &self.currency,
            self.locale,
        )
    }
}

#[derive(Clone, Debug, Serialize)]
struct Line {
    id: u64,
    product: String,
    qty: u32,
}

/// What the checkout's address page saved (an account keeps one too).
#[derive(Clone, Debug, Deserialize)]
pub(super) struct Details {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub address: String,
}

#[derive(Default, Debug)]
struct Session {
    cart: Vec<Line>,
    in_flight: u32,
    in_checkout: bool,
    /// What the checkout's address page saved.
    details: Option<Details>,
    /// The card behind the token the payment page posted.
    card: Option<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
struct Order {
    number: String,
    session: String,
    lines: Vec<Line>,
    total_cents: u64,
    name: String,
    #[serde(with = "humantime_serde_compat")]
    placed_at: SystemTime,
}

mod humantime_serde_compat {
    use std::time::SystemTime;
    pub(super) fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }
}

#[derive(Debug)]
struct ShopState {
    products: BTreeMap<String, Product>,
    sessions: HashMap<String, Session>,
    orders: Vec<Order>,
    next_order: u64,
    next_line: u64,
    next_session: u64,
    overlaps: u64,
    overlap_events: Vec<String>,
    /// Overlaps by session (`@NAME` for an account).
    overlaps_by: HashMap<String, u64>,
    accounts: HashMap<String, account::ShopAccount>,
    /// Logins by cookie token.
    auths: HashMap<String, account::Auth>,
    /// Password given, one-time code awaited: cookie token to account.
    pending: HashMap<String, String>,
    /// Login forms rendered and not yet posted.
    login_tokens: std::collections::HashSet<String>,
    auth_ttl: Duration,
    /// Latency per step, and how many more requests it applies to
    /// (`None`: all).
    delays: HashMap<Step, (Duration, Option<u32>)>,
    fails: HashMap<Step, u32>,
    requests: HashMap<Step, u64>,
    /// How heavy the pages are (`profile`); survives `/admin/reset`.
    profile: profile::Profile,
    /// How prices are shown; survives `/admin/reset`.
    money: Money,
    /// Time spent serving requests (outside `/admin`), and how many: the
    /// server's share of a cycle, the floor no client can go below.
    served: Duration,
    served_requests: u64,
    /// Images among them (a browser told to block images asks for none).
    served_images: u64,
}

/// The catalogue a fresh shop starts with.
pub fn default_products() -> Vec<Product> {
    let p = |id: &str, name: &str, price_cents, stock| Product {
        id: id.into(),
        name: name.into(),
        price_cents,
        stock,
        checkout_cents: None,
    };
    vec![
        p("1001", "Espresso machine", 4999, 50),
        p("1002", "Burr grinder", 2450, 50),
        p("1003", "Milk frother", 1500, 0),
        p("1004", "Gooseneck kettle", 8900, 10),
        p("1005", "Coffee scale", 1999, 50),
        // Cheap on its page, dear at the review: the checkout adds a
        // "handling" surcharge the product page never showed.
        Product {
            checkout_cents: Some(7900),
            ..p("1006", "Barista kit", 2900, 50)
        },
    ]
}

impl Shop {
    /// How prices are shown now.
    pub fn money(&self) -> Money {
        self.lock().money.clone()
    }
}

impl ShopState {
    fn new() -> ShopState {
        ShopState {
            products: default_products()
                .into_iter()
                .map(|p| (p.id.clone(), p))
                .collect(),
            sessions: HashMap::new(),
            orders: Vec::new(),
            next_order: 10_001,
            next_line: 1,
            next_session: 1,
            overlaps: 0,
            overlap_events: Vec::new(),
            overlaps_by: HashMap::new(),
            accounts: account::default_accounts(),
            auths: HashMap::new(),
            pending: HashMap::new(),
            login_tokens: std::collections::HashSet::new(),
            auth_ttl: account::DEFAULT_TTL,
            delays: HashMap::new(),
            fails: HashMap::new(),
            requests: HashMap::new(),
            profile: profile::Profile::Light,
            money: Money::default(),
            served: Duration::ZERO,
            served_requests: 0,
            served_images: 0,
        }
    }
}

/// The shop. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Shop {
    state: Arc<Mutex<ShopState>>,
    /// Woken whenever a request's flight ends.
    landed: Arc<tokio::sync::Notify>,
    /// Woken whenever a flow request arrives.
    arrived: Arc<tokio::sync::Notify>,
    /// Where the card fields are served (the payment provider's origin),
    /// once `start` has bound it; survives `/admin/reset`.
    card_origin: Arc<std::sync::OnceLock<String>>,
}

impl Default for Shop {
    fn default() -> Self {
        Shop::new()
    }
}

impl Shop {
    pub fn new() -> Shop {
        Shop {
            state: Arc::new(Mutex::new(ShopState::new())),
            landed: Arc::new(tokio::sync::Notify::new()),
            arrived: Arc::new(tokio::sync::Notify::new()),
            card_origin: Arc::new(std::sync::OnceLock::new()),
        }
    }

    /// The card fields' origin (`http://127.0.0.1:PORT`), if served.
    pub fn card_origin(&self) -> Option<String> {
        self.card_origin.get().cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShopState> {
        lock(&self.state)
    }

    /// Orders placed so far.
    pub fn orders(&self) -> usize {
        self.lock().orders.len()
    }

    /// Requests of flows (not the control API) still being worked on.
    pub fn in_flight(&self) -> u32 {
        self.lock().sessions.values().map(|s| s.in_flight).sum()
    }

    /// Waits until no flow request is being worked on: every request the
    /// shop accepted, abandoned by its client or not, has had its effect.
    pub async fn quiesce(&self) {
        loop {
            let landed = self.landed.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            landed.await;
        }
    }

    /// How many requests for `step` (`place_order`, `product`, ... as
    /// `/admin/delay` names them) have arrived.
    pub fn requests_of(&self, step: &str) -> u64 {
        Step::parse(step).map_or(0, |st| self.lock().requests.get(&st).copied().unwrap_or(0))
    }

    /// Waits until `n` requests for `step` have arrived (for tests that
    /// act while one is in flight on the shop).
    pub async fn arrived(&self, step: &str, n: u64) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if self.requests_of(step) >= n {
                return;
            }
            arrived.await;
        }
    }

    /// How heavy pages are now.
    pub fn profile(&self) -> profile::Profile {
        self.lock().profile
    }

    pub fn set_profile(&self, p: profile::Profile) {
        self.lock().profile = p;
    }

    /// How many requests the shop has served (all but `/admin`), and how
    /// many of them were images.
    pub fn served_requests(&self) -> (u64, u64) {
        let s = self.lock();
        (s.served_requests, s.served_images)
    }

    /// Overlaps detected so far.
    pub fn overlaps(&self) -> u64 {
        self.lock().overlaps
    }

    /// Every order placed so far: its number and the products it bought.
    pub fn order_lines(&self) -> Vec<(String, Vec<String>)> {
        self.lock()
            .orders
            .iter()
            .map(|o| {
                (
                    o.number.clone(),
                    o.lines.iter().map(|l| l.product.clone()).collect(),
                )
            })
            .collect()
    }

    /// Orders placed so far, by product.
    pub fn orders_per_product(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for o in &self.lock().orders {
            for l in &o.lines {
                *out.entry(l.product.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Lines in all carts.
    pub fn cart_lines(&self) -> usize {
        self.lock().sessions.values().map(|s| s.cart.len()).sum()
    }

    /// Overlaps counted on `account`'s shared session.
    pub fn account_overlaps(&self, account: &str) -> u64 {
        self.lock()
            .overlaps_by
            .get(&format!("@{account}"))
            .copied()
            .unwrap_or(0)
    }

    /// Orders placed while logged into `account`.
    pub fn account_orders(&self, account: &str) -> usize {
        let key = format!("@{account}");
        self.lock()
            .orders
            .iter()
            .filter(|o| o.session == key)
            .count()
    }

    /// Successful logins to `account` so far.
    pub fn account_logins(&self, account: &str) -> u64 {
        self.lock().accounts.get(account).map_or(0, |a| a.logins)
    }

    /// Ends every login of `account` now (a shop's session timeout).
    pub fn expire_logins(&self, account: &str) {
        self.lock().auths.retain(|_, a| a.account != account);
    }

    /// Why each overlap was counted.
    pub fn overlap_events(&self) -> Vec<String> {
        self.lock().overlap_events.clone()
    }

    /// Sets a product's stock.
    pub fn set_stock(&self, id: &str, n: u32) -> bool {
        match self.lock().products.get_mut(id) {
            Some(p) => {
                p.stock = n;
                true
            }
            None => false,
        }
    }

    /// Enters a flow request for `session`: counts overlaps, applies
    /// injected failures and delays. The returned guard ends the request's
    /// flight when dropped, so a request the client abandoned (its
    /// connection closed mid-delay) ends too.
    async fn enter(&self, session: &str, step: Step) -> Result<InFlight, Response> {
        let (delay, fail) = {
            let mut s = self.lock();
            *s.requests.entry(step).or_default() += 1;
            self.arrived.notify_waiters();
            let fail = match s.fails.get_mut(&step) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    true
                }
                _ => false,
            };
            let sess = s.sessions.entry(session.to_owned()).or_default();
            let mut why = None;
            if sess.in_flight > 0 {
                why = Some(format!(
                    "{step:?} while another request of session {session} was in flight"
                ));
            } else if sess.in_checkout && matches!(step, Step::Product | Step::AddToCart) {
                why = Some(format!("{step:?} while session {session} was in checkout"));
            }
            sess.in_flight += 1;
            if let Some(why) = why {
                tracing::error!(target: "baton::shop", "overlap: {why}");
                s.overlaps += 1;
                s.overlap_events.push(why);
                *s.overlaps_by.entry(session.to_owned()).or_default() += 1;
            }
            let delay = match s.delays.get_mut(&step) {
                Some((d, None)) => Some(*d),
                Some((d, Some(n))) => {
                    let d = *d;
                    *n -= 1;
                    if *n == 0 {
                        s.delays.remove(&step);
                    }
                    Some(d)
                }
                None => None,
            };
            (delay, fail)
        };
        let guard = InFlight {
            shop: self.clone(),
            session: session.to_owned(),
        };
        if fail {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::error("Something went wrong", "injected failure"),
            )
                .into_response());
        }
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        Ok(guard)
    }
}

struct InFlight {
    shop: Shop,
    session: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self.shop.lock().sessions.get_mut(&self.session) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.shop.landed.notify_waiters();
    }
}

const COOKIE: &str = "shop_session";

/// The session a request belongs to: `id` keys its cart (`@NAME` when
/// logged into an account); `new` is a guest cookie the response must set.
struct SessionId {
    id: String,
    new: Option<String>,
}

/// The value of cookie `name` in a request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn session_of(shop: &Shop, headers: &HeaderMap) -> SessionId {
    let guest = guest_of(shop, headers);
    match account::account_of(shop, headers) {
        Some(name) => SessionId {
            id: format!("@{name}"),
            new: guest.new,
        },
        None => guest,
    }
}

fn guest_of(shop: &Shop, headers: &HeaderMap) -> SessionId {
    if let Some(id) = cookie(headers, COOKIE) {
        SessionId { id, new: None }
    } else {
        let mut s = shop.lock();
        let n = s.next_session;
        s.next_session += 1;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let id = format!("s{n}-{nanos:08x}");
        SessionId {
            id: id.clone(),
            new: Some(id),
        }
    }
}

fn with_session(sid: &SessionId, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    if let Some(id) = &sid.new {
        let cookie = format!("{COOKIE}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The shop's routes. `fn router` so tests can call it without a socket.
pub fn router(shop: Shop) -> Router {
    Router::new()
        .route("/", get(storefront::index))
        .route("/p/{id}", get(storefront::product))
        .route("/cart", get(storefront::cart))
        .route("/cart/add/{id}", post(storefront::add_to_cart))
        .route("/cart/remove/{line}", post(storefront::remove))
        .route("/checkout", get(checkout::start))
        .route(
            "/checkout/address",
            get(checkout::address_page).post(checkout::save_address),
        )
        .route(
            "/checkout/payment",
            get(checkout::payment_page).post(checkout::save_payment),
        )
        .route("/checkout/review", get(checkout::review_page))
        .route("/checkout/place", post(checkout::place_order))
        .route("/order/{number}", get(storefront::order))
        .route(
            "/account/login",
            get(account::login_page).post(account::login),
        )
        .route(
            "/account/login-hosted",
            get(account::login_hosted_page).post(account::login_hosted),
        )
        .route("/account/totp", get(account::totp_page).post(account::totp))
        .route("/account", get(account::account_page))
        .route("/account/logout", post(account::logout))
        .route("/api/account", get(account::account_api))
        .route("/admin/accounts", get(account::admin_accounts))
        .route("/admin/accounts/{name}/expire", post(account::expire))
        .route("/admin/session_ttl/{ms}", post(account::session_ttl))
        .route("/api/stock/{id}", get(storefront::stock_api))
        .route("/api/cart/settings", get(storefront::cart_settings))
        .route("/admin/orders", get(admin::orders))
        .route("/admin/overlaps", get(admin::overlaps))
        .route("/admin/carts", get(admin::carts))
        .route("/admin/stock/{id}/{n}", post(admin::stock))
        .route("/admin/delay/{step}/{ms}", post(admin::delay))
        .route("/admin/fail/{step}/{n}", post(admin::fail))
        .route("/admin/reset", post(admin::reset))
        .route("/admin/profile/{name}", post(admin::profile))
        .route("/admin/locale/{locale}/{currency}", post(admin::locale))
        .route("/admin/price/{id}/{cents}", post(admin::price))
        .route("/admin/served", get(admin::served))
        .route("/assets/{name}", get(profile::asset))
        .layer(axum::middleware::from_fn_with_state(
            shop.clone(),
            profile::apply,
        ))
        .layer(axum::middleware::from_fn_with_state(shop.clone(), served))
        .with_state(shop)
        .layer(axum::middleware::from_fn(run_to_completion))
}

/// Counts the time the shop spends on each request (all but `/admin`),
/// think time included.
async fn served(
    axum::extract::State(shop): axum::extract::State<Shop>,
    req: Request,
    next: Next,
) -> Response {
    if req.uri().path().starts_with("/admin") {
        return next.run(req).await;
    }
    let image = [".svg", ".gif", ".png", ".jpg"]
        .iter()
        .any(|e| req.uri().path().ends_with(e));
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let mut s = shop.lock();
    s.served += started.elapsed();
    s.served_requests += 1;
    s.served_images += u64::from(image);
    resp
}

/// Runs the rest of the request on its own task. axum drops a handler's
/// future when the client disconnects; real servers finish the request
/// (place the order) regardless, and a test shop that did not would hide
/// every effect that outlives a closed page.
async fn run_to_completion(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(resp) => resp,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error("Something went wrong", &e.to_string()),
        )
            .into_response(),
    }
}

/// A running shop.
pub struct Running {
    pub addr: SocketAddr,
    pub shop: Shop,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Serves a fresh shop on `addr` (port 0 for any) until `stop` fires.
pub async fn start(addr: SocketAddr, stop: CancellationToken) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    // The payment provider's card fields: another port on the same host,
    // named `localhost`, so the frame is cross-origin and cross-site, as
    // hosted fields are.
    let card_listener = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)).await?;
    let card_port = card_listener.local_addr()?.port();
    let shop = Shop::new();
    let host = if addr.ip().is_loopback() {
        "localhost".to_owned()
    } else {
        addr.ip().to_string()
    };
    let _ = shop.card_origin.set(format!("http://{host}:{card_port}"));
    let app = router(shop.clone());
    let card_stop = stop.clone();
    let card_task = tokio::spawn(async move {
        let served = axum::serve(card_listener, card::router())
            .with_graceful_shutdown(card_stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "demo shop's card fields stopped");
        }
    });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "demo shop stopped");
        }
        let _ = card_task.await;
    });
    tracing::info!(%addr, "demo shop listening on http://{addr} (card fields on port {card_port})");
    Ok(Running { addr, shop, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        cookie: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if method == "POST" {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        )
    }

    /// The address and card pages, filled as a buyer would.
    async fn fill_checkout(app: &Router, c: Option<&str>) {
        let (st, h, _) = call(
            app,
            "POST",
            "/checkout/address",
            c,
            "name=Ada&email=a%40b.c&address=1+Main+St",
        )
        .await;
        assert_eq!(
            (st, &h[header::LOCATION]),
            (
                StatusCode::SEE_OTHER,
                &HeaderValue::from_static("/checkout/payment")
            )
        );
        let body = format!(
            "card_token={}",
            card::token("4242424242424242", "123").replace('=', "%3D")
        );
        let (st, h, _) = call(app, "POST", "/checkout/payment", c, &body).await;
        assert_eq!(
            (st, &h[header::LOCATION]),
            (
                StatusCode::SEE_OTHER,
                &HeaderValue::from_static("/checkout/review")
            )
        );
    }

    #[tokio::test]
    async fn checkout_pages_come_in_order_with_redirects() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let c = Some("shop_session=x");
        let loc = |h: &HeaderMap| h[header::LOCATION].to_str().unwrap().to_owned();
        // An empty cart has no checkout.
        let (_, h, _) = call(&app, "GET", "/checkout/review", c, "").await;
        assert_eq!(loc(&h), "/cart");
        call(&app, "POST", "/cart/add/1001", c, "qty=1").await;
        let (_, h, _) = call(&app, "GET", "/checkout", c, "").await;
        assert_eq!(loc(&h), "/checkout/address");
        // Skipping ahead sends the buyer back to the missing step.
        let (_, h, _) = call(&app, "GET", "/checkout/review", c, "").await;
        assert_eq!(loc(&h), "/checkout/address");
        let (st, _, _) = call(
            &app,
            "POST",
            "/checkout/address",
            c,
            "name=&email=&address=",
        )
        .await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        call(
            &app,
            "POST",
            "/checkout/address",
            c,
            "name=Ada&email=a%40b.c&address=1+Main+St",
        )
        .await;
        let (_, h, _) = call(&app, "GET", "/checkout/review", c, "").await;
        assert_eq!(loc(&h), "/checkout/payment");
        let (st, _, body) = call(&app, "GET", "/checkout/payment", c, "").await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            body.contains("id=\"card-frame\"")
                && body.contains("id=\"to-review\" type=\"submit\" disabled"),
            "{body}"
        );
        let (st, _, _) = call(&app, "POST", "/checkout/payment", c, "card_token=nonsense").await;
        assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
        fill_checkout(&app, c).await;
        let (_, _, body) = call(&app, "GET", "/checkout/review", c, "").await;
        assert!(
            body.contains("card ending <span id=\"review-card\">4242<"),
            "{body}"
        );
        assert!(
            body.contains("attachShadow"),
            "the order button lives in a shadow root"
        );
        assert_eq!(shop.overlaps(), 0);
    }

    #[tokio::test]
    async fn a_purchase_from_product_page_to_order() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let (_, h, body) = call(&app, "GET", "/p/1001", None, "").await;
        assert!(body.contains("id=\"add-to-cart\""));
        let cookie = h[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let c = Some(cookie.as_str());
        let (st, h, _) = call(&app, "POST", "/cart/add/1001", c, "qty=1").await;
        assert_eq!(
            (st, &h[header::LOCATION]),
            (StatusCode::SEE_OTHER, &HeaderValue::from_static("/cart"))
        );
        let (_, _, body) = call(&app, "GET", "/cart", c, "").await;
        assert!(body.contains("data-lines=\"1\""), "{body}");
        call(&app, "GET", "/checkout", c, "").await;
        fill_checkout(&app, c).await;
        let (st, h, _) = call(&app, "POST", "/checkout/place", c, "").await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        let loc = h[header::LOCATION].to_str().unwrap().to_owned();
        let (_, _, body) = call(&app, "GET", &loc, c, "").await;
        assert!(body.contains("id=\"order-number\">A-10001<"), "{body}");
        let (_, _, orders) = call(&app, "GET", "/admin/orders", None, "").await;
        assert!(
            orders.starts_with("{\"orders\"") || orders.contains("\"total\":1"),
            "{orders}"
        );
        assert_eq!(shop.overlaps(), 0);
        let (_, _, body) = call(&app, "GET", "/cart", c, "").await;
        assert!(
            body.contains("id=\"cart-empty\""),
            "the order emptied the cart"
        );
    }

    /// A client that gives up on a slow place-order request (its page was
    /// closed) does not stop the order: the shop places it from the cart as
    /// it stands when the request gets to it, like a real server.
    #[tokio::test(start_paused = true)]
    async fn an_abandoned_order_is_still_placed() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let c = Some("shop_session=x");
        call(&app, "POST", "/cart/add/1001", c, "qty=1").await;
        fill_checkout(&app, c).await;
        call(&app, "POST", "/admin/delay/place_order/5000", None, "").await;
        let place = call(&app, "POST", "/checkout/place", c, "");
        // The client goes away after one second.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), place)
                .await
                .is_err()
        );
        assert_eq!(shop.orders(), 0);
        // Meanwhile another flow swaps the cart's contents: the abandoned
        // request buys what the cart holds when it reads it.
        call(&app, "POST", "/cart/remove/1", c, "").await;
        call(&app, "POST", "/cart/add/1002", c, "qty=1").await;
        shop.quiesce().await;
        assert_eq!(shop.orders(), 1, "the abandoned request placed its order");
        assert_eq!(shop.orders_per_product().get("1002"), Some(&1));
        // The requests that ran beside the abandoned one were overlaps.
        assert_eq!(shop.overlaps(), 2, "{:?}", shop.overlap_events());
        // And its flight ended with it.
        assert_eq!(shop.lock().sessions["x"].in_flight, 0);
    }

    #[tokio::test]
    async fn an_overlap_is_counted_for_a_product_page_during_checkout() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let c = Some("shop_session=x");
        call(&app, "POST", "/cart/add/1001", c, "qty=1").await;
        call(&app, "GET", "/checkout", c, "").await;
        assert_eq!(shop.overlaps(), 0);
        // A second flow starts on the same session before the order.
        call(&app, "GET", "/p/1002", c, "").await;
        assert_eq!(shop.overlaps(), 1);
        // Another session is not an overlap.
        call(&app, "GET", "/p/1002", Some("shop_session=y"), "").await;
        assert_eq!(shop.overlaps(), 1);
    }

    /// The `name=value` of cookie `name` a response sets.
    fn set_cookie(h: &HeaderMap, name: &str) -> Option<String> {
        h.get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").to_owned())
            .find(|kv| kv.starts_with(&format!("{name}=")))
    }

    /// The one-time token of a freshly rendered login form.
    async fn form_token(app: &Router) -> String {
        let (_, _, body) = call(app, "GET", "/account/login", None, "").await;
        let at = body
            .find("name=\"token\" value=\"")
            .expect("the form has a token")
            + 20;
        body[at..].split('"').next().unwrap().to_owned()
    }

    /// Logs guest session `guest` into `user`; returns its cookie header.
    async fn log_in(app: &Router, guest: &str, user: &str, password: &str) -> String {
        let token = form_token(app).await;
        let (st, h, _) = call(
            app,
            "POST",
            "/account/login",
            Some(guest),
            &format!("username={user}&password={password}&next=%2Fcart&token={token}"),
        )
        .await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert_eq!(h[header::LOCATION], "/cart");
        format!("{guest}; {}", set_cookie(&h, account::AUTH_COOKIE).unwrap())
    }

    /// The sign-in form in the provider's cross-origin frame: its page
    /// frames the provider and carries a one-time token; the credential
    /// the frame posts back signs in as the plain form does, and a wrong
    /// one shows the framed page again with the error.
    #[tokio::test]
    async fn a_hosted_sign_in_signs_in_as_the_plain_form_does() {
        let shop = Shop::new();
        let _ = shop.card_origin.set("http://localhost:9".into());
        let app = router(shop.clone());
        let (st, _, page) = call(&app, "GET", "/account/login-hosted?next=/cart", None, "").await;
        assert_eq!(st, StatusCode::OK);
        assert!(
            page.contains(
                r#"<iframe id="signin-frame" title="Sign in" src="http://localhost:9/signin""#
            ),
            "{page}"
        );
        let token = |page: &str| {
            let at = page.find("name=\"token\" value=\"").unwrap() + 20;
            page[at..].split('"').next().unwrap().to_owned()
        };
        let credential = |u: &str, p: &str| {
            use base64::Engine as _;
            format!(
                "sig_{}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}|{p}"))
            )
        };
        let post = |cred: String, t: String| {
            let app = app.clone();
            async move {
                let body = format!(
                    "credential={}&next=%2Fcart&token={t}",
                    cred.replace('+', "%2B")
                        .replace('=', "%3D")
                        .replace('/', "%2F")
                );
                call(&app, "POST", "/account/login-hosted", None, &body).await
            }
        };
        let (st, h, body) = post(credential("ada", "babbage"), token(&page)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        assert!(
            body.contains("id=\"signin-frame\""),
            "the framed page again"
        );
        assert!(body.contains("id=\"login-error\""), "{body}");
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_none());
        let (st, h, _) = post(credential("ada", "lovelace"), token(&body)).await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert_eq!(h[header::LOCATION], "/cart");
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_some());
        assert_eq!(shop.account_logins("ada"), 1);
    }

    #[tokio::test]
    async fn an_account_owns_its_cart_and_address_across_browsers() {
        let shop = Shop::new();
        let app = router(shop.clone());
        // A post that no rendered form carries is refused, right password
        // or not; a form's token works once.
        let (st, h, _) = call(
            &app,
            "POST",
            "/account/login",
            Some("shop_session=a"),
            "username=ada&password=lovelace&token=made-up",
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_none());
        // A wrong password is refused, with a message to show.
        let token = form_token(&app).await;
        let body_of = |t: &str| format!("username=ada&password=babbage&token={t}");
        let (st, h, body) = call(
            &app,
            "POST",
            "/account/login",
            Some("shop_session=a"),
            &body_of(&token),
        )
        .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _, _) = call(
            &app,
            "POST",
            "/account/login",
            Some("shop_session=a"),
            &body_of(&token),
        )
        .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "a token is used once");
        assert!(body.contains("id=\"login-error\""), "{body}");
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_none());
        let (_, h, _) = call(&app, "GET", "/account", Some("shop_session=a"), "").await;
        assert_eq!(h[header::LOCATION], "/account/login?next=/account");

        let a = log_in(&app, "shop_session=a", "ada", "lovelace").await;
        let (_, _, body) = call(&app, "GET", "/account", Some(&a), "").await;
        assert!(
            body.contains("id=\"account-page\"") && !body.contains("id=\"account-name\""),
            "the greeting is rendered by script: {body}"
        );
        let (_, _, me) = call(&app, "GET", "/api/account", Some(&a), "").await;
        assert!(me.contains("\"name\":\"Ada Lovelace\""), "{me}");
        // Browser a fills the account's cart; browser b, logged into the
        // same account, sees the same cart.
        call(&app, "POST", "/cart/add/1001", Some(&a), "qty=1").await;
        let b = log_in(&app, "shop_session=b", "ada", "lovelace").await;
        let (_, _, cart) = call(&app, "GET", "/cart", Some(&b), "").await;
        assert!(cart.contains("data-lines=\"1\""), "{cart}");
        // The checkout's address form comes filled in from the account.
        call(&app, "GET", "/checkout", Some(&a), "").await;
        let (_, _, addr) = call(&app, "GET", "/checkout/address", Some(&a), "").await;
        assert!(
            addr.contains("value=\"12 Analytical Way, London\""),
            "{addr}"
        );
        // b starting over on a product page while a is in checkout is an
        // overlap on the account, as it would be on one browser.
        call(&app, "GET", "/p/1002", Some(&b), "").await;
        assert_eq!(
            shop.account_overlaps("ada"),
            1,
            "{:?}",
            shop.overlap_events()
        );
        assert_eq!(shop.account_logins("ada"), 2);
    }

    #[tokio::test]
    async fn logins_expire_and_totp_is_checked() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let a = log_in(&app, "shop_session=a", "ada", "lovelace").await;
        call(&app, "POST", "/cart/add/1001", Some(&a), "qty=1").await;
        call(&app, "POST", "/admin/accounts/ada/expire", None, "").await;
        // Expired: the account page asks for a login, and the cart is the
        // guest's own (empty) one.
        let (_, h, _) = call(&app, "GET", "/account", Some(&a), "").await;
        assert_eq!(h[header::LOCATION], "/account/login?next=/account");
        let (_, _, cart) = call(&app, "GET", "/cart", Some(&a), "").await;
        assert!(cart.contains("id=\"cart-empty\""), "{cart}");

        // grace has a second step.
        let token = form_token(&app).await;
        let (st, h, _) = call(
            &app,
            "POST",
            "/account/login",
            Some("shop_session=g"),
            &format!("username=grace&password=hopper&token={token}"),
        )
        .await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert!(
            h[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/account/totp")
        );
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_none(), "not yet");
        let pending = format!(
            "shop_session=g; {}",
            set_cookie(&h, "shop_pending").unwrap()
        );
        let (st, _, body) =
            call(&app, "POST", "/account/totp", Some(&pending), "code=000000").await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
        let code = totp_rs::Builder::new()
            .with_secret(totp_rs::Secret::try_from_base32(account::GRACE_TOTP_SEED).unwrap())
            .build_noncompliant()
            .generate_current()
            .to_string();
        let (st, h, _) = call(
            &app,
            "POST",
            "/account/totp",
            Some(&pending),
            &format!("code={code}"),
        )
        .await;
        assert_eq!(st, StatusCode::SEE_OTHER);
        assert!(set_cookie(&h, account::AUTH_COOKIE).is_some());
        assert_eq!(shop.account_logins("grace"), 1);
    }

    #[tokio::test]
    async fn injected_failures_and_unknown_steps() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let (st, _, _) = call(&app, "POST", "/admin/fail/product/1", None, "").await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            call(&app, "GET", "/p/1001", None, "").await.0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            call(&app, "GET", "/p/1001", None, "").await.0,
            StatusCode::OK
        );
        let (st, _, body) = call(&app, "POST", "/admin/delay/teleport/10", None, "").await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert!(body.contains("unknown step `teleport`"));
        let (_, _, stock) = call(&app, "GET", "/api/stock/1003", None, "").await;
        assert!(stock.contains("\"in_stock\":false"), "{stock}");
    }

    /// The realistic profile: each page carries a real shop's weight
    /// (styles, a vendor script, images, cacheable) and the server's think
    /// time, counted by `/admin/served`; the light one carries none, and a
    /// reset keeps the profile.
    #[tokio::test]
    async fn the_realistic_profile_adds_weight_and_server_time() {
        let shop = Shop::new();
        let app = router(shop.clone());
        let (_, _, light) = call(&app, "GET", "/p/1001", None, "").await;
        assert!(!light.contains("/assets/"));
        let (st, _, _) = call(&app, "POST", "/admin/profile/realistic", None, "").await;
        assert_eq!(st, StatusCode::OK);
        let (st, _, _) = call(&app, "POST", "/admin/profile/heavy", None, "").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        call(&app, "POST", "/admin/reset", None, "").await;
        let (_, _, _) = call(&app, "GET", "/admin/served", None, "").await;
        let before = shop.lock().served;
        let (st, _, page) = call(&app, "GET", "/p/1001", None, "").await;
        assert_eq!(st, StatusCode::OK);
        for asset in ["site.css", "vendor.js", "app.js", "img-1.svg"] {
            assert!(page.contains(&format!("/assets/{asset}")), "{asset}");
        }
        assert!(
            page.contains(r#"id="add-to-cart""#) || page.contains("add"),
            "the page itself is intact"
        );
        let (st, headers, js) = call(&app, "GET", "/assets/vendor.js", None, "").await;
        assert_eq!(st, StatusCode::OK);
        assert!(js.len() > 250_000);
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=300");
        let served = shop.lock().served.saturating_sub(before);
        assert!(
            served >= profile::PAGE_THINK + profile::ASSET_THINK,
            "the server's think time is in the served time: {served:?}"
        );
    }
}
