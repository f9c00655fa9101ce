//! Object identifiers: BLAKE3-256, printed as `blake3:<64 lowercase hex>`.
//!
//! Imports nothing of the crate.

use std::fmt;
use std::str::FromStr;

/// A BLAKE3-256 digest naming a chunk, file, pack or other object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

/// Why a string is not an object id; the message says what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed object id {input:?}: expected `blake3:` followed by 64 lowercase hex digits (as printed by `hoard add` or `b3sum`)")]
pub struct ParseIdError {
    input: String,
}

impl Id {
    pub const LEN: usize = 32;

    /// The id of `data`.
    pub fn of(data: &[u8]) -> Id {
        Id(*blake3::hash(data).as_bytes())
    }

    pub fn from_slice(b: &[u8]) -> Option<Id> {
        <[u8; 32]>::try_from(b).ok().map(Id)
    }

    /// 64 lowercase hex digits, without prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses `blake3:<hex>` or bare `<hex>`; hex must be lowercase so that
    /// one object has exactly one spelling.
    pub fn parse(s: &str) -> Result<Id, ParseIdError> {
        let err = || ParseIdError {
            input: s.chars().take(100).collect(),
        };
        let h = s.strip_prefix("blake3:").unwrap_or(s);
        if h.len() != 64 || !h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(h, &mut out).map_err(|_| err())?;
        Ok(Id(out))
    }
}

impl From<blake3::Hash> for Id {
    fn from(h: blake3::Hash) -> Id {
        Id(*h.as_bytes())
    }
}

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Id, ParseIdError> {
        Id::parse(s)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "blake3:{}", self.hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_input_matches_b3sum() {
        assert_eq!(
            Id::of(b"").hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "blake3:",
            "blake3:xyz",
            "sha256:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262",
            "blake3:AF1349B9F5F9A1A6A0404DEA36DCC9499BCB25C9ADC112B7CC9A93CAE41F3262",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f326",
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262ff",
            "blake3:ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé",
        ] {
            assert!(Id::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(b in any::<[u8; 32]>()) {
            let id = Id(b);
            prop_assert_eq!(Id::parse(&id.to_string()).unwrap(), id);
            prop_assert_eq!(Id::parse(&id.hex()).unwrap(), id);
        }
    }
}
