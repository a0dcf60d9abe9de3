//! Exact fixed-point numbers for metric sums.
//!
//! A metric keeps `scale` decimal places: each DynamoDB number is parsed exactly (with
//! `rust_decimal`, which reads up to 28 significant digits and scientific notation) and turned into
//! an `i128` count of `10^-scale` units. Sums of those are exact; nothing passes through `f64`.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Parses a DynamoDB number into units of `10^-scale`, or says why it cannot.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i128, String> {
    if let Some(units) = parse_plain_fast(text.as_bytes(), scale) {
        return Ok(units);
    }
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

/// `10^n` for every `n` a `u64` holds.
const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut n = 1;
    while n < 20 {
        table[n] = table[n - 1] * 10;
        n += 1;
    }
    table
};

/// The common case without allocating: `[-]digits[.digits]` with at most `scale` significant
/// decimals and at most 36 digits. `None` sends anything else down the exact general path.
fn parse_plain_fast(text: &[u8], scale: u32) -> Option<i128> {
    let (negative, digits) = match text.first()? {
        b'-' => (true, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 36 {
        return None;
    }
    // Up to 18 digits fit a u64: the common case is summed there, without 128-bit arithmetic.
    let mut small: u64 = 0;
    let mut units: i128 = 0;
    let wide = digits.len() > 18;
    let mut decimals: Option<u32> = None;
    let mut trailing_zeros = 0u32;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                if wide {
                    units = units * 10 + i128::from(b - b'0');
                } else {
                    small = small * 10 + u64::from(b - b'0');
                }
                if let Some(d) = decimals.as_mut() {
                    *d += 1;
                    trailing_zeros = if b == b'0' { trailing_zeros + 1 } else { 0 };
                }
            }
            b'.' if decimals.is_none() => decimals = Some(0),
            _ => return None,
        }
    }
    let mut decimals = decimals.unwrap_or(0);
    if decimals == 0 && digits.last() == Some(&b'.') {
        return None;
    }
    if !wide {
        // In 64 bits when the result fits (no 128-bit multiply or divide).
        let drop = trailing_zeros.min(decimals);
        if decimals - drop > scale {
            return None;
        }
        let up = POW10.get((scale - (decimals - drop)) as usize);
        if let Some(units) = up.and_then(|up| (small / POW10[drop as usize]).checked_mul(*up)) {
            let units = i128::from(units);
            return Some(if negative { -units } else { units });
        }
        units = i128::from(small);
    }
    // Trailing zeros after the point do not count against the scale.
    let drop = trailing_zeros.min(decimals);
    if decimals - drop > scale {
        return None;
    }
    if drop > 0 {
        units /= 10i128.pow(drop);
        decimals -= drop;
    }
    let units = units.checked_mul(10i128.pow(scale - decimals))?;
    Some(if negative { -units } else { units })
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
        assert!(parse_scaled("1.", 2).is_err() || parse_scaled("1.", 2) == Ok(100));
        assert_eq!(parse_scaled("-0", 2), Ok(0));
        assert_eq!(parse_scaled("0.50", 1), Ok(5));
        assert!(parse_scaled("--1", 2).is_err());
        assert!(parse_scaled("1.2.3", 2).is_err());
    }

    #[test]
    fn the_fast_path_agrees_with_rust_decimal() {
        let mut state = 99u64;
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let int = (state >> 20) % 10_000_000;
            let frac_digits = (state >> 8) % 6;
            let frac = (state >> 40) % 10u64.pow(frac_digits as u32);
            let sign = if state.is_multiple_of(3) { "-" } else { "" };
            let text = if frac_digits == 0 {
                format!("{sign}{int}")
            } else {
                format!("{sign}{int}.{frac:0width$}", width = frac_digits as usize)
            };
            for scale in [0, 2, 4, 6] {
                let slow = Decimal::from_str_exact(&text).unwrap().normalize();
                let want = if slow.scale() > scale {
                    None
                } else {
                    Some(slow.mantissa() * 10i128.pow(scale - slow.scale()))
                };
                assert_eq!(
                    parse_scaled(&text, scale).ok(),
                    want,
                    "{text} at scale {scale}"
                );
            }
        }
    }

    #[test]
    fn long_numbers_are_exact_on_both_sides_of_the_u64_fast_path() {
        // 18 digits are summed in a u64, more in an i128: lengths around that and up to 36.
        let mut state = 7u64;
        for _ in 0..5_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 1 + (state >> 33) as usize % 36;
            let digits: String = (0..len)
                .map(|i| {
                    let d = (state.rotate_left(7 * i as u32) >> 11) % 10;
                    char::from(b'0' + d as u8)
                })
                .collect();
            let point = (state >> 17) as usize % (len + 1);
            let text = if point == 0 || point == len {
                digits.clone()
            } else {
                format!("{}.{}", &digits[..point], &digits[point..])
            };
            let decimals = if point == 0 || point == len {
                0
            } else {
                len - point
            } as u32;
            let trailing = text
                .split_once('.')
                .map_or(0, |(_, f)| f.len() - f.trim_end_matches('0').len())
                as u32;
            let whole: i128 = digits.parse().unwrap();
            for scale in [0u32, 2, 6, 12] {
                // Beyond 36 characters the general path decides.
                let want = (decimals - trailing <= scale && text.len() <= 36)
                    .then(|| whole / 10i128.pow(trailing))
                    .and_then(|n| n.checked_mul(10i128.pow(scale - (decimals - trailing))));
                let got = parse_plain_fast(text.as_bytes(), scale);
                assert_eq!(got, want, "{text} at scale {scale}");
                let negative = format!("-{text}");
                assert_eq!(
                    parse_plain_fast(negative.as_bytes(), scale),
                    want.map(|n| -n),
                    "{negative} at scale {scale}"
                );
            }
        }
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
