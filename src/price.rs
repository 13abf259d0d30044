//! Prices as shops write them: one parser for every script, for `offer`
//! and for the budget check (I11), and the formatter the demo shop uses
//! to show prices in many locales.
//!
//! A price text is a number with grouping and decimal separators and,
//! usually, a currency: `1.299,00 €`, `1 299,00 €`, `$1,299.00`,
//! `CHF 1'299.–`, `¥1,299`. Which separator is the decimal one comes from
//! the locale when one is given, and otherwise from the text itself: with
//! both `.` and `,` the last one is decimal; a separator that repeats
//! groups; a single separator followed by three digits is a thousands
//! separator when the currency has no three-digit minor unit, and an
//! [`PriceError::Ambiguous`] error when nothing tells. A wrong guess here
//! once read `1.299,00 €` as 1.299 and bought under a budget of 60, so
//! the parser refuses rather than guesses.

use std::cmp::Ordering;
use std::fmt;

/// An exact decimal amount: `minor / 10^scale`. Compared by value, so
/// `60`, `60.0` and `60.00` are equal.
#[derive(Clone, Copy, Debug)]
pub struct Amount {
    minor: u64,
    scale: u8,
}

impl Amount {
    /// The largest amount the parser accepts, in whole units: enough for
    /// any price, small enough that comparisons never overflow.
    const MAX_UNITS: u64 = 1_000_000_000_000;

    pub fn new(minor: u64, scale: u8) -> Amount {
        Amount { minor, scale }
    }

    /// The amount as a float (what Rhai scripts get).
    pub fn to_f64(self) -> f64 {
        self.minor as f64 / 10f64.powi(i32::from(self.scale))
    }

    /// An amount from a float written in a config file (`max_price: 59.99`),
    /// through its shortest decimal text, so `59.99` stays exactly 59.99.
    pub fn from_f64(v: f64) -> Option<Amount> {
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        let text = format!("{v}");
        Amount::from_plain(&text)
    }

    /// `1299`, `1299.5`, `0.99`: the machine form of schema.org's `price`.
    pub fn from_plain(text: &str) -> Option<Amount> {
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, f),
            None => (text, ""),
        };
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) || frac.len() > 6 {
            return None;
        }
        let units: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        if units > Amount::MAX_UNITS {
            return None;
        }
        let scale = frac.len() as u8;
        let frac_value: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        Some(Amount {
            minor: units * 10u64.pow(u32::from(scale)) + frac_value,
            scale,
        })
    }

    fn widened(self, scale: u8) -> u128 {
        u128::from(self.minor) * 10u128.pow(u32::from(scale - self.scale))
    }

    /// The amount in `scale` decimals, rounded half up (for display).
    fn rounded(self, scale: u8) -> u64 {
        if scale >= self.scale {
            return self.widened(scale) as u64;
        }
        let div = 10u64.pow(u32::from(self.scale - scale));
        (self.minor + div / 2) / div
    }
}

impl PartialEq for Amount {
    fn eq(&self, other: &Amount) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Amount {}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Amount) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Amount {
    fn cmp(&self, other: &Amount) -> Ordering {
        let scale = self.scale.max(other.scale);
        self.widened(scale).cmp(&other.widened(scale))
    }
}

impl fmt::Display for Amount {
    /// The plain form, with at least two decimals: `1299.00`, `0.5` as `0.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = self.scale.max(2);
        let v = self.widened(scale);
        let div = 10u128.pow(u32::from(scale));
        write!(
            f,
            "{}.{:0width$}",
            v / div,
            v % div,
            width = usize::from(scale)
        )
    }
}

/// A parsed price: the amount and, when the text or its context tells,
/// the ISO 4217 currency code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub amount: Amount,
    pub currency: Option<String>,
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.currency {
            Some(c) => write!(f, "{} {c}", self.amount),
            None => write!(f, "{}", self.amount),
        }
    }
}

/// Why a text is not one price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("no number in {0:?}")]
    NoNumber(String),
    #[error("{0:?} holds more than one number; pass the text of one price")]
    SeveralNumbers(String),
    #[error(
        "{text:?} is ambiguous: {as_group} with `{sep}` grouping thousands, or {as_decimal} with `{sep}` as the decimal point; give the locale or the currency"
    )]
    Ambiguous {
        text: String,
        sep: char,
        as_group: String,
        as_decimal: String,
    },
    #[error("{0:?} is not a number as any locale writes it (separators in the wrong places)")]
    Malformed(String),
    #[error("{0:?} is negative; a price is not")]
    Negative(String),
    #[error("{0:?} is too large to be a price")]
    TooLarge(String),
    #[error("unknown locale {0:?} (known: {known})", known = Locale::names())]
    UnknownLocale(String),
}

/// How a locale writes numbers and where its currency goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Locale {
    pub name: &'static str,
    /// The thousands separator; `'` in Switzerland, a space in France
    /// (the narrow no-break space, U+202F, in current CLDR data).
    pub group: char,
    pub decimal: char,
    /// Indian grouping: 12,34,567.00.
    pub indian: bool,
    /// `1.299,00 €` rather than `€1,299.00`.
    pub symbol_after: bool,
}

impl Locale {
    /// The locales the formatter knows and the parser accepts by name.
    /// Separators follow CLDR (the data browsers' `Intl.NumberFormat` uses).
    pub const ALL: &'static [Locale] = &[
        Locale::new("en-US", ',', '.', false, false),
        Locale::new("en-GB", ',', '.', false, false),
        Locale::new("en-IN", ',', '.', true, false),
        Locale::new("ja-JP", ',', '.', false, false),
        Locale::new("de-DE", '.', ',', false, true),
        Locale::new("es-ES", '.', ',', false, true),
        Locale::new("it-IT", '.', ',', false, true),
        Locale::new("nl-NL", '.', ',', false, false),
        Locale::new("pt-BR", '.', ',', false, false),
        Locale::new("fr-FR", '\u{202f}', ',', false, true),
        Locale::new("sv-SE", '\u{a0}', ',', false, true),
        Locale::new("pl-PL", '\u{a0}', ',', false, true),
        Locale::new("de-CH", '\'', '.', false, false),
    ];

    const fn new(
        name: &'static str,
        group: char,
        decimal: char,
        indian: bool,
        symbol_after: bool,
    ) -> Locale {
        Locale {
            name,
            group,
            decimal,
            indian,
            symbol_after,
        }
    }

    /// `de-DE`, `de_DE` or `de-de`; a bare language (`de`) takes its
    /// first region.
    pub fn find(name: &str) -> Result<Locale, PriceError> {
        let want = name.replace('_', "-").to_ascii_lowercase();
        Locale::ALL
            .iter()
            .find(|l| l.name.to_ascii_lowercase() == want)
            .or_else(|| {
                Locale::ALL
                    .iter()
                    .find(|l| l.name.split('-').next() == Some(want.as_str()))
            })
            .copied()
            .ok_or_else(|| PriceError::UnknownLocale(name.to_owned()))
    }

    fn names() -> String {
        Locale::ALL
            .iter()
            .map(|l| l.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Currency symbols and the codes they stand for. A symbol shared by
/// several currencies names them all; the first is taken unless the
/// context (a budget's currency) names another. `kr` has no default.
const SYMBOLS: &[(&str, &[&str])] = &[
    ("US$", &["USD"]),
    ("CA$", &["CAD"]),
    ("C$", &["CAD"]),
    ("A$", &["AUD"]),
    ("AU$", &["AUD"]),
    ("NZ$", &["NZD"]),
    ("HK$", &["HKD"]),
    ("S$", &["SGD"]),
    ("R$", &["BRL"]),
    ("$", &["USD", "CAD", "AUD", "NZD", "HKD", "SGD", "MXN"]),
    ("€", &["EUR"]),
    ("£", &["GBP"]),
    ("¥", &["JPY", "CNY"]),
    ("￥", &["JPY", "CNY"]),
    ("元", &["CNY"]),
    ("円", &["JPY"]),
    ("₹", &["INR"]),
    ("₩", &["KRW"]),
    ("₽", &["RUB"]),
    ("₺", &["TRY"]),
    ("zł", &["PLN"]),
    ("Kč", &["CZK"]),
    ("Ft", &["HUF"]),
    ("Fr.", &["CHF"]),
    ("kr", &["", "SEK", "NOK", "DKK", "ISK"]),
];

/// ISO 4217 codes the parser recognises in text (`EUR 12,50`, `CHF 5.–`).
const CODES: &[&str] = &[
    "USD", "EUR", "GBP", "JPY", "CNY", "CHF", "CAD", "AUD", "NZD", "HKD", "SGD", "SEK", "NOK",
    "DKK", "ISK", "PLN", "CZK", "HUF", "INR", "KRW", "RUB", "TRY", "BRL", "MXN", "ZAR", "BHD",
    "KWD", "OMR", "JOD", "TND",
];

/// How many decimals a currency's minor unit has (ISO 4217).
pub fn minor_digits(code: &str) -> u8 {
    match code {
        "JPY" | "KRW" | "ISK" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

/// What the parser may use besides the text: a locale, and a currency
/// the text's symbol is read as when it fits (`$` is CAD for a budget in
/// CAD).
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    pub locale: Option<Locale>,
    pub currency: Option<&'a str>,
}

/// Parses one price from a shop's text.
pub fn parse(text: &str, cx: Context<'_>) -> Result<Price, PriceError> {
    let currency = currency_in(text, cx.currency);
    let (number, negative) = number_in(text)?;
    if negative {
        return Err(PriceError::Negative(text.to_owned()));
    }
    let currency = currency.or_else(|| cx.currency.map(str::to_owned));
    let amount = amount_of(text, &number, cx.locale, currency.as_deref())?;
    Ok(Price { amount, currency })
}

/// The currency a text names, by code or symbol.
fn currency_in(text: &str, hint: Option<&str>) -> Option<String> {
    let upper: Vec<&str> = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() == 3)
        .collect();
    if let Some(code) = CODES.iter().find(|c| upper.contains(c)) {
        return Some((*code).to_owned());
    }
    for (symbol, codes) in SYMBOLS {
        if !text.contains(symbol) {
            continue;
        }
        // `kr` inside a word (`Kreditkarte`) is not a currency.
        if symbol.chars().all(char::is_alphabetic) && !stands_alone(text, symbol) {
            continue;
        }
        if let Some(h) = hint.filter(|h| codes.contains(h)) {
            return Some(h.to_owned());
        }
        return codes
            .first()
            .filter(|c| !c.is_empty())
            .map(|c| (*c).to_owned());
    }
    None
}

fn stands_alone(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(char::is_alphabetic) && !after.is_some_and(char::is_alphabetic)
    })
}

fn is_group_space(c: char) -> bool {
    matches!(c, ' ' | '\u{a0}' | '\u{202f}' | '\u{2009}')
}

fn is_separator(c: char) -> bool {
    matches!(c, '.' | ',' | '\'' | '’') || is_group_space(c)
}

/// The one run of digits and separators in `text`, with a trailing `.–`
/// or `,-` (no minor units) dropped, and whether a minus precedes it.
fn number_in(text: &str) -> Result<(String, bool), PriceError> {
    let chars: Vec<char> = text.chars().collect();
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let mut end = i;
        while i < chars.len() {
            if chars[i].is_ascii_digit() {
                end = i + 1;
                i += 1;
            } else if is_separator(chars[i]) && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        runs.push((start, end));
        i = end.max(start + 1);
    }
    match runs.as_slice() {
        [] => Err(PriceError::NoNumber(text.to_owned())),
        [(start, end)] => {
            // A minus right before the number (spaces and a symbol
            // between allowed: `-5 €`, `-$5`, `$ -5`), not a hyphen in a
            // word (`Art-5`).
            let before: Vec<char> = chars[..*start]
                .iter()
                .rev()
                .copied()
                .skip_while(|c| c.is_whitespace() || *c == '$' || *c == '€' || *c == '£')
                .take(2)
                .collect();
            let negative = matches!(before.first(), Some('-' | '−'))
                && !before.get(1).is_some_and(|c| c.is_alphanumeric());
            Ok((chars[*start..*end].iter().collect(), negative))
        }
        _ => Err(PriceError::SeveralNumbers(text.to_owned())),
    }
}

/// The amount of `number` (digits and separators only).
fn amount_of(
    text: &str,
    number: &str,
    locale: Option<Locale>,
    currency: Option<&str>,
) -> Result<Amount, PriceError> {
    let malformed = || PriceError::Malformed(text.to_owned());
    // Spaces and apostrophes only ever group.
    let seps: Vec<char> = number.chars().filter(|c| !c.is_ascii_digit()).collect();
    let count = |c: char| seps.iter().filter(|s| **s == c).count();
    let both = count('.') > 0 && count(',') > 0;
    let decimal = match locale {
        // The locale decides what a lone separator is. Text with both
        // `.` and `,` says it itself (a shop showing `$1,299.00` to a
        // German visitor), and so does text with neither of the locale's.
        Some(l) if !both && count(l.decimal) == 1 => Some(l.decimal),
        Some(l) if !both && count(l.group) > 0 && count(l.decimal) == 0 => None,
        _ => infer_decimal(text, number, &seps, currency)?,
    };
    let (int, frac) = match decimal {
        Some(d) => {
            let at = number.rfind(d).ok_or_else(malformed)?;
            (&number[..at], &number[at + d.len_utf8()..])
        }
        None => (number, ""),
    };
    if frac.chars().any(|c| !c.is_ascii_digit()) || frac.len() > 6 {
        return Err(malformed());
    }
    let digits = grouped_digits(int).ok_or_else(malformed)?;
    let plain = if frac.is_empty() {
        digits
    } else {
        format!("{digits}.{frac}")
    };
    Amount::from_plain(&plain).ok_or_else(|| PriceError::TooLarge(text.to_owned()))
}

/// Which of `.` and `,` is the decimal separator, from the text alone.
fn infer_decimal(
    text: &str,
    number: &str,
    seps: &[char],
    currency: Option<&str>,
) -> Result<Option<char>, PriceError> {
    let has_dot = seps.contains(&'.');
    let has_comma = seps.contains(&',');
    if has_dot && has_comma {
        // The last one is decimal: `1.299,00`, `1,299.00`.
        let last = seps.iter().rev().find(|c| matches!(c, '.' | ',')).copied();
        return Ok(last);
    }
    let Some(sep) = [',', '.'].into_iter().find(|s| seps.contains(s)) else {
        return Ok(None);
    };
    if seps.iter().filter(|c| **c == sep).count() > 1 {
        // `1.299.000` or `1,299,000`: only grouping repeats.
        return Ok(None);
    }
    if seps
        .iter()
        .any(|c| is_group_space(*c) || matches!(c, '\'' | '’'))
    {
        // `1 299,00`, `1'299.50`: another separator groups, so this one
        // is decimal.
        return Ok(Some(sep));
    }
    let at = number.rfind(sep).expect("the separator is in the number");
    let (int, frac) = (&number[..at], &number[at + 1..]);
    if frac.len() != 3 || int == "0" || int.len() > 3 {
        // `12,50`, `0.299`, `1299.000`: not a thousands group.
        return Ok(Some(sep));
    }
    match currency.map(minor_digits) {
        Some(3) => Ok(Some(sep)),
        Some(_) => Ok(None),
        None => Err(PriceError::Ambiguous {
            text: text.to_owned(),
            sep,
            as_group: format!("{int}{frac}"),
            as_decimal: format!("{int}.{frac}"),
        }),
    }
}

/// The digits of an integer part with its grouping separators checked
/// (groups of three, or Indian groups of two before the last three) and
/// removed; `None` if they are in the wrong places.
fn grouped_digits(int: &str) -> Option<String> {
    if int.is_empty() {
        return Some("0".into());
    }
    let groups: Vec<&str> = int.split(|c: char| !c.is_ascii_digit()).collect();
    if groups.len() > 1 {
        let seps: Vec<char> = int.chars().filter(|c| !c.is_ascii_digit()).collect();
        if seps.windows(2).any(|w| w[0] != w[1]) {
            return None;
        }
        let (first, rest) = groups.split_first()?;
        let (last, middle) = rest.split_last()?;
        let western = middle.iter().all(|g| g.len() == 3);
        let indian = middle.iter().all(|g| g.len() == 2);
        if first.is_empty() || first.len() > 3 || last.len() != 3 || !(western || indian) {
            return None;
        }
    }
    Some(groups.concat())
}

/// How `locale` shows `amount` in `currency` (`1.299,00 €`, `$1,299.00`,
/// `CHF 1'299.00`, `¥1,299`): the demo shop's prices, and the property
/// tests' round trip.
pub fn format(amount: Amount, currency: &str, locale: Locale) -> String {
    let digits = minor_digits(currency);
    let value = amount.rounded(digits);
    let div = 10u64.pow(u32::from(digits));
    let (units, frac) = (value / div, value % div);
    let int = group(units, locale);
    let number = if digits == 0 {
        int
    } else {
        format!(
            "{int}{}{frac:0width$}",
            locale.decimal,
            width = usize::from(digits)
        )
    };
    let symbol = match currency {
        "USD" if locale.name == "en-US" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "INR" => "₹",
        "PLN" => "zł",
        "SEK" => "kr",
        "BRL" => "R$",
        other => other,
    };
    if locale.symbol_after {
        format!("{number}\u{a0}{symbol}")
    } else if symbol.chars().all(|c| c.is_ascii_uppercase()) || symbol == "R$" {
        format!("{symbol}\u{a0}{number}")
    } else {
        format!("{symbol}{number}")
    }
}

fn group(units: u64, locale: Locale) -> String {
    let digits = units.to_string();
    let mut out = Vec::new();
    let bytes = digits.as_bytes();
    let mut end = bytes.len();
    let mut size = 3;
    while end > size {
        out.push(&digits[end - size..end]);
        end -= size;
        if locale.indian {
            size = 2;
        }
    }
    out.push(&digits[..end]);
    out.reverse();
    out.join(&locale.group.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Price, PriceError> {
        parse(text, Context::default())
    }

    fn amount(text: &str) -> Amount {
        Amount::from_plain(text).unwrap()
    }

    #[test]
    fn the_shapes_shops_show() {
        let cases = [
            ("1.299,00 €", "1299", Some("EUR")),
            ("1 299,00 €", "1299", Some("EUR")),
            ("1\u{202f}299,00\u{a0}€", "1299", Some("EUR")),
            ("$1,299.00", "1299", Some("USD")),
            ("CHF 1'299.–", "1299", Some("CHF")),
            ("CHF 1’299.50", "1299.5", Some("CHF")),
            ("¥1,299", "1299", Some("JPY")),
            ("£12.50", "12.5", Some("GBP")),
            ("12,50 €", "12.5", Some("EUR")),
            ("EUR 12,50", "12.5", Some("EUR")),
            ("1.299 €", "1299", Some("EUR")),
            ("₹1,29,999.00", "129999", Some("INR")),
            ("R$ 1.299,90", "1299.9", Some("BRL")),
            ("49,90 zł", "49.9", Some("PLN")),
            ("Price: 59.99", "59.99", None),
            ("0.299", "0.299", None),
            ("1.234,5 KWD", "1234.5", Some("KWD")),
            ("12 kr", "12", None),
            ("199,- Kč", "199", Some("CZK")),
        ];
        for (text, want, currency) in cases {
            let got = p(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(got.amount, amount(want), "{text}");
            assert_eq!(got.currency.as_deref(), currency, "{text}");
        }
    }

    #[test]
    fn a_single_separator_before_three_digits_needs_a_currency_or_locale() {
        let e = p("1.299").unwrap_err();
        assert!(matches!(e, PriceError::Ambiguous { sep: '.', .. }), "{e}");
        assert!(e.to_string().contains("1299"), "{e}");
        let de = Context {
            locale: Some(Locale::find("de-DE").unwrap()),
            currency: None,
        };
        assert_eq!(parse("1.299", de).unwrap().amount, amount("1299"));
        let en = Context {
            locale: Some(Locale::find("en").unwrap()),
            currency: None,
        };
        assert_eq!(parse("1.299", en).unwrap().amount, amount("1.299"));
        // A three-digit minor unit makes it decimal.
        assert_eq!(p("1.299 KWD").unwrap().amount, amount("1.299"));
    }

    #[test]
    fn the_old_script_bug_is_gone() {
        // The shipped `price()` read this as 1.299 and bought under 60.
        let got = p("1.299,00 €").unwrap();
        assert!(got.amount > Amount::from_f64(60.0).unwrap());
    }

    #[test]
    fn text_that_is_not_one_price_is_refused() {
        assert!(matches!(p("free"), Err(PriceError::NoNumber(_))));
        assert!(matches!(p(""), Err(PriceError::NoNumber(_))));
        assert!(matches!(
            p("was $20 now $15"),
            Err(PriceError::SeveralNumbers(_))
        ));
        assert!(matches!(p("-5.00 €"), Err(PriceError::Negative(_))));
        assert!(matches!(p("1,29,9.00"), Err(PriceError::Malformed(_))));
        assert!(matches!(p("12.34.5"), Err(PriceError::Malformed(_))));
        assert!(matches!(
            p("99999999999999999999"),
            Err(PriceError::TooLarge(_))
        ));
        assert!(matches!(
            Locale::find("xx-YY"),
            Err(PriceError::UnknownLocale(_))
        ));
    }

    #[test]
    fn a_dollar_is_the_budgets_dollar() {
        let cad = Context {
            locale: None,
            currency: Some("CAD"),
        };
        assert_eq!(
            parse("$5.00", cad).unwrap().currency.as_deref(),
            Some("CAD")
        );
        // A budget in euros does not turn dollars into euros.
        let eur = Context {
            locale: None,
            currency: Some("EUR"),
        };
        assert_eq!(
            parse("$5.00", eur).unwrap().currency.as_deref(),
            Some("USD")
        );
        // Text with no currency takes the context's.
        assert_eq!(parse("5.00", eur).unwrap().currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn amounts_compare_by_value() {
        assert_eq!(amount("60"), amount("60.00"));
        assert!(amount("59.99") < amount("60"));
        assert!(amount("60.001") > amount("60"));
        assert_eq!(Amount::from_f64(59.99).unwrap(), amount("59.99"));
        assert_eq!(amount("1299").to_string(), "1299.00");
        assert_eq!(amount("0.5").to_string(), "0.50");
    }

    proptest::proptest! {
        #[test]
        fn a_formatted_price_parses_back_in_every_locale(
            minor in 0u64..10_000_000_000,
            locale in 0..Locale::ALL.len(),
            currency in proptest::sample::select(vec!["EUR", "USD", "GBP", "JPY", "CHF", "INR", "PLN", "SEK", "BRL"]),
        ) {
            let locale = Locale::ALL[locale];
            let digits = minor_digits(currency);
            let amount = Amount::new(minor, digits);
            let text = format(amount, currency, locale);
            let cx = Context { locale: Some(locale), currency: Some(currency) };
            let back = parse(&text, cx).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{text}: {e}")))?;
            proptest::prop_assert_eq!(back.amount, amount, "{}", text);
            proptest::prop_assert_eq!(back.currency.as_deref(), Some(currency), "{}", text);
            // With only the currency (no locale), the text is still read
            // right: whatever the locale, the currency disambiguates.
            let inferred = parse(&text, Context { locale: None, currency: Some(currency) });
            proptest::prop_assert_eq!(inferred.map(|p| p.amount), Ok(amount), "{}", text);
        }
    }
}
