//! Helpers for tests in real headless Chromium against the demo shop: a
//! temporary project (the shipped scripts, a flows.yaml written by the test,
//! its own state directory and browser profile), the shop's control API,
//! and a check that no Chromium outlives the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Live tests take a turn for their whole length, so that one Chromium
/// runs at a time: ten at once on a two-core machine make every timing in
/// them (cycle bounds, waits) a test of the machine instead of baton. The
/// tests that keep a core busy for long (the soak, the `kill -9` loops)
/// take one too, now that every test shares one binary and runs beside
/// the others.
///
/// A test that spends its time waiting on the shop (a place-order answer
/// delayed 40 s) asks with [`beside_one`] instead: two such tests may run
/// at once, never beside an [`one_at_a_time`] one. libtest starts tests in
/// name order, so the waiting tests are named to sort next to each other.
static TURNS: std::sync::Mutex<Turns> = std::sync::Mutex::new(Turns {
    alone: false,
    beside: 0,
});
static TURN_ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

struct Turns {
    alone: bool,
    beside: u8,
}

#[derive(Clone, Copy)]
enum Kind {
    Alone,
    Beside,
}

/// Held for a live test's whole length; with `BATON_TEST_TIMES=1` it
/// prints how long the test waited for its turn and how long it held it
/// (how the CI time in docs/benchmarks.md is measured).
pub(crate) struct Turn {
    kind: Kind,
    since: std::time::Instant,
    waited: Duration,
}

impl Drop for Turn {
    fn drop(&mut self) {
        {
            let mut t = TURNS
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match self.kind {
                Kind::Alone => t.alone = false,
                Kind::Beside => t.beside -= 1,
            }
        }
        TURN_ENDED.notify_waiters();
        if std::env::var_os("BATON_TEST_TIMES").is_some() {
            let name = std::thread::current().name().unwrap_or("?").to_owned();
            eprintln!(
                "live-turn {name} waited {:.1}s held {:.1}s",
                self.waited.as_secs_f64(),
                self.since.elapsed().as_secs_f64()
            );
        }
    }
}

fn try_take(kind: Kind) -> bool {
    let mut t = TURNS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match kind {
        Kind::Alone if !t.alone && t.beside == 0 => t.alone = true,
        Kind::Beside if !t.alone && t.beside < 2 => t.beside += 1,
        _ => return false,
    }
    true
}

async fn take(kind: Kind) -> Turn {
    let asked = std::time::Instant::now();
    loop {
        // Registered before the check, so an end between the two is seen.
        let ended = TURN_ENDED.notified();
        if try_take(kind) {
            break;
        }
        ended.await;
    }
    Turn {
        kind,
        since: std::time::Instant::now(),
        waited: asked.elapsed(),
    }
}

/// Waits until no other live test runs, and keeps them out.
pub(crate) async fn one_at_a_time() -> Turn {
    take(Kind::Alone).await
}

/// `one_at_a_time` for tests that are not async.
pub(crate) fn one_at_a_time_blocking() -> Turn {
    // Its own little runtime: the caller has none.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(take(Kind::Alone))
}

/// For a test that mostly waits on the shop: runs beside at most one other
/// such test.
pub(crate) async fn beside_one() -> Turn {
    take(Kind::Beside).await
}

/// The repository root (where the shipped scripts live).
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temporary copy of the shipped scripts with a flows.yaml.
pub(crate) struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    /// `targets_and_more` is appended after the common settings: targets,
    /// and any overrides of `cycle:` keys given in `cycle`.
    pub(crate) fn new(cycle: &str, targets: &str, extra: &str) -> Project {
        let dir = tempfile::Builder::new()
            .prefix("baton-e2e-")
            .tempdir()
            .unwrap();
        copy_dir(&repo().join("scripts"), &dir.path().join("scripts"));
        let yaml = format!(
            r#"browser:
  headless: true
  profile_dir: .baton/profile
  timeout: 5s
cycle:
{cycle}
test_mode: true
state_dir: .baton
dashboard: off
demo_shop: {{ port: 0 }}
secrets:
  card_number: {{ env: BATON_TEST_NO_SUCH_VAR, default: "4242424242424242" }}
  card_cvv: {{ env: BATON_TEST_NO_SUCH_VAR, default: "123" }}
{extra}
targets:
{targets}
flows:
  purchase:
    monitor: stock_check
    steps:
      - product_page
      - checkout
      - {{ script: clear_cart, always: true }}
    outcomes:
      out_of_stock: retry
      price_too_high: retry
"#
        );
        std::fs::write(dir.path().join("flows.yaml"), yaml).unwrap();
        Project { dir }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("flows.yaml")
    }

    /// Replaces `from` with `to` in flows.yaml.
    pub(crate) fn edit(&self, from: &str, to: &str) {
        let yaml = std::fs::read_to_string(self.config()).unwrap();
        assert!(yaml.contains(from), "`{from}` is not in flows.yaml");
        std::fs::write(self.config(), yaml.replace(from, to)).unwrap();
    }

    /// A demo shop of the test's own, started before baton (so delays can
    /// be set first and it outlives baton), with every target pointed at
    /// it. Cancel the token to stop it.
    pub(crate) async fn own_shop(
        &self,
    ) -> (baton::shop::Running, tokio_util::sync::CancellationToken) {
        let stop = tokio_util::sync::CancellationToken::new();
        let shop = baton::shop::start("127.0.0.1:0".parse().unwrap(), stop.clone())
            .await
            .unwrap();
        self.edit("demo_shop: { port: 0 }\n", "");
        self.edit("url: /p/", &format!("url: {}/p/", shop.url()));
        (shop, stop)
    }

    pub(crate) fn profile(&self) -> PathBuf {
        self.dir.path().join(".baton/profile")
    }
}

/// A target line for `Project::new`.
pub(crate) fn target(id: &str, max_price: f64) -> String {
    format!(
        "  - {{ id: \"{id}\", url: /p/{id}, max_price: {max_price}, params: {{ customer: {{ name: Ada, email: ada@example.com, address: 1 Main St }} }} }}\n"
    )
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The demo shop's control API.
pub(crate) struct ShopApi {
    pub base: String,
    client: reqwest::Client,
}

impl ShopApi {
    pub(crate) fn new(base: &str) -> ShopApi {
        ShopApi {
            base: base.to_owned(),
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> serde_json::Value {
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(crate) async fn post(&self, path: &str) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
    }

    pub(crate) async fn overlaps(&self) -> u64 {
        self.get("/admin/overlaps").await["overlaps"]
            .as_u64()
            .unwrap()
    }

    pub(crate) async fn orders_of(&self, product: &str) -> u64 {
        self.get("/admin/orders").await["per_product"][product]
            .as_u64()
            .unwrap_or(0)
    }
}

/// Sends `signal` to `pid` (no `kill` binary needed on the machine).
pub(crate) fn signal(pid: u32, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("a pid");
    rustix::process::kill_process(pid, signal).expect("the signal was sent");
}

/// Pids of processes whose command line mentions `needle` (a profile dir).
pub(crate) fn processes_mentioning(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy().into_owned();
    let mut out = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        // Zombies have an empty command line and are reaped by their parent.
        if cmd.contains(&needle) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'));
            if !zombie {
                out.push(pid);
            }
        }
    }
    out
}

/// Asserts that no process uses `profile` any more. Chromium's helper
/// processes exit shortly after the browser process; there is no event to
/// wait on for processes that are not ours, so this looks a few times over
/// up to ten seconds.
pub(crate) async fn assert_no_chromium(profile: &Path) {
    for _ in 0..100 {
        if processes_mentioning(profile).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "Chromium processes left behind for {}: {:?}",
        profile.display(),
        processes_mentioning(profile)
    );
}

/// A headless Chromium of the test's own, on a fresh profile, with one
/// page in session 0: for tests of the browser layer itself.
pub(crate) struct Chrome {
    pub profile: tempfile::TempDir,
    pub browser: baton::browser::chrome::ChromeBrowser,
    pub page: std::sync::Arc<dyn baton::browser::Page>,
}

impl Chrome {
    pub(crate) async fn start() -> Chrome {
        use baton::browser::Browser;
        let profile = tempfile::tempdir().unwrap();
        let browser = baton::browser::chrome::ChromeBrowser::new(
            baton::browser::chrome::ChromeConfig::headless(profile.path()),
            None,
        );
        let page = browser.new_page(baton::id::SessionId(0)).await.unwrap();
        Chrome {
            profile,
            browser,
            page,
        }
    }

    /// Closes the page and the browser, and checks no Chromium is left.
    pub(crate) async fn stop(self) {
        use baton::browser::Browser;
        self.page.close().await;
        self.browser.shutdown().await;
        assert_no_chromium(self.profile.path()).await;
    }
}

/// A headless Chromium started by the test with a remote-debugging port
/// on 127.0.0.1 (as a browser pool or a browserless host runs them), for
/// baton to attach to. Killed when dropped.
pub(crate) struct RemoteChrome {
    pub profile: tempfile::TempDir,
    /// Its DevTools address, `ws://127.0.0.1:PORT/devtools/browser/...`.
    pub ws: String,
    pub child: tokio::process::Child,
}

impl RemoteChrome {
    pub(crate) async fn start() -> RemoteChrome {
        use tokio::io::AsyncBufReadExt;
        let profile = tempfile::tempdir().unwrap();
        let exe = baton::browser::chrome::find_executable(None).unwrap();
        let mut child = tokio::process::Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                // As docs/scripting.md asks of a browser baton attaches to:
                // the shipped checkout types into the card provider's frame.
                "--disable-site-isolation-trials",
                "--disable-features=IsolateOrigins,site-per-process",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(url) = l.strip_prefix("DevTools listening on ") {
                    return url.trim().to_owned();
                }
            }
            panic!("Chromium printed no DevTools address");
        })
        .await
        .unwrap();
        // Keep draining its stderr so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        RemoteChrome { profile, ws, child }
    }

    /// `kill -9`, and waits for it; then checks none of its processes is
    /// left.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        assert_no_chromium(self.profile.path()).await;
    }
}
