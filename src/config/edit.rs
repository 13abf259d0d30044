//! Changes to flows.yaml's `targets:` made as edits of its text, so the
//! file keeps the user's comments, order, quoting and blank lines: the
//! dashboard's and the API's add, change and remove.
//!
//! Only the lines of the one target change. The block of `targets:` is
//! found by indentation (a top-level key at column 0 and its items, `- `
//! at one indentation); an item is its `- ` line and every line indented
//! deeper after it. The n-th item is the n-th target the config reads, so
//! a target is found by its resolved id even when its id comes from its
//! URL. A block in flow style (`targets: [..]`), and changes to one
//! target written in flow style (`- { id: a, ... }`), are refused with a
//! message, not rewritten; such a target can still be removed, and others
//! added beside it. Every edit is checked by
//! parsing the whole new text as flows.yaml before anything is written,
//! and written whole or not at all (a temporary file renamed over it).

use std::fmt::Write as _;
use std::path::Path;

/// Why an edit was not made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("flows.yaml has no `targets:` block at the top level")]
    NoTargets,
    #[error(
        "flows.yaml writes its targets in flow style (`[...]` or `{{...}}`); edit it by hand, or write the targets as a block list (`- id: ...`)"
    )]
    FlowStyle,
    #[error("no target `{0}` in flows.yaml")]
    Unknown(String),
    #[error("`{0}` cannot be set here: give one of {1}")]
    Key(String, &'static str),
}

/// The keys the API may set on a target, in the order they are written.
pub const KEYS: &[&str] = &[
    "id",
    "url",
    "flow",
    "account",
    "max_price",
    "currency",
    "paused",
    "interval",
    "windows",
    "drops",
    "drop_interval",
    "params",
];

const KEY_LIST: &str = "id, url, flow, account, max_price, currency, paused, interval, windows, drops, drop_interval, params";

/// A value as YAML text: JSON is YAML, and a JSON string is a quoted YAML
/// scalar, so nothing a user sends can turn into another key or a tag.
fn yaml(v: &serde_json::Value) -> String {
    v.to_string()
}

/// The `targets:` block: the line range of each item, and the items'
/// indentation.
struct Block {
    /// First line after `targets:` and the line after the block.
    items: Vec<(usize, usize)>,
    indent: usize,
    /// Where a new item goes (the line after the last item, before any
    /// trailing blank or comment lines).
    end: usize,
    header: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

fn block(lines: &[&str]) -> Result<Block, EditError> {
    let header = lines
        .iter()
        .position(|l| {
            l.strip_prefix("targets:").is_some_and(|rest| {
                rest.trim_start().is_empty()
                    || rest.trim_start().starts_with('#')
                    || rest.trim_start().starts_with('[')
            })
        })
        .ok_or(EditError::NoTargets)?;
    let rest = lines[header]["targets:".len()..].trim_start();
    if rest.starts_with('[') {
        return Err(EditError::FlowStyle);
    }
    // The block runs until the next line at column 0 that is not blank or
    // a comment.
    let mut stop = lines.len();
    for (i, l) in lines.iter().enumerate().skip(header + 1) {
        if !is_blank_or_comment(l) && indent_of(l) == 0 && !l.starts_with("- ") {
            stop = i;
            break;
        }
    }
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut indent = None;
    for (i, l) in lines.iter().enumerate().take(stop).skip(header + 1) {
        if is_blank_or_comment(l) {
            continue;
        }
        let n = indent_of(l);
        let is_item = l[n..].starts_with("- ") || &l[n..] == "-";
        match indent {
            None if is_item => indent = Some(n),
            None => return Err(EditError::FlowStyle),
            Some(_) => {}
        }
        if is_item && Some(n) == indent {
            if let Some(last) = items.last_mut() {
                last.1 = i;
            }
            items.push((i, stop));
        }
    }
    // An item ends before the blank and comment lines that precede the next
    // item (they belong to it) or the end of the block.
    for item in &mut items {
        while item.1 > item.0 + 1 && is_blank_or_comment(lines[item.1 - 1]) {
            item.1 -= 1;
        }
    }
    let end = items.last().map_or(header + 1, |i| i.1);
    Ok(Block {
        items,
        indent: indent.unwrap_or(2),
        end,
        header,
    })
}

fn join(lines: &[String], trailing_newline: bool) -> String {
    let mut s = lines.join("\n");
    if trailing_newline {
        s.push('\n');
    }
    s
}

/// `text` with a new target item appended to `targets:`; `fields` are
/// written in [`KEYS`] order.
pub fn add_target(
    text: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, EditError> {
    check_keys(fields)?;
    let lines: Vec<&str> = text.lines().collect();
    let b = block(&lines)?;
    let pad = " ".repeat(b.indent);
    let mut item = Vec::new();
    for key in KEYS {
        if let Some(v) = fields.get(*key) {
            let lead = if item.is_empty() {
                format!("{pad}- ")
            } else {
                format!("{pad}  ")
            };
            item.push(format!("{lead}{key}: {}", yaml(v)));
        }
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    // `targets: []` was refused as flow style; an empty block (`targets:`
    // alone) takes the item after its header.
    let at = if b.items.is_empty() {
        b.header + 1
    } else {
        b.end
    };
    for (k, l) in item.into_iter().enumerate() {
        out.insert(at + k, l);
    }
    Ok(join(&out, text.ends_with('\n') || text.is_empty()))
}

/// `text` without the `index`-th target item, and the comment lines
/// right above it.
pub fn remove_target(text: &str, index: usize, id: &str) -> Result<String, EditError> {
    let lines: Vec<&str> = text.lines().collect();
    let b = block(&lines)?;
    let &(mut start, end) = b
        .items
        .get(index)
        .ok_or_else(|| EditError::Unknown(id.to_owned()))?;
    // The comment lines right above the item (no blank line between)
    // describe it, and go with it.
    let floor = if index == 0 {
        b.header + 1
    } else {
        b.items[index - 1].1
    };
    while start > floor && lines[start - 1].trim_start().starts_with('#') {
        start -= 1;
    }
    let mut out: Vec<String> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if !(start..end).contains(&i) {
            out.push((*l).to_owned());
        }
    }
    Ok(join(&out, text.ends_with('\n')))
}

/// `text` with keys of the `index`-th target set (`Some`) or removed
/// (`None`). A key on one line is replaced in place; a key written over
/// several lines (a block list) is replaced whole; a new key goes after
/// the item's last line.
pub fn set_keys(
    text: &str,
    index: usize,
    id: &str,
    changes: &[(String, Option<serde_json::Value>)],
) -> Result<String, EditError> {
    for (k, _) in changes {
        if !KEYS.contains(&k.as_str()) || k == "id" {
            return Err(EditError::Key(k.clone(), KEY_LIST));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    let b = block(&lines)?;
    let &(start, end) = b
        .items
        .get(index)
        .ok_or_else(|| EditError::Unknown(id.to_owned()))?;
    let mut item: Vec<String> = lines[start..end].iter().map(|l| (*l).to_owned()).collect();
    if item[0].trim_start()[1..].trim_start().starts_with('{') {
        return Err(EditError::FlowStyle);
    }
    let key_indent = b.indent + 2;
    for (key, value) in changes {
        // Where the key stands: the item line (`- key:`) or a line at the
        // item's key indentation.
        let found = item.iter().position(|l| {
            let n = indent_of(l);
            let body = &l[n..];
            let body = if n == b.indent {
                body.strip_prefix("- ").unwrap_or(body)
            } else {
                body
            };
            (n == b.indent || n == key_indent) && body.starts_with(&format!("{key}:"))
        });
        match (found, value) {
            (Some(i), v) => {
                // The key's own lines: it and the deeper ones after it.
                let mut j = i + 1;
                while j < item.len()
                    && (indent_of(&item[j]) > key_indent || is_blank_or_comment(&item[j]))
                {
                    j += 1;
                }
                let first = item[i].clone();
                let n = indent_of(&first);
                let lead = if n == b.indent {
                    format!("{}- ", " ".repeat(n))
                } else {
                    " ".repeat(n)
                };
                match v {
                    Some(v) => {
                        let comment = trailing_comment(&first);
                        let mut line = format!("{lead}{key}: {}", yaml(v));
                        if let Some(c) = comment
                            && j == i + 1
                        {
                            let _ = write!(line, "  {c}");
                        }
                        item.splice(i..j, [line]);
                    }
                    None if n == b.indent => {
                        // The key on the item's own line: the next key
                        // takes the dash.
                        item.drain(i..j);
                        if let Some(next) = item.get_mut(i) {
                            let body = next.trim_start().to_owned();
                            *next = format!("{}- {body}", " ".repeat(b.indent));
                        }
                    }
                    None => {
                        item.drain(i..j);
                    }
                }
            }
            (None, Some(v)) => {
                let mut last = item.len();
                while last > 1 && is_blank_or_comment(&item[last - 1]) {
                    last -= 1;
                }
                item.insert(
                    last,
                    format!("{}{key}: {}", " ".repeat(key_indent), yaml(v)),
                );
            }
            (None, None) => {}
        }
    }
    let mut out: Vec<String> = lines[..start].iter().map(|l| (*l).to_owned()).collect();
    out.extend(item);
    out.extend(lines[end..].iter().map(|l| (*l).to_owned()));
    Ok(join(&out, text.ends_with('\n')))
}

/// A `# comment` after a value on its line, if any (outside quotes).
fn trailing_comment(line: &str) -> Option<&str> {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && i > 0 && bytes[i - 1] == b' ' => return Some(&line[i..]),
            _ => {}
        }
    }
    None
}

fn check_keys(fields: &serde_json::Map<String, serde_json::Value>) -> Result<(), EditError> {
    match fields.keys().find(|k| !KEYS.contains(&k.as_str())) {
        Some(k) => Err(EditError::Key(k.clone(), KEY_LIST)),
        None => Ok(()),
    }
}

/// Replaces `path` with `text`, whole or not at all, keeping its mode.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    if let Ok(meta) = std::fs::metadata(path) {
        std::fs::set_permissions(tmp.path(), meta.permissions())?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "\
# My shop's targets.
cycle:
  interval: 30s   # be polite

targets:
  # The lamp, before Christmas.
  - id: lamp
    url: https://shop.example/lamp   # the EU store
    max_price: 60
    windows:
      - mon-fri 09:00-18:00 Europe/London

  - url: https://shop.example/kettle
    max_price: none
flows:
  purchase:
    steps: [buy]
";

    #[test]
    fn adding_keeps_every_comment_and_line() {
        let mut f = serde_json::Map::new();
        f.insert("url".into(), json!("https://shop.example/mug"));
        f.insert("id".into(), json!("mug: \"x\" # not a comment"));
        f.insert("max_price".into(), json!(12.5));
        let out = add_target(FILE, &f).unwrap();
        for l in FILE.lines() {
            assert!(out.contains(l), "lost {l:?}");
        }
        assert!(
            out.contains(
                "    max_price: none\n  - id: \"mug: \\\"x\\\" # not a comment\"\n    url: \"https://shop.example/mug\"\n    max_price: 12.5\nflows:"
            ),
            "{out}"
        );
    }

    #[test]
    fn removing_takes_the_item_and_its_own_comment_only() {
        let out = remove_target(FILE, 0, "lamp").unwrap();
        assert!(!out.contains("lamp") && !out.contains("Christmas"), "{out}");
        assert!(out.contains("# My shop's targets.") && out.contains("# be polite"));
        assert!(out.contains("  - url: https://shop.example/kettle\n    max_price: none\nflows:"));
        let out = remove_target(FILE, 1, "kettle").unwrap();
        assert!(
            !out.contains("kettle") && out.contains("Christmas"),
            "{out}"
        );
        assert_eq!(
            remove_target(FILE, 2, "x"),
            Err(EditError::Unknown("x".into()))
        );
    }

    #[test]
    fn setting_replaces_in_place_and_adds_after_the_item() {
        let out = set_keys(
            FILE,
            0,
            "lamp",
            &[
                ("url".into(), Some(json!("https://shop.example/lamp2"))),
                ("paused".into(), Some(json!(true))),
                ("windows".into(), None),
                ("max_price".into(), Some(json!("55 €"))),
            ],
        )
        .unwrap();
        assert!(
            out.contains(
                "  - id: lamp\n    url: \"https://shop.example/lamp2\"  # the EU store\n    max_price: \"55 €\"\n    paused: true\n\n  - url:"
            ),
            "{out}"
        );
        // The key on the dash line: removing it hands the dash on.
        let out = set_keys(FILE, 1, "kettle", &[("url".into(), None)]).unwrap();
        assert!(out.contains("  - max_price: none\nflows:"), "{out}");
        assert_eq!(
            set_keys(FILE, 0, "lamp", &[("id".into(), Some(json!("x")))]).unwrap_err(),
            EditError::Key("id".into(), KEY_LIST)
        );
    }

    #[test]
    fn flow_style_and_missing_blocks_are_refused() {
        let f = serde_json::Map::new();
        assert_eq!(
            add_target("targets: [{url: x}]\n", &f),
            Err(EditError::FlowStyle)
        );
        assert_eq!(
            set_keys(
                "targets:\n  - {url: x}\n",
                0,
                "x",
                &[("paused".into(), None)]
            ),
            Err(EditError::FlowStyle)
        );
        // Another target in flow style is no obstacle to adding or removing.
        let mut h = serde_json::Map::new();
        h.insert("url".into(), json!("y"));
        assert_eq!(
            add_target("targets:\n  - {url: x}  # keep\n", &h).unwrap(),
            "targets:\n  - {url: x}  # keep\n  - url: \"y\"\n"
        );
        assert_eq!(
            remove_target("targets:\n  - {url: x}\n  - url: y\n", 0, "x").unwrap(),
            "targets:\n  - url: y\n"
        );
        assert_eq!(add_target("flows: {}\n", &f), Err(EditError::NoTargets));
        let mut g = serde_json::Map::new();
        g.insert("url".into(), json!("https://a.example/x"));
        assert_eq!(
            add_target("targets:\nflows:\n", &g).unwrap(),
            "targets:\n  - url: \"https://a.example/x\"\nflows:\n"
        );
    }
}
