//! Field names seen lately on this thread. A client or an upstream sends
//! the same names on every message (often in the same case), so a name is
//! parsed by [`HeaderName::from_bytes`] (lower-casing, validating, and for
//! a name that is not a standard one, allocating) once, and then cloned.
//!
//! A small direct-mapped cache: a slot is chosen from the name's length and
//! three of its bytes, holds the exact bytes it was parsed from and the
//! result, and a different name that maps to it takes its place. Only the
//! exact same bytes get a kept name, so what a name parses to never depends
//! on the cache; nothing grows, whatever names a client sends.

use http::HeaderName;
use http::header::InvalidHeaderName;
use std::cell::RefCell;

/// Slots per thread.
const SLOTS: usize = 64;
/// Longer names are parsed every time.
const MAX_NAME: usize = 32;

struct Slot {
    len: usize,
    raw: [u8; MAX_NAME],
    name: Option<HeaderName>,
}

thread_local! {
    static NAMES: RefCell<[Slot; SLOTS]> =
        const { RefCell::new([const { Slot { len: 0, raw: [0; MAX_NAME], name: None } }; SLOTS]) };
}

/// `raw` as a header name, as [`HeaderName::from_bytes`] would parse it.
pub fn parse(raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
    let len = raw.len();
    if len == 0 || len > MAX_NAME {
        return HeaderName::from_bytes(raw);
    }
    let mix = len ^ usize::from(raw[0]) << 1 ^ usize::from(raw[len / 2]) << 2 ^ usize::from(raw[len - 1]) << 3;
    // While the thread's locals are being torn down: parsed, not kept.
    NAMES
        .try_with(|names| {
            let slots = &mut *names.borrow_mut();
            let slot = &mut slots[mix % SLOTS];
            if let Some(name) = slot.name.as_ref().filter(|_| slot.len == len && slot.raw[..len] == *raw) {
                return Ok(name.clone());
            }
            let name = HeaderName::from_bytes(raw)?;
            slot.raw[..len].copy_from_slice(raw);
            slot.len = len;
            slot.name = Some(name.clone());
            Ok(name)
        })
        .unwrap_or_else(|_| HeaderName::from_bytes(raw))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use http::HeaderName;

    #[test]
    fn a_kept_name_is_what_parsing_gives_and_only_for_the_same_bytes() {
        let names: Vec<String> = (0..200).map(|i| format!("X-Field-{i}")).collect();
        let many = ["Content-Type", "content-type", "CONTENT-TYPE", "x-b3-traceid", "Accept", "accept-encoding"];
        for _ in 0..3 {
            for raw in names.iter().map(String::as_str).chain(many) {
                let want = HeaderName::from_bytes(raw.as_bytes()).expect("valid");
                assert_eq!(parse(raw.as_bytes()).expect("valid"), want, "{raw}");
            }
        }
        // Same length, same first, middle and last bytes: the same slot, told apart by the rest.
        assert_eq!(parse(b"x-aaa-y").expect("valid"), "x-aaa-y");
        assert_eq!(parse(b"x-bab-y").expect("valid"), "x-bab-y");
        assert_eq!(parse(b"x-aaa-y").expect("valid"), "x-aaa-y");
        assert!(parse(b"bad name").is_err());
        assert!(parse(b"bad name").is_err(), "an invalid name is never kept");
        assert!(parse(b"").is_err());
        let long = "x-".repeat(40);
        assert_eq!(parse(long.as_bytes()).expect("valid"), long.as_str(), "longer names are parsed");
    }
}
