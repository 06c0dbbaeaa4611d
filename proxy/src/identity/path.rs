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
//! 4. empty segments are merged (`//` → `/`) and dot segments removed
//!    (RFC 3986 §5.2.4), `%2E` included since step 1 decoded it.
//!
//! Refused (400): an escape that is not `%` + two hex digits, `%00`, a path
//! climbing above the root with `..`, and a target that is not a path
//! (except `*` for `OPTIONS`). The query string is not touched.

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
            b'.' if prev == b'/' && matches!(p.get(i + 1..), Some([] | [b'/', ..] | [b'.'] | [b'.', b'/', ..])) => {
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

/// Step 4: merged slashes and dot segments removed. `p` starts with `/`.
fn resolve(p: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut segments: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in p.split(|&b| b == b'/').skip(1) {
        trailing = matches!(seg, b"" | b"." | b"..");
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || segments.is_empty() {
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
    fn escaped_slashes_follow_the_setting() {
        let p = "/public/..%2Fadmin%5cx";
        assert_eq!(normalize(p, Keep).as_deref(), Ok("/public/..%2Fadmin%5Cx"));
        assert_eq!(normalize(p, Reject), Err(PathError::EscapedSlash));
        assert_eq!(normalize(p, Unescape).as_deref(), Ok("/admin/x"));
        assert_eq!(normalize("/a%252Fb", Reject).as_deref(), Ok("/a%252Fb"), "%25 is not a slash");
    }
}
