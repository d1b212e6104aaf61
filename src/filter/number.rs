//! [`Number`]: a number as JSON carries it, with the one order every comparison, the index and
//! record sorting use. It knows nothing of rhai or of expressions.
//!
//! Integers are held exactly across the whole 64-bit range, signed and unsigned
//! (`i64::MIN..=u64::MAX`), so ids beyond 2^53 compare exactly (DESIGN.md §15); floats are
//! floats. Two numbers compare by their exact mathematical values, including an integer against
//! a float (`2^53 + 1` is above the float `2^53`, `18` equals `18.0`): equality is therefore an
//! equivalence and [`Hash`] agrees with it, which the index relies on.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A finite number: an integer of 64 bits (signed or unsigned), exactly, or a float.
#[derive(Clone, Copy, Debug)]
pub struct Number(Repr);

#[derive(Clone, Copy, Debug)]
enum Repr {
    Int(i64),
    /// Only above `i64::MAX`: every integer has one representation.
    Big(u64),
    /// Never NaN or infinite.
    Float(f64),
}

/// `2^64` and `-2^63` as floats (both exact): the float bounds of the integer range.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

impl Number {
    pub fn from_i64(n: i64) -> Self {
        Self(Repr::Int(n))
    }

    pub fn from_u64(n: u64) -> Self {
        match i64::try_from(n) {
            Ok(n) => Self(Repr::Int(n)),
            Err(_) => Self(Repr::Big(n)),
        }
    }

    /// `None` for NaN and infinities.
    pub fn from_f64(n: f64) -> Option<Self> {
        n.is_finite().then_some(Self(Repr::Float(n)))
    }

    /// The number serde_json holds, exactly.
    pub fn from_json(n: &serde_json::Number) -> Option<Self> {
        if let Some(n) = n.as_i64() {
            Some(Self::from_i64(n))
        } else if let Some(n) = n.as_u64() {
            Some(Self::from_u64(n))
        } else {
            Self::from_f64(n.as_f64()?)
        }
    }

    /// An integer written in decimal digits (`-` allowed in front), if it fits in 64 bits.
    pub fn parse_integer(text: &str) -> Option<Self> {
        if text.starts_with('+') {
            return None;
        }
        if let Ok(n) = text.parse::<i64>() {
            return Some(Self::from_i64(n));
        }
        text.parse::<u64>().ok().map(Self::from_u64)
    }

    /// Text in exactly JSON's number syntax (`-12`, `3.5`, `1e3`; no spaces, no `+`, no `inf`),
    /// read as serde_json reads it: an integer without a fraction or exponent that fits in 64
    /// bits is exact, anything else is a float. `None` when the syntax is not JSON's or the
    /// value is not finite.
    pub fn parse_json(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        let mut i = 0;
        let digits = |i: &mut usize| {
            let start = *i;
            while *i < bytes.len() && bytes[*i].is_ascii_digit() {
                *i += 1;
            }
            *i > start
        };
        if bytes.first() == Some(&b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return None;
        }
        let integer = i == bytes.len();
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
        }
        if i != bytes.len() {
            return None;
        }
        if integer && let Some(n) = Self::parse_integer(text) {
            return Some(n);
        }
        Self::from_f64(text.parse().ok()?)
    }

    /// The `i64`, when it is one.
    pub fn as_i64(self) -> Option<i64> {
        match self.0 {
            Repr::Int(n) => Some(n),
            Repr::Big(_) | Repr::Float(_) => None,
        }
    }

    /// The integer above `i64::MAX`, when it is one.
    pub fn as_big(self) -> Option<u64> {
        match self.0 {
            Repr::Big(n) => Some(n),
            Repr::Int(_) | Repr::Float(_) => None,
        }
    }

    /// The float, when it is one.
    pub fn as_float(self) -> Option<f64> {
        match self.0 {
            Repr::Float(n) => Some(n),
            Repr::Int(_) | Repr::Big(_) => None,
        }
    }

    /// The text `LIKE` matches a number against: integers in full, floats as Rust prints them
    /// (`2.5`, `18` for `18.0`, no exponent).
    pub fn plain_text(self) -> String {
        match self.0 {
            Repr::Int(n) => n.to_string(),
            Repr::Big(n) => n.to_string(),
            Repr::Float(n) => n.to_string(),
        }
    }

    /// The value as an integer when it is one within the 64-bit range (a float like `18.0`
    /// included), else the float: the canonical form that equality and hashing follow.
    fn canonical(self) -> Canonical {
        match self.0 {
            Repr::Int(n) => Canonical::Integer(i128::from(n)),
            Repr::Big(n) => Canonical::Integer(i128::from(n)),
            Repr::Float(n) if n.fract() == 0.0 && (MINUS_TWO_POW_63..TWO_POW_64).contains(&n) => {
                // In range and integral: the conversion is exact.
                Canonical::Integer(n as i128)
            }
            Repr::Float(n) => Canonical::Float(n),
        }
    }
}

enum Canonical {
    Integer(i128),
    Float(f64),
}

/// The exact order of an integer in the 64-bit range and a finite float.
fn integer_vs_float(i: i128, f: f64) -> Ordering {
    if f >= TWO_POW_64 {
        return Ordering::Less;
    }
    if f < MINUS_TWO_POW_63 {
        return Ordering::Greater;
    }
    // Within the range, the float's integer part converts exactly.
    let whole = f.trunc();
    i.cmp(&(whole as i128)).then(if f > whole {
        Ordering::Less
    } else if f < whole {
        Ordering::Greater
    } else {
        Ordering::Equal
    })
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.canonical(), other.canonical()) {
            (Canonical::Integer(a), Canonical::Integer(b)) => a.cmp(&b),
            (Canonical::Integer(a), Canonical::Float(b)) => integer_vs_float(a, b),
            (Canonical::Float(a), Canonical::Integer(b)) => integer_vs_float(b, a).reverse(),
            (Canonical::Float(a), Canonical::Float(b)) => a.total_cmp(&b),
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Number {}

impl Hash for Number {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.canonical() {
            Canonical::Integer(n) => n.hash(state),
            // Not integral or outside the integer range: never equal to an integer, and `-0`
            // (integral) never gets here, so the bits identify the value.
            Canonical::Float(n) => n.to_bits().hash(state),
        }
    }
}

/// The text an expression writes it in, which reads back as the same number: integers in full,
/// floats always with a `.` or an exponent (`18.0`, `2.5`, `1e300`).
impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Repr::Int(n) => write!(f, "{n}"),
            Repr::Big(n) => write!(f, "{n}"),
            Repr::Float(n) => write!(f, "{n:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i128) -> Number {
        match i64::try_from(n) {
            Ok(n) => Number::from_i64(n),
            Err(_) => Number::from_u64(u64::try_from(n).unwrap()),
        }
    }

    fn float(n: f64) -> Number {
        Number::from_f64(n).unwrap()
    }

    #[test]
    fn integers_compare_exactly_across_64_bits() {
        let two_53 = 1_i128 << 53;
        assert_ne!(int(two_53 + 1), int(two_53));
        assert!(int(two_53 + 1) > int(two_53));
        assert!(int(i128::from(u64::MAX)) > int(i128::from(u64::MAX) - 1));
        assert!(int(i128::from(i64::MIN)) < int(i128::from(i64::MIN) + 1));
        assert!(int(i128::from(i64::MAX) + 1) > int(i128::from(i64::MAX)));
        assert_eq!(Number::from_u64(5), Number::from_i64(5));
    }

    #[test]
    fn integers_and_floats_compare_by_exact_value() {
        let two_53 = 1_i128 << 53;
        assert_eq!(int(18), float(18.0));
        assert_eq!(int(0), float(-0.0));
        assert_ne!(int(two_53 + 1), float(two_53 as f64));
        assert!(int(two_53 + 1) > float(two_53 as f64));
        assert!(float(two_53 as f64) < int(two_53 + 1));
        assert!(int(2) < float(2.5) && float(2.5) < int(3));
        assert!(int(-3) < float(-2.5) && float(-2.5) < int(-2));
        assert!(int(i128::from(u64::MAX)) < float(TWO_POW_64));
        assert!(int(i128::from(i64::MIN)) == float(MINUS_TWO_POW_63));
        assert!(int(i128::from(i64::MIN)) > float(-1e30));
        assert!(int(i128::from(u64::MAX)) < float(1e30));
    }

    #[test]
    fn equal_numbers_hash_alike() {
        use std::collections::HashSet;
        let set: HashSet<Number> = [int(18), float(18.0), float(-0.0), int(0), float(0.5)].into();
        assert_eq!(set.len(), 3);
        assert!(set.contains(&float(18.0)) && set.contains(&int(18)));
    }

    #[test]
    fn parses_json_syntax_exactly() {
        let cases = [
            ("9007199254740993", Some(int((1 << 53) + 1))),
            ("18446744073709551615", Some(int(i128::from(u64::MAX)))),
            ("-9223372036854775808", Some(int(i128::from(i64::MIN)))),
            ("18446744073709551616", Some(float(TWO_POW_64))),
            ("18.0", Some(float(18.0))),
            ("1e3", Some(float(1e3))),
            ("-0", Some(int(0))),
            ("+1", None),
            ("1.", None),
            (" 1", None),
            ("1e400", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(Number::parse_json(text), expected, "{text}");
        }
        assert_eq!(Number::parse_json("18.0").unwrap().as_float(), Some(18.0));
        assert_eq!(Number::parse_integer("+1"), None);
    }

    #[test]
    fn display_reads_back_as_the_same_number() {
        for n in [
            int(18),
            int(-(1 << 60)),
            int(i128::from(u64::MAX)),
            float(18.0),
            float(1e300),
        ] {
            let text = n.to_string();
            let back = Number::parse_json(&text).unwrap();
            assert_eq!(back, n, "{text}");
            assert_eq!(back.as_float().is_some(), n.as_float().is_some(), "{text}");
        }
        assert_eq!(float(18.0).plain_text(), "18");
        assert_eq!(
            int(i128::from(u64::MAX)).plain_text(),
            "18446744073709551615"
        );
    }
}
