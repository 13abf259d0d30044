//! baton runs browser flows written in Rhai, in cycles, and guarantees that
//! no two runs ever drive the same browser at once.
//!
//! # Layout
//!
//! The modules follow the parts of the design (docs/architecture.md), and
//! dependencies point one way: each part can be read and tested alone.
//!
//! - Safety core, importing none of the others:
//!   - [`registry`]: the active-run registry, the [`registry::RunGuard`], the
//!     completion lock and the event-driven bounded waits (invariants I1-I5).
//!   - [`state`]: per-target status in an atomically replaced file, and the
//!     append-only run history (I6).
//! - [`browser`]: the `Browser`/`Page` abstraction, with the simulated
//!   browser and real Chromium. Knows nothing of scripts or scheduling.
//! - [`flow`]: targets, flows and steps, and the [`flow::StepRunner`] seam
//!   between a run and whatever executes its steps. [`rust_steps`]
//!   implements it with Rust closures.
//! - [`run`]: one run, from its guard to its completion (I7).
//! - [`scheduler`]: the cycle loop; the only part that starts runs.
//! - [`script`]: the Rhai host: engine, primitives ([`script::api`]),
//!   modules, plugins, hot reload.
//! - [`shop`]: the demo shop, a storefront on loopback, with a light and a
//!   realistic page profile. Stands alone.
//! - [`dashboard`]: the live status page, JSON API and metrics. Reads
//!   snapshots, sends commands to the scheduler.
//! - [`account`]: accounts (one run per account, I10), their stored
//!   browser state and the lock that keeps two processes off one account.
//! - [`notify`]: notifications: events from runs, the scheduler, the
//!   reloaders and scripts, queued in a persisted outbox and delivered by a
//!   sender per channel (webhook, Discord, Slack, ntfy, Apprise, email),
//!   at least once and never on a run's path.
//! - [`trace`]: run traces: each browser call's timeline, the page's
//!   console errors and failed requests, the DOM of a failed run; kept for
//!   the last runs, shown by the dashboard and the dry run.
//! - [`cluster`]: several instances on one set of targets and accounts,
//!   through leases with fencing tokens and shared commit markers on Redis
//!   (`cluster:`); absent, nothing of it runs.
//! - [`config`]: `flows.yaml`. [`app`]: assembles a running baton from it.
//!   [`cli`]: the commands.
//! - Small shared pieces: [`id`], [`time`], [`metrics`], [`redact`],
//!   [`logging`], [`watch`], [`secrets`].

pub mod account;
pub mod app;
pub mod browser;
pub mod budget;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod flow;
pub mod id;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod notify;
pub mod observations;
pub mod offer;
pub mod parts;
pub mod price;
pub mod redact;
pub mod registry;
pub mod remote;
pub mod run;
pub mod rust_steps;
pub mod schedule;
pub mod scheduler;
pub mod script;
pub mod secrets;
pub mod shop;
pub mod state;
pub mod sync;
pub mod time;
pub mod trace;
pub mod watch;
