//! Medians and the other summaries of repeated runs.

/// The median of `runs` (the mean of the middle two for an even count); NaN when empty.
pub fn median(runs: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = runs.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `order` rotated left by `by`, so each repetition starts with a different system.
pub fn rotated<T: Clone>(order: &[T], by: usize) -> Vec<T> {
    if order.is_empty() {
        return Vec::new();
    }
    let by = by % order.len();
    order[by..].iter().chain(&order[..by]).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn rotation_wraps() {
        assert_eq!(rotated(&[1, 2, 3], 1), vec![2, 3, 1]);
        assert_eq!(rotated(&[1, 2, 3], 4), vec![2, 3, 1]);
    }
}
