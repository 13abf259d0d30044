//! A native plugin: price helpers for scripts.
//!
//! Shop pages print prices as text (`$1,299.99`, `19,99 €`); comparing them
//! in Rhai is fiddly, so this plugin adds `parse_price(text)` and
//! `price_below(text, max)`.

use baton::script::Plugin;
use rhai::{Engine, FuncRegistration};

/// Adds `parse_price` and `price_below` to every script.
pub struct PricePlugin;

/// Reads the number in a price text: digits with `.` or `,` as the decimal
/// separator and the other as thousands separator. `None` without digits.
pub fn parse_price(text: &str) -> Option<f64> {
    let kept: String = text
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .collect();
    if !kept.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    // The last separator followed by exactly two digits is the decimal one.
    let normalized = match kept.rfind(['.', ',']) {
        Some(i) if kept.len() - i == 3 => {
            let (int, frac) = kept.split_at(i);
            format!("{}.{}", int.replace(['.', ','], ""), &frac[1..])
        }
        _ => kept.replace(['.', ','], ""),
    };
    normalized.parse().ok()
}

impl Plugin for PricePlugin {
    fn name(&self) -> &'static str {
        "price"
    }

    fn register(&self, engine: &mut Engine) {
        FuncRegistration::new("parse_price")
            .with_params_info(["text: &str", "f64"])
            .with_comments(["/// The number in a price text (`$1,299.99` is 1299.99); an error if there is none."])
            .register_into_engine(engine, |text: &str| -> Result<f64, Box<rhai::EvalAltResult>> {
                parse_price(text).ok_or_else(|| format!("parse_price: no price in {text:?}").into())
            });
        FuncRegistration::new("price_below")
            .with_params_info(["text: &str", "max: f64", "bool"])
            .with_comments(["/// Whether the price in `text` is at or below `max`."])
            .register_into_engine(
                engine,
                |text: &str, max: f64| -> Result<bool, Box<rhai::EvalAltResult>> {
                    parse_price(text)
                        .map(|p| p <= max)
                        .ok_or_else(|| format!("price_below: no price in {text:?}").into())
                },
            );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_price_formats() {
        assert_eq!(parse_price("$19.99"), Some(19.99));
        assert_eq!(parse_price("$1,299.99"), Some(1299.99));
        assert_eq!(parse_price("19,99 €"), Some(19.99));
        assert_eq!(parse_price("1.299,00 €"), Some(1299.0));
        assert_eq!(parse_price("Sold out"), None);
    }
}
