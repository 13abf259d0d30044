//! baton's integration tests, in one binary: each file is a module, and
//! `common` holds what they share. (`fds.rs` is a binary of its own: it
//! lowers its process's open-files limit.)
//!
//! - `safety`: the invariants under tokio's paused clock.
//! - `crash`: `kill -9` at random moments (I6).
//! - `e2e`, `accounts`: real headless Chromium against the demo shop.
//! - `scripting`: the Rhai host and its primitives.
//! - `cli`: the `baton` binary's commands, messages and exit codes.
//! - `app`, `dashboard`: a running baton, its config reload and dashboard.
//! - `cluster`: instances coordinated on a real Redis.
//! - `prices`: the budget (I11), `offer()` and `baton watch` against the
//!   demo shop.
//! - `config_fuzz`: flows.yaml never panics `check` or `run`.
//! - `schedule`: windows, summer time and drops under the paused clock.
//! - `targets`: the targets API on a running baton, live.

#![allow(
    clippy::too_many_lines,
    reason = "a live test or bench reads as one story, from start to the check"
)]

mod common;

mod accounts;
mod app;
mod cli;
mod cluster;
mod config_fuzz;
mod crash;
mod dashboard;
mod e2e;
mod notify;
mod prices;
mod safety;
mod schedule;
mod scripting;
mod targets;
