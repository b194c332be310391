//! Wall-clock time stamps for results and logs: UTC, RFC 3339, no time
//! zone database (results name instants, never local times). Measured
//! durations never come from here: they come from the monotonic clock
//! of [`crate::measure`].
//!
//! Load generators (`run --load-shard`) meet at a wall-clock time
//! ([`parse_start_at`]), and each maps the monotonic clock its requests
//! are timed on to the wall clock once per cell ([`unix_ns_at`]), so that
//! `merge` can put several machines' requests on one time line. What the
//! system knows of its wall clock's error ([`clock_status`], from
//! `adjtimex(2)`) goes with them: a latency is always measured on one
//! machine's monotonic clock, so clock error never enters a latency; it
//! only shifts when one generator's requests reached the server against
//! another's.

use engine_matrix_results::ClockStatus;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// UTC time as RFC 3339, e.g. `2026-11-22T10:04:05Z`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A folder-name-friendly timestamp, e.g. `20261122-100405`.
pub fn stamp() -> String {
    utc_now()
        .replace(['-', ':'], "")
        .replace('T', "-")
        .trim_end_matches('Z')
        .to_string()
}

/// Nanoseconds since the Unix epoch, now (0 before 1970).
pub fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The wall-clock time (ns since the Unix epoch) at `at`, and the
/// uncertainty of the pairing (ns): the wall clock is read between two
/// readings of the monotonic clock, whose midpoint it is paired with.
/// The tightest of a few tries is kept (a preemption between the
/// readings widens one).
pub fn unix_ns_at(at: Instant) -> (u64, u64) {
    let mut best: Option<(i128, u64)> = None;
    for _ in 0..5 {
        let a = Instant::now();
        let wall = unix_ns_now() as i128;
        let b = Instant::now();
        let width = b.duration_since(a).as_nanos() as u64;
        let mid = a + b.duration_since(a) / 2;
        let since = if mid >= at {
            mid.duration_since(at).as_nanos() as i128
        } else {
            -(at.duration_since(mid).as_nanos() as i128)
        };
        let t = wall - since;
        if best.is_none_or(|(_, w)| width < w) {
            best = Some((t, width));
        }
    }
    let (t, w) = best.unwrap_or((0, 0));
    (t.max(0) as u64, w)
}

/// `--start-at`: an RFC 3339 time (`2026-12-07T10:00:00Z`, an offset such
/// as `+01:00`, fractions of a second allowed) or `@SECONDS` since the Unix
/// epoch (`date +@%s` prints one), as ns since the Unix epoch.
pub fn parse_start_at(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Some(secs) = s.strip_prefix('@') {
        return secs
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(|x| (x * 1e9).round() as u64)
            .ok_or_else(|| format!("'{s}': @SECONDS must be a number of seconds since 1970"));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!("'{s}': not an RFC 3339 time such as 2026-12-07T10:00:00Z, nor @SECONDS ({e})")
        })?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("'{s}': before 1970"))
}

/// ns since the Unix epoch as RFC 3339 UTC with nanoseconds.
pub fn format_unix_ns(ns: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{}", ns as f64 * 1e-9))
}

/// What the system says about its wall clock: on Linux, `adjtimex(2)`
/// with no change asked (modes 0, which needs no privilege), plus the
/// kernel's boot id; elsewhere, unknown.
pub fn clock_status() -> ClockStatus {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let mut status = ClockStatus {
        source: "none".into(),
        boot_id,
        ..Default::default()
    };
    adjtimex_into(&mut status);
    status
}

#[cfg(target_os = "linux")]
fn adjtimex_into(status: &mut ClockStatus) {
    // SAFETY: timex is plain data; zeroed means modes 0 (read only).
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: a valid, writable timex.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return;
    }
    status.source = "adjtimex".into();
    let unsync = tx.status & libc::STA_UNSYNC != 0 || state == libc::TIME_ERROR;
    status.synchronized = Some(!unsync);
    // The offset is in ns when STA_NANO is set, else in µs.
    let nano = tx.status & libc::STA_NANO != 0;
    status.offset_us = Some(if nano {
        tx.offset as f64 / 1000.0
    } else {
        tx.offset as f64
    });
    status.max_error_us = u64::try_from(tx.maxerror).ok();
    status.est_error_us = u64::try_from(tx.esterror).ok();
}

#[cfg(not(target_os = "linux"))]
fn adjtimex_into(_: &mut ClockStatus) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn stamps_have_their_shapes() {
        let now = utc_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z') && now.as_bytes()[10] == b'T', "{now}");
        let s = stamp();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(s.as_bytes()[8], b'-', "{s}");
    }

    #[test]
    fn start_times_parse_in_both_forms_and_bad_ones_are_named() {
        let a = parse_start_at("2026-12-07T10:00:00Z").unwrap();
        assert_eq!(a, 1_796_637_600_000_000_000);
        assert_eq!(
            parse_start_at("2026-12-07T11:00:00.5+01:00").unwrap(),
            a + 500_000_000
        );
        assert_eq!(parse_start_at("@1796637600").unwrap(), a);
        assert_eq!(format_unix_ns(a + 250), "2026-12-07T10:00:00.00000025Z");
        let e = parse_start_at("tomorrow").unwrap_err();
        assert!(e.contains("'tomorrow'") && e.contains("RFC 3339"), "{e}");
        assert!(parse_start_at("@-3").is_err());
    }

    #[test]
    fn the_wall_clock_pairs_with_the_monotonic_clock() {
        let earlier = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (t, width) = unix_ns_at(earlier);
        let now = unix_ns_now();
        // `earlier` was at least 20 ms ago on both clocks.
        assert!(now >= t + 20_000_000, "{now} {t}");
        assert!(now < t + 20_000_000_000, "{now} {t}");
        assert!(width < 100_000_000, "{width}");
    }

    #[test]
    fn the_clock_status_is_read_or_unknown() {
        let s = clock_status();
        assert!(s.source == "adjtimex" || s.source == "none", "{s:?}");
        if s.source == "adjtimex" {
            assert!(
                s.synchronized.is_some() && s.max_error_us.is_some(),
                "{s:?}"
            );
        }
    }
}
