//! Timestamps of the filesystems, as Unix time.

use std::time::{Duration, SystemTime};

/// A point in time: seconds since 1970-01-01 UTC (negative before) and nanoseconds within the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// Seconds from 1601-01-01 (NTFS's epoch) to 1970-01-01.
const NTFS_TO_UNIX: i64 = 11_644_473_600;

impl Time {
    /// As a [`SystemTime`], for setting a file's times; `None` where the platform cannot hold it.
    pub fn system(self) -> Option<SystemTime> {
        let nanos = Duration::from_nanos(u64::from(self.nanos));
        let whole = match u64::try_from(self.secs) {
            Ok(s) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)),
            Err(_) => {
                SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(self.secs.unsigned_abs()))
            }
        };
        whole?.checked_add(nanos)
    }

    /// An NTFS time (100 ns units since 1601); 0 means unset.
    pub(crate) fn ntfs(t: u64) -> Option<Time> {
        if t == 0 {
            return None;
        }
        let secs = (t / 10_000_000) as i64 - NTFS_TO_UNIX;
        Some(Time {
            secs,
            nanos: (t % 10_000_000) as u32 * 100,
        })
    }

    /// A FAT/exFAT date and time (local time of the writer, 2 s steps), plus `centis` hundredths of a
    /// second and an offset from UTC in minutes. `None` for a zero or impossible date.
    pub(crate) fn dos(date: u16, time: u16, centis: u8, utc_offset_min: i32) -> Option<Time> {
        if date == 0 {
            return None;
        }
        let year = 1980 + i64::from(date >> 9);
        let month = u32::from((date >> 5) & 0xF);
        let day = u32::from(date & 0x1F);
        let (h, m, s) = (
            i64::from(time >> 11),
            i64::from((time >> 5) & 0x3F),
            i64::from(time & 0x1F) * 2,
        );
        if !(1..=12).contains(&month) || day == 0 || h > 23 || m > 59 || s > 59 || centis > 199 {
            return None;
        }
        let days = crate::units::days_from_civil(year, month, day);
        let secs = days * 86_400 + h * 3600 + m * 60 + s + i64::from(centis / 100)
            - i64::from(utc_offset_min) * 60;
        Some(Time {
            secs,
            nanos: u32::from(centis % 100) * 10_000_000,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_convert() {
        assert_eq!(crate::units::days_from_civil(1970, 1, 1), 0);
        assert_eq!(crate::units::days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(crate::units::days_from_civil(1969, 12, 31), -1);
        // 2024-02-29 12:34:56 → 1709210096
        let date = ((2024 - 1980) << 9) | (2 << 5) | 29;
        let time = (12 << 11) | (34 << 5) | 28;
        let t = Time::dos(date, time, 0, 0).unwrap();
        assert_eq!(t.secs, 1_709_210_096);
        let t = Time::dos(date, time, 150, 60).unwrap();
        assert_eq!((t.secs, t.nanos), (1_709_210_097 - 3600, 500_000_000));
        assert_eq!(Time::dos(0, 0, 0, 0), None);
        assert_eq!(Time::dos((44 << 9) | (13 << 5) | 1, 0, 0, 0), None);
        let t = Time::ntfs(116_444_736_000_000_000 + 15).unwrap();
        assert_eq!((t.secs, t.nanos), (0, 1500));
    }
}
