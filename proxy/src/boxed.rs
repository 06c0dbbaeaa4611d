//! Futures put on the heap without a copy.

/// `$future` in a pinned box, written there in place. `Box::pin` builds the
/// value on the stack and then copies all of it, and an async fn's future
/// is as large as its largest state even before it starts, when it holds
/// only its arguments: the request path's two boxed futures (about 4 KB
/// each) cost ~560 instructions a request in copies (callgrind, no-filter
/// route: 29,932 → 29,375). A macro, not a function: a future passed to a
/// function is built on the caller's stack and copied again. (The upstream
/// attempts' future has since moved into its caller's state, pinned there
/// with `std::pin::pin!`, which also builds it in place: no box at all.)
macro_rules! boxed {
    ($future:expr) => {
        Box::into_pin(Box::write(Box::new_uninit(), $future))
    };
}

pub(crate) use boxed;
