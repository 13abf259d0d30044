//! The sender: one task per channel that takes that channel's messages
//! from the outbox, oldest first, and delivers them, with exponential
//! backoff (honouring `Retry-After`) while the receiver is down and the
//! channel's rate limit between messages. A message leaves the outbox only
//! once delivered or given up on (rejected, or older than `max_age`), so a
//! crash at any point delivers it again: at least once.
//!
//! Nothing here runs on a run's path: runs only hand events to the
//! notifier, which queues them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::channel::{Channel, Failure};
use super::outbox::{Message, Outbox};
use super::{NotifyConfig, Shared};

/// The longest one delivery may take before it counts as failed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the dashboard shows of one channel.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct ChannelStatus {
    pub name: String,
    pub kind: String,
    /// Host (and port) only: the rest of a channel's address may be secret.
    pub place: String,
    /// `ok`, `failing` (deliveries fail; retrying), `idle` (nothing sent
    /// yet) or `opening` (the outbox is being read at start-up).
    pub state: String,
    pub pending: usize,
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed: u64,
    /// Messages given up on: rejected, expired, or pushed out of a full
    /// outbox.
    pub dropped: u64,
    /// Events a rule's `min_interval` held back.
    pub suppressed: u64,
    pub last_error: Option<String>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub failing_since: Option<SystemTime>,
    #[serde(with = "crate::time::rfc3339_opt")]
    pub last_delivered: Option<SystemTime>,
}

/// How a channel's message ended, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Failed,
    Rejected,
    Expired,
    Full,
    /// The outbox could not be written (a full disk).
    Unwritten,
    Suppressed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Rejected => "rejected",
            Delivery::Expired => "expired",
            Delivery::Full => "dropped_full",
            Delivery::Unwritten => "dropped_unwritten",
            Delivery::Suppressed => "suppressed",
        }
    }
}

/// Delivers `channel`'s messages until `stop`; then finishes what is
/// pending unless a delivery fails (what is left stays in the outbox for
/// the next start).
pub(super) async fn deliver(
    channel: Arc<Channel>,
    shared: Arc<Shared>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let cfg: &NotifyConfig = &shared.config;
    let mut backoff = cfg.retry.0;
    let mut last_sent: Option<Instant> = None;
    // The outbox opens on the writer's task; nothing is owed before that.
    let outbox: Arc<Outbox> = tokio::select! {
        o = shared.outbox.wait() => o.clone(),
        () = stop.cancelled() => return,
    };
    loop {
        let Some(msg) = outbox.next_for(&channel.name) else {
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = stop.cancelled() => {}
            }
            continue;
        };
        let age = SystemTime::now()
            .duration_since(msg.event.at)
            .unwrap_or_default();
        if age > cfg.max_age {
            tracing::warn!(channel = %channel.name, id = %msg.event.id, "notification dropped: undelivered for {} (notify.max_age)", crate::time::short(age));
            finish(&outbox, &msg, Some("expired: older than notify.max_age")).await;
            shared.count(&channel.name, Delivery::Expired, None);
            continue;
        }
        if let Some(last) = last_sent {
            let at = last + channel.min_gap;
            if at > Instant::now() {
                tokio::time::sleep_until(at.into()).await;
            }
        }
        let sent = tokio::time::timeout(
            DELIVERY_TIMEOUT,
            channel.deliver(&shared.client, &msg.event, &shared.secrets),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Retry {
                why: format!("no answer within {}", crate::time::short(DELIVERY_TIMEOUT)),
                after: None,
            })
        });
        last_sent = Some(Instant::now());
        match sent {
            Ok(()) => {
                finish(&outbox, &msg, None).await;
                shared.count(&channel.name, Delivery::Delivered, None);
                tracing::debug!(channel = %channel.name, id = %msg.event.id, event = %msg.event.kind, "notification delivered");
                backoff = cfg.retry.0;
            }
            Err(Failure::Rejected(why)) => {
                let why = shared.redactor.apply(&why).into_owned();
                tracing::error!(channel = %channel.name, id = %msg.event.id, "notification rejected by the receiver, not retried: {why}");
                finish(&outbox, &msg, Some(&format!("rejected: {why}"))).await;
                shared.count(&channel.name, Delivery::Rejected, Some(why));
            }
            Err(Failure::Retry { why, after }) => {
                let why = shared.redactor.apply(&why).into_owned();
                let wait = after.map_or(backoff, |a| a.max(backoff));
                tracing::warn!(channel = %channel.name, id = %msg.event.id, "notification not delivered ({why}); retrying in {}", crate::time::short(wait));
                shared.count(&channel.name, Delivery::Failed, Some(why));
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(cfg.retry.1);
            }
        }
    }
}

/// Records that the channel is finished with `msg`. A failed write is
/// logged: the message stays pending and is delivered again after a
/// restart, which is the at-least-once promise.
async fn finish(outbox: &Arc<Outbox>, msg: &Message, dropped: Option<&str>) {
    let outbox = outbox.clone();
    let (seq, channel, dropped) = (msg.seq, msg.channel.clone(), dropped.map(str::to_owned));
    let done =
        tokio::task::spawn_blocking(move || outbox.done(seq, &channel, dropped.as_deref())).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot record a delivered notification; it may be sent again after a restart");
        }
        Err(e) => tracing::warn!(error = %e, "cannot record a delivered notification"),
    }
}
