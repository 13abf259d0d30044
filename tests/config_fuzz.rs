//! The config loader never panics, whatever it is given: random text, and
//! random edits of a valid flows.yaml. Bounded (a few thousand cases) so it
//! runs in CI on every build; raise PROPTEST_CASES to search longer.

use std::path::Path;

use baton::config::Config;
use proptest::prelude::*;

const VALID: &str = r#"browser: { headless: true, timeout: 5s }
cycle:
  interval: 25s..35s
  wait_for_active: 30s
  max_concurrent_runs: 1
test_mode: false
dashboard: 127.0.0.1:7878
demo_shop: { port: 8099 }
secrets:
  cvv: { env: NOPE, default: "123" }
targets:
  - id: "1001"
    url: /p/1001
    max_price: 60.0
    params: { customer: &c { name: Ada } }
  - { id: 1002, url: "http://h/p/1002", params: { customer: *c } }
flows:
  purchase:
    monitor: step
    steps: [step, { script: step, always: true }]
    outcomes: { out_of_stock: retry }
"#;

fn scripts_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("scripts")).unwrap();
        std::fs::write(d.path().join("scripts/step.rhai"), "1").unwrap();
        d
    })
    .path()
}

fn parse(text: &str) {
    let path = scripts_dir().join("flows.yaml");
    match Config::parse(&path, text, &|_| None) {
        Ok(cfg) => within_bounds(&cfg),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("flows.yaml"),
                "an error that does not name the file: {msg}"
            );
        }
    }
}

/// What `run` relies on of any config `check` accepts: no duration past
/// what a deadline can hold, none zero, and at least one session.
fn within_bounds(cfg: &Config) {
    let c = &cfg.cycle;
    let max = baton::config::MAX_DURATION;
    for d in [
        c.interval.0,
        c.interval.1,
        c.wait_for_active,
        c.run_timeout,
        c.step_timeout,
        c.http_timeout,
        c.commit_timeout,
        cfg.browser.timeout,
    ] {
        assert!(!d.is_zero() && d <= max, "{d:?} passed the check: {c:?}");
        // A deadline this far ahead is representable.
        assert!(tokio::time::Instant::now().checked_add(d * 4).is_some());
    }
    assert!(c.interval.0 <= c.interval.1);
    assert!(c.max_concurrent_runs >= 1);
    for t in &cfg.targets {
        assert!(!t.id.as_str().chars().any(char::is_control), "{:?}", t.id);
    }
}

/// A value for `mutated_values_stay_in_bounds`: durations of every size,
/// numbers, booleans in disguise, odd strings.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0s".to_owned()),
        Just("1ns".to_owned()),
        Just("300000000000y".to_owned()),
        Just("25h".to_owned()),
        Just("99ms..1ms".to_owned()),
        Just("\"true\"".to_owned()),
        Just("yes".to_owned()),
        Just("-1".to_owned()),
        Just("1.5".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("\"\"".to_owned()),
        Just("\"a\\nb\"".to_owned()),
        Just("\"http://[::1\"".to_owned()),
        (
            0u64..100_000,
            prop_oneof![Just("ms"), Just("s"), Just("m"), Just("h"), Just("d")]
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        "[ -~]{0,10}".prop_map(|s| s),
    ]
}

/// Keys of VALID whose value `mutated_values_stay_in_bounds` replaces.
const KEYS: &[&str] = &[
    "interval: 25s..35s",
    "wait_for_active: 30s",
    "max_concurrent_runs: 1",
    "test_mode: false",
    "timeout: 5s",
    "port: 8099",
    "url: /p/1001",
    "id: \"1001\"",
];

/// Pieces of YAML and of baton's schema to splice in.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(": ".to_owned()),
        Just("\n  ".to_owned()),
        Just("- ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *c".to_owned()),
        Just("!!binary ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("${".to_owned()),
        Just("${X}".to_owned()),
        Just("..".to_owned()),
        Just("0s".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("-1".to_owned()),
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("\t".to_owned()),
        Just("#".to_owned()),
        Just("---\n".to_owned()),
        Just("%YAML 1.2\n".to_owned()),
        "[a-z_]{1,12}".prop_map(|s| s),
        "[ -~]{0,8}".prop_map(|s| s),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(s in "[ -~\n\t]{0,300}") {
        parse(&s);
    }

    #[test]
    fn edits_of_a_valid_config_never_panic(
        edits in proptest::collection::vec((0usize..VALID.len(), 0usize..12, token()), 1..6)
    ) {
        let mut text = VALID.to_owned();
        for (at, cut, insert) in edits {
            let at = at.min(text.len());
            let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let end = (at + cut).min(text.len());
            let end = (end..=text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
            text.replace_range(at..end, &insert);
        }
        parse(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    /// Hardening: values, not only syntax. Whatever replaces a value, a
    /// config that passes is within the bounds `run` relies on.
    #[test]
    fn mutated_values_stay_in_bounds(
        edits in proptest::collection::vec((0usize..KEYS.len(), value()), 1..4)
    ) {
        let mut text = VALID.to_owned();
        for (k, v) in edits {
            let key = KEYS[k];
            let name = key.split(':').next().unwrap();
            text = text.replacen(key, &format!("{name}: {v}"), 1);
        }
        parse(&text);
    }
}

#[test]
fn the_valid_base_parses() {
    let path = scripts_dir().join("flows.yaml");
    let cfg = Config::parse(&path, VALID, &|_| None).unwrap();
    assert_eq!(cfg.targets.len(), 2);
    assert_eq!(cfg.targets[1].id.as_str(), "1002");
    assert_eq!(cfg.targets[1].params["customer"]["name"], "Ada");
}
