//! What a filter asks of wasp at load ([`crate::Filter::registration`]):
//! the phases it implements, the facts and the headers its phases read,
//! and the standing edits wasp makes for it with no call. wasp passes
//! exactly that with each call, and calls nothing else.

use crate::bindings::wasp::filter::types as wit;
use crate::standing::StandingEdit;

/// The phases a filter implements: `Phases::REQUEST_HEADERS`,
/// `REQUEST_BODY`, `RESPONSE_HEADERS`, `RESPONSE_BODY` (combine with `|`).
/// A body phase runs only when its headers phase also asked with
/// [`crate::Request::read_body`].
pub use wit::Phases;

/// Facts a request phase receives: `Facts::METHOD`, `PATH`, `AUTHORITY`,
/// `REQUEST_ID`, `PEER`, `ROUTE`, `PEER_IDENTITY` (combine with `|`).
pub use wit::Facts;

std::thread_local! {
    /// Whether the filter registered any request / response headers: if it
    /// did not, it cannot read headers, and its edits are not mirrored into
    /// a local view (saving two copies per edit).
    static VIEWS: std::cell::Cell<(bool, bool)> = const { std::cell::Cell::new((true, true)) };
}

/// Whether the filter reads request headers (`.0`) and response headers (`.1`).
pub(crate) fn views() -> (bool, bool) {
    VIEWS.with(std::cell::Cell::get)
}

/// Which headers a phase receives.
#[derive(Debug, Clone)]
enum Headers {
    None,
    Names(Vec<String>),
    All,
}

/// What a filter asks of wasp. Start from [`Registration::new`] (nothing)
/// and name what the filter uses, or [`Registration::everything`].
#[derive(Debug, Clone)]
pub struct Registration {
    phases: Phases,
    facts: Facts,
    request_headers: Headers,
    response_headers: Headers,
    request_edits: Vec<StandingEdit>,
    response_edits: Vec<StandingEdit>,
}

impl Default for Registration {
    fn default() -> Self {
        Self::new()
    }
}

impl Registration {
    /// No phase, no fact, no header.
    pub fn new() -> Self {
        Registration {
            phases: Phases::empty(),
            facts: Facts::empty(),
            request_headers: Headers::None,
            response_headers: Headers::None,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        }
    }

    /// Every phase, fact and header (what a 0.1 filter got): correct for
    /// any filter, and the most expensive.
    pub fn everything() -> Self {
        Registration {
            phases: Phases::all(),
            facts: Facts::all(),
            request_headers: Headers::All,
            response_headers: Headers::All,
            request_edits: Vec::new(),
            response_edits: Vec::new(),
        }
    }

    /// The phases the filter implements.
    pub fn phases(mut self, phases: Phases) -> Self {
        self.phases = phases;
        self
    }

    /// The facts its request phases read.
    pub fn facts(mut self, facts: Facts) -> Self {
        self.facts = facts;
        self
    }

    /// The request headers its request phases read (every value of each).
    pub fn request_headers<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.request_headers = Headers::Names(names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()).collect());
        self
    }

    /// Every request header.
    pub fn all_request_headers(mut self) -> Self {
        self.request_headers = Headers::All;
        self
    }

    /// The response headers its response phases read.
    pub fn response_headers<S: AsRef<str>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.response_headers = Headers::Names(names.into_iter().map(|n| n.as_ref().to_ascii_lowercase()).collect());
        self
    }

    /// Every response header.
    pub fn all_response_headers(mut self) -> Self {
        self.response_headers = Headers::All;
        self
    }

    /// A header edit wasp makes on every request when this filter's turn
    /// comes, before its request-headers phase (if it has one), with no
    /// call: a filter whose work is all standing edits registers no phase
    /// and costs what a native header edit costs. Edits are made in the
    /// order registered; their templates read the request as it reached
    /// the filter.
    pub fn request_edit(mut self, edit: StandingEdit) -> Self {
        self.request_edits.push(edit);
        self
    }

    /// A header edit wasp makes on every response, where this filter's
    /// response phase would run (before it, if it has one). Its template
    /// is filled in from the request, when the request edits are.
    pub fn response_edit(mut self, edit: StandingEdit) -> Self {
        self.response_edits.push(edit);
        self
    }

    #[doc(hidden)]
    pub fn into_wit(self) -> wit::Registration {
        VIEWS.with(|v| {
            v.set((!matches!(self.request_headers, Headers::None), !matches!(self.response_headers, Headers::None)))
        });
        let set = |h: Headers| match h {
            Headers::None => wit::HeaderSet::None,
            Headers::Names(n) => wit::HeaderSet::Names(n),
            Headers::All => wit::HeaderSet::All,
        };
        wit::Registration {
            phases: self.phases,
            facts: self.facts,
            request_headers: set(self.request_headers),
            response_headers: set(self.response_headers),
            request_edits: self.request_edits.into_iter().map(StandingEdit::into_wit).collect(),
            response_edits: self.response_edits.into_iter().map(StandingEdit::into_wit).collect(),
        }
    }
}
