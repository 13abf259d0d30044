//! What a run's trace costs baton itself, apart from the browser: a
//! purchase cycle's 35 page calls through the recording page against the
//! same calls on the bare page (the simulated browser, whose calls cost
//! almost nothing, so the recording's own cost shows), then the trace
//! finished, masked and written as a run does it.
//!
//! `cargo bench --bench trace`. The share of a real cycle is this cost
//! over the Chromium cycle `benches/purchase.sh` measures; the same
//! comparison end to end in Chromium is
//! `BATON_BENCH_COMPARE=trace cargo bench --bench purchase`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::browser::sim::{SimBrowser, SimElement, SimPage, SimSite};
use baton::browser::{Browser, Page, Selectors};
use baton::id::{RunId, SessionId};
use baton::redact::Redactor;
use baton::trace::{Recorder, TraceConfig, TraceStore, TracedPage};

const URL: &str = "http://shop.test/p/1001";

async fn cycle(page: &Arc<dyn Page>) {
    let t = Duration::from_secs(1);
    let sel = Selectors::many(&["#add-to-cart", "#out-of-stock"]);
    for _ in 0..5 {
        page.navigate(URL, t).await.unwrap();
        page.wait_for(&sel, t).await.unwrap();
        page.text(&Selectors::one("#price"), t).await.unwrap();
        page.fill(&Selectors::one("#qty"), "1", t).await.unwrap();
        page.click(&Selectors::one("#add-to-cart"), t)
            .await
            .unwrap();
        page.count(&Selectors::one(".cart-line")).await.unwrap();
        page.exists(&Selectors::one("#cart-empty")).await.unwrap();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut site = SimSite::default();
    let mut p = SimPage::default();
    for sel in [
        "#add-to-cart",
        "#price",
        "#qty",
        ".cart-line",
        "#cart-empty",
    ] {
        p.elements.insert(sel.into(), SimElement::text("$49.99"));
    }
    site.pages.insert(URL.into(), p);
    let browser = SimBrowser::new(site);
    let dir = tempfile::tempdir().unwrap();
    let store = TraceStore::new(dir.path(), TraceConfig::default());
    let redactor = Redactor::new();
    redactor.add("4242424242424242");

    let (mut bare, mut traced) = (Vec::new(), Vec::new());
    for i in 0..400u64 {
        let page = browser.new_page(SessionId(0)).await.unwrap();
        let t = Instant::now();
        if i % 2 == 0 {
            cycle(&page).await;
            bare.push(t.elapsed().as_secs_f64() * 1000.0);
        } else {
            let rec = Recorder::new();
            let p = TracedPage::wrap(page.clone(), rec.clone());
            rec.step_started("product_page");
            cycle(&p).await;
            rec.step_ended("ok");
            let trace = rec.finish(&redactor);
            let store = store.clone();
            tokio::task::spawn_blocking(move || store.write(RunId(i), &trace))
                .await
                .unwrap()
                .unwrap();
            traced.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        page.close().await;
    }
    let (b, t) = (median(bare), median(traced));
    println!("35 page calls, bare page:            {b:.3} ms");
    println!("35 page calls, traced, trace written: {t:.3} ms");
    println!("the trace's own cost per run:         {:.3} ms", t - b);
    println!(
        "share of a 1,600 ms Chromium cycle:   {:.3} %",
        100.0 * (t - b) / 1600.0
    );
}
