//! Timestamps as Kubernetes and Go write them: `metav1.Time` / Go's `time.RFC3339` for a UTC
//! time (`2006-01-02T15:04:05Z`) and `metav1.MicroTime` (`2006-01-02T15:04:05.000000Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month, day, seconds into the day) of a Unix time, by H. Hinnant's days-to-civil
/// algorithm (proleptic Gregorian; times before 1970 count as 1970).
fn civil(t: SystemTime) -> (i64, i64, i64, i64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem, d.subsec_micros())
}

/// `2006-01-02T15:04:05Z`: second precision, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    let (y, m, d, rem, _) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `2006-01-02T15:04:05.000000Z`: microsecond precision, UTC (`metav1.MicroTime`).
pub fn rfc3339_micros(t: SystemTime) -> String {
    let (y, m, d, rem, us) = civil(t);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{us:06}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn known_dates() {
        let at = |s: u64, us: u64| UNIX_EPOCH + Duration::from_secs(s) + Duration::from_micros(us);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(at(951_782_400, 0)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(at(1_795_300_000, 0)), "2026-11-21T22:26:40Z");
        assert_eq!(rfc3339_micros(at(1_795_300_000, 42)), "2026-11-21T22:26:40.000042Z");
        assert_eq!(rfc3339(at(4_107_542_399, 0)), "2100-02-28T23:59:59Z");
    }
}
