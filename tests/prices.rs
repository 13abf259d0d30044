//! Prices end to end, in real headless Chromium against the demo shop:
//! I11 (the host refuses a commit over the target's budget, whatever the
//! script does), `offer()` over the shop's schema.org data, prices in
//! another locale, and `baton watch` on the shop's pages.

use crate::common;

use baton::app::{App, Options};
use baton::state::Status;
use common::live::{Project, ShopApi, assert_no_chromium, target};

/// A product page that adds to the cart without reading the price, and a
/// checkout without `observe_price`: a script that ignores what things
/// cost.
const CARELESS_PRODUCT: &str = r##"
import "lib/shop" as shop;
shop::empty_cart(shop::base(target.url));
navigate(target.url);
wait_for("#add-to-cart");
click("#add-to-cart");
wait_for("#cart-page");
"##;

const CARELESS_CHECKOUT: &str = r##"
import "lib/shop" as shop;
navigate(`${shop::base(target.url)}/cart`);
wait_for("#cart-page");
click("#checkout");
wait_for("#address-form");
fill("#name", "Ada");
fill("#email", "ada@example.com");
fill("#address", "1 Main St");
click("#to-payment");
wait_for("#payment-page");
fill("frame:#card-frame >> #card-number", secret("card_number"));
fill("frame:#card-frame >> #card-cvv", secret("card_cvv"));
click("#to-review");
wait_for("#review-page");
commit("place order", || {
    click("#place-order");
    wait_for("#order-number");
    text("#order-number")
});
"##;

/// The generic path: a monitor and a product step that read the page's
/// schema.org offer, no selectors for price or stock.
const OFFER_MONITOR: &str = r#"offer(http_get(target.url)).in_stock"#;

const OFFER_PRODUCT: &str = r##"
import "lib/shop" as shop;
shop::empty_cart(shop::base(target.url));
navigate(target.url);
let o = offer();
log(`${o.name}: ${o.price} ${o.currency}, ${o.availability} (${o.source})`);
if !o.in_stock { outcome("out_of_stock"); }
click("#add-to-cart");
wait_for("#cart-page");
"##;

/// One cycle against a shop showing German prices (`49,99 €`):
/// - 1001 on the shipped flow, within budget: bought, its price read
///   right in another locale;
/// - 1002 on the generic flow (`offer()` over WooCommerce-shaped JSON-LD,
///   a monitor over it too): bought;
/// - 1006 on the shipped flow: 29,00 € on its page (the script's own check
///   passes under 30), 79,00 € at the review; the host refuses the commit
///   (over_budget), nothing is ordered, the cart is cleared;
/// - 1004 on the careless flow, which never reads a price: refused too
///   (no price observed), though nothing in the script would stop it.
///
/// Without the host's check in `RunCommit::begin`, 1006 and 1004 are
/// ordered and this fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_refuses_a_commit_over_budget_whatever_the_script_does() {
    let _one = common::live::one_at_a_time().await;
    let targets = [
        target("1001", 60.0).replace("url: /p/1001", "url: /p/1001, flow: purchase"),
        target("1006", 30.0).replace("url: /p/1006", "url: /p/1006, flow: purchase"),
        target("1004", 50.0).replace("url: /p/1004", "url: /p/1004, flow: careless"),
        target("1002", 30.0).replace("url: /p/1002", "url: /p/1002, flow: generic"),
    ]
    .concat();
    let p = Project::new(
        "  interval: 1s\n  wait_for_active: 30s\n  run_timeout: 60s\n  step_timeout: 30s",
        &targets,
        "",
    );
    let scripts = p.dir.path().join("scripts");
    for (name, text) in [
        ("careless_product", CARELESS_PRODUCT),
        ("careless_checkout", CARELESS_CHECKOUT),
        ("offer_check", OFFER_MONITOR),
        ("offer_product", OFFER_PRODUCT),
    ] {
        std::fs::write(scripts.join(format!("{name}.rhai")), text).unwrap();
    }
    p.edit(
        "flows:\n  purchase:\n",
        "flows:
  careless:
    steps: [careless_product, careless_checkout, { script: clear_cart, always: true }]
  generic:
    monitor: offer_check
    steps: [offer_product, checkout, { script: clear_cart, always: true }]
  purchase:
",
    );
    let (srv, stop) = p.own_shop().await;
    let shop = ShopApi::new(&srv.url());
    shop.post("/admin/locale/de-DE/EUR").await;

    let mut o = Options::new(p.config());
    o.cycles = Some(1);
    common::init_tracing();
    let app = App::start(o).await.unwrap();
    let state = app.parts.state.clone();
    app.run().await;
    srv.shop.quiesce().await;

    let orders = srv.shop.orders_per_product();
    assert_eq!(orders.get("1001"), Some(&1), "{orders:?}");
    assert_eq!(orders.get("1002"), Some(&1), "{orders:?}");
    assert_eq!(orders.get("1006"), None, "bought over budget: {orders:?}");
    assert_eq!(
        orders.get("1004"),
        None,
        "bought with no price seen: {orders:?}"
    );

    let history = state.history(usize::MAX).unwrap();
    let run = |id: &str| {
        history
            .iter()
            .find(|r| r.target.as_str() == id)
            .unwrap_or_else(|| panic!("no run of {id}: {history:#?}"))
    };
    for (id, why) in [
        ("1006", "the price 79.00 EUR is over the budget 30.00"),
        ("1004", "no price was observed in this run"),
    ] {
        let r = run(id);
        assert_eq!(r.status, Status::Ready, "{r:#?}");
        assert_eq!(r.outcome.as_deref(), Some("over_budget"), "{r:#?}");
        assert!(!r.committed, "{r:#?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(error.contains(why), "{id}: {error}");
        assert_eq!(state.get(id).status, Status::Ready);
        // The cleanup ran: nothing of it is left in a cart.
        assert_eq!(
            r.steps.last().unwrap().result,
            baton::state::StepResult::Ok,
            "{r:#?}"
        );
    }
    assert_eq!(run("1001").status, Status::Completed);
    assert_eq!(run("1002").status, Status::Completed);
    assert_eq!(srv.shop.cart_lines(), 0);
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// `baton watch URL` on the demo shop's pages: each product page carries
/// another platform's shape of schema.org data, and the command says what
/// it read (and fails, exit 1, on a page without any).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_watch_shows_what_a_product_page_publishes() {
    let stop = tokio_util::sync::CancellationToken::new();
    let srv = baton::shop::start("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    let base = srv.url();
    ShopApi::new(&base).post("/admin/locale/de-CH/CHF").await;
    for (id, name, price, availability, source) in [
        (
            "1001",
            "Espresso machine",
            "49.99 CHF",
            "in_stock",
            "json-ld",
        ),
        ("1002", "Burr grinder", "24.50 CHF", "in_stock", "json-ld"),
        (
            "1003",
            "Milk frother",
            "15.00 CHF",
            "out_of_stock",
            "json-ld",
        ),
        (
            "1004",
            "Gooseneck kettle",
            "89.00 CHF",
            "in_stock",
            "microdata",
        ),
    ] {
        let url = format!("{base}/p/{id}");
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["watch", &url])
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{id}: {stdout}{stderr}");
        for want in [name, price, availability, source] {
            assert!(stdout.contains(want), "{id}: `{want}` not in\n{stdout}");
        }
    }
    // The cart page has no product data: exit 1 and a hint.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["watch", &format!("{base}/cart")])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no schema.org product on the page"),
        "{stderr}"
    );
    assert!(stderr.contains("--browser"), "{stderr}");
    // Not a URL: a usage error.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["watch", "/p/1001"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    stop.cancel();
}

/// A flows.yaml with only URLs (no ids, no flows, no scripts): each target
/// runs the built-in `watch` flow, whose `offer` monitor reads the demo
/// shop's schema.org data. Nothing is bought. When 1003 comes back in
/// stock and 1001's price drops between cycles, `restock` and
/// `price_drop` are notified, and each target's history (the dashboard's
/// chart data) holds what the monitor saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_only_a_url_is_watched_through_its_offer() {
    let _one = common::live::one_at_a_time().await;
    let r = common::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"browser: {{ headless: true, profile_dir: .baton/profile }}
cycle: {{ interval: 1s }}
state_dir: .baton
dashboard: 127.0.0.1:0
demo_shop: {{ port: 0 }}
notify:
  channels:
    hook: {{ type: webhook, url: "{}/hook" }}
  rules:
    - {{ events: [restock, price_drop], channels: hook }}
targets:
  - url: /p/1001
  - url: /p/1003
"#,
        r.url
    );
    std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap();
    common::init_tracing();
    let app = App::start(Options::new(dir.path().join("flows.yaml")))
        .await
        .unwrap();
    let ids: Vec<String> = app
        .parts
        .config
        .load()
        .targets
        .iter()
        .map(|t| format!("{} {}", t.id, t.flow))
        .collect();
    assert_eq!(ids, ["1001 watch", "1003 watch"]);
    let shop = ShopApi::new(&app.shop.as_ref().unwrap().url());
    let dash = format!("http://{}", app.dashboard.as_ref().unwrap().addr);
    let (sh, state) = (
        app.shop.as_ref().unwrap().shop.clone(),
        app.parts.state.clone(),
    );
    let mut status = app.status.clone();
    let shutdown = app.shutdown.clone();
    let run = tokio::spawn(app.run());

    // The first cycle has seen both; then the shop changes.
    status.wait_for(|s| s.cycle >= 2).await.unwrap();
    shop.post("/admin/stock/1003/5").await;
    shop.post("/admin/price/1001/3999").await;
    let seen = r
        .wait_until(std::time::Duration::from_secs(60), |s| {
            let has = |kind: &str, target: &str| {
                s.iter().any(|x| {
                    let j = x.json();
                    j["event"] == kind && j["target"] == target
                })
            };
            has("restock", "1003") && has("price_drop", "1001")
        })
        .await;
    let a = observations(&dash, "1001").await;
    let prices: Vec<f64> = a["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["price"].as_f64().unwrap())
        .collect();
    assert_eq!(prices.first(), Some(&49.99), "{a}");
    assert_eq!(prices.last(), Some(&39.99), "{a}");
    assert!(a["observations"][0]["by"] == "monitor", "{a}");
    let b = observations(&dash, "1003").await;
    let stock: Vec<&str> = b["observations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["availability"].as_str().unwrap())
        .collect();
    assert_eq!(stock.first(), Some(&"out_of_stock"), "{b}");
    assert_eq!(stock.last(), Some(&"in_stock"), "{b}");
    shutdown.cancel();
    run.await.unwrap();
    let drop = seen
        .iter()
        .map(common::receiver::Seen::json)
        .find(|j| j["event"] == "price_drop")
        .unwrap();
    assert!(
        drop["body"]
            .as_str()
            .unwrap()
            .contains("was 49.99 USD and is 39.99 USD"),
        "{drop}"
    );

    assert!(
        sh.orders_per_product().is_empty(),
        "a watched target was bought"
    );
    assert!(
        state.history(usize::MAX).unwrap().is_empty(),
        "a watched target ran"
    );
}

/// The dashboard's `GET /api/targets/ID/observations`.
async fn observations(dash: &str, id: &str) -> serde_json::Value {
    reqwest::get(format!("{dash}/api/targets/{id}/observations"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The dry run a user tries first makes the host's check too: a whole
/// flow for 1006 (29.00 on its page, 79.00 at the review) stops at the
/// commit with the reason, where it used to say "would commit".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_shows_the_commit_the_host_would_refuse() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new("  interval: 1s", &target("1006", 30.0), "");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "dry-run", "--flow", "purchase", "--target", "1006", "--config",
        ])
        .arg(p.config())
        .current_dir(p.dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains(
            "commit place order would be refused by baton (I11): the price 79.00 USD is over the budget 30.00"
        ),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("would commit:"), "{stdout}");
    assert!(stdout.contains("over_budget"), "{stdout}");
    assert_no_chromium(&p.profile()).await;
}
