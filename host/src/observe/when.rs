//! Times as the CLI shows and takes them: epoch milliseconds as a UTC date-time
//! (`2026-12-02 08:34:36`), and `agentflow runs --since` values — a UTC date or
//! date-time, or a duration ago — as epoch milliseconds. UTC only: no time-zone
//! database.

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn utc(ms: i64) -> String {
    let (day, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS) / 1000);
    let (y, m, d) = civil_from_days(day);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    )
}

/// A `--since` value as epoch milliseconds: `2026-12-01` (midnight UTC),
/// `2026-12-01T09:30[:00][Z]` (or with a space for the `T`), or a duration before
/// `now_ms` (`90s`, `30m`, `2h`, `7d`).
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "`{text}`: expected a UTC date or date-time (2026-12-01, 2026-12-01T09:30Z) or a \
             duration ago (30m, 2h, 7d)"
        )
    };
    if let Some(days) = text.strip_suffix('d') {
        let days: i64 = days.parse().map_err(|_| bad())?;
        return Ok(now_ms - days * DAY_MS);
    }
    if text.ends_with(['s', 'm', 'h']) && !text.contains('-') {
        let ms = crate::supervisor::limits::parse_duration_ms(text).map_err(|e| e.to_string())?;
        return Ok(now_ms - ms as i64);
    }
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((date, time)) => (date, Some(time.trim_end_matches('Z'))),
        None => (text, None),
    };
    let number = |s: &str| s.parse::<i64>().map_err(|_| bad());
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts[..] else {
        return Err(bad());
    };
    let (y, m, d) = (number(y)?, number(m)?, number(d)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = 0;
    if let Some(time) = time {
        let fields: Vec<i64> = time.split(':').map(number).collect::<Result<_, _>>()?;
        let (h, min, s) = match fields[..] {
            [h, min] => (h, min, 0),
            [h, min, s] => (h, min, s),
            _ => return Err(bad()),
        };
        if h > 23 || min > 59 || s > 60 {
            return Err(bad());
        }
        secs = h * 3600 + min * 60 + s;
    }
    Ok(days_from_civil(y, m, d) * DAY_MS + secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        let ms = 1_796_200_476_000; // 2026-12-02 08:34:36 UTC
        assert_eq!(utc(ms), "2026-12-02 08:34:36");
        assert_eq!(parse_since("2026-12-02T08:34:36Z", 0), Ok(ms));
        assert_eq!(parse_since("2026-12-02 08:34:36", 0), Ok(ms));
        assert_eq!(parse_since("2026-12-02", 0), Ok(ms - 30_876_000));
        assert_eq!(
            utc(parse_since("2024-02-29T23:59", 0).unwrap()),
            "2024-02-29 23:59:00"
        );
    }

    #[test]
    fn durations_count_back_from_now() {
        let now = 10 * DAY_MS;
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("30m", now), Ok(now - 1_800_000));
        assert_eq!(parse_since("7d", now), Ok(3 * DAY_MS));
    }

    #[test]
    fn nonsense_is_an_error() {
        for bad in [
            "yesterday",
            "2026-13-01",
            "2026-12",
            "12:00",
            "2026-12-01T25:00",
        ] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
