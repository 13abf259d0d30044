//! baton's side of the purchase benchmark: the shipped flow (product page,
//! add to cart, checkout, clear cart) against the demo shop in real
//! headless Chromium, timed per cycle.
//!
//! `benches/purchase.sh` runs this and the same steps in Playwright on the
//! same shop and Chromium, and prints both medians and their ratio. Alone:
//! `cargo bench --bench purchase` (it starts its own shop). Environment:
//! `BATON_BENCH_SHOP` (a running shop's URL), `BATON_BENCH_CYCLES`
//! (default 20), `BATON_BENCH_GAP_MS` (the untimed pause between cycles,
//! default 1000: baton's cycles are 25-35 s apart, and it opens the next
//! run's page in that pause).
//!
//! Each cycle is what a run does with its page: open it, run the three
//! steps on it with every call traced, close it, and write the trace.
//!
//! `BATON_BENCH_COMPARE=spare`, `=trace` or `=block` measures one of
//! baton's choices instead: cycles alternate between it on and off (two
//! browsers for `spare`, one with spare pages and one without, and for
//! `block`, one blocking images, fonts and media and one not), and the
//! medians of both and their ratio are printed. `BATON_BENCH_PROFILE`
//! sets the shop's page profile (`realistic`).

#![allow(
    clippy::too_many_lines,
    reason = "a live test or bench reads as one story, from start to the check"
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::browser::chrome::{ChromeBrowser, ChromeConfig, SPARE_PAGES};
use baton::browser::{Blocked, Browser};
use baton::config::Secrets;
use baton::flow::StepEnd;
use baton::flow::{CommitSink, StepContext, Target, Timeouts};
use baton::id::SessionId;
use baton::script::{Probe, Ran, ScriptHost};
use tokio_util::sync::CancellationToken;

/// Lets `commit` run its closure: the benchmark places real orders.
struct Allow;

impl CommitSink for Allow {
    fn begin(&self, _: &str) -> Result<bool, baton::flow::CommitRefused> {
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
    let compare = std::env::var("BATON_BENCH_COMPARE").unwrap_or_default();
    let gap = Duration::from_millis(
        std::env::var("BATON_BENCH_GAP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1000),
    );
    if let Ok(p) = std::env::var("BATON_BENCH_PROFILE") {
        reqwest::Client::new()
            .post(format!("{base}/admin/profile/{p}"))
            .send()
            .await
            .unwrap();
    }
    let profile = tempfile::tempdir().unwrap();
    let block = if compare == "block" {
        vec![Blocked::Image, Blocked::Font, Blocked::Media]
    } else {
        Vec::new()
    };
    let browser = ChromeBrowser::new(
        ChromeConfig {
            block,
            ..ChromeConfig::headless(profile.path())
        },
        None,
    );
    // The other side of a comparison: without spare pages, or (for
    // `block`) blocking nothing.
    let plain_profile = tempfile::tempdir().unwrap();
    let plain = ChromeBrowser::new(
        ChromeConfig {
            spare_pages: if compare == "spare" { 0 } else { SPARE_PAGES },
            ..ChromeConfig::headless(plain_profile.path())
        },
        None,
    );
    let traces = tempfile::tempdir().unwrap();
    let store = baton::trace::TraceStore::new(traces.path(), baton::trace::TraceConfig::default());
    let redactor = baton::redact::Redactor::new();
    let target = Arc::new(Target {
        id: "1001".into(),
        url: format!("{base}/p/1001"),
        flow: "purchase".into(),
        account: None,
        params: serde_json::json!({
            "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "address": "12 Analytical Way"}
        })
        .as_object()
        .unwrap()
        .clone(),
        budget: baton::budget::Budget::Max {
            amount: baton::price::Amount::from_f64(60.0).unwrap(),
            currency: None,
        },
        schedule: baton::schedule::Schedule::default(),
    });
    let timeouts = Timeouts {
        action: Duration::from_secs(10),
        step: Duration::from_secs(30),
        http: Duration::from_secs(10),
    };

    // Times with the compared choice on, and off.
    let mut times = Vec::new();
    let mut off_times = Vec::new();
    for i in 0..2 * (cycles + 2) {
        // Without a comparison every cycle is baton as it ships; with one,
        // odd cycles turn the choice off.
        let off = !compare.is_empty() && i % 2 == 1;
        if compare.is_empty() && i >= cycles + 2 {
            break;
        }
        let traced = !(off && compare == "trace");
        let b = if off && compare != "trace" {
            &plain
        } else {
            &browser
        };
        let t = Instant::now();
        // A run's page, as a real run gets it, traced as a run traces it.
        let recorder = baton::trace::Recorder::new();
        let opened = b.new_page(SessionId(0)).await;
        let page = if traced {
            recorder.opened(t.into(), opened).unwrap()
        } else {
            opened.unwrap()
        };
        for step in ["product_page", "checkout", "clear_cart"] {
            if traced {
                recorder.step_started(step);
            }
            let r = host
                .run_script(
                    step,
                    StepContext {
                        label: "bench".into(),
                        page: Some(page.clone()),
                        target: target.clone(),
                        cancel: CancellationToken::new(),
                        commit: Some(Arc::new(Allow)),
                        timeouts,
                        account: None,
                    },
                    Probe::default(),
                )
                .await;
            match r {
                Ok(Ran {
                    end: StepEnd::Continue,
                    ..
                }) => {}
                other => panic!("cycle {i}, {step}: {other:?}"),
            }
            if traced {
                recorder.step_ended("ok");
            }
        }
        page.close().await;
        if traced {
            let trace = recorder.finish(&redactor);
            let store = store.clone();
            let run = baton::id::RunId(i as u64 + 1);
            tokio::task::spawn_blocking(move || store.write(run, &trace))
                .await
                .unwrap()
                .unwrap();
        }
        // The first cycles (two of each kind) warm up Chromium and the
        // connection.
        let warm = if compare.is_empty() { 2 } else { 4 };
        if i >= warm {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if off {
                off_times.push(ms);
            } else {
                times.push(ms);
            }
        }
        tokio::time::sleep(gap).await;
    }
    browser.shutdown().await;
    plain.shutdown().await;
    stop.cancel();
    let (median, p90) = stats(&mut times);
    if compare.is_empty() {
        println!(
            "baton purchase cycle: median {median:.0} ms, p90 {p90:.0} ms over {} cycles",
            times.len()
        );
        println!("BATON_CYCLE_MS={median:.1}");
    } else {
        let (off_median, off_p90) = stats(&mut off_times);
        println!(
            "{compare} on:  median {median:.0} ms, p90 {p90:.0} ms over {} cycles",
            times.len()
        );
        println!(
            "{compare} off: median {off_median:.0} ms, p90 {off_p90:.0} ms over {} cycles",
            off_times.len()
        );
        println!("{compare} on / off: {:.3}", median / off_median);
    }
}

/// The median and the 90th percentile.
fn stats(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[(times.len() * 9) / 10])
}
