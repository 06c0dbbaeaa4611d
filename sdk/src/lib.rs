//! # wasp-sdk
//!
//! Write [wasp](https://example.invalid/wasp) filters in Rust. A filter is a
//! type implementing [`Filter`], exported with [`export!`], and built with
//! `cargo build --target wasm32-wasip2 --release`: the `.wasm` file that
//! comes out is a component wasp loads directly.
//!
//! ```ignore
//! use wasp_sdk::{Decision, Facts, Filter, Phases, Registration, Reply, Request};
//!
//! struct DenyAdmin;
//!
//! impl Filter for DenyAdmin {
//!     fn new(_config: &str) -> Result<Self, String> {
//!         Ok(DenyAdmin)
//!     }
//!
//!     // Only the request headers phase, and only the path: nothing else
//!     // is passed in or called.
//!     fn registration(&self) -> Registration {
//!         Registration::new().phases(Phases::REQUEST_HEADERS).facts(Facts::PATH)
//!     }
//!
//!     fn on_request_headers(&mut self, request: &mut Request<'_>) -> Decision {
//!         if request.path().starts_with("/admin") {
//!             return Decision::Reply(Reply::new(403).body("admins only\n"));
//!         }
//!         Decision::Continue
//!     }
//! }
//!
//! wasp_sdk::export!(DenyAdmin);
//! ```
//!
//! The guide in `sdk/README.md` walks from `cargo new` to a running filter.

mod connection;
mod message;
mod registration;
mod reply;
mod standing;

pub mod host;

pub use connection::{Connection, ConnectionDecision};
pub use message::{BodyMode, Request, Response, is_header_name, is_managed_header};
pub use registration::{Facts, Phases, Registration};
pub use reply::{Decision, Reply};
pub use standing::{Fact, StandingEdit, Template};

#[doc(hidden)]
pub use bindings::wasp::filter::types::{
    Body as __Body, CallResponse as __CallResponse, ConnectionDecision as __ConnectionDecision,
    ConnectionInfo as __ConnectionInfo, Outcome as __Outcome, Registration as __Registration, Request as __Request,
    Response as __Response,
};
#[doc(hidden)]
pub use message::{RequestState as __RequestState, ResponseState as __ResponseState};

/// The WIT bindings this SDK wraps (generated from `wit/filter.wit`).
#[doc(hidden)]
pub mod bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        path: "../wit",
        world: "http-filter",
        pub_export_macro: true,
        export_macro_name: "__export_http_filter",
        default_bindings_module: "wasp_sdk::bindings",
    });
}

/// A filter. One value of this type serves many requests, one at a time:
/// fields may carry state between requests (a cache, a counter), but shared
/// state across instances belongs in [`host::kv`].
///
/// Every phase has a default that lets the message through unchanged, so a
/// filter implements only the phases it needs. The same type serves routes
/// (the HTTP phases, for filters listed in a route's `filters`) and
/// listeners ([`Filter::on_connection`], for filters listed in a listener's
/// `connection_filters`).
pub trait Filter: Sized + 'static {
    /// Builds the filter from its config (the `config:` of the filter in
    /// wasp's config file, as JSON). Runs once per instance, when wasp loads
    /// the filter; an error fails the load with this message (use
    /// [`parse_config`] for typed configs with clear errors).
    fn new(config: &str) -> Result<Self, String>;

    /// What the filter asks of wasp, once, after [`Filter::new`]: the
    /// phases it implements (wasp never calls the others, and an instance
    /// of a filter with no response phase serves the next request as soon
    /// as its request phases return), the facts ([`Request::path`],
    /// [`Request::request_id`]...) and the headers its phases read. What it
    /// does not ask for is not passed in: reads of it return empty values.
    /// Default: [`Registration::everything`], correct for any filter and
    /// the slowest; name what you use.
    fn registration(&self) -> Registration {
        Registration::everything()
    }

    /// Runs when a request's headers have arrived, before wasp picks an
    /// upstream endpoint. May read and change the method, path, authority
    /// and headers, or answer locally with [`Decision::Reply`].
    /// Default: [`Decision::Continue`].
    fn on_request_headers(&mut self, request: &mut Request<'_>) -> Decision {
        let _ = request;
        Decision::Continue
    }

    /// Runs when the response headers are known: the upstream's answer, or
    /// a local reply from a later filter. Filters see responses in reverse
    /// order. May change the headers, or replace the response with
    /// [`Decision::Reply`]. Default: [`Decision::Continue`].
    fn on_response_headers(&mut self, response: &mut Response<'_>) -> Decision {
        let _ = response;
        Decision::Continue
    }

    /// Runs with the request body, if [`Request::read_body`] asked for it in
    /// [`Filter::on_request_headers`]: the whole body at once
    /// ([`BodyMode::Buffer`]; headers may still change), or each chunk as it
    /// passes ([`BodyMode::Stream`]; headers are already sent, and
    /// [`Request::end_of_stream`] marks the last call). Read it with
    /// [`Request::body`], change it with [`Request::set_body`].
    /// Default: [`Decision::Continue`].
    fn on_request_body(&mut self, request: &mut Request<'_>) -> Decision {
        let _ = request;
        Decision::Continue
    }

    /// Runs with the response body, if [`Response::read_body`] asked for it
    /// in [`Filter::on_response_headers`]; as [`Filter::on_request_body`].
    /// Default: [`Decision::Continue`].
    fn on_response_body(&mut self, response: &mut Response<'_>) -> Decision {
        let _ = response;
        Decision::Continue
    }

    /// Runs when a call made with [`host::http::call`] finished, after the
    /// phase that made it returned [`Decision::Wait`]: `response` is the
    /// cluster's answer, or why there is none (connect failure, timeout...).
    /// `request` is the request of that phase. Return [`Decision::Wait`]
    /// again to send further calls made here.
    /// Default: [`Decision::Continue`].
    fn on_call_response(
        &mut self,
        request: &mut Request<'_>,
        id: u64,
        response: Result<host::http::CallResponse, String>,
    ) -> Decision {
        let _ = (request, id, response);
        Decision::Continue
    }

    /// Runs when a listener that lists this filter in its
    /// `connection_filters` accepts a connection (after the TLS handshake on
    /// TLS listeners), before anything is read from it: return
    /// [`ConnectionDecision::Deny`] to close it. Runs on an instance whose
    /// [`Filter::new`] ran, within the filter's limits; a panic or timeout
    /// gets the filter's `on_error` (`fail-closed` closes the connection).
    /// Not called for filters that only sit on routes.
    /// Default: [`ConnectionDecision::Allow`].
    fn on_connection(&mut self, connection: &Connection) -> ConnectionDecision {
        let _ = connection;
        ConnectionDecision::Allow
    }
}

/// Parses a filter's JSON config into `T`, with an error that names the
/// field at fault (for [`Filter::new`]).
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    let text = if config.trim().is_empty() { "null" } else { config };
    serde_json::from_str(text).map_err(|e| format!("invalid config: {e}"))
}

/// Exports a [`Filter`] implementation as the component's filter.
///
/// Use it once, at the top level of the filter crate: `wasp_sdk::export!(MyFilter);`
#[macro_export]
macro_rules! export {
    ($filter:ty) => {
        #[doc(hidden)]
        pub struct __WaspFilterExport;

        ::std::thread_local! {
            static __WASP_FILTER: ::core::cell::RefCell<::core::option::Option<$filter>> =
                const { ::core::cell::RefCell::new(::core::option::Option::None) };
        }

        fn __wasp_with<R>(call: impl FnOnce(&mut $filter) -> R) -> R {
            __WASP_FILTER.with(|slot| match slot.borrow_mut().as_mut() {
                ::core::option::Option::Some(f) => call(f),
                ::core::option::Option::None => ::core::panic!("filter called before init"),
            })
        }

        impl $crate::bindings::exports::wasp::filter::handler::Guest for __WaspFilterExport {
            fn init(config: ::std::string::String) -> ::core::result::Result<$crate::__Registration, ::std::string::String> {
                let filter = <$filter as $crate::Filter>::new(&config)?;
                let registration = $crate::Filter::registration(&filter).into_wit();
                __WASP_FILTER.with(|slot| *slot.borrow_mut() = ::core::option::Option::Some(filter));
                ::core::result::Result::Ok(registration)
            }

            fn on_request_headers(m: $crate::__Request) -> $crate::__Outcome {
                let mut state = $crate::__RequestState::new(m, ::core::option::Option::None);
                let decision = __wasp_with(|f| $crate::Filter::on_request_headers(f, &mut state.view()));
                state.outcome(decision)
            }

            fn on_response_headers(m: $crate::__Response) -> $crate::__Outcome {
                let mut state = $crate::__ResponseState::new(m, ::core::option::Option::None);
                let decision = __wasp_with(|f| $crate::Filter::on_response_headers(f, &mut state.view()));
                state.outcome(decision)
            }

            fn on_request_body(m: $crate::__Request, body: $crate::__Body) -> $crate::__Outcome {
                let mut state = $crate::__RequestState::new(m, ::core::option::Option::Some(body));
                let decision = __wasp_with(|f| $crate::Filter::on_request_body(f, &mut state.view()));
                state.outcome(decision)
            }

            fn on_response_body(m: $crate::__Response, body: $crate::__Body) -> $crate::__Outcome {
                let mut state = $crate::__ResponseState::new(m, ::core::option::Option::Some(body));
                let decision = __wasp_with(|f| $crate::Filter::on_response_body(f, &mut state.view()));
                state.outcome(decision)
            }

            fn on_call_response(
                m: $crate::__Request,
                id: u64,
                response: ::core::result::Result<$crate::__CallResponse, ::std::string::String>,
            ) -> $crate::__Outcome {
                let response = response.map($crate::host::http::CallResponse::from_wit);
                let mut state = $crate::__RequestState::new(m, ::core::option::Option::None);
                let decision = __wasp_with(|f| $crate::Filter::on_call_response(f, &mut state.view(), id, response));
                state.outcome(decision)
            }
        }

        impl $crate::bindings::exports::wasp::filter::connection::Guest for __WaspFilterExport {
            fn on_connection(info: $crate::__ConnectionInfo) -> $crate::__ConnectionDecision {
                let connection = $crate::Connection::from_wit(info);
                __wasp_with(|f| $crate::Filter::on_connection(f, &connection).into_wit())
            }
        }

        $crate::bindings::__export_http_filter!(__WaspFilterExport with_types_in $crate::bindings);
    };
}
