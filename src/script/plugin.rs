//! Native plugins: Rust functions and types added to the script engine.
//!
//! A program built on the baton library implements [`Plugin`] and passes it
//! to [`crate::script::Builder::plugin`] (or to the CLI through
//! [`crate::cli::Options`]); every script engine then has its functions.
//! `examples/price_plugin.rs` is a complete example.

/// Registers functions (and types) into each script's engine.
///
/// `register` is called once per script execution, on the script's thread,
/// so it should only register: keep state in the plugin and share it with
/// `Arc` if functions need it.
pub trait Plugin: Send + Sync + 'static {
    /// A short name for logs and `baton check`.
    fn name(&self) -> &str;

    /// Adds this plugin's functions to `engine`. The engine's default tag
    /// is baton's (it binds the primitives to the running step) and is
    /// set after this returns.
    fn register(&self, engine: &mut rhai::Engine);
}
