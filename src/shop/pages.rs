//! The demo shop's HTML. Plain server-rendered pages with stable ids for
//! scripts to find, inline CSS, and an empty favicon (so browsers make no
//! request the overlap detector would have to ignore).

use axum::response::Html;

use super::{Line, Money, Product, Shape};

const STYLE: &str = r#"
body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{display:flex;justify-content:space-between;padding:12px 20px;background:#243b55;color:#fff}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:720px;margin:24px auto;padding:0 20px}
.price{font-size:1.6em;font-weight:700}
.in{color:#1a7f37}.out{color:#b42318}
button,.button{background:#243b55;color:#fff;border:0;border-radius:6px;padding:10px 18px;font-size:1em;cursor:pointer;text-decoration:none;display:inline-block}
button.remove{background:#b42318;padding:4px 10px}
input{font-size:1em;padding:6px;margin:4px 0 12px;width:100%;box-sizing:border-box}
input[type=number]{width:5em}
table{width:100%;border-collapse:collapse}td{padding:8px;border-bottom:1px solid #ddd}
.error{color:#b42318;font-weight:600}
ul.products li{margin:8px 0}
"#;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn layout(title: &str, cart_lines: Option<usize>, body: &str) -> Html<String> {
    let cart = match cart_lines {
        Some(n) => format!(r#"<a id="cart-link" href="/cart">Cart ({n})</a>"#),
        None => r#"<a id="cart-link" href="/cart">Cart</a>"#.to_owned(),
    };
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · baton demo shop</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>
<body><header><a href="/">baton demo shop</a>{cart}</header>
{body}
</body></html>"#,
        title = escape(title)
    ))
}

pub(super) fn index(m: &Money, products: &[Product]) -> Html<String> {
    let items: String = products
        .iter()
        .map(|p| {
            format!(
                r#"<li><a href="/p/{id}">{name}</a> {price} {stock}</li>"#,
                id = escape(&p.id),
                name = escape(&p.name),
                price = m.show(p.price_cents),
                stock = if p.stock > 0 { "" } else { "(out of stock)" }
            )
        })
        .collect();
    layout(
        "Products",
        None,
        &format!(
            r#"<main id="index-page"><h1>Products</h1><ul class="products">{items}</ul></main>"#
        ),
    )
}

pub(super) fn product(m: &Money, p: &Product, cart_lines: usize) -> Html<String> {
    let md = Microdata::of(m, p);
    let buy = if p.stock > 0 {
        format!(
            r#"<p id="stock" class="in">In stock ({n} left)</p>
<form method="post" action="/cart/add/{id}"><label>Quantity <input id="qty" name="qty" type="number" min="1" value="1"></label>
<button id="add-to-cart" type="submit">Add to cart</button></form>"#,
            n = p.stock,
            id = escape(&p.id)
        )
    } else {
        r#"<p id="out-of-stock" class="out">Out of stock</p>"#.to_owned()
    };
    layout(
        &p.name,
        Some(cart_lines),
        &format!(
            r#"<main id="product-page" data-product="{id}"{scope}><h1 id="product-name"{name_prop}>{name}</h1>
<p class="price"{offer_scope}><span id="price" data-price="{raw}"{price_prop}>{price}</span>{offer_props}</p>
{buy}
</main>{json_ld}"#,
            id = escape(&p.id),
            name = escape(&p.name),
            raw = plain(p.price_cents),
            price = m.show(p.price_cents),
            scope = md.scope,
            name_prop = md.name,
            offer_scope = md.offer,
            price_prop = md.price,
            offer_props = md.offer_props,
            json_ld = structured_data(m, p),
        ),
    )
}

/// The `itemprop` attributes of a product page in the microdata shape
/// (Magento's Luma theme); empty for the others.
#[derive(Default)]
struct Microdata {
    scope: &'static str,
    name: &'static str,
    offer: &'static str,
    price: String,
    offer_props: String,
}

impl Microdata {
    fn of(m: &Money, p: &Product) -> Microdata {
        if p.shape() != Shape::Microdata {
            return Microdata::default();
        }
        Microdata {
            scope: r#" itemscope itemtype="http://schema.org/Product""#,
            name: r#" itemprop="name""#,
            offer: r#" itemprop="offers" itemscope itemtype="http://schema.org/Offer""#,
            price: format!(r#" itemprop="price" content="{}""#, plain(p.price_cents)),
            offer_props: format!(
                r#"<meta itemprop="priceCurrency" content="{}"><link itemprop="availability" href="http://schema.org/{}">"#,
                escape(&m.currency),
                if p.stock > 0 { "InStock" } else { "OutOfStock" }
            ),
        }
    }
}

/// `1299.00`: schema.org's plain form of a price.
fn plain(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// The product's schema.org data, in the shape a real platform emits; each
/// product of the demo catalogue uses another, so `offer()` is tested on
/// all of them against a live page. (The shapes, and where they come from,
/// are in `tests/fixtures/offers/`.)
fn structured_data(m: &Money, p: &Product) -> String {
    let availability = if p.stock > 0 { "InStock" } else { "OutOfStock" };
    let id = &p.id;
    let data = match p.shape() {
        // Shopify (Dawn): offers an array, one per variant; a number price.
        Shape::Shopify => serde_json::json!({
            "@context": "http://schema.org/",
            "@type": "Product",
            "name": p.name,
            "url": format!("/p/{id}"),
            "sku": id,
            "offers": [{
                "@type": "Offer",
                "sku": id,
                "availability": format!("http://schema.org/{availability}"),
                "price": p.price_cents as f64 / 100.0,
                "priceCurrency": m.currency,
                "url": format!("/p/{id}"),
            }],
        }),
        // WooCommerce: `@graph` beside a breadcrumb, a string price and a
        // priceSpecification.
        Shape::WooCommerce => serde_json::json!({
            "@context": "https://schema.org/",
            "@graph": [
                {"@type": "BreadcrumbList", "itemListElement": [{"@type": "ListItem", "position": 1, "item": {"name": "Home", "@id": "/"}}]},
                {"@type": "Product", "@id": format!("/p/{id}#product"), "name": p.name, "sku": id,
                 "offers": [{"@type": "Offer", "price": plain(p.price_cents),
                             "priceSpecification": {"price": plain(p.price_cents), "priceCurrency": m.currency},
                             "priceCurrency": m.currency,
                             "availability": format!("https://schema.org/{availability}")}]},
            ],
        }),
        // BigCommerce: one Offer object under a WebPage's mainEntity.
        Shape::BigCommerce => serde_json::json!({
            "@context": "https://schema.org",
            "@type": "WebPage",
            "mainEntity": {"@type": "Product", "name": p.name, "sku": id,
                "offers": {"@type": "Offer", "priceCurrency": m.currency, "price": p.price_cents as f64 / 100.0,
                           "availability": format!("https://schema.org/{availability}")}},
        }),
        // Magento (Luma): microdata on the page, no JSON-LD.
        Shape::Microdata => return String::new(),
    };
    // `</` inside a script would end it early.
    format!(
        r#"<script type="application/ld+json">{}</script>"#,
        data.to_string().replace("</", "<\\/")
    )
}

/// The basket's script, as real shops write it: lines are removed by AJAX
/// without navigating, and the Remove buttons get their handlers late,
/// after `load` and a request for the basket's settings. Until then a click
/// on Remove does nothing, which is what a script that clicks too early
/// meets on a real shop.
const CART_JS: &str = r#"
addEventListener("load", () => {
  fetch("/api/cart/settings").then((r) => r.json()).then(() => {
    for (const b of document.querySelectorAll("button.remove")) {
      b.addEventListener("click", () => {
        b.disabled = true;
        fetch("/cart/remove/" + b.dataset.line, { method: "POST", headers: { "X-Requested-With": "fetch" } })
          .then((r) => r.json())
          .then((j) => {
            b.closest("tr").remove();
            document.getElementById("cart-page").dataset.lines = j.lines;
            document.getElementById("cart-link").textContent = "Cart (" + j.lines + ")";
            if (j.lines === 0) {
              document.getElementById("cart-lines").remove();
              document.getElementById("checkout").parentElement.outerHTML = '<p id="cart-empty">Your cart is empty.</p>';
            }
          });
      });
    }
  });
});
"#;

pub(super) fn cart(m: &Money, rows: &[(Line, Option<Product>)]) -> Html<String> {
    let body = if rows.is_empty() {
        r#"<p id="cart-empty">Your cart is empty.</p>"#.to_owned()
    } else {
        let trs: String = rows
            .iter()
            .map(|(l, p)| {
                let (name, price) = p
                    .as_ref()
                    .map_or(("(gone)".into(), 0), |p| (p.name.clone(), p.price_cents));
                format!(
                    r#"<tr class="cart-line" data-line="{line}" data-product="{pid}"><td>{name}</td><td class="qty">{qty}</td><td>{price}</td>
<td><button class="remove" type="button" data-line="{line}">Remove</button></td></tr>"#,
                    line = l.id,
                    pid = escape(&l.product),
                    name = escape(&name),
                    qty = l.qty,
                    price = m.show(price * u64::from(l.qty))
                )
            })
            .collect();
        format!(
            r#"<table id="cart-lines">{trs}</table><p><a id="checkout" class="button" href="/checkout">Checkout</a></p>"#
        )
    };
    layout(
        "Cart",
        Some(rows.len()),
        &format!(
            r#"<main id="cart-page" data-lines="{n}"><h1>Cart</h1>{body}</main><script>{CART_JS}</script>"#,
            n = rows.len()
        ),
    )
}

pub(super) fn address(m: &Money, total_cents: u64, saved: Option<&super::Details>) -> Html<String> {
    let v = |f: fn(&super::Details) -> &str| {
        saved
            .map(|d| format!(r#" value="{}""#, escape(f(d))))
            .unwrap_or_default()
    };
    layout(
        "Checkout: address",
        None,
        &format!(
            r#"<main id="checkout-page"><h1>Checkout</h1><ol class="steps"><li><b>Address</b></li><li>Payment</li><li>Review</li></ol>
<p>Total: <span id="total">{total}</span></p>
<form id="address-form" method="post" action="/checkout/address">
<label>Name <input id="name" name="name" autocomplete="name"{name}></label>
<label>Email <input id="email" name="email" type="email" autocomplete="email"{email}></label>
<label>Address <input id="address" name="address" autocomplete="street-address"{address}></label>
<button id="to-payment" type="submit">Continue to payment</button>
</form></main>"#,
            total = m.show(total_cents),
            name = v(|d| &d.name),
            email = v(|d| &d.email),
            address = v(|d| &d.address),
        ),
    )
}

/// A login page's error line (`#login-error`), if any.
fn login_error(error: Option<&str>) -> String {
    error
        .map(|e| format!(r#"<p id="login-error" class="error">{}</p>"#, escape(e)))
        .unwrap_or_default()
}

/// The login form, with its one-time `token`. `error` is shown after a
/// wrong password.
pub(super) fn login(next: &str, token: &str, error: Option<&str>) -> Html<String> {
    let error = login_error(error);
    layout(
        "Sign in",
        None,
        &format!(
            r#"<main id="login-page"><h1>Sign in</h1>{error}
<form id="login-form" method="post" action="/account/login">
<input type="hidden" name="next" value="{next}">
<input type="hidden" name="token" value="{token}">
<label>Username <input id="username" name="username" autocomplete="username"></label>
<label>Password <input id="password" name="password" type="password" autocomplete="current-password"></label>
<button id="sign-in" type="submit">Sign in</button>
</form></main>"#,
            next = escape(next),
            token = escape(token)
        ),
    )
}

/// The sign-in page whose form is the provider's, in a cross-origin frame
/// (`card::SIGNIN`): the frame posts a credential back, and this page
/// submits it with the one-time token, as the plain form would.
pub(super) fn login_hosted(
    next: &str,
    token: &str,
    error: Option<&str>,
    origin: Option<&str>,
) -> Html<String> {
    let error = login_error(error);
    let origin = origin.unwrap_or("");
    let src = if origin.is_empty() {
        "about:blank".to_owned()
    } else {
        format!("{origin}/signin")
    };
    layout(
        "Sign in",
        None,
        &format!(
            r#"<main id="login-page"><h1>Sign in</h1>{error}
<iframe id="signin-frame" title="Sign in" src="{src}" style="width:100%;height:170px;border:1px solid #ccc;border-radius:6px;padding:8px;box-sizing:border-box"></iframe>
<form id="login-form" method="post" action="/account/login-hosted">
<input type="hidden" name="next" value="{next}">
<input type="hidden" name="token" value="{token}">
<input type="hidden" id="credential" name="credential">
</form></main>
<script>
addEventListener("message", (e) => {{
  if (e.origin !== {origin_js} || !e.data || e.data.type !== "baton-demo-signin") return;
  document.getElementById("credential").value = e.data.credential || "";
  document.getElementById("login-form").submit();
}});
</script>"#,
            next = escape(next),
            token = escape(token),
            src = escape(&src),
            origin_js = serde_json::to_string(origin).unwrap_or_default(),
        ),
    )
}

/// The one-time-code step of a login.
pub(super) fn totp(next: &str, error: Option<&str>) -> Html<String> {
    let error = login_error(error);
    layout(
        "Two-step verification",
        None,
        &format!(
            r#"<main id="totp-page"><h1>Enter your code</h1>{error}
<p>Open your authenticator app and enter the 6-digit code.</p>
<form id="totp-form" method="post" action="/account/totp">
<input type="hidden" name="next" value="{next}">
<label>Code <input id="code" name="code" inputmode="numeric" autocomplete="one-time-code"></label>
<button id="verify" type="submit">Verify</button>
</form></main>"#,
            next = escape(next)
        ),
    )
}

/// The account page: who is logged in, the saved address, orders.
pub(super) fn account(name: &str, address: &super::Details, orders: usize) -> Html<String> {
    layout(
        "Your account",
        None,
        &format!(
            r#"<main id="account-page"><h1>Hello, <span id="account-slot">…</span></h1>
<p>Signed in as <b id="account-user">{name}</b>.</p>
<p>Saved address: <span id="saved-address">{address}</span></p>
<p>Orders: <span id="account-orders">{orders}</span></p>
<form method="post" action="/account/logout"><button id="sign-out" type="submit">Sign out</button></form></main>
<script>
  // The greeting comes from the account API after the page has loaded, as
  // on shops whose account pages are rendered by script.
  fetch("/api/account").then((r) => r.ok ? r.json() : null).then((a) => {{
    if (!a) return;
    const s = document.createElement("span");
    s.id = "account-name";
    s.textContent = a.name;
    document.getElementById("account-slot").replaceChildren(s);
  }});
</script>"#,
            name = escape(name),
            address = escape(&address.address),
        ),
    )
}

/// The payment page: the card fields live in a frame from the payment
/// provider's origin, which posts back a token; Continue stays disabled
/// until a valid card's token has arrived.
pub(super) fn payment(m: &Money, total_cents: u64, card_origin: Option<&str>) -> Html<String> {
    let origin = card_origin.unwrap_or("");
    let src = if origin.is_empty() {
        "about:blank".to_owned()
    } else {
        format!("{origin}/fields")
    };
    layout(
        "Checkout: payment",
        None,
        &format!(
            r#"<main id="payment-page"><h1>Checkout</h1><ol class="steps"><li>Address</li><li><b>Payment</b></li><li>Review</li></ol>
<p>Total: <span id="total">{total}</span></p>
<iframe id="card-frame" title="Card details" src="{src}" style="width:100%;height:150px;border:1px solid #ccc;border-radius:6px;padding:8px;box-sizing:border-box"></iframe>
<form id="payment-form" method="post" action="/checkout/payment">
<input type="hidden" id="card-token" name="card_token">
<button id="to-review" type="submit" disabled>Continue to review</button>
</form></main>
<script>
addEventListener("message", (e) => {{
  if (e.origin !== {origin_js} || !e.data || e.data.type !== "baton-demo-card") return;
  document.getElementById("card-token").value = e.data.token || "";
  document.getElementById("to-review").disabled = !e.data.token;
}});
</script>"#,
            total = m.show(total_cents),
            src = escape(&src),
            origin_js = serde_json::to_string(origin).unwrap_or_default(),
        ),
    )
}

/// The review page. Its Place order button is a web component's, inside
/// an open shadow root, as design systems build them.
pub(super) fn review(m: &Money, total_cents: u64, name: &str, last4: &str) -> Html<String> {
    layout(
        "Checkout: review",
        None,
        &format!(
            r#"<main id="review-page"><h1>Checkout</h1><ol class="steps"><li>Address</li><li>Payment</li><li><b>Review</b></li></ol>
<p>Total: <span id="total">{total}</span></p><p>For <span id="review-name">{name}</span>, card ending <span id="review-card">{last4}</span></p>
<form id="place-form" method="post" action="/checkout/place"><order-button></order-button></form></main>
<script>
customElements.define("order-button", class extends HTMLElement {{
  connectedCallback() {{
    const root = this.attachShadow({{ mode: "open" }});
    root.innerHTML = '<style>button{{background:#1a7f37;color:#fff;border:0;border-radius:6px;padding:10px 18px;font-size:1em;cursor:pointer}}</style><button id="place-order" type="button">Place order</button>';
    root.getElementById("place-order").addEventListener("click", () => this.closest("form").requestSubmit());
  }}
}});
</script>"#,
            total = m.show(total_cents),
            name = escape(name),
            last4 = escape(last4),
        ),
    )
}

pub(super) fn order(m: &Money, number: &str, total_cents: u64) -> Html<String> {
    layout(
        "Order placed",
        Some(0),
        &format!(
            r#"<main id="order-page"><h1>Thank you!</h1><p>Your order <span id="order-number">{number}</span> is placed ({total}).</p></main>"#,
            number = escape(number),
            total = m.show(total_cents)
        ),
    )
}

/// The shop's explicit "no" to an order (invalid details, sold out): no
/// order exists. Marked `#order-refused`, so a script can tell it from an
/// error that leaves the order's fate unknown.
pub(super) fn refused(title: &str, message: &str) -> Html<String> {
    layout(
        title,
        None,
        &format!(
            r#"<main id="error-page"><h1 id="order-refused">{title}</h1><p id="error" class="error">{message}</p><p><a href="/cart">Back to the cart</a></p></main>"#,
            title = escape(title),
            message = escape(message)
        ),
    )
}

pub(super) fn error(title: &str, message: &str) -> Html<String> {
    layout(
        title,
        None,
        &format!(
            r#"<main id="error-page"><h1>{title}</h1><p id="error" class="error">{message}</p><p><a href="/cart">Back to the cart</a></p></main>"#,
            title = escape(title),
            message = escape(message)
        ),
    )
}
