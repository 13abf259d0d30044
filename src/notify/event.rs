//! What baton tells the operator about: the kinds of event, one event as it
//! is stored and sent, and the events a finished run gives.
//!
//! Events about a run have ids made from the run id and the kind
//! (`run-42-order_placed`): deriving the event again (after a crash, at the
//! next start) gives the same id, so the outbox and every receiver can tell
//! it is the same message. Other events get ids unique to this process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::state::{RunRecord, Status};

/// The kinds of event, as flows.yaml's `rules` name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    OrderPlaced,
    InDoubt,
    TargetFailing,
    LoggedOut,
    BrowserRelaunched,
    BrowserUnreachable,
    Restock,
    /// A target's observed price went down (its price history).
    PriceDrop,
    ReloadFailed,
    Started,
    Stopped,
    /// A script's `notify(message)`.
    Script,
    /// `baton notify test`.
    Test,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::OrderPlaced,
        Kind::InDoubt,
        Kind::TargetFailing,
        Kind::LoggedOut,
        Kind::BrowserRelaunched,
        Kind::BrowserUnreachable,
        Kind::Restock,
        Kind::PriceDrop,
        Kind::ReloadFailed,
        Kind::Started,
        Kind::Stopped,
        Kind::Script,
        Kind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OrderPlaced => "order_placed",
            Kind::InDoubt => "in_doubt",
            Kind::TargetFailing => "target_failing",
            Kind::LoggedOut => "logged_out",
            Kind::BrowserRelaunched => "browser_relaunched",
            Kind::BrowserUnreachable => "browser_unreachable",
            Kind::Restock => "restock",
            Kind::PriceDrop => "price_drop",
            Kind::ReloadFailed => "reload_failed",
            Kind::Started => "started",
            Kind::Stopped => "stopped",
            Kind::Script => "script",
            Kind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// How loud the event is, in the words channels use.
    pub fn severity(self) -> Severity {
        match self {
            Kind::OrderPlaced => Severity::Success,
            Kind::InDoubt | Kind::LoggedOut | Kind::BrowserUnreachable => Severity::Failure,
            Kind::TargetFailing | Kind::BrowserRelaunched | Kind::ReloadFailed => Severity::Warning,
            Kind::Restock
            | Kind::PriceDrop
            | Kind::Started
            | Kind::Stopped
            | Kind::Script
            | Kind::Test => Severity::Info,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Apprise's message types; ntfy priorities and Discord colours follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Info,
    Success,
    Warning,
    Failure,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Success => "success",
            Severity::Warning => "warning",
            Severity::Failure => "failure",
        }
    }
}

/// One event, as the outbox stores it and channels render it. Its text has
/// had secrets masked before it was stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The same on every channel and every retry: receivers drop duplicates
    /// by it.
    pub id: String,
    pub kind: Kind,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// The dashboard, when it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// What the operator should run (`baton state resolve ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(with = "crate::time::rfc3339")]
    pub at: SystemTime,
}

/// Ids for events that are not about one run: this process's start time and
/// a counter, unique across restarts.
static SEQ: AtomicU64 = AtomicU64::new(0);

fn process_prefix() -> &'static str {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        format!("ev-{ms:x}")
    })
}

impl Event {
    /// An event with a fresh id.
    pub fn new(kind: Kind, title: impl Into<String>, body: impl Into<String>) -> Event {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        Event {
            id: format!("{}-{n}", process_prefix()),
            kind,
            title: title.into(),
            body: body.into(),
            target: None,
            run_id: None,
            order: None,
            price: None,
            link: None,
            command: None,
            at: SystemTime::now(),
        }
    }

    /// An event about run `run_id`: its id is derived from the run.
    pub fn about_run(
        kind: Kind,
        run_id: u64,
        target: &str,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Event {
        Event {
            id: format!("run-{run_id}-{kind}"),
            target: Some(target.to_owned()),
            run_id: Some(run_id),
            ..Event::new(kind, title, body)
        }
    }

    pub fn with_target(mut self, target: &str) -> Event {
        self.target = Some(target.to_owned());
        self
    }

    /// The message as plain text: the body, then one line per detail.
    pub fn text(&self) -> String {
        let mut out = self.body.clone();
        let mut line = |name: &str, v: &Option<String>| {
            if let Some(v) = v {
                out.push_str(&format!("\n{name}: {v}"));
            }
        };
        line("Target", &self.target);
        line("Order", &self.order);
        line("Price", &self.price);
        line("Run", &self.run_id.map(|r| r.to_string()));
        line("Run this", &self.command);
        line("Dashboard", &self.link);
        out
    }
}

/// The command that settles an in_doubt target, both ways.
pub fn resolve_command(target: &str) -> String {
    format!(
        "baton state resolve {target} --as completed   (the shop has the order)  |  baton state resolve {target} --as ready   (it does not)"
    )
}

/// `order_placed` for run `run` of `target`.
pub fn order_placed(
    run: u64,
    target: &str,
    order: Option<&str>,
    price: Option<&str>,
    at: SystemTime,
) -> Event {
    let mut e = Event::about_run(
        Kind::OrderPlaced,
        run,
        target,
        format!("Order placed: {}", order.unwrap_or("(no number reported)")),
        format!("baton placed an order for target `{target}`."),
    );
    e.order = order.map(str::to_owned);
    e.price = price.map(str::to_owned);
    e.at = at;
    e
}

/// `in_doubt` for run `run` of `target`, saying why when it is known.
pub fn in_doubt(run: u64, target: &str, why: &str, at: SystemTime) -> Event {
    let mut e = Event::about_run(
        Kind::InDoubt,
        run,
        target,
        format!("Operator needed: `{target}` is in doubt"),
        format!(
            "Run {run} passed its commit point without an answer from the shop: the order may or may not exist. baton will not run `{target}` again until you check the shop and settle it.\nWhy: {why}"
        ),
    );
    e.command = Some(resolve_command(target));
    e.at = at;
    e
}

/// The events a finished run gives by itself: an order placed, an
/// in_doubt, a login that did not take. (Failure streaks need the runs
/// before it; the notifier counts them.)
pub fn from_run(rec: &RunRecord) -> Vec<Event> {
    let run = rec.run_id.0;
    let target = rec.target.as_str();
    let mut out = Vec::new();
    if rec.status == Status::Completed && rec.committed {
        out.push(order_placed(
            run,
            target,
            rec.order.as_deref(),
            rec.price.as_deref(),
            rec.ended_at,
        ));
    }
    if rec.status == Status::InDoubt {
        out.push(in_doubt(
            run,
            target,
            rec.error.as_deref().unwrap_or("no answer was recorded"),
            rec.ended_at,
        ));
    }
    if rec.outcome.as_deref() == Some("logged_out") {
        let mut e = Event::about_run(
            Kind::LoggedOut,
            run,
            target,
            format!("Logged out: `{target}`'s account could not log in"),
            format!(
                "{}\nbaton holds the account's targets until flows.yaml changes or baton restarts. Log in by hand with `baton login ACCOUNT`.",
                rec.error.as_deref().unwrap_or("The login did not take.")
            ),
        );
        e.at = rec.ended_at;
        out.push(e);
    }
    out
}

/// Whether a run counts towards a failure streak.
pub fn is_failure(status: Status) -> bool {
    matches!(status, Status::Failed | Status::TimedOut)
}
