//! A native plugin in action: prints the script API with the plugin's
//! `parse_price` and `price_below` added.

mod plugin;

use std::sync::Arc;

fn main() {
    let host = baton::script::ScriptHost::builder("scripts")
        .plugin(Arc::new(plugin::PricePlugin))
        .build();
    print!("{}", host.definitions());
}
