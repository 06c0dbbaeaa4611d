//! The metrics one finished request records, pre-resolved per route when the
//! config is built: `wasp_requests_total` by exact status code and by who
//! answered, `wasp_local_replies_total` by reason, and the duration
//! histogram. A (code, source) or reason seen for the first time on a route
//! resolves its child once; after that a request costs a few compares and
//! atomic adds, never a hashed label lookup or a lock.

use super::Histogram;
use crate::error::Kind;
use prometheus::{IntCounter, IntCounterVec};
use std::sync::{Arc, OnceLock};

/// Who answered a request: the `source` label of `wasp_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// The upstream's response (possibly changed by filters).
    Upstream,
    /// A filter's local reply (e.g. 401, 403, 429).
    Filter,
    /// wasp's own reply for a failure of this kind (no route, connect
    /// failure, timeout, breaker open...).
    Wasp(Kind),
    /// Nobody: the client went away before a response existed (499).
    Client,
}

impl Answered {
    fn label(self) -> &'static str {
        match self {
            Answered::Upstream => "upstream",
            Answered::Filter => "filter",
            Answered::Wasp(_) => "wasp",
            Answered::Client => "client",
        }
    }

    /// A small number per source, to key the code table.
    fn key(self) -> u16 {
        match self {
            Answered::Upstream => 0,
            Answered::Filter => 1,
            Answered::Wasp(_) => 2,
            Answered::Client => 3,
        }
    }
}

/// Distinct (code, source) pairs a route resolves without a label lookup;
/// more than that (rare: a route sees a handful of codes) fall back to one.
const CODE_SLOTS: usize = 32;

/// Request counters and the duration histogram of one route.
#[derive(Clone)]
pub struct RouteMetrics {
    children: Arc<Children>,
    duration: Histogram,
}

struct Children {
    requests: IntCounterVec,
    local: IntCounterVec,
    /// listener, route, cluster.
    labels: [Box<str>; 3],
    /// An open-addressed table of `(code << 2 | source, counter)`, filled on first use.
    codes: [OnceLock<(u16, IntCounter)>; CODE_SLOTS],
    /// `wasp_local_replies_total` by [`Kind::index`], filled on first use.
    local_by_kind: [OnceLock<IntCounter>; Kind::COUNT],
}

impl RouteMetrics {
    /// Children of `requests{listener,route,cluster,class,code,source}` and
    /// `local{listener,route,cluster,code,reason}` for one route, resolved as
    /// they are first needed.
    pub fn new(
        requests: &IntCounterVec,
        local: &IntCounterVec,
        duration: Histogram,
        [listener, route, cluster]: [&str; 3],
    ) -> Self {
        let children = Children {
            requests: requests.clone(),
            local: local.clone(),
            labels: [listener.into(), route.into(), cluster.into()],
            codes: std::array::from_fn(|_| OnceLock::new()),
            local_by_kind: std::array::from_fn(|_| OnceLock::new()),
        };
        RouteMetrics { children: Arc::new(children), duration }
    }

    /// Makes the `wasp_local_replies_total` series of `kind` exist (at 0) before its first reply.
    pub fn expect(&self, kind: Kind) {
        self.children.local(kind);
    }

    /// Records one finished request: its status, who answered it, and how long it took.
    pub fn observe(&self, status: u16, answered: Answered, seconds: f64) {
        self.children.count(status, answered);
        if let Answered::Wasp(kind) = answered {
            self.children.local(kind).inc();
        }
        self.duration.observe(seconds);
    }
}

impl Children {
    fn count(&self, status: u16, answered: Answered) {
        let key = status << 2 | answered.key();
        let start = usize::from(status) % CODE_SLOTS;
        for i in 0..CODE_SLOTS {
            let slot = &self.codes[(start + i) % CODE_SLOTS];
            let (k, counter) = slot.get_or_init(|| (key, self.resolve(status, answered)));
            if *k == key {
                return counter.inc();
            }
        }
        // Every slot holds another code: look this one up each time.
        self.resolve(status, answered).inc();
    }

    fn resolve(&self, status: u16, answered: Answered) -> IntCounter {
        let [listener, route, cluster] = &self.labels;
        let class = CLASSES[usize::from(status / 100).clamp(1, 5) - 1];
        let code = status.to_string();
        self.requests.with_label_values(&[&**listener, route, cluster, class, &code, answered.label()])
    }

    fn local(&self, kind: Kind) -> &IntCounter {
        self.local_by_kind[kind.index()].get_or_init(|| {
            let [listener, route, cluster] = &self.labels;
            let code = kind.status();
            self.local.with_label_values(&[&**listener, route, cluster, code.as_str(), kind.reason()])
        })
    }
}

/// The `class` label, by hundreds.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn families() -> (IntCounterVec, IntCounterVec, Histogram) {
        let requests =
            IntCounterVec::new(Opts::new("r", "r"), &["listener", "route", "cluster", "class", "code", "source"]);
        let local = IntCounterVec::new(Opts::new("l", "l"), &["listener", "route", "cluster", "code", "reason"]);
        let duration = super::super::HistogramVec::new("d", "d", &[], &[0.1]).expect("valid").with_label_values(&[]);
        (requests.expect("valid"), local.expect("valid"), duration)
    }

    #[test]
    fn counts_each_code_and_source_apart_even_past_the_table() {
        let (requests, local, duration) = families();
        let m = RouteMetrics::new(&requests, &local, duration, ["l", "r", "c"]);
        let get = |class, code, source| requests.with_label_values(&["l", "r", "c", class, code, source]).get();
        // More distinct codes than slots: the rest are looked up, and still counted.
        for code in 200..200 + CODE_SLOTS as u16 + 8 {
            m.observe(code, Answered::Upstream, 0.01);
        }
        m.observe(200, Answered::Upstream, 0.01);
        m.observe(503, Answered::Upstream, 0.01);
        m.observe(503, Answered::Wasp(Kind::CircuitOpen), 0.01);
        m.observe(503, Answered::Wasp(Kind::CircuitOpen), 0.01);
        m.observe(429, Answered::Filter, 0.01);
        m.observe(499, Answered::Client, 0.01);
        assert_eq!(get("2xx", "200", "upstream"), 2);
        assert_eq!(get("2xx", "239", "upstream"), 1);
        assert_eq!(get("5xx", "503", "upstream"), 1);
        assert_eq!(get("5xx", "503", "wasp"), 2);
        assert_eq!(get("4xx", "429", "filter"), 1);
        assert_eq!(get("4xx", "499", "client"), 1);
        assert_eq!(local.with_label_values(&["l", "r", "c", "503", "wasp_circuit_open"]).get(), 2);
        let families = prometheus::core::Collector::collect(&local);
        assert_eq!(families[0].get_metric().len(), 1, "only wasp's own replies are local");
    }
}
