//! The `Date` field of responses (RFC 9110 §6.6.1), formatted once a
//! second per thread rather than per response.

use http::HeaderValue;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static CACHED: RefCell<(u64, HeaderValue)> = const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// Now, as an HTTP date.
pub fn now() -> HeaderValue {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            let text = httpdate::fmt_http_date(now);
            *cached = (second, HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("")));
        }
        cached.1.clone()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_http_date_that_parses_back() {
        let date = super::now();
        let parsed = httpdate::parse_http_date(date.to_str().expect("ascii")).expect("an HTTP date");
        let age = std::time::SystemTime::now().duration_since(parsed).expect("not in the future");
        assert!(age.as_secs() < 5, "{date:?}");
    }
}
