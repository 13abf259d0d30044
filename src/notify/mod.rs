//! Notifications: telling the operator what happened (an order placed, an
//! `in_doubt` that needs them, a target that keeps failing, the browser, a
//! script reload that failed, start and stop), and never losing a message.
//!
//! The scheduler, the runs and the scripts hand events to a [`Notifier`],
//! which only routes and queues them: a writer task appends each to the
//! persisted [`outbox`], and a sender task per channel delivers it
//! ([`sender`]). So a slow or dead receiver never slows a run, and a
//! message in the outbox survives a restart or `kill -9`: delivery is at
//! least once, each message carrying an id receivers can deduplicate on.
//!
//! Events about runs are also derived again at start-up from the history
//! and the target rows (with the same ids, [`event`]), so an order placed
//! just before a crash, whose event had not reached the outbox yet, is
//! still announced; one already in the outbox is recognised and not.
//!
//! - [`event`]: the kinds of event and their text.
//! - [`channel`]: the channels and the request or email each sends.
//! - [`outbox`]: the persisted queue.
//! - [`sender`]: delivery, retries, rate limits, channel status.

pub mod channel;
pub mod event;
pub mod outbox;
pub mod sender;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use channel::{Channel, ChannelKind};
pub use event::{Event, Kind};
use outbox::Outbox;
pub use sender::{ChannelStatus, Delivery};

use crate::flow::NoticeError;
use crate::metrics::Metrics;
use crate::redact::Redactor;
use crate::secrets::Secrets;
use crate::state::{RunRecord, Status};
use crate::sync::lock;

/// flows.yaml's `notify:` section, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyConfig {
    pub channels: BTreeMap<String, Arc<Channel>>,
    /// Which events go where. Empty: every event to every channel.
    pub rules: Vec<Rule>,
    /// A target's failures in a row that make a `target_failing` event.
    pub failures_in_a_row: u32,
    /// The most events waiting in the outbox.
    pub max_messages: usize,
    /// A message still undelivered after this long is dropped.
    pub max_age: Duration,
    /// The first retry's delay and the longest one.
    pub retry: (Duration, Duration),
    /// The dashboard's address, put in messages that need an operator.
    pub link: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            channels: BTreeMap::new(),
            rules: Vec::new(),
            failures_in_a_row: 3,
            max_messages: 1000,
            max_age: Duration::from_secs(24 * 3600),
            retry: (Duration::from_secs(1), Duration::from_secs(300)),
            link: None,
        }
    }
}

/// One rule: these events to these channels, at most once per
/// `min_interval` for each kind of event.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub events: BTreeSet<Kind>,
    pub channels: Vec<String>,
    pub min_interval: Option<Duration>,
}

impl NotifyConfig {
    /// Every value in the channels that is a credential (webhook URLs hold
    /// their token), for the redactor to mask.
    pub fn credentials(&self) -> Vec<&str> {
        let mut out = Vec::new();
        for c in self.channels.values() {
            match &c.kind {
                ChannelKind::Webhook { url, headers, .. } => {
                    out.push(url.as_str());
                    out.extend(headers.iter().map(|(_, v)| v.as_str()));
                }
                ChannelKind::Discord { url } | ChannelKind::Slack { url } => out.push(url),
                ChannelKind::Ntfy { token, .. } => out.extend(token.as_deref()),
                ChannelKind::Apprise { urls, .. } => out.extend(urls.as_deref()),
                ChannelKind::Email(e) => out.extend(e.password.as_deref()),
            }
        }
        out
    }

    /// The channels `kind` goes to, each with the interval that applies.
    fn route(&self, kind: Kind) -> Vec<(String, Option<Duration>)> {
        if self.rules.is_empty() {
            return self.channels.keys().map(|c| (c.clone(), None)).collect();
        }
        let mut out: Vec<(String, Option<Duration>)> = Vec::new();
        for r in self.rules.iter().filter(|r| r.events.contains(&kind)) {
            for c in &r.channels {
                match out.iter_mut().find(|(n, _)| n == c) {
                    // A channel in two rules: the shorter interval wins.
                    Some((_, i)) => *i = (*i).min(r.min_interval),
                    None => out.push((c.clone(), r.min_interval)),
                }
            }
        }
        out
    }
}

/// What the senders and the notifier share.
struct Shared {
    config: NotifyConfig,
    /// Set once the outbox is open. Opening reads the whole log, so it
    /// happens on the writer's task, off start-up's and the runs' path:
    /// events queued meanwhile wait in the queue, the senders wait for it.
    outbox: tokio::sync::SetOnce<Arc<Outbox>>,
    client: reqwest::Client,
    secrets: Secrets,
    redactor: Arc<Redactor>,
    metrics: Arc<Metrics>,
    status: Mutex<BTreeMap<String, ChannelStatus>>,
    wake: BTreeMap<String, Arc<Notify>>,
}

impl Shared {
    /// Sets the channel's pending gauge from the outbox; returns it.
    fn refresh_pending(&self, channel: &str) -> usize {
        let pending = self.outbox.get().map_or(0, |o| o.pending_for(channel));
        self.metrics.notifications_pending(channel, pending);
        pending
    }

    /// Counts `n` messages of `channel` given up because the outbox was
    /// over its bound.
    fn count_full(&self, channel: &str, n: usize) {
        for _ in 0..n {
            self.metrics.notification(channel, Delivery::Full.as_str());
        }
        if let Some(s) = lock(&self.status).get_mut(channel) {
            s.dropped += n as u64;
        }
    }

    /// Sets every channel's state (while the outbox opens, or when it
    /// cannot be opened).
    fn set_all(&self, state: &str, error: Option<&str>) {
        for s in lock(&self.status).values_mut() {
            s.state = state.into();
            if let Some(e) = error {
                s.last_error = Some(e.to_owned());
            }
        }
    }

    fn count(&self, channel: &str, d: Delivery, error: Option<String>) {
        self.metrics.notification(channel, d.as_str());
        let pending = self.refresh_pending(channel);
        let mut all = lock(&self.status);
        let Some(s) = all.get_mut(channel) else {
            return;
        };
        s.pending = pending;
        match d {
            Delivery::Delivered => {
                s.delivered += 1;
                s.state = "ok".into();
                s.failing_since = None;
                s.last_delivered = Some(std::time::SystemTime::now());
            }
            Delivery::Failed => {
                s.failed += 1;
                s.state = "failing".into();
                s.failing_since
                    .get_or_insert_with(std::time::SystemTime::now);
            }
            Delivery::Rejected => {
                s.dropped += 1;
                s.state = "failing".into();
                s.failing_since
                    .get_or_insert_with(std::time::SystemTime::now);
            }
            Delivery::Expired | Delivery::Full | Delivery::Unwritten => s.dropped += 1,
            Delivery::Suppressed => s.suppressed += 1,
        }
        if error.is_some() {
            s.last_error = error;
        }
    }

    fn wake(&self, channel: &str) {
        if let Some(w) = self.wake.get(channel) {
            w.notify_one();
        }
    }
}

/// Hands events to the outbox. Cheap to clone; [`Notifier::off`] when
/// flows.yaml has no `notify:` section, in which case every call is a
/// no-op.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

/// One queued event: the event, its channels, and whether it is dropped
/// when the outbox already knows its id (events derived again at start-up,
/// which a crash may or may not have kept from the outbox).
type Queued = (Event, Vec<String>, Dedupe);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dedupe {
    Always,
    UnlessKnown,
}

struct Inner {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Queued>,
    /// Failures in a row, per target.
    streaks: Mutex<HashMap<String, u32>>,
    /// When each (kind, channel) was last queued, for `min_interval`.
    last: Mutex<HashMap<(Kind, String), Instant>>,
}

/// The notifier's tasks; [`Running::stop`] ends them.
pub struct Running {
    shared: Arc<Shared>,
    /// Ends the writer, once it has persisted what is queued.
    stop_writer: CancellationToken,
    /// Ends the senders, once what is pending is delivered (or a delivery
    /// fails).
    stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    senders: JoinSet<()>,
}

/// How `notify(channel, message)` can fail.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum NotifyError {
    #[error("no channel `{0}` under notify.channels")]
    NoChannel(String),
}

impl From<NotifyError> for NoticeError {
    fn from(e: NotifyError) -> NoticeError {
        match e {
            NotifyError::NoChannel(c) => NoticeError::NoChannel(c),
        }
    }
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn off() -> Notifier {
        Notifier { inner: None }
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Starts the writer and one sender per channel. The writer opens the
    /// outbox in `state_dir` first (one streaming pass, bounded by
    /// `max_messages`), then queues the run events a crash may have kept
    /// from it; until then events wait in memory, so nothing here waits on
    /// the disk. The caller holds the state store, so it is the outbox's
    /// only writer.
    pub fn start(
        config: NotifyConfig,
        state_dir: &Path,
        secrets: Secrets,
        redactor: Arc<Redactor>,
        metrics: Arc<Metrics>,
    ) -> (Notifier, Running) {
        let status = config
            .channels
            .values()
            .map(|c| {
                (
                    c.name.clone(),
                    ChannelStatus {
                        name: c.name.clone(),
                        kind: c.kind.as_str().into(),
                        place: c.kind.place(),
                        state: "opening".into(),
                        ..ChannelStatus::default()
                    },
                )
            })
            .collect();
        let wake = config
            .channels
            .keys()
            .map(|c| (c.clone(), Arc::new(Notify::new())))
            .collect();
        let shared = Arc::new(Shared {
            client: reqwest::Client::builder()
                .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")))
                .timeout(sender::DELIVERY_TIMEOUT)
                .build()
                .unwrap_or_default(),
            config,
            outbox: tokio::sync::SetOnce::new(),
            secrets,
            redactor,
            metrics,
            status: Mutex::new(status),
            wake,
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let notifier = Notifier {
            inner: Some(Arc::new(Inner {
                shared: shared.clone(),
                queue,
                streaks: Mutex::default(),
                last: Mutex::default(),
            })),
        };

        let stop = CancellationToken::new();
        let stop_writer = CancellationToken::new();
        let writer = tokio::spawn(write_queue(
            notifier.clone(),
            state_dir.to_owned(),
            rx,
            stop_writer.clone(),
        ));
        let mut senders = JoinSet::new();
        for c in shared.config.channels.values() {
            senders.spawn(sender::deliver(
                c.clone(),
                shared.clone(),
                shared.wake[&c.name].clone(),
                stop.clone(),
            ));
        }
        (
            notifier,
            Running {
                shared,
                stop_writer,
                stop,
                writer,
                senders,
            },
        )
    }

    /// Queues `event` for the channels its rules name. Never blocks: the
    /// writer task persists it.
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let now = Instant::now();
        let mut channels = Vec::new();
        {
            let mut last = lock(&inner.last);
            for (c, interval) in inner.shared.config.route(event.kind) {
                let key = (event.kind, c.clone());
                if let (Some(i), Some(at)) = (interval, last.get(&key))
                    && now.duration_since(*at) < i
                {
                    tracing::debug!(channel = %c, event = %event.kind, "notification held back by min_interval");
                    inner.shared.count(&c, Delivery::Suppressed, None);
                    continue;
                }
                last.insert(key, now);
                channels.push(c);
            }
        }
        self.queue(event, channels, Dedupe::Always);
    }

    /// [`Notifier::emit`] for an event derived again from what a crash
    /// left: dropped if the outbox already has its id.
    fn emit_unless_known(&self, event: Event) {
        let Some(inner) = &self.inner else { return };
        let channels = inner
            .shared
            .config
            .route(event.kind)
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        self.queue(event, channels, Dedupe::UnlessKnown);
    }

    /// Queues `event` for `channel` alone (a script's `notify(channel, ..)`).
    pub fn emit_to(&self, channel: &str, event: Event) -> Result<(), NotifyError> {
        let Some(inner) = &self.inner else {
            return Err(NotifyError::NoChannel(channel.to_owned()));
        };
        if !inner.shared.config.channels.contains_key(channel) {
            return Err(NotifyError::NoChannel(channel.to_owned()));
        }
        self.queue(event, vec![channel.to_owned()], Dedupe::Always);
        Ok(())
    }

    fn queue(&self, mut event: Event, channels: Vec<String>, dedupe: Dedupe) {
        let Some(inner) = &self.inner else { return };
        if channels.is_empty() {
            return;
        }
        let r = &inner.shared.redactor;
        let mask = |s: &mut String| *s = r.apply(s).into_owned();
        mask(&mut event.title);
        mask(&mut event.body);
        for v in [&mut event.order, &mut event.price, &mut event.target]
            .into_iter()
            .flatten()
        {
            mask(v);
        }
        if event.link.is_none() {
            event.link.clone_from(&inner.shared.config.link);
        }
        // The writer ends only after the notifier's last use.
        let _ = inner.queue.send((event, channels, dedupe));
    }

    /// The events of a finished run: its own (order placed, in_doubt,
    /// logged out) and a failure streak that reached
    /// `failures_in_a_row`.
    pub fn run_finished(&self, rec: &RunRecord) {
        let Some(inner) = &self.inner else { return };
        for e in event::from_run(rec) {
            self.emit(e);
        }
        if let Some(e) = inner.streak(rec) {
            self.emit(e);
        }
    }

    /// Each channel's state, for the dashboard.
    pub fn status(&self) -> Vec<ChannelStatus> {
        let Some(inner) = &self.inner else {
            return Vec::new();
        };
        let s = &inner.shared;
        let mut all: Vec<ChannelStatus> = lock(&s.status).values().cloned().collect();
        if let Some(outbox) = s.outbox.get() {
            for c in &mut all {
                c.pending = outbox.pending_for(&c.name);
            }
        }
        all
    }

    /// Announces the orders of targets the state store recovered as
    /// `completed`: their commit answered and was saved, then baton died
    /// before the run's history record, so the catch-up from the history
    /// cannot see them. `rows` gives each one's row.
    pub fn recovered_orders(
        &self,
        targets: &[crate::id::TargetId],
        rows: impl Fn(&crate::id::TargetId) -> crate::state::TargetState,
    ) {
        if self.inner.is_none() {
            return;
        }
        for id in targets {
            let t = rows(id);
            let Some(run) = t.run_id else { continue };
            self.emit_unless_known(event::order_placed(
                run.0,
                id.as_str(),
                t.last_order.as_deref(),
                None,
                std::time::SystemTime::now(),
            ));
        }
    }

    /// Queues what a crash may have kept from the outbox: the events of
    /// recent runs (their ids say whether they are in it already) and the
    /// targets left `in_doubt`. Only runs that ended after the outbox was
    /// created count, so turning notifications on replays nothing old.
    /// Also counts the failure streaks the history ends with.
    ///
    /// Runs may have finished while the outbox was being read; their
    /// events are ahead of these in the queue, so these go in as
    /// [`Dedupe::UnlessKnown`] and the writer drops the ones it has just
    /// written.
    fn catch_up(&self, outbox: &Outbox, state_dir: &Path) {
        let Some(inner) = &self.inner else { return };
        let since = outbox.created();
        let mut history = crate::state::read_history(state_dir, 500).unwrap_or_default();
        history.reverse();
        let mut queued = 0;
        for rec in &history {
            if rec.ended_at >= since {
                for e in event::from_run(rec) {
                    if !outbox.knows(&e.id) {
                        queued += 1;
                        self.emit_unless_known(e);
                    }
                }
            }
            inner.streak(rec);
        }
        if let Ok(Some(doc)) = crate::state::read_doc(state_dir) {
            for (id, t) in &doc.targets {
                let (Status::InDoubt, Some(run)) = (t.status, t.run_id) else {
                    continue;
                };
                let e = event::in_doubt(
                    run.0,
                    id.as_str(),
                    "baton stopped while the commit was in flight, so no answer was recorded",
                    std::time::SystemTime::now(),
                );
                if !outbox.knows(&e.id) {
                    queued += 1;
                    self.emit_unless_known(e);
                }
            }
        }
        if queued > 0 {
            tracing::info!(
                queued,
                "queued {queued} notification(s) for runs whose events had not reached the outbox"
            );
        }
    }
}

/// Scripts' `notify(..)` through the notifier: event `script`, or one
/// channel.
impl crate::flow::Notices for Notifier {
    fn notify(
        &self,
        target: &str,
        channel: Option<&str>,
        message: &str,
    ) -> Result<String, NoticeError> {
        let first = message.lines().next().unwrap_or_default();
        let e = Event::new(Kind::Script, format!("{target}: {first}"), message).with_target(target);
        match channel {
            Some(c) => self.emit_to(c, e)?,
            None => self.emit(e),
        }
        Ok("queued".into())
    }
}

/// `notify(..)` in a dry run: says where the message would go, sends
/// nothing.
pub struct DryRun(pub Option<NotifyConfig>);

impl crate::flow::Notices for DryRun {
    fn notify(
        &self,
        _target: &str,
        channel: Option<&str>,
        _message: &str,
    ) -> Result<String, NoticeError> {
        let Some(cfg) = &self.0 else {
            return Ok("not sent (dry run; flows.yaml has no notify section)".into());
        };
        let to: Vec<String> = match channel {
            Some(c) if cfg.channels.contains_key(c) => vec![c.to_owned()],
            Some(c) => return Err(NoticeError::NoChannel(c.to_owned())),
            None => cfg
                .route(Kind::Script)
                .into_iter()
                .map(|(c, _)| c)
                .collect(),
        };
        Ok(if to.is_empty() {
            "not sent (dry run); no rule sends event `script` anywhere".into()
        } else {
            format!("not sent (dry run); would go to {}", to.join(", "))
        })
    }
}

impl Inner {
    /// Counts `rec` into its target's streak; the event when the streak
    /// reaches the threshold (once per streak).
    fn streak(&self, rec: &RunRecord) -> Option<Event> {
        let mut streaks = lock(&self.streaks);
        let n = streaks.entry(rec.target.as_str().to_owned()).or_insert(0);
        // Any other ending (completed, out of stock, in_doubt) ends the
        // streak.
        if event::is_failure(rec.status) {
            *n += 1;
        } else {
            *n = 0;
        }
        let threshold = self.shared.config.failures_in_a_row.max(1);
        (event::is_failure(rec.status) && *n == threshold).then(|| {
            let mut e = Event::about_run(
                Kind::TargetFailing,
                rec.run_id.0,
                rec.target.as_str(),
                format!("`{}` failed {threshold} times in a row", rec.target),
                format!(
                    "The last error: {}",
                    rec.error.as_deref().unwrap_or("(none recorded)")
                ),
            );
            e.at = rec.ended_at;
            e
        })
    }
}

impl Running {
    /// Waits until the outbox is open (or failed to open), as the senders
    /// do.
    pub async fn opened(&self) {
        self.shared.outbox.wait().await;
    }

    /// Persists what is queued, then gives the senders `grace` to deliver
    /// what is pending (the `stopped` message, say). What is left stays in
    /// the outbox for the next start.
    pub async fn stop(mut self, grace: Duration) {
        // The writer first: a sender told to stop leaves once it finds
        // nothing pending, so what is queued must be in the outbox by then.
        self.stop_writer.cancel();
        let _ = (&mut self.writer).await;
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.senders.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.senders.shutdown().await;
        }
    }
}

/// Turns the browser's health changes into events: relaunched once it runs
/// again after a restart, unreachable when a start fails (once, until it
/// runs again).
pub async fn watch_browser(
    mut rx: tokio::sync::watch::Receiver<crate::browser::BrowserHealth>,
    notifier: Notifier,
) {
    let mut last = rx.borrow().clone();
    let mut told_dead = false;
    while rx.changed().await.is_ok() {
        let now = rx.borrow_and_update().clone();
        if now.state == "running" && last.state != "running" {
            told_dead = false;
            if now.restarts > 0 {
                notifier.emit(Event::new(
                    Kind::BrowserRelaunched,
                    "Browser relaunched",
                    format!(
                        "Chromium was relaunched (restart {}){}.",
                        now.restarts,
                        last.last_error
                            .as_deref()
                            .map(|e| format!(" after: {e}"))
                            .unwrap_or_default()
                    ),
                ));
            }
        } else if now.state == "dead" && last.state != "running" && !told_dead {
            // Dead without having run: a launch or connect that failed
            // (Chromium dying while it ran is a relaunch, told above).
            told_dead = true;
            notifier.emit(Event::new(
                Kind::BrowserUnreachable,
                "Browser cannot be reached",
                format!(
                    "baton cannot start or reach the browser: {}. Runs fail until it can.",
                    now.last_error.as_deref().unwrap_or("unknown error")
                ),
            ));
        }
        last = now;
    }
}

/// Opens the outbox (a whole pass over it, on a blocking thread), then
/// appends queued events to it and wakes their channels' senders.
async fn write_queue(
    notifier: Notifier,
    state_dir: std::path::PathBuf,
    mut rx: mpsc::UnboundedReceiver<Queued>,
    stop: CancellationToken,
) {
    let Some(inner) = notifier.inner.clone() else {
        return;
    };
    let shared = inner.shared.clone();
    let started = Instant::now();
    let max = shared.config.max_messages;
    let dir = state_dir.clone();
    let open = tokio::task::spawn_blocking(move || Outbox::open(&dir, max));
    // A stop does not wait for a long read: what is queued is lost, but a
    // run's own events are derived again from the history at the next
    // start.
    let opened = tokio::select! {
        r = open => r,
        () = stop.cancelled() => {
            tracing::warn!(
                "baton stopped while the notification outbox was still being read; {} queued notification(s) were not saved",
                rx.len()
            );
            return;
        }
    };
    let outbox = match opened {
        Ok(Ok((outbox, opened))) => {
            report_opened(&shared, &opened, started.elapsed());
            // Messages for a channel flows.yaml no longer has would wait
            // forever: give them up, and say so.
            let keep: BTreeSet<String> = shared.config.channels.keys().cloned().collect();
            let outbox = Arc::new(outbox);
            let o = outbox.clone();
            match tokio::task::spawn_blocking(move || o.give_up_channels(&keep)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(orphans)) => tracing::warn!(
                    orphans,
                    "{orphans} undelivered notification(s) were for channels no longer in flows.yaml; dropped"
                ),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot drop the notifications of removed channels");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot drop the notifications of removed channels");
                }
            }
            outbox
        }
        Ok(Err(e)) => {
            notifications_lost(&shared, &mut rx, &stop, &e.to_string()).await;
            return;
        }
        Err(e) => {
            notifications_lost(&shared, &mut rx, &stop, &e.to_string()).await;
            return;
        }
    };
    shared.set_all("idle", None);
    for c in shared.config.channels.keys() {
        shared.refresh_pending(c);
    }
    let _ = shared.outbox.set(outbox.clone());
    notifier.catch_up(&outbox, &state_dir);
    for c in shared.config.channels.keys() {
        shared.wake(c);
    }
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => m,
            () = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some((event, channels, dedupe)) = next else {
            return;
        };
        if dedupe == Dedupe::UnlessKnown && outbox.knows(&event.id) {
            continue;
        }
        let o = outbox.clone();
        let chans = channels.clone();
        let id = event.id.clone();
        let kind = event.kind;
        let added = tokio::task::spawn_blocking(move || o.add(event, chans)).await;
        match added {
            Ok(Ok(added)) => {
                for d in added.dropped {
                    tracing::warn!(channel = %d.channel, id = %d.event.id, "notification dropped: the outbox is full (notify.max_messages)");
                    shared.count(&d.channel, Delivery::Full, None);
                }
                for c in &channels {
                    shared.refresh_pending(c);
                    shared.wake(c);
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, id, event = %kind, "notification lost: cannot write the outbox");
                for c in &channels {
                    shared.count(
                        c,
                        Delivery::Unwritten,
                        Some(format!("cannot write the outbox: {e}")),
                    );
                }
            }
            Err(e) => tracing::error!(error = %e, id, "notification lost"),
        }
    }
}

/// One summary of what opening the outbox found.
fn report_opened(shared: &Shared, opened: &outbox::Opened, took: Duration) {
    if opened.bytes_dropped > 0 {
        tracing::warn!(
            bytes = opened.bytes_dropped,
            "recovered: the outbox's last line was cut by a crash; it was moved aside"
        );
    }
    for (channel, n) in &opened.over_bound {
        shared.count_full(channel, *n);
    }
    let over = opened.over_bound_total();
    if over > 0 {
        tracing::warn!(
            lines = opened.lines,
            pending = opened.pending,
            dropped = over,
            "the outbox held more than notify.max_messages ({}) events: the newest {} were kept and {over} older message(s) given up (read {} lines in {})",
            shared.config.max_messages,
            opened.pending,
            opened.lines,
            crate::time::short(took)
        );
    } else if opened.pending > 0 {
        tracing::info!(
            pending = opened.pending,
            "{} notification(s) from before the restart are still to be delivered",
            opened.pending
        );
    }
    if opened.unreadable > 0 {
        tracing::warn!(
            lines = opened.unreadable,
            "{} line(s) of the outbox were not readable and were skipped",
            opened.unreadable
        );
    }
}

/// The outbox cannot be opened: every event is counted as lost until the
/// stop, and the channels say why. Runs go on; only notifications suffer.
async fn notifications_lost(
    shared: &Shared,
    rx: &mut mpsc::UnboundedReceiver<Queued>,
    stop: &CancellationToken,
    why: &str,
) {
    tracing::error!(error = %why, "cannot open the notification outbox; notifications are lost until baton restarts");
    let why = format!("cannot open the outbox: {why}");
    shared.set_all("failing", Some(&why));
    loop {
        let next = tokio::select! {
            biased;
            m = rx.recv() => m,
            () = stop.cancelled() => return,
        };
        let Some((_, channels, _)) = next else { return };
        for c in &channels {
            shared.count(c, Delivery::Unwritten, Some(why.clone()));
        }
    }
}
