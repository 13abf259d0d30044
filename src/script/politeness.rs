//! Politeness toward the shops scripts fetch from: when a host says "slow
//! down", its monitors pause instead of asking again every cycle.
//!
//! - A `429` or `503` with `Retry-After` (seconds or an HTTP date) pauses
//!   the host for that long (at least 1 s, at most [`MAX_PAUSE`]); a `429`
//!   without it pauses for [`DEFAULT_PAUSE`].
//! - [`FORBIDDEN_STREAK`] `403`s in a row pause it for [`DEFAULT_PAUSE`],
//!   doubled for each further streak (a block rarely lifts by itself at
//!   once), up to [`MAX_PAUSE`]. Any success resets the host.
//!
//! This is politeness, not evasion: baton does not rotate anything to get
//! past a block, it waits. A pause is logged once, when it starts, and shown
//! on the dashboard until it ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::sync::lock;

/// How many `403`s in a row pause a host.
pub const FORBIDDEN_STREAK: u32 = 3;
/// The pause after a `429` without `Retry-After`, and after a first streak
/// of `403`s.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(60);
/// No pause is longer, whatever `Retry-After` says.
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);

/// A host whose monitors are paused, as the dashboard shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlowHost {
    pub host: String,
    #[serde(with = "crate::time::rfc3339")]
    pub until: SystemTime,
    pub reason: String,
}

#[derive(Default)]
struct Host {
    forbidden: u32,
    /// Streaks of 403s so far, for the doubling.
    streaks: u32,
    paused: Option<(Instant, SystemTime, String)>,
}

/// Per-host pauses, shared by every script run of one baton.
#[derive(Default)]
pub struct Politeness {
    hosts: Mutex<HashMap<String, Host>>,
}

/// A host paused now: no request to it before `until`.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "host `{host}` asked baton to slow down ({reason}); no request to it before {} (in {})",
    crate::time::format(*.until),
    crate::time::short(*.left)
)]
pub struct Paused {
    pub host: String,
    /// What the host answered: `HTTP 429 with Retry-After`, ...
    pub reason: String,
    pub until: SystemTime,
    /// How long the pause has left when it was checked.
    pub left: Duration,
}

impl Politeness {
    /// `Err` when `host` is paused now.
    pub fn check(&self, host: &str) -> Result<(), Paused> {
        let mut hosts = self.lock();
        let Some(h) = hosts.get_mut(host) else {
            return Ok(());
        };
        match &h.paused {
            Some((until, wall, reason)) if Instant::now() < *until => Err(Paused {
                host: host.to_owned(),
                reason: reason.clone(),
                until: *wall,
                left: until.saturating_duration_since(Instant::now()),
            }),
            Some(_) => {
                h.paused = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records an answer of `host`. `retry_after` is the header's value.
    pub fn record(&self, host: &str, status: u16, retry_after: Option<&str>) {
        let mut hosts = self.lock();
        let h = hosts.entry(host.to_owned()).or_default();
        let pause = match status {
            200..=399 => {
                *h = Host::default();
                return;
            }
            429 | 503 => match retry_after.and_then(parse_retry_after) {
                Some(d) => Some((d, format!("HTTP {status} with Retry-After"))),
                None if status == 429 => Some((DEFAULT_PAUSE, "HTTP 429".to_owned())),
                None => None,
            },
            403 => {
                h.forbidden += 1;
                if h.forbidden >= FORBIDDEN_STREAK {
                    h.forbidden = 0;
                    h.streaks += 1;
                    let d = DEFAULT_PAUSE.saturating_mul(1 << (h.streaks - 1).min(16));
                    Some((
                        d,
                        format!("{FORBIDDEN_STREAK} answers of HTTP 403 in a row"),
                    ))
                } else {
                    None
                }
            }
            _ => None,
        };
        let Some((d, reason)) = pause else {
            return;
        };
        let d = d.clamp(Duration::from_secs(1), MAX_PAUSE);
        let wall = SystemTime::now() + d;
        tracing::warn!(
            host,
            pause = %crate::time::short(d),
            "{host} answered {reason}: pausing monitors that fetch from it for {}",
            crate::time::short(d)
        );
        h.paused = Some((Instant::now() + d, wall, reason));
    }

    /// The hosts paused now.
    pub fn slowed(&self) -> Vec<SlowHost> {
        let now = Instant::now();
        let mut out: Vec<SlowHost> = self
            .lock()
            .iter()
            .filter_map(|(host, h)| match &h.paused {
                Some((until, wall, reason)) if now < *until => Some(SlowHost {
                    host: host.clone(),
                    until: *wall,
                    reason: reason.clone(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        lock(&self.hosts)
    }
}

/// `Retry-After`: a number of seconds, or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

/// The key a URL's host is paused under: `host[:port]`.
pub fn host_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_host_until_it_passes() {
        let p = Politeness::default();
        p.record("shop.test", 429, Some("120"));
        let e = p.check("shop.test").unwrap_err();
        assert_eq!(e.host, "shop.test");
        assert_eq!(e.left, Duration::from_secs(120));
        assert!(
            e.to_string()
                .contains("asked baton to slow down (HTTP 429 with Retry-After)"),
            "{e}"
        );
        assert!(p.check("other.test").is_ok(), "only that host is paused");
        assert_eq!(p.slowed().len(), 1);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(p.check("shop.test").is_err());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(p.check("shop.test").is_ok());
        assert!(p.slowed().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_pauses_only_with_retry_after_and_pauses_are_bounded() {
        let p = Politeness::default();
        p.record("a", 503, None);
        assert!(
            p.check("a").is_ok(),
            "a plain 503 is an outage, not a request to slow down"
        );
        p.record("a", 503, Some("999999"));
        tokio::time::advance(MAX_PAUSE + Duration::from_secs(1)).await;
        assert!(p.check("a").is_ok(), "no pause is longer than MAX_PAUSE");
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        assert!(parse_retry_after(&date).is_some_and(|d| d <= Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_403s_pause_the_host_longer_each_time_and_a_success_resets() {
        let p = Politeness::default();
        for _ in 0..FORBIDDEN_STREAK - 1 {
            p.record("a", 403, None);
        }
        assert!(p.check("a").is_ok(), "two 403s are not yet a block");
        p.record("a", 403, None);
        assert!(p.check("a").is_err());
        tokio::time::advance(DEFAULT_PAUSE).await;
        assert!(p.check("a").is_ok());
        for _ in 0..FORBIDDEN_STREAK {
            p.record("a", 403, None);
        }
        tokio::time::advance(DEFAULT_PAUSE).await;
        assert!(
            p.check("a").is_err(),
            "the second streak pauses twice as long"
        );
        tokio::time::advance(DEFAULT_PAUSE).await;
        p.record("a", 200, None);
        p.record("a", 403, None);
        assert!(p.check("a").is_ok(), "a success resets the streak");
    }
}
