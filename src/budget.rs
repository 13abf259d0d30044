//! I11: never pay more than the target's budget.
//!
//! A target's `max_price` (with an optional `currency`) is the host's to
//! enforce, not the script's: when a run enters `commit`, the price the
//! run observed last (from `offer(..)` or `observe_price(..)` in one of
//! its steps) must be at or under the budget, in the budget's currency,
//! or the host refuses the commit and the run ends `over_budget` (retried
//! next cycle), whatever the script does. A run with no observed price is
//! refused too. `max_price: none` says the target has no budget; a target
//! that says nothing is refused at its first commit, so forgetting the
//! budget never spends money.
//!
//! Prices seen by a monitor do not count: the run must see the price on
//! its own pages, since a shop may change it between pages.

use std::fmt;

use serde::Serialize;

use crate::price::{Amount, Price};

/// The outcome a refused commit ends its run with; always retried.
pub const OVER_BUDGET: &str = "over_budget";

/// What a target may cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Budget {
    /// flows.yaml says nothing: commits are refused.
    #[default]
    Unset,
    /// `max_price: none`: no limit, by the user's choice.
    NoLimit,
    /// `max_price: 60` (and `currency: EUR`).
    Max {
        amount: Amount,
        currency: Option<String>,
    },
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Budget::Unset => f.write_str("unset"),
            Budget::NoLimit => f.write_str("none"),
            Budget::Max {
                amount,
                currency: Some(c),
            } => write!(f, "{amount} {c}"),
            Budget::Max {
                amount,
                currency: None,
            } => write!(f, "{amount}"),
        }
    }
}

/// Why the host refused a commit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the target has no max_price: say what it may cost (`max_price: 60`) or `max_price: none` in flows.yaml"
    )]
    NoBudget,
    #[error(
        "no price was observed in this run; a step must read it with offer(..) or report it with observe_price(..) before commit (budget {budget})"
    )]
    NoPrice { budget: String },
    #[error("the price {price} is in {got}, the budget {budget} is in {want}")]
    OtherCurrency {
        price: String,
        got: String,
        budget: String,
        want: String,
    },
    #[error("the price {price} is over the budget {budget}")]
    Over { price: String, budget: String },
}

impl Budget {
    /// Whether a commit may go ahead after the run observed `last`.
    pub fn admits(&self, last: Option<&Price>) -> Result<(), Refusal> {
        let (max, currency) = match self {
            Budget::NoLimit => return Ok(()),
            Budget::Unset => return Err(Refusal::NoBudget),
            Budget::Max { amount, currency } => (amount, currency),
        };
        let Some(price) = last else {
            return Err(Refusal::NoPrice {
                budget: self.to_string(),
            });
        };
        // A currency on only one side is taken as the same: a shop that
        // shows `59.99` with no symbol and a budget of `60 EUR`. Two that
        // differ are never compared (no exchange rates here).
        if let (Some(want), Some(got)) = (currency, &price.currency)
            && !want.eq_ignore_ascii_case(got)
        {
            return Err(Refusal::OtherCurrency {
                price: price.to_string(),
                got: got.clone(),
                budget: self.to_string(),
                want: want.clone(),
            });
        }
        if price.amount > *max {
            return Err(Refusal::Over {
                price: price.to_string(),
                budget: self.to_string(),
            });
        }
        Ok(())
    }

    /// The currency prices are read in when their text has none.
    pub fn currency(&self) -> Option<&str> {
        match self {
            Budget::Max { currency, .. } => currency.as_deref(),
            _ => None,
        }
    }

    /// The limit as a float, for scripts (`target.max_price`); `()` when
    /// there is none.
    pub fn max_f64(&self) -> Option<f64> {
        match self {
            Budget::Max { amount, .. } => Some(amount.to_f64()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max(amount: &str, currency: Option<&str>) -> Budget {
        Budget::Max {
            amount: Amount::from_plain(amount).unwrap(),
            currency: currency.map(str::to_owned),
        }
    }

    fn price(amount: &str, currency: Option<&str>) -> Price {
        Price {
            amount: Amount::from_plain(amount).unwrap(),
            currency: currency.map(str::to_owned),
        }
    }

    #[test]
    fn at_or_under_the_budget_is_admitted_and_over_is_not() {
        let b = max("60", Some("EUR"));
        assert_eq!(b.admits(Some(&price("60.00", Some("EUR")))), Ok(()));
        assert_eq!(b.admits(Some(&price("59.99", None))), Ok(()));
        assert!(matches!(
            b.admits(Some(&price("60.01", Some("EUR")))),
            Err(Refusal::Over { .. })
        ));
        // The old script bug: 1.299,00 € is 1299, far over 60.
        assert!(matches!(
            b.admits(Some(&price("1299", Some("EUR")))),
            Err(Refusal::Over { .. })
        ));
    }

    #[test]
    fn no_price_another_currency_or_no_budget_is_refused() {
        let b = max("60", Some("EUR"));
        assert!(matches!(b.admits(None), Err(Refusal::NoPrice { .. })));
        let e = b.admits(Some(&price("5", Some("USD")))).unwrap_err();
        assert!(matches!(e, Refusal::OtherCurrency { .. }), "{e}");
        assert!(
            e.to_string().contains("USD") && e.to_string().contains("EUR"),
            "{e}"
        );
        assert_eq!(
            Budget::Unset.admits(Some(&price("1", None))),
            Err(Refusal::NoBudget)
        );
        assert_eq!(Budget::NoLimit.admits(None), Ok(()));
    }
}
