//! Watching files for changes: the one debounced directory watcher behind
//! script hot reload and `flows.yaml` reload.
//!
//! It watches a directory, not files (an editor that saves by writing a
//! temporary file and renaming it over the original would leave a watch on
//! the file itself dead), debounces (so a save in progress is not read
//! half-written), and ignores `Access` events (the reloader's own reads
//! would otherwise trigger it again).

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// How long a directory must be quiet after a change before it is read.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// A running watch; dropping it stops watching.
pub struct Watch {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Calls `on_change` (on the watcher's thread) whenever a path under `dir`
/// for which `relevant` holds changes.
pub fn watch(
    dir: &Path,
    recursive: bool,
    relevant: impl Fn(&Path) -> bool + Send + 'static,
    on_change: impl Fn(&[PathBuf]) + Send + 'static,
) -> Result<Watch, notify::Error> {
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |events: DebounceEventResult| match events {
                Ok(events) => {
                    let paths: Vec<PathBuf> = events
                        .iter()
                        .filter(|e| !matches!(e.kind, EventKind::Access(_)))
                        .flat_map(|e| e.paths.iter())
                        .filter(|p| relevant(p))
                        .cloned()
                        .collect();
                    if !paths.is_empty() {
                        on_change(&paths);
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "file watcher error");
                    }
                }
            },
        )?;
    let mode = if recursive {
        RecursiveMode::Recursive
    } else {
        RecursiveMode::NonRecursive
    };
    debouncer.watch(dir, mode)?;
    Ok(Watch {
        _debouncer: debouncer,
    })
}
