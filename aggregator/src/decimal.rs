//! Exact fixed-point numbers for metric sums.
//!
//! A metric keeps `scale` decimal places: each DynamoDB number is parsed exactly (plain numbers of
//! up to 36 digits directly, the others with `rust_decimal`, which reads scientific notation and up
//! to 28 significant digits: a number with more is refused, never rounded) and turned into an
//! `i128` count of `10^-scale` units. Sums of those are exact; nothing passes through `f64`.

use std::str::FromStr;

use rust_decimal::Decimal;

/// Parses a DynamoDB number into units of `10^-scale`, or says why it cannot.
pub fn parse_scaled(text: &str, scale: u32) -> Result<i128, String> {
    if let Some(units) = parse_plain_fast(text.as_bytes(), scale) {
        return Ok(units);
    }
    // rust_decimal keeps 28 significant digits and rounds what is beyond (`from_str` and
    // `from_scientific` do so silently): a sum would no longer be exact.
    if significant_digits(text) > 28 {
        return Err(format!(
            "`{text}` has more significant digits than streamlens can sum exactly (28)"
        ));
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

/// The digits of a number's mantissa from its first to its last non-zero digit.
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let digits = mantissa.as_bytes().iter().filter(|b| b.is_ascii_digit());
    let first = digits.clone().position(|&d| d != b'0');
    let last = digits.clone().rev().position(|&d| d != b'0');
    match (first, last) {
        (Some(first), Some(last)) => digits.count() - first - last,
        _ => 0,
    }
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
    if digits.len() <= 19 {
        return read_short(digits, scale).map(|units| if negative { -units } else { units });
    }
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        // A point needs a digit after it.
        Some(at) if at + 1 == digits.len() => return None,
        Some(at) => (&digits[..at], &digits[at + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    // Trailing zeros after the point do not count against the scale (they are digits).
    let zeros = frac.iter().rev().take_while(|&&b| b == b'0').count();
    let frac = &frac[..frac.len() - zeros];
    let decimals = frac.len() as u32;
    let units = if int.len() + frac.len() <= 18 {
        // Up to 18 digits fit a u64: the common case is summed there, without 128-bit arithmetic.
        let small: u64 = read_digits([int, frac])?;
        if decimals > scale {
            return None;
        }
        match POW10
            .get((scale - decimals) as usize)
            .and_then(|up| small.checked_mul(*up))
        {
            Some(units) => i128::from(units),
            None => i128::from(small).checked_mul(10i128.checked_pow(scale - decimals)?)?,
        }
    } else {
        let wide: i128 = read_digits([int, frac])?;
        if decimals > scale {
            return None;
        }
        wide.checked_mul(10i128.checked_pow(scale - decimals)?)?
    };
    Some(if negative { -units } else { units })
}

/// [`parse_plain_fast`] of at most 19 bytes (so at most 19 digits, which a `u64` holds), in one
/// pass: the digits read as one number, the point noted on the way.
#[inline(always)]
fn read_short(digits: &[u8], scale: u32) -> Option<i128> {
    let (mut n, mut point) = (0u64, None);
    for (at, &b) in digits.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit <= 9 {
            n = n * 10 + u64::from(digit);
        } else if b == b'.' && point.is_none() {
            point = Some(at);
        } else {
            return None;
        }
    }
    let mut decimals = match point {
        // A point needs a digit after it.
        Some(at) if at + 1 == digits.len() => return None,
        Some(at) => (digits.len() - at - 1) as u32,
        None => 0,
    };
    // Trailing zeros after the point do not count against the scale: only decimals beyond it
    // are dropped, each a zero or the number is refused.
    while decimals > scale {
        if n % 10 != 0 {
            return None;
        }
        n /= 10;
        decimals -= 1;
    }
    match POW10
        .get((scale - decimals) as usize)
        .and_then(|up| n.checked_mul(*up))
    {
        Some(units) => Some(i128::from(units)),
        None => i128::from(n).checked_mul(10i128.checked_pow(scale - decimals)?),
    }
}

/// The digits of `parts`, one after the other, as one number (the caller makes sure it fits), or
/// `None` at a byte that is not a digit.
#[inline(always)]
fn read_digits<T>(parts: [&[u8]; 2]) -> Option<T>
where
    T: From<u8> + std::ops::Mul<Output = T> + std::ops::Add<Output = T>,
{
    let mut n = T::from(0);
    for part in parts {
        for &b in part {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return None;
            }
            n = n * T::from(10) + T::from(digit);
        }
    }
    Some(n)
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
        assert_eq!(parse_scaled(".5", 2), Ok(50));
        assert_eq!(parse_scaled("007.10", 2), Ok(710));
        for bad in ["-", ".", "1.2.3", "1-", "--1", "1 ", ""] {
            assert!(parse_scaled(bad, 2).is_err(), "{bad}");
        }
        assert_eq!(parse_scaled("1", 30), Ok(10i128.pow(30)));
        assert_eq!(
            parse_scaled("123456789012345678901234567", 2),
            Ok(12345678901234567890123456700)
        );
        // Beyond what rust_decimal holds exactly: refused, not rounded.
        for long in [
            "1.2345678901234567890123456789012e3",
            "9300604667634000000000077.800110",
            "12345678901234567890123456789012345678",
        ] {
            let err = parse_scaled(long, 2).unwrap_err();
            assert!(err.contains("significant digits"), "{long}: {err}");
        }
        assert_eq!(
            parse_scaled("1.50000000000000000000000000000000e2", 0),
            Ok(150)
        );
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
            let long = format!("{}{:0>12}", (state >> 3) % 10_000_000_000_000, state % 1000);
            let odd = [
                format!("{text}000"),
                format!("00{text}"),
                format!("{long}.{frac}0"),
                format!("-{long}"),
            ];
            // Longer than rust_decimal reads, and with zeros around: checked against the text
            // itself, normalized by hand.
            for text in odd.iter().filter(|t| t.rfind('-').is_none_or(|at| at == 0)) {
                let (sign, digits) = match text.strip_prefix('-') {
                    Some(digits) => ("-", digits),
                    None => ("", text.as_str()),
                };
                let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
                let (int, frac) = (int.trim_start_matches('0'), frac.trim_end_matches('0'));
                let int = if int.is_empty() { "0" } else { int };
                let normal = match (int, frac) {
                    ("0", "") => "0".to_owned(),
                    (int, "") => format!("{sign}{int}"),
                    (int, frac) => format!("{sign}{int}.{frac}"),
                };
                for scale in [0, 2, 9] {
                    let got = parse_scaled(text, scale).map(|units| format_scaled(units, scale));
                    if frac.len() as u32 <= scale {
                        assert_eq!(got, Ok(normal.clone()), "{text} at scale {scale}");
                    } else {
                        assert!(got.is_err(), "{text} at scale {scale}");
                    }
                }
            }
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
