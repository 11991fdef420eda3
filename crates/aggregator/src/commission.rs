//! The commission rate: an exact decimal, so that commission on money never
//! passes through a float.
//!
//! A rate is kept in parts per million. Config files write it as a fraction
//! (`0.125`) or a percentage (`12.5%`); both parse exactly, and a rate that
//! does not fit in whole parts per million is refused rather than rounded.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parts per million in one (100 %).
const PPM_PER_ONE: u32 = 1_000_000;
/// Parts per million in one percent.
const PPM_PER_PERCENT: u32 = 10_000;

/// The platform's commission on net GMV, exact to one part per million.
///
/// Parses from `"0.1"` or `"10%"`, displays as a percentage; the default is 10 %.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommissionRate {
    /// Always `<= PPM_PER_ONE`.
    ppm: u32,
}

/// Why a commission rate was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommissionRateError {
    /// Nothing was given.
    #[error("commission rate is empty")]
    Empty,
    /// A rate below zero would pay the seller for selling.
    #[error("commission rate must not be negative")]
    Negative,
    /// Not a plain decimal with an optional `%`.
    #[error("commission rate must be a decimal like 0.1 or 10%, got {0:?}")]
    Malformed(String),
    /// Finer than one part per million, which cannot be applied exactly.
    #[error("commission rate is finer than one part per million")]
    TooPrecise,
    /// Above 100 %.
    #[error("commission rate must be at most 100%")]
    AboveOne,
}

impl CommissionRate {
    /// No commission at all.
    pub const ZERO: CommissionRate = CommissionRate { ppm: 0 };

    /// Builds a rate from parts per million, for callers that already hold an exact value.
    pub const fn from_ppm(ppm: u32) -> Result<CommissionRate, CommissionRateError> {
        if ppm > PPM_PER_ONE {
            Err(CommissionRateError::AboveOne)
        } else {
            Ok(CommissionRate { ppm })
        }
    }

    /// The rate in parts per million (100 % = 1,000,000).
    pub const fn ppm(self) -> u32 {
        self.ppm
    }

    /// The commission on `net_gmv` (minor units), rounded to the nearest minor
    /// unit, ties away from zero; negative when refunds exceed sales.
    pub fn apply(&self, net_gmv: i64) -> i64 {
        let exact = i128::from(net_gmv) * i128::from(self.ppm);
        // |result| <= |net_gmv| because the rate is at most one, so it fits.
        let rounded = div_round(exact, i128::from(PPM_PER_ONE)).unwrap_or(0);
        i64::try_from(rounded).unwrap_or(if rounded < 0 { i64::MIN } else { i64::MAX })
    }
}

impl Default for CommissionRate {
    /// 10 %, the contract's default.
    fn default() -> Self {
        CommissionRate { ppm: 100_000 }
    }
}

/// `numerator / denominator` rounded to the nearest integer, ties away from
/// zero; `None` when the denominator is zero. Shared by every money ratio so
/// they all round the same way.
pub(crate) fn div_round(numerator: i128, denominator: i128) -> Option<i128> {
    if denominator == 0 {
        return None;
    }
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    // `remainder` carries the numerator's sign; compare magnitudes only.
    if remainder.unsigned_abs() * 2 >= denominator.unsigned_abs() {
        let away = if (numerator < 0) == (denominator < 0) {
            1
        } else {
            -1
        };
        Some(quotient + away)
    } else {
        Some(quotient)
    }
}

impl FromStr for CommissionRate {
    type Err = CommissionRateError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        if text.is_empty() {
            return Err(CommissionRateError::Empty);
        }
        let (number, ppm_per_unit) = match text.strip_suffix('%') {
            Some(number) => (number.trim_end(), PPM_PER_PERCENT),
            None => (text, PPM_PER_ONE),
        };
        if number.starts_with('-') {
            return Err(CommissionRateError::Negative);
        }
        let malformed = || CommissionRateError::Malformed(input.to_owned());
        let (whole, fraction) = match number.split_once('.') {
            Some((_, "")) => return Err(malformed()),
            Some((whole, fraction)) => (whole, fraction),
            None => (number, ""),
        };
        let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) {
            return Err(malformed());
        }
        // Bound the digit counts so the integer arithmetic below cannot
        // overflow: any rate <= 100 % has at most three whole digits.
        let whole = whole.trim_start_matches('0');
        let fraction = fraction.trim_end_matches('0');
        if whole.len() > 3 {
            return Err(CommissionRateError::AboveOne);
        }
        if fraction.len() > 6 {
            return Err(CommissionRateError::TooPrecise);
        }
        let mantissa = whole
            .bytes()
            .chain(fraction.bytes())
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'));
        let scale = 10u64.pow(fraction.len() as u32);
        let scaled = mantissa * u64::from(ppm_per_unit);
        if scaled % scale != 0 {
            return Err(CommissionRateError::TooPrecise);
        }
        let ppm = u32::try_from(scaled / scale).map_err(|_| CommissionRateError::AboveOne)?;
        CommissionRate::from_ppm(ppm)
    }
}

impl fmt::Display for CommissionRate {
    /// A percentage (`12.5%`), which parses back to the same rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.ppm / PPM_PER_PERCENT;
        let fraction = self.ppm % PPM_PER_PERCENT;
        if fraction == 0 {
            write!(f, "{whole}%")
        } else {
            let digits = format!("{fraction:04}");
            write!(f, "{whole}.{}%", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for CommissionRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CommissionRate {
    /// Accepts the string forms, and also bare numbers (`commission = 0.1` in
    /// TOML), through [`rate_text`].
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        rate_text(deserializer)?.parse().map_err(de::Error::custom)
    }
}

/// A rate's text as written: a string as it is, a bare number as its
/// shortest decimal form (so `0.1` stays exactly `0.1`), for
/// [`CommissionRate::from_str`] to parse. Also for settings that keep the
/// text and parse it later (`#[serde(deserialize_with = ...)]`).
pub fn rate_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    struct RateText;

    impl Visitor<'_> for RateText {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a commission rate such as \"0.1\" or \"10%\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
    }

    deserializer.deserialize_any(RateText)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> CommissionRate {
        s.parse().unwrap()
    }

    #[test]
    fn parses_fractions_and_percentages() {
        assert_eq!(rate("0.1").ppm(), 100_000);
        assert_eq!(rate("0.125").ppm(), 125_000);
        assert_eq!(rate("10%").ppm(), 100_000);
        assert_eq!(rate("12.5%").ppm(), 125_000);
        assert_eq!(rate(" 12.5 % ").ppm(), 125_000);
        assert_eq!(rate("0").ppm(), 0);
        assert_eq!(rate("1").ppm(), 1_000_000);
        assert_eq!(rate("1.000000000").ppm(), 1_000_000);
        assert_eq!(rate("100%").ppm(), 1_000_000);
        assert_eq!(rate("0.000001").ppm(), 1);
        assert_eq!(rate("0.0001%").ppm(), 1);
        assert_eq!(rate("007.50%").ppm(), 75_000);
    }

    #[test]
    fn refuses_what_it_cannot_represent_exactly() {
        let err = |s: &str| s.parse::<CommissionRate>().unwrap_err();
        assert_eq!(err(""), CommissionRateError::Empty);
        assert_eq!(err("  "), CommissionRateError::Empty);
        assert_eq!(err("-0.1"), CommissionRateError::Negative);
        assert_eq!(err("-5%"), CommissionRateError::Negative);
        assert_eq!(err("1.5"), CommissionRateError::AboveOne);
        assert_eq!(err("100.0001%"), CommissionRateError::AboveOne);
        assert_eq!(err("99999999999999999999"), CommissionRateError::AboveOne);
        assert_eq!(err("0.0000001"), CommissionRateError::TooPrecise);
        assert_eq!(err("0.00001%"), CommissionRateError::TooPrecise);
        for garbage in [
            "abc", "0,1", "1e-1", ".5", "5.", "+0.1", "%", "10%%", "0x10", "1 0", "NaN",
        ] {
            assert!(
                matches!(err(garbage), CommissionRateError::Malformed(_)),
                "{garbage:?} accepted"
            );
        }
    }

    #[test]
    fn defaults_to_ten_percent() {
        assert_eq!(CommissionRate::default(), rate("10%"));
    }

    #[test]
    fn displays_as_a_percentage_that_parses_back() {
        for (ppm, shown) in [
            (0, "0%"),
            (100_000, "10%"),
            (125_000, "12.5%"),
            (1, "0.0001%"),
            (1_000_000, "100%"),
        ] {
            let r = CommissionRate::from_ppm(ppm).unwrap();
            assert_eq!(r.to_string(), shown);
            assert_eq!(rate(shown), r);
        }
        assert_eq!(
            CommissionRate::from_ppm(1_000_001),
            Err(CommissionRateError::AboveOne)
        );
    }

    #[test]
    fn applies_with_half_away_from_zero_rounding() {
        let ten = rate("10%");
        assert_eq!(ten.apply(0), 0);
        assert_eq!(ten.apply(1000), 100);
        assert_eq!(ten.apply(1004), 100);
        assert_eq!(ten.apply(1005), 101); // 100.5: tie goes up
        assert_eq!(ten.apply(1006), 101);
        assert_eq!(ten.apply(-1004), -100);
        assert_eq!(ten.apply(-1005), -101); // tie goes away from zero
        assert_eq!(ten.apply(-1006), -101);
        assert_eq!(rate("12.5%").apply(4), 1); // 0.5
        assert_eq!(rate("12.5%").apply(-4), -1);
        assert_eq!(rate("12.5%").apply(3), 0); // 0.375
        assert_eq!(rate("100%").apply(i64::MAX), i64::MAX);
        assert_eq!(rate("100%").apply(i64::MIN), i64::MIN);
        assert_eq!(rate("0.5").apply(i64::MAX), i64::MAX / 2 + 1);
        assert_eq!(CommissionRate::ZERO.apply(123_456), 0);
    }

    #[test]
    fn div_round_ties_away_from_zero_in_every_quadrant() {
        assert_eq!(div_round(5, 2), Some(3));
        assert_eq!(div_round(-5, 2), Some(-3));
        assert_eq!(div_round(5, -2), Some(-3));
        assert_eq!(div_round(-5, -2), Some(3));
        assert_eq!(div_round(7, 3), Some(2));
        assert_eq!(div_round(8, 3), Some(3));
        assert_eq!(div_round(-8, 3), Some(-3));
        assert_eq!(div_round(1, 0), None);
    }

    #[test]
    fn serde_uses_the_string_form_and_accepts_numbers() {
        let r = rate("12.5%");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"12.5%\"");
        assert_eq!(
            serde_json::from_str::<CommissionRate>("\"0.125\"").unwrap(),
            r
        );
        assert_eq!(serde_json::from_str::<CommissionRate>("0.125").unwrap(), r);
        assert_eq!(
            serde_json::from_str::<CommissionRate>("0.1").unwrap(),
            rate("10%")
        );
        assert_eq!(
            serde_json::from_str::<CommissionRate>("1").unwrap(),
            rate("100%")
        );
        assert!(serde_json::from_str::<CommissionRate>("-0.1").is_err());
        assert!(serde_json::from_str::<CommissionRate>("2").is_err());
        assert!(serde_json::from_str::<CommissionRate>("true").is_err());
    }
}
