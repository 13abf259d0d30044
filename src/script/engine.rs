//! The Rhai engine configuration every script runs under: limits, the
//! sandbox, the confined module resolver, and turning Rhai's errors into
//! located messages.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use rhai::module_resolvers::DummyModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{
    AST, Engine, EvalAltResult, FuncRegistration, Module, ModuleResolver, ParseError, Position,
    Scope, Shared,
};

use crate::sync::lock;

/// Limits every script runs with. Generous for flow scripts, which spend
/// their time waiting on the browser, and small enough that a runaway loop
/// or a string that doubles itself ends in milliseconds.
pub mod limits {
    pub const MAX_OPERATIONS: u64 = 5_000_000;
    pub const MAX_CALL_LEVELS: usize = 64;
    pub const MAX_STRING_SIZE: usize = 1 << 20;
    pub const MAX_ARRAY_SIZE: usize = 10_000;
    pub const MAX_MAP_SIZE: usize = 10_000;
    pub const MAX_MODULES: usize = 64;
    pub const MAX_EXPR_DEPTH: usize = 64;
    /// How deep imports may nest (a module importing a module ...). Each
    /// level compiles and evaluates a module inside the one before, on the
    /// thread that compiles; the bound keeps that far from any stack limit.
    pub const MAX_IMPORT_DEPTH: usize = 8;
}

/// A located script error: `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScriptError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// Where the failing function was called from, innermost first.
    pub called_from: Vec<String>,
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: {}", self.file, self.message)?,
            (Some(l), None) => write!(f, "{}:{l}: {}", self.file, self.message)?,
            _ => write!(f, "{}: {}", self.file, self.message)?,
        }
        for c in &self.called_from {
            write!(f, " (called from {c})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScriptError {}

fn loc(file: &str, pos: Position) -> (String, Option<usize>, Option<usize>) {
    (file.to_owned(), pos.line(), pos.position())
}

/// Lowercases the first letter: Rhai's messages are capitalised, baton's
/// are not.
fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Turns a parse error in `file` into a located error.
pub fn parse_error(file: &str, e: &ParseError) -> ScriptError {
    let (file, line, column) = loc(file, e.position());
    ScriptError {
        file,
        line,
        column,
        message: format!("syntax error: {}", lower_first(&e.err_type().to_string())),
        called_from: Vec::new(),
    }
}

/// Turns a runtime error of the script `file` into a located error: the
/// innermost position, in the file of the innermost function or module it
/// happened in.
pub fn eval_error(file: &str, e: &EvalAltResult) -> ScriptError {
    let mut current_file = file.to_owned();
    let mut frames = Vec::new();
    let mut e = e;
    loop {
        match e {
            EvalAltResult::ErrorInFunctionCall(_, src, inner, pos) => {
                frames.push(format!("{current_file}:{}", pos_str(*pos)));
                if !src.is_empty() {
                    current_file = src.clone();
                }
                e = inner;
            }
            EvalAltResult::ErrorInModule(path, inner, pos) => {
                frames.push(format!("{current_file}:{}", pos_str(*pos)));
                if !path.is_empty() {
                    current_file = module_display(path);
                }
                e = inner;
            }
            _ => break,
        }
    }
    frames.reverse();
    let message = match e {
        EvalAltResult::ErrorRuntime(d, _) => d.to_string(),
        EvalAltResult::ErrorParsing(p, _) => {
            format!("syntax error: {}", lower_first(&p.to_string()))
        }
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "the script exceeded its limit of {} operations",
            limits::MAX_OPERATIONS
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "the script exceeded its call depth limit of {}",
            limits::MAX_CALL_LEVELS
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "{} exceeds its limit (strings {} bytes, arrays and maps {} items)",
            lower_first(what),
            limits::MAX_STRING_SIZE,
            limits::MAX_ARRAY_SIZE
        ),
        EvalAltResult::ErrorTooManyModules(_) => {
            format!(
                "the script imports more than {} modules",
                limits::MAX_MODULES
            )
        }
        EvalAltResult::ErrorFunctionNotFound(sig, _)
            if sig.starts_with("eval ") || sig == "eval" =>
        {
            "`eval` is disabled in baton scripts".to_owned()
        }
        other => lower_first(&strip_position(&other.to_string())),
    };
    let (file, line, column) = loc(&current_file, e.position());
    ScriptError {
        file,
        line,
        column,
        message,
        // Innermost caller first reads best after the message.
        called_from: frames.into_iter().rev().collect(),
    }
}

/// Rhai's messages end with ` (line L, position C)`; baton puts the
/// location in front instead.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" (line ") {
        Some(i) if msg.ends_with(')') => msg[..i].to_owned(),
        _ => msg.to_owned(),
    }
}

fn pos_str(p: Position) -> String {
    match (p.line(), p.position()) {
        (Some(l), Some(c)) => format!("{l}:{c}"),
        (Some(l), None) => l.to_string(),
        _ => "?".into(),
    }
}

/// How a module path reads in messages: `scripts/lib/helpers.rhai`.
fn module_display(path: &str) -> String {
    if Path::new(path).extension().is_some_and(|e| e == "rhai") {
        path.to_owned()
    } else {
        format!("{path}.rhai")
    }
}

/// A fresh engine with baton's limits and sandbox, and no module resolver:
/// imports are resolved when a script is compiled (see [`compile`]) and
/// embedded in its AST, so a run never reads the disk for them.
pub fn base_engine(std: &Shared<Module>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(std.clone());
    engine
        .set_max_operations(limits::MAX_OPERATIONS)
        .set_max_call_levels(limits::MAX_CALL_LEVELS)
        .set_max_string_size(limits::MAX_STRING_SIZE)
        .set_max_array_size(limits::MAX_ARRAY_SIZE)
        .set_max_map_size(limits::MAX_MAP_SIZE)
        .set_max_modules(limits::MAX_MODULES)
        .set_max_expr_depths(limits::MAX_EXPR_DEPTH, limits::MAX_EXPR_DEPTH);
    // `eval` would compile code outside the reload pipeline and its limits.
    engine.disable_symbol("eval");
    // Rhai's own `sleep` (seconds) blocks its thread and nothing can cancel
    // it: in a module's top level it ran at compile time and hung `check`,
    // start-up and reloads past SIGINT; in a step it outlived the run's
    // cancellation. These take its place. They live in a module of their
    // own so that a step's primitives, registered later and so searched
    // first, replace the whole-milliseconds one with baton's cancellable
    // sleep.
    let mut placeholders = Module::new();
    FuncRegistration::new("sleep").set_into_module(
        &mut placeholders,
        |ms: rhai::INT| -> Result<(), Box<EvalAltResult>> {
            Err(format!("sleep({ms}): only a running step may sleep, not a module's top level (it runs when scripts are compiled)").into())
        },
    );
    FuncRegistration::new("sleep").set_into_module(
        &mut placeholders,
        |s: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> {
            Err(
                format!("sleep({s:?}): baton's sleep takes whole milliseconds, like sleep(500)")
                    .into(),
            )
        },
    );
    engine.register_global_module(placeholders.into());
    engine.set_module_resolver(DummyModuleResolver::new());
    engine
}

/// The names a script passes to `secret("...")` as string literals, with
/// where: `check` reports the undeclared ones before anything runs.
pub fn secret_names(ast: &AST) -> Vec<(String, Position)> {
    let mut out = Vec::new();
    ast.walk(&mut |path: &[rhai::ASTNode<'_>]| {
        if let Some(rhai::ASTNode::Expr(rhai::Expr::FnCall(call, pos))) = path.last()
            && call.name == "secret"
            && call.args.len() == 1
            && let rhai::Expr::StringConstant(name, _) = &call.args[0]
        {
            out.push((name.to_string(), *pos));
        }
        true
    });
    out
}

/// Rhai's standard library, built once and shared by every engine.
pub fn standard_package() -> Shared<Module> {
    StandardPackage::new().as_shared_module()
}

/// A compiled script with what went into it.
#[derive(Debug)]
pub struct Compiled {
    pub ast: AST,
    /// The files the script imports (directly or not), relative to the
    /// scripts directory.
    pub imports: BTreeSet<PathBuf>,
    /// A hash of the script and every module it imports: equal
    /// fingerprints mean nothing changed.
    pub fingerprint: u64,
}

/// Compiles `source` (read from `file`, shown as `display`) with its imports
/// resolved inside `root` and embedded.
pub fn compile(
    engine_std: &Shared<Module>,
    root: &Path,
    display: &str,
    source: &str,
) -> Result<Compiled, ScriptError> {
    let resolver = Arc::new(ConfinedResolver::new(root, display, source));
    let mut engine = base_engine(engine_std);
    engine.set_module_resolver(SharedResolver(resolver.clone()));
    // Rhai resolves imports before it reports syntax errors of its own, so
    // check the syntax first for the clearer message.
    engine
        .compile(source)
        .map_err(|e| parse_error(display, &e))?;
    let mut ast = engine
        .compile_into_self_contained(&Scope::new(), source)
        .map_err(|mut e| {
            // Rhai resolves a script's own imports without their position;
            // point at the `import` line ourselves.
            if e.position().is_none()
                && let Some(path) = resolver.failed_path()
                && let Some(pos) = import_position(source, &path)
            {
                e.set_position(pos);
            }
            eval_error(display, &e)
        })?;
    ast.set_source(display);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut hasher);
    let imports = resolver.take_imports();
    for (path, hash) in &imports {
        path.hash(&mut hasher);
        hash.hash(&mut hasher);
    }
    Ok(Compiled {
        ast,
        imports: imports.into_iter().map(|(p, _)| p).collect(),
        fingerprint: hasher.finish(),
    })
}

/// Resolves `import "lib/x"` to `ROOT/lib/x.rhai`, refusing anything that
/// would leave `ROOT`. Never caches: it is only used while compiling, and a
/// reload must see the file as it is now.
struct ConfinedResolver {
    root: PathBuf,
    /// The outermost import being resolved (nested ones carry positions).
    resolving: Mutex<Option<String>>,
    /// The chain of files being compiled, the script first: an import of
    /// one of them is a cycle, which would otherwise recurse until the
    /// thread's stack overflows and aborts the process.
    stack: Mutex<Vec<Frame>>,
    /// Imports seen during this compilation, with a hash of each source.
    seen: Mutex<Vec<(PathBuf, u64)>>,
}

/// A file on the import chain.
struct Frame {
    /// Relative to the scripts directory, as imports name it.
    rel: PathBuf,
    display: String,
    source: String,
    /// How the file before it imported this one, and where.
    imported: Option<(String, Position)>,
}

impl ConfinedResolver {
    fn new(root: &Path, display: &str, source: &str) -> Self {
        let rel = Path::new(display)
            .strip_prefix(root)
            .map_or_else(|_| PathBuf::from(display), Path::to_owned);
        ConfinedResolver {
            root: root.to_owned(),
            resolving: Mutex::new(None),
            stack: Mutex::new(vec![Frame {
                rel,
                display: display.to_owned(),
                source: source.to_owned(),
                imported: None,
            }]),
            seen: Mutex::new(Vec::new()),
        }
    }

    /// `a.rhai:1:1 imports `b` → b.rhai:2:1 imports `a``, for the frames
    /// from `from` on and one more import of `path` at `pos`.
    fn chain(stack: &[Frame], from: usize, path: &str, pos: Position) -> String {
        let at = |f: &Frame, path: &str, pos: Position| {
            let pos = if pos.is_none() {
                import_position(&f.source, path).unwrap_or(pos)
            } else {
                pos
            };
            match pos.line() {
                Some(l) => format!(
                    "{}:{l}:{} imports `{path}`",
                    f.display,
                    pos.position().unwrap_or(1)
                ),
                None => format!("{} imports `{path}`", f.display),
            }
        };
        let mut links: Vec<String> = Vec::new();
        for w in stack[from..].windows(2) {
            if let Some((p, at_pos)) = &w[1].imported {
                links.push(at(&w[0], p, *at_pos));
            }
        }
        if let Some(last) = stack.last() {
            links.push(at(last, path, pos));
        }
        links.join(" → ")
    }

    /// The top-level import that was being resolved when compilation
    /// failed.
    fn failed_path(&self) -> Option<String> {
        lock(&self.resolving).clone()
    }

    fn take_imports(&self) -> Vec<(PathBuf, u64)> {
        let mut v = std::mem::take(&mut *lock(&self.seen));
        v.sort();
        v.dedup();
        v
    }

    /// Checks `path` and returns the file it names, relative to the root.
    fn confine(&self, path: &str, pos: Position) -> Result<PathBuf, Box<EvalAltResult>> {
        let refuse = |why: &str| -> Box<EvalAltResult> {
            EvalAltResult::ErrorRuntime(
                format!(
                    "import `{path}` refused: {why}; imports resolve inside `{}`",
                    self.root.display()
                )
                .into(),
                pos,
            )
            .into()
        };
        let rel = PathBuf::from(path.strip_suffix(".rhai").unwrap_or(path));
        if path.is_empty() {
            return Err(refuse("empty path"));
        }
        for c in rel.components() {
            match c {
                Component::Normal(_) | Component::CurDir => {}
                Component::ParentDir => return Err(refuse("`..` leaves the scripts directory")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse("absolute paths are not allowed"));
                }
            }
        }
        let mut rel = rel;
        rel.set_extension("rhai");
        // A symlink inside the root could still point outside it.
        let full = self.root.join(&rel);
        if let (Ok(real), Ok(root)) = (full.canonicalize(), self.root.canonicalize())
            && !real.starts_with(&root)
        {
            return Err(refuse("it is a link to outside the scripts directory"));
        }
        Ok(rel)
    }
}

impl ModuleResolver for ConfinedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        if lock(&self.stack).len() == 1 {
            *lock(&self.resolving) = Some(path.to_owned());
        }
        self.resolve_inner(engine, path, pos)
    }
}

impl ConfinedResolver {
    fn resolve_inner(
        &self,
        engine: &Engine,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let rel = self.confine(path, pos)?;
        let full = self.root.join(&rel);
        let display = format!("{}", full.display());
        {
            let stack = lock(&self.stack);
            let fail = |msg: String| -> Box<EvalAltResult> {
                EvalAltResult::ErrorRuntime(msg.into(), pos).into()
            };
            if let Some(i) = stack.iter().position(|f| f.rel == rel) {
                return Err(fail(format!(
                    "import cycle: {}, which is already being imported",
                    Self::chain(&stack, i, path, pos)
                )));
            }
            if stack.len() > limits::MAX_IMPORT_DEPTH {
                return Err(fail(format!(
                    "imports nest deeper than {} modules: {}",
                    limits::MAX_IMPORT_DEPTH,
                    Self::chain(&stack, 0, path, pos)
                )));
            }
            let distinct = {
                let seen = lock(&self.seen);
                let mut names: Vec<&PathBuf> = seen.iter().map(|(p, _)| p).collect();
                names.push(&rel);
                names.sort();
                names.dedup();
                names.len()
            };
            if distinct > limits::MAX_MODULES {
                return Err(fail(format!(
                    "the script imports more than {} modules",
                    limits::MAX_MODULES
                )));
            }
        }
        let source = std::fs::read_to_string(&full).map_err(|e| -> Box<EvalAltResult> {
            let msg = if e.kind() == std::io::ErrorKind::NotFound {
                format!("module `{path}` not found: there is no `{display}`")
            } else {
                format!("cannot read module `{display}`: {e}")
            };
            EvalAltResult::ErrorRuntime(msg.into(), pos).into()
        })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        lock(&self.seen).push((rel.clone(), h.finish()));
        let mut ast = engine.compile(&source).map_err(|e| -> Box<EvalAltResult> {
            let parse = EvalAltResult::ErrorParsing(e.err_type().clone(), e.position());
            EvalAltResult::ErrorInModule(display.clone(), parse.into(), pos).into()
        })?;
        ast.set_source(display.as_str());
        // Evaluating the module resolves its own imports: it goes on the
        // chain for as long as that takes.
        lock(&self.stack).push(Frame {
            rel: rel.clone(),
            display: display.clone(),
            source: source.clone(),
            imported: Some((path.to_owned(), pos)),
        });
        let evaluated = Module::eval_ast_as_new(Scope::new(), &ast, engine);
        lock(&self.stack).pop();
        let mut module = evaluated.map_err(|e| -> Box<EvalAltResult> {
            EvalAltResult::ErrorInModule(display.clone(), e, pos).into()
        })?;
        module.set_id(display.as_str());
        module.build_index();
        Ok(module.into())
    }
}

/// The position of the `import` of `path` in `source`.
fn import_position(source: &str, path: &str) -> Option<Position> {
    let quoted = format!("\"{path}\"");
    for (i, line) in source.lines().enumerate() {
        if let Some(col) = line.find(&quoted)
            && line[..col].trim_end().ends_with("import")
        {
            let start = line[..col].rfind("import").unwrap_or(col);
            return Some(Position::new((i + 1) as u16, (start + 1) as u16));
        }
    }
    None
}

/// Lets the compile step keep a handle on the resolver it installs.
struct SharedResolver(Arc<ConfinedResolver>);

impl ModuleResolver for SharedResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        // Nested imports inside a module are compiled by the engine that
        // resolves them, which is this one, so they are confined too.
        self.0.resolve(engine, source, path, pos)
    }
}
