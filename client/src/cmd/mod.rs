//! One module per group of verbs.
pub mod add;
pub mod daemon;
pub mod dataset;
pub mod git;
pub mod migrate;
pub mod peer;
pub mod prune;
pub mod read;
pub mod store;
pub mod sync;

use anyhow::bail;

/// Parses `blake3:<hex>` (or bare hex) into the 32 raw bytes the API wants.
pub fn parse_oid(s: &str) -> anyhow::Result<Vec<u8>> {
    let h = s.strip_prefix("blake3:").unwrap_or(s);
    if h.len() != 64 || !h.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        bail!(
            "malformed object id {:?}: expected `blake3:` followed by 64 lowercase hex digits (as printed by `hoard add` or `b3sum`)",
            s.chars().take(100).collect::<String>()
        );
    }
    Ok(hex::decode(h)?)
}

pub fn oid_string(b: &[u8]) -> String {
    format!("blake3:{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_parsing() {
        let hex = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
        assert_eq!(
            oid_string(&parse_oid(&format!("blake3:{hex}")).unwrap()),
            format!("blake3:{hex}")
        );
        assert!(parse_oid(hex).is_ok());
        for bad in [
            "",
            "blake3:12",
            &hex.to_uppercase(),
            &format!("sha256:{hex}"),
        ] {
            assert!(parse_oid(bad).is_err(), "{bad}");
        }
    }
}
