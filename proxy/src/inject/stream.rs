//! A YAML stream cut into its documents as text, so that a document
//! `wasp inject` does not change is written back byte for byte (comments
//! and formatting kept), and one it changes is replaced in place.
//!
//! A document starts at a `---` marker line (column 0, followed by the end
//! of the line, a space or a tab), as YAML itself cuts a stream; text
//! before the first marker is a document only if it holds more than
//! blank lines and comments.

/// One document: the marker line that opened it (empty for a stream's
/// first, unmarked document) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub marker: String,
    pub body: String,
}

/// A stream: leading blank or comment lines, then the documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub preamble: String,
    pub documents: Vec<Document>,
}

fn is_marker(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

fn only_comments(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

impl Stream {
    /// Cuts `text` into documents.
    pub fn parse(text: &str) -> Stream {
        let mut preamble = String::new();
        let mut documents: Vec<Document> = Vec::new();
        for line in text.split_inclusive('\n') {
            if is_marker(line) {
                documents.push(Document { marker: line.to_string(), body: String::new() });
            } else if let Some(doc) = documents.last_mut() {
                doc.body.push_str(line);
            } else {
                preamble.push_str(line);
            }
        }
        if !only_comments(&preamble) {
            documents.insert(0, Document { marker: String::new(), body: std::mem::take(&mut preamble) });
        }
        Stream { preamble, documents }
    }

    /// The YAML text of document `i`: its body, with whatever followed
    /// `---` on the marker line (`--- {kind: Pod}`) in front.
    pub fn yaml(&self, i: usize) -> String {
        let doc = &self.documents[i];
        let inline = doc.marker.strip_prefix("---").unwrap_or("");
        if inline.trim().is_empty() || inline.trim_start().starts_with('#') {
            doc.body.clone()
        } else {
            format!("{}\n{}", inline.trim_end_matches(['\r', '\n']), doc.body)
        }
    }

    /// Replaces document `i` with `yaml` (which ends with a newline),
    /// keeping the comment lines it started with.
    pub fn replace(&mut self, i: usize, yaml: String) {
        let doc = &mut self.documents[i];
        if !doc.marker.is_empty() {
            doc.marker = "---\n".into();
        }
        let head: String = doc.body.split_inclusive('\n').take_while(|l| only_comments(l)).collect();
        doc.body = head + &yaml;
    }

    /// The stream as text again.
    pub fn render(&self) -> String {
        let mut out = self.preamble.clone();
        for doc in &self.documents {
            out.push_str(&doc.marker);
            out.push_str(&doc.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_byte_for_byte() {
        for text in [
            "",
            "kind: Pod\n",
            "# top\n---\nkind: A\n# c\n---\nkind: B\n",
            "kind: A\n--- # two\nkind: B\n---\n",
            "--- {kind: Pod}\nx: 1\n",
            "a: |\n  ---x\n---\nb: 2",
        ] {
            assert_eq!(Stream::parse(text).render(), text);
        }
    }

    #[test]
    fn cuts_at_markers_only() {
        let s = Stream::parse("# c\n---\nkind: A\n----\n---\nkind: B\n");
        assert_eq!(s.preamble, "# c\n");
        assert_eq!(s.documents.len(), 2);
        assert_eq!(s.yaml(0), "kind: A\n----\n");
        let s = Stream::parse("kind: A\n---\nkind: B\n");
        assert_eq!(s.documents[0].marker, "");
        assert_eq!(s.yaml(1), "kind: B\n");
        assert_eq!(Stream::parse("--- {kind: Pod}\nx: 1\n").yaml(0), " {kind: Pod}\nx: 1\n");
        let mut s = Stream::parse("# web\n\nkind: A # gone\n---\n# b\nkind: B\n");
        s.replace(0, "kind: A2\n".into());
        s.replace(1, "kind: B2\n".into());
        assert_eq!(s.render(), "# web\n\nkind: A2\n---\n# b\nkind: B2\n");
    }
}
