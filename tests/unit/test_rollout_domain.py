"""Rollout domain: state machine, waves and their plan, selectors, windows and the spec."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.domain.errors import CertfleetError, InvalidRolloutSpecError
from orchestrator.domain.rollout import (
    RANK,
    ROLLBACK_TARGETS,
    DeviceRolloutState,
    MaintenanceWindow,
    RolloutSpec,
    Selector,
    WaveStep,
    format_duration,
    format_waves,
    may_transition,
    parse_duration,
    parse_percent,
    parse_selector,
    parse_waves,
    parse_window,
    plan_waves,
    wave_sizes,
)

pytestmark = pytest.mark.unit

S = DeviceRolloutState
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
DIGEST = "ab" * 32


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """An instant in June 2025 (1 June 2025 is a Sunday)."""
    return datetime(2025, 6, day, hour, minute, second, tzinfo=UTC)


def spec(**overrides: Any) -> RolloutSpec:
    """A valid trust.add spec with `overrides` applied."""
    values: dict[str, Any] = {
        "kind": "trust.add",
        "ca_pems": (PEM,),
        "tag": 42,
        "spare_tag": 43,
        "probe_host": "staging.example.com",
        "probe_port": 8883,
        "waves": parse_waves("1%,10%,100%"),
    }
    values.update(overrides)
    return RolloutSpec(**values)


# --- device state machine -------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PENDING, S.SENT),
        (S.SENT, S.RECEIVED),
        (S.SENT, S.STAGED),
        (S.RECEIVED, S.STAGED),
        (S.STAGED, S.HEALTH_OK),
        (S.HEALTH_OK, S.COMMITTED),
        (S.STAGED, S.HEALTH_FAILED),
        (S.SENT, S.REJECTED),
        (S.STAGED, S.FALLBACK),
        (S.PENDING, S.TIMED_OUT),
        (S.SENT, S.TIMED_OUT),
        (S.STAGED, S.ROLLBACK_SENT),
        (S.COMMITTED, S.ROLLBACK_SENT),
        (S.ROLLBACK_SENT, S.ROLLED_BACK),
    ],
)
def test_forward_moves_are_allowed(current: S, new: S) -> None:
    """A device moves forward through the phases, and from a target into rollback."""
    # given / when
    allowed = may_transition(current, new)
    # then
    assert allowed


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.STAGED, S.SENT),
        (S.COMMITTED, S.HEALTH_OK),
        (S.SENT, S.SENT),
        (S.COMMITTED, S.REJECTED),
        (S.TIMED_OUT, S.COMMITTED),
        (S.HEALTH_FAILED, S.TIMED_OUT),
        (S.ROLLED_BACK, S.ROLLBACK_SENT),
        (S.ROLLBACK_SENT, S.COMMITTED),
        (S.PENDING, S.ROLLBACK_SENT),
        (S.REJECTED, S.ROLLBACK_SENT),
        (S.HEALTH_FAILED, S.ROLLBACK_SENT),
        (S.FALLBACK, S.ROLLBACK_SENT),
        (S.COMMITTED, S.ROLLED_BACK),
        (S.PENDING, S.ROLLED_BACK),
    ],
)
def test_backward_sideways_and_stray_rollback_moves_are_refused(current: S, new: S) -> None:
    """A late or duplicate report never moves a device backwards or sideways."""
    # given / when
    allowed = may_transition(current, new)
    # then
    assert not allowed


def test_a_timed_out_device_is_told_to_roll_back() -> None:
    """A device timed out by the orchestrator may have committed late: rollback covers it."""
    # given / when / then
    assert may_transition(S.TIMED_OUT, S.ROLLBACK_SENT)
    assert S.TIMED_OUT in ROLLBACK_TARGETS


def test_rollback_is_entered_exactly_from_the_targets() -> None:
    """Only devices that may hold the new credential are told to roll back."""
    # given / when
    sources = {state for state in S if may_transition(state, S.ROLLBACK_SENT)}
    # then
    assert sources == ROLLBACK_TARGETS


@given(st.lists(st.sampled_from(list(S)), max_size=30))
def test_allowed_moves_never_decrease_rank(proposals: list[S]) -> None:
    """Whatever reports arrive, the rank of a device's state only ever goes up."""
    # given
    state = S.PENDING
    for proposal in proposals:
        # when
        if may_transition(state, proposal):
            # then
            assert RANK[proposal] > RANK[state]
            state = proposal


# --- waves ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1%,10%,50%,100%", (1.0, 10.0, 50.0, 100.0)),
        ("100%", (100.0,)),
        (" 0.5% , 12.5%,100 % ", (0.5, 12.5, 100.0)),
    ],
)
def test_parse_waves_reads_percentages(text: str, expected: tuple[float, ...]) -> None:
    """Cumulative percentages are read in order, whitespace allowed."""
    # given / when
    steps = parse_waves(text)
    # then
    assert tuple(step.percent for step in steps) == expected
    assert all(step.count is None for step in steps)


def test_parse_waves_reads_a_canary_count_first() -> None:
    """A leading whole number is a canary device count."""
    # given / when
    steps = parse_waves("5,25%,100%")
    # then
    assert steps == (WaveStep(count=5), WaveStep(percent=25.0), WaveStep(percent=100.0))
    assert format_waves(steps) == "5,25%,100%"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1%,10%,50%", "waves must end at 100%"),
        ("5", "waves must end at 100%"),
        ("1%,50%,10%,100%", "wave percentages must increase: 10% after 50%"),
        ("10%,10%,100%", "wave percentages must increase: 10% after 10%"),
        ("5,10,100%", "only the first wave may be a device count"),
        ("0,100%", "canary count must be >= 1"),
        ("0%,100%", "above 0%"),
        ("50%,150%", "at most 100%"),
        ("", "neither a device count nor a percentage"),
        ("5,,100%", "neither a device count nor a percentage"),
        ("-5,100%", "neither a device count nor a percentage"),
        ("ten%,100%", "neither a device count nor a percentage"),
        ("nan%,100%", "neither a device count nor a percentage"),
    ],
)
def test_parse_waves_rejects_bad_forms(text: str, message: str) -> None:
    """A wave list that cannot be run is refused with a message that says why."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError, match=re.escape(message)):
        parse_waves(text)


@pytest.mark.parametrize(
    ("waves", "total", "expected"),
    [
        ("1%,10%,50%,100%", 500, [5, 45, 200, 250]),
        ("1%,10%,50%,100%", 1, [1]),
        ("1%,10%,50%,100%", 2, [1, 1]),
        ("1%,10%,50%,100%", 3, [1, 1, 1]),
        ("1%,10%,50%,100%", 0, []),
        ("5,25%,100%", 100, [5, 20, 75]),
        ("5,25%,100%", 3, [3]),
        ("5,25%,100%", 12, [5, 1, 6]),
        ("100%", 7, [7]),
    ],
)
def test_wave_sizes(waves: str, total: int, expected: list[int]) -> None:
    """Waves reach their cumulative share, at least one device each, none empty."""
    # given
    steps = parse_waves(waves)
    # when
    sizes = wave_sizes(steps, total)
    # then
    assert sizes == expected


def test_wave_sizes_avoid_float_rounding_up() -> None:
    """1.1% of 3000 devices is 33, although 3000 * 1.1 / 100 is a float just above 33."""
    # given
    steps = (WaveStep(percent=1.1), WaveStep(percent=100.0))
    # when
    sizes = wave_sizes(steps, 3000)
    # then
    assert sizes == [33, 2967]


wave_lists = st.tuples(
    st.one_of(st.none(), st.integers(min_value=1, max_value=50)),
    st.lists(st.integers(min_value=1, max_value=999), max_size=5, unique=True),
).map(
    lambda drawn: (
        ((WaveStep(count=drawn[0]),) if drawn[0] is not None else ())
        + tuple(WaveStep(percent=tenth / 10) for tenth in sorted(drawn[1]))
        + (WaveStep(percent=100.0),)
    )
)


@given(wave_lists, st.integers(min_value=0, max_value=5000))
def test_wave_sizes_properties(steps: tuple[WaveStep, ...], total: int) -> None:
    """Sizes sum to the total, every wave has a device, each share is reached, none overshot."""
    # given / when
    sizes = wave_sizes(steps, total)
    # then
    assert sum(sizes) == total
    assert all(size >= 1 for size in sizes)
    reached = [sum(sizes[: index + 1]) for index in range(len(sizes))]
    for index, step in enumerate(steps[: len(sizes)]):
        if step.count is not None:
            share = min(step.count, total)
        else:
            share = math.ceil(Fraction(total) * Fraction(str(step.percent)) / 100)
        before = reached[index - 1] if index else 0
        assert share <= reached[index] <= max(share, before + 1)
    if len(sizes) < len(steps) and total:
        assert reached[-1] == total


FLEET = [f"dev-{n:05d}" for n in range(1000)]


def test_plan_waves_is_reproducible_and_ignores_input_order() -> None:
    """The same seed and the same ids give the same plan, however the ids are ordered."""
    # given
    steps = parse_waves("5,10%,50%,100%")
    # when
    first = plan_waves("seed-a", FLEET, steps)
    again = plan_waves("seed-a", reversed(FLEET), steps)
    # then
    assert first == again
    assert [len(wave) for wave in first] == [5, 95, 400, 500]
    assert sorted(device for wave in first for device in wave) == FLEET


def test_plan_waves_spreads_the_canary() -> None:
    """The canary is a hashed sample, not the alphabetically first devices."""
    # given
    steps = parse_waves("5,100%")
    # when
    canary = plan_waves("seed-a", FLEET, steps)[0]
    # then
    assert canary != FLEET[:5]
    assert max(canary) > FLEET[100]


def test_plan_waves_differs_by_seed() -> None:
    """Different seeds pick different canaries."""
    # given
    steps = parse_waves("5,100%")
    # when
    canary_a = plan_waves("seed-a", FLEET, steps)[0]
    canary_b = plan_waves("seed-b", FLEET, steps)[0]
    # then
    assert canary_a != canary_b


def test_plan_waves_counts_duplicate_ids_once() -> None:
    """A device listed twice is planned once."""
    # given / when
    plan = plan_waves("s", ["a", "b", "a"], parse_waves("100%"))
    # then
    assert sorted(plan[0]) == ["a", "b"]


# --- selectors, percentages, durations -----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("all", Selector("all")),
        ("expiring:30", Selector("expiring", days=30)),
        (f"digest:{DIGEST}", Selector("digest", digest=DIGEST)),
        (f"digest:{DIGEST.upper()}", Selector("digest", digest=DIGEST)),
        ("file:/tmp/devices.txt", Selector("file", path="/tmp/devices.txt")),
    ],
)
def test_parse_selector(text: str, expected: Selector) -> None:
    """Each selector form reads into its kind and argument, and prints back."""
    # given / when
    selector = parse_selector(text)
    # then
    assert selector == expected
    assert parse_selector(str(selector)) == selector


@pytest.mark.parametrize(
    "text", ["", "some", "all:1", "expiring", "expiring:x", "expiring:-1", "digest:abc", "file:"]
)
def test_parse_selector_rejects_bad_forms(text: str) -> None:
    """An unknown or incomplete selector is refused."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError):
        parse_selector(text)


def test_selector_rejects_a_mismatched_argument() -> None:
    """A selector carries exactly the argument its kind needs."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError, match="selector all takes no argument"):
        Selector("all", days=3)
    with pytest.raises(InvalidRolloutSpecError, match="takes days"):
        Selector("expiring")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("10%", 0.10), ("10", 0.10), (" 12.5 % ", 0.125), ("0", 0.0), ("100%", 1.0)],
)
def test_parse_percent(text: str, expected: float) -> None:
    """A percentage, with or without its sign, reads as a fraction."""
    # given / when / then
    assert parse_percent(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "%", "101%", "-1%", "ten", "1e2", "nan"])
def test_parse_percent_rejects_bad_forms(text: str) -> None:
    """Anything but 0% to 100% is refused."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError):
        parse_percent(text)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (30, 30.0),
        (1.5, 1.5),
        ("30", 30.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        (" 1.5H ", 5400.0),
        ("0", 0.0),
    ],
)
def test_parse_duration(value: str | float, seconds: float) -> None:
    """Durations read as seconds in s, m, h or d, and print back to the same seconds."""
    # given / when
    parsed = parse_duration(value)
    # then
    assert parsed == seconds
    assert parse_duration(format_duration(parsed)) == parsed


@pytest.mark.parametrize("value", ["", "5w", "-5s", "m", "1e3", -1, math.inf, True])
def test_parse_duration_rejects_bad_forms(value: Any) -> None:
    """Negative, unitless garbage and unknown units are refused."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError):
        parse_duration(value)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_format_duration_round_trips(seconds: float) -> None:
    """Every duration prints to text that reads back to exactly the same seconds."""
    # given / when
    text = format_duration(seconds)
    # then
    assert parse_duration(text) == seconds


# --- maintenance windows --------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "is_open"),
    [
        (at(3, 2, 0), True),
        (at(3, 3, 59, 59), True),
        (at(3, 4, 0), False),
        (at(3, 1, 59, 59), False),
        (at(3, 12, 0), False),
    ],
)
def test_daily_window_edges(now: datetime, is_open: bool) -> None:
    """A 2-hour window from 02:00 is open at 02:00 and 03:59, closed at 04:00 and 01:59."""
    # given
    window = parse_window("0 2 * * *|2h")
    # when / then
    assert window.is_open(now) is is_open


def test_window_is_evaluated_in_utc() -> None:
    """An instant in another timezone is judged by its UTC time."""
    # given
    window = parse_window("0 2 * * *|2h")
    plus_two = timezone(timedelta(hours=2))
    # when / then
    assert window.is_open(datetime(2025, 6, 3, 4, 30, tzinfo=plus_two))
    assert not window.is_open(datetime(2025, 6, 3, 2, 30, tzinfo=plus_two))


def test_window_spans_midnight() -> None:
    """A window that starts late in the evening is still open after midnight."""
    # given
    window = parse_window("30 23 * * *|1h")
    # when / then
    assert window.is_open(at(4, 0, 15))
    assert not window.is_open(at(4, 0, 30))


@pytest.mark.parametrize(
    ("cron", "open_at", "closed_at"),
    [
        ("*/15 * * * *", at(3, 10, 45), at(3, 10, 46)),
        ("10-20/5 * * * *", at(3, 10, 15), at(3, 10, 16)),
        ("0 1,5,9 * * *", at(3, 5, 0), at(3, 6, 0)),
        ("0 8-17 * * 1-5", at(2, 17, 0), at(1, 12, 0)),
        ("0 0 1 * *", at(1, 0, 0), at(2, 0, 0)),
        ("0 0 * 6 *", at(9, 0, 0), datetime(2025, 7, 9, tzinfo=UTC)),
        ("5/20 * * * *", at(3, 10, 45), at(3, 10, 40)),
    ],
)
def test_cron_fields(cron: str, open_at: datetime, closed_at: datetime) -> None:
    """Steps, ranges, stepped ranges, lists, weekdays, days and months all match as cron does."""
    # given
    window = MaintenanceWindow(cron, 60)
    # when / then
    assert window.is_open(open_at)
    assert not window.is_open(closed_at)


def test_day_of_week_seven_is_sunday() -> None:
    """Day-of-week 7 and 0 both mean Sunday."""
    # given
    sunday, monday = at(1, 3, 0), at(2, 3, 0)
    # when
    windows = [MaintenanceWindow(f"0 3 * * {dow}", 60) for dow in ("0", "7")]
    # then
    for window in windows:
        assert window.is_open(sunday)
        assert not window.is_open(monday)


def test_restricted_day_of_month_or_week_matches_either() -> None:
    """When both day fields are restricted, either one matches (as in Vixie cron)."""
    # given
    window = MaintenanceWindow("0 3 15 * 1", 60)
    # when / then
    assert window.is_open(at(15, 3, 0))
    assert window.is_open(at(2, 3, 0))
    assert not window.is_open(at(3, 3, 0))


def test_next_open() -> None:
    """The next start is at or after now, to the minute."""
    # given
    window = parse_window("0 2 * * *|2h")
    # when / then
    assert window.next_open(at(3, 2, 0)) == at(3, 2, 0)
    assert window.next_open(at(3, 2, 0, 1)) == at(4, 2, 0)
    assert window.next_open(at(3, 1, 0)) == at(3, 2, 0)
    assert parse_window("0 0 1 1 *|1h").next_open(at(3, 0)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_next_open_none_when_the_cron_never_fires() -> None:
    """A cron naming 30 February never opens."""
    # given
    window = parse_window("0 0 30 2 *|1h")
    # when / then
    assert window.next_open(at(3, 0)) is None


def test_window_needs_an_aware_now() -> None:
    """A naive instant cannot be placed in UTC and is refused."""
    # given
    window = parse_window("0 2 * * *|2h")
    # when / then
    with pytest.raises(ValueError, match="timezone"):
        window.is_open(datetime(2025, 6, 3, 2, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0 2 * *|2h", "needs 5 fields"),
        ("60 2 * * *|2h", "minute field '60'"),
        ("0 24 * * *|2h", "hour field '24'"),
        ("0 2 0 * *|2h", "day-of-month field '0'"),
        ("0 2 * 13 *|2h", "month field '13'"),
        ("0 2 * * 8|2h", "day-of-week field '8'"),
        ("0 5-2 * * *|2h", "hour field '5-2'"),
        ("*/0 2 * * *|2h", "minute field"),
        ("0 2 * * mon|2h", "day-of-week field 'mon'"),
        ("0 2 * * *", "CRON|DURATION"),
        ("0 2 * * *|0s", "more than 0s"),
        ("0 2 * * *|8d", "at most 7d"),
    ],
)
def test_bad_windows_are_refused(text: str, message: str) -> None:
    """A bad cron names its bad field; a bad duration says what is allowed."""
    # given / when / then
    with pytest.raises(InvalidRolloutSpecError, match=re.escape(message)):
        parse_window(text)


def test_window_text_round_trips() -> None:
    """A window prints to the text it was read from."""
    # given
    window = parse_window("0  2 * * 1-5 | 90m")
    # when / then
    assert str(window) == "0 2 * * 1-5|90m"
    assert parse_window(str(window)) == window


# --- the rollout spec -----------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"spare_tag": 42}, "both 42"),
        ({"tag": -1}, "outside"),
        ({"spare_tag": 2_147_483_648}, "outside"),
        ({"probe_port": 0}, "probe port"),
        ({"probe_port": 65536}, "probe port"),
        ({"probe_host": ""}, "probe host"),
        ({"ca_pems": ()}, "at least one CA"),
        ({"ca_pems": ("",)}, "non-empty"),
        ({"kind": "trust.replace", "ca_pems": ()}, "at least one CA"),
        ({"kind": "identity.revoke"}, "unknown rollout kind"),
        ({"kind": "identity.rotate"}, "takes no CA certificate"),
        ({"waves": ()}, "at least one wave"),
        ({"waves": (WaveStep(percent=50.0),)}, "end at 100%"),
        ({"device_timeout_seconds": 0}, "device timeout"),
        ({"bake_seconds": -1}, "bake"),
        ({"min_sample": 0}, "min_sample"),
        ({"max_failure": 1.5}, "max_failure"),
        ({"push_rate": 0}, "push rate"),
        ({"advance": "sometimes"}, "advance"),
        ({"name": ""}, "name"),
    ],
)
def test_spec_validation(overrides: dict[str, Any], error: str) -> None:
    """A spec that cannot be run safely is refused with the reason."""
    # given / when / then
    with pytest.raises(CertfleetError, match=error):
        spec(**overrides)


def test_retire_needs_no_ca_nor_probe() -> None:
    """trust.retire may carry no CA and no probe."""
    # given / when
    retire = spec(kind="trust.retire", ca_pems=(), probe_host="", probe_port=0)
    # then
    assert retire.ca_pems == ()


def test_spec_json_round_trip() -> None:
    """A spec with every option set reads back equal from its JSON form."""
    # given
    original = spec(
        kind="trust.replace",
        waves=parse_waves("5,12.5%,100%"),
        bake_seconds=1800.0,
        advance="manual",
        max_failure=0.05,
        min_sample=20,
        device_timeout_seconds=90.5,
        timeouts_fail=True,
        push_rate=50.0,
        window=parse_window("0 2 * * 1-5|2h"),
        selector=parse_selector(f"digest:{DIGEST}"),
        name="ca-2026",
    )
    # when
    data = original.to_json()
    # then
    assert data["waves"] == "5,12.5%,100%"
    assert data["window"] == "0 2 * * 1-5|2h"
    assert data["selector"] == f"digest:{DIGEST}"
    assert RolloutSpec.from_json(data) == original


def test_spec_json_round_trip_with_defaults() -> None:
    """A minimal spec reads back equal, and absent optional keys take their defaults."""
    # given
    original = spec()
    data = original.to_json()
    # when / then
    assert RolloutSpec.from_json(data) == original
    minimal = {k: data[k] for k in ("kind", "ca_pems", "tag", "spare_tag", "waves")}
    minimal |= {"probe_host": data["probe_host"], "probe_port": data["probe_port"]}
    assert RolloutSpec.from_json(minimal) == original


def test_spec_from_json_names_a_missing_key() -> None:
    """Stored JSON without a required key is refused with the key's name."""
    # given
    data = spec().to_json()
    del data["spare_tag"]
    # when / then
    with pytest.raises(InvalidRolloutSpecError, match="spare_tag"):
        RolloutSpec.from_json(data)


@pytest.mark.parametrize(
    ("kind", "current", "expected"),
    [
        ("trust.add", [42], (42, 43)),
        ("trust.add", [43, 42, 42], (42, 43)),
        ("trust.replace", [7, 42], (7, 43)),
        ("trust.replace", [7], (7, 43)),
        ("trust.retire", [42, 43], (43,)),
        ("trust.retire", [1, 42, 43], (1, 43)),
    ],
)
def test_active_after(kind: str, current: list[int], expected: tuple[int, ...]) -> None:
    """Each kind adds the spare tag, swaps the live one for it, or drops the retired one."""
    # given
    rollout = spec(kind=kind)
    # when / then
    assert rollout.active_after(current) == expected


def test_active_after_refuses_an_empty_or_overfull_tag_list() -> None:
    """A commit must leave at least one and at most seven sec_tags on the socket."""
    # given
    retire = spec(kind="trust.retire")
    add = spec()
    # when / then
    with pytest.raises(InvalidRolloutSpecError, match="no active sec_tag"):
        retire.active_after([42])
    with pytest.raises(InvalidRolloutSpecError, match="at most 7"):
        add.active_after([1, 2, 3, 4, 5, 6, 42])
