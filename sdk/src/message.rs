//! Typed views of the request and response a phase works on. wasp keeps the
//! message; these calls read or change only what the filter asks for.

use crate::bindings::wasp::filter::types::{self as wit, Message};

/// The request, during a request phase (or [`crate::Filter::on_call_response`]).
pub struct Request<'a> {
    inner: &'a Message,
}

/// The response, during a response phase.
pub struct Response<'a> {
    inner: &'a Message,
}

/// How a filter wants to see a body (see [`Request::read_body`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole body in one body-phase call, buffered by wasp up to the
    /// filter's `limits.body` (over it: a request is answered 413, a
    /// response 502). Headers may still be changed in that call.
    Buffer,
    /// Each chunk in its own body-phase call as it passes; the headers are
    /// already sent. [`Request::end_of_stream`] marks the last call.
    Stream,
}

macro_rules! header_methods {
    () => {
        /// The first value of header `name` (case-insensitive), as bytes.
        pub fn header_bytes(&self, name: &str) -> Option<Vec<u8>> {
            self.inner.get_header(name)
        }

        /// The first value of header `name` as text (`None` if absent or not UTF-8).
        pub fn header(&self, name: &str) -> Option<String> {
            self.inner.get_header(name).and_then(|v| String::from_utf8(v).ok())
        }

        /// Every value of header `name`, in order.
        pub fn header_all(&self, name: &str) -> Vec<Vec<u8>> {
            self.inner.get_header_all(name)
        }

        /// The names of all headers present.
        pub fn header_names(&self) -> Vec<String> {
            self.inner.header_names()
        }

        /// Sets header `name` to `value`, replacing earlier values.
        /// Fails on an invalid name or value.
        pub fn set_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            self.inner.set_header(name, value.as_ref())
        }

        /// Adds a value to header `name`. Fails on an invalid name or value.
        pub fn append_header(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            self.inner.append_header(name, value.as_ref())
        }

        /// Removes header `name`.
        pub fn remove_header(&mut self, name: &str) {
            self.inner.remove_header(name)
        }

        /// The request id wasp forwards (`x-request-id`).
        pub fn request_id(&self) -> String {
            self.inner.request_id()
        }

        /// The client's address, `ip:port`.
        pub fn peer(&self) -> String {
            self.inner.peer()
        }

        /// The name of the route that took the request.
        pub fn route(&self) -> String {
            self.inner.route()
        }

        /// The client's verified identity on this connection (mTLS): its
        /// certificate's URI SAN (e.g. `spiffe://cluster.local/ns/shop/sa/web`),
        /// else its DNS SAN, else its subject CN. `None` on plaintext
        /// connections and without a verified client certificate.
        pub fn peer_identity(&self) -> Option<String> {
            self.inner.peer_identity()
        }

        /// Asks to see the body in the body phase: whole or chunk by chunk.
        /// Call it in the headers phase; without it the body phase does not run.
        pub fn read_body(&mut self, mode: BodyMode) {
            self.inner.read_body(match mode {
                BodyMode::Buffer => wit::BodyMode::Buffer,
                BodyMode::Stream => wit::BodyMode::Stream,
            })
        }

        /// In the body phase: the whole body (buffered) or this chunk (streamed).
        pub fn body(&self) -> Vec<u8> {
            self.inner.body()
        }

        /// In the body phase: replaces the whole body or this chunk. wasp
        /// fixes `content-length` (or sends the body chunked when streamed).
        pub fn set_body(&mut self, body: impl Into<Vec<u8>>) {
            self.inner.set_body(&body.into())
        }

        /// In the body phase: whether this is the last call for this body.
        pub fn end_of_stream(&self) -> bool {
            self.inner.end_of_stream()
        }

        /// At the end of the body: its trailers (e.g. `grpc-status`), if any.
        pub fn trailers(&self) -> Vec<(String, Vec<u8>)> {
            self.inner.trailers().into_iter().map(|h| (h.name, h.value)).collect()
        }

        /// At the end of the body: sets a trailer. Fails on an invalid name or
        /// value, or before the end of the body.
        pub fn set_trailer(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), String> {
            self.inner.set_trailer(name, value.as_ref())
        }
    };
}

impl<'a> Request<'a> {
    #[doc(hidden)]
    pub fn from_host(inner: &'a Message) -> Self {
        Request { inner }
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> String {
        self.inner.method()
    }

    /// Changes the method. Fails on an invalid method.
    pub fn set_method(&mut self, method: &str) -> Result<(), String> {
        self.inner.set_method(method)
    }

    /// Path and query, e.g. `/api/users?page=2`.
    pub fn path(&self) -> String {
        self.inner.path()
    }

    /// Changes path and query. Fails unless it starts with `/`.
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        self.inner.set_path(path)
    }

    /// The host the request is for, if known.
    pub fn authority(&self) -> Option<String> {
        self.inner.authority()
    }

    /// Changes the host the request is for.
    pub fn set_authority(&mut self, authority: &str) -> Result<(), String> {
        self.inner.set_authority(authority)
    }

    header_methods!();
}

impl<'a> Response<'a> {
    #[doc(hidden)]
    pub fn from_host(inner: &'a Message) -> Self {
        Response { inner }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.inner.status()
    }

    header_methods!();
}
