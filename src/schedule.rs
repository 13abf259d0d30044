//! When a target is due: its own `interval`, the `windows` outside which it
//! is not run, and the `drops` around which it is watched faster.
//!
//! The scheduler keeps one cycle loop (I1-I10 unchanged); a schedule only
//! decides, at each cycle, whether a target is considered (monitored and
//! dispatched) in it or skipped with the time it is next due. Windows and
//! drops are wall-clock times in a named IANA time zone (jiff, with the
//! time zone database built in, so a server without tzdata reads them the
//! same): `mon-fri 09:00-18:00 Europe/London` stays 09:00 in London across
//! a change to summer time. The [`Clock`] maps the scheduler's monotonic
//! clock onto wall time, so tests run schedules under tokio's paused clock.

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::TimeZone;
use tokio::time::Instant;

/// How far ahead the next window opening or weekly drop is looked for:
/// both repeat every week and name at least one day, so the next one is
/// within 7 days (one more for a time past today's). The scheduler asks
/// this for every target at every cycle, every 5 s in a drop: a year's
/// worth of days (370 zone conversions per call) was wasted work.
const LOOK_AHEAD_DAYS: i64 = 8;

/// The default `before` of a drop: watched from 2 minutes before.
pub const DROP_BEFORE: Duration = Duration::from_secs(120);
/// The default `after` of a drop: watched until 10 minutes after.
pub const DROP_AFTER: Duration = Duration::from_secs(600);
/// The default `drop_interval`.
pub const DROP_INTERVAL: Duration = Duration::from_secs(5);

/// Why a window or a drop time does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "unknown day `{0}`: use mon, tue, wed, thu, fri, sat, sun, ranges like mon-fri, or daily"
    )]
    Day(String),
    #[error("`{0}` is not a time of day like 09:00")]
    Time(String),
    #[error("unknown time zone `{0}`: use an IANA name like Europe/London or UTC")]
    Zone(String),
    #[error(
        "window `{0}`: write the days, the times and the time zone, like `mon-fri 09:00-18:00 Europe/London`"
    )]
    WindowShape(String),
    #[error("window `{window}`: `{times}` is not a time range like 09:00-18:00")]
    Range { window: String, times: String },
    #[error("window `{window}` starts and ends at {at}: it would never be open")]
    NeverOpen { window: String, at: Time },
    #[error(
        "drop `{0}`: write a date or days, a time and a time zone, like `2026-12-05 10:00 Europe/London` or `fri 10:00 Europe/London`"
    )]
    DropShape(String),
    #[error("drop `{drop}`: `{date}` is not a date like 2026-12-05")]
    Date { drop: String, date: String },
}

/// A target's schedule. The default (no interval, no windows, no drops)
/// is due at every cycle, as before schedules.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Its own interval range; `None` follows `cycle.interval`.
    pub interval: Option<(Duration, Duration)>,
    /// Run only inside one of these (none: always).
    pub windows: Vec<Window>,
    pub drops: Vec<DropTime>,
    /// The interval from a drop's `before` to its `after`.
    pub drop_interval: Duration,
    /// Skipped at every cycle (`paused: true`).
    pub paused: bool,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            interval: None,
            windows: Vec::new(),
            drops: Vec::new(),
            drop_interval: DROP_INTERVAL,
            paused: false,
        }
    }
}

/// Days of the week, Monday first, as a bit set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Days(u8);

impl Days {
    const ALL: Days = Days(0x7f);

    fn has(self, d: Weekday) -> bool {
        self.0 & (1 << d.to_monday_zero_offset()) != 0
    }

    /// `mon-fri`, `sat,sun`, `daily`, `mon,wed-fri`.
    fn parse(text: &str) -> Result<Days, ScheduleError> {
        if matches!(text, "daily" | "every" | "*") {
            return Ok(Days::ALL);
        }
        let mut bits = 0u8;
        for part in text.split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (day(a)?, day(b)?);
            let (a, b) = (a.to_monday_zero_offset(), b.to_monday_zero_offset());
            // `fri-mon` wraps over the weekend.
            let mut d = a;
            loop {
                bits |= 1 << d;
                if d == b {
                    break;
                }
                d = (d + 1) % 7;
            }
        }
        Ok(Days(bits))
    }
}

fn day(s: &str) -> Result<Weekday, ScheduleError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => {
            return Err(ScheduleError::Day(s.to_owned()));
        }
    })
}

/// `HH:MM` or `HH:MM:SS`.
fn time_of_day(s: &str) -> Result<Time, ScheduleError> {
    s.parse::<Time>()
        .ok()
        .filter(|_| s.len() >= 4 && s.contains(':'))
        .ok_or_else(|| ScheduleError::Time(s.to_owned()))
}

fn zone(name: &str) -> Result<TimeZone, ScheduleError> {
    TimeZone::get(name).map_err(|_| ScheduleError::Zone(name.to_owned()))
}

/// `mon-fri 09:00-18:00 Europe/London`: the days, the times (an end
/// before the start runs past midnight) and the zone.
#[derive(Clone, Debug)]
pub struct Window {
    days: Days,
    start: Time,
    end: Time,
    tz: TimeZone,
    text: String,
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, ScheduleError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (days, times, tz) = match words.as_slice() {
            [days, times, tz] => (Days::parse(days)?, *times, *tz),
            [times, tz] if times.contains(':') => (Days::ALL, *times, *tz),
            _ => {
                return Err(ScheduleError::WindowShape(text.to_owned()));
            }
        };
        let (start, end) = times.split_once('-').ok_or_else(|| ScheduleError::Range {
            window: text.to_owned(),
            times: times.to_owned(),
        })?;
        let (start, end) = (time_of_day(start)?, time_of_day(end)?);
        if start == end {
            return Err(ScheduleError::NeverOpen {
                window: text.to_owned(),
                at: start,
            });
        }
        Ok(Window {
            days,
            start,
            end,
            tz: zone(tz)?,
            text: text.to_owned(),
        })
    }

    /// Whether `now` is inside the window. A window past midnight belongs
    /// to the day it starts on.
    pub fn contains(&self, now: Timestamp) -> bool {
        let local = now.to_zoned_datetime(self.tz.clone());
        let (date, t) = (local.date(), local.time());
        if self.start < self.end {
            self.days.has(date.weekday()) && self.start <= t && t < self.end
        } else {
            (self.days.has(date.weekday()) && t >= self.start)
                || (self
                    .days
                    .has(date.yesterday().map_or(date, |d| d).weekday())
                    && t < self.end)
        }
    }

    /// The first opening after `now`.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        let today = now.to_zoned_datetime(self.tz.clone()).date();
        (0..=LOOK_AHEAD_DAYS)
            .filter_map(|n| today.checked_add(jiff::Span::new().days(n)).ok())
            .filter(|d| self.days.has(d.weekday()))
            .filter_map(|d| at_local(d, self.start, &self.tz))
            .find(|t| *t > now)
    }
}

/// `date` at `time` in `tz`: in a gap (a change to summer time) the
/// moment the clocks jump past, in an overlap the earlier one.
fn at_local(date: Date, time: Time, tz: &TimeZone) -> Option<Timestamp> {
    tz.to_ambiguous_timestamp(DateTime::from_parts(date, time))
        .compatible()
        .ok()
}

/// When a drop happens.
#[derive(Clone, Debug)]
enum When {
    /// Once: `2026-12-05 10:00 Europe/London`.
    Once(DateTime),
    /// Every week on these days: `fri 10:00 Europe/London`, `daily 10:00 UTC`.
    Weekly(Days, Time),
}

/// A drop: watched at `drop_interval` from `before` it to `after` it.
#[derive(Clone, Debug)]
pub struct DropTime {
    when: When,
    tz: TimeZone,
    pub before: Duration,
    pub after: Duration,
    text: String,
}

impl PartialEq for DropTime {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.before == other.before && self.after == other.after
    }
}

impl fmt::Display for DropTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl DropTime {
    pub fn parse(text: &str, before: Duration, after: Duration) -> Result<DropTime, ScheduleError> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [first, time, tz] = words.as_slice() else {
            return Err(ScheduleError::DropShape(text.to_owned()));
        };
        let t = time_of_day(time)?;
        let when = if first.starts_with(|c: char| c.is_ascii_digit()) {
            let date: Date = first.parse().map_err(|_| ScheduleError::Date {
                drop: text.to_owned(),
                date: (*first).to_owned(),
            })?;
            When::Once(DateTime::from_parts(date, t))
        } else {
            When::Weekly(Days::parse(first)?, t)
        };
        Ok(DropTime {
            when,
            tz: zone(tz)?,
            before,
            after,
            text: text.to_owned(),
        })
    }

    /// The drop times from the one before `now` (which may still be on)
    /// onwards, in order.
    fn times(&self, now: Timestamp) -> Vec<Timestamp> {
        match &self.when {
            When::Once(dt) => at_local(dt.date(), dt.time(), &self.tz)
                .into_iter()
                .collect(),
            When::Weekly(days, t) => {
                let today = now.to_zoned_datetime(self.tz.clone()).date();
                (-1..=LOOK_AHEAD_DAYS)
                    .filter_map(|n| today.checked_add(jiff::Span::new().days(n)).ok())
                    .filter(|d| days.has(d.weekday()))
                    .filter_map(|d| at_local(d, *t, &self.tz))
                    .collect()
            }
        }
    }

    /// Whether `now` is between `before` the drop and `after` it.
    pub fn is_on(&self, now: Timestamp) -> bool {
        self.times(now)
            .into_iter()
            .any(|at| sub(at, self.before) <= now && now <= add(at, self.after))
    }

    /// When the next watch around a drop starts, after `now`.
    pub fn next_start(&self, now: Timestamp) -> Option<Timestamp> {
        self.times(now)
            .into_iter()
            .map(|at| sub(at, self.before))
            .find(|s| *s > now)
    }
}

fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.checked_sub(d).unwrap_or(Timestamp::MIN)
}

impl Schedule {
    /// Whether a drop is on at `now`.
    pub fn in_drop(&self, now: Timestamp) -> bool {
        self.drops.iter().any(|d| d.is_on(now))
    }

    /// Whether `now` is inside a window (always, with none); a drop is
    /// watched whatever the windows say.
    pub fn open(&self, now: Timestamp) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.contains(now)) || self.in_drop(now)
    }

    /// When the target may next be run after `now`, if its windows are
    /// shut: the first window opening or drop start.
    pub fn next_open(&self, now: Timestamp) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| w.next_open(now))
            .chain(self.drops.iter().filter_map(|d| d.next_start(now)))
            .min()
    }

    /// The next drop's start after `now`: a target's next due time never
    /// passes it, so a drop is watched from its `before` on.
    pub fn next_drop(&self, now: Timestamp) -> Option<Timestamp> {
        self.drops.iter().filter_map(|d| d.next_start(now)).min()
    }

    /// The interval to the next consideration at `now`: `drop_interval`
    /// inside a drop, else its own range (`None`: the cycle's).
    pub fn interval(&self, now: Timestamp) -> Option<(Duration, Duration)> {
        if self.in_drop(now) {
            Some((self.drop_interval, self.drop_interval))
        } else {
            self.interval
        }
    }

    /// Whether the schedule is the default one (due at every cycle).
    pub fn is_default(&self) -> bool {
        self.interval.is_none() && self.windows.is_empty() && self.drops.is_empty()
    }
}

/// The scheduler's wall clock: wall time read off the monotonic clock from
/// one reading of both, so under tokio's paused clock it moves with the
/// tokio time a test advances.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    wall: Timestamp,
    mono: Instant,
}

impl Clock {
    /// The system's wall time now.
    pub fn system() -> Clock {
        Clock::starting_at(Timestamp::now())
    }

    /// A clock that reads `wall` now (tests).
    pub fn starting_at(wall: Timestamp) -> Clock {
        Clock {
            wall,
            mono: Instant::now(),
        }
    }

    /// The wall time at `at`.
    pub fn wall(&self, at: Instant) -> Timestamp {
        match at.checked_duration_since(self.mono) {
            Some(d) => add(self.wall, d),
            None => sub(self.wall, self.mono.duration_since(at)),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.wall(Instant::now())
    }

    /// The monotonic instant of wall time `t` (now, if it has passed).
    pub fn instant(&self, t: Timestamp) -> Instant {
        let now = self.now();
        let ahead = t.duration_since(now);
        if ahead.is_negative() {
            return Instant::now();
        }
        Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::MAX / 4)
    }
}

/// `t` as people read it in the schedule's first zone (UTC without one):
/// `09:58:00` today, else `Fri 5 Dec 09:58`.
pub fn show(t: Timestamp, now: Timestamp, tz: Option<&TimeZone>) -> String {
    let tz = tz.cloned().unwrap_or(TimeZone::UTC);
    let (z, n) = (
        t.to_zoned_datetime(tz.clone()),
        now.to_zoned_datetime(tz.clone()),
    );
    let name = tz.iana_name().unwrap_or("UTC");
    if z.date() == n.date() {
        format!("{} {name}", z.strftime("%H:%M:%S"))
    } else {
        format!("{} {name}", z.strftime("%a %-d %b %H:%M"))
    }
}

impl Schedule {
    /// The zone times of this schedule are shown in.
    pub fn zone(&self) -> Option<&TimeZone> {
        self.windows
            .first()
            .map(|w| &w.tz)
            .or_else(|| self.drops.first().map(|d| &d.tz))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_window_is_local_time_across_a_change_to_summer_time() {
        let w = Window::parse("daily 09:00-09:30 Europe/London").unwrap();
        // Saturday 28 March 2027, noon: GMT. Summer time starts on Sunday.
        let next = w.next_open(ts("2027-03-27T12:00:00Z")).unwrap();
        assert_eq!(next, ts("2027-03-28T08:00:00Z"), "09:00 BST");
        assert!(w.contains(ts("2027-03-28T08:10:00Z")));
        assert!(!w.contains(ts("2027-03-28T09:10:00Z")), "10:10 BST");
        assert!(w.contains(ts("2027-03-27T09:10:00Z")), "09:10 GMT");
    }

    #[test]
    fn windows_parse_days_ranges_and_overnight_times() {
        let w = Window::parse("fri-mon 22:00-02:00 UTC").unwrap();
        // Friday 22:30 and Saturday 01:00 are in; Thursday 23:00 is not.
        assert!(w.contains(ts("2026-12-04T22:30:00Z")));
        assert!(w.contains(ts("2026-12-05T01:00:00Z")));
        assert!(!w.contains(ts("2026-12-03T23:00:00Z")));
        // Tuesday 01:00 belongs to Monday night.
        assert!(w.contains(ts("2026-12-08T01:00:00Z")));
        assert!(!w.contains(ts("2026-12-09T01:00:00Z")));
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        for (text, says) in [
            ("mon-fry 09:00-18:00 UTC", "unknown day `fry`"),
            (
                "mon-fri 09:00-18:00 Europe/Londn",
                "unknown time zone `Europe/Londn`",
            ),
            ("mon-fri 25:00-26:00 UTC", "not a time of day"),
            ("mon-fri 09:00 UTC", "not a time range"),
            ("09:00-18:00", "write the days, the times and the time zone"),
            ("daily 09:00-09:00 UTC", "never be open"),
        ] {
            let e = Window::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let e = DropTime::parse("2026-13-05 10:00 UTC", DROP_BEFORE, DROP_AFTER)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a date"), "{e}");
    }

    #[test]
    fn a_drop_is_on_from_before_to_after() {
        let d = DropTime::parse("2026-12-05 10:00 Europe/London", DROP_BEFORE, DROP_AFTER).unwrap();
        assert!(!d.is_on(ts("2026-12-05T09:57:59Z")));
        assert!(d.is_on(ts("2026-12-05T09:58:00Z")));
        assert!(d.is_on(ts("2026-12-05T10:10:00Z")));
        assert!(!d.is_on(ts("2026-12-05T10:10:01Z")));
        assert_eq!(
            d.next_start(ts("2026-12-05T09:00:00Z")),
            Some(ts("2026-12-05T09:58:00Z"))
        );
        assert_eq!(d.next_start(ts("2026-12-05T11:00:00Z")), None, "once");
        let weekly = DropTime::parse("fri 10:00 UTC", DROP_BEFORE, DROP_AFTER).unwrap();
        assert_eq!(
            weekly.next_start(ts("2026-12-05T11:00:00Z")),
            Some(ts("2026-12-11T09:58:00Z"))
        );
    }
}
