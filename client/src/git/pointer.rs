//! The pointer file committed to git in place of content — the one parser
//! and the one writer of its format (DESIGN.md, "Git integration"):
//!
//! ```text
//! version hoard/1
//! oid blake3:<64 lowercase hex>
//! size <decimal bytes, no leading zeros>
//! ```
//!
//! Exactly these three lines, in this order, each ending in `\n`. Anything
//! else is not a pointer and passes through smudge untouched: a file that
//! merely looks like a pointer is never mangled.

use std::fmt;

/// Longest text that can be a pointer; anything longer is content.
pub const MAX_LEN: usize = 200;

const VERSION_LINE: &str = "version hoard/1\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pointer {
    pub oid: [u8; 32],
    pub size: u64,
}

impl Pointer {
    /// The pointer's bytes, as committed.
    pub fn encode(&self) -> String {
        format!(
            "{VERSION_LINE}oid blake3:{}\nsize {}\n",
            hex::encode(self.oid),
            self.size
        )
    }

    /// `blake3:<hex>`, as `hoard add` and `b3sum` print ids.
    pub fn oid_string(&self) -> String {
        format!("blake3:{}", hex::encode(self.oid))
    }

    /// Parses a pointer; `None` for anything that is not exactly one.
    pub fn parse(b: &[u8]) -> Option<Pointer> {
        Self::check(b).ok()
    }

    /// Parses a pointer, or says why the bytes are not one.
    pub fn check(b: &[u8]) -> Result<Pointer, NotPointer> {
        if b.len() > MAX_LEN {
            return Err(NotPointer::TooLong(b.len()));
        }
        let text = std::str::from_utf8(b).map_err(|_| NotPointer::Malformed("not UTF-8"))?;
        let rest = text
            .strip_prefix(VERSION_LINE)
            .ok_or(NotPointer::Malformed("first line is not `version hoard/1`"))?;
        let rest = rest
            .strip_prefix("oid blake3:")
            .ok_or(NotPointer::Malformed(
                "second line is not `oid blake3:<hex>`",
            ))?;
        let (hex_part, rest) = rest
            .split_once('\n')
            .ok_or(NotPointer::Malformed("oid line is not terminated"))?;
        if hex_part.len() != 64
            || !hex_part
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(NotPointer::Malformed("oid is not 64 lowercase hex digits"));
        }
        let mut oid = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut oid)
            .map_err(|_| NotPointer::Malformed("oid is not hex"))?;
        let size = rest
            .strip_prefix("size ")
            .and_then(|r| r.strip_suffix('\n'))
            .ok_or(NotPointer::Malformed(
                "third and last line is not `size <bytes>`",
            ))?;
        let canonical = !size.is_empty()
            && size.bytes().all(|c| c.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        if !canonical {
            return Err(NotPointer::Malformed(
                "size is not a decimal number without leading zeros",
            ));
        }
        let size = size
            .parse::<u64>()
            .map_err(|_| NotPointer::Malformed("size does not fit in 64 bits"))?;
        Ok(Pointer { oid, size })
    }
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// Why some bytes are not a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotPointer {
    TooLong(usize),
    Malformed(&'static str),
}

impl fmt::Display for NotPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotPointer::TooLong(n) => write!(f, "{n} bytes, longer than any pointer"),
            NotPointer::Malformed(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    fn text(size: &str) -> String {
        format!("version hoard/1\noid blake3:{HEX}\nsize {size}\n")
    }

    #[test]
    fn the_canonical_form_parses_and_is_written_back_identically() {
        let t = text("12345");
        let p = Pointer::parse(t.as_bytes()).unwrap();
        assert_eq!(p.size, 12345);
        assert_eq!(hex::encode(p.oid), HEX);
        assert_eq!(p.encode(), t);
        assert!(p.encode().len() < MAX_LEN);
        assert_eq!(Pointer::parse(text("0").as_bytes()).unwrap().size, 0);
        let max = text(&u64::MAX.to_string());
        assert_eq!(Pointer::parse(max.as_bytes()).unwrap().size, u64::MAX);
    }

    #[test]
    fn anything_else_is_not_a_pointer() {
        let upper = format!(
            "version hoard/1\noid blake3:{}\nsize 1\n",
            HEX.to_uppercase()
        );
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (text("1").replace('\n', "\r\n"), "CRLF"),
            (text("1").trim_end().to_string(), "no final newline"),
            (text("01"), "leading zero"),
            (text("-1"), "negative"),
            (text("+1"), "plus sign"),
            (text(" 1"), "extra space"),
            (text("1 "), "trailing space"),
            (text("18446744073709551616"), "huge size"),
            (text("99999999999999999999999"), "huger size"),
            (text(""), "empty size"),
            (upper, "uppercase hex"),
            (text("1").replace(HEX, &HEX[..63]), "short hex"),
            (
                text("1").replace(HEX, &format!("{}g", &HEX[..63])),
                "bad hex",
            ),
            (text("1").replace("blake3", "sha256"), "other hash"),
            (text("1").replace("hoard/1", "hoard/2"), "other version"),
            (format!("{}size 2\n", text("1")), "repeated key"),
            (format!("{}x y\n", text("1")), "extra key"),
            (
                format!("oid blake3:{HEX}\nversion hoard/1\nsize 1\n"),
                "key order",
            ),
            (format!("\n{}", text("1")), "leading blank line"),
            (
                "version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n".into(),
                "a git-lfs pointer",
            ),
            (format!("{}{}", text("1"), "x".repeat(300)), "too long"),
        ];
        for (t, why) in cases {
            assert!(Pointer::parse(t.as_bytes()).is_none(), "{why}: {t:?}");
        }
        let huge = vec![b'v'; 10 << 20];
        assert_eq!(Pointer::check(&huge), Err(NotPointer::TooLong(10 << 20)));
        assert!(Pointer::parse(&[0xff, 0xfe]).is_none());
    }

    proptest! {
        #[test]
        fn round_trip(oid in any::<[u8; 32]>(), size in any::<u64>()) {
            let p = Pointer { oid, size };
            let e = p.encode();
            prop_assert!(e.len() < MAX_LEN);
            prop_assert_eq!(Pointer::parse(e.as_bytes()), Some(p));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_only_canonical_text_parses(b in proptest::collection::vec(any::<u8>(), 0..260)) {
            if let Some(p) = Pointer::parse(&b) {
                prop_assert_eq!(p.encode().into_bytes(), b);
            }
        }

        #[test]
        fn one_changed_byte_is_never_a_different_valid_pointer(oid in any::<[u8; 32]>(), size in any::<u64>(), at in any::<prop::sample::Index>(), to in any::<u8>()) {
            let p = Pointer { oid, size };
            let mut b = p.encode().into_bytes();
            let i = at.index(b.len());
            b[i] = to;
            if let Some(q) = Pointer::parse(&b) {
                // Only a different digit in the oid or size can still parse.
                prop_assert_eq!(q.encode().into_bytes(), b);
            }
        }
    }
}
