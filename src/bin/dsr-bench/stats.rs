//! Latency percentiles. Runs keep every sample (tens of thousands of
//! floats at most), so exact nearest-rank percentiles over the sorted
//! samples are cheap and need no histogram's bucketing error.

/// p50, p90 and p99 of a set of samples, in their unit.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// Computes them (sorting `samples`); all `None` when there are none.
    pub fn of(samples: &mut [f64]) -> Self {
        samples.sort_by(f64::total_cmp);
        Self {
            p50: nearest_rank(samples, 50.0),
            p90: nearest_rank(samples, 90.0),
            p99: nearest_rank(samples, 99.0),
        }
    }
}

/// The smallest sample with at least `pct` % of the samples at or below
/// it. `sorted` must be sorted ascending.
pub fn nearest_rank(sorted: &[f64], pct: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!((p.p50, p.p90, p.p99), (Some(50.0), Some(90.0), Some(99.0)));
        assert_eq!(nearest_rank(&[7.0], 99.0), Some(7.0));
        assert_eq!(nearest_rank(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(nearest_rank(&[1.0, 2.0], 99.0), Some(2.0));
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }
}
