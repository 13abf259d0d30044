//! `flows.yaml`: its schema, how it is read, and the errors an operator gets
//! when it is wrong.
//!
//! Reading goes in two passes. serde (through `serde-saphyr`) checks the
//! shape: unknown keys, wrong types, bad durations and ranges are reported
//! with the line and column of the offending node. Then [`Config::load`]
//! checks what needs the whole document: duplicate target ids, flows and
//! scripts that do not exist, secrets whose variable is unset, `${VAR}`
//! references. All problems of the second pass are reported together.
//!
//! YAML crate: `serde-saphyr`, not `serde_yaml` (published as deprecated)
//! nor its fork `serde_yaml_ng`: it is pure Rust with `unsafe` forbidden,
//! fuzzed and panic-free by design, renders located errors, and gives
//! `Spanned` values so the second pass can point at lines too.
//! docs/flows.md records the decision.
//!
//! - `raw`: the schema of the first pass; `value`: how each kind of value
//!   is read and bounded.
//! - `resolve`: the second pass, into the [`Config`] below.
//! - `notify`: the `notify:` section, both passes.
//! - `error`: [`Problem`] and [`ConfigError`], located and rendered.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_saphyr::MessageFormatter;

use crate::account::{Account, Check};
pub use crate::browser::BrowserConfig;
use crate::flow::{Flow, Target, Timeouts};
use crate::id::AccountId;
pub use crate::secrets::Secrets;

pub mod edit;
mod error;
mod notify;
mod raw;
mod resolve;
mod value;

pub use error::{ConfigError, Problem};
use error::{friendly, strip_location_suffix};
use raw::RawConfig;
use resolve::Resolver;
pub use value::{MAX_DURATION, ValueError, parse_duration, parse_interval};

// ---------------------------------------------------------------------------
// The resolved configuration.

/// The whole configuration, checked and resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The file it was read from.
    pub file: PathBuf,
    pub browser: BrowserConfig,
    pub cycle: CycleConfig,
    pub test_mode: bool,
    pub state_dir: PathBuf,
    pub scripts_dir: PathBuf,
    /// `None` when the dashboard is `off`.
    pub dashboard: Option<DashboardConfig>,
    pub demo_shop: Option<DemoShopConfig>,
    #[serde(skip)]
    pub secrets: Secrets,
    /// `None` without a `notify:` section. Not serialized: it holds
    /// credentials.
    #[serde(skip)]
    pub notify: Option<crate::notify::NotifyConfig>,
    /// How many run traces are kept, and how many bytes they may hold.
    pub traces: crate::trace::TraceConfig,
    /// `None` without a `cluster:` section. Not serialized: the Redis URL
    /// may hold a password.
    #[serde(skip)]
    pub cluster: Option<crate::cluster::ClusterConfig>,
    pub accounts: BTreeMap<AccountId, Arc<Account>>,
    pub targets: Vec<Arc<Target>>,
    pub flows: BTreeMap<String, Arc<Flow>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CycleConfig {
    /// The interval is drawn uniformly from this range each cycle.
    pub interval: (Duration, Duration),
    pub wait_for_active: Duration,
    pub run_timeout: Duration,
    pub step_timeout: Duration,
    pub http_timeout: Duration,
    /// How long a run in `commit` waits for the shop's answer, holding its
    /// browser session (I9), before it gives up and leaves the target
    /// `in_doubt`.
    pub commit_timeout: Duration,
    pub max_concurrent_runs: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DashboardConfig {
    pub addr: SocketAddr,
    #[serde(skip)]
    pub token: Option<String>,
    /// Host names (besides loopback ones) that requests may name in their
    /// `Host` header; anything else is refused (DNS rebinding).
    pub hosts: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DemoShopConfig {
    pub port: u16,
}

impl Default for CycleConfig {
    fn default() -> Self {
        CycleConfig {
            interval: (Duration::from_secs(25), Duration::from_secs(35)),
            wait_for_active: Duration::from_secs(30),
            run_timeout: Duration::from_secs(60),
            step_timeout: Duration::from_secs(30),
            http_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(300),
            max_concurrent_runs: 1,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            file: PathBuf::from("flows.yaml"),
            browser: BrowserConfig::default(),
            cycle: CycleConfig::default(),
            test_mode: false,
            state_dir: PathBuf::from(".baton"),
            scripts_dir: PathBuf::from("scripts"),
            dashboard: Some(DashboardConfig {
                addr: SocketAddr::from(([127, 0, 0, 1], 7878)),
                token: None,
                hosts: Vec::new(),
            }),
            demo_shop: None,
            secrets: Secrets::default(),
            notify: None,
            traces: crate::trace::TraceConfig::default(),
            cluster: None,
            accounts: BTreeMap::new(),
            targets: Vec::new(),
            flows: BTreeMap::new(),
        }
    }
}

impl Config {
    /// The bounds that apply inside steps.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            action: self.browser.timeout,
            step: self.cycle.step_timeout,
            http: self.cycle.http_timeout,
        }
    }

    /// Targets whose flow has steps (so may commit) but no `max_price`:
    /// baton refuses their commits (I11). `check` and `run` say so.
    pub fn unbudgeted(&self) -> Vec<&Target> {
        self.targets
            .iter()
            .filter(|t| t.budget == crate::budget::Budget::Unset)
            .filter(|t| self.flows.get(&t.flow).is_some_and(|f| !f.steps.is_empty()))
            .map(AsRef::as_ref)
            .collect()
    }

    pub fn target(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id.as_str() == id)
    }

    pub fn flow_of(&self, target: &Target) -> Option<&Arc<Flow>> {
        self.flows.get(&target.flow)
    }

    /// Every script the flows and accounts use, each once, in a stable
    /// order.
    pub fn scripts(&self) -> BTreeSet<String> {
        self.flows
            .values()
            .flat_map(|f| f.scripts().map(str::to_owned))
            .chain(
                self.accounts
                    .values()
                    .flat_map(|a| a.scripts().map(str::to_owned)),
            )
            .collect()
    }

    /// The account `target` runs on, if any.
    pub fn account_of(&self, target: &Target) -> Option<&Arc<Account>> {
        target.account.as_ref().and_then(|a| self.accounts.get(a))
    }

    /// The flow `target` runs, with its account's check and login when it
    /// has one: what a run pins and executes.
    pub fn run_flow(&self, target: &Target) -> Option<Arc<Flow>> {
        let flow = self.flow_of(target)?;
        Some(match self.account_of(target) {
            Some(a) => Arc::new(flow.with_account(a.clone())),
            None => flow.clone(),
        })
    }

    /// Who `a` is to its shop under this configuration: the origin of
    /// its check page, else of its first target, else of its login page,
    /// and its user name (the username secret's value, else the account's
    /// name). The machine-wide lock of I10 is taken on it.
    pub fn identity(&self, a: &Account) -> crate::account::Identity {
        let page = match &a.check {
            Check::Page { url, .. } => Some(url.as_str()),
            Check::Script(_) => None,
        };
        let origin = page
            .into_iter()
            .chain(
                self.targets
                    .iter()
                    .filter(|t| t.account.as_ref() == Some(&a.id))
                    .map(|t| t.url.as_str()),
            )
            .chain(a.login_url.as_deref())
            .find_map(crate::account::origin_of);
        let user = a
            .username
            .as_deref()
            .and_then(|name| self.secrets.get(name))
            .map_or_else(|| a.id.to_string(), str::to_owned);
        let fallback = origin.is_none().then(|| {
            std::fs::canonicalize(&self.state_dir).unwrap_or_else(|_| self.state_dir.clone())
        });
        crate::account::Identity::new(origin, user, fallback)
    }

    /// The origins whose local storage an account's stored state keeps:
    /// those of its targets and of its check and login pages.
    pub fn account_origins(&self, account: &Account) -> Vec<String> {
        let pages = self
            .targets
            .iter()
            .filter(|t| t.account.as_ref() == Some(&account.id))
            .map(|t| t.url.as_str())
            .chain(match &account.check {
                Check::Page { url, .. } => Some(url.as_str()),
                Check::Script(_) => None,
            })
            .chain(account.login_url.as_deref());
        let origins: BTreeSet<String> = pages.filter_map(crate::account::origin_of).collect();
        origins.into_iter().collect()
    }

    /// Makes target URLs written as paths (`/p/1001`) absolute against the
    /// embedded demo shop, once it is listening at `base`.
    pub fn resolve_shop_urls(&mut self, base: &str) {
        let base = base.trim_end_matches('/');
        let abs = |url: &mut String| {
            if url.starts_with('/') {
                *url = format!("{base}{url}");
            }
        };
        for t in &mut self.targets {
            if t.url.starts_with('/') {
                abs(&mut Arc::make_mut(t).url);
            }
        }
        for a in self.accounts.values_mut() {
            let a = Arc::make_mut(a);
            if let Check::Page { url, .. } = &mut a.check {
                abs(url);
            }
            if let Some(url) = &mut a.login_url {
                abs(url);
            }
        }
    }

    /// Reads and checks `path`. `env` looks up environment variables (a
    /// parameter so tests need not touch the process environment).
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                // Most often a command run outside the project directory.
                let here = std::env::current_dir()
                    .map(|d| format!(" (looked in {})", d.display()))
                    .unwrap_or_default();
                format!(
                    "no such file{here}; run baton in the project directory, or name the file with `--config PATH`"
                )
            } else {
                format!("cannot read the file: {e}")
            };
            ConfigError {
                file: path.to_owned(),
                problems: vec![Problem::unlocated(msg)],
            }
        })?;
        Config::parse(path, &text, env)
    }

    /// Checks `text` as if read from `path`.
    pub fn parse(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let options = serde_saphyr::options! {
            strict_booleans: true,
            reject_unsupported_tags: true,
            reject_tagged_field_names: true,
        };
        let raw: RawConfig = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let inner = e.without_snippet();
            let message = serde_saphyr::UserMessageFormatter.format_message(inner);
            let message = friendly(&strip_location_suffix(&message));
            let at = e.location().map(|l| (l.line() as u32, l.column() as u32));
            ConfigError {
                file: path.to_owned(),
                problems: vec![Problem::new(at, message, text)],
            }
        })?;
        Resolver {
            path,
            text,
            env,
            problems: Vec::new(),
        }
        .resolve(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn intervals_and_durations() {
        assert_eq!(
            parse_interval("25s..35s").unwrap(),
            (Duration::from_secs(25), Duration::from_secs(35))
        );
        assert_eq!(
            parse_interval("30s").unwrap(),
            (Duration::from_secs(30), Duration::from_secs(30))
        );
        let e = parse_interval("35s..25s").unwrap_err();
        assert_eq!(e, ValueError::EmptyInterval("35s..25s".into()));
        assert!(e.to_string().starts_with("empty interval"), "{e}");
        assert!(matches!(
            parse_interval("0s"),
            Err(ValueError::ZeroInterval(_))
        ));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn a_target_with_only_a_url_is_watched_and_named_from_its_url() {
        let cfg = Config::parse(
            Path::new("/nowhere/flows.yaml"),
            "targets:\n  - url: https://shop.example/products/Aurora-Lamp?variant=2\n  - url: \"https://shop.example/\"\n",
            &no_env,
        )
        .unwrap();
        let ids: Vec<&str> = cfg.targets.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["aurora-lamp", "shop.example"]);
        assert!(cfg.targets.iter().all(|t| t.flow == "watch"));
        let watch = &cfg.flows["watch"];
        assert_eq!(watch.monitor.as_deref(), Some("offer"));
        assert!(watch.steps.is_empty());
    }

    #[test]
    fn schedules_take_the_flow_default_and_say_where_they_are_wrong() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("scripts")).unwrap();
        std::fs::write(dir.path().join("scripts/buy.rhai"), "").unwrap();
        let file = dir.path().join("flows.yaml");
        let yaml = |target_keys: &str| {
            format!(
                "flows:\n  buy:\n    steps: [buy]\n    windows: mon-fri 09:00-18:00 Europe/London\n    interval: 5m\ntargets:\n  - id: a\n    url: https://shop.example/a\n    max_price: none\n{target_keys}"
            )
        };
        let cfg = Config::parse(
            &file,
            &yaml("    drops: [\"2026-12-05 10:00 Europe/London\"]\n    drop_interval: 10s\n"),
            &no_env,
        )
        .unwrap();
        let s = &cfg.targets[0].schedule;
        assert_eq!(
            s.interval,
            Some((Duration::from_secs(300), Duration::from_secs(300)))
        );
        assert_eq!(s.windows.len(), 1, "the flow's windows");
        assert_eq!(s.drops.len(), 1);
        assert_eq!(s.drop_interval, Duration::from_secs(10));

        for (keys, line, says) in [
            (
                "    windows: mon-fry 09:00-18:00 UTC\n",
                10,
                "target `a`: unknown day `fry`",
            ),
            (
                "    drops: [\"2026-12-05 10:00 Mars/Olympus\"]\n",
                10,
                "unknown time zone `Mars/Olympus`",
            ),
            (
                "    drops: [{ at: \"fri 10:00 UTC\", before: soon }]\n",
                10,
                "before",
            ),
            ("    drop_interval: 10ms\n", 10, "drop_interval"),
        ] {
            let err = Config::parse(&file, &yaml(keys), &no_env)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("flows.yaml:{line}:")) && err.contains(says),
                "{keys}: {err}"
            );
        }
    }

    #[test]
    fn ids_taken_from_urls_must_differ() {
        let err = Config::parse(
            Path::new("flows.yaml"),
            "targets:\n  - url: https://a.example/p/lamp\n  - url: https://b.example/p/lamp\n",
            &no_env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("flows.yaml:3:")
                && err.contains("duplicate target id `lamp`")
                && err.contains("give this target an `id:`"),
            "{err}"
        );
    }

    #[test]
    fn max_price_is_a_number_a_price_text_or_none() {
        use crate::budget::Budget;
        use crate::price::Amount;
        let parse = |target: &str| {
            Config::parse(
                Path::new("flows.yaml"),
                &format!("targets:\n  - {{ url: \"https://s.example/p/x\", {target} }}\n"),
                &no_env,
            )
            .map(|c| c.targets[0].budget.clone())
            .map_err(|e| e.to_string())
        };
        let max = |a: &str, c: Option<&str>| Budget::Max {
            amount: Amount::from_plain(a).unwrap(),
            currency: c.map(str::to_owned),
        };
        assert_eq!(parse("max_price: 60"), Ok(max("60", None)));
        assert_eq!(
            parse("max_price: 59.99, currency: eur"),
            Ok(max("59.99", Some("EUR")))
        );
        assert_eq!(
            parse("max_price: \"59,99 €\""),
            Ok(max("59.99", Some("EUR")))
        );
        assert_eq!(parse("max_price: none"), Ok(Budget::NoLimit));
        assert_eq!(parse("flow: watch"), Ok(Budget::Unset));
        for (bad, says) in [
            ("max_price: \"1.299\"", "ambiguous"),
            ("max_price: -5", "it must be 0 or more"),
            ("max_price: 5, currency: euro", "not an ISO 4217 code"),
            (
                "max_price: \"5 USD\", currency: EUR",
                "is in USD, but `currency` says EUR",
            ),
            (
                "params: { max_price: 60 }",
                "`max_price` is the target's own key now",
            ),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(
                err.contains(says) && err.contains("flows.yaml:2:"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_type_error_is_located_with_a_caret() {
        let err = Config::parse(
            Path::new("flows.yaml"),
            "cycle:\n  wait_for_active: soon\ntargets: []\nflows: {}\n",
            &no_env,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("flows.yaml:2:20: invalid duration `soon`"),
            "{text}"
        );
        assert!(
            text.contains("2 |   wait_for_active: soon\n  |                    ^"),
            "{text}"
        );
    }
}
