//! Hot reload: recompile `scripts/` on save (through [`crate::watch`]).
//!
//! Any change to a `.rhai` file, or to a directory (a whole `lib/` renamed
//! or removed), recompiles the library; scripts whose source or imports
//! changed are swapped in with a new generation, failures keep the last
//! good version.

use std::path::Path;

use super::{ReloadReport, ScriptHost};
use crate::watch::Watch;

/// Starts watching `host`'s directory. `on_reload` is told about every
/// reload that changed or failed something.
pub fn watch(
    host: ScriptHost,
    on_reload: impl Fn(&ReloadReport) + Send + 'static,
) -> Result<Watch, notify::Error> {
    let dir = host.dir().to_owned();
    let w = crate::watch::watch(&dir, true, is_script_path, move |_| {
        let report = host.reload();
        if !report.changed.is_empty() || !report.failed.is_empty() {
            on_reload(&report);
        }
    })?;
    tracing::info!(dir = %dir.display(), "watching scripts for changes");
    Ok(w)
}

/// A `.rhai` file, or a directory.
fn is_script_path(p: &Path) -> bool {
    p.extension().is_none_or(|x| x == "rhai")
}
