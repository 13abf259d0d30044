//! `baton init [DIR]`: a starter project, so an installed `baton` runs the
//! demo anywhere (`baton init shop && cd shop && baton run`).
//!
//! The files are the repository's own `flows.yaml` and `scripts/`,
//! embedded at build time with `include_str!`, so the starter never drifts
//! from what the tests exercise; a test keeps the list equal to the
//! directory.

use std::path::Path;

use super::{Failure, answer};

/// Every file of the starter project: its path in the project, and its text.
pub(super) const FILES: &[(&str, &str)] = &[
    ("flows.yaml", include_str!("../../flows.yaml")),
    (
        "scripts/checkout.rhai",
        include_str!("../../scripts/checkout.rhai"),
    ),
    (
        "scripts/clear_cart.rhai",
        include_str!("../../scripts/clear_cart.rhai"),
    ),
    (
        "scripts/lib/shop.rhai",
        include_str!("../../scripts/lib/shop.rhai"),
    ),
    (
        "scripts/login.rhai",
        include_str!("../../scripts/login.rhai"),
    ),
    (
        "scripts/product_page.rhai",
        include_str!("../../scripts/product_page.rhai"),
    ),
    (
        "scripts/stock_check.rhai",
        include_str!("../../scripts/stock_check.rhai"),
    ),
];

/// Writes the starter project into `dir` (created if missing). Refuses,
/// writing nothing, when any of its files is already there.
pub(super) fn init(dir: &Path) -> Result<(), Failure> {
    let taken: Vec<String> = FILES
        .iter()
        .map(|(p, _)| dir.join(p))
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| format!("`{}`", p.display()))
        .collect();
    if !taken.is_empty() {
        return Err(Failure::usage(format!(
            "not overwriting {}; choose an empty directory (`baton init DIR`)",
            taken.join(", ")
        )));
    }
    for (path, text) in FILES {
        let to = dir.join(path);
        let err =
            |e: std::io::Error| Failure::runtime(format!("cannot write `{}`: {e}", to.display()));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        // `create_new`: a file that appeared since the check above is
        // still not overwritten.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&to)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(err)?;
    }
    let shown = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    answer(&format!(
        "wrote flows.yaml and {} scripts to {}\nnext: {shown}baton run   (buys from the embedded demo shop; Ctrl-C stops)\n",
        FILES.len() - 1,
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The embedded list is the repository's `scripts/` directory, file for
    /// file: a script added there and not here fails this test.
    #[test]
    fn the_starter_is_the_repositorys_scripts_and_flows() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut on_disk = vec!["flows.yaml".to_owned()];
        let mut stack = vec![root.join("scripts")];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rhai") {
                    let rel = p.strip_prefix(root).unwrap();
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk);
    }
}
