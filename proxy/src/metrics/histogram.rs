//! Histograms on the request path (request duration, upstream wait, filter
//! call time): an observation is one atomic add to its bucket and one to
//! the sum (none to the sum for a zero), where the `prometheus` crate's
//! histogram takes four (a shard count, the bucket, a compare-and-swap
//! loop on a float sum, the count) to keep a scrape from seeing a sample
//! half-recorded. Here the count is the sum of the buckets, so count and
//! buckets always agree; the sum, kept in tenths of a microsecond (rounded:
//! a u64 of them holds 58,000 years of summed request time: 58 years at
//! 1,000 seconds of requests a second), may be one sample ahead or behind
//! of them in a scrape that races an observation, as in Prometheus's own Go
//! client before it sharded. Exposed in the same text format
//! (`_bucket{le=…}`, `_sum`, `_count`).

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// One histogram: a child of a [`HistogramVec`].
#[derive(Clone)]
pub struct Histogram {
    cells: Arc<Cells>,
}

struct Cells {
    /// Upper bounds, ascending.
    bounds: Arc<[f64]>,
    /// Samples per bucket (not cumulative); the last is above every bound.
    counts: Box<[AtomicU64]>,
    /// In tenths of a microsecond.
    sum_100ns: AtomicU64,
}

/// Sum units a second.
const UNITS: f64 = 1e7;

impl Histogram {
    fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram { cells: Arc::new(Cells { bounds, counts, sum_100ns: AtomicU64::new(0) }) }
    }

    /// Records `seconds` (a negative or NaN value counts as zero).
    pub fn observe(&self, seconds: f64) {
        let cells = &*self.cells;
        let i = cells.bounds.partition_point(|bound| *bound < seconds);
        cells.counts[i].fetch_add(1, Ordering::Relaxed);
        let units = (seconds * UNITS + 0.5) as u64; // rounded; saturating: NaN and negatives are 0
        if units > 0 {
            cells.sum_100ns.fetch_add(units, Ordering::Relaxed);
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.cells.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn proto(&self) -> proto::Histogram {
        let cells = &*self.cells;
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(cells.bounds.len());
        for (bound, count) in cells.bounds.iter().zip(cells.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            buckets.push(b);
        }
        let above = cells.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        h.set_sample_count(cumulative + above);
        h.set_sample_sum(cells.sum_100ns.load(Ordering::Relaxed) as f64 / UNITS);
        h.set_bucket(buckets);
        h
    }
}

/// A family of [`Histogram`]s by label values, registered as one collector.
#[derive(Clone)]
pub struct HistogramVec {
    inner: Arc<Family>,
}

struct Family {
    desc: Desc,
    bounds: Arc<[f64]>,
    /// Children by label values. Looked up when config is built, never on
    /// the request path.
    children: Mutex<HashMap<Vec<String>, Histogram>>,
}

impl HistogramVec {
    /// A family `name` with `labels` and bucket upper bounds `bounds`
    /// (ascending, finite).
    pub fn new(name: &str, help: &str, labels: &[&str], bounds: &[f64]) -> prometheus::Result<Self> {
        if bounds.windows(2).any(|w| w[0] >= w[1]) || bounds.iter().any(|b| !b.is_finite()) {
            return Err(prometheus::Error::Msg(format!("{name}: bucket bounds must ascend and be finite")));
        }
        let labels = labels.iter().map(|l| l.to_string()).collect();
        let desc = Desc::new(name.into(), help.into(), labels, Default::default())?;
        let family = Family { desc, bounds: bounds.into(), children: Mutex::default() };
        Ok(HistogramVec { inner: Arc::new(family) })
    }

    /// The child with `values` (one per label, in order), made on first use.
    pub fn with_label_values(&self, values: &[&str]) -> Histogram {
        assert_eq!(values.len(), self.inner.desc.variable_labels.len(), "one value per label");
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut children = self.inner.children.lock().unwrap_or_else(PoisonError::into_inner);
        children.entry(key).or_insert_with(|| Histogram::new(self.inner.bounds.clone())).clone()
    }
}

impl Collector for HistogramVec {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.inner.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let desc = &self.inner.desc;
        let children = self.inner.children.lock().unwrap_or_else(PoisonError::into_inner);
        let metrics = children
            .iter()
            .map(|(values, h)| {
                // By label name, as the `prometheus` crate orders them.
                let mut pairs: Vec<_> = desc.variable_labels.iter().zip(values).collect();
                pairs.sort_unstable();
                let labels = pairs
                    .into_iter()
                    .map(|(name, value)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(name.clone());
                        pair.set_value(value.clone());
                        pair
                    })
                    .collect();
                let mut m = proto::Metric::from_label(labels);
                m.set_histogram(h.proto());
                m
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(desc.fq_name.clone());
        family.set_help(desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, TextEncoder};

    fn text(c: &dyn Collector) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&c.collect(), &mut out).expect("encodes");
        String::from_utf8(out).expect("utf-8")
    }

    /// The same samples give the same exposition as the `prometheus` crate's histogram.
    #[test]
    fn exposes_what_the_prometheus_histogram_does() {
        let bounds = [0.001, 0.01, 0.1, 1.0];
        let ours = HistogramVec::new("d", "help", &["route", "cluster"], &bounds).expect("valid");
        let theirs = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new("d", "help").buckets(bounds.to_vec()),
            &["route", "cluster"],
        )
        .expect("valid");
        // On a bound, between bounds, zero, above all, negative (as zero).
        for v in [0.0, 0.001, 0.0015, 0.25, 1.0, 7.5, 0.0, -1.0] {
            ours.with_label_values(&["r", "c"]).observe(v);
            theirs.with_label_values(&["r", "c"]).observe(v.max(0.0));
        }
        assert_eq!(text(&ours), text(&theirs));
        assert_eq!(ours.with_label_values(&["r", "c"]).count(), 8);
    }

    #[test]
    fn children_are_apart_and_made_once() {
        let family = HistogramVec::new("w", "help", &["cluster"], &[0.5]).expect("valid");
        let a = family.with_label_values(&["a"]);
        a.observe(0.1);
        family.with_label_values(&["a"]).observe(0.9);
        family.with_label_values(&["b"]).observe(0.2);
        assert_eq!(a.count(), 2);
        let text = text(&family);
        assert!(text.contains("w_bucket{cluster=\"a\",le=\"0.5\"} 1\n"), "{text}");
        assert!(text.contains("w_count{cluster=\"a\"} 2\n"), "{text}");
        assert!(text.contains("w_count{cluster=\"b\"} 1\n"), "{text}");
    }

    #[test]
    fn refuses_bounds_that_do_not_ascend() {
        assert!(HistogramVec::new("x", "help", &[], &[1.0, 0.5]).is_err());
        assert!(HistogramVec::new("x", "help", &[], &[f64::INFINITY]).is_err());
    }
}
