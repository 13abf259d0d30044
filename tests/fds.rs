//! Hardening: running out of file descriptors must not stop purchasing.
//! Its own test binary (so its own process): it lowers the process's
//! open-files limit, which would disturb tests running beside it.

use std::fs::File;

use baton::state::{StateStore, Status};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// baton raises its soft open-files limit to the hard one at start; and
/// when descriptors are exhausted anyway (idle connections, a leak), the
/// state store still writes a run's result from its reserve.
#[test]
fn state_writes_survive_descriptor_exhaustion() {
    let limit = baton::app::raise_open_files_limit();
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    assert_eq!(
        current, maximum,
        "the soft limit was raised to the hard one"
    );
    assert_eq!(limit, current);

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = StateStore::open(dir.path()).unwrap();
    // Exhaust descriptors under a small limit.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(128),
            maximum,
        },
    )
    .unwrap();
    let mut hog = Vec::new();
    let exhausted = loop {
        match File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(24), "{exhausted}");
    store
        .update(&"a".into(), |t| t.status = Status::Completed)
        .expect("the reserve let the state write through");
    drop(hog);
    let doc = baton::state::read_doc(dir.path()).unwrap().unwrap();
    assert_eq!(doc.targets["a"].status, Status::Completed);
    // The reserve was taken back for the next time.
    store
        .update(&"a".into(), |t| t.status = Status::Ready)
        .unwrap();
}
