//! The script host against the simulated browser: every primitive, errors
//! and their locations, limits, cancellation, secrets, modules, plugins and
//! hot reload.

#[path = "../examples/price_plugin/plugin.rs"]
mod price_plugin;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton::browser::sim::{ClickEffect, SimBrowser, SimElement, SimPage, SimSite};
use baton::browser::{Browser, Page};
use baton::config::Secrets;
use baton::flow::{
    CommitSink, Flow, Step, StepContext, StepEnd, StepErrorKind, StepRunner, Target, Timeouts,
};
use baton::id::SessionId;
use baton::redact::Redactor;
use baton::script::api::{Trace, TracedCall};
use baton::script::{Probe, Ran, ScriptHost};
use tokio_util::sync::CancellationToken;

const PRODUCT: &str = "http://shop.test/p/1";
const CART: &str = "http://shop.test/cart";

fn site() -> SimSite {
    let mut product = SimPage {
        title: "Widget".into(),
        ..SimPage::default()
    };
    let el = |text: &str| SimElement::text(text);
    product.elements.insert("#price".into(), el("$19.99"));
    product.elements.insert("#stock".into(), el("In stock"));
    product.elements.insert(
        "#buy".into(),
        SimElement {
            attrs: BTreeMap::from([("data-sku".to_owned(), "W-1".to_owned())]),
            on_click: Some(ClickEffect {
                navigate: Some(CART.into()),
                ..ClickEffect::default()
            }),
            ..el("Add to cart")
        },
    );
    product
        .elements
        .insert("text:Add to cart".into(), el("Add to cart"));
    product.elements.insert("xpath://h1".into(), el("Widget"));
    product.elements.insert(
        "#qty".into(),
        SimElement {
            value: "1".into(),
            ..SimElement::default()
        },
    );
    product.elements.insert(
        "#size".into(),
        SimElement {
            options: vec!["S".into(), "M".into()],
            ..SimElement::default()
        },
    );
    product
        .eval
        .insert("document.title".into(), serde_json::json!("Widget"));
    let mut cart = SimPage::default();
    cart.elements.insert(
        ".line".into(),
        SimElement {
            count: 2,
            ..SimElement::default()
        },
    );
    cart.elements.insert(
        ".remove".into(),
        SimElement {
            count: 2,
            on_click: Some(ClickEffect {
                remove: vec![".line".into(), ".remove".into()],
                ..ClickEffect::default()
            }),
            ..SimElement::default()
        },
    );
    // An AJAX basket: the line goes away a moment after the click, and the
    // page does not navigate.
    cart.elements.insert(
        ".ajax-line".into(),
        SimElement {
            count: 2,
            text: "Widget x1".into(),
            ..SimElement::default()
        },
    );
    cart.elements.insert(
        ".ajax-remove".into(),
        SimElement {
            count: 2,
            on_click: Some(ClickEffect {
                remove: vec![".ajax-line".into(), ".ajax-remove".into()],
                delay_ms: 50,
                ..ClickEffect::default()
            }),
            ..SimElement::default()
        },
    );
    cart.eval
        .insert("window.cartReady".into(), serde_json::json!(true));
    let mut s = SimSite::default();
    s.pages.insert(PRODUCT.into(), product);
    s.pages.insert(CART.into(), cart);
    s.eval.insert("1 + 1".into(), serde_json::json!(2));
    s
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, body) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

fn target() -> Arc<Target> {
    Arc::new(Target {
        id: "1".into(),
        url: PRODUCT.into(),
        flow: "purchase".into(),
        account: None,
        params: serde_json::json!({"name": "Ada"})
            .as_object()
            .unwrap()
            .clone(),
        budget: baton::budget::Budget::Max {
            amount: baton::price::Amount::from_f64(25.0).unwrap(),
            currency: None,
        },
        schedule: baton::schedule::Schedule::default(),
    })
}

/// Records commit calls; `run` decides whether the closure runs.
#[derive(Default)]
struct Sink {
    run: bool,
    calls: Mutex<Vec<String>>,
    /// What `deadline` answers: the end of `commit_timeout`.
    deadline: Option<tokio::time::Instant>,
}

impl CommitSink for Sink {
    fn begin(&self, label: &str) -> Result<bool, baton::flow::CommitRefused> {
        self.calls.lock().unwrap().push(format!("begin {label}"));
        Ok(self.run)
    }
    fn observe(&self, price: baton::price::Price) {
        self.calls.lock().unwrap().push(format!("observe {price}"));
    }
    fn done(&self, label: &str, result: Option<&str>) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("done {label} {result:?}"));
    }
    fn not_placed(&self, label: &str, reason: &str) {
        self.calls
            .lock()
            .unwrap()
            .push(format!("not_placed {label} {reason}"));
    }
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }
}

/// Records primitive calls, as the dry run prints them.
#[derive(Default)]
struct Calls(
    Mutex<Vec<String>>,
    Option<tokio::sync::mpsc::UnboundedSender<String>>,
);

impl Trace for Calls {
    fn call(&self, c: &TracedCall<'_>) {
        let line = format!("{}({}) -> {:?}", c.name, c.args, c.result);
        if let Some(tx) = &self.1 {
            let _ = tx.send(line.clone());
        }
        self.0.lock().unwrap().push(line);
    }
}

struct Env {
    dir: tempfile::TempDir,
    host: ScriptHost,
    sim: SimBrowser,
    redactor: Arc<Redactor>,
}

impl Env {
    fn new(files: &[(&str, &str)]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("scripts"), files);
        let redactor = Arc::new(Redactor::new());
        let host = ScriptHost::builder(dir.path().join("scripts"))
            .secrets(Secrets::new(BTreeMap::from([(
                "cvv".to_owned(),
                "9731".to_owned(),
            )])))
            .redactor(redactor.clone())
            .shots_dir(dir.path().join("shots"))
            .plugin(Arc::new(price_plugin::PricePlugin))
            .build();
        Env {
            dir,
            host,
            sim: SimBrowser::new(site()),
            redactor,
        }
    }

    fn file(&self, name: &str) -> String {
        self.dir
            .path()
            .join("scripts")
            .join(name)
            .display()
            .to_string()
    }

    async fn page(&self) -> Arc<dyn Page> {
        let p = self.sim.new_page(SessionId(0)).await.unwrap();
        p.navigate(PRODUCT, Duration::from_secs(1)).await.unwrap();
        p
    }

    async fn run_with(
        &self,
        script: &str,
        sink: Arc<Sink>,
        calls: Arc<Calls>,
        cancel: CancellationToken,
    ) -> Result<Ran, baton::flow::StepError> {
        let page = self.page().await;
        let r = self
            .host
            .run_script(
                script,
                StepContext {
                    label: "r1".into(),
                    page: Some(page.clone()),
                    target: target(),
                    cancel,
                    commit: Some(sink),
                    timeouts: Timeouts {
                        action: Duration::from_millis(200),
                        step: Duration::from_secs(5),
                        http: Duration::from_secs(2),
                    },
                    account: None,
                },
                Probe {
                    trace: Some(calls),
                    http_fixture: Some(Arc::new(BTreeMap::from([(
                        "http://shop.test/api/stock/1".to_owned(),
                        serde_json::json!({"in_stock": true, "stock": 3}),
                    )]))),
                    notices: None,
                },
            )
            .await;
        page.close().await;
        r
    }

    async fn run(&self, script: &str) -> Result<Ran, baton::flow::StepError> {
        self.run_with(
            script,
            Arc::new(Sink::default()),
            Arc::new(Calls::default()),
            CancellationToken::new(),
        )
        .await
    }

    async fn value(&self, script: &str) -> String {
        match self.run(script).await {
            Ok(Ran {
                end: StepEnd::Continue,
                value: v,
            }) => v.to_string(),
            other => panic!("{script}: {other:?}"),
        }
    }

    async fn error(&self, script: &str) -> String {
        match self.run(script).await {
            Err(e) => e.message,
            other => panic!("{script}: expected an error, got {other:?}"),
        }
    }
}

/// Runs `script` as a monitor would: no page, no commit, the real network,
/// HTTP bounded by `http`.
fn monitor(
    host: &ScriptHost,
    script: &'static str,
    http: Duration,
) -> impl std::future::Future<Output = Result<Ran, baton::flow::StepError>> + use<> {
    let host = host.clone();
    async move {
        host.run_script(
            script,
            StepContext::monitor(
                target(),
                CancellationToken::new(),
                Timeouts {
                    action: Duration::from_millis(200),
                    step: Duration::from_secs(5),
                    http,
                },
            ),
            Probe::default(),
        )
        .await
    }
}

macro_rules! scripts {
    ($($name:literal => $body:expr),* $(,)?) => {
        Env::new(&[$(($name, $body)),*])
    };
}

// Primitives -----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_reading_primitives() {
    let e = scripts! {
        "t.rhai" => r##"
            let out = [];
            out.push(url());
            out.push(title());
            out.push(text("#price"));
            out.push(text(["#missing", "#stock"]));
            out.push(text("text:Add to cart"));
            out.push(text("xpath://h1"));
            out.push(attr("#buy", "data-sku"));
            out.push(attr("#buy", "nope"));
            out.push(value("#qty"));
            out.push(exists("#price"));
            out.push(exists("#missing"));
            out.push(count("#price"));
            out.push(count("#missing"));
            out.push(wait_for(["#missing", "#stock"]));
            out.push(wait_for("#price", 50));
            out.push(js("1 + 1"));
            out.push(target.id + " " + target.params.name + " " + target.max_price);
            out
        "##,
    };
    assert_eq!(
        e.value("t").await,
        r##"["http://shop.test/p/1", "Widget", "$19.99", "In stock", "Add to cart", "Widget", "W-1", (), "1", true, false, 1, 0, "#stock", "#price", 2, "1 Ada 25.0"]"##
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_acting_primitives() {
    let e = scripts! {
        "t.rhai" => r##"
            fill("#qty", "3");
            let q = value("#qty");
            select("#size", "M");
            let s = value("#size");
            press("Enter");
            click("#buy");
            let u = url();
            let before = count(".line");
            click(".remove");
            click(".remove");
            let after = count(".line");
            navigate("http://shop.test/p/1");
            reload();
            let shot = screenshot("after checkout");
            sleep(5);
            log("done");
            [q, s, u, before, after, shot.ends_with("shots/r1-after_checkout.png")]
        "##,
    };
    assert_eq!(
        e.value("t").await,
        r##"["3", "M", "http://shop.test/cart", 2, 0, true]"##
    );
    assert!(e.dir.path().join("shots/r1-after_checkout.png").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_pages_that_change_without_navigating() {
    let e = scripts! {
        "t.rhai" => r##"
            navigate("http://shop.test/cart");
            wait_idle();
            let out = [];
            click(".ajax-remove");
            // The removal lands later: only a wait sees it.
            out.push(wait_count(".ajax-line", "<", 2, 5000));
            click(".ajax-remove");
            wait_gone(".ajax-line", 5000);
            out.push(count(".ajax-line"));
            out.push(wait_count(".line", 2));
            out.push(wait_until("window.cartReady"));
            out
        "##,
        "text.rhai" => r##"wait_text("#price", "19")"##,
        "gone.rhai" => r##"wait_gone("#price")"##,
        "count.rhai" => r##"navigate("http://shop.test/cart"); wait_count(".line", ">=", 3)"##,
        "cmp.rhai" => r##"wait_count("#price", "=~", 1)"##,
        "false.rhai" => r##"wait_until("window.missing")"##,
        "text_wrong.rhai" => r##"wait_text("#price", "EUR")"##,
    };
    assert_eq!(e.value("t").await, "[1, 0, 2, true]");
    assert_eq!(e.value("text").await, "$19.99");
    let err = e.error("gone").await;
    assert!(
        err.contains("wait_gone(\"#price\"): waited 200ms for selector `#price` to be gone, but it still matches 1 element(s)"),
        "{err}"
    );
    let err = e.error("count").await;
    assert!(
        err.contains("the count of `.line` >= 3, but it matches 2 element(s), wanted >= 3"),
        "{err}"
    );
    let err = e.error("cmp").await;
    assert!(err.contains("unknown comparison \"=~\""), "{err}");
    let err = e.error("false").await;
    assert!(
        err.contains("`window.missing` to be true, but it is still null"),
        "{err}"
    );
    let err = e.error("text_wrong").await;
    assert!(
        err.contains("to contain \"EUR\", but it has the text \"$19.99\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_json_answers_and_fails_clearly() {
    let e = scripts! {
        "fixture.rhai" => r##"let s = http_get_json("http://shop.test/api/stock/1"); s.in_stock && s.stock == 3"##,
        "missing.rhai" => r##"http_get_json("http://shop.test/api/stock/2")"##,
    };
    assert_eq!(e.value("fixture").await, "true");
    assert_eq!(
        e.error("missing").await,
        format!(
            "{}:1:1: http_get_json(\"http://shop.test/api/stock/2\"): the fixture has no answer for `http://shop.test/api/stock/2`",
            e.file("missing.rhai")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_json_over_the_network() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(serde_json::json!({"stock": 2})) }),
        )
        .route(
            "/boom",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let e = Env::new(&[
        ("ok.rhai", &format!(r##"http_get_json("{base}/ok").stock"##)),
        ("boom.rhai", &format!(r##"http_get_json("{base}/boom")"##)),
        ("slow.rhai", &format!(r##"http_get_json("{base}/slow")"##)),
    ]);
    let run = |script: &'static str| monitor(&e.host, script, Duration::from_millis(300));
    assert!(
        matches!(run("ok").await, Ok(Ran { end: StepEnd::Continue, value: v }) if v.as_int() == Ok(2))
    );
    let err = run("boom").await.unwrap_err().message;
    assert!(err.ends_with("HTTP 500 Internal Server Error"), "{err}");
    let err = run("slow").await.unwrap_err().message;
    assert!(
        err.contains("http_get_json(")
            && (err.contains("timed out") || err.contains("request failed")),
        "{err}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_primitive_names_file_line_column_primitive_and_cause() {
    let e = scripts! {
        "t.rhai" => "let a = 1;\n\n    click([\"#gone\", \"#also-gone\"]);\n",
        "nav.rhai" => "select(\"#size\", \"XL\");",
        "bad_sel.rhai" => "click(42);",
    };
    assert_eq!(
        e.error("t").await,
        format!(
            "{}:3:5: click([\"#gone\", \"#also-gone\"]): selector `#gone` or `#also-gone` not found within 200ms",
            e.file("t.rhai")
        )
    );
    assert_eq!(
        e.error("nav").await,
        format!(
            "{}:1:1: select(\"#size\", \"XL\"): option `XL` not found in `#size`",
            e.file("nav.rhai")
        )
    );
    assert_eq!(
        e.error("bad_sel").await,
        format!(
            "{}:1:1: click: expected a selector (a string) or an array of selectors, got i64",
            e.file("bad_sel.rhai")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_functions_and_modules_point_at_the_real_line() {
    let e = scripts! {
        "lib/helpers.rhai" => "fn must(sel) {\n    click(sel)\n}\n",
        "t.rhai" => "import \"lib/helpers\" as h;\n\nh::must(\"#gone\");\n",
        "syntax.rhai" => "let x = ;\n",
    };
    let err = e.error("t").await;
    assert_eq!(
        err,
        format!(
            "{}:2:5: click(\"#gone\"): selector `#gone` not found within 200ms (called from {}:3:4)",
            e.file("lib/helpers.rhai"),
            e.file("t.rhai")
        )
    );
    let lib = e.host.library();
    let syntax = lib.errors.get("syntax").expect("syntax error recorded");
    assert_eq!(
        syntax.to_string(),
        format!(
            "{}:1:9: syntax error: expecting an expression",
            e.file("syntax.rhai")
        )
        .replace(
            "expecting an expression",
            &syntax.message["syntax error: ".len()..]
        )
    );
    assert_eq!((syntax.line, syntax.column), (Some(1), Some(9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_ends_the_step_and_fail_fails_it_uncatchably() {
    let e = scripts! {
        "out.rhai" => r##"if text("#stock") != "Out of stock" { outcome("out_of_stock"); } log("not reached");"##,
        "fail.rhai" => "try {\n  fail(\"price too high\");\n} catch (e) {\n  log(\"caught\");\n}\n",
    };
    assert!(
        matches!(e.run("out").await, Ok(Ran { end: StepEnd::Outcome(o), .. }) if o == "out_of_stock")
    );
    assert_eq!(
        e.error("fail").await,
        format!("{}:2:3: fail: price too high", e.file("fail.rhai"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_persists_first_and_is_skipped_in_a_dry_run() {
    let e = scripts! {
        "t.rhai" => r##"let order = commit("place order", || { click("#buy"); "A-100" }); [order, url()]"##,
    };
    let sink = Arc::new(Sink {
        run: true,
        ..Sink::default()
    });
    let r = e
        .run_with(
            "t",
            sink.clone(),
            Arc::new(Calls::default()),
            CancellationToken::new(),
        )
        .await;
    assert!(
        matches!(r, Ok(Ran { end: StepEnd::Continue, value: v }) if v.to_string() == r##"["A-100", "http://shop.test/cart"]"##)
    );
    assert_eq!(
        *sink.calls.lock().unwrap(),
        vec!["begin place order", "done place order Some(\"A-100\")"]
    );

    // Dry run: the closure does not run, the skip is reported.
    let dry = Arc::new(Sink::default());
    let calls = Arc::new(Calls::default());
    let r = e
        .run_with("t", dry.clone(), calls.clone(), CancellationToken::new())
        .await;
    assert!(
        matches!(r, Ok(Ran { end: StepEnd::Continue, value: v }) if v.to_string() == r##"[(), "http://shop.test/p/1"]"##)
    );
    assert_eq!(*dry.calls.lock().unwrap(), vec!["begin place order"]);
    let calls = calls.0.lock().unwrap();
    assert!(
        calls
            .iter()
            .any(|c| c == "commit(\"place order\") -> Ok(\"skipped (dry run): would commit\")"),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.starts_with("click")),
        "the closure ran in a dry run"
    );
}

/// `not_placed(reason)` is the shop's explicit refusal: allowed only inside
/// a commit closure, it tells the sink (so the run ends `failed` and is
/// retried, not `in_doubt`) and ends the step with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_placed_tells_the_sink_and_only_works_inside_commit() {
    let e = scripts! {
        "refused.rhai" => r##"commit("place order", || { click("#buy"); not_placed("card declined"); "A-1" })"##,
        "outside.rhai" => r##"not_placed("nope")"##,
    };
    let sink = Arc::new(Sink {
        run: true,
        ..Sink::default()
    });
    let r = e
        .run_with(
            "refused",
            sink.clone(),
            Arc::new(Calls::default()),
            CancellationToken::new(),
        )
        .await;
    let err = r.unwrap_err();
    assert_eq!(err.kind, StepErrorKind::Failed);
    assert!(
        err.message
            .ends_with("refused.rhai: not_placed: card declined"),
        "{}",
        err.message
    );
    assert_eq!(
        *sink.calls.lock().unwrap(),
        vec!["begin place order", "not_placed place order card declined"],
        "no `done`: the closure did not return an order"
    );
    let outside = e.error("outside").await;
    assert!(
        outside.contains("only allowed inside a commit(...) closure"),
        "{outside}"
    );
}

/// Inside `commit`, a wait lasts until the commit's deadline rather than
/// `browser.timeout` (200 ms here): the answer that takes a second still
/// arrives, and the same wait outside `commit` gives up (I9).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_inside_commit_last_until_the_commit_deadline() {
    let e = scripts! {
        "outside.rhai" => r##"wait_for("#answer")"##,
        "inside.rhai" => r##"commit("place order", || { click("#buy"); wait_for("#answer") })"##,
    };
    let early = e.error("outside").await;
    assert!(early.contains("not found within 200ms"), "{early}");
    let sink = Arc::new(Sink {
        run: true,
        deadline: Some(tokio::time::Instant::now() + Duration::from_secs(30)),
        ..Sink::default()
    });
    let sim = e.sim.clone();
    let answer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sim.edit_site(|s| {
            for p in s.pages.values_mut() {
                p.elements.insert("#answer".into(), SimElement::text("A-1"));
            }
        });
    });
    let r = e
        .run_with(
            "inside",
            sink.clone(),
            Arc::new(Calls::default()),
            CancellationToken::new(),
        )
        .await;
    answer.await.unwrap();
    assert!(
        matches!(
            r,
            Ok(Ran {
                end: StepEnd::Continue,
                value: _
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        sink.calls.lock().unwrap().last().unwrap(),
        "done place order Some(\"#answer\")"
    );
}

// Secrets ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_usable_but_never_shown() {
    let e = scripts! {
        "t.rhai" => r##"fill("#qty", secret("cvv")); log("cvv is " + secret("cvv")); fail("card " + value("#qty") + " declined")"##,
        "undeclared.rhai" => r##"secret("pin")"##,
        "outcome.rhai" => r##"outcome("cvv-" + secret("cvv"))"##,
        "shot.rhai" => r##"screenshot("card " + secret("cvv"))"##,
        "order.rhai" => r##"commit("place order", || "A-" + secret("cvv"))"##,
    };
    let calls = Arc::new(Calls::default());
    let err = e
        .run_with(
            "t",
            Arc::new(Sink::default()),
            calls.clone(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
    // The value reached the page...
    // ...but not the error, the trace or anything else.
    assert_eq!(
        err.message,
        format!("{}:1:62: fail: card [redacted] declined", e.file("t.rhai"))
    );
    let calls = calls.0.lock().unwrap().join("\n");
    assert!(!calls.contains("9731"), "{calls}");
    assert!(calls.contains("fill(\"#qty\", \"[redacted]\")"), "{calls}");
    // The field that received the secret is marked for screenshot masking.
    assert!(
        e.sim
            .calls()
            .iter()
            .any(|c| c.action == "fill_secret" && c.arg == "`#qty`"),
        "{:?}",
        e.sim.calls()
    );
    assert_eq!(e.redactor.apply("9731"), "[redacted]");
    assert_eq!(
        e.error("undeclared").await,
        format!(
            "{}:1:1: secret `pin` is not declared in flows.yaml (declared: `cvv`)",
            e.file("undeclared.rhai")
        )
    );
    // Hardening: values that are stored (an outcome name, a commit result,
    // a screenshot's file name) are masked before they are kept, not only
    // log lines.
    match e.run("outcome").await {
        Ok(Ran {
            end: StepEnd::Outcome(name),
            ..
        }) => assert_eq!(name, "cvv-[redacted]"),
        other => panic!("{other:?}"),
    }
    let shot = e.value("shot").await;
    assert!(
        !shot.contains("9731") && shot.ends_with("r1-card__redacted_.png"),
        "{shot}"
    );
    let sink = Arc::new(Sink {
        run: true,
        ..Sink::default()
    });
    e.run_with(
        "order",
        sink.clone(),
        Arc::new(Calls::default()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        sink.calls.lock().unwrap().last().unwrap(),
        "done place order Some(\"A-[redacted]\")"
    );
}

// Limits and sandbox -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_end_runaway_scripts_with_clear_errors() {
    let e = scripts! {
        "ops.rhai" => "let x = 0;\nloop { x += 1; }",
        "depth.rhai" => "fn f(n) { f(n + 1) }\nf(0)",
        "string.rhai" => "let s = \"x\";\nloop { s += s; }",
        "array.rhai" => "let a = [];\nloop { a.push(1); }",
        "map.rhai" => "let m = #{};\nlet i = 0;\nloop { m[`k${i}`] = i; i += 1; m.len(); }",
        "eval.rhai" => "eval(\"1 + 1\")",
    };
    let ops = e.error("ops").await;
    assert!(
        ops.starts_with(&format!("{}:2:", e.file("ops.rhai"))),
        "{ops}"
    );
    assert!(
        ops.ends_with("the script exceeded its limit of 5000000 operations"),
        "{ops}"
    );
    let depth = e.error("depth").await;
    assert!(
        depth.contains("the script exceeded its call depth limit of 64"),
        "{depth}"
    );
    let string = e.error("string").await;
    assert!(
        string.starts_with(&format!("{}:2:", e.file("string.rhai"))),
        "{string}"
    );
    assert!(string.contains("exceeds its limit"), "{string}");
    let array = e.error("array").await;
    assert!(array.contains("exceeds its limit"), "{array}");
    let map = e.error("map").await;
    assert!(map.contains("exceeds its limit"), "{map}");
    let eval = e.error("eval").await;
    assert!(
        eval.starts_with(&format!("{}:1:", e.file("eval.rhai"))),
        "{eval}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_cannot_reach_files_or_processes() {
    // Rhai has no file or process functions unless a host adds them; baton
    // adds none. These calls must not resolve.
    let e = scripts! {
        "t.rhai" => r##"open_file("/etc/passwd")"##,
        "u.rhai" => r##"system("id")"##,
    };
    assert!(e.error("t").await.contains("function not found: open_file"));
    assert!(e.error("u").await.contains("function not found: system"));
}

// Cancellation -------------------------------------------------------------------

/// Cancellation reaches a script in `loop {}` (through the progress hook) and
/// one in a long `sleep` (through the cancellable wait). How fast is measured
/// by `benches/bridge.rs`; here the hang guard only proves it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_loop_and_sleep() {
    let e = scripts! {
        "spin.rhai" => "log(\"started\");\nloop { }",
        "nap.rhai" => "log(\"started\");\nsleep(600000);",
        "wait.rhai" => "log(\"started\");\nwait_for(\"#never\", 600000);",
    };
    for script in ["spin", "nap", "wait"] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let calls = Arc::new(Calls(Mutex::new(Vec::new()), Some(tx)));
        let cancel = CancellationToken::new();
        let run = {
            let (cancel, calls) = (cancel.clone(), calls.clone());
            let e = &e;
            async move {
                e.run_with(script, Arc::new(Sink::default()), calls, cancel)
                    .await
            }
        };
        let canceller = async {
            // Cancel once the script is running.
            assert!(rx.recv().await.unwrap().starts_with("log"));
            cancel.cancel();
        };
        let (r, ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(run, canceller)
        })
        .await
        .unwrap_or_else(|_| panic!("{script}: cancellation did not stop the script"));
        let err = r.unwrap_err();
        assert_eq!(err.kind, StepErrorKind::Cancelled, "{script}: {err:?}");
    }
}

/// Hardening: Rhai's own `sleep` (seconds) could not be cancelled. In a
/// module's top level it ran at compile time and hung `check` and start-up
/// (ignoring SIGINT); in a step, `sleep(20.0)` outlived cancellation. Both
/// are now clear errors, at once; baton's `sleep(ms)` still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhai_sleep_cannot_block_compiling_or_a_step() {
    let started = std::time::Instant::now();
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(|| {
            Env::new(&[
                ("lib/nap.rhai", "sleep(30);\nexport const X = 1;"),
                ("napper.rhai", "import \"lib/nap\" as n;\nn::X"),
                ("float.rhai", "sleep(20.0)"),
                ("ms.rhai", "sleep(5); 1"),
            ])
        }),
    )
    .await
    .expect("compiling a module that sleeps hung")
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    let napper = e.host.library().errors["napper"].to_string();
    assert!(
        napper.contains("sleep(30): only a running step may sleep, not a module's top level"),
        "{napper}"
    );
    let float = tokio::time::timeout(Duration::from_secs(5), e.error("float"))
        .await
        .expect("sleep(20.0) slept");
    assert!(
        float.contains("sleep(20.0): baton's sleep takes whole milliseconds"),
        "{float}"
    );
    assert_eq!(e.value("ms").await, "1");
}

// Modules ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_import_inside_scripts_and_nowhere_else() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("evil.rhai"), "export const X = 1;").unwrap();
    let e = scripts! {
        "lib/helpers.rhai" => "import \"lib/more/consts\" as c;\nexport const LIMIT = c::BASE * 2;\nfn double(x) { x * 2 }",
        "lib/more/consts.rhai" => "export const BASE = 21;",
        "ok.rhai" => "import \"lib/helpers\" as h;\nh::double(h::LIMIT)",
        "up.rhai" => "import \"../outside\" as x;\n1",
        "abs.rhai" => &format!("import \"{}\" as x;\n1", outside.path().join("evil").display()),
        "missing.rhai" => "import \"lib/nope\" as x;\n1",
    };
    assert_eq!(e.value("ok").await, "84");
    let lib = e.host.library();
    let up = lib
        .errors
        .get("up")
        .expect("`..` import refused at compile time")
        .to_string();
    assert!(
        up.contains(":1:1: import `../outside` refused: `..` leaves the scripts directory"),
        "{up}"
    );
    let abs = lib
        .errors
        .get("abs")
        .expect("absolute import refused")
        .to_string();
    assert!(
        abs.contains("refused: absolute paths are not allowed"),
        "{abs}"
    );
    let missing = lib.errors.get("missing").unwrap().to_string();
    assert!(
        missing.contains("module `lib/nope` not found: there is no"),
        "{missing}"
    );
    assert!(!lib.scripts.contains_key("up"));

    // A symlink that points outside is refused too.
    std::os::unix::fs::symlink(
        outside.path().join("evil.rhai"),
        e.dir.path().join("scripts/lib/link.rhai"),
    )
    .unwrap();
    write(
        &e.dir.path().join("scripts"),
        &[("linked.rhai", "import \"lib/link\" as x;\n1")],
    );
    e.host.reload();
    let linked = e.host.library().errors.get("linked").unwrap().to_string();
    assert!(
        linked.contains("refused: it is a link to outside the scripts directory"),
        "{linked}"
    );

    // Hardening: discovery stays inside too. A step that is a link to a
    // file outside is refused, and a link to a directory (here one that
    // loops back up) is never walked.
    std::os::unix::fs::symlink(
        outside.path().join("evil.rhai"),
        e.dir.path().join("scripts/outside_step.rhai"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..", e.dir.path().join("scripts/lnk")).unwrap();
    // Something a walk through `lnk` would find and complain about.
    std::fs::write(e.dir.path().join("broken_outside.rhai"), "let = ;").unwrap();
    std::os::unix::fs::symlink(
        e.dir.path().join("scripts/ok.rhai"),
        e.dir.path().join("scripts/alias.rhai"),
    )
    .unwrap();
    let r = e.host.reload();
    let lib = e.host.library();
    let step = lib.errors.get("outside_step").expect("refused").to_string();
    assert!(
        step.contains("it is a link to outside the scripts directory"),
        "{step}"
    );
    assert!(!lib.scripts.contains_key("outside_step"));
    assert!(lib.scripts.contains_key("alias"), "a link inside is fine");
    assert!(
        r.failed.iter().all(|f| !f.file.contains("broken_outside")),
        "a linked directory was walked: {r:?}"
    );
}

// Plugins ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_plugin_adds_functions() {
    let e = scripts! {
        "t.rhai" => r##"[price_below(text("#price"), target.max_price), parse_price("$1,299.99").amount]"##,
        "bad.rhai" => r##"price_below("Sold out", 10.0)"##,
    };
    assert_eq!(e.value("t").await, "[true, 1299.99]");
    assert!(
        e.error("bad")
            .await
            .ends_with("price_below: no number in \"Sold out\"")
    );
    let defs = e.host.definitions();
    assert!(
        defs.contains("fn price_below(text: string, max: float) -> bool;"),
        "{defs}"
    );
}

#[tokio::test]
async fn definitions_describe_every_primitive() {
    let e = scripts! { "t.rhai" => "1" };
    let defs = e.host.definitions();
    for f in [
        "fn navigate(url: string) -> ();",
        "fn wait_for(selector: string | array, ms: int) -> string;",
        "fn click(selector: string | array) -> ();",
        "fn commit(label: string, action: Fn) -> ?;",
        "fn secret(name: string) -> string;",
        "fn http_get_json(url: string) -> ?;",
        "const target",
    ] {
        assert!(defs.contains(f), "missing `{f}` in:\n{defs}");
    }
    assert!(
        defs.contains("/// Waits until it is visible, up to `browser.timeout`"),
        "doc comments are exported"
    );
}

/// The engine registers the primitive table and nothing else: every
/// function `baton defs` lists (what scripts can call) is one form of one
/// declared primitive, and every form is there. The reference in
/// docs/scripting.md is generated from the same table (the lib test
/// `reference_in_the_docs_is_generated_from_the_table`), so a primitive
/// registered outside the table would be missing from the docs: it fails
/// here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_registers_the_primitive_table_and_only_it() {
    // baton's own primitives: no plugin's.
    let defs = baton::script::ScriptHost::off().definitions();
    let mut registered: Vec<String> = defs
        .lines()
        .filter_map(|l| l.strip_prefix("fn "))
        .map(|l| {
            // `wait_for(selector: string | array, ms: int) -> string;`:
            // the name and the parameters' types.
            let (name, rest) = l.split_once('(').unwrap();
            let params = rest.split_once(')').unwrap().0;
            let types: Vec<&str> = params
                .split(", ")
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once(": ").map_or(p, |(_, t)| t))
                .collect();
            format!("{name}({})", types.join(", "))
        })
        .collect();
    registered.sort();
    let mut declared: Vec<String> = baton::script::api::primitives()
        .flat_map(|p| p.forms.iter().map(move |f| (p.name, f)))
        .map(|(name, f)| format!("{name}({})", f.param_types().join(", ")))
        .collect();
    declared.sort();
    assert!(declared.len() > 40, "{declared:?}");
    assert_eq!(registered, declared);
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scripting.md"),
    )
    .unwrap();
    for p in baton::script::api::primitives() {
        assert!(
            doc.contains(&format!("{}(", p.name)),
            "`{}` is not in docs/scripting.md",
            p.name
        );
    }
}

/// A form's function reads its arguments by position, as the table
/// declares them; Rhai only checks the declared types. Each form is called
/// here with arguments of its declared types: none may fail for reading an
/// argument as another type (a table entry that says `int` where the
/// function reads a string).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_reads_its_arguments_as_declared() {
    use baton::script::api::{primitives, table::Type};
    let sample = |t: Type| match t {
        Type::Str | Type::Any => "\"x\"",
        Type::Int => "1",
        Type::Float => "1.0",
        Type::Selector => "\"#price\"",
        Type::StrOrMap => "\"<p>x</p>\"",
        Type::Map => "#{}",
        Type::Array => "[]",
        Type::Bool => "true",
        Type::Fn => "|| 1",
        Type::Html => "html(\"<p id='price'>x</p>\")",
        Type::Unit | Type::OptStr => unreachable!("not a parameter type"),
    };
    let mut calls = Vec::new();
    for p in primitives() {
        for f in p.forms {
            let args: Vec<&str> = f.params.iter().map(|a| sample(a.1)).collect();
            let call = match f.params.first() {
                Some(first) if first.1 == Type::Html => {
                    format!("{}.{}({})", args[0], p.name, args[1..].join(", "))
                }
                _ => format!("{}({})", p.name, args.join(", ")),
            };
            calls.push(call);
        }
    }
    let files: Vec<(String, String)> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("f{i}.rhai"), format!("{c};")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_str()))
        .collect();
    let e = Env::new(&refs);
    for (i, call) in calls.iter().enumerate() {
        if let Err(err) = e.run(&format!("f{i}")).await {
            assert!(
                !err.message.contains("(expecting "),
                "{call}: {}",
                err.message
            );
        }
    }
    assert!(calls.len() > 40, "{calls:?}");
}

/// Hardening: an import cycle used to recurse until the compiling thread's
/// stack overflowed, which aborted baton (during a reload, mid-commit) and
/// every later `check` and start. It is now a located compile error naming
/// the chain, and imports nest at most `MAX_IMPORT_DEPTH` deep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cycle_is_a_located_error_not_a_crash() {
    let mut files = vec![
        ("evil.rhai", "import \"evil\" as e;\n1".to_owned()),
        ("uses_ca.rhai", "import \"lib/ca\" as a;\n1".to_owned()),
        (
            "lib/ca.rhai",
            "import \"lib/cb\" as b;\nexport const A = 1;".to_owned(),
        ),
        (
            "lib/cb.rhai",
            "import \"lib/ca\" as a;\nexport const B = 1;".to_owned(),
        ),
        ("deep.rhai", "import \"lib/d0\" as d;\nd::V".to_owned()),
        ("shallow.rhai", "import \"lib/d4\" as d;\nd::V".to_owned()),
    ];
    // lib/d0 -> d1 -> ... -> d11: twelve levels.
    for i in 0..12 {
        let body = if i < 11 {
            format!(
                "import \"lib/d{}\" as n;\nexport const V = n::V + 1;",
                i + 1
            )
        } else {
            "export const V = 1;".to_owned()
        };
        files.push((Box::leak(format!("lib/d{i}.rhai").into_boxed_str()), body));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(n, b)| (*n, b.as_str())).collect();
    let e = Env::new(&files);
    let lib = e.host.library();
    let evil = lib
        .errors
        .get("evil")
        .expect("a self-import is refused")
        .to_string();
    assert!(
        evil.contains("evil.rhai:1:1: import cycle: ")
            && evil.contains("evil.rhai:1:1 imports `evil`, which is already being imported"),
        "{evil}"
    );
    let two = lib
        .errors
        .get("uses_ca")
        .expect("a two-module cycle is refused")
        .to_string();
    assert!(
        two.contains("lib/ca.rhai:1:8 imports `lib/cb` → ")
            && two.contains("lib/cb.rhai:1:8 imports `lib/ca`, which is already being imported"),
        "{two}"
    );
    let deep = lib
        .errors
        .get("deep")
        .expect("deep nesting is refused")
        .to_string();
    assert!(
        deep.contains("imports nest deeper than 8 modules"),
        "{deep}"
    );
    // Eight levels are fine.
    assert_eq!(e.value("shallow").await, "8");

    // A reload that brings a cycle keeps the last good version, and baton
    // stays up (this used to abort the process from the watcher's thread).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = baton::script::reload::watch(e.host.clone(), move |r| {
        let _ = tx.send(r.clone());
    })
    .unwrap();
    std::fs::write(
        e.dir.path().join("scripts/shallow.rhai"),
        "import \"shallow\" as me;\n1",
    )
    .unwrap();
    let r = next_reload(&mut rx).await;
    assert!(
        r.failed
            .iter()
            .any(|f| f.to_string().contains("import cycle")),
        "{r:?}"
    );
    assert_eq!(e.value("shallow").await, "8", "the last good version stays");
}

// Hot reload ---------------------------------------------------------------------

/// Waits (bounded) for the watcher to report a reload.
async fn next_reload(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<baton::script::ReloadReport>,
) -> baton::script::ReloadReport {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the watcher saw the change")
        .unwrap()
}

fn generation(host: &ScriptHost, name: &str) -> u64 {
    host.library().scripts[name].generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_swaps_good_versions_and_keeps_the_last_good_one() {
    let e = scripts! {
        "step.rhai" => "\"v1\"",
        "lib/m.rhai" => "export const V = 1;",
        "uses_lib.rhai" => "import \"lib/m\" as m;\nm::V",
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = baton::script::reload::watch(e.host.clone(), move |r| {
        let _ = tx.send(r.clone());
    })
    .unwrap();
    let scripts = e.dir.path().join("scripts");
    let g1 = generation(&e.host, "step");

    // A plain save.
    std::fs::write(scripts.join("step.rhai"), "\"v2\"").unwrap();
    let r = next_reload(&mut rx).await;
    assert_eq!(r.changed.len(), 1, "{r:?}");
    assert_eq!(e.value("step").await, "v2");
    let g2 = generation(&e.host, "step");
    assert!(g2 > g1);

    // A syntax error: reported with its location, last good version kept.
    std::fs::write(scripts.join("step.rhai"), "let = ;").unwrap();
    let r = next_reload(&mut rx).await;
    let err = r
        .failed
        .iter()
        .find(|f| f.file.ends_with("step.rhai"))
        .expect("failure reported");
    assert_eq!((err.line, err.column), (Some(1), Some(5)));
    assert_eq!(e.value("step").await, "v2");
    assert_eq!(generation(&e.host, "step"), g2);
    assert!(
        e.host
            .status()
            .iter()
            .any(|s| s.name == "step" && s.error.is_some())
    );

    // A rename-style save (write a temporary file, rename it over).
    std::fs::write(scripts.join(".step.rhai.tmp"), "\"v3\"").unwrap();
    std::fs::rename(scripts.join(".step.rhai.tmp"), scripts.join("step.rhai")).unwrap();
    let r = next_reload(&mut rx).await;
    assert!(r.changed.iter().any(|(n, _)| n == "step"), "{r:?}");
    assert_eq!(e.value("step").await, "v3");
    assert!(
        e.host.status().iter().all(|s| s.error.is_none()),
        "the error cleared"
    );

    // Deleted and re-created.
    std::fs::remove_file(scripts.join("step.rhai")).unwrap();
    let r = next_reload(&mut rx).await;
    assert!(
        r.failed
            .iter()
            .any(|f| f.message.contains("the file is gone")),
        "{r:?}"
    );
    assert_eq!(e.value("step").await, "v3", "the last good version stays");
    std::fs::write(scripts.join("step.rhai"), "\"v4\"").unwrap();
    let r = next_reload(&mut rx).await;
    assert!(r.changed.iter().any(|(n, _)| n == "step"), "{r:?}");
    assert_eq!(e.value("step").await, "v4");

    // A change to a module reloads the scripts that import it.
    let before = generation(&e.host, "uses_lib");
    std::fs::write(scripts.join("lib/m.rhai"), "export const V = 2;").unwrap();
    let r = next_reload(&mut rx).await;
    assert_eq!(
        r.changed
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        vec!["uses_lib"]
    );
    assert!(generation(&e.host, "uses_lib") > before);
    assert_eq!(e.value("uses_lib").await, "2");
}

/// I8 with real scripts and the real watcher: a file edited on disk while a
/// run is between its steps does not change that run; the next run gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i8_a_run_keeps_its_versions_across_a_reload() {
    let e = scripts! {
        "first.rhai" => "click(\"#buy\");",
        "second.rhai" => "log(\"second v1\");",
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = baton::script::reload::watch(e.host.clone(), move |r| {
        let _ = tx.send(r.clone());
    })
    .unwrap();
    let flow = Flow {
        name: "f".into(),
        monitor: None,
        steps: vec![
            Step {
                script: "first".into(),
                always: false,
            },
            Step {
                script: "second".into(),
                always: false,
            },
        ],
        outcomes: BTreeMap::new(),
        account: None,
    };
    let pinned = e.host.pin(&flow).unwrap();
    let page = e.page().await;
    let calls = Arc::new(Calls::default());
    let cx = |page: Arc<dyn Page>| StepContext {
        label: "r1".into(),
        page: Some(page),
        target: target(),
        cancel: CancellationToken::new(),
        commit: Some(Arc::new(Sink::default())),
        timeouts: Timeouts::default(),
        account: None,
    };
    let step = |n: &str| Step {
        script: n.into(),
        always: false,
    };
    assert_eq!(
        pinned.run_step(&step("first"), cx(page.clone())).await,
        Ok(StepEnd::Continue)
    );

    // The edit lands between the run's two steps.
    std::fs::write(
        e.dir.path().join("scripts/second.rhai"),
        "fail(\"v2 must not run in this run\");",
    )
    .unwrap();
    next_reload(&mut rx).await;
    assert_eq!(
        pinned.run_step(&step("second"), cx(page.clone())).await,
        Ok(StepEnd::Continue)
    );

    // The next run pins the new version.
    let next = e.host.pin(&flow).unwrap();
    let err = next
        .run_step(&step("second"), cx(page.clone()))
        .await
        .unwrap_err();
    assert!(
        err.message.ends_with("fail: v2 must not run in this run"),
        "{err:?}"
    );
    assert!(next.versions()[1].generation > pinned.versions()[1].generation);
    drop(calls);
}

/// Issue 11: a browser-free monitor for a shop without a JSON API. It reads
/// the product page as HTML, follows a redirect, and a host that answers
/// 429 with `Retry-After` is paused: the monitor is skipped without a
/// request until the pause ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_get_and_html_queries_make_a_browser_free_monitor() {
    use axum::routing::get;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let in_stock = Arc::new(AtomicBool::new(false));
    let limited_hits = Arc::new(AtomicU32::new(0));
    let (s, hits) = (in_stock.clone(), limited_hits.clone());
    let app = axum::Router::new()
        .route(
            "/p/1",
            get(move || {
                let buy = if s.load(Ordering::SeqCst) {
                    r#"<p class="stock">In stock</p><button id="add-to-cart">Add</button>"#
                } else {
                    r#"<p class="stock">Sold out</p>"#
                };
                async move {
                    axum::response::Html(format!(
                        r#"<html><body><h1>Widget</h1><span id="price" data-cents="1999">$19.99</span>{buy}<ul><li>a<li>b</ul></body></html>"#
                    ))
                }
            }),
        )
        .route(
            "/old/1",
            get(|| async { axum::response::Redirect::temporary("/p/1") }),
        )
        .route(
            "/limited",
            get(move || {
                hits.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "3600")],
                        "slow down",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let e = Env::new(&[
        (
            "monitor.rhai",
            &format!(
                r##"
                let page = http_get("{base}/old/1");
                let doc = html(page.body);
                [page.status, page.url.ends_with("/p/1"), page.headers["content-type"],
                 doc.text("h1"), doc.attr("#price", "data-cents"), doc.count("li"),
                 doc.text("xpath://p[@class='stock']"), doc.exists("text:Sold out"),
                 doc.all("li").map(|m| m.text), doc.exists("#add-to-cart")]
            "##
            ),
        ),
        (
            "stock.rhai",
            &format!(r##"html(http_get("{base}/p/1").body).exists("#add-to-cart")"##),
        ),
        (
            "limited.rhai",
            &format!(r##"http_get("{base}/limited").status == 429"##),
        ),
        (
            "missing.rhai",
            &format!(r##"html(http_get("{base}/p/1").body).text(".nope")"##),
        ),
        (
            "badopt.rhai",
            &format!(r##"http_get("{base}/p/1", #{{ cookies: 1 }})"##),
        ),
        ("refused.rhai", r##"http_get_json("http://127.0.0.1:9/x")"##),
    ]);
    let run = |script: &'static str| monitor(&e.host, script, Duration::from_secs(5));
    let value = |r: Result<Ran, baton::flow::StepError>| match r {
        Ok(Ran {
            end: StepEnd::Continue,
            value: v,
        }) => v.to_string(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        value(run("monitor").await),
        r#"[200, true, "text/html; charset=utf-8", "Widget", "1999", 2, "Sold out", true, ["a", "b"], false]"#
    );
    assert_eq!(value(run("stock").await), "false");
    in_stock.store(true, Ordering::SeqCst);
    assert_eq!(value(run("stock").await), "true", "the restock is seen");

    let err = run("missing").await.unwrap_err().message;
    assert!(
        err.contains("text(\".nope\"): nothing in the HTML matches"),
        "{err}"
    );
    let err = run("badopt").await.unwrap_err().message;
    assert!(
        err.contains("unknown option `cookies` (known: headers)"),
        "{err}"
    );
    let err = run("refused").await.unwrap_err().message;
    assert!(
        err.contains(
            "http_get_json(\"http://127.0.0.1:9/x\"): request failed: error sending request"
        ) && !err.contains("<url>")
            && !err.contains("for url"),
        "{err}"
    );

    // Last, as it pauses the test server's host for everything after it.
    // The first 429 is an answer; from then on the host is paused, and a
    // monitor that fetches from it is skipped without a request.
    assert_eq!(value(run("limited").await), "true");
    assert!(
        matches!(run("limited").await, Ok(Ran { end: StepEnd::Paused(why), .. }) if why.contains("asked baton to slow down (HTTP 429 with Retry-After)"))
    );
    // As the scheduler runs it: the target is skipped this cycle, no error.
    let skip = baton::flow::StepRunner::monitor(
        &e.host,
        "limited",
        StepContext::monitor(target(), CancellationToken::new(), Timeouts::default()),
    )
    .await;
    assert_eq!(skip, Ok(false));
    assert_eq!(limited_hits.load(Ordering::SeqCst), 1);
    let slowed = e.host.slowed_hosts();
    assert_eq!(slowed.len(), 1);
    assert_eq!(slowed[0].host, base.trim_start_matches("http://"));

    server.abort();
}
