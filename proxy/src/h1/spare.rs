//! Per-thread spares of what every HTTP/1.1 message allocates: the header
//! map of a head, and the list of field names and value spans a head is
//! parsed into before its bytes are frozen. A request and its response
//! took six allocations and six frees for them (two per map, one per list:
//! about 1.2k instructions of ~31k); a map handed back once its head is
//! encoded is cleared and kept for the next head parsed on the same thread.
//!
//! Nothing of a message outlives it here: a map is cleared (every name and
//! value dropped, hash-flooding mode reset) before it is kept. The spares
//! are bounded in number and size, so a burst of large heads leaves no
//! large maps behind.

use http::{HeaderMap, HeaderName};
use std::cell::Cell;
use std::ops::Range;

/// Maps kept per thread: about the requests in flight on it at once.
const MAPS: usize = 64;
/// A map that grew past this many fields is freed, not kept.
const MAP_FIELDS: usize = 64;
/// A span list that grew past this many fields is freed, not kept.
const SPAN_FIELDS: usize = 128;

/// A field's name and where its value lies in the head's bytes.
pub type Spans = Vec<(HeaderName, Range<usize>)>;

thread_local! {
    static SPARE_MAPS: Cell<Vec<HeaderMap>> = const { Cell::new(Vec::new()) };
    static SPARE_SPANS: Cell<Spans> = const { Cell::new(Vec::new()) };
}

/// An empty header map with room for `fields` without a regrowth.
pub fn map(fields: usize) -> HeaderMap {
    let mut maps = SPARE_MAPS.take();
    let map = maps.pop();
    SPARE_MAPS.set(maps);
    match map {
        Some(mut map) => {
            map.reserve(fields);
            map
        }
        None => HeaderMap::with_capacity(fields),
    }
}

/// Keeps `map` (emptied) for a later head, unless enough are kept or it is large.
pub fn give_map(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAP_FIELDS {
        return;
    }
    let mut maps = SPARE_MAPS.take();
    if maps.len() < MAPS {
        map.clear();
        maps.push(map);
    }
    SPARE_MAPS.set(maps);
}

/// Where `part`, a slice of a head whose bytes start at address `base`, lies in it.
pub fn span(base: usize, part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base;
    start..start + part.len()
}

/// An empty span list.
pub fn spans() -> Spans {
    SPARE_SPANS.take()
}

/// Keeps `spans` (emptied) for the next head.
pub fn give_spans(mut spans: Spans) {
    if spans.capacity() <= SPAN_FIELDS {
        spans.clear();
        SPARE_SPANS.set(spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_kept_map_comes_back_empty_with_room() {
        let mut m = map(4);
        m.insert("x-secret", HeaderValue::from_static("one"));
        m.append("x-secret", HeaderValue::from_static("two"));
        give_map(m);
        let m = map(20);
        assert!(m.is_empty());
        assert!(m.capacity() >= 20);
    }

    #[test]
    fn large_maps_and_span_lists_are_not_kept() {
        let mut big = HeaderMap::with_capacity(MAP_FIELDS * 2);
        big.insert("a", HeaderValue::from_static("b"));
        give_map(big);
        assert!(SPARE_MAPS.take().is_empty());
        give_spans(Vec::with_capacity(SPAN_FIELDS * 2));
        assert_eq!(spans().capacity(), 0);
    }
}
