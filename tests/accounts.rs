//! Accounts end to end in real headless Chromium against the demo shop
//! (issue 13): a login kept across restarts and renewed when the shop
//! expires it, a two-step (TOTP) login, targets on one account taking
//! turns (the shop's per-account overlap counter stays 0), a wrong
//! password, and `storageState` in and out through `baton login`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use baton::app::{App, Options};
use baton::browser::Browser;
use baton::browser::storage::StorageState;
use baton::state::Status;
use common::live::{Project, assert_no_chromium, target};

const FAST_CYCLE: &str =
    "  interval: 1s\n  wait_for_active: 30s\n  run_timeout: 60s\n  step_timeout: 30s";

/// Secrets and accounts, spliced in after the project's own secrets.
pub(crate) fn accounts(ada_password: &str) -> String {
    format!(
        r##"  ada_username: {{ env: BATON_TEST_NO_SUCH_VAR, default: ada }}
  ada_password: {{ env: BATON_TEST_NO_SUCH_VAR, default: {ada_password} }}
  grace_username: {{ env: BATON_TEST_NO_SUCH_VAR, default: grace }}
  grace_password: {{ env: BATON_TEST_NO_SUCH_VAR, default: hopper }}
  grace_totp: {{ env: BATON_TEST_NO_SUCH_VAR, default: "{seed}" }}
accounts:
  ada:
    username: ada_username
    password: ada_password
    check: {{ url: /account, selector: "#account-name", logged_out: "form#login-form" }}
    login: login
  grace:
    username: grace_username
    password: grace_password
    totp: grace_totp
    check: {{ url: /account, selector: "#account-name" }}
    login: login
"##,
        seed = baton::shop::account::GRACE_TOTP_SEED
    )
}

/// A target line on `account`.
pub(crate) fn on(account: &str, id: &str, max_price: f64) -> String {
    format!("  - {{ id: \"{id}\", url: /p/{id}, account: {account}, max_price: {max_price} }}\n")
}

async fn start(p: &Project, cycles: u64) -> App {
    common::init_tracing();
    let mut o = Options::new(p.config());
    o.cycles = Some(cycles);
    App::start(o)
        .await
        .unwrap_or_else(|e| panic!("baton did not start: {e}"))
}

/// Points the project at a shop of the test's own, which outlives the
/// batons the test starts, with the accounts' check pages on it.
async fn own_shop(p: &Project) -> (baton::shop::Running, tokio_util::sync::CancellationToken) {
    let (shop, stop) = p.own_shop().await;
    p.edit("url: /account", &format!("url: {}/account", shop.url()));
    (shop, stop)
}

/// Runs the `baton` binary in the project.
fn baton(p: &Project, args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .current_dir(p.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn logins_in(records: &[baton::state::RunRecord]) -> usize {
    records
        .iter()
        .filter(|r| r.steps.iter().any(|s| s.script == "login"))
        .count()
}

/// The shop outlives three batons on one state directory. The first logs
/// in and buys; the second starts from the saved session and buys without
/// logging in; then the shop expires the login, and the third logs in
/// again once and stays logged in for its second run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_is_kept_across_restarts_and_renewed_when_the_shop_expires_it() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(FAST_CYCLE, &on("ada", "1005", 30.0), &accounts("lovelace"));
    let (shop, stop) = own_shop(&p).await;
    let sh = shop.shop.clone();

    start(&p, 1).await.run().await;
    assert_eq!(sh.account_logins("ada"), 1);
    let saved = p.dir.path().join(".baton/accounts/ada.json");
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let state = StorageState::from_json(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert!(
        state.cookies.iter().any(|c| c.name == "shop_auth"),
        "{state:?}"
    );

    start(&p, 1).await.run().await;
    assert_eq!(sh.account_logins("ada"), 1, "the saved session was used");

    sh.expire_logins("ada");
    let app = start(&p, 2).await;
    let st = app.parts.state.clone();
    app.run().await;
    assert_eq!(sh.account_logins("ada"), 2, "logged in again once");

    let mut h = st.history(usize::MAX).unwrap();
    h.reverse();
    assert_eq!(h.len(), 4, "{h:#?}");
    common::assert_all_completed(&h);
    assert_eq!(logins_in(&h), 2, "runs 1 and 3 logged in: {h:#?}");
    assert_eq!(sh.account_orders("ada"), 4);
    assert_eq!(sh.account_overlaps("ada"), 0, "{:?}", sh.overlap_events());
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// An account with a one-time-code step logs in with `totp(...)` and buys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_login_uses_the_totp_seed() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(
        FAST_CYCLE,
        &on("grace", "1005", 30.0),
        &accounts("lovelace"),
    );
    let app = start(&p, 1).await;
    let sh = app.shop.as_ref().unwrap().shop.clone();
    let st = app.parts.state.clone();
    app.run().await;
    assert_eq!(sh.account_logins("grace"), 1);
    assert_eq!(sh.account_orders("grace"), 1);
    assert_eq!(st.get("1005").status, Status::Completed);
    assert_no_chromium(&p.profile()).await;
}

/// Two targets on `ada` and a guest, two guest sessions, a slow checkout:
/// the guest buys beside the account, the account's runs take turns, and
/// the shop never sees two flows on ada's shared cart. While this baton
/// holds ada, `baton login ada` in another process is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_on_one_account_never_run_at_once() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(
        &format!("{FAST_CYCLE}\n  max_concurrent_runs: 2"),
        &[
            on("ada", "1001", 60.0),
            on("ada", "1005", 30.0),
            target("1002", 30.0),
        ]
        .concat(),
        &accounts("lovelace"),
    );
    let app = start(&p, 2).await;
    let (code, _, err) = baton(&p, &["login", "ada", "--check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("in use by another baton process"), "{err}");

    let sh = app.shop.as_ref().unwrap().shop.clone();
    common::live::ShopApi::new(&app.shop.as_ref().unwrap().url())
        .post("/admin/delay/checkout/800")
        .await;
    let peaks = common::Peaks::watch(app.parts.registry.clone(), |r| r.target.as_str() != "1002");
    let st = app.parts.state.clone();
    app.run().await;
    let (peak_ada, peak_all) = peaks.stop();
    assert_eq!(peak_ada, 1, "two runs on ada at once");
    assert_eq!(peak_all, 2, "the guest ran beside");
    assert_eq!(sh.account_orders("ada"), 4);
    assert_eq!(sh.account_overlaps("ada"), 0, "{:?}", sh.overlap_events());
    assert_eq!(sh.overlaps(), 0, "{:?}", sh.overlap_events());
    assert_eq!(sh.account_logins("ada"), 1);
    for t in ["1001", "1005", "1002"] {
        assert_eq!(st.get(t).status, Status::Completed, "{t}");
    }
    assert_no_chromium(&p.profile()).await;
}

/// Two configurations with state directories of their own, one shop
/// account (the same shop, the same user name, even under another
/// account name): the second baton refuses it and names the first's pid,
/// before it drives anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_state_dirs_on_one_shop_account_are_refused() {
    let one = Project::new(FAST_CYCLE, &on("ada", "1005", 30.0), &accounts("lovelace"));
    let (shop, stop) = own_shop(&one).await;
    let two = Project::new(
        FAST_CYCLE,
        &on("alias", "1001", 60.0),
        &accounts("lovelace").replace("  ada:\n", "  alias:\n"),
    );
    two.edit("demo_shop: { port: 0 }\n", "");
    two.edit("url: /p/", &format!("url: {}/p/", shop.url()));
    two.edit("url: /account", &format!("url: {}/account", shop.url()));

    let app = start(&one, 1).await;
    let (code, _, err) = baton(&two, &["run", "--cycles", "1"]);
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("account `alias`")
            && err.contains(&shop.url())
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        shop.shop.account_logins("ada"),
        0,
        "the second baton drove the account"
    );
    drop(app);
    stop.cancel();
}

/// A wrong password: the login script's error names the shop's refusal,
/// the run ends `logged_out` with the target failed, and nothing reaches
/// the cart or the orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_logged_out_and_buys_nothing() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(FAST_CYCLE, &on("ada", "1005", 30.0), &accounts("babbage"));
    let app = start(&p, 2).await;
    let sh = app.shop.as_ref().unwrap().shop.clone();
    let st = app.parts.state.clone();
    app.run().await;
    let h = st.history(usize::MAX).unwrap();
    assert_eq!(h.len(), 1, "a failed login is not retried: {h:#?}");
    let r = &h[0];
    assert_eq!(
        (r.status, r.outcome.as_deref()),
        (Status::Failed, Some("logged_out"))
    );
    let err = r.error.as_deref().unwrap_or_default();
    assert!(err.contains("Wrong username or password"), "{err}");
    assert!(!err.contains("babbage"), "the password is masked: {err}");
    assert!(
        r.steps
            .iter()
            .any(|s| s.script == "product_page" && s.result == baton::state::StepResult::Skipped),
        "{r:#?}"
    );
    assert_eq!(sh.orders(), 0);
    assert_eq!(sh.cart_lines(), 0);
    assert_eq!(sh.account_logins("ada"), 0);
    assert_no_chromium(&p.profile()).await;
}

/// `storageState` in and out: a session exported after a run's login is
/// a Playwright `storageState` file (mode 0600); without it the account
/// checks logged out; imported back it checks logged in; once the shop
/// expires the login it checks logged out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_state_round_trips_through_baton_login() {
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(FAST_CYCLE, &on("ada", "1005", 30.0), &accounts("lovelace"));
    let (shop, stop) = own_shop(&p).await;
    start(&p, 1).await.run().await;
    assert_eq!(shop.shop.account_logins("ada"), 1);

    let (code, out, err) = baton(&p, &["login", "ada", "--export", "ada-state.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let exported = p.dir.path().join("ada-state.json");
    let mode = std::fs::metadata(&exported).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&exported).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["cookies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "shop_auth")
    );
    assert!(
        !out.contains(v["cookies"][0]["value"].as_str().unwrap()),
        "{out}"
    );

    std::fs::remove_file(p.dir.path().join(".baton/accounts/ada.json")).unwrap();
    let (code, _, err) = baton(&p, &["login", "ada", "--check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("logged_out"), "{err}");

    let (code, out, err) = baton(
        &p,
        &["login", "ada", "--import", "ada-state.json", "--check"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("logged in"), "{out}");

    shop.shop.expire_logins("ada");
    let (code, _, err) = baton(&p, &["login", "ada", "--check"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(shop.shop.account_logins("ada"), 1, "checks never log in");
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// The browser layer's own round trip: cookies and local storage seeded
/// into a session are what its pages see, and what it reads back includes
/// what a page wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_session_has_its_cookies_and_local_storage() {
    let _one = common::live::one_at_a_time().await;
    let stop = tokio_util::sync::CancellationToken::new();
    let shop = baton::shop::start("127.0.0.1:0".parse().unwrap(), stop.clone())
        .await
        .unwrap();
    let origin = shop.url();
    let seed = StorageState::from_json(&format!(
        r#"{{"cookies": [{{"name": "theme", "value": "dark", "domain": "127.0.0.1", "path": "/",
            "expires": -1, "httpOnly": false, "secure": false, "sameSite": "Lax"}}],
           "origins": [{{"origin": "{origin}", "localStorage": [{{"name": "view", "value": "compact"}}]}}]}}"#
    ))
    .unwrap();
    let profile = tempfile::tempdir().unwrap();
    let browser = baton::browser::chrome::ChromeBrowser::new(
        baton::browser::chrome::ChromeConfig::headless(profile.path()),
        None,
    );
    let session = baton::id::SessionId(3);
    browser.seed(session, seed).await.unwrap();
    let page = browser.new_page(session).await.unwrap();
    let t = std::time::Duration::from_secs(10);
    page.navigate(&format!("{origin}/p/1001"), t).await.unwrap();
    let seen = page
        .eval("[document.cookie, localStorage.getItem('view')]", t)
        .await
        .unwrap();
    assert_eq!(seen, serde_json::json!(["theme=dark", "compact"]));
    page.eval("localStorage.setItem('sort', 'price')", t)
        .await
        .unwrap();
    // Another session shares none of it.
    let other = browser.new_page(baton::id::SessionId(4)).await.unwrap();
    other
        .navigate(&format!("{origin}/p/1001"), t)
        .await
        .unwrap();
    assert_eq!(
        other.eval("localStorage.length", t).await.unwrap(),
        serde_json::json!(0)
    );
    other.close().await;
    page.close().await;
    let back = browser
        .storage_state(session, std::slice::from_ref(&origin))
        .await
        .unwrap();
    let names: Vec<&str> = back.cookies.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"theme"), "{back:?}");
    let items: Vec<(&str, &str)> = back.origins[0]
        .local_storage
        .iter()
        .map(|i| (i.name.as_str(), i.value.as_str()))
        .collect();
    assert!(
        items.contains(&("view", "compact")) && items.contains(&("sort", "price")),
        "{items:?}"
    );
    assert_eq!(shop.shop.in_flight(), 0);
    browser.shutdown().await;
    stop.cancel();
    assert_no_chromium(profile.path()).await;
}

/// `baton login ACCOUNT` as a person uses it: a browser window opens on the
/// login page, the person logs in there, presses Enter, and the session is
/// checked and saved. The test plays the person: Chromium runs headless
/// through a `BATON_CHROME` wrapper (no display here), and the test types
/// into the form over DevTools, in the very page baton opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_login_saves_what_a_person_logs_in() {
    use futures::StreamExt;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let _one = common::live::one_at_a_time().await;
    let p = Project::new(FAST_CYCLE, &on("ada", "1005", 30.0), &accounts("lovelace"));
    let (shop, stop) = own_shop(&p).await;
    let chromium = baton::browser::chrome::find_executable(None).unwrap();
    let wrapper = p.dir.path().join("headless-chromium");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {} \"$@\" --headless\n", chromium.display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["login", "ada"])
        .current_dir(p.dir.path())
        .env("BATON_CHROME", &wrapper)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // baton says when the window is ready for the person.
    loop {
        let line = out
            .next_line()
            .await
            .unwrap()
            .expect("baton login said nothing");
        if line.starts_with("Log in to account `ada`") {
            break;
        }
    }
    // The browser baton launched (its child): its profile holds the
    // DevTools port.
    let pid = child.id().unwrap();
    let profile = common::live::processes_mentioning(std::path::Path::new("baton-login-"))
        .into_iter()
        .filter(|p| parent_of(*p) == Some(pid))
        .find_map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            cmd.split('\0')
                .find_map(|a| a.strip_prefix("--user-data-dir="))
                .map(std::path::PathBuf::from)
        })
        .expect("the login browser is running");
    // Should the test fail half-way, its Chromium goes with it.
    let _reaper = Reaper(profile.clone());
    let port = std::fs::read_to_string(profile.join("DevToolsActivePort")).unwrap();
    let port = port.lines().next().unwrap().to_owned();
    // The page baton opened, over its own DevTools socket.
    let list: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ws = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page" && t["url"].as_str().unwrap_or("").contains("/account/login"))
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("baton opened the login page")
        .to_owned();
    let (person, mut handler) = chromiumoxide::Browser::connect(ws).await.unwrap();
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    // The person fills the form and signs in; the account page loading is
    // the sign that the shop answered and the cookie is stored.
    use chromiumoxide::cdp::browser_protocol::page::{EnableParams, EventLoadEventFired};
    use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
    let mut loaded = person
        .event_listener::<EventLoadEventFired>()
        .await
        .unwrap();
    person.execute(EnableParams::default()).await.unwrap();
    let typed = person
        .execute(EvaluateParams::new(
            "document.querySelector('#username').value = 'ada';
             document.querySelector('#password').value = 'lovelace';
             document.querySelector('#sign-in').click(); true",
        ))
        .await;
    assert!(typed.is_ok(), "the form was not filled");
    tokio::time::timeout(std::time::Duration::from_secs(10), loaded.next())
        .await
        .expect("the account page never loaded");
    let at = person
        .execute(EvaluateParams::new("location.pathname"))
        .await
        .map(|r| r.result.result.value);
    assert!(
        matches!(&at, Ok(Some(v)) if v == "/account"),
        "the person is logged in: {at:?}"
    );
    drop(person);
    events.abort();
    assert_eq!(shop.shop.account_logins("ada"), 1);

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").await.unwrap();
    drop(stdin);
    let mut rest = String::new();
    while let Some(line) = out.next_line().await.unwrap() {
        rest.push_str(&line);
        rest.push('\n');
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "baton login (pid {pid}) failed: {rest}");
    assert!(rest.contains("logged in; session saved"), "{rest}");
    assert_eq!(shop.shop.account_logins("ada"), 1);
    // The saved session is good for a run: it buys without logging in.
    start(&p, 1).await.run().await;
    assert_eq!(
        shop.shop.account_logins("ada"),
        1,
        "the run used the saved login"
    );
    assert_eq!(shop.shop.account_orders("ada"), 1);
    stop.cancel();
    assert_no_chromium(&profile).await;
    assert_no_chromium(&p.profile()).await;
}

/// The parent of process `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Kills every process using a profile when dropped.
struct Reaper(std::path::PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for p in common::live::processes_mentioning(&self.0) {
            common::live::signal(p, rustix::process::Signal::KILL);
        }
    }
}

/// `baton login grace --remote` (issue 28): the account's session runs
/// headless and is streamed to a page; the test drives that page the way a
/// person would (typing into what it sees, reading the address above the
/// picture to know where it is, its own authenticator for the two-step
/// code), presses Done, and the next run buys on the saved session with no
/// login script at all. Without the dashboard token the stream and the
/// input are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_login_with_a_two_step_code_is_saved_and_the_next_run_buys_on_it() {
    let _one = common::live::one_at_a_time().await;
    const TOKEN: &str = "tok-remote-7f3a";
    let p = grace_by_hand(TOKEN);
    let (srv, stop) = own_shop(&p).await;
    let (mut login, mut out, base) = remote_login(&p).await;

    let client = reqwest::Client::new();
    // Without the token: nothing to see, nothing to press.
    let r = client.get(format!("{base}/frames")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(format!("{base}/input"))
        .header("x-baton-action", "1")
        .json(&serde_json::json!({"kind": "text", "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The page itself is an empty shell that asks for the token.
    let shell = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(shell.status(), 200);

    let remote = RemotePage::new(&base, TOKEN);
    let mut frames = remote.frames().await;
    let mut buf = String::new();
    let input = |body| remote.input(body);

    let code = log_grace_in(&mut frames, &mut buf, &input, &PLAIN).await;
    drop(frames);
    let (status, rest) = press_done(&base, TOKEN, &mut login, &mut out).await;
    assert!(status.success(), "{rest}");
    assert!(rest.contains("logged in; session saved"), "{rest}");
    assert!(
        !rest.contains("hopper") && !rest.contains(&code),
        "typed text never printed"
    );

    // The next run buys on the saved session.
    let app = start(&p, 1).await;
    let st = app.parts.state.clone();
    app.run().await;
    let sh = srv.shop.clone();
    assert_eq!(st.get("1005").status, Status::Completed);
    assert_eq!(sh.account_logins("grace"), 1, "only the remote login");
    assert_eq!(sh.account_orders("grace"), 1);
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// A shop whose sign-in form is a provider's, in a cross-origin frame (as
/// embedded sign-in providers serve it): the remote page's focus readout
/// follows Tab into the frame, what the person types lands in the
/// provider's fields, Enter there signs in at the top level, and the
/// two-step page and Done work as on a plain form. The session is saved
/// and the next run buys on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_login_through_a_sign_in_form_in_a_cross_origin_frame_is_saved() {
    let _one = common::live::one_at_a_time().await;
    const TOKEN: &str = "tok-hosted-41c9";
    let p = grace_by_hand(TOKEN);
    p.edit(
        "    totp: grace_totp\n",
        "    totp: grace_totp\n    login_url: /account/login-hosted\n",
    );
    let (srv, stop) = own_shop(&p).await;
    let (mut login, mut out, base) = remote_login(&p).await;
    let remote = RemotePage::new(&base, TOKEN);
    let mut frames = remote.frames().await;
    let mut buf = String::new();
    let input = |body| remote.input(body);
    log_grace_in(&mut frames, &mut buf, &input, &HOSTED).await;
    drop(frames);
    let (status, rest) = press_done(&base, TOKEN, &mut login, &mut out).await;
    assert!(status.success(), "{rest}");
    assert!(rest.contains("logged in; session saved"), "{rest}");

    let app = start(&p, 1).await;
    let st = app.parts.state.clone();
    app.run().await;
    assert_eq!(st.get("1005").status, Status::Completed);
    assert_eq!(srv.shop.account_logins("grace"), 1, "only the framed login");
    assert_eq!(srv.shop.account_orders("grace"), 1);
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// The dashboard's Log in, on a running baton (issue 28): grace's target
/// runs, finds the account logged out (no login script) and waits. A
/// person presses Log in: the account is held (its target is skipped with
/// the reason, no run starts under the person), they log in on the
/// streamed page with the two-step code and press Done; the session is
/// saved, the hold lifted, and the next cycle buys on it. A second login
/// left open does not keep a stopping baton alive, and leaves no Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_from_the_dashboard_of_a_running_baton_is_saved_and_its_target_buys() {
    let _one = common::live::one_at_a_time().await;
    const TOKEN: &str = "tok-dash-login-19c2";
    let p = grace_by_hand(TOKEN);
    let (srv, stop) = own_shop(&p).await;
    common::init_tracing();
    let app = App::start(Options::new(p.config())).await.unwrap();
    let dash = format!("http://{}", app.dashboard.as_ref().unwrap().addr);
    let mut finished = app.parts.finished.subscribe();
    let registry = app.parts.registry.clone();
    let mut cycles = app.status.clone();
    let shutdown = app.shutdown.clone();
    let task = tokio::spawn(app.run());
    let client = reqwest::Client::new();
    let post = |path: &str| {
        client
            .post(format!("{dash}{path}"))
            .bearer_auth(TOKEN)
            .header("x-baton-action", "1")
    };
    let status = || async {
        client
            .get(format!("{dash}/api/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    // The first run finds grace logged out, with nobody to log in.
    let first = tokio::time::timeout(Duration::from_secs(120), finished.recv())
        .await
        .expect("no run finished")
        .unwrap();
    assert_eq!(first.outcome.as_deref(), Some("logged_out"), "{first:?}");
    let grace = |st: serde_json::Value| {
        st["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "grace")
            .cloned()
            .unwrap()
    };
    let g = grace(status().await);
    assert!(g["logged_out"].is_string(), "{g}");

    let saved = || std::fs::read(p.dir.path().join(".baton/accounts/grace.json")).ok();
    let before = saved();
    // Log in, without the token: refused. With it: held, and a page.
    let r = client
        .post(format!("{dash}/api/accounts/grace/login"))
        .header("x-baton-action", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = post("/api/accounts/nobody/login").send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = post("/api/accounts/grace/login").send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["page"], "/login/grace/");
    let base = format!("{dash}/login/grace");
    assert_eq!(registry.logins().len(), 1);
    // Pressed twice: the same login.
    let r = post("/api/accounts/grace/login").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(registry.logins().len(), 1);
    let r = client.get(format!("{base}/frames")).send().await.unwrap();
    assert_eq!(r.status(), 401, "the stream needs the token");
    let shell = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(shell.status(), 200);
    assert!(
        shell
            .text()
            .await
            .unwrap()
            .contains("EventSource(\"frames\")")
    );

    let remote = RemotePage::new(&base, TOKEN);
    let mut frames = remote.frames().await;
    let mut buf = String::new();
    let input = |body| remote.input(body);
    tab_to(
        &mut frames,
        &mut buf,
        &input,
        "/account/login",
        "input#username",
    )
    .await;
    input(serde_json::json!({"kind": "text", "text": "grace"})).await;
    // Done too early: still logged out, and the login stays open, with
    // the person's page as they left it (the check runs beside it).
    let r = post("/login/grace/done").send().await.unwrap();
    let said: serde_json::Value = r.json().await.unwrap();
    assert_eq!(said["ended"], false, "{said}");
    assert!(
        said["message"]
            .as_str()
            .unwrap()
            .contains("still logged out")
    );
    assert_eq!(registry.logins().len(), 1);
    input(serde_json::json!({"kind": "key", "key": "Tab"})).await;
    seen(&mut frames, &mut buf, "/account/login", "input#password").await;
    // Cancel: nothing saved, the account and its session are free.
    let r = post("/login/grace/cancel").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(registry.logins().is_empty());
    assert!(
        registry.is_idle(),
        "cancel released the account and its session"
    );
    assert_eq!(saved(), before, "nothing saved");
    drop(frames);

    // Again, to the end this time.
    let r = post("/api/accounts/grace/login").send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let mut frames = remote.frames().await;
    let mut buf = String::new();
    log_grace_in(&mut frames, &mut buf, &input, &PLAIN).await;
    let r = post("/login/grace/done").send().await.unwrap();
    let said: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (&said["ended"], &said["logged_in"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{said}"
    );
    assert!(registry.logins().is_empty());
    // The stream ended with the login.
    tokio::time::timeout(Duration::from_secs(10), async {
        while frames.chunk().await.ok().flatten().is_some() {}
    })
    .await
    .expect("the stream outlived its login");
    assert!(grace(status().await)["logged_out"].is_null());
    assert_ne!(saved(), before, "the session was saved");

    // The next cycle buys on the saved session.
    let bought = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            let rec = finished.recv().await.unwrap();
            if rec.status == Status::Completed {
                return rec;
            }
        }
    })
    .await
    .expect("grace's target was never bought");
    assert!(bought.order.is_some(), "{bought:?}");
    let sh = srv.shop.clone();
    assert_eq!(sh.account_logins("grace"), 1, "only the person's login");
    assert_eq!(sh.account_orders("grace"), 1);

    // While a person logs the account in, its target waits: put back to
    // `ready` (and the account not held for a failed login), it still
    // does not run for two whole cycles, and the dashboard says why.
    let r = post("/api/accounts/grace/login").send().await.unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Runs that ended before the hold are not this part's business.
    while finished.try_recv().is_ok() {}
    let r = post("/api/targets/1005/reset").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let now = cycles.borrow().cycle;
    tokio::time::timeout(
        Duration::from_secs(60),
        cycles.wait_for(|s| s.cycle >= now + 2 && s.phase == baton::scheduler::Phase::Sleeping),
    )
    .await
    .expect("the cycles stopped")
    .unwrap();
    assert!(
        finished.try_recv().is_err(),
        "a run started on the account while it was being logged in"
    );
    let st = status().await;
    assert_eq!(st["active"], serde_json::json!([]));
    assert_eq!(grace(st.clone())["logging_in"], true);
    let row = st["targets"].as_array().unwrap()[0].clone();
    assert_eq!(row["status"], "ready", "{row}");

    // A login left open when baton stops: it ends with baton, promptly.
    let mut frames = remote.frames().await;
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("an open login kept baton from stopping")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while frames.chunk().await.ok().flatten().is_some() {}
    })
    .await
    .expect("the login's stream kept going after baton stopped");
    assert!(registry.is_idle());
    stop.cancel();
    assert_no_chromium(&p.profile()).await;
}

/// `baton login grace --remote` in `p`, started: the process, its output
/// lines, and the base address of the page it serves.
async fn remote_login(
    p: &Project,
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    String,
) {
    use tokio::io::AsyncBufReadExt as _;
    let mut login = tokio::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["login", "grace", "--remote", "--listen", "127.0.0.1:0"])
        .current_dir(p.dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(login.stdout.take().unwrap()).lines();
    let base = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            let line = out
                .next_line()
                .await
                .unwrap()
                .expect("baton login ended early");
            if let Some(rest) = line.strip_prefix("Open ") {
                return rest.split('/').take(3).collect::<Vec<_>>().join("/");
            }
        }
    })
    .await
    .expect("baton login never served its page");
    (login, out, base)
}

/// Presses Done on `baton login --remote`'s page and waits for the
/// process to end: its exit status and the rest of its output.
async fn press_done(
    base: &str,
    token: &str,
    login: &mut tokio::process::Child,
    out: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> (std::process::ExitStatus, String) {
    let r = reqwest::Client::new()
        .post(format!("{base}/done"))
        .bearer_auth(token)
        .header("x-baton-action", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), login.wait())
        .await
        .expect("baton login did not end after Done")
        .unwrap();
    let mut rest = String::new();
    while let Ok(Some(l)) = out.next_line().await {
        rest.push_str(&l);
        rest.push('\n');
    }
    (status, rest)
}

/// A project with target 1005 on grace, who has no login script: only a
/// session a person logged in can buy. Its dashboard needs `token`.
fn grace_by_hand(token: &str) -> Project {
    let p = Project::new(
        FAST_CYCLE,
        &on("grace", "1005", 30.0),
        &accounts("lovelace").replace(
            "    check: { url: /account, selector: \"#account-name\" }\n    login: login\n",
            "    check: { url: /account, selector: \"#account-name\" }\n",
        ),
    );
    p.edit(
        "dashboard: off\n",
        &format!("dashboard: {{ addr: \"127.0.0.1:0\", token: {token} }}\n"),
    );
    p
}

/// A remote login page at `base` (`baton login --remote`'s own address,
/// or the dashboard's `/login/ACCOUNT`), driven with the dashboard token
/// as the page's script drives it.
struct RemotePage {
    client: reqwest::Client,
    base: String,
    token: &'static str,
}

impl RemotePage {
    fn new(base: &str, token: &'static str) -> RemotePage {
        RemotePage {
            client: reqwest::Client::new(),
            base: base.to_owned(),
            token,
        }
    }

    /// Its stream of frames.
    async fn frames(&self) -> reqwest::Response {
        let r = self
            .client
            .get(format!("{}/frames", self.base))
            .bearer_auth(self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r
    }

    /// One click, text or key, sent as the page sends it (204).
    async fn input(&self, body: serde_json::Value) {
        let r = self
            .client
            .post(format!("{}/input", self.base))
            .bearer_auth(self.token)
            .header("x-baton-action", "1")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
}

/// Where a sign-in form is: its page, and its username field as the
/// remote page's focus readout names it.
struct SignInForm {
    page: &'static str,
    username: &'static str,
}

/// The shop's own form.
const PLAIN: SignInForm = SignInForm {
    page: "/account/login",
    username: "input#username",
};

/// The provider's form, in a cross-origin frame.
const HOSTED: SignInForm = SignInForm {
    page: "/account/login-hosted",
    username: "iframe#signin-frame > input#username",
};

/// Logs grace in on a remote login page the way a person does, watching
/// its stream: on the sign-in page nothing has the focus (the shop sets
/// none), so Tab until the username field of `form` has it, type it, Tab,
/// the password, Enter; on the two-step page the code from the person's
/// own authenticator. Returns when the account page has loaded, with the
/// code typed (for checking that it was never printed).
async fn log_grace_in<F, Fut>(
    frames: &mut reqwest::Response,
    buf: &mut String,
    input: &F,
    form: &SignInForm,
) -> String
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tab_to(frames, buf, input, form.page, form.username).await;
    input(serde_json::json!({"kind": "text", "text": "grace"})).await;
    input(serde_json::json!({"kind": "key", "key": "Tab"})).await;
    input(serde_json::json!({"kind": "text", "text": "hopper"})).await;
    input(serde_json::json!({"kind": "key", "key": "Enter"})).await;
    tab_to(frames, buf, input, "/account/totp", "input#code").await;
    let secret = totp_rs::Secret::try_from_base32(baton::shop::account::GRACE_TOTP_SEED).unwrap();
    let code = totp_rs::Builder::new()
        .with_secret(secret)
        .build_noncompliant()
        .generate(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .to_string();
    input(serde_json::json!({"kind": "text", "text": code})).await;
    input(serde_json::json!({"kind": "key", "key": "Enter"})).await;
    seen(frames, buf, "/account\"", "").await;
    code
}

/// Reads the remote page's frame stream until a frame shows a loaded page
/// whose address contains `want` and whose focus is `focus` (each frame's
/// picture checked to be a JPEG); returns that address. The stream is the
/// test's only sight of the page, as the window is a person's: typing
/// before the field has the caret would go nowhere.
async fn seen(frames: &mut reqwest::Response, buf: &mut String, want: &str, focus: &str) -> String {
    use base64::Engine as _;
    let found = frame_where(frames, buf, |f| {
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(f["jpeg"].as_str().unwrap())
            .unwrap();
        assert_eq!(jpeg[..2], [0xff, 0xd8], "a JPEG");
        let url = format!("{}\"", f["url"].as_str().unwrap());
        url.contains(want) && f["ready"] == true && f["focus"] == focus
    })
    .await
    .unwrap_or_else(|| panic!("the page never showed `{want}` loaded with `{focus}` focused"));
    format!("{}\"", found["url"].as_str().unwrap())
}

/// Presses Tab on the remote page until a loaded page at `want` shows
/// `field` focused (at most 20 presses: the field is among a page's first
/// few focusable elements).
async fn tab_to<F, Fut>(
    frames: &mut reqwest::Response,
    buf: &mut String,
    input: &F,
    want: &str,
    field: &str,
) where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // The page loaded, with whatever focus it gives.
    let mut focus = seen_any(frames, buf, want).await;
    for _ in 0..20 {
        if focus == field {
            return;
        }
        input(serde_json::json!({"kind": "key", "key": "Tab"})).await;
        // The focus moved: a new frame (the focus ring) says where to.
        focus = next_focus(frames, buf, &focus).await;
    }
    panic!("Tab never reached `{field}` on `{want}` (last: `{focus}`)");
}

/// The focus of the first frame of a loaded page at `want`.
async fn seen_any(frames: &mut reqwest::Response, buf: &mut String, want: &str) -> String {
    focus_of(
        frame_where(frames, buf, |f| {
            f["ready"] == true && f["url"].as_str().is_some_and(|u| u.contains(want))
        })
        .await,
    )
}

/// The focus of the next frame whose focus is not `was`.
async fn next_focus(frames: &mut reqwest::Response, buf: &mut String, was: &str) -> String {
    focus_of(frame_where(frames, buf, |f| f["focus"].as_str() != Some(was)).await)
}

fn focus_of(frame: Option<serde_json::Value>) -> String {
    let f = frame.expect("no frame showed what the test waited for");
    f["focus"].as_str().unwrap_or_default().to_owned()
}

/// The first streamed frame `ok` accepts, within 30 s.
async fn frame_where(
    frames: &mut reqwest::Response,
    buf: &mut String,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Option<serde_json::Value> {
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue;
                };
                let f: serde_json::Value = serde_json::from_str(data).unwrap();
                if ok(&f) {
                    return f;
                }
            }
            let chunk = frames.chunk().await.unwrap().expect("the stream ended");
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    found.ok()
}
