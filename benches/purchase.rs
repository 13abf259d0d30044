//! baton's side of the purchase benchmark: the shipped flow (product page,
//! add to cart, checkout, clear cart) against the demo shop in real
//! headless Chromium, timed per cycle.
//!
//! `benches/purchase.sh` runs this and the same steps in Playwright on the
//! same shop and Chromium, and prints both medians and their ratio. Alone:
//! `cargo bench --bench purchase` (it starts its own shop). Environment:
//! `BATON_BENCH_SHOP` (a running shop's URL), `BATON_BENCH_CYCLES`
//! (default 20).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::browser::Browser;
use baton::browser::chrome::{ChromeBrowser, ChromeConfig};
use baton::config::Secrets;
use baton::flow::StepEnd;
use baton::flow::{CommitSink, Target, Timeouts};
use baton::id::SessionId;
use baton::script::{Ran, ScriptHost, ScriptRun};
use tokio_util::sync::CancellationToken;

/// Lets `commit` run its closure: the benchmark places real orders.
struct Allow;

impl CommitSink for Allow {
    fn begin(&self, _: &str) -> Result<bool, String> {
        Ok(true)
    }
    fn done(&self, _: &str, _: Option<&str>) {}
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let cycles: usize = std::env::var("BATON_BENCH_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let stop = CancellationToken::new();
    let (base, _shop) = if let Ok(url) = std::env::var("BATON_BENCH_SHOP") {
        (url, None)
    } else {
        let s = baton::shop::start("127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();
        (s.url(), Some(s))
    };
    // Enough stock for every cycle.
    reqwest::Client::new()
        .post(format!("{base}/admin/stock/1001/100000"))
        .send()
        .await
        .unwrap();

    let scripts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let host = ScriptHost::builder(&scripts)
        .secrets(Secrets::new(BTreeMap::from([
            ("card_number".to_owned(), "4242424242424242".to_owned()),
            ("card_cvv".to_owned(), "123".to_owned()),
        ])))
        .build();
    let profile = tempfile::tempdir().unwrap();
    let browser = ChromeBrowser::new(ChromeConfig::headless(profile.path()), None);
    let target = Arc::new(Target {
        id: "1001".into(),
        url: format!("{base}/p/1001"),
        flow: "purchase".into(),
        account: None,
        params: serde_json::json!({
            "max_price": 60.0,
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "address": "12 Analytical Way"}
        })
        .as_object()
        .unwrap()
        .clone(),
    });
    let timeouts = Timeouts {
        action: Duration::from_secs(10),
        step: Duration::from_secs(30),
        http: Duration::from_secs(10),
    };

    let mut times = Vec::new();
    for i in 0..cycles + 2 {
        let t = Instant::now();
        // A run's page, as a real run gets it.
        let page = browser.new_page(SessionId(0)).await.unwrap();
        for step in ["product_page", "checkout", "clear_cart"] {
            let r = host
                .run_script(
                    step,
                    ScriptRun {
                        page: Some(page.clone()),
                        target: target.clone(),
                        cancel: CancellationToken::new(),
                        commit: Some(Arc::new(Allow)),
                        timeouts,
                        shot_prefix: "bench".into(),
                        trace: None,
                        http_fixture: None,
                        account: None,
                        notices: None,
                    },
                )
                .await;
            match r {
                Ok(Ran {
                    end: StepEnd::Continue,
                    ..
                }) => {}
                other => panic!("cycle {i}, {step}: {other:?}"),
            }
        }
        page.close().await;
        // The first two cycles warm up Chromium and the connection.
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    browser.shutdown().await;
    stop.cancel();
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = times[times.len() / 2];
    let p90 = times[(times.len() * 9) / 10];
    println!(
        "baton purchase cycle: median {median:.0} ms, p90 {p90:.0} ms over {} cycles",
        times.len()
    );
    println!("BATON_CYCLE_MS={median:.1}");
}
