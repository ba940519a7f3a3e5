//! Statistics shared by the benchmarks: latency percentiles from hdrhistograms, medians over
//! rounds, ratios, and the per-gigabyte cost figures (CPU-seconds per GB, allocations per
//! record). Pure functions, unit-tested; no clock or I/O here.

use hdrhistogram::Histogram;

/// Bytes in a gigabyte (10^9): throughputs are MB/s of 10^6 bytes, so costs are per GB.
pub const GB: f64 = 1_000_000_000.0;
/// Bytes in a megabyte (10^6).
pub const MB: f64 = 1_000_000.0;

/// The percentiles every latency line prints, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest sample.
    pub max_us: u64,
    /// Number of samples.
    pub samples: u64,
}

impl Percentiles {
    /// The percentiles of `histogram` (recorded in microseconds).
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50_us: histogram.value_at_quantile(0.5),
            p90_us: histogram.value_at_quantile(0.9),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
            samples: histogram.len(),
        }
    }

    /// The labelled points of a percentile plot: (label, microseconds).
    pub fn points(&self) -> [(&'static str, u64); 5] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p999_us),
            ("max", self.max_us),
        ]
    }
}

impl std::fmt::Display for Percentiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {} µs, p90 {} µs, p99 {} µs, p999 {} µs, max {} µs ({} samples)",
            self.p50_us, self.p90_us, self.p99_us, self.p999_us, self.max_us, self.samples
        )
    }
}

/// An empty latency histogram: microseconds, 3 significant digits, auto-resizing.
pub fn new_histogram() -> Histogram<u64> {
    // 3 significant figures is a valid precision for hdrhistogram: this cannot fail.
    Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
}

/// The median of `values` (the mean of the two middle ones for an even count); `None` when
/// empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let middle = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    })
}

/// `numerator / denominator`, or NaN when the denominator is zero or either is not finite
/// (printed as `n/a`, never as an infinite ratio).
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator == 0.0 || !numerator.is_finite() || !denominator.is_finite() {
        f64::NAN
    } else {
        numerator / denominator
    }
}

/// A ratio for printing: two decimals, or `n/a`.
pub fn format_ratio(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.2}")
    } else {
        "n/a".into()
    }
}

/// CPU-seconds spent per GB (10^9 bytes) moved: `cpu_seconds / (bytes / 10^9)`.
pub fn cpu_seconds_per_gb(cpu_seconds: f64, bytes: u64) -> f64 {
    ratio(cpu_seconds, bytes as f64 / GB)
}

/// Heap allocations per record.
pub fn per_record(allocations: u64, records: u64) -> f64 {
    ratio(allocations as f64, records as f64)
}

/// The fixed schedule of an open-loop phase: one request of `request_bytes` every
/// `request_bytes / rate_bytes_per_second` seconds for `seconds`; returns the interval and the
/// number of requests (at least one).
pub fn schedule(
    request_bytes: u64,
    rate_bytes_per_second: u64,
    seconds: f64,
) -> (std::time::Duration, u64) {
    assert!(
        rate_bytes_per_second > 0,
        "an offered rate must be positive"
    );
    let interval = request_bytes as f64 / rate_bytes_per_second as f64;
    let count = ((seconds / interval).floor() as u64).max(1);
    (std::time::Duration::from_secs_f64(interval), count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut histogram = new_histogram();
        for micros in 1..=1000u64 {
            histogram.record(micros).expect("in range");
        }
        let p = Percentiles::of(&histogram);
        assert_eq!(p.samples, 1000);
        assert_eq!(p.p50_us, 500);
        assert_eq!(p.p99_us, 990);
        assert_eq!(p.max_us, 1000);
        assert!(p.p90_us <= p.p99_us && p.p99_us <= p.p999_us && p.p999_us <= p.max_us);
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
        assert_eq!(p.points()[2], ("p99", 990));
    }

    #[test]
    fn medians_and_ratios() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0]), Some(3.0));
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(ratio(3.0, 2.0), 1.5);
        assert!(ratio(1.0, 0.0).is_nan());
        assert!(ratio(f64::NAN, 1.0).is_nan());
        assert_eq!(format_ratio(0.456), "0.46");
        assert_eq!(format_ratio(f64::NAN), "n/a");
    }

    #[test]
    fn costs_per_gigabyte_and_record() {
        // 2 CPU-seconds for 4 GB is 0.5 CPU-seconds per GB.
        assert_eq!(cpu_seconds_per_gb(2.0, 4_000_000_000), 0.5);
        assert!(cpu_seconds_per_gb(1.0, 0).is_nan());
        assert_eq!(per_record(5, 1000), 0.005);
    }

    #[test]
    fn schedules_cover_the_phase() {
        // 16 KiB requests at 16 MiB/s: one every 1/1024 s, 2048 in two seconds.
        let (interval, count) = schedule(16 << 10, 16 << 20, 2.0);
        assert_eq!(count, 2048);
        assert!((interval.as_secs_f64() - 1.0 / 1024.0).abs() < 1e-9);
        // A phase shorter than one interval still sends one request.
        assert_eq!(schedule(1 << 20, 1, 1.0).1, 1);
    }
}
