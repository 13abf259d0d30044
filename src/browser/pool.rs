//! A pool of browsers over CDP (`browser.pool`): several DevTools
//! endpoints (plain Chromium with a remote-debugging port, browserless,
//! Selenium Grid 4), one attached [`ChromeBrowser`] per endpoint.
//!
//! Sessions are spread over the endpoints, least loaded first, within each
//! endpoint's `max_sessions`. A session stays on its endpoint while that
//! endpoint gives it pages: its cookies and its account's login live in a
//! browser context there. When an endpoint dies, the pages on it fail at
//! once (the attached browser marks itself dead on the first websocket
//! error), so the runs on it fail clearly; a run inside its commit is
//! handled by the run as I9 says (`in_doubt`, session quarantined). The
//! session's next page is opened on a healthy endpoint, in a fresh context
//! seeded from the account's stored login. An endpoint that failed is
//! skipped for [`RETRY_AFTER`] unless nothing else can take a session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::time::Instant;

use super::chrome::{ChromeBrowser, ChromeConfig};
use super::storage::StorageState;
use super::{Browser, BrowserError, BrowserHealth, Page};
use crate::id::SessionId;
use crate::metrics::Metrics;
use crate::sync::lock;

/// How long an endpoint that failed is passed over when placing sessions.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// One endpoint of `browser.pool`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// `ws://host:port/devtools/browser/...` or `http://host:port`.
    #[serde(serialize_with = "shown_url")]
    pub url: String,
    /// At most this many sessions at once; `None` for no limit.
    pub max_sessions: Option<usize>,
}

/// `url` without its query (hosted pools take their token there) or its
/// credentials: [`crate::redact::url`].
pub fn display_url(url: &str) -> String {
    crate::redact::url(url)
}

fn shown_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&display_url(url))
}

/// What the dashboard shows of one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EndpointHealth {
    /// The URL without its query.
    pub url: String,
    /// As [`BrowserHealth::state`]: `not_started`, `running`, `dead`...
    pub state: String,
    /// The browser sessions placed on it.
    pub sessions: Vec<u32>,
    pub max_sessions: Option<usize>,
    pub version: Option<String>,
    pub last_error: Option<String>,
}

struct Member {
    endpoint: Endpoint,
    browser: ChromeBrowser,
    /// Until when placing sessions passes this endpoint over.
    failed_until: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
}

impl Member {
    fn failed(&self, e: &str) {
        *lock(&self.failed_until) = Some(Instant::now() + RETRY_AFTER);
        *lock(&self.last_error) = Some(e.to_owned());
    }

    /// `text` (an error) without the endpoint's query: a hosted pool's
    /// token never reaches a log line or the dashboard.
    fn scrub(&self, text: &str) -> String {
        text.replace(&self.endpoint.url, &display_url(&self.endpoint.url))
    }

    fn cooling(&self) -> bool {
        lock(&self.failed_until).is_some_and(|t| Instant::now() < t)
    }
}

/// Several browsers behind one [`Browser`].
pub struct PoolBrowser {
    members: Vec<Member>,
    /// Which member each session is on.
    placed: Mutex<HashMap<SessionId, usize>>,
    health: tokio::sync::watch::Sender<BrowserHealth>,
}

impl PoolBrowser {
    /// One attached browser per endpoint, each configured as `base` says
    /// (spare pages, blocked kinds), with its own spare pages.
    pub fn new(
        endpoints: &[Endpoint],
        base: &ChromeConfig,
        metrics: Option<&Arc<Metrics>>,
    ) -> Arc<PoolBrowser> {
        let members = endpoints
            .iter()
            .map(|e| Member {
                endpoint: e.clone(),
                browser: ChromeBrowser::new(
                    ChromeConfig {
                        connect: Some(e.url.clone()),
                        ..base.clone()
                    },
                    metrics.cloned(),
                ),
                failed_until: Mutex::new(None),
                last_error: Mutex::new(None),
            })
            .collect();
        let pool = Arc::new(PoolBrowser {
            members,
            placed: Mutex::new(HashMap::new()),
            health: tokio::sync::watch::Sender::new(BrowserHealth {
                state: "not_started".into(),
                pid: None,
                restarts: 0,
                version: None,
                last_error: None,
                endpoints: Vec::new(),
            }),
        });
        pool.publish();
        // Every member's change is the pool's change.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            for (i, m) in pool.members.iter().enumerate() {
                let mut rx = m.browser.health_changes().expect("chrome has health");
                let weak = Arc::downgrade(&pool);
                rt.spawn(async move {
                    while rx.changed().await.is_ok() {
                        match weak.upgrade() {
                            Some(p) => p.member_changed(i),
                            None => return,
                        }
                    }
                });
            }
        }
        pool
    }

    /// The sessions on each member.
    fn sessions(&self) -> Vec<Vec<u32>> {
        let mut on = vec![Vec::new(); self.members.len()];
        for (s, &i) in lock(&self.placed).iter() {
            on[i].push(s.0);
        }
        for v in &mut on {
            v.sort_unstable();
        }
        on
    }

    /// The health of every endpoint, and the pool's as a whole.
    fn snapshot(&self) -> BrowserHealth {
        let endpoints: Vec<EndpointHealth> = self
            .members
            .iter()
            .zip(self.sessions())
            .map(|(m, sessions)| {
                let h = m.browser.health();
                EndpointHealth {
                    url: display_url(&m.endpoint.url),
                    state: h.state,
                    sessions,
                    max_sessions: m.endpoint.max_sessions,
                    version: h.version,
                    last_error: h
                        .last_error
                        .map(|e| m.scrub(&e))
                        .or_else(|| lock(&m.last_error).clone()),
                }
            })
            .collect();
        let any = |s: &str| endpoints.iter().any(|e| e.state == s);
        let state = if any("running") {
            "running"
        } else if endpoints.iter().all(|e| e.state == "not_started") {
            "not_started"
        } else if any("stopped") {
            "stopped"
        } else {
            "dead"
        };
        BrowserHealth {
            state: state.into(),
            pid: None,
            restarts: self
                .members
                .iter()
                .map(|m| m.browser.health().restarts)
                .sum(),
            version: endpoints.iter().find_map(|e| e.version.clone()),
            last_error: endpoints.iter().find_map(|e| e.last_error.clone()),
            endpoints,
        }
    }

    /// A member's health changed. A dead one keeps no sessions: their
    /// contexts died with it, and their next pages go elsewhere.
    fn member_changed(&self, i: usize) {
        let m = &self.members[i];
        if m.browser.health().state == "dead" {
            let mut placed = lock(&self.placed);
            let moved: Vec<u32> = placed
                .iter()
                .filter(|&(_, &j)| j == i)
                .map(|(s, _)| s.0)
                .collect();
            placed.retain(|_, &mut j| j != i);
            drop(placed);
            *lock(&m.failed_until) = Some(Instant::now() + RETRY_AFTER);
            if !moved.is_empty() {
                tracing::warn!(
                    endpoint = %display_url(&m.endpoint.url),
                    sessions = ?moved,
                    "browser pool endpoint is gone; its sessions open their next pages on another"
                );
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let now = self.snapshot();
        self.health.send_if_modified(|h| {
            let changed = *h != now;
            *h = now;
            changed
        });
    }

    /// The member `session` is on, or else places it now on the least
    /// loaded member with room that is not in `tried`, endpoints that
    /// failed lately last. Choosing and placing are one step, so two
    /// sessions never both take an endpoint's last place.
    fn place(&self, session: SessionId, tried: &[usize]) -> Option<usize> {
        let mut placed = lock(&self.placed);
        if let Some(&i) = placed.get(&session) {
            return Some(i);
        }
        let mut load = vec![0; self.members.len()];
        for &i in placed.values() {
            load[i] += 1;
        }
        let i = (0..self.members.len())
            .filter(|i| !tried.contains(i))
            .filter(|&i| {
                self.members[i]
                    .endpoint
                    .max_sessions
                    .is_none_or(|m| load[i] < m)
            })
            .min_by_key(|&i| (self.members[i].cooling(), load[i], i))?;
        placed.insert(session, i);
        Some(i)
    }
}

#[async_trait]
impl Browser for PoolBrowser {
    async fn new_page(&self, session: SessionId) -> Result<Arc<dyn Page>, BrowserError> {
        let mut tried = Vec::new();
        let mut errors = Vec::new();
        while let Some(i) = self.place(session, &tried) {
            let m = &self.members[i];
            let shown = display_url(&m.endpoint.url);
            match m.browser.new_page(session).await {
                Ok(page) => {
                    if !tried.is_empty() {
                        tracing::info!(session = session.0, endpoint = %shown, "browser session {session} now on {shown}");
                    }
                    self.publish();
                    return Ok(page);
                }
                Err(e) => {
                    // The session leaves a failed endpoint: its next page
                    // (this one) is tried on the others.
                    let e = m.scrub(&e.to_string());
                    m.failed(&e);
                    lock(&self.placed).remove(&session);
                    tracing::warn!(session = session.0, endpoint = %shown, error = %e, "browser pool endpoint failed; trying another for session {session}");
                    errors.push(format!("{shown}: {e}"));
                    tried.push(i);
                    self.publish();
                }
            }
        }
        if errors.is_empty() {
            errors.push("every endpoint has its max_sessions".into());
        }
        Err(BrowserError::NewPage(format!(
            "no endpoint of browser.pool could take browser session {session}: {}",
            errors.join("; ")
        )))
    }

    async fn seed(&self, session: SessionId, state: StorageState) -> Result<(), BrowserError> {
        // Every member: wherever the session lands, its context starts
        // from the login.
        for m in &self.members {
            m.browser.seed(session, state.clone()).await?;
        }
        Ok(())
    }

    async fn storage_state(
        &self,
        session: SessionId,
        origins: &[String],
    ) -> Result<StorageState, BrowserError> {
        let i = lock(&self.placed).get(&session).copied();
        match i {
            Some(i) => {
                self.members[i]
                    .browser
                    .storage_state(session, origins)
                    .await
            }
            None => Err(BrowserError::Storage(format!(
                "browser session {session} is on no endpoint of the pool"
            ))),
        }
    }

    fn health(&self) -> BrowserHealth {
        self.snapshot()
    }

    fn health_changes(&self) -> Option<tokio::sync::watch::Receiver<BrowserHealth>> {
        Some(self.health.subscribe())
    }

    async fn kill(&self) {
        for m in &self.members {
            m.browser.kill().await;
        }
    }

    async fn shutdown(&self) {
        for m in &self.members {
            m.browser.shutdown().await;
        }
        self.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_endpoint_urls_are_not_shown() {
        let m = Member {
            endpoint: Endpoint {
                url: "wss://chrome.example/?token=s3cret".into(),
                max_sessions: None,
            },
            browser: ChromeBrowser::new(ChromeConfig::headless(std::env::temp_dir()), None),
            failed_until: Mutex::new(None),
            last_error: Mutex::new(None),
        };
        let e = BrowserError::Connect {
            url: m.endpoint.url.clone(),
            reason: "refused".into(),
        };
        assert_eq!(
            m.scrub(&e.to_string()),
            "cannot connect to `wss://chrome.example/?…`: refused"
        );
        assert_eq!(
            display_url("wss://chrome.example/?token=s3cret"),
            "wss://chrome.example/?…"
        );
        assert_eq!(
            display_url("http://127.0.0.1:9222"),
            "http://127.0.0.1:9222"
        );
        assert_eq!(
            display_url("ws://user:s3cret@chrome.example:3000/devtools?token=t0k"),
            "ws://***@chrome.example:3000/devtools?…"
        );
    }
}
