//! What an operator reads when `flows.yaml` is wrong: every problem with
//! its line and column and a caret under the spot, all of them at once.

use std::fmt;
use std::path::PathBuf;

/// Rewords the YAML parser's terser messages in the usual style.
pub(super) fn friendly(msg: &str) -> String {
    match msg {
        "invalid i64" | "invalid u64" => "invalid number: expected a whole number here".to_owned(),
        "unexpected end of file" => {
            "the file ends before any settings: flows.yaml needs at least `targets:` and `flows:`"
                .to_owned()
        }
        other => other.to_owned(),
    }
}

/// serde-saphyr appends " at line X, column Y" to some messages; baton puts
/// the location in front instead.
pub(super) fn strip_location_suffix(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

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
    pub(super) fn new(at: Option<(u32, u32)>, message: impl Into<String>, text: &str) -> Problem {
        let source_line =
            at.and_then(|(line, _)| text.lines().nth(line as usize - 1).map(str::to_owned));
        Problem {
            at,
            message: message.into(),
            source_line,
        }
    }

    pub(super) fn unlocated(message: impl Into<String>) -> Problem {
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
