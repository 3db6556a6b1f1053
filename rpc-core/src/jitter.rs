//! Randomized durations, so that many clients or connections set going at once do not all act
//! at the same moment again (re-dials after a restart, connections closed at their maximum age).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// `d` scaled by a random factor in `[1 - spread, 1 + spread)` (`spread` in `0..=1`).
pub(crate) fn jitter(d: Duration, spread: f64) -> Duration {
    // A fresh `RandomState` is randomly keyed: enough randomness for spreading timers.
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let factor = 1.0 - spread + 2.0 * spread * (r % 1024) as f64 / 1024.0;
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_spread_and_varies() {
        let d = Duration::from_millis(100);
        for (spread, low, high) in [(0.5, d / 2, d * 3 / 2), (0.1, d * 9 / 10, d * 11 / 10)] {
            let seen: Vec<Duration> = (0..64).map(|_| jitter(d, spread)).collect();
            assert!(seen.iter().all(|j| *j >= low && *j < high), "{spread}: {seen:?}");
            assert!(seen.iter().any(|j| *j != seen[0]), "{spread}: {seen:?}");
        }
    }
}
