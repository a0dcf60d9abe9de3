//! Exact fixed-point numbers for metric sums.
//!
//! A metric keeps `scale` decimal places: each DynamoDB number is parsed exactly (with
//! `rust_decimal`, which reads up to 28 significant digits and scientific notation) and turned into
//! an `i128` count of `10^-scale` units. Sums of those are exact; nothing passes through `f64`.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Parses a DynamoDB number into units of `10^-scale`, or says why it cannot.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i128, String> {
    let value = Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .or_else(|_| Decimal::from_str(text))
        .map_err(|e| format!("`{text}` is not a number streamlens can sum exactly: {e}"))?
        .normalize();
    if value.scale() > scale {
        return Err(format!(
            "`{text}` has {} decimal places, more than the metric's scale of {scale}",
            value.scale()
        ));
    }
    value
        .mantissa()
        .checked_mul(10i128.pow(scale - value.scale()))
        .ok_or_else(|| format!("`{text}` is too large for scale {scale}"))
}

/// Formats units of `10^-scale` as a plain decimal without trailing zeros (`12.5`, `-3`, `0`).
pub fn format_scaled(units: i128, scale: u32) -> String {
    let negative = units < 0;
    let digits = units.unsigned_abs().to_string();
    let scale = scale as usize;
    let (int, frac) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("0", digits.as_str())
    };
    let frac = format!("{frac:0>scale$}");
    let frac = frac.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_is_exact_and_refuses_to_round() {
        assert_eq!(parse_scaled("12.5", 2), Ok(1250));
        assert_eq!(parse_scaled("-0.01", 2), Ok(-1));
        assert_eq!(parse_scaled("1.5E+3", 0), Ok(1500));
        assert_eq!(parse_scaled("100.00", 0), Ok(100));
        assert!(parse_scaled("0.125", 2)
            .unwrap_err()
            .contains("3 decimal places"));
        assert!(parse_scaled("abc", 2).is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for (units, scale, text) in [
            (1250, 2, "12.5"),
            (-1, 2, "-0.01"),
            (0, 6, "0"),
            (-300, 2, "-3"),
            (7, 0, "7"),
        ] {
            assert_eq!(format_scaled(units, scale), text);
            assert_eq!(parse_scaled(text, scale), Ok(units));
        }
    }
}
