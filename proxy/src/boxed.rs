//! Values put on the heap without a copy.

/// `$value` in a box, written there in place. `Box::new` builds the value
/// on the stack and then copies all of it into the box (a request's
/// exchange: 328 bytes). A macro, not a function: a value passed to a
/// function is built on the caller's stack and copied again.
macro_rules! in_place {
    ($value:expr) => {
        Box::write(Box::new_uninit(), $value)
    };
}

/// `$future` in a pinned box, written there in place ([`in_place`]): an
/// async fn's future is as large as its largest state even before it
/// starts, when it holds only its arguments, and `Box::pin` copies all of
/// it: the request path's two boxed futures (about 4 KB each) cost ~560
/// instructions a request in copies (callgrind, no-filter route: 29,932 →
/// 29,375). (The upstream attempts' future has since moved into its
/// caller's state, pinned there with `std::pin::pin!`, which also builds it
/// in place: no box at all.)
macro_rules! boxed {
    ($future:expr) => {
        Box::into_pin($crate::boxed::in_place!($future))
    };
}

pub(crate) use {boxed, in_place};
