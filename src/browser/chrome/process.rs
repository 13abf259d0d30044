//! The Chromium process: launching it in a process group of its own,
//! finding its DevTools address, and stopping one that an earlier baton
//! left behind.
//!
//! chromiumoxide can launch Chromium itself, but then Chromium shares
//! baton's process group: Ctrl-C in a terminal (or `systemctl stop`, which
//! signals the whole control group's processes one by one, or any signal to
//! the foreground group) reached Chromium at the same instant as baton and
//! killed the page under a run that was placing an order. So baton starts
//! Chromium here with `process_group(0)` and attaches to it over its
//! DevTools websocket, the same way `browser.connect` attaches to a browser
//! it did not start. The signal then reaches only baton, which lets the
//! active run finish and closes Chromium itself.
//!
//! Chromium must still never outlive baton for long:
//!
//! - baton's own stop (Ctrl-C, SIGTERM, SIGHUP, `--cycles`) closes it, and
//!   the child handle kills it if baton drops it on any other path;
//! - after a `kill -9` of baton (nothing runs then), the next start finds
//!   it through the profile's `SingletonLock` and stops it
//!   ([`stop_stale`]) before launching;
//! - a parent-death signal would need `unsafe` (`pre_exec`), which the
//!   crate forbids, so there is none.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::BrowserError;

/// The switches Puppeteer and chromiumoxide pass to an automated Chromium
/// (kept equal to chromiumoxide 0.9's `DEFAULT_ARGS`), then baton's own.
const DEFAULT_ARGS: &[&str] = &[
    "--disable-background-networking",
    "--enable-features=NetworkService,NetworkServiceInProcess",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-breakpad",
    "--disable-client-side-phishing-detection",
    "--disable-component-extensions-with-background-pages",
    "--disable-default-apps",
    "--disable-dev-shm-usage",
    // Site isolation off as well: cross-origin frames (hosted card fields)
    // then live in the page's own renderer, where baton can run its helper
    // in them and send them trusted input (docs/scripting.md, Frames).
    "--disable-features=TranslateUI,IsolateOrigins,site-per-process",
    "--disable-site-isolation-trials",
    "--disable-hang-monitor",
    "--disable-ipc-flooding-protection",
    "--disable-popup-blocking",
    "--disable-prompt-on-repost",
    "--disable-renderer-backgrounding",
    "--disable-sync",
    "--force-color-profile=srgb",
    "--metrics-recording-only",
    "--no-first-run",
    "--enable-automation",
    "--password-store=basic",
    "--use-mock-keychain",
    "--enable-blink-features=IdleDetection",
    "--lang=en_US",
    "--disable-extensions",
    "--remote-debugging-port=0",
    // baton's: no GPU on servers, no updates or telemetry reaching out.
    "--disable-gpu",
    "--disable-component-update",
    "--disable-quic",
    "--disable-domain-reliability",
    "--no-default-browser-check",
];

/// The lock file inside a profile directory.
pub(super) const PROFILE_LOCK: &str = "baton.lock";

/// Claims `profile` for this baton: an advisory lock on
/// `PROFILE/baton.lock`, released by the OS when the process dies. While a
/// live baton holds it, another refuses to start on the profile (two
/// batons used to kill each other's Chromium mid-commit); and a Chromium
/// found on a profile whose lock was free belongs to a dead baton, so
/// [`stop_stale`] may stop it.
pub(super) fn lock_profile(profile: &Path) -> Result<std::fs::File, BrowserError> {
    use std::io::{Read, Seek, Write};
    let fail = |reason: String| BrowserError::ProfileLock {
        profile: profile.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(profile).map_err(|e| fail(e.to_string()))?;
    let path = profile.join(PROFILE_LOCK);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| fail(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "its pid is not recorded".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(BrowserError::ProfileInUse {
                profile: profile.display().to_string(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail(e.to_string())),
    }
    // Who holds it, for the message another baton prints.
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(file)
}

/// What to launch.
pub(super) struct Launch<'a> {
    pub exe: &'a Path,
    pub profile: &'a Path,
    pub headless: bool,
    /// Extra switches, bare keys (`lang=en`).
    pub args: &'a [String],
    pub timeout: Duration,
}

/// The command line for `l`, without the executable.
pub(super) fn command_line(l: &Launch<'_>) -> Vec<String> {
    let mut args: Vec<String> = DEFAULT_ARGS.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", l.profile.display()));
    if !l.args.iter().any(|a| a.starts_with("window-size")) {
        args.push("--window-size=1280,900".into());
    }
    if is_root() {
        args.push("--no-sandbox".into());
        args.push("--disable-setuid-sandbox".into());
    }
    if l.headless {
        args.extend(["--headless", "--hide-scrollbars", "--mute-audio"].map(String::from));
    }
    args.extend(
        l.args
            .iter()
            .map(|a| format!("--{}", a.trim_start_matches('-'))),
    );
    args
}

/// Starts Chromium in a process group of its own and returns it with its
/// DevTools websocket address.
pub(super) async fn launch(l: &Launch<'_>) -> Result<(Child, String), BrowserError> {
    let fail = |reason: String| BrowserError::Launch {
        path: l.exe.display().to_string(),
        reason,
    };
    let mut child = Command::new(l.exe)
        .args(command_line(l))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own group: a signal to baton's group (Ctrl-C) does not reach
        // it, so a run in progress keeps its page.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let found = tokio::time::timeout(l.timeout, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some((_, ws)) = line.rsplit_once("listening on ")
                && ws.starts_with("ws")
                && ws.contains("devtools/browser")
            {
                return Some(ws.trim().to_owned());
            }
            if seen.len() < 20 {
                seen.push(line);
            }
        }
        None
    })
    .await;
    let ws = match found {
        Ok(Some(ws)) => ws,
        Ok(None) => {
            let _ = child.kill().await;
            return Err(fail(format!(
                "Chromium exited before it was ready: {}",
                seen.join(" / ")
            )));
        }
        Err(_) => {
            let _ = child.kill().await;
            return Err(fail(format!(
                "Chromium did not print its DevTools address within {}",
                crate::time::short(l.timeout)
            )));
        }
    };
    // Keep reading what it prints, or a full pipe would block it.
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::trace!(target: "baton::chromium", "{line}");
        }
    });
    Ok((child, ws))
}

/// Stops a Chromium that an earlier baton left running on `profile`.
///
/// Chromium started with a DevTools port does not exit when its parent is
/// killed (`kill -9` of baton leaves it running). A new Chromium on the same
/// profile would then hand its work to the old one and exit at once, so the
/// old one is found through the profile's `SingletonLock` (`HOST-PID`) and
/// killed, after checking that the process really is a Chromium on this
/// profile and on this host.
pub(super) async fn stop_stale(profile: &Path) {
    let Ok(lock) = std::fs::read_link(profile.join("SingletonLock")) else {
        return;
    };
    let lock = lock.to_string_lossy().into_owned();
    let Some((host, pid)) = lock.rsplit_once('-') else {
        return;
    };
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let Ok(pid) = pid.parse::<i32>() else { return };
    if host != this_host.trim() || !runs_on_profile(pid, profile) {
        return;
    }
    tracing::warn!(
        pid,
        profile = %profile.display(),
        "stopping a Chromium left running on this profile by an earlier baton"
    );
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
    // It is not our child, so there is nothing to wait on but its entry in
    // /proc; it goes within milliseconds of SIGKILL.
    for _ in 0..100 {
        if !runs_on_profile(pid, profile) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::error!(pid, "the old Chromium did not exit");
}

/// Whether `pid` is a live process whose `--user-data-dir` is `profile`.
fn runs_on_profile(pid: i32, profile: &Path) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let Some(dir) = cmdline
        .split(|b| *b == 0)
        .filter_map(|a| std::str::from_utf8(a).ok())
        .find_map(|a| a.strip_prefix("--user-data-dir="))
    else {
        return false;
    };
    let dir = match std::fs::read_link(proc.join("cwd")) {
        Ok(cwd) => cwd.join(dir),
        Err(_) => PathBuf::from(dir),
    };
    match (dir.canonicalize(), profile.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether this process runs as root (Chromium's sandbox refuses root).
pub(super) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
