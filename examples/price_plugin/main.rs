//! baton with a native plugin: the same command line as `baton`, plus the
//! `price_below` function in every script.
//!
//! ```sh
//! cargo run --example price_plugin -- check
//! cargo run --example price_plugin -- defs | grep price
//! ```

mod plugin;

use std::sync::Arc;

fn main() -> std::process::ExitCode {
    baton::cli::main_with(baton::cli::Options {
        plugins: vec![Arc::new(plugin::PricePlugin)],
    })
}
