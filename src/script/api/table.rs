//! The primitive table: every Rhai primitive declared once, as data.
//!
//! A [`Primitive`] holds a name, its [`Form`]s (parameters, return type
//! and the Rust function that runs it), what it does and the errors it
//! reports. Three things are made from the same table, so they cannot
//! drift apart:
//!
//! - [`module`] is one loop over it (`api::primitives()`) that puts every
//!   form, with its signature and doc comment, in one Rhai module, built
//!   once per process and given to every script engine;
//! - `baton defs` prints what that module holds;
//! - docs/scripting.md's reference tables are [`reference`]'s output, and a
//!   test fails when the file and the table differ (`UPDATE_DOCS=1 cargo
//!   test --lib reference` rewrites them).
//!
//! A form's function takes its arguments from [`Args`] by position, as the
//! form declares them: Rhai only calls a form with arguments of the
//! declared types, and `every_form_reads_its_arguments_as_declared`
//! checks that each function reads what its forms declare.

use std::any::TypeId;
use std::sync::Arc;

use rhai::{
    Dynamic, EvalAltResult, FLOAT, FnPtr, FuncRegistration, INT, ImmutableString, Map, Module,
    NativeCallContext, Position, RhaiFunc, Shared, Variant,
};

use super::{R, ScriptContext};

/// Which table of docs/scripting.md a primitive is listed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// "Browser primitives": the run's page.
    Page,
    /// "Flow control, secrets, the outside world".
    Flow,
    /// "Queries on an HTML document": methods of `html(body)`'s value.
    Html,
    /// "Prices and offers".
    Price,
}

impl Section {
    pub const ALL: [Section; 4] = [Section::Page, Section::Flow, Section::Html, Section::Price];

    /// The marker that opens the section's generated table in the docs.
    fn marker(self) -> &'static str {
        match self {
            Section::Page => "page",
            Section::Flow => "flow",
            Section::Html => "html",
            Section::Price => "price",
        }
    }
}

/// A value a form takes or returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// Returns nothing.
    Unit,
    Bool,
    Int,
    Float,
    Str,
    /// A selector: a string, or an array of strings tried in order.
    Selector,
    /// An HTML text or an `http_get` answer.
    StrOrMap,
    /// Anything (a message, a JavaScript value).
    Any,
    /// A string, or `()` when there is none.
    OptStr,
    Map,
    Array,
    /// A closure.
    Fn,
    /// A parsed `html(body)`.
    Html,
}

impl Type {
    /// What Rhai dispatches on: forms taking `Dynamic` accept any value.
    fn type_id(self) -> TypeId {
        match self {
            Type::Unit => TypeId::of::<()>(),
            Type::Bool => TypeId::of::<bool>(),
            Type::Int => TypeId::of::<INT>(),
            Type::Float => TypeId::of::<FLOAT>(),
            Type::Str => TypeId::of::<ImmutableString>(),
            Type::Selector | Type::StrOrMap | Type::Any | Type::OptStr => TypeId::of::<Dynamic>(),
            Type::Map => TypeId::of::<Map>(),
            Type::Array => TypeId::of::<rhai::Array>(),
            Type::Fn => TypeId::of::<FnPtr>(),
            Type::Html => TypeId::of::<crate::script::html::Document>(),
        }
    }

    /// The type as the definitions file writes it.
    fn defs(self) -> &'static str {
        match self {
            Type::Unit => "()",
            Type::Bool => "bool",
            Type::Int => "int",
            Type::Float => "float",
            Type::Str => "string",
            Type::Selector => "string | array",
            Type::StrOrMap => "string | map",
            Type::Any | Type::OptStr => "?",
            Type::Map => "map",
            Type::Array => "array",
            Type::Fn => "Fn",
            Type::Html => "Html",
        }
    }

    /// The return type as the reference writes it; `None` for nothing.
    fn docs(self) -> Option<&'static str> {
        match self {
            Type::Unit => None,
            Type::Any => Some("any"),
            Type::OptStr => Some("string or ()"),
            Type::StrOrMap => Some("string or map"),
            Type::Selector => Some("string or array"),
            t => Some(t.defs()),
        }
    }
}

/// A parameter: its name and type.
#[derive(Clone, Copy, Debug)]
pub struct Param(pub &'static str, pub Type);

/// One signature of a primitive and the function that runs it.
#[derive(Clone, Copy)]
pub struct Form {
    pub params: &'static [Param],
    pub returns: Type,
    pub call: fn(&ScriptContext, &Args<'_, '_>) -> R<Dynamic>,
}

impl Form {
    pub const fn new(
        params: &'static [Param],
        returns: Type,
        call: fn(&ScriptContext, &Args<'_, '_>) -> R<Dynamic>,
    ) -> Form {
        Form {
            params,
            returns,
            call,
        }
    }

    /// Called as a method (`doc.text(sel)`): its first parameter is the
    /// value the method is called on.
    fn is_method(&self) -> bool {
        self.params.first().is_some_and(|p| p.1 == Type::Html)
    }

    /// The parameters' types as `baton defs` writes them.
    pub fn param_types(&self) -> Vec<&'static str> {
        self.params.iter().map(|p| p.1.defs()).collect()
    }

    /// `url: string`, ..., and the return type last, as Rhai's metadata
    /// wants them.
    fn params_info(&self) -> Vec<String> {
        self.params
            .iter()
            .map(|Param(name, ty)| format!("{name}: {}", ty.defs()))
            .chain(std::iter::once(self.returns.defs().to_owned()))
            .collect()
    }

    /// How the reference writes the form: `wait_for(selector, ms) -> string`,
    /// `doc.text(selector) -> string`.
    fn signature(&self, name: &str) -> String {
        let (receiver, params) = if self.is_method() {
            (format!("{}.", self.params[0].0), &self.params[1..])
        } else {
            (String::new(), self.params)
        };
        let names: Vec<&str> = params.iter().map(|p| p.0).collect();
        let returns = self
            .returns
            .docs()
            .map(|r| format!(" -> {r}"))
            .unwrap_or_default();
        format!("{receiver}{name}({}){returns}", names.join(", "))
    }
}

/// A Rhai primitive: the one place it is declared.
pub struct Primitive {
    pub name: &'static str,
    pub section: Section,
    pub forms: &'static [Form],
    /// What it does, as one paragraph of Markdown: the reference's "does"
    /// column and, capitalised and wrapped, the doc comment `baton defs`
    /// writes.
    pub does: &'static str,
    /// The errors it reports, as the reference's "errors" column shows
    /// them; empty when it reports none of its own.
    pub errors: &'static str,
}

impl Primitive {
    /// The doc comment for `baton defs`: `does`, capitalised, in `///`
    /// lines of at most 80 columns.
    fn comment(&self) -> String {
        let mut chars = self.does.chars();
        let text: String = chars
            .next()
            .map(|c| c.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        // A sentence in a comment ends with a full stop; a table cell does not.
        let text = if text.ends_with(['.', ')', '`']) {
            text
        } else {
            format!("{text}.")
        };
        wrap(&text, 76)
            .iter()
            .map(|l| format!("/// {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The primitive's row in the reference.
    fn row(&self) -> String {
        let forms: Vec<String> = self
            .forms
            .iter()
            .map(|f| format!("`{}`", f.signature(self.name)))
            .collect();
        format!(
            "| {} | {} | {} |",
            cell(&forms.join(" / ")),
            cell(self.does),
            cell(self.errors)
        )
    }
}

/// Text as one table cell: a `|` would end the cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// Splits `text` into lines of at most `width` characters at spaces (a
/// longer word gets a line of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The arguments of one call, by position, and the call's context.
pub struct Args<'a, 'c> {
    name: &'static str,
    values: &'a [&'a mut Dynamic],
    ctx: NativeCallContext<'c>,
}

impl<'c> Args<'_, 'c> {
    /// How many arguments the call has: forms of one primitive differ in
    /// their count.
    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// Argument `i` as a `T`. A form's function reads what its form
    /// declares, so the mismatch error only shows a wrong table entry.
    pub fn get<T: Variant + Clone>(&self, i: usize) -> R<T> {
        let v = self.value(i);
        let actual = v.type_name();
        v.try_cast::<T>().ok_or_else(|| {
            EvalAltResult::ErrorMismatchDataType(
                format!("{} argument {}", self.name, i + 1),
                actual.to_owned(),
                Position::NONE,
            )
            .into()
        })
    }

    /// Argument `i` when the call has it (the longer form), else `None`.
    pub fn opt<T: Variant + Clone>(&self, i: usize) -> R<Option<T>> {
        if i < self.count() {
            self.get(i).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn str(&self, i: usize) -> R<ImmutableString> {
        self.get(i)
    }

    pub fn int(&self, i: usize) -> R<INT> {
        self.get(i)
    }

    /// Argument `i` as it came, for parameters of several types.
    pub fn value(&self, i: usize) -> Dynamic {
        self.values.get(i).map_or(Dynamic::UNIT, |v| (**v).clone())
    }

    /// The calling context, for calling a closure argument.
    pub fn context(&self) -> &NativeCallContext<'c> {
        &self.ctx
    }
}

/// Every form of `primitives` in one module, with its signature and doc
/// comment: built once and shared by every script engine (`api::register`).
///
/// A form finds the step it runs in through the engine's tag, which
/// `api::bind` sets, so one module serves every step: a step's engine costs
/// a pointer, not a registration per form.
pub fn module(primitives: impl Iterator<Item = &'static Primitive>) -> Module {
    let mut module = Module::new();
    for p in primitives {
        for form in p.forms {
            let (call, name) = (form.call, p.name);
            let func = move |ctx: Option<NativeCallContext<'_>>,
                             args: &mut [&mut Dynamic]|
                  -> R<Dynamic> {
                // Forms are registered with a context, so Rhai passes one;
                // the step is the tag `api::bind` set.
                let unbound = || -> Box<EvalAltResult> {
                    EvalAltResult::ErrorRuntime(
                        format!("{name}: only a running step can call it").into(),
                        Position::NONE,
                    )
                    .into()
                };
                let ctx = ctx.ok_or_else(unbound)?;
                let args = Args {
                    name,
                    values: args,
                    ctx,
                };
                let cx = args
                    .ctx
                    .tag()
                    .and_then(Dynamic::read_lock::<Arc<ScriptContext>>)
                    .ok_or_else(unbound)?;
                call(&cx, &args)
            };
            let func = Shared::new(func);
            let func = if form.is_method() {
                RhaiFunc::Method {
                    func,
                    has_context: true,
                    is_pure: true,
                    is_volatile: true,
                }
            } else {
                RhaiFunc::Pure {
                    func,
                    has_context: true,
                    is_pure: true,
                    is_volatile: true,
                }
            };
            let types: Vec<TypeId> = form.params.iter().map(|p| p.1.type_id()).collect();
            FuncRegistration::new(p.name)
                .in_global_namespace()
                .with_params_info(form.params_info())
                .with_comments([p.comment()])
                .set_into_module_raw(&mut module, types, func);
        }
    }
    module
}

/// The Markdown table of one section, as docs/scripting.md holds it.
pub fn reference(section: Section) -> String {
    let mut out = String::from("| signature | does | errors |\n| --- | --- | --- |\n");
    for p in super::primitives().filter(|p| p.section == section) {
        out.push_str(&p.row());
        out.push('\n');
    }
    out
}

/// Where a section's generated table starts and ends in the docs.
fn markers(section: Section) -> (String, String) {
    (
        format!(
            "<!-- primitives:{} (generated from src/script/api; UPDATE_DOCS=1 cargo test --lib reference) -->\n",
            section.marker()
        ),
        format!("<!-- /primitives:{} -->", section.marker()),
    )
}

/// `doc` with every section's table replaced by the table's own, or the
/// section whose markers are missing.
pub fn refresh(doc: &str) -> Result<String, Section> {
    let mut out = doc.to_owned();
    for section in Section::ALL {
        let (open, close) = markers(section);
        let start = out.find(&open).ok_or(section)? + open.len();
        let end = out[start..].find(&close).ok_or(section)? + start;
        out.replace_range(start..end, &reference(section));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_lines_within_the_width_and_every_word() {
        let text = "Waits until the selector matches, up to `browser.timeout`; returns the selector that matched.";
        let lines = wrap(text, 30);
        assert!(lines.iter().all(|l| l.chars().count() <= 30), "{lines:?}");
        assert_eq!(lines.join(" "), text);
        assert_eq!(wrap("", 30), Vec::<String>::new());
    }

    #[test]
    fn a_signature_names_the_parameters_and_what_it_returns() {
        #[expect(clippy::unnecessary_wraps, reason = "a form's function returns `R`")]
        fn none(_: &ScriptContext, _: &Args<'_, '_>) -> R<Dynamic> {
            Ok(Dynamic::UNIT)
        }
        let f = Form::new(
            &[Param("selector", Type::Selector), Param("ms", Type::Int)],
            Type::Str,
            none,
        );
        assert_eq!(f.signature("wait_for"), "wait_for(selector, ms) -> string");
        assert_eq!(
            f.params_info(),
            ["selector: string | array", "ms: int", "string"]
        );
        let m = Form::new(
            &[Param("doc", Type::Html), Param("selector", Type::Selector)],
            Type::Unit,
            none,
        );
        assert_eq!(m.signature("text"), "doc.text(selector)");
    }

    #[test]
    fn every_primitive_is_declared_once_with_forms_rhai_tells_apart() {
        let mut names = std::collections::BTreeSet::new();
        let mut forms = std::collections::BTreeSet::new();
        for p in super::super::primitives() {
            // `text(selector)` on the page and `doc.text(selector)` share a
            // name, in two sections.
            assert!(
                names.insert((p.name, p.section == Section::Html)),
                "`{}` is declared twice",
                p.name
            );
            assert!(!p.forms.is_empty(), "`{}` has no form", p.name);
            assert!(!p.does.trim().is_empty(), "`{}` says nothing", p.name);
            for f in p.forms {
                // Rhai tells overloads apart by their parameters' types; a
                // second form alike would replace the first.
                let key: Vec<TypeId> = f.params.iter().map(|p| p.1.type_id()).collect();
                assert!(
                    forms.insert((p.name, key)),
                    "`{}` has two forms alike",
                    p.name
                );
            }
        }
    }

    /// The reference in docs/scripting.md is the table's own output.
    #[test]
    fn reference_in_the_docs_is_generated_from_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scripting.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let fresh = refresh(&doc)
            .unwrap_or_else(|s| panic!("docs/scripting.md has no markers for the {s:?} section"));
        if std::env::var_os("UPDATE_DOCS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        assert!(
            doc == fresh,
            "docs/scripting.md's primitive tables differ from src/script/api's table; run `UPDATE_DOCS=1 cargo test --lib reference` and commit the result"
        );
    }
}
