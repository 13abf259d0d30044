//! Opening a big outbox (issue 24): 400,000 pending lines (about 220 MB,
//! as a long outage under a larger bound leaves) with `max_messages:
//! 1000`. It must be one streaming pass in bounded memory: the figures are
//! the open's time next to the peer in the same run (reading the same
//! file line by line and doing nothing with it, the floor for any
//! streaming pass), their ratio, and the process's peak RSS before and
//! after. `cargo bench --bench outbox`; `BATON_BENCH_LINES` changes the
//! size.

use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

use baton::notify::event::{Event, Kind};
use baton::notify::outbox::{DIR, FILE, Outbox};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let lines: u64 = std::env::var("BATON_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400_000);
    let dir = tempfile::tempdir().unwrap();
    // One real line from the outbox itself, as the template for the rest.
    {
        let (o, _) = Outbox::open(dir.path(), 10).unwrap();
        let body = "x".repeat(400);
        o.add(
            Event::new(Kind::Script, "1001: restocked", body),
            vec!["phone".into(), "team".into()],
        )
        .unwrap();
    }
    let path = dir.path().join(DIR).join(FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut it = text.lines();
    let head = it.next().unwrap().to_owned();
    let add = it.next().unwrap().to_owned();
    let id = serde_json::from_str::<serde_json::Value>(&add).unwrap()["event"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(f, "{head}").unwrap();
        for seq in 1..=lines {
            let line = add
                .replacen("\"seq\":1,", &format!("\"seq\":{seq},"), 1)
                .replacen(&id, &format!("{id}-{seq}"), 1);
            writeln!(f, "{line}").unwrap();
        }
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    let rss_before = peak_rss_mb();

    let t = Instant::now();
    let mut n = 0u64;
    for l in BufReader::new(std::fs::File::open(&path).unwrap()).lines() {
        n += u64::from(!l.unwrap().is_empty());
    }
    let scan = t.elapsed();

    let t = Instant::now();
    let (o, opened) = Outbox::open(dir.path(), 1000).unwrap();
    let open = t.elapsed();
    let rss_after = peak_rss_mb();
    assert_eq!(opened.pending, 1000);
    assert_eq!(o.pending_for("phone"), 1000);
    let after = std::fs::metadata(&path).unwrap().len();

    println!(
        "outbox: {lines} pending lines, {:.0} MB, max_messages 1000",
        bytes as f64 / 1e6
    );
    println!(
        "  peer (read every line, {n}):  {:>8.0} ms",
        scan.as_secs_f64() * 1e3
    );
    println!(
        "  Outbox::open:                  {:>8.0} ms",
        open.as_secs_f64() * 1e3
    );
    println!(
        "  ratio open / peer:             {:>8.2}",
        open.as_secs_f64() / scan.as_secs_f64()
    );
    println!("  peak RSS before / after open:  {rss_before:.0} MB / {rss_after:.0} MB");
    println!(
        "  file after the compaction:     {:.2} MB",
        after as f64 / 1e6
    );
}
