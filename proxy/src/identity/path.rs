//! Path normalisation, as Envoy's `normalize_path` + `merge_slashes`: the
//! one form of a request path that routes match, filters see and the
//! upstream receives, so that `/public/../admin`, `/./admin`, `//admin`,
//! `/%61dmin` and `/public/%2e%2e/admin` are all `/admin` before anything
//! looks at them.
//!
//! In one pass over the path:
//! 1. percent-encoded unreserved characters (RFC 3986 §2.3: `A-Z a-z 0-9 - . _ ~`)
//!    are decoded; every other escape is kept, with upper-case hex
//!    (`%2f` → `%2F`); a `%25` stays `%25`, so nothing is decoded twice;
//! 2. an encoded slash or backslash (`%2F`, `%5C`) follows
//!    [`EscapedSlashes`]: kept as data (not a separator), refused, or
//!    decoded into `/`;
//! 3. a raw backslash is a separator (`\` → `/`), as browsers and many
//!    servers treat it;
//! 4. dot segments are removed (RFC 3986 §5.2.4, where an empty segment is
//!    a segment: `/a//../b` is `/a/b`), `%2E` included since step 1 decoded
//!    it; then empty segments are merged (`//` → `/`), in Envoy's order.
//!
//! Refused (400): an escape that is not `%` + two hex digits, `%00`, a path
//! climbing above the root with `..`, a target that is not a path (except
//! `*` for `OPTIONS`), and dot segments that other servers resolve but a
//! plain RFC 3986 resolver does not: with parameters (`/..;/`, as Tomcat
//! reads it) or next to a kept `%2F`/`%5C` (`/..%2F`, as nginx reads it).
//! The query string is not touched.

use crate::config::model::EscapedSlashes;
use std::borrow::Cow;

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadEscape,
    /// A NUL byte, raw or `%00`.
    #[error("NUL in path")]
    Nul,
    /// `..` above the root.
    #[error("path climbs above the root")]
    AboveRoot,
    /// `%2F` / `%5C` on a listener that rejects them.
    #[error("encoded slash or backslash")]
    EscapedSlash,
    /// Not a path (does not start with `/`).
    #[error("request target is not a path")]
    NotAPath,
    /// A dot segment with parameters (`/..;/`): Tomcat and Jetty drop the
    /// `;...` and climb, wasp would not.
    #[error("dot segment with parameters")]
    DotParameters,
    /// A dot segment joined to its neighbour by an encoded slash
    /// (`/..%2F`): servers that decode `%2F` would climb, wasp would not.
    #[error("dot segment behind an encoded slash")]
    EscapedDotSegment,
}

/// The normal form of `path` (no query), or why it has none. Borrows when
/// the path is already normal, which is the common case.
pub fn normalize(path: &str, slashes: EscapedSlashes) -> Result<Cow<'_, str>, PathError> {
    if is_plain(path.as_bytes()) {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAPath);
    }
    let decoded = decode(path.as_bytes(), slashes)?;
    let resolved = resolve(&decoded)?;
    // Only ASCII was decoded and only ASCII separators were touched: the
    // other bytes are the input's, in order, so this is still UTF-8.
    Ok(Cow::Owned(String::from_utf8(resolved).map_err(|_| PathError::BadEscape)?))
}

/// Already normal: starts with `/`, no escapes, backslashes, NULs, empty or dot segments.
fn is_plain(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for (i, &b) in p.iter().enumerate().skip(1) {
        match b {
            b'%' | b'\\' | 0 => return false,
            b'/' if prev == b'/' => return false,
            b'.' if prev == b'/'
                && matches!(p.get(i + 1..), Some([] | [b'/' | b';', ..] | [b'.'] | [b'.', b'/' | b';', ..])) =>
            {
                return false;
            }
            _ => {}
        }
        prev = b;
    }
    true
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Step 1-3: escapes decoded or canonicalised, backslashes made separators.
fn decode(p: &[u8], slashes: EscapedSlashes) -> Result<Vec<u8>, PathError> {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (p.get(i + 1).and_then(|&b| hex(b)), p.get(i + 2).and_then(|&b| hex(b)))
                else {
                    return Err(PathError::BadEscape);
                };
                let byte = hi << 4 | lo;
                match byte {
                    0 => return Err(PathError::Nul),
                    b if unreserved(b) => out.push(b),
                    b'/' | b'\\' => match slashes {
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Unescape => out.push(b'/'),
                        EscapedSlashes::Keep => out.extend_from_slice(&[b'%', UPPER[hi as usize], UPPER[lo as usize]]),
                    },
                    _ => out.extend_from_slice(&[b'%', UPPER[hi as usize], UPPER[lo as usize]]),
                }
                i += 3;
            }
            b'\\' => {
                out.push(b'/');
                i += 1;
            }
            0 => return Err(PathError::Nul),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Whether a segment, split at its kept `%2F`/`%5C`, has a `.` or `..` piece.
fn hides_dot_segment(seg: &[u8]) -> bool {
    let mut start = 0;
    let mut i = 0;
    while i <= seg.len() {
        let at_slash = seg.get(i..i + 3).is_some_and(|e| e == b"%2F" || e == b"%5C");
        if at_slash || i == seg.len() {
            if matches!(&seg[start..i], b"." | b"..") && (at_slash || start > 0) {
                return true;
            }
            i += if at_slash { 3 } else { 1 };
            start = i;
        } else {
            i += 1;
        }
    }
    false
}

/// Step 4: dot segments removed, then empty segments merged. `p` starts with `/`.
fn resolve(p: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in p.split(|&b| b == b'/').skip(1) {
        trailing = matches!(seg, b"" | b"." | b"..");
        if seg.starts_with(b".;") || seg.starts_with(b"..;") {
            return Err(PathError::DotParameters);
        }
        if seg.len() > 3 && hides_dot_segment(seg) {
            return Err(PathError::EscapedDotSegment);
        }
        match seg {
            b"." => {}
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for s in segments.iter().filter(|s| !s.is_empty()) {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EscapedSlashes::{Keep, Reject, Unescape};

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, Keep).map(Cow::into_owned)
    }

    #[test]
    fn the_bypasses_of_the_issue_all_become_admin() {
        for p in [
            "/public/../admin/x",
            "/./admin/x",
            "//admin/x",
            "/%61dmin/x",
            "/public/%2e%2e/admin/x",
            "/public/%2E./admin/x",
        ] {
            assert_eq!(n(p).as_deref(), Ok("/admin/x"), "{p}");
        }
        assert_eq!(n("/public\\..\\admin/x").as_deref(), Ok("/admin/x"));
    }

    #[test]
    fn normal_paths_are_borrowed_untouched() {
        for p in ["/", "/a", "/a/b/", "/a/.b", "/a/b.", "/a/..b", "/a/b..c/", "/~user/x-y_z", "/a:b@c!$&'()*+,;="] {
            assert!(matches!(normalize(p, Keep), Ok(Cow::Borrowed(q)) if q == p), "{p}");
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        assert_eq!(n("/a/./b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/a//b///").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a//../b").as_deref(), Ok("/a/b"), "an empty segment is a segment, as in RFC 3986");
        assert_eq!(n("//..").as_deref(), Ok("/"));
        assert_eq!(n("//").as_deref(), Ok("/"));
        assert_eq!(n("/.").as_deref(), Ok("/"));
        assert_eq!(n("/.."), Err(PathError::AboveRoot));
        assert_eq!(n("/a/../../b"), Err(PathError::AboveRoot));
        assert_eq!(n("/%2e%2E/x"), Err(PathError::AboveRoot));
    }

    #[test]
    fn escapes_are_canonical_and_never_decoded_twice() {
        assert_eq!(n("/a%2fb").as_deref(), Ok("/a%2Fb"));
        assert_eq!(n("/%7euser").as_deref(), Ok("/~user"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a%20b"));
        assert_eq!(n("/%252e%252e/admin").as_deref(), Ok("/%252e%252e/admin"));
        assert_eq!(n("/%25%32%65").as_deref(), Ok("/%252e"));
        assert_eq!(n("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/a%2"), Err(PathError::BadEscape));
        assert_eq!(n("/a%00b"), Err(PathError::Nul));
    }

    #[test]
    fn dot_segments_other_servers_would_resolve_are_refused() {
        for p in ["/public/..;/admin", "/public/.;x/admin", "/public/..;jsessionid=1/admin"] {
            assert_eq!(n(p), Err(PathError::DotParameters), "{p}");
        }
        for p in ["/public/..%2Fadmin", "/public/..%5cadmin", "/a/x%2F..", "/a/x%2F.%2Fy", "/%2e%2e%2Fadmin"] {
            assert_eq!(n(p), Err(PathError::EscapedDotSegment), "{p}");
        }
        for p in ["/a;b/c", "/a/.b;c", "/a/..b;c", "/a%2Fb", "/a%2F.b", "/a/b..%2Fc"] {
            assert!(n(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn escaped_slashes_follow_the_setting() {
        let p = "/public/..%2Fadmin%5cx";
        assert_eq!(normalize(p, Keep), Err(PathError::EscapedDotSegment));
        assert_eq!(normalize("/public/x%2Fadmin%5cx", Keep).as_deref(), Ok("/public/x%2Fadmin%5Cx"));
        assert_eq!(normalize(p, Reject), Err(PathError::EscapedSlash));
        assert_eq!(normalize(p, Unescape).as_deref(), Ok("/admin/x"));
        assert_eq!(normalize("/a%252Fb", Reject).as_deref(), Ok("/a%252Fb"), "%25 is not a slash");
    }

    /// RFC 3986 §5.2.4 as written (the input-buffer algorithm), then `//+` → `/`:
    /// a second, independent statement of what the normaliser must produce.
    fn reference(decoded: &str) -> String {
        let (mut input, mut output) = (decoded.to_string(), String::new());
        while !input.is_empty() {
            if let Some(rest) = input.strip_prefix("../").or_else(|| input.strip_prefix("./")) {
                input = rest.to_string();
            } else if input.starts_with("/./") {
                input = input[2..].to_string();
            } else if input == "/." {
                input = "/".into();
            } else if input.starts_with("/../") || input == "/.." {
                input = format!("/{}", &input[if input == "/.." { 3 } else { 4 }..]);
                let cut = output.rfind('/').unwrap_or(0);
                output.truncate(cut);
            } else if input == "." || input == ".." {
                input.clear();
            } else {
                let start = usize::from(input.starts_with('/'));
                let end = input[start..].find('/').map_or(input.len(), |i| i + start);
                output.push_str(&input[..end]);
                input = input[end..].to_string();
            }
        }
        let mut merged = String::new();
        for c in output.chars() {
            if !(c == '/' && merged.ends_with('/')) {
                merged.push(c);
            }
        }
        if merged.is_empty() { "/".into() } else { merged }
    }

    /// Unreserved escapes decoded, backslashes made slashes (escaped slashes unescaped).
    fn decoded(p: &str) -> Option<String> {
        let b = p.as_bytes();
        let mut out = String::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let v = u8::from_str_radix(p.get(i + 1..i + 3)?, 16).ok()?;
                match v {
                    b'/' | b'\\' => out.push('/'),
                    v if unreserved(v) => out.push(v as char),
                    v => out.push_str(&format!("%{v:02X}")),
                }
                i += 3;
            } else {
                out.push(if b[i] == b'\\' { '/' } else { b[i] as char });
                i += 1;
            }
        }
        Some(out)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 4096,
            failure_persistence: None,
            ..Default::default()
        })]

        #[test]
        fn normal_paths_are_fixed_points_with_no_dot_segments_or_double_slashes(
            tail in "[/.a%2eEfF5cC\\\\0x~]{0,24}",
            slashes in proptest::sample::select(vec![Keep, Reject, Unescape]),
        ) {
            let path = format!("/{tail}");
            if let Ok(out) = normalize(&path, slashes) {
                let out = out.into_owned();
                proptest::prop_assert!(out.starts_with('/'));
                proptest::prop_assert!(!out.contains("//"), "{path} -> {out}");
                proptest::prop_assert!(!out.contains('\\'));
                for seg in out.split('/') {
                    proptest::prop_assert!(seg != "." && seg != "..", "{path} -> {out}");
                }
                let again = normalize(&out, slashes).map(Cow::into_owned);
                proptest::prop_assert_eq!(again, Ok(out.clone()), "idempotent: {}", path);
                // An RFC 3986 resolver leaves it where wasp routed it.
                proptest::prop_assert_eq!(reference(&out), out.clone());
            }
        }

        #[test]
        fn the_normal_form_is_what_rfc_3986_resolution_gives(tail in "[/.a%2eEfF5cC\\\\x]{0,24}") {
            let path = format!("/{tail}");
            if let (Ok(out), Some(d)) = (normalize(&path, Unescape), decoded(&path)) {
                proptest::prop_assert_eq!(out.into_owned(), reference(&d), "{}", path);
            }
        }

        #[test]
        fn any_input_is_normalised_or_refused_without_panicking(path in "\\PC{0,64}") {
            let _ = normalize(&path, Keep);
        }
    }
}
