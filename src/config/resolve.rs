//! The second pass over `flows.yaml`: what needs the whole document
//! (duplicate ids, flows and scripts that do not exist, secrets, `${VAR}`),
//! every problem reported together, and the resolved [`super::Config`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use crate::account::{Account, Check};
use crate::flow::{Flow, Step, Target};
use crate::id::{AccountId, SessionId, TargetId};

use super::error::{ConfigError, Problem};
use super::raw::{
    OneOrMany, RawAccount, RawBrowser, RawConfig, RawCycle, RawDashboard, RawDrop, RawFlow,
    RawSecret, RawTarget,
};
use super::value::{Dur, Interval, MaxPrice};
use super::{BrowserConfig, Config, CycleConfig, DashboardConfig, DemoShopConfig, Secrets};
use crate::budget::Budget;
use crate::schedule::{DropTime, Schedule, Window};

/// The built-in flow of a target that names none when flows.yaml has no
/// `flows:`: watched with the `offer` monitor, never bought.
pub(super) const WATCH: &str = "watch";

pub(super) struct Resolver<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) problems: Vec<Problem>,
}

pub(super) fn at<T>(s: &Spanned<T>) -> Option<(u32, u32)> {
    let l = s.referenced;
    (l.line() > 0).then_some((l.line() as u32, l.column() as u32))
}

impl Resolver<'_> {
    pub(super) fn problem(&mut self, at: Option<(u32, u32)>, message: String) {
        self.problems.push(Problem::new(at, message, self.text));
    }

    /// The directory the file is in: relative paths in it are relative to
    /// that directory, not to wherever baton was started.
    fn base(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    pub(super) fn rel(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.base().join(p)
        }
    }

    /// Expands `${VAR}` references from the environment.
    fn expand(&mut self, s: &Spanned<String>) -> String {
        self.expand_str(&s.value, at(s))
    }

    pub(super) fn expand_str(&mut self, s: &str, at: Option<(u32, u32)>) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            if let Some(j) = after.find('}') {
                let name = &after[..j];
                match (self.env)(name) {
                    Some(v) => out.push_str(&v),
                    None => {
                        self.problem(
                            at,
                            format!("environment variable `{name}` is not set (referenced as `${{{name}}}`)"),
                        );
                    }
                }
                rest = &after[j + 1..];
            } else {
                self.problem(
                    at,
                    format!("unclosed `${{` in `{s}`: write `${{VARIABLE}}`"),
                );
                return out;
            }
        }
        out.push_str(rest);
        out
    }

    /// A script name from `scripts/` that exists.
    fn script(&mut self, scripts_dir: &Path, script: &str, at: Option<(u32, u32)>) -> String {
        let script = script.trim_end_matches(".rhai");
        if script.is_empty() || script.contains("..") || script.starts_with('/') {
            self.problem(
                at,
                format!(
                    "`{script}` is not a script name: use a name from `scripts/`, like `checkout`"
                ),
            );
        } else if !scripts_dir.join(format!("{script}.rhai")).is_file()
            && !crate::script::is_builtin(script)
        {
            self.problem(
                at,
                format!(
                    "script `{script}` not found: there is no `{}`",
                    scripts_dir.join(format!("{script}.rhai")).display()
                ),
            );
        }
        script.to_owned()
    }

    /// Checks a URL `what` names: absolute http(s), or a path on the demo
    /// shop when it is enabled.
    fn url(&mut self, what: &str, url: &str, at: Option<(u32, u32)>, demo_shop: bool) {
        if url.starts_with('/') && !demo_shop {
            self.problem(
                at,
                format!(
                    "{what} has a relative url `{url}`, which only works with `demo_shop:` enabled"
                ),
            );
        } else if !url.starts_with('/')
            && !url.starts_with("http://")
            && !url.starts_with("https://")
        {
            self.problem(
                at,
                format!(
                    "{what} url `{url}` must start with http://, https:// or / (on the demo shop)"
                ),
            );
        } else if !url.starts_with('/')
            && let Err(e) = reqwest::Url::parse(url)
        {
            self.problem(at, format!("{what} url `{url}` is not a valid URL: {e}"));
        }
    }

    fn account(
        &mut self,
        name: &str,
        a: &Spanned<RawAccount>,
        session: SessionId,
        secrets: &BTreeMap<String, Spanned<RawSecret>>,
        demo_shop: bool,
        scripts_dir: &Path,
    ) -> Account {
        let where_ = at(a);
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.problem(
                where_,
                format!("account name `{name}` must be letters, digits, `-` and `_` (it names the account's files)"),
            );
        }
        let a = &a.value;
        let secret = |r: &mut Self, field: &str, v: &Option<Spanned<String>>| {
            v.as_ref().map(|v| {
                if !secrets.contains_key(&v.value) {
                    r.problem(
                        at(v),
                        format!(
                            "account `{name}`'s {field} names secret `{}`, which is not declared under `secrets:`",
                            v.value
                        ),
                    );
                }
                v.value.clone()
            })
        };
        let username = secret(self, "username", &a.username);
        let password = secret(self, "password", &a.password);
        let totp = secret(self, "totp", &a.totp);
        let c = &a.check.value;
        let check = match (&c.url, &c.selector, &c.script) {
            (None, None, Some(script)) if c.logged_out.is_none() => {
                Check::Script(self.script(scripts_dir, script, at(&a.check)))
            }
            (Some(url), Some(sel), None) => {
                let url = self.expand_str(url, at(&a.check));
                self.url(
                    &format!("account `{name}`'s check"),
                    &url,
                    at(&a.check),
                    demo_shop,
                );
                let list = |s: &OneOrMany| match s {
                    OneOrMany::One(s) => vec![s.clone()],
                    OneOrMany::Many(v) => v.clone(),
                };
                let selector = list(sel);
                let logged_out = c.logged_out.as_ref().map(list).unwrap_or_default();
                if selector.iter().all(|s| s.trim().is_empty()) {
                    self.problem(
                        at(&a.check),
                        format!("account `{name}`'s check has an empty selector"),
                    );
                }
                if c.logged_out.is_some() && logged_out.iter().all(|s| s.trim().is_empty()) {
                    self.problem(
                        at(&a.check),
                        format!("account `{name}`'s check has an empty `logged_out` selector"),
                    );
                }
                Check::Page {
                    url,
                    selector,
                    logged_out,
                }
            }
            _ => {
                self.problem(
                    at(&a.check),
                    format!("account `{name}`'s check is `{{ url: PAGE, selector: SELECTOR, logged_out: SELECTOR }}` (logged in when the selector is on the page, logged out when the optional `logged_out` one is) or `{{ script: NAME }}` (logged out when it ends with outcome `logged_out`)"),
                );
                Check::Script(String::new())
            }
        };
        let login = a
            .login
            .as_ref()
            .map(|l| self.script(scripts_dir, &l.value, at(l)));
        let login_url = a.login_url.as_ref().map(|u| {
            let url = self.expand(u);
            self.url(&format!("account `{name}`'s login"), &url, at(u), demo_shop);
            url
        });
        Account {
            id: AccountId::new(name),
            session,
            username,
            password,
            totp,
            check,
            login,
            login_url,
        }
    }

    /// A target's budget (I11): `max_price` and `currency` on the target.
    fn budget(&mut self, id: &str, t: &RawTarget) -> Budget {
        if let Some(p) = t.params.get("max_price")
            && t.max_price.is_none()
        {
            self.problem(
                at(&t.url),
                format!(
                    "target `{id}`: `max_price` is the target's own key now, not a param, because baton enforces it (I11): write `max_price: {p}` beside `url:`, and read it in scripts as `target.max_price`"
                ),
            );
        }
        let currency = t.currency.as_ref().and_then(|c| {
            let code = c.value.trim().to_ascii_uppercase();
            if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) {
                Some(code)
            } else {
                self.problem(
                    at(c),
                    format!(
                        "target `{id}`: currency `{}` is not an ISO 4217 code such as EUR, USD or GBP",
                        c.value
                    ),
                );
                None
            }
        });
        let Some(max) = &t.max_price else {
            return Budget::Unset;
        };
        match &max.value {
            MaxPrice::None => {
                if let Some(c) = &t.currency {
                    self.problem(
                        at(c),
                        format!("target `{id}`: `currency` without a budget (`max_price: none`)"),
                    );
                }
                Budget::NoLimit
            }
            MaxPrice::Amount(amount) => Budget::Max {
                amount: *amount,
                currency,
            },
            MaxPrice::Text(text) => {
                let cx = crate::price::Context {
                    locale: None,
                    currency: currency.as_deref(),
                };
                match crate::price::parse(text, cx) {
                    Ok(p) => {
                        if let (Some(want), Some(got)) = (&currency, &p.currency)
                            && want != got
                        {
                            self.problem(
                                at(max),
                                format!("target `{id}`: max_price {text:?} is in {got}, but `currency` says {want}"),
                            );
                        }
                        Budget::Max {
                            amount: p.amount,
                            currency: p.currency,
                        }
                    }
                    Err(e) => {
                        self.problem(at(max), format!("target `{id}`: max_price: {e}"));
                        Budget::Unset
                    }
                }
            }
        }
    }

    fn expand_json(&mut self, v: &mut serde_json::Value, at: Option<(u32, u32)>) {
        match v {
            serde_json::Value::String(s) if s.contains("${") => {
                let expanded = self.expand_str(s, at);
                *s = expanded;
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(|v| self.expand_json(v, at)),
            serde_json::Value::Object(o) => o.values_mut().for_each(|v| self.expand_json(v, at)),
            _ => {}
        }
    }

    pub(super) fn resolve(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let cycle = cycle(&raw.cycle);
        let state_dir = self.state_dir(raw.state_dir.as_ref());
        let mut browser = self.browser(&raw.browser);
        // The default profile lives with the state, so two batons with two
        // state directories never share a browser profile by accident.
        if raw.browser.profile_dir.is_none() {
            browser.profile_dir = state_dir.join("profile");
        }
        let scripts_dir = self.scripts_dir(&raw);
        let dashboard = self.dashboard(raw.dashboard.as_ref());
        let secrets = self.secrets(&raw.secrets);
        let notify = raw.notify.as_ref().map(|n| {
            self.notify(
                n,
                &raw.secrets,
                &secrets,
                dashboard.as_ref().map(|d| d.addr),
            )
        });
        let flows = self.flows(&raw, &scripts_dir);
        let accounts = self.accounts(&raw, &cycle, &scripts_dir);
        let targets = self.targets(&raw, &flows, &accounts);
        let traces = self.traces(raw.traces.as_ref());
        let cluster = raw.cluster.as_ref().map(|c| self.cluster(c, &state_dir));
        let test_mode = raw.test_mode.0
            || (self.env)("BATON_TEST_MODE")
                .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));

        if !self.problems.is_empty() {
            self.problems.sort_by_key(|p| p.at);
            return Err(ConfigError {
                file: self.path.to_owned(),
                problems: self.problems,
            });
        }
        Ok(Config {
            file: self.path.to_owned(),
            browser,
            cycle,
            test_mode,
            state_dir,
            scripts_dir,
            dashboard,
            demo_shop: raw.demo_shop.map(|d| DemoShopConfig { port: d.port.0 }),
            secrets: Secrets::new(secrets),
            notify,
            traces,
            cluster,
            accounts,
            targets,
            flows,
        })
    }

    /// `browser:`; its `profile_dir` is left empty when not given (it
    /// follows `state_dir`).
    fn browser(&mut self, raw: &RawBrowser) -> BrowserConfig {
        let defaults = BrowserConfig::default();
        let mut browser = BrowserConfig {
            headless: raw.headless.is_none_or(|b| b.0),
            executable: match &raw.executable {
                Some(e) if e.value != "auto" => Some(PathBuf::from(self.expand(e))),
                _ => None,
            },
            profile_dir: match &raw.profile_dir {
                Some(p) => {
                    let p = self.expand(p);
                    self.rel(&p)
                }
                None => PathBuf::new(),
            },
            connect: raw.connect.as_ref().map(|c| self.expand(c)),
            timeout: raw.timeout.map_or(defaults.timeout, |d| d.0),
            args: raw.args.iter().map(|a| self.browser_arg(a)).collect(),
            spare_pages: defaults.spare_pages,
            block: Vec::new(),
            pool: Vec::new(),
        };
        browser.pool = self.pool(raw);
        for b in &raw.block {
            match crate::browser::Blocked::parse(&b.value) {
                Some(kind) if !browser.block.contains(&kind) => browser.block.push(kind),
                Some(_) => {}
                None => self.problem(
                    at(b),
                    format!(
                        "browser.block: unknown kind `{}`; give any of {}",
                        b.value,
                        crate::browser::Blocked::ALL
                            .iter()
                            .map(|(n, _)| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
            }
        }
        if let Some(n) = &raw.spare_pages {
            if n.value > MAX_SPARE_PAGES {
                self.problem(
                    at(n),
                    format!(
                        "browser.spare_pages is {}; at most {MAX_SPARE_PAGES} (each is an open tab)",
                        n.value
                    ),
                );
            }
            browser.spare_pages = n.value as usize;
        }
        if let Some(c) = &raw.connect
            && !is_devtools_url(&c.value)
        {
            self.problem(
                    at(c),
                    format!("`browser.connect` must be a DevTools URL like `ws://127.0.0.1:9222/devtools/browser/...` or `http://127.0.0.1:9222`, not `{}`", c.value),
                );
        }
        browser
    }

    /// One of `browser.args`: a bare key, without the leading dashes.
    fn browser_arg(&mut self, a: &Spanned<String>) -> String {
        if a.value.starts_with('-') {
            self.problem(
                at(a),
                format!(
                    "browser argument `{}` starts with `-`: write it as a bare key, like `{}`",
                    a.value,
                    a.value.trim_start_matches('-')
                ),
            );
        }
        a.value.clone()
    }

    /// `state_dir`, relative to flows.yaml; `.baton` when not given.
    fn state_dir(&mut self, raw: Option<&Spanned<String>>) -> PathBuf {
        let Some(s) = raw else {
            return self.rel(".baton");
        };
        let dir = self.expand(s);
        if dir.trim().is_empty() {
            self.problem(
                at(s),
                "`state_dir` is empty: name a directory, like `.baton`".into(),
            );
        }
        self.rel(&dir)
    }

    /// `scripts_dir`, which must exist unless the file needs no scripts (a
    /// flows.yaml of URLs only, watched by the built-in `watch`).
    fn scripts_dir(&mut self, raw: &RawConfig) -> PathBuf {
        let scripts_dir = match &raw.scripts_dir {
            Some(s) => self.rel(&s.value),
            None => self.rel("scripts"),
        };
        let needs_scripts =
            raw.scripts_dir.is_some() || !raw.flows.is_empty() || !raw.accounts.is_empty();
        if needs_scripts && !scripts_dir.is_dir() {
            let where_ = raw.scripts_dir.as_ref().and_then(at);
            self.problem(
                where_,
                format!(
                    "scripts directory `{}` does not exist",
                    scripts_dir.display()
                ),
            );
        }
        scripts_dir
    }

    /// `dashboard:`; a non-loopback address needs a token.
    fn dashboard(&mut self, raw: Option<&RawDashboard>) -> Option<DashboardConfig> {
        let (addr, token, hosts) = match raw {
            None => return Config::default().dashboard,
            Some(RawDashboard::Off) => return None,
            Some(RawDashboard::On { addr, token, hosts }) => (*addr, token, hosts),
        };
        // The token may also come from the environment alone.
        let token = token
            .as_ref()
            .map(|t| (self.expand(t), at(t)))
            .or_else(|| (self.env)("BATON_DASHBOARD_TOKEN").map(|t| (t, None)));
        if let Some((t, where_)) = &token
            && t.trim().is_empty()
        {
            self.problem(*where_, "`dashboard.token` is empty".into());
        }
        if !addr.ip().is_loopback() && token.is_none() {
            self.problem(
                None,
                format!("the dashboard binds `{addr}`, which is not loopback: set `dashboard.token` or the BATON_DASHBOARD_TOKEN environment variable, or bind 127.0.0.1"),
            );
        }
        Some(DashboardConfig {
            addr,
            token: token.map(|(t, _)| t),
            hosts: hosts.clone(),
        })
    }

    /// `secrets:`, each read from its environment variable (or default).
    fn secrets(&mut self, raw: &BTreeMap<String, Spanned<RawSecret>>) -> BTreeMap<String, String> {
        let mut secrets = BTreeMap::new();
        for (name, spec) in raw {
            match ((self.env)(&spec.value.env), &spec.value.default) {
                (Some(v), _) => {
                    secrets.insert(name.clone(), v);
                }
                (None, Some(default)) => {
                    secrets.insert(name.clone(), default.clone());
                }
                (None, None) => self.problem(
                    at(spec),
                    format!(
                        "secret `{name}` reads environment variable `{}`, which is not set; export it (or give `{{ env: {}, default: ... }}` for a demo value)",
                        spec.value.env, spec.value.env
                    ),
                ),
            }
        }
        secrets
    }

    /// `flows:`, and the built-in `watch` flow when a target needs it.
    fn flows(&mut self, raw: &RawConfig, scripts_dir: &Path) -> BTreeMap<String, Arc<Flow>> {
        let mut flows = BTreeMap::new();
        // The built-in `watch` flow (a target with only a URL): the `offer`
        // monitor each cycle, no steps, so it is watched and never bought.
        // A flow of that name in flows.yaml replaces it.
        let watch_only = raw
            .targets
            .iter()
            .any(|t| t.flow.is_none() && raw.flows.is_empty())
            || raw
                .targets
                .iter()
                .any(|t| t.flow.as_ref().is_some_and(|f| f.value == WATCH));
        if watch_only && !raw.flows.contains_key(WATCH) {
            flows.insert(
                WATCH.to_owned(),
                Arc::new(Flow {
                    name: WATCH.to_owned(),
                    monitor: Some("offer".into()),
                    steps: Vec::new(),
                    outcomes: BTreeMap::new(),
                    account: None,
                }),
            );
        }
        for (name, flow) in &raw.flows {
            if flow.value.steps.is_empty() {
                self.problem(at(flow), format!("flow `{name}` has no steps"));
            }
            let monitor = flow
                .value
                .monitor
                .as_ref()
                .map(|m| self.script(scripts_dir, &m.value, at(m)));
            let steps = flow
                .value
                .steps
                .iter()
                .map(|s| Step {
                    script: self.script(scripts_dir, &s.value.script, at(s)),
                    always: s.value.always,
                })
                .collect();
            flows.insert(
                name.clone(),
                Arc::new(Flow {
                    name: name.clone(),
                    monitor,
                    steps,
                    outcomes: flow.value.outcomes.clone(),
                    account: None,
                }),
            );
        }
        flows
    }

    /// `accounts:`, each with a session of its own after the guest
    /// sessions.
    fn accounts(
        &mut self,
        raw: &RawConfig,
        cycle: &CycleConfig,
        scripts_dir: &Path,
    ) -> BTreeMap<AccountId, Arc<Account>> {
        let mut accounts = BTreeMap::new();
        for (i, (name, a)) in raw.accounts.iter().enumerate() {
            let session = SessionId(
                cycle
                    .max_concurrent_runs
                    .saturating_add(u32::try_from(i).unwrap_or(u32::MAX)),
            );
            let account = self.account(
                name,
                a,
                session,
                &raw.secrets,
                raw.demo_shop.is_some(),
                scripts_dir,
            );
            accounts.insert(account.id.clone(), Arc::new(account));
        }
        accounts
    }

    /// `targets:`: ids unique, each flow and account defined.
    fn targets(
        &mut self,
        raw: &RawConfig,
        flows: &BTreeMap<String, Arc<Flow>>,
        accounts: &BTreeMap<AccountId, Arc<Account>>,
    ) -> Vec<Arc<Target>> {
        let mut seen = BTreeMap::<String, Option<(u32, u32)>>::new();
        let mut targets = Vec::new();
        // Each flow's schedule, read once: its targets start from it.
        let flow_schedules: BTreeMap<&str, Schedule> = raw
            .flows
            .iter()
            .map(|(name, f)| {
                let keys = ScheduleKeys::of_flow(&f.value);
                let s = self.schedule(&format!("flow `{name}`"), &keys, Schedule::default());
                (name.as_str(), s)
            })
            .collect();
        for t in &raw.targets {
            let (id, id_at) = self.target_id(t, &mut seen);
            let flow = self.target_flow(raw, t, &id, id_at, flows);
            let url = self.expand(&t.url);
            self.url(
                &format!("target `{id}`"),
                &url,
                at(&t.url),
                raw.demo_shop.is_some(),
            );
            let account = t.account.as_ref().map(|a| {
                if !accounts.contains_key(a.value.as_str()) {
                    let known: Vec<_> = accounts.keys().map(|k| format!("`{k}`")).collect();
                    self.problem(
                        at(a),
                        format!(
                            "target `{id}` uses account `{}`, which is not defined under `accounts:`{}",
                            a.value,
                            if known.is_empty() {
                                String::new()
                            } else {
                                format!(" (defined: {})", known.join(", "))
                            }
                        ),
                    );
                }
                AccountId::new(&a.value)
            });
            let mut params = t.params.clone();
            for v in params.values_mut() {
                self.expand_json(v, at(&t.url));
            }
            let budget = self.budget(&id, t);
            let base = flow_schedules
                .get(flow.as_str())
                .cloned()
                .unwrap_or_default();
            let mut schedule =
                self.schedule(&format!("target `{id}`"), &ScheduleKeys::of_target(t), base);
            schedule.paused = t.paused.0;
            targets.push(Arc::new(Target {
                id: TargetId::new(&id),
                url,
                flow,
                account,
                params,
                budget,
                schedule,
            }));
        }
        if targets.is_empty() {
            self.problem(None, "no targets: add at least one under `targets:`".into());
        }
        targets
    }

    /// A target's id (from its URL when not given) and where it stands;
    /// `seen` holds the ids before it, which it must not repeat.
    fn target_id(
        &mut self,
        t: &RawTarget,
        seen: &mut BTreeMap<String, Option<(u32, u32)>>,
    ) -> (String, Option<(u32, u32)>) {
        let id_at = t.id.as_ref().map_or_else(|| at(&t.url), at);
        let id = match &t.id {
            Some(id) => id.value.0.clone(),
            None => id_from_url(&t.url.value),
        };
        if id.trim().is_empty() {
            self.problem(
                id_at,
                if t.id.is_some() {
                    "target id is empty".into()
                } else {
                    format!(
                        "target `{}` needs an `id:` (its URL gives none)",
                        t.url.value
                    )
                },
            );
        } else if id.chars().any(char::is_control) {
            self.problem(
                id_at,
                format!("target id {id:?} holds a control character (a line break?): an id is one line of text"),
            );
        }
        if let Some(first) = seen.get(&id) {
            let first = first
                .map(|(l, _)| format!(" (first used on line {l})"))
                .unwrap_or_default();
            let hint = if t.id.is_none() {
                " (taken from the URL: give this target an `id:`)"
            } else {
                ""
            };
            self.problem(
                id_at,
                format!("duplicate target id `{id}`{first}: ids must be unique{hint}"),
            );
        } else {
            seen.insert(id.clone(), id_at);
        }
        (id, id_at)
    }

    /// The flow a target runs: its `flow:`, else the only flow, else the
    /// built-in `watch` when there are no flows.
    fn target_flow(
        &mut self,
        raw: &RawConfig,
        t: &RawTarget,
        id: &str,
        id_at: Option<(u32, u32)>,
        flows: &BTreeMap<String, Arc<Flow>>,
    ) -> String {
        match &t.flow {
            Some(f) => {
                if !flows.contains_key(&f.value) {
                    let known: Vec<_> = flows.keys().map(|k| format!("`{k}`")).collect();
                    let known = if known.is_empty() {
                        "there is no `flows:` section".to_owned()
                    } else {
                        format!("defined: {}", known.join(", "))
                    };
                    self.problem(
                        at(f),
                        format!(
                            "target `{id}` uses flow `{}`, which is not defined ({known})",
                            f.value
                        ),
                    );
                }
                f.value.clone()
            }
            None if raw.flows.is_empty() => WATCH.to_owned(),
            None if raw.flows.len() == 1 => raw.flows.keys().next().cloned().unwrap_or_default(),
            None => {
                self.problem(
                    id_at,
                    format!("target `{id}` does not say which flow it runs: add `flow: NAME` (there are {} flows)", flows.len()),
                );
                String::new()
            }
        }
    }

    /// `base` with the keys `keys` gives replaced; `what` names the target
    /// or flow in problems.
    fn schedule(&mut self, what: &str, keys: &ScheduleKeys<'_>, base: Schedule) -> Schedule {
        let mut s = base;
        if let Some(i) = keys.interval {
            s.interval = Some((i.value.0, i.value.1));
        }
        if let Some(d) = keys.drop_interval {
            s.drop_interval = d.value.0;
        }
        if let Some(w) = keys.windows {
            let texts = match &w.value {
                OneOrMany::One(t) => std::slice::from_ref(t),
                OneOrMany::Many(v) => v.as_slice(),
            };
            s.windows = texts
                .iter()
                .filter_map(|t| {
                    Window::parse(t)
                        .map_err(|e| self.problem(at(w), format!("{what}: {e}")))
                        .ok()
                })
                .collect();
        }
        if !keys.drops.is_empty() {
            s.drops = keys
                .drops
                .iter()
                .filter_map(|d| {
                    let before = d.value.before.unwrap_or(crate::schedule::DROP_BEFORE);
                    let after = d.value.after.unwrap_or(crate::schedule::DROP_AFTER);
                    DropTime::parse(&d.value.at, before, after)
                        .map_err(|e| self.problem(at(d), format!("{what}: {e}")))
                        .ok()
                })
                .collect();
        }
        s
    }

    /// `browser.pool:` endpoints, each a DevTools URL with an optional
    /// session limit; never together with `browser.connect`.
    fn pool(&mut self, raw: &RawBrowser) -> Vec<crate::browser::pool::Endpoint> {
        let mut pool: Vec<crate::browser::pool::Endpoint> = Vec::new();
        if let (Some(c), false) = (&raw.connect, raw.pool.is_empty()) {
            self.problem(
                at(c),
                "give either `browser.connect` (one browser) or `browser.pool` (several), not both"
                    .into(),
            );
        }
        for e in &raw.pool {
            let url = self.expand_str(&e.value.url, at(e));
            if !is_devtools_url(&url) {
                self.problem(
                    at(e),
                    format!("browser.pool: `{}` is not a DevTools URL like `ws://127.0.0.1:9222/devtools/browser/...` or `http://127.0.0.1:9222`", crate::redact::url(&url)),
                );
            }
            if pool.iter().any(|p| p.url == url) {
                self.problem(
                    at(e),
                    format!(
                        "browser.pool: `{}` is listed twice",
                        crate::redact::url(&url)
                    ),
                );
            }
            let max_sessions = match e.value.max_sessions {
                Some(n) if n == 0 || n > MAX_POOL_SESSIONS => {
                    self.problem(
                        at(e),
                        format!("browser.pool: max_sessions is {n}; give 1 to {MAX_POOL_SESSIONS}"),
                    );
                    None
                }
                n => n.map(|n| n as usize),
            };
            pool.push(crate::browser::pool::Endpoint { url, max_sessions });
        }
        pool
    }

    /// `cluster:`: the Redis URL, this instance's name (by default the
    /// host's name and the state directory, unique and stable across
    /// restarts), the lease and the key namespace.
    fn cluster(
        &mut self,
        raw: &super::raw::RawCluster,
        state_dir: &Path,
    ) -> crate::cluster::ClusterConfig {
        let redis = self.expand(&raw.redis);
        if !(redis.starts_with("redis://")
            || redis.starts_with("rediss://")
            || redis.starts_with("unix://"))
        {
            self.problem(
                at(&raw.redis),
                format!(
                    "cluster.redis must be a URL like `redis://127.0.0.1:6379`, not `{}`",
                    crate::cluster::redact_url(&redis)
                ),
            );
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c))
        };
        let instance = if let Some(i) = &raw.instance {
            let v = self.expand(i);
            if !name_ok(&v) {
                self.problem(
                    at(i),
                    format!("cluster.instance `{v}`: use 1 to 100 letters, digits and `._-:/`"),
                );
            }
            v
        } else {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| name_ok(h))
                .unwrap_or_else(|| "localhost".into());
            let dir = std::path::absolute(state_dir).unwrap_or_else(|_| state_dir.to_owned());
            let dir: String = dir
                .display()
                .to_string()
                .chars()
                .map(|c| if name_ok(&c.to_string()) { c } else { '_' })
                .collect();
            format!("{host}:{dir}").chars().take(100).collect()
        };
        let lease = match &raw.lease {
            Some(l) if l.value.0 > MAX_LEASE => {
                self.problem(
                    at(l),
                    format!(
                        "cluster.lease is {}; at most {} (a lost lease frees its target only after it)",
                        humantime::format_duration(l.value.0),
                        humantime::format_duration(MAX_LEASE)
                    ),
                );
                l.value.0
            }
            Some(l) => l.value.0,
            None => crate::cluster::LEASE,
        };
        let namespace = match &raw.namespace {
            Some(n) if !name_ok(&n.value) => {
                self.problem(
                    at(n),
                    format!(
                        "cluster.namespace `{}`: use 1 to 100 letters, digits and `._-:/`",
                        n.value
                    ),
                );
                n.value.clone()
            }
            Some(n) => n.value.clone(),
            None => "baton".into(),
        };
        crate::cluster::ClusterConfig {
            redis,
            instance,
            lease,
            namespace,
        }
    }

    /// `traces:`, within bounds a run can honour.
    fn traces(&mut self, raw: Option<&super::raw::RawTraces>) -> crate::trace::TraceConfig {
        let mut c = crate::trace::TraceConfig::default();
        let Some(raw) = raw else { return c };
        if let Some(k) = &raw.keep {
            if k.value > MAX_TRACES {
                self.problem(
                    at(k),
                    format!(
                        "traces.keep is {}; at most {MAX_TRACES} traces can be kept",
                        k.value
                    ),
                );
            }
            c.keep = k.value as usize;
        }
        if let Some(m) = &raw.max_mb {
            if m.value == 0 || m.value > MAX_TRACE_MB {
                self.problem(
                    at(m),
                    format!(
                        "traces.max_mb is {}; give 1 to {MAX_TRACE_MB} (use `keep: 0` to record no traces)",
                        m.value
                    ),
                );
            }
            c.max_bytes = u64::from(m.value) << 20;
        }
        c
    }
}

/// The schedule keys a target or a flow may give.
struct ScheduleKeys<'a> {
    interval: Option<&'a Spanned<Interval>>,
    windows: Option<&'a Spanned<OneOrMany>>,
    drops: &'a [Spanned<RawDrop>],
    drop_interval: Option<&'a Spanned<Dur<1_000>>>,
}

impl ScheduleKeys<'_> {
    fn of_target(t: &RawTarget) -> ScheduleKeys<'_> {
        ScheduleKeys {
            interval: t.interval.as_ref(),
            windows: t.windows.as_ref(),
            drops: &t.drops,
            drop_interval: t.drop_interval.as_ref(),
        }
    }

    fn of_flow(f: &RawFlow) -> ScheduleKeys<'_> {
        ScheduleKeys {
            interval: f.interval.as_ref(),
            windows: f.windows.as_ref(),
            drops: &f.drops,
            drop_interval: f.drop_interval.as_ref(),
        }
    }
}

/// `cycle:`, each key defaulted.
fn cycle(raw: &RawCycle) -> CycleConfig {
    let d = CycleConfig::default();
    CycleConfig {
        interval: raw.interval.map_or(d.interval, |i| (i.0, i.1)),
        wait_for_active: raw.wait_for_active.map_or(d.wait_for_active, |x| x.0),
        run_timeout: raw.run_timeout.map_or(d.run_timeout, |x| x.0),
        step_timeout: raw.step_timeout.map_or(d.step_timeout, |x| x.0),
        http_timeout: raw.http_timeout.map_or(d.http_timeout, |x| x.0),
        commit_timeout: raw.commit_timeout.map_or(d.commit_timeout, |x| x.0),
        max_concurrent_runs: raw.max_concurrent_runs.as_ref().map_or(1, |c| c.0.get()),
    }
}

/// Whether `url` names a DevTools endpoint baton can attach to.
fn is_devtools_url(url: &str) -> bool {
    url.starts_with("ws://") || url.starts_with("wss://") || url.starts_with("http://")
}

/// The most sessions one pool endpoint may be given.
const MAX_POOL_SESSIONS: u32 = 1_000;
/// The longest `cluster.lease`.
const MAX_LEASE: Duration = Duration::from_secs(600);

/// The most spare pages `browser.spare_pages` may ask for.
const MAX_SPARE_PAGES: u32 = 64;
/// The most traces `traces.keep` may ask for.
const MAX_TRACES: u32 = 100_000;
/// The most megabytes `traces.max_mb` may give them.
const MAX_TRACE_MB: u32 = 100_000;

/// A target's id from its URL: the last path segment, in lower case, with
/// anything but letters, digits, `.`, `_` and `-` turned into `-`
/// (`https://shop.example/products/Aurora-Lamp?variant=2` is
/// `aurora-lamp`); the host when the path is empty.
fn id_from_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or(rest);
    let segment = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let segment = segment.strip_suffix(".html").unwrap_or(segment);
    let id: String = segment
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    id.trim_matches('-').to_owned()
}
