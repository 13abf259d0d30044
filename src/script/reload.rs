//! Hot reload: watch `scripts/` and recompile on save.
//!
//! The watcher is on the directory, recursively (an editor that saves by
//! writing a temporary file and renaming it over the original would leave a
//! watch on the file itself dead), and debounced, so the half-written file
//! of a save in progress is not compiled. `Access` events are ignored: the
//! reloader's own reads would otherwise trigger it again.

use std::path::Path;
use std::time::Duration;

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::ScriptHost;

/// The debounce window: how long the directory must be quiet after a change
/// before it is recompiled.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches a scripts directory for as long as it lives.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

/// Starts watching `host`'s directory; every relevant change reloads it.
/// `on_reload` is told about every reload that changed or failed something.
pub fn watch(
    host: ScriptHost,
    on_reload: impl Fn(&super::ReloadReport) + Send + 'static,
) -> Result<Watcher, notify::Error> {
    let dir = host.dir().to_owned();
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |events: DebounceEventResult| match events {
                Ok(events) => {
                    let relevant = events.iter().any(|e| {
                        !matches!(e.kind, EventKind::Access(_))
                            && e.paths.iter().any(|p| is_script_path(p))
                    });
                    if relevant {
                        let report = host.reload();
                        if !report.changed.is_empty() || !report.failed.is_empty() {
                            on_reload(&report);
                        }
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "script watcher error");
                    }
                }
            },
        )?;
    debouncer.watch(&dir, RecursiveMode::Recursive)?;
    tracing::info!(dir = %dir.display(), "watching scripts for changes");
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

/// A `.rhai` file, or a directory (a whole `lib/` renamed or removed).
fn is_script_path(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "rhai") || p.extension().is_none()
}
