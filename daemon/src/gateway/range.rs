//! The `Range` request header (RFC 9110 §14), for one range of bytes:
//!
//! ```text
//! Range := "bytes=" ( first "-" [ last ] | "-" suffix )     (one range only)
//! ```
//!
//! `first-last` is inclusive; `first-` runs to the end; `-n` is the last n
//! bytes. A `last` past the end is cut to the end. A range unit other than
//! `bytes` is ignored (the whole file is served), as the RFC requires.

/// What a request asks for of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// No (usable) Range header: the whole file, `200`.
    Whole,
    /// Bytes `[start, end)`, `206`; never empty.
    Part { start: u64, end: u64 },
    /// Nothing of the file (a start at or past the end, or `-0`): `416`.
    Unsatisfiable,
}

/// A Range header this gateway does not serve, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRange(pub String);

/// Reads `header` (absent: the whole file) for a file of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> Result<Wanted, BadRange> {
    let Some(h) = header else {
        return Ok(Wanted::Whole);
    };
    let h = h.trim();
    let Some((unit, spec)) = h.split_once('=') else {
        return Err(BadRange(format!("Range {h:?} is not `bytes=FIRST-LAST`")));
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Ok(Wanted::Whole);
    }
    let spec = spec.trim();
    if spec.contains(',') {
        return Err(BadRange(format!(
            "Range {h:?} asks for several ranges; this gateway serves one range per request: send them one by one"
        )));
    }
    let bad = || {
        BadRange(format!(
            "Range {h:?} is not `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX`"
        ))
    };
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<u64, BadRange> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if first.is_empty() {
        let n = num(last)?;
        if n == 0 || size == 0 {
            return Ok(Wanted::Unsatisfiable);
        }
        return Ok(Wanted::Part {
            start: size.saturating_sub(n),
            end: size,
        });
    }
    let start = num(first)?;
    let end = if last.is_empty() {
        size
    } else {
        let l = num(last)?;
        if l < start {
            return Err(BadRange(format!("Range {h:?} ends before it starts")));
        }
        l.saturating_add(1).min(size)
    };
    if start >= size {
        return Ok(Wanted::Unsatisfiable);
    }
    Ok(Wanted::Part { start, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_forms_fsspec_and_curl_send() {
        let p = |h: &str| parse(Some(h), 1000);
        assert_eq!(parse(None, 1000), Ok(Wanted::Whole));
        assert_eq!(p("bytes=0-99"), Ok(Wanted::Part { start: 0, end: 100 }));
        assert_eq!(
            p("bytes=900-"),
            Ok(Wanted::Part {
                start: 900,
                end: 1000
            })
        );
        assert_eq!(
            p("bytes=-10"),
            Ok(Wanted::Part {
                start: 990,
                end: 1000
            })
        );
        assert_eq!(
            p("bytes=-5000"),
            Ok(Wanted::Part {
                start: 0,
                end: 1000
            })
        );
        assert_eq!(
            p("bytes=990-5000"),
            Ok(Wanted::Part {
                start: 990,
                end: 1000
            })
        );
        assert_eq!(
            p("bytes=999-999"),
            Ok(Wanted::Part {
                start: 999,
                end: 1000
            })
        );
        assert_eq!(p("bytes=1000-"), Ok(Wanted::Unsatisfiable));
        assert_eq!(p("bytes=1000-2000"), Ok(Wanted::Unsatisfiable));
        assert_eq!(p("bytes=-0"), Ok(Wanted::Unsatisfiable));
        assert_eq!(p("items=0-1"), Ok(Wanted::Whole));
        assert_eq!(parse(Some("bytes=0-"), 0), Ok(Wanted::Unsatisfiable));
    }

    #[test]
    fn malformed_and_multiple_ranges_are_refused_with_the_reason() {
        for h in [
            "bytes=",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=--1",
            "bytes=1",
            "0-1",
            "bytes=+1-2",
        ] {
            assert!(parse(Some(h), 100).is_err(), "{h}");
        }
        let e = parse(Some("bytes=0-1,5-9"), 100).unwrap_err();
        assert!(e.0.contains("one range per request"), "{e:?}");
    }

    proptest! {
        #[test]
        fn a_served_part_lies_inside_the_file(size in 0u64..1 << 40, a in 0u64..1 << 41, b in 0u64..1 << 41) {
            for h in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                if let Ok(Wanted::Part { start, end }) = parse(Some(&h), size) {
                    prop_assert!(start < end && end <= size, "{h} of {size}: {start}..{end}");
                }
            }
        }
    }
}
