//! `baton notify test [CHANNEL]`: one test message to each channel, sent
//! at once (not through the outbox) so the operator sees each channel's
//! answer, credentials masked.

use std::time::Instant;

use super::{Failure, answer};
use crate::config::Config;
use crate::notify::{Event, Kind, sender};

pub(super) async fn test(cfg: &Config, only: Option<&str>) -> Result<(), Failure> {
    let Some(n) = &cfg.notify else {
        return Err(Failure::usage(format!(
            "{} has no `notify:` section: add channels first (docs/notifications.md)",
            cfg.file.display()
        )));
    };
    if let Some(c) = only
        && !n.channels.contains_key(c)
    {
        let known: Vec<_> = n.channels.keys().map(|k| format!("`{k}`")).collect();
        return Err(Failure::usage(format!(
            "no channel `{c}` under notify.channels (defined: {})",
            known.join(", ")
        )));
    }
    let redactor = crate::redact::global();
    for v in n.credentials().into_iter().chain(cfg.secrets.values()) {
        redactor.add(v);
    }
    let client = reqwest::Client::builder()
        .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
        .timeout(sender::DELIVERY_TIMEOUT)
        .build()
        .map_err(|e| Failure::runtime(format!("cannot make an HTTP client: {e}")))?;
    let mut failed = 0;
    let mut report = String::new();
    for c in n
        .channels
        .values()
        .filter(|c| only.is_none_or(|o| o == c.name))
    {
        let mut e = Event::new(
            Kind::Test,
            "baton test message",
            format!(
                "A test from `baton notify test`. If you can read this, channel `{}` works.",
                c.name
            ),
        );
        e.link.clone_from(&n.link);
        let started = Instant::now();
        let sent = tokio::time::timeout(
            sender::DELIVERY_TIMEOUT,
            c.deliver(&client, &e, &cfg.secrets),
        )
        .await;
        let took = crate::time::short(started.elapsed());
        let line = match sent {
            Ok(Ok(())) => format!("{}: delivered in {took}", c.name),
            Ok(Err(f)) => {
                failed += 1;
                format!("{}: FAILED after {took}: {f}", c.name)
            }
            Err(_) => {
                failed += 1;
                format!("{}: FAILED: no answer within {took}", c.name)
            }
        };
        report.push_str(&format!(
            "{}  ({} at {})\n",
            redactor.apply(&line),
            c.kind.as_str(),
            c.kind.place()
        ));
    }
    answer(&report)?;
    if failed > 0 {
        return Err(Failure::runtime(format!(
            "{failed} channel(s) did not take the test message"
        )));
    }
    Ok(())
}
