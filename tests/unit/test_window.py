"""Maintenance windows evaluated by cronsim: day rules, Sundays, month ends, UTC, refusals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.domain.errors import InvalidRolloutSpecError
from orchestrator.domain.window import MaintenanceWindow, parse_window
from tests.properties import examples

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")


def utc(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An instant in 2025, in UTC (1 June 2025 is a Sunday)."""
    return datetime(2025, month, day, hour, minute, tzinfo=UTC)


def test_day_fields_starting_with_a_star_must_both_match() -> None:
    """A day-of-month starting with `*` (here `*/2`) narrows the weekday instead of adding days."""
    # given
    window = MaintenanceWindow("0 3 */2 * 1", 60)
    # when / then
    assert window.is_open(utc(6, 9, 3))  # Monday the 9th
    assert not window.is_open(utc(6, 2, 3))  # Monday the 2nd
    assert not window.is_open(utc(6, 11, 3))  # Wednesday the 11th


def test_restricted_day_fields_match_either_with_ranges_and_lists() -> None:
    """With both day fields restricted, the first week of a month and every Friday both match."""
    # given
    window = MaintenanceWindow("0 3 1-7 * 5", 60)
    # when / then
    assert window.is_open(utc(6, 3, 3))  # Tuesday the 3rd
    assert window.is_open(utc(6, 13, 3))  # Friday the 13th
    assert not window.is_open(utc(6, 12, 3))  # Thursday the 12th
    assert window.next_open(utc(6, 8, 4)) == utc(6, 13, 3)


@pytest.mark.parametrize("weekdays", ["0", "7", "6-7", "0,6", "*/7"])
def test_sunday_is_both_zero_and_seven(weekdays: str) -> None:
    """Sunday matches as 0, as 7, and inside a range or list that ends on 7."""
    # given
    window = MaintenanceWindow(f"0 3 * * {weekdays}", 60)
    # when / then
    assert window.is_open(utc(6, 1, 3))  # Sunday
    assert not window.is_open(utc(6, 2, 3))  # Monday
    assert window.next_open(utc(6, 2, 4)) in {utc(6, 7, 3), utc(6, 8, 3)}


def test_a_seven_day_window_crosses_a_month_end() -> None:
    """A week-long window from 28 February stays open into March and closes after 7 days."""
    # given
    window = parse_window("0 0 28 * *|7d")
    # when / then
    assert window.is_open(utc(3, 1))
    assert window.is_open(utc(3, 6, 23, 59))
    assert not window.is_open(utc(3, 7))
    assert window.next_open(utc(3, 7)) == utc(3, 28)


def test_a_week_long_window_from_new_years_eve_closes_to_the_second() -> None:
    """A window opened at 23:59 on 31 December 2024 is open until 23:59 on 7 January, not after."""
    # given
    window = parse_window("59 23 31 12 *|7d")
    # when
    opened = [window.is_open(utc(1, 7, 23, 58) + timedelta(seconds=s)) for s in range(120)]
    # then
    assert all(opened[:60])
    assert not any(opened[60:])


def test_windows_ignore_daylight_saving() -> None:
    """A window is placed in UTC: the Berlin clock change moves its local time, not its instant."""
    # given
    window = parse_window("0 1 * * *|1h")
    before, after = (
        datetime(2025, 3, 29, 2, 30, tzinfo=BERLIN),
        datetime(2025, 3, 30, 3, 30, tzinfo=BERLIN),
    )
    # when / then
    assert window.is_open(before)  # 01:30 UTC in winter time
    assert window.is_open(after)  # 01:30 UTC in summer time
    assert window.next_open(datetime(2025, 3, 30, tzinfo=BERLIN)) == after.replace(minute=0)
    assert window.next_open(after) == datetime(2025, 3, 31, 3, 0, tzinfo=BERLIN)


def test_next_open_is_given_in_the_timezone_of_now() -> None:
    """The next start is the same instant as in UTC, expressed in the caller's timezone."""
    # given
    window = parse_window("0 2 * * *|2h")
    # when
    start = window.next_open(datetime(2025, 6, 3, 12, 0, tzinfo=BERLIN))
    # then
    assert start == utc(6, 4, 2)
    assert start is not None
    assert start.tzinfo is BERLIN


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 0 2 * * *|1h", "needs 5 fields"),
        ("@daily|1h", "needs 5 fields"),
        ("0 2 L * *|1h", "day-of-month field 'L'"),
        ("0 2 LW * *|1h", "day-of-month field 'LW'"),
        ("0 2 * * 5L|1h", "day-of-week field '5L'"),
        ("0 2 * * 1#2|1h", "day-of-week field '1#2'"),
        ("0 2 * jan *|1h", "month field 'jan'"),
        ("0 2 * * -1|1h", "day-of-week field '-1'"),
        ("0 2 1, * *|1h", "day-of-month field '1,'"),
        ("0 2 * * 1-2-3|1h", "day-of-week field '1-2-3'"),
    ],
)
def test_cron_extensions_and_seconds_are_refused(text: str, message: str) -> None:
    """Only standard 5-field cron is read; the error names the field and the syntax allowed."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError, match=re.escape(message)):
        parse_window(text)


def test_a_refused_field_says_what_it_may_hold() -> None:
    """The error for a bad field lists the forms and the values the field takes."""
    # given / when
    with pytest.raises(InvalidRolloutSpecError) as refused:
        parse_window("0 2 * * 8|1h")
    # then
    assert "*, N, N-M" in str(refused.value)
    assert "0-7 (0 and 7 are Sunday)" in str(refused.value)


def test_a_one_value_stepped_range_is_that_value() -> None:
    """`5-5/10` is minute 5 alone, as in cron (cronsim alone would read 5, 15, 25, ...)."""
    # given
    window = MaintenanceWindow("5-5/10 * * * *", 60)
    # when / then
    assert window.is_open(utc(6, 3, 10, 5))
    assert not window.is_open(utc(6, 3, 10, 15))
    assert str(window) == "5-5/10 * * * *|1m"


def test_a_day_no_month_has_never_opens() -> None:
    """31 April never comes: the window is accepted but never open and never next."""
    # given
    window = parse_window("0 0 31 4 *|7d")
    # when / then
    assert not window.is_open(utc(5, 1, 12))
    assert window.next_open(utc(1, 1)) is None


# --- a brute-force check of is_open ---------------------------------------------


@dataclass(frozen=True)
class CronField:
    """One generated cron field: its text and the values it stands for."""

    text: str
    values: frozenset[int]


def cron_fields(low: int, high: int) -> st.SearchStrategy[CronField]:
    """`*`, `*/k`, `a/k`, `a-b/k` or a list of numbers, each with the values it selects."""
    every = st.just(CronField("*", frozenset(range(low, high + 1))))
    stepped = st.integers(1, high - low + 1).map(
        lambda k: CronField(f"*/{k}", frozenset(range(low, high + 1, k)))
    )
    started = st.tuples(st.integers(low, high), st.integers(1, 30)).map(
        lambda t: CronField(f"{t[0]}/{t[1]}", frozenset(range(t[0], high + 1, t[1])))
    )
    ranged = st.tuples(st.integers(low, high), st.integers(low, high), st.integers(1, 5)).map(
        lambda t: CronField(
            f"{min(t[:2])}-{max(t[:2])}/{t[2]}", frozenset(range(min(t[:2]), max(t[:2]) + 1, t[2]))
        )
    )
    listed = st.frozensets(st.integers(low, high), min_size=1, max_size=4).map(
        lambda values: CronField(",".join(map(str, sorted(values))), values)
    )
    return st.one_of(every, stepped, started, ranged, listed)


@dataclass(frozen=True)
class Cron:
    """A generated 5-field cron expression and a plain matcher for it."""

    minute: CronField
    hour: CronField
    day: CronField
    month: CronField
    weekday: CronField

    def __str__(self) -> str:
        return " ".join(
            f.text for f in (self.minute, self.hour, self.day, self.month, self.weekday)
        )

    def matches(self, moment: datetime) -> bool:
        """Whether the minute starting at `moment` matches, Vixie day rule included."""
        weekday = moment.isoweekday() % 7
        by_day = moment.day in self.day.values
        by_weekday = weekday in self.weekday.values or (weekday == 0 and 7 in self.weekday.values)
        either = not self.day.text.startswith("*") and not self.weekday.text.startswith("*")
        return (
            moment.minute in self.minute.values
            and moment.hour in self.hour.values
            and moment.month in self.month.values
            and ((by_day or by_weekday) if either else (by_day and by_weekday))
        )


crons = st.builds(
    Cron,
    minute=cron_fields(0, 59),
    hour=cron_fields(0, 23),
    day=cron_fields(1, 31),
    month=cron_fields(1, 12),
    weekday=cron_fields(0, 7),
)


@settings(max_examples=examples(300))
@given(
    cron=crons,
    duration=st.integers(1, 4 * 3600),
    now=st.datetimes(datetime(2024, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)),
)
def test_is_open_agrees_with_a_minute_by_minute_scan(
    cron: Cron, duration: int, now: datetime
) -> None:
    """is_open iff a matching minute starts in (now - duration, now]; next_open is the first."""
    # given
    window = MaintenanceWindow(str(cron), duration)
    earliest = now - timedelta(seconds=duration)
    start = now.replace(second=0, microsecond=0)
    # when
    scanned = False
    while start > earliest and not scanned:
        scanned = cron.matches(start)
        start -= timedelta(minutes=1)
    # then
    assert window.is_open(now) is scanned
    upcoming = window.next_open(now)
    assert upcoming is None or (upcoming >= now and cron.matches(upcoming))
    minute = now.replace(second=0, microsecond=0)
    ahead = [minute + timedelta(minutes=m) for m in range(1, 61)]
    assert not any(cron.matches(m) for m in ahead if upcoming is None or m < upcoming)
