//! Typed views of the request and response a phase works on. wasp keeps the
//! message; these calls read or change only what the filter asks for.

use crate::bindings::wasp::filter::types::Message;

/// The request, during [`crate::Filter::on_request_headers`].
pub struct Request<'a> {
    inner: &'a Message,
}

/// The response, during [`crate::Filter::on_response_headers`].
pub struct Response<'a> {
    inner: &'a Message,
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
