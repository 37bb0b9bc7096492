//! Resource quantities (`100m`, `1.5Gi`, `128974848`, `129e6`) parsed exactly, as
//! Kubernetes' `resource.Quantity`, without floating point.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// The regular expression Kubernetes quotes when a quantity is malformed.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Nano-units per unit: quantities are held exactly at nano precision.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// Why a string is not a quantity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The number or suffix does not have Kubernetes' shape.
    #[error("quantities must match the regular expression '{QUANTITY_REGEX}'")]
    Format,
    /// The suffix is shaped right but is not a known unit (`5Xi`).
    #[error("unable to parse quantity's suffix")]
    Suffix,
    /// The value is too large to be represented.
    #[error("quantity is too large")]
    TooLarge,
}

/// Which family of suffixes a quantity was written with; kept for formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantityFormat {
    /// Powers of two: `Ki`, `Mi`, `Gi`, `Ti`, `Pi`, `Ei`.
    BinarySi,
    /// Powers of ten by suffix: `n`, `u`, `m`, none, `k`, `M`, `G`, `T`, `P`, `E`.
    DecimalSi,
    /// Powers of ten by exponent: `1e3`, `129E6`.
    DecimalExponent,
}

/// A parsed quantity: an exact value in nano-units plus the suffix family it came with.
#[derive(Clone, Copy, Debug)]
pub struct Quantity {
    nanos: i128,
    format: QuantityFormat,
}

impl Quantity {
    /// Parses Kubernetes' quantity syntax.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match input.as_bytes().first() {
            Some(b'-') => (true, &input[1..]),
            Some(b'+') => (false, &input[1..]),
            _ => (false, input),
        };
        let number_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let (number, suffix) = rest.split_at(number_len);
        let (int_digits, frac_digits) = number.split_once('.').unwrap_or((number, ""));
        if (int_digits.is_empty() && frac_digits.is_empty()) || frac_digits.contains('.') {
            return Err(QuantityError::Format);
        }
        let (binary_shift, mut exponent10, format) = parse_suffix(suffix)?;

        // Value = digits × 10^(exponent10 − len(frac)) × 2^binary_shift, held as nanos.
        let mut mantissa: i128 = 0;
        for digit in int_digits.bytes().chain(frac_digits.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(i128::from(digit - b'0')))
                .ok_or(QuantityError::TooLarge)?;
        }
        exponent10 -= i32::try_from(frac_digits.len()).map_err(|_| QuantityError::TooLarge)?;
        mantissa = mantissa
            .checked_shl(binary_shift)
            .filter(|m| m >> binary_shift == mantissa)
            .ok_or(QuantityError::TooLarge)?;
        let nanos = scale_by_power_of_ten(mantissa, exponent10 + 9)?;
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The value in milli-units, rounded up (away from zero), as Kubernetes' `MilliValue`.
    pub fn milli_value(&self) -> i128 {
        div_ceil_away(self.nanos, 1_000_000)
    }

    /// The value in whole units, rounded up (away from zero), as Kubernetes' `Value`.
    pub fn value(&self) -> i128 {
        div_ceil_away(self.nanos, NANOS_PER_UNIT)
    }

    /// The exact value in nano-units.
    pub fn nano_value(&self) -> i128 {
        self.nanos
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// The suffix family the quantity was written with.
    pub fn format(&self) -> QuantityFormat {
        self.format
    }
}

/// Splits a suffix into (power of two, power of ten, format).
fn parse_suffix(suffix: &str) -> Result<(u32, i32, QuantityFormat), QuantityError> {
    use QuantityFormat::{BinarySi, DecimalExponent, DecimalSi};
    let decimal = |exp| Ok((0, exp, DecimalSi));
    let binary = |shift| Ok((shift, 0, BinarySi));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let Some(exponent) = suffix.strip_prefix(['e', 'E']) else {
                return Err(suffix_error(suffix));
            };
            let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(suffix_error(suffix));
            }
            // Positive exponents beyond 60 are far outside anything a resource can hold;
            // negative ones that large round up to the finest unit, as in Kubernetes.
            let value: i64 = exponent.parse().map_err(|_| QuantityError::TooLarge)?;
            if value > 60 {
                return Err(QuantityError::TooLarge);
            }
            let value = i32::try_from(value.max(-60)).expect("clamped to -60..=60");
            Ok((0, value, DecimalExponent))
        }
    }
}

/// A suffix made only of the regex's characters is an unknown unit; anything else is malformed.
fn suffix_error(suffix: &str) -> QuantityError {
    let shaped = suffix.trim_end_matches(|c: char| c.is_ascii_digit());
    let shaped = shaped.trim_end_matches(['+', '-']);
    if shaped.chars().all(|c| "eEinumkKMGTP".contains(c)) {
        QuantityError::Suffix
    } else {
        QuantityError::Format
    }
}

/// `value × 10^exp`, rounding up (away from zero) when `exp` is negative.
fn scale_by_power_of_ten(value: i128, exp: i32) -> Result<i128, QuantityError> {
    let factor = 10_i128.checked_pow(exp.unsigned_abs());
    if exp >= 0 {
        factor
            .and_then(|f| value.checked_mul(f))
            .ok_or(QuantityError::TooLarge)
    } else {
        // A divisor beyond i128 makes any representable value round up to one nano (or zero).
        Ok(factor.map_or(i128::from(value != 0), |f| div_ceil_away(value, f)))
    }
}

fn div_ceil_away(value: i128, divisor: i128) -> i128 {
    let quotient = value / divisor;
    if value % divisor == 0 {
        quotient
    } else if value > 0 {
        quotient + 1
    } else {
        quotient - 1
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Quantity {
    /// Formats in the quantity's own suffix family, using the largest exact suffix
    /// (Kubernetes' canonical form: `1.5Gi` → `1536Mi`, `0.5` → `500m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        if magnitude == 0 {
            return f.write_str("0");
        }
        if self.format == QuantityFormat::BinarySi
            && magnitude.is_multiple_of(NANOS_PER_UNIT.unsigned_abs())
        {
            let units = magnitude / NANOS_PER_UNIT.unsigned_abs();
            let suffixes = [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ];
            for (shift, suffix) in suffixes {
                if units != 0 && units.is_multiple_of(1u128 << shift) {
                    return write!(f, "{sign}{}{suffix}", units >> shift);
                }
            }
            if units < 1024 {
                return write!(f, "{sign}{units}");
            }
        }
        let suffixes = if self.format == QuantityFormat::DecimalExponent {
            [
                (27, "e18"),
                (24, "e15"),
                (21, "e12"),
                (18, "e9"),
                (15, "e6"),
                (12, "e3"),
                (9, ""),
                (6, "e-3"),
                (3, "e-6"),
            ]
        } else {
            [
                (27, "E"),
                (24, "P"),
                (21, "T"),
                (18, "G"),
                (15, "M"),
                (12, "k"),
                (9, ""),
                (6, "m"),
                (3, "u"),
            ]
        };
        for (exp, suffix) in suffixes {
            let unit = 10u128.pow(exp);
            if magnitude.is_multiple_of(unit) {
                return write!(f, "{sign}{}{suffix}", magnitude / unit);
            }
        }
        write!(f, "{sign}{magnitude}n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_nanos: Result<i128, QuantityError>) {
        assert_eq!(
            Quantity::parse(input).map(|q| q.nano_value()),
            expected_nanos,
            "input {input:?}"
        );
    }

    #[test]
    fn parses_every_suffix_family() {
        const G: i128 = NANOS_PER_UNIT;
        check("100m", Ok(100_000_000));
        check("1", Ok(G));
        check("0.5", Ok(G / 2));
        check(".5", Ok(G / 2));
        check("1.", Ok(G));
        check("+2", Ok(2 * G));
        check("-2", Ok(-2 * G));
        check("1.5Gi", Ok(1_610_612_736 * G));
        check("128974848", Ok(128_974_848 * G));
        check("129e6", Ok(129_000_000 * G));
        check("129E6", Ok(129_000_000 * G));
        check("123Mi", Ok(123 * 1_048_576 * G));
        check("1k", Ok(1000 * G));
        check("1Ki", Ok(1024 * G));
        check("1E", Ok(1_000_000_000_000_000_000 * G));
        check("1Ei", Ok((1_i128 << 60) * G));
        check("5n", Ok(5));
        check("7u", Ok(7000));
        check("1e-3", Ok(1_000_000));
        check("0.1n", Ok(1)); // rounded up to the finest unit
        check("1e+2", Ok(100 * G));
        check("1e-2147483648", Ok(1)); // tiny values round up to 1n, no overflow
        check("1e-99999999999999999999", Err(QuantityError::TooLarge));
    }

    #[test]
    fn rejects_malformed_quantities() {
        for bad in ["", "abc", ".", "1..2", "1.2.3", "Mi", "--1", "1 Gi", "1Gb"] {
            assert_eq!(
                Quantity::parse(bad).err(),
                Some(QuantityError::Format),
                "input {bad:?}"
            );
        }
        for bad_suffix in ["5Ti3", "1mi", "1KK", "1e", "1e+"] {
            assert_eq!(
                Quantity::parse(bad_suffix).err(),
                Some(QuantityError::Suffix),
                "input {bad_suffix:?}"
            );
        }
        check("1e99", Err(QuantityError::TooLarge));
        check(
            "999999999999999999999999999999999999999999",
            Err(QuantityError::TooLarge),
        );
    }

    #[test]
    fn rounds_milli_and_unit_values_up() {
        let q = Quantity::parse("1.0001").unwrap();
        assert_eq!(q.milli_value(), 1001);
        assert_eq!(q.value(), 2);
        assert_eq!(Quantity::parse("250m").unwrap().milli_value(), 250);
        assert_eq!(Quantity::parse("1.5Gi").unwrap().value(), 1_610_612_736);
        assert!(Quantity::parse("-1").unwrap().is_negative());
    }

    #[test]
    fn compares_across_formats() {
        assert_eq!(
            Quantity::parse("1Ki").unwrap(),
            Quantity::parse("1024").unwrap()
        );
        assert!(Quantity::parse("500m").unwrap() < Quantity::parse("1").unwrap());
        assert!(Quantity::parse("1G").unwrap() < Quantity::parse("1Gi").unwrap());
    }

    #[test]
    fn formats_canonically() {
        for (input, canonical) in [
            ("1.5Gi", "1536Mi"),
            ("0.5", "500m"),
            ("1000", "1k"),
            ("100m", "100m"),
            ("129e6", "129e6"),
            ("1Gi", "1Gi"),
            ("0", "0"),
            ("-2Ki", "-2Ki"),
        ] {
            assert_eq!(
                Quantity::parse(input).unwrap().to_string(),
                canonical,
                "input {input:?}"
            );
        }
    }
}
