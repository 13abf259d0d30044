//! The price and stock history (issue 26): recording one observation must
//! cost the same whatever the history's length, since the store keeps a
//! ring per target and rewrites its file only at twice what it keeps.
//! The figures: the mean time of one `record` over the last 2,000 of
//! 2,000, 20,000 and 200,000 observations (one target, on disk), their
//! ratio to the first (flat means near 1), and the file's size at the
//! end next to what a plain append-only log of everything would be.
//! `cargo bench --bench observations`.

use std::time::{Duration, Instant, SystemTime};

use baton::observations::{By, FILE, Observation, Observations};
use baton::offer::Availability;

fn observation(i: u64) -> Observation {
    Observation {
        target: "1001".into(),
        at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + i),
        price: Some(40.0 + (i % 100) as f64 / 10.0),
        currency: Some("EUR".into()),
        availability: if i.is_multiple_of(7) {
            Availability::OutOfStock
        } else {
            Availability::InStock
        },
        by: By::Monitor,
    }
}

/// Records `total` observations; returns the mean time of the last
/// `tail` and the file's size.
fn run(total: u64, tail: u64) -> (Duration, u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = Observations::open(dir.path()).unwrap();
    for i in 0..total - tail {
        store.record(&observation(i));
    }
    let start = Instant::now();
    for i in total - tail..total {
        store.record(&observation(i));
    }
    let took = start.elapsed() / u32::try_from(tail).unwrap();
    let size = std::fs::metadata(dir.path().join(FILE)).unwrap().len();
    (took, size)
}

fn main() {
    const TAIL: u64 = 2_000;
    let line = serde_json::to_vec(&observation(0)).unwrap().len() as u64 + 1;
    let mut first = None;
    println!(
        "observations  mean record (last {TAIL})  ratio to the first  file size  (append-only would be)"
    );
    for total in [2_000u64, 20_000, 200_000] {
        let (took, size) = run(total, TAIL);
        let base = *first.get_or_insert(took);
        println!(
            "{total:>12}  {:>22.1} µs  {:>18.2}  {:>9} KB  ({} KB)",
            took.as_secs_f64() * 1e6,
            took.as_secs_f64() / base.as_secs_f64(),
            size / 1024,
            total * line / 1024
        );
    }
}
