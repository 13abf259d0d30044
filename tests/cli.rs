//! The `baton` binary as a user drives it: a temporary directory, a written
//! flows.yaml and scripts, and assertions on stdout, stderr and the exit
//! code. One test per command and per class of bad input; every bad input
//! must give a located, specific message and never a panic or a backtrace.

use crate::common;

use std::process::Command;

use common::live::{copy_dir, repo};

/// A temporary project and a way to run `baton` in it.
struct Case {
    dir: tempfile::TempDir,
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Fails if the process panicked or printed a backtrace.
    #[track_caller]
    fn calm(&self) -> &Self {
        for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(
                !self.stderr.contains(bad),
                "`{bad}` in stderr:\n{}",
                self.stderr
            );
        }
        self
    }
}

const STEP: &str = "log(\"hi\");";

impl Case {
    fn new() -> Case {
        Case {
            dir: tempfile::Builder::new()
                .prefix("baton-cli-")
                .tempdir()
                .unwrap(),
        }
    }

    /// The shipped flows.yaml and scripts, with the demo shop and dashboard
    /// on free ports.
    fn shipped() -> Case {
        let c = Case::new();
        copy_dir(&repo().join("scripts"), &c.dir.path().join("scripts"));
        let yaml = std::fs::read_to_string(repo().join("flows.yaml"))
            .unwrap()
            .replace("port: 8099", "port: 0")
            .replace("dashboard: 127.0.0.1:7878", "dashboard: off");
        c.file("flows.yaml", &yaml)
    }

    fn file(self, path: &str, body: &str) -> Case {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        self
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.dir.path().join(p)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

// Malformed configs -----------------------------------------------------------

/// A valid config with `line` spliced in at the top (or replacing the
/// `targets:`/`flows:` part when `whole` is set).
fn cfg(top: &str) -> String {
    format!(
        "{top}targets:\n  - {{ id: \"1\", url: \"http://127.0.0.1:1/p/1\" }}\nflows:\n  f:\n    steps: [step]\n"
    )
}

/// Each case: a flows.yaml, and what `baton check` must say about it
/// (after `error: invalid configuration:` and the file name).
const BAD_CONFIGS: &[(&str, &str, &str)] = &[
    (
        "unknown top-level key",
        "tets_mode: true\n",
        "flows.yaml:1:1: unknown field `tets_mode`, expected one of",
    ),
    (
        "unknown key in a section",
        "cycle:\n  intervall: 30s\n",
        "flows.yaml:2:3: unknown field `intervall`, expected one of interval, wait_for_active",
    ),
    (
        "wrong type",
        "test_mode: \"yes\"\n",
        "flows.yaml:1:12: invalid boolean `yes`: write true or false",
    ),
    (
        "bad duration",
        "cycle:\n  wait_for_active: soon\n",
        "flows.yaml:2:20: invalid duration `soon`: write a number with a unit, like `250ms`, `30s` or `2m`",
    ),
    (
        "empty range",
        "cycle:\n  interval: 35s..25s\n",
        "flows.yaml:2:13: empty interval `35s..25s`: the first bound must not be above the second, like `25s..35s`",
    ),
    (
        "zero interval",
        "cycle:\n  interval: 0s\n",
        "flows.yaml:2:13: interval `0s` is zero",
    ),
    (
        "a duration past any deadline",
        "cycle:\n  wait_for_active: 300000000000y\n",
        "flows.yaml:2:20: duration `300000000000y` is out of range: use 100ms to 1day",
    ),
    (
        "a zero timeout",
        "cycle:\n  run_timeout: 0s\n",
        "flows.yaml:2:16: duration `0s` is out of range: use 100ms to 1day",
    ),
    (
        "a nanosecond interval",
        "cycle:\n  interval: 1ns\n",
        "flows.yaml:2:13: duration `1ns` is out of range: use 100ms to 1day",
    ),
    (
        "a commit timeout too short to place an order",
        "cycle:\n  commit_timeout: 500ms\n",
        "flows.yaml:2:19: duration `500ms` is out of range: use 1s to 1day",
    ),
    (
        "a dashboard host with a scheme",
        "dashboard: { addr: 127.0.0.1:7878, hosts: [\"http://baton.lan\"] }\n",
        "flows.yaml:1:12: `dashboard.hosts` takes host names like `baton.example.lan`, without scheme, port or path, not `http://baton.lan`",
    ),
    (
        "a quoted boolean",
        "test_mode: \"true\"\n",
        "flows.yaml:1:12: invalid boolean `\"true\"`: a quoted string; write true or false without quotes",
    ),
    (
        "a word for a number",
        "cycle:\n  max_concurrent_runs: x\n",
        "flows.yaml:2:24: invalid number: expected a whole number here",
    ),
    (
        "an empty state_dir",
        "state_dir: \"\"\n",
        "flows.yaml:1:12: `state_dir` is empty: name a directory, like `.baton`",
    ),
    (
        "zero concurrency",
        "cycle:\n  max_concurrent_runs: 0\n",
        "flows.yaml:2:24: invalid max_concurrent_runs `0`: it must be at least 1",
    ),
    (
        "port out of range",
        "demo_shop: { port: 70000 }\n",
        "flows.yaml:1:20: invalid port `70000`: use 1 to 65535, or 0 for any free port",
    ),
    (
        "dashboard address without an IP",
        "dashboard: localhost:7878\n",
        "flows.yaml:1:12: invalid address `localhost:7878`: expected HOST:PORT with an IP address, like `127.0.0.1:7878`",
    ),
    (
        "dashboard on a public address without a token",
        "dashboard: 0.0.0.0:7878\n",
        "the dashboard binds `0.0.0.0:7878`, which is not loopback: set `dashboard.token`",
    ),
    (
        "browser flag with dashes",
        "browser:\n  args: [\"--disable-gpu\"]\n",
        "flows.yaml:2:10: browser argument `--disable-gpu` starts with `-`: write it as a bare key, like `disable-gpu`",
    ),
    (
        "browser connect URL",
        "browser:\n  connect: 127.0.0.1:9222\n",
        "flows.yaml:2:12: `browser.connect` must be a DevTools URL",
    ),
    (
        "secret without its variable",
        "secrets:\n  cvv: BATON_TEST_UNSET_VAR\n",
        "flows.yaml:2:8: secret `cvv` reads environment variable `BATON_TEST_UNSET_VAR`, which is not set",
    ),
    (
        "secret with an unknown key",
        "secrets:\n  cvv: { env: X, defualt: \"1\" }\n",
        "flows.yaml:2:8: unknown field `defualt`, expected `env` or `default`",
    ),
    (
        "unknown kind to block",
        "browser:\n  block: [image, video]\n",
        "flows.yaml:2:18: browser.block: unknown kind `video`; give any of `image`, `font`, `media`",
    ),
    (
        "too many spare pages",
        "browser:\n  spare_pages: 1000\n",
        "flows.yaml:2:16: browser.spare_pages is 1000; at most 64 (each is an open tab)",
    ),
    (
        "traces with no room",
        "traces:\n  max_mb: 0\n",
        "flows.yaml:2:11: traces.max_mb is 0; give 1 to 100000 (use `keep: 0` to record no traces)",
    ),
    (
        "too many traces",
        "traces: { keep: 1000000 }\n",
        "flows.yaml:1:17: traces.keep is 1000000; at most 100000 traces can be kept",
    ),
    (
        "traces with a negative count",
        "traces: { keep: -1 }\n",
        "flows.yaml:1:17: ",
    ),
    (
        "pool endpoint that is not a DevTools URL",
        "browser:\n  pool:\n    - ws://127.0.0.1:9222/devtools/browser/x\n    - 127.0.0.1:9223\n",
        "flows.yaml:4:7: browser.pool: `127.0.0.1:9223` is not a DevTools URL",
    ),
    (
        "pool endpoint with no room",
        "browser:\n  pool:\n    - { url: \"http://127.0.0.1:9222\", max_sessions: 0 }\n",
        "flows.yaml:3:7: browser.pool: max_sessions is 0; give 1 to 1000",
    ),
    (
        "pool and connect together",
        "browser:\n  connect: http://127.0.0.1:9222\n  pool: [\"http://127.0.0.1:9223\"]\n",
        "flows.yaml:2:12: give either `browser.connect` (one browser) or `browser.pool` (several), not both",
    ),
    (
        "pool endpoint listed twice",
        "browser:\n  pool: [\"http://127.0.0.1:9222\", \"http://127.0.0.1:9222\"]\n",
        "browser.pool: `http://127.0.0.1:9222` is listed twice",
    ),
    (
        "cluster without redis",
        "cluster: { lease: 10s }\n",
        "flows.yaml:1:12: missing field `redis`",
    ),
    (
        "cluster redis that is not a URL",
        "cluster: { redis: \"127.0.0.1:6379\" }\n",
        "flows.yaml:1:19: cluster.redis must be a URL like `redis://127.0.0.1:6379`, not `127.0.0.1:6379`",
    ),
    (
        "cluster redis password stays out of the error",
        "cluster: { redis: \"http://:hunter2@db:6379\" }\n",
        "not `http://***@db:6379/`",
    ),
    (
        "pool credentials stay out of the error",
        "browser:\n  pool:\n    - { url: \"ws://u:hunter2@h:9222/x?token=t0k\" }\n    - { url: \"ws://u:hunter2@h:9222/x?token=t0k\" }\n",
        "browser.pool: `ws://***@h:9222/x?…` is listed twice",
    ),
    (
        "a YAML tag baton does not know",
        "test_mode: !custom true\n",
        "flows.yaml:1:20: unsupported tag `!custom`",
    ),
    (
        "cluster lease too short",
        "cluster: { redis: \"redis://127.0.0.1:6379\", lease: 200ms }\n",
        "flows.yaml:1:",
    ),
    (
        "cluster lease too long",
        "cluster: { redis: \"redis://127.0.0.1:6379\", lease: 1h }\n",
        "cluster.lease is 1h; at most 10m (a lost lease frees its target only after it)",
    ),
    (
        "cluster instance with a bar",
        "cluster: { redis: \"redis://127.0.0.1:6379\", instance: \"a|b\" }\n",
        "cluster.instance `a|b`: use 1 to 100 letters, digits and `._-:/`",
    ),
    (
        "duplicate key",
        "test_mode: true\ntest_mode: false\n",
        "flows.yaml:2:1: duplicate mapping key `test_mode` is not allowed here",
    ),
    ("YAML syntax", "cycle: { interval: 30s\n", "flows.yaml:"),
    (
        "scripts dir missing",
        "scripts_dir: nowhere\n",
        "flows.yaml:1:14: scripts directory",
    ),
    (
        "account without a check",
        "accounts:\n  ada: { login: step }\n",
        "flows.yaml:2:",
    ),
    (
        "account naming an undeclared secret",
        "accounts:\n  ada:\n    password: pw\n    check: { url: \"http://h/account\", selector: \"#me\" }\n",
        "flows.yaml:3:15: account `ada`'s password names secret `pw`, which is not declared under `secrets:`",
    ),
    (
        "account check of neither kind",
        "accounts:\n  ada:\n    check: { url: \"http://h/account\" }\n",
        "flows.yaml:3:12: account `ada`'s check is `{ url: PAGE, selector: SELECTOR, logged_out: SELECTOR }`",
    ),
    (
        "account check by script with a logged_out sign",
        "accounts:\n  ada:\n    check: { script: step, logged_out: \"form\" }\n",
        "flows.yaml:3:12: account `ada`'s check is `{ url: PAGE, selector: SELECTOR, logged_out: SELECTOR }`",
    ),
    (
        "account check with an empty logged_out sign",
        "accounts:\n  ada:\n    check: { url: \"http://h/account\", selector: \"#me\", logged_out: \" \" }\n",
        "flows.yaml:3:12: account `ada`'s check has an empty `logged_out` selector",
    ),
    (
        "account login script missing",
        "accounts:\n  ada:\n    check: { script: step }\n    login: nologin\n",
        "flows.yaml:4:12: script `nologin` not found",
    ),
    (
        "account name that cannot be a file name",
        "accounts:\n  \"../a\":\n    check: { script: step }\n",
        "account name `../a` must be letters, digits, `-` and `_`",
    ),
    (
        "notify: a channel type that does not exist",
        "notify:\n  channels:\n    x: { type: telegram, url: \"http://h\" }\n",
        "notify channel `x` has type `telegram`: use webhook, discord, slack, ntfy, apprise or email",
    ),
    (
        "notify: a rule to a channel that does not exist",
        "notify:\n  channels:\n    ops: { type: slack, url: \"http://h/x\" }\n  rules:\n    - { events: order_placed, channels: [ops, phone] }\n",
        "a notify rule sends to channel `phone`, which is not under `notify.channels` (defined: `ops`)",
    ),
    (
        "notify: an event that does not exist",
        "notify:\n  channels:\n    ops: { type: slack, url: \"http://h/x\" }\n  rules:\n    - { events: [order_placd], channels: ops }\n",
        "unknown event `order_placd` in a notify rule: use order_placed,",
    ),
    (
        "notify: a template placeholder that does not exist",
        "notify:\n  channels:\n    hook: { type: webhook, url: \"http://h/x\", template: '{\"t\": \"{{titel}}\"}' }\n",
        "notify channel `hook`'s template: unknown placeholder `{{titel}}`",
    ),
    (
        "notify: a credential naming an undeclared secret",
        "notify:\n  channels:\n    ops: { type: discord, url: { secret: discord_hook } }\n",
        "`{ secret: discord_hook }` names a secret that is not declared under `secrets:`",
    ),
    (
        "notify: email in clear to another machine",
        "notify:\n  channels:\n    mail: { type: email, host: smtp.example.com, tls: none, from: a@example.com, to: b@example.com }\n",
        "`tls: none` sends the password and messages in clear, so it is only allowed to a relay on this machine",
    ),
    (
        "notify: a webhook that is not a URL",
        "notify:\n  channels:\n    hook: { type: webhook, url: \"ftp://h/x\" }\n",
        "notify channel `hook`'s `url` must be an http:// or https:// URL",
    ),
    (
        "notify: email without a recipient",
        "notify:\n  channels:\n    mail: { type: email, host: smtp.example.com, from: a@example.com }\n",
        "notify channel `mail` (email) needs `to`",
    ),
];

/// Cases that replace the whole file.
const BAD_WHOLE: &[(&str, &str, &str)] = &[
    (
        "empty file",
        "",
        "flows.yaml:1:1: the file ends before any settings: flows.yaml needs at least `targets:` and `flows:`",
    ),
    (
        "a target id with a line break",
        "targets:\n  - { id: \"10\\n01\", url: \"http://127.0.0.1:1/p/1\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:11: target id \"10\\n01\" holds a control character (a line break?)",
    ),
    (
        "an unparsable url",
        "targets:\n  - { id: \"1\", url: \"http://[::1\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:21: target `1` url `http://[::1` is not a valid URL: invalid IPv6 address",
    ),
    (
        "no targets",
        "flows:\n  f:\n    steps: [step]\n",
        "flows.yaml:1:1: missing field `targets`",
    ),
    (
        "a flow named with no flows section",
        "targets:\n  - { id: \"1\", url: \"http://127.0.0.1:1/p/1\", flow: buy }\n",
        "flows.yaml:2:53: target `1` uses flow `buy`, which is not defined (there is no `flows:` section)",
    ),
    (
        "a target on an undefined account",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\", account: bob }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:46: target `1` uses account `bob`, which is not defined under `accounts:`",
    ),
    (
        "duplicate target ids",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\n  - { id: 1, url: \"http://h/p/2\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:3:11: duplicate target id `1` (first used on line 2): ids must be unique",
    ),
    (
        "undefined flow",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\", flow: buy }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:43: target `1` uses flow `buy`, which is not defined (defined: `f`)",
    ),
    (
        "target without a flow among several",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: [step]\n  g:\n    steps: [step]\n",
        "flows.yaml:2:11: target `1` does not say which flow it runs: add `flow: NAME` (there are 2 flows)",
    ),
    (
        "missing step script",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: [step, chekout]\n",
        "flows.yaml:5:19: script `chekout` not found: there is no",
    ),
    (
        "missing monitor script",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    monitor: stok\n    steps: [step]\n",
        "flows.yaml:5:14: script `stok` not found",
    ),
    (
        "step long form with a typo",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps:\n      - { script: step, alwayz: true }\n",
        "flows.yaml:6:9: unknown field `alwayz`, expected `script` or `always`",
    ),
    (
        "flow without steps",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: []\n",
        "flows.yaml:5:5: flow `f` has no steps",
    ),
    (
        "unknown outcome action",
        "targets:\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: [step]\n    outcomes: { out_of_stock: maybe }\n",
        "flows.yaml:6:31: unknown variant `maybe`, expected one of retry, done, fail",
    ),
    (
        "unset variable in a URL",
        "targets:\n  - { id: \"1\", url: \"${BATON_TEST_UNSET_HOST}/p/1\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:21: environment variable `BATON_TEST_UNSET_HOST` is not set (referenced as `${BATON_TEST_UNSET_HOST}`)",
    ),
    (
        "relative URL without the demo shop",
        "targets:\n  - { id: \"1\", url: /p/1 }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:21: target `1` has a relative url `/p/1`, which only works with `demo_shop:` enabled",
    ),
    (
        "URL with another scheme",
        "targets:\n  - { id: \"1\", url: \"ftp://h/p/1\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:21: target `1` url `ftp://h/p/1` must start with http://, https:// or /",
    ),
    (
        "empty target id",
        "targets:\n  - { id: \"\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: [step]\n",
        "flows.yaml:2:11: target id is empty",
    ),
];

#[test]
fn malformed_configs_get_located_specific_errors() {
    let mut failures = Vec::new();
    let cases = BAD_CONFIGS
        .iter()
        .map(|(n, top, want)| (*n, cfg(top), *want))
        .chain(BAD_WHOLE.iter().map(|(n, y, w)| (*n, y.to_string(), *w)));
    let mut count = 0;
    for (name, yaml, want) in cases {
        count += 1;
        let c = Case::new()
            .file("flows.yaml", &yaml)
            .file("scripts/step.rhai", STEP);
        let o = c.run(&["check"]);
        o.calm();
        if o.code != 2 || !o.stderr.contains(want) {
            failures.push(format!(
                "{name}: exit {}, stderr:\n{}\nwanted: {want}",
                o.code, o.stderr
            ));
        }
    }
    assert!(count >= 25, "only {count} malformed configs");
    assert!(
        failures.is_empty(),
        "{} of {count} cases wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn several_problems_are_reported_together_with_carets() {
    let c = Case::new()
        .file(
            "flows.yaml",
            "targets:\n  - { id: \"1\", url: /p/1 }\n  - { id: \"1\", url: \"http://h/p/1\" }\nflows:\n  f:\n    steps: [step, nope]\n",
        )
        .file("scripts/step.rhai", STEP);
    let o = c.run(&["check"]);
    o.calm();
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .contains("flows.yaml:2:21: target `1` has a relative url"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("flows.yaml:3:11: duplicate target id `1`"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("flows.yaml:6:19: script `nope` not found"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .contains("6 |     steps: [step, nope]\n  |                   ^"),
        "{}",
        o.stderr
    );
}

// Malformed scripts ---------------------------------------------------------------

/// (case, files to write, the located error `check` must print).
type ScriptCase = (
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const BAD_SCRIPTS: &[ScriptCase] = &[
    (
        "syntax error in a step",
        &[("scripts/step.rhai", "let x = ;\n")],
        "scripts/step.rhai:1:9: syntax error:",
    ),
    (
        "syntax error in a module",
        &[
            ("scripts/step.rhai", "import \"lib/h\" as h;\nh::f()\n"),
            ("scripts/lib/h.rhai", "fn f() {\n  let = 1;\n}\n"),
        ],
        "scripts/lib/h.rhai:2:7: syntax error:",
    ),
    (
        "import escaping the scripts directory",
        &[("scripts/step.rhai", "import \"../secrets\" as s;\n")],
        "scripts/step.rhai:1:1: import `../secrets` refused: `..` leaves the scripts directory",
    ),
    (
        "import of a missing module",
        &[("scripts/step.rhai", "\nimport \"lib/nope\" as n;\n")],
        "scripts/step.rhai:2:1: module `lib/nope` not found: there is no",
    ),
    (
        "unclosed string",
        &[("scripts/step.rhai", "log(\"hi);\n")],
        "scripts/step.rhai:1:5: syntax error:",
    ),
    (
        "an undeclared secret",
        &[(
            "scripts/step.rhai",
            "let n = 1;\nfill(\"#card\", secret(\"card_number\"));\n",
        )],
        "scripts/step.rhai:2:15: secret `card_number` is not declared in flows.yaml (declared: none)",
    ),
    (
        "an import cycle",
        &[
            ("scripts/step.rhai", "import \"lib/a\" as a;\n"),
            ("scripts/lib/a.rhai", "import \"lib/b\" as b;\n"),
            ("scripts/lib/b.rhai", "import \"lib/a\" as a;\n"),
        ],
        "import cycle:",
    ),
];

/// `check` compiles the `lib/` modules no script imports yet with their
/// imports, so a cycle between two of them is found before a script first
/// imports one (`run` starts: no flow uses them).
#[test]
fn check_finds_an_import_cycle_among_modules_nothing_imports() {
    let c = Case::new()
        .file("flows.yaml", &cfg(""))
        .file("scripts/step.rhai", "log(\"step\");\n")
        .file("scripts/lib/a.rhai", "import \"lib/b\" as b;\n")
        .file("scripts/lib/b.rhai", "import \"lib/a\" as a;\n");
    let o = c.run(&["check"]);
    o.calm();
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("scripts/lib/a.rhai") && o.stderr.contains("import cycle:"),
        "{}",
        o.stderr
    );
}

#[test]
fn malformed_scripts_get_located_errors_from_check_and_run() {
    for (name, files, want) in BAD_SCRIPTS {
        let mut c = Case::new().file("flows.yaml", &cfg(""));
        for (p, body) in *files {
            c = c.file(p, body);
        }
        let o = c.run(&["check"]);
        o.calm();
        assert_eq!(o.code, 2, "{name}: {}", o.stderr);
        let located = want.to_string();
        assert!(
            o.stderr.contains(&located),
            "{name}: wanted `{located}` in:\n{}",
            o.stderr
        );
        // `run` refuses to start on the same problem, before any browser.
        let o = c.run(&["run", "--cycles", "1"]);
        o.calm();
        assert_eq!(o.code, 2, "{name}: {}", o.stderr);
        assert!(o.stderr.contains(&located), "{name}: {}", o.stderr);
    }
}

// Commands --------------------------------------------------------------------------

/// `baton init DIR` writes the demo project an installed binary carries;
/// it passes `check` where it lands (outside the repository), and a second
/// init refuses to overwrite an edited file.
#[test]
fn init_writes_a_starter_project_that_checks_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let baton = |cwd: &std::path::Path, args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, out, err) = baton(dir.path(), &["init", "shop"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("next: cd shop && baton run"), "{out}");
    let shop = dir.path().join("shop");
    for f in [
        "flows.yaml",
        "scripts/checkout.rhai",
        "scripts/lib/shop.rhai",
    ] {
        assert_eq!(
            std::fs::read(shop.join(f)).unwrap(),
            std::fs::read(repo().join(f)).unwrap(),
            "{f}"
        );
    }
    let (code, out, err) = baton(&shop, &["check"]);
    assert_eq!(code, 0, "{out}{err}");

    let mine = format!(
        "{}# mine\n",
        std::fs::read_to_string(shop.join("flows.yaml")).unwrap()
    );
    std::fs::write(shop.join("flows.yaml"), &mine).unwrap();
    let (code, _, err) = baton(dir.path(), &["init", "shop"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("not overwriting") && err.contains("flows.yaml"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(shop.join("flows.yaml")).unwrap(),
        mine
    );
}

/// `dist/release.sh` (which the Dockerfile runs) packages a binary with
/// the README, the licenses, flows.yaml and scripts/, and says the
/// tarball's size and sha256; the unpacked binary starts a project.
#[test]
fn the_release_script_packages_a_working_tarball() {
    let out = tempfile::tempdir().unwrap();
    let o = Command::new(repo().join("dist/release.sh"))
        .env("BATON_BIN", env!("CARGO_BIN_EXE_baton"))
        .env("OUT", out.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let tarball = stdout.lines().next().unwrap().to_owned();
    let sum = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256:  "))
        .unwrap_or_else(|| panic!("no sha256 in {stdout}"));
    assert_eq!(sum.len(), 64, "{stdout}");
    let unpacked = tempfile::tempdir().unwrap();
    let t = Command::new("tar")
        .args(["-xzf", &tarball, "-C"])
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(t.success());
    let top = std::fs::read_dir(unpacked.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for f in [
        "baton",
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "flows.yaml",
        "scripts/checkout.rhai",
    ] {
        assert!(top.join(f).is_file(), "{f} is not in {tarball}");
    }
    let project = unpacked.path().join("project");
    let run = |args: &[&str], cwd: &std::path::Path| {
        Command::new(top.join("baton"))
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap()
    };
    assert!(run(&["init", "project"], unpacked.path()).status.success());
    let checked = run(&["check"], &project);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn check_passes_on_the_shipped_project() {
    let o = Case::shipped().run(&["check"]);
    o.calm();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout.trim(),
        "flows.yaml: ok (6 target(s), 1 flow(s), 1 account(s)); scripts: ok (5 script(s))"
    );
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let o = Case::new().run(&["check", "--config", "nope.yaml"]);
    o.calm();
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("nope.yaml: no such file") && o.stderr.contains("--config PATH"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_command_outside_a_project_says_to_use_config() {
    // `Case::new` is an empty directory: no flows.yaml.
    for args in [&["state"][..], &["check"], &["run"]] {
        let o = Case::new().run(args);
        o.calm();
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(
            o.stderr.contains("flows.yaml: no such file") && o.stderr.contains("--config PATH"),
            "{args:?}: {}",
            o.stderr
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let c = Case::new();
    let o = c.run(&["frobnicate"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        o.stderr
    );
    let o = c.run(&["run", "--cycles", "0"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    let o = c.run(&["state", "resolve", "1", "--as", "maybe"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
}

#[test]
fn help_is_complete_with_examples() {
    let c = Case::new();
    let o = c.run(&["--help"]);
    assert_eq!(o.code, 0);
    for cmd in ["run", "check", "dry-run", "demo-shop", "state", "defs"] {
        assert!(o.stdout.contains(cmd), "`{cmd}` missing from --help");
        let sub = c.run(&[cmd, "--help"]);
        assert_eq!(sub.code, 0, "{cmd} --help");
        assert!(
            sub.stdout.contains("Examples:"),
            "{cmd} --help has no examples:\n{}",
            sub.stdout
        );
    }
    assert!(
        o.stdout
            .contains("Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error")
    );
}

#[test]
fn dry_run_offline_fixtures_of_the_shipped_flows_pass() {
    let c = Case::shipped();
    let fixtures = repo().join("tests/fixtures");
    let cases = [
        ("product_page", "product_in_stock", "1001"),
        ("product_page", "product_out_of_stock", "1001"),
        ("product_page", "product_too_expensive", "1001"),
        ("product_page", "product_stale_cart", "1001"),
        ("checkout", "checkout", "1001"),
        ("checkout", "checkout_wrong_cart", "1001"),
        ("clear_cart", "clear_cart", "1001"),
        ("stock_check", "stock_check", "1001"),
        ("stock_check", "stock_check_sold_out", "1001"),
        // 1005 is on account ada: the script sees `account`.
        ("login", "login", "1005"),
        ("login", "login_wrong_password", "1005"),
    ];
    for (script, fixture, target) in cases {
        let f = fixtures.join(format!("{fixture}.yaml"));
        let o = c.run(&[
            "dry-run",
            &format!("scripts/{script}.rhai"),
            "--target",
            target,
            "--offline",
            f.to_str().unwrap(),
        ]);
        o.calm();
        assert_eq!(o.code, 0, "{fixture}:\n{}\n{}", o.stdout, o.stderr);
        assert!(
            o.stdout.contains("expectations met"),
            "{fixture}: {}",
            o.stdout
        );
        if script == "login" {
            assert!(
                o.stdout.contains("fill(\"#password\", \"[redacted]\")")
                    && !o.stdout.contains("lovelace"),
                "{}",
                o.stdout
            );
        }
    }
}

#[test]
fn dry_run_prints_each_call_masks_secrets_and_skips_commit() {
    let c = Case::shipped();
    let f = repo().join("tests/fixtures/checkout.yaml");
    let o = c.run(&[
        "dry-run",
        "checkout",
        "--target",
        "1001",
        "--offline",
        f.to_str().unwrap(),
    ]);
    o.calm();
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains("fill(\"#name\", \"Ada Lovelace\") ok"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .contains("fill(\"frame:#card-frame >> #card-number\", \"[redacted]\") ok"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("would commit: place order"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("4242424242424242") && !o.stderr.contains("4242424242424242"));
    // Nothing persisted: no state file, no history.
    assert!(!c.path(".baton/state.json").exists());
    assert!(!c.path(".baton/history.jsonl").exists());
}

#[test]
fn dry_run_failure_saves_screenshot_and_html_and_exits_1() {
    let c = Case::shipped().file(
        "broken.yaml",
        "pages:\n  /cart:\n    elements:\n      \"#cart-page\": {}\n",
    );
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "1001",
        "--offline",
        "broken.yaml",
    ]);
    o.calm();
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("FAILED"), "{}", o.stdout);
    let shot = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("screenshot: "))
        .expect("screenshot path");
    let html = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("page HTML:  "))
        .expect("html path");
    assert!(c.path(shot).is_file());
    assert!(c.path(html).is_file());
    assert!(
        o.stderr.contains("error: `product_page` failed"),
        "{}",
        o.stderr
    );
}

/// `baton login --remote` on an address other machines reach needs the
/// dashboard token; without one it is refused before anything starts.
#[test]
fn a_remote_login_off_loopback_needs_the_dashboard_token() {
    let c = Case::shipped();
    let o = c.run(&["login", "ada", "--remote", "--listen", "0.0.0.0:0"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("is not loopback: set `dashboard.token`"),
        "{}",
        o.stderr
    );
    let o = c.run(&["login", "ada", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.code, 2, "--listen without --remote: {}", o.stderr);
}

/// `baton login --import` of what is not a storageState (`[]`, a value of
/// the wrong type, an endless file) is a usage error that names the field
/// and never its value, and the saved login stays as it was.
#[test]
fn a_login_import_of_another_shape_is_refused_and_keeps_the_saved_login() {
    let c = Case::shipped();
    let good = r#"{"cookies": [{"name": "shop_auth", "value": "tok-1", "domain": "127.0.0.1"}], "origins": []}"#;
    let c = c
        .file("good.json", good)
        .file("list.json", "[]")
        .file(
            "number.json",
            r#"{"cookies": [{"name": "n", "value": 4242424242424242, "domain": "d"}], "origins": []}"#,
        )
        .file("no-origins.json", r#"{"cookies": []}"#);
    let o = c.run(&["login", "ada", "--import", "good.json"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let saved = c.path(".baton/accounts/ada.json");
    let before = std::fs::read(&saved).unwrap();
    for (file, want) in [
        (
            "list.json",
            "`(the document)` must be an object, not a list",
        ),
        (
            "number.json",
            "`cookies[0].value` must be a string, not a number",
        ),
        (
            "no-origins.json",
            "`origins` must be a list (`[]` for none), not missing",
        ),
        ("/dev/zero", "larger than 16 MB"),
    ] {
        let o = c.run(&["login", "ada", "--import", file]);
        assert_eq!(o.code, 2, "{file}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{file}: {}", o.stderr);
        assert!(!o.stderr.contains("4242"), "{file}: {}", o.stderr);
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            before,
            "{file} replaced the saved login"
        );
    }
}

/// Hardening: a browser profile belongs to one baton. `dry-run --profile`
/// pointed at a running baton's profile (and a second `run` on it) used to
/// kill that baton's Chromium mid-commit and then hang. The profile's lock
/// is held here as a running baton holds it: both commands refuse at once,
/// naming the holder, and start no browser.
#[test]
fn a_profile_in_use_by_another_baton_is_refused() {
    let c = Case::shipped();
    let profile = c.path("shared-profile");
    let held = baton::browser::chrome::ChromeBrowser::new(
        baton::browser::chrome::ChromeConfig::headless(&profile),
        None,
    );
    held.lock_profile().unwrap();
    let started = std::time::Instant::now();
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "1001",
        "--profile",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let want = format!(
        "browser profile `{}` is in use by another baton (pid {})",
        profile.display(),
        std::process::id()
    );
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    let yaml = std::fs::read_to_string(c.path("flows.yaml")).unwrap();
    let c = c.file(
        "flows.yaml",
        &yaml
            .replace(
                "profile_dir: .baton/profile",
                &format!("profile_dir: {}", profile.display()),
            )
            .replace("dashboard: 127.0.0.1:7878", "dashboard: off")
            .replace("port: 8099", "port: 0"),
    );
    let o = c.run(&["run", "--cycles", "1"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(o.stderr.contains(&want), "{}", o.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Released with its holder: the next baton gets it.
    drop(held);
    let next = baton::browser::chrome::ChromeBrowser::new(
        baton::browser::chrome::ChromeConfig::headless(&profile),
        None,
    );
    next.lock_profile().unwrap();
}

#[test]
fn dry_run_rejects_unknown_targets_and_foreign_scripts() {
    let c = Case::shipped().file("elsewhere/x.rhai", STEP);
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "9999",
        "--offline",
        "x.yaml",
    ]);
    o.calm();
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains(
            "unknown target `9999` (targets in flows.yaml: `1001`, `1002`, `1003`, `1004`, `1006`, `1005`)"
        ),
        "{}",
        o.stderr
    );
    let o = c.run(&["dry-run", "elsewhere/x.rhai", "--target", "1001"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("is not in the scripts directory"),
        "{}",
        o.stderr
    );
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "1001",
        "--offline",
        "missing.yaml",
    ]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("cannot read fixture `missing.yaml`"),
        "{}",
        o.stderr
    );
    let c = c.file("bad.yaml", "pages: {}\nexpekt: {}\n");
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "1001",
        "--offline",
        "bad.yaml",
    ]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("bad.yaml:2:1: unknown field `expekt`"),
        "{}",
        o.stderr
    );
}

#[test]
fn state_show_reset_and_resolve_without_a_running_baton() {
    let c = Case::shipped().file(
        ".baton/state.json",
        r#"{"format":1,"last_run_id":3,"revision":3,"targets":{
            "1001":{"status":"in_doubt","run_id":3,"last_outcome":"in_doubt","last_error":"passed its commit point"},
            "1002":{"status":"completed","run_id":2,"last_outcome":"completed","last_order":"A-10002"}}}"#,
    );
    let o = c.run(&["state"]);
    o.calm();
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert!(
        lines[0].starts_with("TARGET  STATUS     RUN  LAST OUTCOME  LAST ORDER"),
        "{}",
        o.stdout
    );
    // The document is in the older form that repeated the status as the
    // last outcome: it still reads, and the column shows only outcomes a
    // script named.
    assert!(
        lines[1].starts_with("1001    in_doubt   r3   -             -"),
        "{}",
        o.stdout
    );
    assert!(
        lines[2].starts_with("1002    completed  r2   -             A-10002"),
        "{}",
        o.stdout
    );
    assert!(lines[3].starts_with("1003    ready"), "{}", o.stdout);

    let o = c.run(&["state", "resolve", "1002", "--as", "ready"]);
    o.calm();
    assert_eq!(o.code, 2);
    assert!(
        o.stderr
            .contains("target `1002` is `completed`, not `in_doubt`: nothing to resolve"),
        "{}",
        o.stderr
    );

    let o = c.run(&["state", "resolve", "1001", "--as", "completed"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "target `1001` resolved");
    let o = c.run(&["state", "reset", "1002"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = c.run(&["state", "show"]);
    assert!(
        o.stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("1001    completed"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("1002    ready"),
        "{}",
        o.stdout
    );

    let o = c.run(&["state", "reset", "nope"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("unknown target `nope`"), "{}", o.stderr);
}

#[test]
fn defs_prints_the_script_api() {
    let o = Case::shipped().run(&["defs"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout
            .contains("fn click(selector: string | array) -> ();")
    );
    let c = Case::shipped();
    let o = c.run(&["defs", "--out", "api.d.rhai"]);
    assert_eq!(o.code, 0);
    assert!(
        std::fs::read_to_string(c.path("api.d.rhai"))
            .unwrap()
            .contains("fn commit(")
    );
}

#[test]
fn json_logs_are_one_object_per_line_and_rust_log_filters() {
    let c = Case::shipped();
    let f = repo().join("tests/fixtures/stock_check.yaml");
    let args = [
        "--log-format",
        "json",
        "dry-run",
        "stock_check",
        "--target",
        "1001",
        "--offline",
        f.to_str().unwrap(),
    ];
    let o = c.run_env(&args, &[("RUST_LOG", "debug")]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines at debug");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{l}"
        );
    }
    let o = c.run_env(&args, &[("RUST_LOG", "error")]);
    assert_eq!(
        o.stderr.trim(),
        "",
        "RUST_LOG=error let lower levels through"
    );
}

#[test]
fn demo_shop_serves_until_sigterm() {
    let c = Case::new();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["demo-shop", "--port", &port.to_string()])
        .current_dir(c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert_eq!(
        first.trim(),
        format!("demo shop on http://127.0.0.1:{port}")
    );
    // A plain HTTP/1.0 request: the shop answers the stock API.
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut conn,
        b"GET /api/stock/1001 HTTP/1.0\r\nHost: shop\r\n\r\n",
    )
    .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut conn, &mut text).unwrap();
    assert!(text.contains("\"in_stock\":true"), "{text}");
    common::live::signal(child.id(), rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    drop(reader);
}

/// Regression: with its stdout closed (`baton state | head -1`), baton
/// exited 101 from a `println!` panic. Output nobody reads is not a failure.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let c = Case::shipped();
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["state"])
        .current_dir(c.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // The table was the answer and it was lost: that is a failure.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
}

/// Hardening: `check > /dev/full` exited 0 with its answer lost, and an
/// error message into `2>/dev/full` panicked (exit 101). Output errors are
/// exit 1 or the command's own code, never a panic.
#[test]
fn a_full_stdout_or_stderr_is_an_exit_code_not_a_panic() {
    let c = Case::shipped();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["check"])
        .current_dir(c.dir.path())
        .stdout(full())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot write to standard output"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["check", "--config", "/nonexistent/flows.yaml"])
        .current_dir(c.dir.path())
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error keeps its code");
}

/// Issue 11: a whole flow dry-runs in order: the monitor without a page,
/// then every step in one page, `always` steps included, with `commit`
/// skipped; a monitor that says skip stops it there, as baton would.
#[test]
fn dry_run_of_a_whole_flow_runs_monitor_then_steps_in_order() {
    let c = Case::shipped();
    let flow_offline = |fixture: &std::path::Path| {
        let o = c.run(&[
            "dry-run",
            "--flow",
            "purchase",
            "--target",
            "1001",
            "--offline",
            fixture.to_str().unwrap(),
        ]);
        o.calm();
        o
    };
    let o = flow_offline(&repo().join("tests/fixtures/flow_purchase.yaml"));
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    let order = [
        "dry run of flow `purchase` for target `1001` (offline)",
        "== monitor `stock_check`",
        "monitor says: run",
        "== step `product_page`",
        "== step `checkout`",
        "would commit: place order",
        "== step `clear_cart` (always)",
        // The run's trace: every page call on the timeline, by step, with
        // what each wait matched, and typed text never shown.
        "trace: ",
        "product_page: navigate(",
        "checkout: fill(`frame:#card-frame >> #card-number`, a secret)",
        "checkout: wait_for(`#review-page`) -> `#review-page`",
        "clear_cart: exists(`#cart-empty`) -> true",
        "trace.json",
        "expectations met",
    ];
    let mut at = 0;
    for want in order {
        let found = o.stdout[at..].find(want);
        assert!(
            found.is_some(),
            "`{want}` missing or out of order:\n{}",
            o.stdout
        );
        at += found.unwrap() + want.len();
    }
    assert!(!o.stdout.contains("4242424242424242"), "{}", o.stdout);
    let saved: serde_json::Value = serde_json::from_slice(
        &std::fs::read(c.dir.path().join(".baton/dry-run/trace.json")).unwrap(),
    )
    .unwrap();
    let steps: Vec<&str> = saved["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["script"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["product_page", "checkout", "clear_cart"]);

    let sold_out = c.dir.path().join("sold_out.yaml");
    std::fs::write(
        &sold_out,
        "http:\n  /p/1001: '<p id=\"out-of-stock\">Out of stock</p>'\n",
    )
    .unwrap();
    let o = flow_offline(&sold_out);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("monitor says: skip"), "{}", o.stdout);
    assert!(
        o.stdout.contains("baton would not run the flow"),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("== step"), "{}", o.stdout);

    let o = c.run(&["dry-run", "--flow", "nope", "--target", "1001"]);
    o.calm();
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("unknown flow `nope`"), "{}", o.stderr);
}

/// Issue 11: `fail(...)` is a failure in the trace, not `ok`.
#[test]
fn fail_shows_as_a_failure_in_the_dry_run_trace() {
    let c = Case::shipped();
    std::fs::write(
        c.dir.path().join("scripts/product_page.rhai"),
        "fail(\"no such product\");\n",
    )
    .unwrap();
    let f = c.dir.path().join("empty.yaml");
    std::fs::write(&f, "pages: {}\n").unwrap();
    let o = c.run(&[
        "dry-run",
        "product_page",
        "--target",
        "1001",
        "--offline",
        f.to_str().unwrap(),
    ]);
    o.calm();
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stdout
            .contains("fail(\"no such product\") FAILED: no such product"),
        "{}",
        o.stdout
    );
}

/// Issue 11: dry-running a monitor against the live demo shop starts no
/// browser: it is one HTTP request.
#[test]
fn a_monitor_dry_run_starts_no_browser() {
    let c = Case::shipped();
    let o = c.run_env(
        &["dry-run", "stock_check", "--target", "1001"],
        &[("RUST_LOG", "info")],
    );
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("as a monitor"), "{}", o.stdout);
    assert!(o.stdout.contains("monitor says: run"), "{}", o.stdout);
    assert!(
        !o.stderr.contains("browser started"),
        "a monitor dry run launched Chromium:\n{}",
        o.stderr
    );
}

/// `baton notify test` sends to each channel and says how each went (the
/// channel's token never printed), exits 1 when one did not take it and 2
/// for a channel that does not exist; a dry run's `notify(..)` says where
/// it would go and sends nothing.
#[test]
fn notify_test_reports_each_channel_and_a_dry_run_sends_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ok = rt.block_on(common::receiver::Receiver::start());
    let gone = rt.block_on(common::receiver::Receiver::start());
    gone.answer(404, None);
    let yaml = format!(
        "notify:\n  channels:\n    ok: {{ type: slack, url: \"{}/ok\" }}\n    gone: {{ type: discord, url: \"{}/api/webhooks/1/SECRET-TOKEN\" }}\ntargets:\n  - {{ id: \"1\", url: \"http://127.0.0.1:1/p/1\" }}\nflows:\n  f:\n    steps: [step]\n",
        ok.url, gone.url
    );
    let c = Case::new()
        .file("flows.yaml", &yaml)
        .file("scripts/step.rhai", "notify(\"hello\");")
        .file("page.yaml", "pages:\n  /p/1:\n    elements: {}\n");

    let o = c.run(&["notify", "test"]);
    o.calm();
    assert_eq!(o.code, 1, "{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("ok: delivered"), "{}", o.stdout);
    assert!(
        o.stdout.contains("gone: FAILED") && o.stdout.contains("rejected: HTTP 404"),
        "{}",
        o.stdout
    );
    assert!(
        o.stderr
            .contains("1 channel(s) did not take the test message")
    );
    assert!(!format!("{}{}", o.stdout, o.stderr).contains("SECRET-TOKEN"));
    let test = &ok.seen()[0];
    assert!(
        test.json()["text"]
            .as_str()
            .unwrap()
            .contains("baton test message")
    );

    let o = c.run(&["notify", "test", "ok"]);
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert_eq!(ok.seen().len(), 2);
    let o = c.run(&["notify", "test", "nope"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("no channel `nope` under notify.channels"),
        "{}",
        o.stderr
    );

    let o = c.run(&["dry-run", "step", "--target", "1", "--offline", "page.yaml"]);
    o.calm();
    assert_eq!(o.code, 0, "{}\n{}", o.stdout, o.stderr);
    assert!(
        o.stdout
            .contains("not sent (dry run); would go to gone, ok"),
        "{}",
        o.stdout
    );
    assert_eq!(ok.seen().len(), 2, "a dry run sent a message");
}
