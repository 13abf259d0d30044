//! The value types of `flows.yaml` and how serde reads each: strict
//! booleans, durations and intervals with their bounds, ports, addresses,
//! host names, ids, and keys that take a string or a map. Each rejects a bad
//! value with a message serde-saphyr places at its line and column.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A boolean written `true` or `false`. A quoted `"true"` is a string,
/// whatever the parser would make of it: the schema promises strict
/// booleans, so it is an error rather than a guess.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct StrictBool(pub(super) bool);

impl<'de> Deserialize<'de> for StrictBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrictBool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<StrictBool, E> {
                Ok(StrictBool(b))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<StrictBool, E> {
                Err(E::custom(
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
                        format!(
                            "invalid boolean `\"{s}\"`: a quoted string; write true or false without quotes"
                        )
                    } else {
                        format!("invalid boolean `{s}`: write true or false")
                    },
                ))
            }
        }
        d.deserialize_any(V)
    }
}

/// `max_concurrent_runs`: 1 or more.
pub(super) struct Concurrency(pub(super) NonZeroU32);

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .map(Concurrency)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "invalid max_concurrent_runs `{n}`: it must be at least 1 (runs at once, each in its own browser session)"
                ))
            })
    }
}

/// A TCP port; 0 picks a free one.
pub(super) struct Port(pub(super) u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        u16::try_from(n).map(Port).map_err(|_| {
            de::Error::custom(format!(
                "invalid port `{n}`: use 1 to 65535, or 0 for any free port"
            ))
        })
    }
}

/// A host name for `dashboard.hosts`: no scheme, port or path.
pub(super) struct HostName(pub(super) String);

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = s.trim();
        if v.is_empty() || v.contains(['/', ':', ' ', '@', '?', '#']) {
            return Err(de::Error::custom(format!(
                "`dashboard.hosts` takes host names like `baton.example.lan`, without scheme, port or path, not `{s}`"
            )));
        }
        Ok(HostName(v.to_ascii_lowercase()))
    }
}

pub(super) struct Addr(pub(super) SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_addr(&s).map(Addr).map_err(de::Error::custom)
    }
}

pub(super) fn parse_addr(s: &str) -> Result<SocketAddr, ValueError> {
    s.parse().map_err(|_| ValueError::Address(s.to_owned()))
}

/// A value written in flows.yaml (or on the command line) that does not
/// read as what it must be; the message shows what would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("invalid duration `{0}`: write a number with a unit, like `250ms`, `30s` or `2m`")]
    Duration(String),
    #[error(
        "duration `{written}` is out of range: use {} to {}",
        humantime::format_duration(*.min),
        humantime::format_duration(*.max)
    )]
    OutOfRange {
        written: String,
        min: Duration,
        max: Duration,
    },
    #[error("empty interval `{0}`: the first bound must not be above the second, like `25s..35s`")]
    EmptyInterval(String),
    #[error("interval `{0}` is zero: cycles need time between them, like `25s..35s`")]
    ZeroInterval(String),
    #[error("invalid address `{0}`: expected HOST:PORT with an IP address, like `127.0.0.1:7878`")]
    Address(String),
}

/// Deserializes a scalar string through `from_str`, or hands a map on as a
/// deserializer for the long form. Keeps serde-saphyr's locations, which an
/// untagged enum would lose.
pub(super) fn string_or_map<'de, D, T, M, E>(
    d: D,
    expecting: &'static str,
    from_str: impl FnOnce(&str) -> Result<T, E>,
    from_map: impl FnOnce(M) -> T,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    M: Deserialize<'de>,
    E: fmt::Display,
{
    struct V<F, G, M> {
        expecting: &'static str,
        from_str: F,
        from_map: G,
        map: std::marker::PhantomData<M>,
    }
    impl<'de, T, M, F, G, E> Visitor<'de> for V<F, G, M>
    where
        M: Deserialize<'de>,
        E: fmt::Display,
        F: FnOnce(&str) -> Result<T, E>,
        G: FnOnce(M) -> T,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }
        fn visit_str<X: de::Error>(self, s: &str) -> Result<Self::Value, X> {
            (self.from_str)(s).map_err(X::custom)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // Buffer the map as JSON values (the long forms are small and
            // flat) and read the long form while still at this node, so
            // its errors (unknown keys, bad values) are located here.
            let mut entries = serde_json::Map::new();
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                entries.insert(k, v);
            }
            let long =
                de::value::MapAccessDeserializer::new(OwnedMap(entries.into_iter().collect()));
            M::deserialize(long)
                .map(self.from_map)
                .map_err(de::Error::custom)
        }
    }
    d.deserialize_any(V {
        expecting,
        from_str,
        from_map,
        map: std::marker::PhantomData,
    })
}

/// A buffered map, replayed to a long-form struct.
pub(super) struct OwnedMap(pub(super) std::collections::VecDeque<(String, serde_json::Value)>);

impl<'de> MapAccess<'de> for OwnedMap {
    type Error = serde_json::Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.0.front() {
            Some((k, _)) => seed
                .deserialize(de::value::StrDeserializer::<serde_json::Error>::new(k))
                .map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let (_, v) = self.0.pop_front().expect("next_value after next_key");
        seed.deserialize(v)
    }
}

/// A target id: YAML may read `12345678` as a number; it is an id all the
/// same.
pub(super) struct IdValue(pub(super) String);

impl<'de> Deserialize<'de> for IdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a target id (a string or a whole number)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<IdValue, E> {
                Ok(IdValue(s.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<IdValue, E> {
                Ok(IdValue(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<IdValue, E> {
                Ok(IdValue(n.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A target's `max_price`: a number (`59.99`), a price text with its
/// currency (`"59,99 €"`, read by [`crate::price`]), or `none`.
pub(super) enum MaxPrice {
    None,
    Amount(crate::price::Amount),
    Text(String),
}

impl<'de> Deserialize<'de> for MaxPrice {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MaxPrice;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a price (`60`, `59.99`, `\"59,99 €\"`) or `none`")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<MaxPrice, E> {
                if s.trim().eq_ignore_ascii_case("none") {
                    Ok(MaxPrice::None)
                } else {
                    Ok(MaxPrice::Text(s.to_owned()))
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<MaxPrice, E> {
                self.visit_f64(n as f64)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<MaxPrice, E> {
                self.visit_f64(n as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MaxPrice, E> {
                crate::price::Amount::from_f64(v)
                    .map(MaxPrice::Amount)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "max_price {v} is not a price (it must be 0 or more)"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// The longest duration any key takes. Bounds are part of the input: a
/// value that passes `check` must never overflow a deadline in `run`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// A duration written like `30s`, `250ms`, `1m 30s`, at least `MIN_MS`
/// milliseconds and at most [`MAX_DURATION`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Dur<const MIN_MS: u64 = 100>(pub(super) Duration);

impl<'de, const MIN_MS: u64> Deserialize<'de> for Dur<MIN_MS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_duration(&s).map_err(de::Error::custom)?;
        bounded(&s, v, Duration::from_millis(MIN_MS))
            .map(Dur)
            .map_err(de::Error::custom)
    }
}

/// `v` (written `s`) if it lies within `min..=MAX_DURATION`.
pub(super) fn bounded(s: &str, v: Duration, min: Duration) -> Result<Duration, ValueError> {
    if v < min || v > MAX_DURATION {
        return Err(ValueError::OutOfRange {
            written: s.trim().to_owned(),
            min,
            max: MAX_DURATION,
        });
    }
    Ok(v)
}

/// Parses a duration like `30s`, `250ms` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, ValueError> {
    humantime::parse_duration(s.trim()).map_err(|_| ValueError::Duration(s.to_owned()))
}

/// A cycle interval: `30s` or a range `25s..35s`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Interval(pub(super) Duration, pub(super) Duration);

impl<'de> Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_interval(&s)
            .map(|(a, b)| Interval(a, b))
            .map_err(de::Error::custom)
    }
}

/// Parses `30s` or `25s..35s`.
pub fn parse_interval(s: &str) -> Result<(Duration, Duration), ValueError> {
    let (lo, hi) = if let Some((a, b)) = s.split_once("..") {
        (parse_duration(a)?, parse_duration(b)?)
    } else {
        let d = parse_duration(s)?;
        (d, d)
    };
    if lo > hi {
        return Err(ValueError::EmptyInterval(s.to_owned()));
    }
    if hi.is_zero() {
        return Err(ValueError::ZeroInterval(s.to_owned()));
    }
    let min = Duration::from_millis(100);
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    Ok((bounded(a, lo, min)?, bounded(b, hi, min)?))
}
