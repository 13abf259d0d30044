//! A native plugin: a price helper for scripts.
//!
//! baton reads prices itself (`parse_price`, `offer`, and the budget check
//! of I11); a plugin builds on the same parser rather than writing its
//! own. This one adds `price_below(text, max)`, a one-call check for
//! scripts that compare a page's price with a number.

use baton::price::{self, Context};
use baton::script::Plugin;
use rhai::{Engine, FuncRegistration};

/// Adds `price_below` to every script.
pub(crate) struct PricePlugin;

/// The amount in a price text, through baton's parser (any locale;
/// ambiguous text is an error, not a guess).
pub(crate) fn amount(text: &str) -> Result<f64, String> {
    price::parse(text, Context::default())
        .map(|p| p.amount.to_f64())
        .map_err(|e| e.to_string())
}

impl Plugin for PricePlugin {
    fn name(&self) -> &'static str {
        "price"
    }

    fn register(&self, engine: &mut Engine) {
        FuncRegistration::new("price_below")
            .with_params_info(["text: &str", "max: f64", "bool"])
            .with_comments(["/// Whether the price in `text` is at or below `max`."])
            .register_into_engine(
                engine,
                |text: &str, max: f64| -> Result<bool, Box<rhai::EvalAltResult>> {
                    amount(text)
                        .map(|p| p <= max)
                        .map_err(|e| format!("price_below: {e}").into())
                },
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_price_formats() {
        assert_eq!(amount("$19.99"), Ok(19.99));
        assert_eq!(amount("$1,299.99"), Ok(1299.99));
        assert_eq!(amount("19,99 €"), Ok(19.99));
        assert_eq!(amount("1.299,00 €"), Ok(1299.0));
        assert!(amount("Sold out").is_err());
    }
}
