//! WAL positions (`pg_lsn`) as comparable values.

use std::fmt;
use std::str::FromStr;

/// A WAL log sequence number, e.g. `0/3000148`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

/// The text was not a `pg_lsn` (`hex/hex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pg_lsn: {0:?}")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || LsnParseError(text.to_string());
        let (high, low) = text.trim().split_once('/').ok_or_else(invalid)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| invalid())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| invalid())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        let a: Lsn = "0/3000148".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert_eq!(a.0, 0x3000148);
        assert_eq!(b.0, 1 << 32);
        assert!(a < b);
        assert_eq!(b.to_string(), "1/0");
        assert_eq!(a.to_string(), "0/3000148");
    }

    #[test]
    fn rejects_garbage() {
        assert!("".parse::<Lsn>().is_err());
        assert!("0x10".parse::<Lsn>().is_err());
        assert!("g/1".parse::<Lsn>().is_err());
    }
}
