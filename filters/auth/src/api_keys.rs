//! API keys: a header whose value must be one of the configured keys, each
//! mapped to a subject. Keys are kept as SHA-256 digests and a presented key
//! is compared with every one of them in constant time, so neither its
//! content nor its length shows in how long the check takes.

use sha2::{Digest, Sha256};

/// The configured API keys.
pub struct ApiKeys {
    /// Lower-case name of the header carrying the key.
    pub header: String,
    /// Whether that header goes on to the upstream.
    pub forward_key: bool,
    digests: Vec<[u8; 32]>,
    subjects: Vec<String>,
}

impl ApiKeys {
    /// Keys read from `header`, as `(key, subject)` pairs.
    pub fn new(header: String, forward_key: bool, entries: Vec<(String, String)>) -> Self {
        let (digests, subjects) = entries.into_iter().map(|(key, subject)| (digest(key.as_bytes()), subject)).unzip();
        ApiKeys { header, forward_key, digests, subjects }
    }

    /// The index of the first key that repeats an earlier one.
    pub fn first_duplicate(&self) -> Option<usize> {
        (1..self.digests.len()).find(|&i| self.digests[..i].contains(&self.digests[i]))
    }

    /// The subject of `presented`, if it is one of the keys.
    pub fn subject(&self, presented: &[u8]) -> Option<&str> {
        let presented = digest(presented);
        let mut found = None;
        // Every key is compared, whatever matched before.
        for (i, known) in self.digests.iter().enumerate() {
            if constant_time_eq(known, &presented) {
                found = Some(i);
            }
        }
        found.map(|i| self.subjects[i].as_str())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_key_gives_its_subject() {
        let keys = ApiKeys::new(
            "x-api-key".into(),
            true,
            vec![("k-one".into(), "one".into()), ("k-two".into(), "two".into())],
        );
        assert_eq!(keys.subject(b"k-two"), Some("two"));
        assert_eq!(keys.subject(b"k-tw"), None);
        assert_eq!(keys.subject(b""), None);
        assert_eq!(keys.first_duplicate(), None);
        let dup = ApiKeys::new("h".into(), true, vec![("a".into(), "x".into()), ("a".into(), "y".into())]);
        assert_eq!(dup.first_duplicate(), Some(1));
    }
}
