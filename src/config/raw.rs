//! The schema of `flows.yaml` as serde sees it: the first pass, which
//! checks the shape (unknown keys, wrong types, bad values) and locates each
//! problem. `resolve` turns it into a [`super::Config`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::Deserializer;
use serde_saphyr::Spanned;

use crate::flow::OutcomeAction;

use super::value::{
    Addr, Concurrency, Dur, HostName, IdValue, Interval, MaxPrice, Port, StrictBool, parse_addr,
    string_or_map,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) browser: RawBrowser,
    #[serde(default)]
    pub(super) cycle: RawCycle,
    #[serde(default)]
    pub(super) test_mode: StrictBool,
    #[serde(default)]
    pub(super) state_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) scripts_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) dashboard: Option<RawDashboard>,
    #[serde(default)]
    pub(super) demo_shop: Option<RawDemoShop>,
    #[serde(default)]
    pub(super) secrets: BTreeMap<String, Spanned<RawSecret>>,
    #[serde(default)]
    pub(super) accounts: BTreeMap<String, Spanned<RawAccount>>,
    #[serde(default)]
    pub(super) notify: Option<RawNotify>,
    #[serde(default)]
    pub(super) traces: Option<RawTraces>,
    #[serde(default)]
    pub(super) cluster: Option<RawCluster>,
    pub(super) targets: Vec<RawTarget>,
    /// Optional: without it, targets are watched by the built-in `watch`
    /// flow.
    #[serde(default)]
    pub(super) flows: BTreeMap<String, Spanned<RawFlow>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBrowser {
    pub(super) headless: Option<StrictBool>,
    pub(super) executable: Option<Spanned<String>>,
    pub(super) profile_dir: Option<Spanned<String>>,
    pub(super) connect: Option<Spanned<String>>,
    pub(super) timeout: Option<Dur>,
    #[serde(default)]
    pub(super) args: Vec<Spanned<String>>,
    pub(super) spare_pages: Option<Spanned<u32>>,
    #[serde(default)]
    pub(super) block: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) pool: Vec<Spanned<RawEndpoint>>,
}

/// One endpoint of `browser.pool`: a DevTools URL, or
/// `{ url: ..., max_sessions: N }`.
pub(super) struct RawEndpoint {
    pub(super) url: String,
    pub(super) max_sessions: Option<u32>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            url: String,
            #[serde(default)]
            max_sessions: Option<u32>,
        }
        string_or_map(
            d,
            "a DevTools URL or `{ url: ..., max_sessions: N }`",
            |s| {
                Ok::<_, Infallible>(RawEndpoint {
                    url: s.to_owned(),
                    max_sessions: None,
                })
            },
            |f: Full| RawEndpoint {
                url: f.url,
                max_sessions: f.max_sessions,
            },
        )
    }
}

/// `cluster:`: several instances coordinated on Redis.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) redis: Spanned<String>,
    #[serde(default)]
    pub(super) instance: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) lease: Option<Spanned<Dur<1_000>>>,
    #[serde(default)]
    pub(super) namespace: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCycle {
    pub(super) interval: Option<Interval>,
    pub(super) wait_for_active: Option<Dur>,
    pub(super) run_timeout: Option<Dur>,
    pub(super) step_timeout: Option<Dur>,
    pub(super) http_timeout: Option<Dur>,
    pub(super) commit_timeout: Option<Dur<1_000>>,
    pub(super) max_concurrent_runs: Option<Concurrency>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTraces {
    pub(super) keep: Option<Spanned<u32>>,
    pub(super) max_mb: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDemoShop {
    #[serde(default = "default_shop_port")]
    pub(super) port: Port,
}

fn default_shop_port() -> Port {
    Port(8099)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    /// Optional: a target with only a URL takes its id from the URL.
    #[serde(default)]
    pub(super) id: Option<Spanned<IdValue>>,
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) flow: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) account: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) params: serde_json::Map<String, serde_json::Value>,
    /// What the target may cost (I11); the host enforces it.
    #[serde(default)]
    pub(super) max_price: Option<Spanned<MaxPrice>>,
    #[serde(default)]
    pub(super) currency: Option<Spanned<String>>,
    /// Skipped at every cycle while true (the dashboard's Pause).
    #[serde(default)]
    pub(super) paused: StrictBool,
    /// Its own schedule (issue 28): the flow's, key by key, when not given.
    #[serde(default)]
    pub(super) interval: Option<Spanned<Interval>>,
    #[serde(default)]
    pub(super) windows: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) drops: Vec<Spanned<RawDrop>>,
    #[serde(default)]
    pub(super) drop_interval: Option<Spanned<Dur<1_000>>>,
}

/// An account: its secrets by name, its logged-in check and login script.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    #[serde(default)]
    pub(super) username: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) password: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) totp: Option<Spanned<String>>,
    pub(super) check: Spanned<RawCheck>,
    #[serde(default)]
    pub(super) login: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) login_url: Option<Spanned<String>>,
}

/// `{ url: /account, selector: "#me" }` or `{ script: NAME }`; which of the
/// two is checked in `resolve`, where the message can say so.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) selector: Option<OneOrMany>,
    /// What a logged-out page shows (a login form), so the check returns
    /// as soon as either sign appears.
    #[serde(default)]
    pub(super) logged_out: Option<OneOrMany>,
    #[serde(default)]
    pub(super) script: Option<String>,
}

/// A selector or a list of fallbacks.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFlow {
    #[serde(default)]
    pub(super) monitor: Option<Spanned<String>>,
    pub(super) steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    pub(super) outcomes: BTreeMap<String, OutcomeAction>,
    /// The default schedule of its targets.
    #[serde(default)]
    pub(super) interval: Option<Spanned<Interval>>,
    #[serde(default)]
    pub(super) windows: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) drops: Vec<Spanned<RawDrop>>,
    #[serde(default)]
    pub(super) drop_interval: Option<Spanned<Dur<1_000>>>,
}

/// A drop: `2026-12-05 10:00 Europe/London`, or
/// `{ at: ..., before: 2m, after: 10m }`.
pub(super) struct RawDrop {
    pub(super) at: String,
    pub(super) before: Option<Duration>,
    pub(super) after: Option<Duration>,
}

impl<'de> Deserialize<'de> for RawDrop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            at: String,
            #[serde(default)]
            before: Option<Dur<0>>,
            #[serde(default)]
            after: Option<Dur<0>>,
        }
        string_or_map(
            d,
            "a drop time like `2026-12-05 10:00 Europe/London`, or `{ at: ..., before: 2m, after: 10m }`",
            |s| {
                Ok::<_, Infallible>(RawDrop {
                    at: s.to_owned(),
                    before: None,
                    after: None,
                })
            },
            |f: Full| RawDrop {
                at: f.at,
                before: f.before.map(|d| d.0),
                after: f.after.map(|d| d.0),
            },
        )
    }
}

/// A step: `name` or `{ script: name, always: true }`.
#[derive(Clone, Debug)]
pub(super) struct RawStep {
    pub(super) script: String,
    pub(super) always: bool,
}

impl<'de> Deserialize<'de> for RawStep {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            script: String,
            #[serde(default)]
            always: bool,
        }
        string_or_map(
            d,
            "a script name or `{ script: NAME, always: true }`",
            |s| {
                Ok::<_, Infallible>(RawStep {
                    script: s.to_owned(),
                    always: false,
                })
            },
            |f: Full| RawStep {
                script: f.script,
                always: f.always,
            },
        )
    }
}

/// A secret: `VARIABLE` or `{ env: VARIABLE, default: value }`.
#[derive(Clone, Debug)]
pub(super) struct RawSecret {
    pub(super) env: String,
    pub(super) default: Option<String>,
}

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            env: String,
            #[serde(default)]
            default: Option<String>,
        }
        string_or_map(
            d,
            "an environment variable name or `{ env: NAME, default: VALUE }`",
            |s| {
                Ok::<_, Infallible>(RawSecret {
                    env: s.to_owned(),
                    default: None,
                })
            },
            |f: Full| RawSecret {
                env: f.env,
                default: f.default,
            },
        )
    }
}

/// The dashboard: `off`, `HOST:PORT`, or `{ addr: HOST:PORT, token: ... }`.
pub(super) enum RawDashboard {
    Off,
    On {
        addr: SocketAddr,
        token: Option<Spanned<String>>,
        hosts: Vec<String>,
    },
}

impl<'de> Deserialize<'de> for RawDashboard {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            addr: Addr,
            #[serde(default)]
            token: Option<Spanned<String>>,
            #[serde(default)]
            hosts: Vec<HostName>,
        }
        string_or_map(
            d,
            "`off`, an address like `127.0.0.1:7878`, or `{ addr: ..., token: ... }`",
            |s| {
                if s == "off" {
                    Ok(RawDashboard::Off)
                } else {
                    parse_addr(s).map(|addr| RawDashboard::On {
                        addr,
                        token: None,
                        hosts: Vec::new(),
                    })
                }
            },
            |f: Full| RawDashboard::On {
                addr: f.addr.0,
                token: f.token,
                hosts: f.hosts.into_iter().map(|h| h.0).collect(),
            },
        )
    }
}

// `notify:`

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    #[serde(default)]
    pub(super) channels: BTreeMap<String, Spanned<RawChannel>>,
    #[serde(default)]
    pub(super) rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(super) failures_in_a_row: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_messages: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) max_age: Option<Dur<1_000>>,
    #[serde(default)]
    pub(super) retry: Option<RawRetry>,
    #[serde(default)]
    pub(super) link: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) first: Dur<10>,
    pub(super) max: Dur<10>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub(super) events: OneOrMany,
    pub(super) channels: OneOrMany,
    #[serde(default)]
    pub(super) min_interval: Option<Dur<0>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannel {
    #[serde(rename = "type")]
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) url: Option<Spanned<Cred>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<Cred>>,
    #[serde(default)]
    pub(super) template: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) server: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) topic: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) token: Option<Spanned<Cred>>,
    #[serde(default)]
    pub(super) urls: Option<Spanned<Cred>>,
    #[serde(default)]
    pub(super) tag: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) host: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) port: Option<Port>,
    #[serde(default)]
    pub(super) tls: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) username: Option<Spanned<Cred>>,
    #[serde(default)]
    pub(super) password: Option<Spanned<Cred>>,
    #[serde(default)]
    pub(super) from: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) to: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(super) ca: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) min_gap: Option<Dur<0>>,
}

/// A credential: a string (`${VAR}` expanded) or `{ secret: NAME }`.
pub(super) enum Cred {
    Text(String),
    Secret(String),
}

impl<'de> Deserialize<'de> for Cred {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            secret: String,
        }
        string_or_map(
            d,
            "a string (`${VAR}` works) or `{ secret: NAME }`",
            |s| Ok::<_, Infallible>(Cred::Text(s.to_owned())),
            |f: Full| Cred::Secret(f.secret),
        )
    }
}
