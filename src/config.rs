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
//! [`Spanned`] values so the second pass can point at lines too.
//! docs/flows.md records the decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::{MessageFormatter, Spanned};

use crate::flow::{Flow, OutcomeAction, Step, Target, Timeouts};
use crate::id::TargetId;
pub use crate::secrets::Secrets;

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
    pub targets: Vec<Arc<Target>>,
    pub flows: BTreeMap<String, Arc<Flow>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BrowserConfig {
    pub headless: bool,
    /// `None` means find one (`BATON_CHROME`, then PATH).
    pub executable: Option<PathBuf>,
    pub profile_dir: PathBuf,
    /// Attach to a running browser instead of launching one.
    pub connect: Option<String>,
    /// How long an action waits for its element; the bound of every
    /// browser call.
    pub timeout: Duration,
    /// Extra Chromium switches, as bare keys (`disable-gpu`, `lang=en`).
    pub args: Vec<String>,
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

impl BrowserConfig {
    /// How to launch (or attach to) Chromium as this section says, with the
    /// profile in `profile_dir`.
    pub fn chrome(&self, profile_dir: PathBuf) -> crate::browser::chrome::ChromeConfig {
        crate::browser::chrome::ChromeConfig {
            executable: self.executable.clone(),
            headless: self.headless,
            profile_dir,
            connect: self.connect.clone(),
            args: self.args.clone(),
        }
    }
}

impl Default for BrowserConfig {
    fn default() -> Self {
        BrowserConfig {
            headless: true,
            executable: None,
            profile_dir: PathBuf::from(".baton/profile"),
            connect: None,
            timeout: Duration::from_secs(10),
            args: Vec::new(),
        }
    }
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

    pub fn target(&self, id: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|t| t.id.as_str() == id)
    }

    pub fn flow_of(&self, target: &Target) -> Option<&Arc<Flow>> {
        self.flows.get(&target.flow)
    }

    /// Every script the flows use, each once, in a stable order.
    pub fn scripts(&self) -> BTreeSet<String> {
        self.flows
            .values()
            .flat_map(|f| f.scripts().map(str::to_owned))
            .collect()
    }

    /// Makes target URLs written as paths (`/p/1001`) absolute against the
    /// embedded demo shop, once it is listening at `base`.
    pub fn resolve_shop_urls(&mut self, base: &str) {
        let base = base.trim_end_matches('/');
        for t in &mut self.targets {
            if t.url.starts_with('/') {
                Arc::make_mut(t).url = format!("{base}{}", t.url);
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
        let options = serde_saphyr::options! { strict_booleans: true };
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

/// serde-saphyr appends " at line X, column Y" to some messages; baton puts
/// the location in front instead.
/// A boolean written `true` or `false`. A quoted `"true"` is a string,
/// whatever the parser would make of it: the schema promises strict
/// booleans, so it is an error rather than a guess.
#[derive(Clone, Copy, Debug, Default)]
struct StrictBool(bool);

impl<'de> Deserialize<'de> for StrictBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrictBool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<StrictBool, E> {
                Ok(StrictBool(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrictBool, E> {
                Err(E::custom(
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
                        format!(
                            "invalid boolean `\"{s}\"`: a quoted string; write true or false without quotes"
                        )
                    } else {
                        format!("invalid boolean `{s}`: write true or false")
                    },
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// Rewords the YAML parser's terser messages in the usual style.
fn friendly(msg: &str) -> String {
    match msg {
        "invalid i64" | "invalid u64" => "invalid number: expected a whole number here".to_owned(),
        "unexpected end of file" => {
            "the file ends before any settings: flows.yaml needs at least `targets:` and `flows:`"
                .to_owned()
        }
        other => other.to_owned(),
    }
}

fn strip_location_suffix(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

// ---------------------------------------------------------------------------
// Errors.

/// One thing wrong with the file, with where it is.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// 1-based line and column, when known.
    pub at: Option<(u32, u32)>,
    pub message: String,
    /// The source line, for the caret display.
    pub source_line: Option<String>,
}

impl Problem {
    fn new(at: Option<(u32, u32)>, message: impl Into<String>, text: &str) -> Problem {
        let source_line =
            at.and_then(|(line, _)| text.lines().nth(line as usize - 1).map(str::to_owned));
        Problem {
            at,
            message: message.into(),
            source_line,
        }
    }

    fn unlocated(message: impl Into<String>) -> Problem {
        Problem {
            at: None,
            message: message.into(),
            source_line: None,
        }
    }
}

/// Everything wrong with a config file. `Display` prints one problem per
/// paragraph, each `file:line:column: message` followed by the line and a
/// caret.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.at {
                Some((line, col)) => {
                    write!(f, "{}:{line}:{col}: {}", self.file.display(), p.message)?;
                }
                None => write!(f, "{}: {}", self.file.display(), p.message)?,
            }
            if let (Some((line, col)), Some(src)) = (p.at, &p.source_line) {
                let gutter = line.to_string().len();
                write!(
                    f,
                    "\n{:>gutter$} |\n{line} | {src}\n{:>gutter$} | {:>col$}",
                    "",
                    "",
                    "^",
                    col = col as usize
                )?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The raw schema, as serde sees it.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    browser: RawBrowser,
    #[serde(default)]
    cycle: RawCycle,
    #[serde(default)]
    test_mode: StrictBool,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    #[serde(default)]
    scripts_dir: Option<Spanned<String>>,
    #[serde(default)]
    dashboard: Option<RawDashboard>,
    #[serde(default)]
    demo_shop: Option<RawDemoShop>,
    #[serde(default)]
    secrets: BTreeMap<String, Spanned<RawSecret>>,
    targets: Vec<RawTarget>,
    flows: BTreeMap<String, Spanned<RawFlow>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBrowser {
    headless: Option<StrictBool>,
    executable: Option<Spanned<String>>,
    profile_dir: Option<Spanned<String>>,
    connect: Option<Spanned<String>>,
    timeout: Option<Dur>,
    #[serde(default)]
    args: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCycle {
    interval: Option<Interval>,
    wait_for_active: Option<Dur>,
    run_timeout: Option<Dur>,
    step_timeout: Option<Dur>,
    http_timeout: Option<Dur>,
    commit_timeout: Option<Dur<1_000>>,
    max_concurrent_runs: Option<Concurrency>,
}

/// `max_concurrent_runs`: 1 or more.
struct Concurrency(NonZeroU32);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Concurrency)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid max_concurrent_runs `{n}`: it must be at least 1 (runs at once, each in its own browser session)"
                ))
            })
    }
}

/// A TCP port; 0 picks a free one.
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n).map(Port).map_err(|_| {
            de::Error::custom(format!(
                "invalid port `{n}`: use 1 to 65535, or 0 for any free port"
            ))
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDemoShop {
    #[serde(default = "default_shop_port")]
    port: Port,
}

fn default_shop_port() -> Port {
    Port(8099)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    id: Spanned<IdValue>,
    url: Spanned<String>,
    #[serde(default)]
    flow: Option<Spanned<String>>,
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlow {
    #[serde(default)]
    monitor: Option<Spanned<String>>,
    steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    outcomes: BTreeMap<String, OutcomeAction>,
}

/// A step: `name` or `{ script: name, always: true }`.
#[derive(Clone, Debug)]
struct RawStep {
    script: String,
    always: bool,
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
                Ok(RawStep {
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
struct RawSecret {
    env: String,
    default: Option<String>,
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
                Ok(RawSecret {
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
enum RawDashboard {
    Off,
    On {
        addr: SocketAddr,
        token: Option<Spanned<String>>,
        hosts: Vec<String>,
    },
}

/// A host name for `dashboard.hosts`: no scheme, port or path.
struct HostName(String);

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = s.trim();
        if v.is_empty() || v.contains(['/', ':', ' ', '@', '?', '#']) {
            return Err(de::Error::custom(format!(
                "`dashboard.hosts` takes host names like `baton.example.lan`, without scheme, port or path, not `{s}`"
            )));
        }
        Ok(HostName(v.to_ascii_lowercase()))
    }
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

struct Addr(SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_addr(&s).map(Addr).map_err(de::Error::custom)
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "invalid address `{s}`: expected HOST:PORT with an IP address, like `127.0.0.1:7878`"
        )
    })
}

/// Deserializes a scalar string through `from_str`, or hands a map on as a
/// deserializer for the long form. Keeps serde-saphyr's locations, which an
/// untagged enum would lose.
fn string_or_map<'de, D, T, M>(
    d: D,
    expecting: &'static str,
    from_str: impl FnOnce(&str) -> Result<T, String>,
    from_map: impl FnOnce(M) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    M: Deserialize<'de>,
{
    struct V<F, G, M> {
        expecting: &'static str,
        from_str: F,
        from_map: G,
        map: std::marker::PhantomData<M>,
    }
    impl<'de, T, M, F, G> Visitor<'de> for V<F, G, M>
    where
        M: Deserialize<'de>,
        F: FnOnce(&str) -> Result<T, String>,
        G: FnOnce(M) -> T,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            (self.from_str)(s).map_err(E::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Buffer the map as JSON values (the long forms are small and
            // flat) and read the long form while still at this node, so
            // its errors (unknown keys, bad values) are located here.
            let mut entries = serde_json::Map::new();
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                entries.insert(k, v);
            }
            let long =
                de::value::MapAccessDeserializer::new(OwnedMap(entries.into_iter().collect()));
            M::deserialize(long)
                .map(self.from_map)
                .map_err(de::Error::custom)
        }
    }
    d.deserialize_any(V {
        expecting,
        from_str,
        from_map,
        map: std::marker::PhantomData,
    })
}

/// A buffered map, replayed to a long-form struct.
struct OwnedMap(std::collections::VecDeque<(String, serde_json::Value)>);

impl<'de> MapAccess<'de> for OwnedMap {
    type Error = serde_json::Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.0.front() {
            Some((k, _)) => seed
                .deserialize(de::value::StrDeserializer::<serde_json::Error>::new(k))
                .map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (_, v) = self.0.pop_front().expect("next_value after next_key");
        seed.deserialize(v)
    }
}

/// A target id: YAML may read `12345678` as a number; it is an id all the
/// same.
struct IdValue(String);

impl<'de> Deserialize<'de> for IdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target id (a string or a whole number)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IdValue, E> {
                Ok(IdValue(s.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<IdValue, E> {
                Ok(IdValue(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<IdValue, E> {
                Ok(IdValue(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The longest duration any key takes. Bounds are part of the input: a
/// value that passes `check` must never overflow a deadline in `run`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration written like `30s`, `250ms`, `1m 30s`, at least `MIN_MS`
/// milliseconds and at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug)]
struct Dur<const MIN_MS: u64 = 100>(Duration);

impl<'de, const MIN_MS: u64> Deserialize<'de> for Dur<MIN_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_duration(&s).map_err(de::Error::custom)?;
        bounded(&s, v, Duration::from_millis(MIN_MS))
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// `v` (written `s`) if it lies within `min..=MAX_DURATION`.
fn bounded(s: &str, v: Duration, min: Duration) -> Result<Duration, String> {
    if v < min || v > MAX_DURATION {
        return Err(format!(
            "duration `{}` is out of range: use {} to {}",
            s.trim(),
            humantime::format_duration(min),
            humantime::format_duration(MAX_DURATION)
        ));
    }
    Ok(v)
}

/// Parses a duration like `30s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| {
        format!("invalid duration `{s}`: write a number with a unit, like `250ms`, `30s` or `2m`")
    })
}

/// A cycle interval: `30s` or a range `25s..35s`.
#[derive(Clone, Copy, Debug)]
struct Interval(Duration, Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_interval(&s)
            .map(|(a, b)| Interval(a, b))
            .map_err(de::Error::custom)
    }
}

/// Parses `30s` or `25s..35s`.
pub fn parse_interval(s: &str) -> Result<(Duration, Duration), String> {
    let (lo, hi) = if let Some((a, b)) = s.split_once("..") {
        (parse_duration(a)?, parse_duration(b)?)
    } else {
        let d = parse_duration(s)?;
        (d, d)
    };
    if lo > hi {
        return Err(format!(
            "empty interval `{s}`: the first bound must not be above the second, like `25s..35s`"
        ));
    }
    if hi.is_zero() {
        return Err(format!(
            "interval `{s}` is zero: cycles need time between them, like `25s..35s`"
        ));
    }
    let min = Duration::from_millis(100);
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    Ok((bounded(a, lo, min)?, bounded(b, hi, min)?))
}

// ---------------------------------------------------------------------------
// The second pass.

struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

fn at<T>(s: &Spanned<T>) -> Option<(u32, u32)> {
    let l = s.referenced;
    (l.line() > 0).then_some((l.line() as u32, l.column() as u32))
}

impl Resolver<'_> {
    fn problem(&mut self, at: Option<(u32, u32)>, message: String) {
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

    fn rel(&self, p: &str) -> PathBuf {
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

    fn expand_str(&mut self, s: &str, at: Option<(u32, u32)>) -> String {
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

    fn resolve(mut self, raw: RawConfig) -> Result<Config, ConfigError> {
        let defaults = Config::default();

        let mut browser = BrowserConfig {
            headless: raw.browser.headless.is_none_or(|b| b.0),
            executable: match &raw.browser.executable {
                Some(e) if e.value != "auto" => Some(PathBuf::from(self.expand(e))),
                _ => None,
            },
            profile_dir: match &raw.browser.profile_dir {
                Some(p) => {
                    let p = self.expand(p);
                    self.rel(&p)
                }
                // Set below: it follows `state_dir`.
                None => PathBuf::new(),
            },
            connect: raw.browser.connect.as_ref().map(|c| self.expand(c)),
            timeout: raw.browser.timeout.map_or(defaults.browser.timeout, |d| d.0),
            args: raw
                .browser
                .args
                .iter()
                .map(|a| {
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
                })
                .collect(),
        };
        if let Some(c) = &raw.browser.connect
            && !(c.value.starts_with("ws://")
                || c.value.starts_with("wss://")
                || c.value.starts_with("http://"))
        {
            self.problem(
                    at(c),
                    format!("`browser.connect` must be a DevTools URL like `ws://127.0.0.1:9222/devtools/browser/...` or `http://127.0.0.1:9222`, not `{}`", c.value),
                );
        }

        let d = defaults.cycle.clone();
        let cycle = CycleConfig {
            interval: raw.cycle.interval.map_or(d.interval, |i| (i.0, i.1)),
            wait_for_active: raw.cycle.wait_for_active.map_or(d.wait_for_active, |x| x.0),
            run_timeout: raw.cycle.run_timeout.map_or(d.run_timeout, |x| x.0),
            step_timeout: raw.cycle.step_timeout.map_or(d.step_timeout, |x| x.0),
            http_timeout: raw.cycle.http_timeout.map_or(d.http_timeout, |x| x.0),
            commit_timeout: raw.cycle.commit_timeout.map_or(d.commit_timeout, |x| x.0),
            max_concurrent_runs: raw.cycle.max_concurrent_runs.map_or(1, |c| c.0.get()),
        };

        let state_dir = match &raw.state_dir {
            Some(s) => {
                let dir = self.expand(s);
                if dir.trim().is_empty() {
                    self.problem(
                        at(s),
                        "`state_dir` is empty: name a directory, like `.baton`".into(),
                    );
                }
                self.rel(&dir)
            }
            None => self.rel(".baton"),
        };
        // The default profile lives with the state, so two batons with two
        // state directories never share a browser profile by accident.
        if raw.browser.profile_dir.is_none() {
            browser.profile_dir = state_dir.join("profile");
        }
        let scripts_dir = match &raw.scripts_dir {
            Some(s) => self.rel(&s.value),
            None => self.rel("scripts"),
        };
        if !scripts_dir.is_dir() {
            let where_ = raw.scripts_dir.as_ref().and_then(at);
            self.problem(
                where_,
                format!(
                    "scripts directory `{}` does not exist",
                    scripts_dir.display()
                ),
            );
        }

        let dashboard = match raw.dashboard {
            None => defaults.dashboard.clone(),
            Some(RawDashboard::Off) => None,
            Some(RawDashboard::On { addr, token, hosts }) => {
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
                    hosts,
                })
            }
        };

        let mut secrets = BTreeMap::new();
        for (name, spec) in &raw.secrets {
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

        let mut flows = BTreeMap::new();
        for (name, flow) in &raw.flows {
            if flow.value.steps.is_empty() {
                self.problem(at(flow), format!("flow `{name}` has no steps"));
            }
            let check_script = |r: &mut Self, script: &str, where_: Option<(u32, u32)>| {
                let script = script.trim_end_matches(".rhai");
                if script.is_empty() || script.contains("..") || script.starts_with('/') {
                    r.problem(where_, format!("`{script}` is not a script name: use a name from `scripts/`, like `checkout`"));
                } else if !scripts_dir.join(format!("{script}.rhai")).is_file() {
                    r.problem(
                        where_,
                        format!(
                            "script `{script}` not found: there is no `{}`",
                            scripts_dir.join(format!("{script}.rhai")).display()
                        ),
                    );
                }
                script.to_owned()
            };
            let monitor = flow
                .value
                .monitor
                .as_ref()
                .map(|m| check_script(&mut self, &m.value, at(m)));
            let steps = flow
                .value
                .steps
                .iter()
                .map(|s| Step {
                    script: check_script(&mut self, &s.value.script, at(s)),
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
                }),
            );
        }

        let mut seen = BTreeMap::<String, Option<(u32, u32)>>::new();
        let mut targets = Vec::new();
        for t in &raw.targets {
            let id = t.id.value.0.clone();
            if id.trim().is_empty() {
                self.problem(at(&t.id), "target id is empty".into());
            } else if id.chars().any(char::is_control) {
                self.problem(
                    at(&t.id),
                    format!("target id {id:?} holds a control character (a line break?): an id is one line of text"),
                );
            }
            if let Some(first) = seen.get(&id) {
                let first = first
                    .map(|(l, _)| format!(" (first used on line {l})"))
                    .unwrap_or_default();
                self.problem(
                    at(&t.id),
                    format!("duplicate target id `{id}`{first}: ids must be unique"),
                );
            } else {
                seen.insert(id.clone(), at(&t.id));
            }
            let flow = match &t.flow {
                Some(f) => {
                    if !flows.contains_key(&f.value) {
                        let known: Vec<_> = flows.keys().map(|k| format!("`{k}`")).collect();
                        self.problem(
                            at(f),
                            format!(
                                "target `{id}` uses flow `{}`, which is not defined (defined: {})",
                                f.value,
                                known.join(", ")
                            ),
                        );
                    }
                    f.value.clone()
                }
                None if flows.len() == 1 => flows.keys().next().cloned().unwrap_or_default(),
                None => {
                    self.problem(
                        at(&t.id),
                        format!("target `{id}` does not say which flow it runs: add `flow: NAME` (there are {} flows)", flows.len()),
                    );
                    String::new()
                }
            };
            let url = self.expand(&t.url);
            if url.starts_with('/') && raw.demo_shop.is_none() {
                self.problem(
                    at(&t.url),
                    format!("target `{id}` has a relative url `{url}`, which only works with `demo_shop:` enabled"),
                );
            } else if !url.starts_with('/')
                && !url.starts_with("http://")
                && !url.starts_with("https://")
            {
                self.problem(at(&t.url), format!("target `{id}` url `{url}` must start with http://, https:// or / (on the demo shop)"));
            } else if !url.starts_with('/')
                && let Err(e) = reqwest::Url::parse(&url)
            {
                self.problem(
                    at(&t.url),
                    format!("target `{id}` url `{url}` is not a valid URL: {e}"),
                );
            }
            let mut params = t.params.clone();
            for v in params.values_mut() {
                self.expand_json(v, at(&t.url));
            }
            targets.push(Arc::new(Target {
                id: TargetId::new(&id),
                url,
                flow,
                params,
            }));
        }
        if targets.is_empty() {
            self.problem(None, "no targets: add at least one under `targets:`".into());
        }

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
            targets,
            flows,
        })
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
        assert!(
            parse_interval("35s..25s")
                .unwrap_err()
                .starts_with("empty interval")
        );
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
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
