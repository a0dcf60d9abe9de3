//! Byte comparisons for the hot paths.

/// `a == b` without a call to `memcmp` (which was a measurable part of decoding and combining:
/// names, shard ids, dimension values and the fixed text of line shapes are short): overlapping
/// word loads.
#[inline(always)]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
        s[at..at + N].try_into().unwrap_or([0; N])
    }
    match n {
        0 => true,
        1..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=8 => word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4),
        9..=16 => word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8),
        17..=32 => {
            word::<16>(a, 0) == word::<16>(b, 0) && word::<16>(a, n - 16) == word::<16>(b, n - 16)
        }
        // Longer (the fixed text of a line shape): 16 bytes at a time, the last word overlapping.
        _ => {
            let mut at = 0;
            while at + 16 < n {
                if word::<16>(a, at) != word::<16>(b, at) {
                    return false;
                }
                at += 16;
            }
            word::<16>(a, n - 16) == word::<16>(b, n - 16)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every length up to 40, equal and with one byte changed at each position.
    #[test]
    fn same_is_equality() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same(&a, &b), "length {n}, byte {at}");
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same(&a, &longer));
        }
    }
}
