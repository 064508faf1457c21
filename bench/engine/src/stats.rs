//! Percentiles (nearest rank) of a set of samples.

use serde_json::{Value, json};

/// `p` in 0..=100 of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    let index = rank.clamp(1, n) - 1;
    sorted.get(index).copied()
}

fn round(x: Option<f64>) -> Value {
    x.map_or(Value::Null, |v| json!((v * 100.0).round() / 100.0))
}

/// count, min, p50, p90, p99, max and mean, rounded to 0.01.
pub(crate) fn summary(samples: &[f64]) -> Value {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let mean = if sorted.is_empty() {
        None
    } else {
        Some(sorted.iter().sum::<f64>() / sorted.len() as f64)
    };
    json!({
        "count": sorted.len(),
        "min": round(sorted.first().copied()),
        "p50": round(percentile(&sorted, 50.0)),
        "p90": round(percentile(&sorted, 90.0)),
        "p99": round(percentile(&sorted, 99.0)),
        "max": round(sorted.last().copied()),
        "mean": round(mean),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
