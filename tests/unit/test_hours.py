"""`hours:` (topology/hours.py): the grammar, the instants at the edges, the errors, and properties:
any text gives a Schedule or a ValueError, generated expressions round-trip through str(), and
next_change agrees with a minute-by-minute scan."""

from __future__ import annotations

import ast
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterctl.topology import hours
from clusterctl.topology.hours import Schedule, parse

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FULL = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONDAY = datetime(2024, 1, 1)  # a Monday
NIGHTS = "Mon-Fri 19:00-07:00; Sat,Sun"


def at(day: str, hhmm: str, second: int = 0) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return MONDAY + timedelta(days=DAYS.index(day), hours=h, minutes=m, seconds=second)


@pytest.mark.parametrize("text, inside, outside", [
    (NIGHTS,
     [("Mon", "19:00"), ("Fri", "19:00"), ("Fri", "23:59"), ("Sat", "06:59"), ("Sat", "07:00"), ("Sat", "12:00"),
      ("Sun", "00:00"), ("Sun", "23:59"), ("Tue", "06:59"), ("Wed", "03:00")],
     [("Mon", "00:00"), ("Mon", "06:59"), ("Mon", "07:00"), ("Mon", "18:59"), ("Tue", "07:00"), ("Fri", "18:59")]),
    ("Mon-Fri 19:00-07:00",
     [("Mon", "19:00"), ("Fri", "23:59"), ("Sat", "06:59"), ("Tue", "00:00")],
     [("Mon", "06:59"), ("Mon", "00:00"), ("Sat", "07:00"), ("Sun", "12:00"), ("Sun", "23:59"), ("Fri", "07:00")]),
    ("Mon-Fri 18:00-08:00",
     [("Mon", "18:00"), ("Tue", "07:59"), ("Sat", "07:59")],
     [("Mon", "17:59"), ("Tue", "08:00"), ("Sat", "08:00"), ("Mon", "07:59")]),
    ("Sat 00:00-24:00",
     [("Sat", "00:00"), ("Sat", "23:59")],
     [("Fri", "23:59"), ("Sun", "00:00")]),
    ("09:00-17:00",
     [(d, "09:00") for d in DAYS] + [(d, "16:59") for d in DAYS],
     [(d, "17:00") for d in DAYS] + [(d, "08:59") for d in DAYS]),
    ("Mon,Wed,Fri 12:00-13:00, 20:00-23:00",
     [("Mon", "12:00"), ("Wed", "12:59"), ("Fri", "20:00"), ("Fri", "22:59")],
     [("Tue", "12:30"), ("Mon", "13:00"), ("Mon", "19:59"), ("Mon", "23:00"), ("Sat", "21:00")]),
    ("Fri-Mon",
     [("Fri", "00:00"), ("Sat", "12:00"), ("Sun", "23:59"), ("Mon", "23:59")],
     [("Tue", "00:00"), ("Thu", "23:59"), ("Wed", "12:00")]),
    ("Sun 22:00-02:00",  # crosses the week's end too
     [("Sun", "22:00"), ("Mon", "01:59")],
     [("Mon", "02:00"), ("Sun", "21:59"), ("Sat", "23:00")]),
    ("Sat,Sun; Mon 00:00-07:00",  # how to keep Monday's early hours after a weekend
     [("Sun", "23:59"), ("Mon", "00:00"), ("Mon", "06:59")],
     [("Mon", "07:00"), ("Fri", "23:59")]),
    ("always", [(d, h) for d in DAYS for h in ("00:00", "12:34", "23:59")], []),
])
def test_instants(text, inside, outside):
    s = parse(text)
    for day, hhmm in inside:
        assert s.contains(at(day, hhmm)), f"{text}: {day} {hhmm} should be inside"
    for day, hhmm in outside:
        assert not s.contains(at(day, hhmm)), f"{text}: {day} {hhmm} should be outside"


def test_a_night_belongs_to_the_day_it_starts_on():
    """Monday 06:59 is outside Mon-Fri 19:00-07:00 (Sunday starts no window), and stays outside when the
    weekend is listed as whole days: a whole day ends at midnight."""
    assert not parse("Mon-Fri 19:00-07:00").contains(at("Mon", "06:59"))
    assert not parse(NIGHTS).contains(at("Mon", "06:59"))
    assert parse("Mon-Fri 19:00-07:00; Sun 19:00-07:00").contains(at("Mon", "06:59"))
    assert parse("Sun-Thu 19:00-07:00").contains(at("Mon", "06:59"))


def test_only_the_wall_clock_counts():
    s = parse("Mon-Fri 19:00-07:00")
    assert s.contains(at("Sat", "06:59", 59)) and not s.contains(at("Sat", "07:00", 0))
    assert s.contains(at("Sat", "06:59").replace(microsecond=999999))
    for tz in (timezone.utc, timezone(timedelta(hours=-11)), timezone(timedelta(hours=13))):
        assert s.contains(at("Fri", "19:00").replace(tzinfo=tz))
        assert not s.contains(at("Fri", "18:59").replace(tzinfo=tz))


@pytest.mark.parametrize("text, t, expected", [
    (NIGHTS, at("Mon", "06:59", 30), at("Mon", "19:00")),
    (NIGHTS, at("Mon", "19:00"), at("Tue", "07:00")),
    (NIGHTS, at("Fri", "23:00"), at("Mon", "00:00") + timedelta(days=7)),  # Fri night, Sat, Sun: one stretch
    (NIGHTS, at("Sun", "23:59", 59), at("Mon", "00:00") + timedelta(days=7)),
    ("Tue 10:00-11:00", at("Tue", "10:00"), at("Tue", "11:00")),
    ("Tue 10:00-11:00", at("Tue", "11:00"), at("Tue", "10:00") + timedelta(days=7)),  # a week ahead
    ("Sun 22:00-02:00", at("Sun", "23:00"), at("Mon", "02:00") + timedelta(days=7)),
    ("Fri-Mon", at("Thu", "12:00"), at("Fri", "00:00")),
    ("Fri-Mon", at("Sat", "12:00"), at("Tue", "00:00") + timedelta(days=7)),
])
def test_next_change(text, t, expected):
    assert parse(text).next_change(t) == expected


def test_next_change_never_for_always_and_keeps_the_tzinfo():
    for text in ("always", "ALWAYS", "Mon-Sun", "00:00-24:00", "Fri-Thu", "Mon-Fri; Sat,Sun 00:00-24:00"):
        s = parse(text)
        assert s.always and s.next_change(at("Wed", "12:00")) is None and str(s) == "always", text
    tz = timezone(timedelta(hours=2))
    got = parse("09:00-17:00").next_change(at("Wed", "12:00", 7).replace(tzinfo=tz))
    assert got == at("Wed", "17:00").replace(tzinfo=tz) and got.tzinfo is tz


@pytest.mark.parametrize("text, normal", [
    (NIGHTS, NIGHTS),
    ("mon - FRI 19:00 - 7:00;sat, SUNDAY", NIGHTS),
    ("Saturday,Sunday", "Sat,Sun"),
    ("Sat 00:00-24:00", "Sat"),
    ("Mon-Sun 09:00-17:00", "09:00-17:00"),
    ("Fri-Mon", "Fri-Mon"),
    ("Mon,Tue,Wed", "Mon-Wed"),
    ("sun,mon,wed", "Mon,Wed,Sun"),
    ("Wed,Mon,Fri 20:00-23:00,12:00-13:00", "Mon,Wed,Fri 12:00-13:00, 20:00-23:00"),
    ("Thu-Tue 10:00-24:00", "Thu-Tue 10:00-24:00"),
])
def test_str_is_the_normal_form(text, normal):
    assert str(parse(text)) == normal
    assert str(parse(normal)) == normal


def test_schedules_are_equal_when_they_cover_the_same_minutes():
    assert parse("Sat,Sun") == parse("Sat-Sun") == parse("saturday, sunday 00:00-24:00") == parse("Sat; Sun")
    assert parse("Mon-Fri 19:00-07:00") == parse("Mon-Fri 19:00-24:00; Tue-Sat 00:00-07:00")
    assert parse("Mon-Fri 19:00-07:00") != parse("Mon-Fri 19:00-08:00")
    assert hash(parse("Sat,Sun")) == hash(parse("Sun,Sat"))
    with pytest.raises(AttributeError):
        parse("Sat").windows = ()  # type: ignore[misc]


@pytest.mark.parametrize("text, part", [
    ("Mon-Fir 19:00-07:00", "'Fir' is not a day"),
    ("Thurs", "'Thurs' is not a day"),
    ("Mon/Fri", "'Mon/Fri' is not a day"),
    ("25:00-07:00", "'25:00'"),
    ("Mon 7pm-7am", "'7pm'"),
    ("7pm", "'7pm' is not a time range"),
    ("19:60-20:00", "'19:60'"),
    ("19:00-24:30", "'24:30'"),
    ("19-07", "'19'"),
    ("19:00", "'19:00' is not a time range"),
    ("Mon 19:00-", "'19:00-' is not a time range"),
    ("19:00-19:00", "'19:00-19:00' is empty"),
    ("Sat 00:00-00:00", "'00:00-00:00' is empty"),
    ("24:00-07:00", "starts at 24:00"),
    ("", "no window"),
    ("   ", "no window"),
    ("Sat;", "empty"),
    ("Sat;;Sun", "empty"),
    ("Mon,,Tue", "empty item"),
    ("Mon-", "'Mon-' is not a day"),
    ("Mon-Tue-Wed", "'Mon-Tue-Wed'"),
    ("Mon Fri", "'Mon Fri': put ','"),
    ("12:00-13:00 20:00-23:00", "put ', ' between time ranges"),
    ("12:00-13:00 Mon", "'Mon' follows the times"),
    ("Mon 10:00-11:00, Tue 12:00-13:00", "'Tue' follows the times in 'Mon 10:00-11:00, Tue 12:00-13:00'"),
    ("always; Sat", "'always' cannot be combined"),
    ("never", "no 'never'"),
    ("garbage!", "'garbage!' is not a day"),
    ("Mon-Fri 19:00-07:00\nSat", "'Sat' follows the times in 'Mon-Fri 19:00-07:00\\nSat'"),  # still one line
    ("Mon\u2028Fri", "'Mon\\u2028Fri'"),
])
def test_errors_are_one_line_naming_the_bad_part(text, part):
    with pytest.raises(ValueError) as e:
        parse(text)
    msg = str(e.value)
    assert part in msg, msg
    assert len(msg.splitlines()) == 1 and "write" in msg, msg  # and how to write it


def test_error_suggests_the_day_and_shows_a_correct_example():
    with pytest.raises(ValueError, match=r'^"Mon-Fir 19:00-07:00": \'Fir\' is not a day \(did you mean Fri\?\); '
                                         r'write e\.g\. "Mon-Fri 19:00-07:00; Sat,Sun"$'):
        parse("Mon-Fir 19:00-07:00")


def test_a_long_text_is_shortened_in_the_message():
    with pytest.raises(ValueError) as e:
        parse("Mon-Fri 19:00-07:00; " * 20 + "Fir")
    assert len(str(e.value)) < 250 and "'Fir'" in str(e.value)


# properties -----------------------------------------------------------------------------------

def spell(day: int):
    return st.sampled_from([DAYS[day], FULL[day]]).flatmap(
        lambda n: st.sampled_from([n, n.lower(), n.upper()]))


days_item = st.integers(0, 6).flatmap(spell) | st.tuples(st.integers(0, 6), st.integers(0, 6)).flatmap(
    lambda ab: st.tuples(spell(ab[0]), spell(ab[1])).map(lambda x: f"{x[0]}-{x[1]}"))


@st.composite
def time_range(draw):
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(0, 1440).filter(lambda e: e != start))
    fmt = draw(st.sampled_from(["{:02d}:{:02d}", "{}:{:02d}"]))
    return f"{fmt.format(*divmod(start, 60))}-{fmt.format(*divmod(end, 60))}"


@st.composite
def clause(draw):
    days = draw(st.lists(days_item, max_size=4))
    times = draw(st.lists(time_range(), min_size=0 if days else 1, max_size=3))
    d = draw(st.sampled_from([",", ", "])).join(days)
    t = draw(st.sampled_from([",", ", "])).join(times)
    return " ".join(p for p in (d, t) if p)


expressions = st.just("always") | st.lists(clause(), min_size=1, max_size=4).flatmap(
    lambda cs: st.sampled_from([";", "; ", " ; "]).map(lambda sep: sep.join(cs)))
grammar_text = st.lists(st.sampled_from(list("MonTuesWdhFriSatSunday0123456789:-,; \n") + ["24:00", "Fri", "always"]),
                        max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.text() | grammar_text)
def test_any_text_gives_a_schedule_or_a_one_line_value_error(text):
    try:
        s = parse(text)
    except ValueError as e:
        assert len(str(e).splitlines()) == 1, str(e)
    else:
        assert isinstance(s, Schedule) and parse(str(s)) == s


def naive(text: str, minute_of_week: int) -> bool:
    """An independent reading of the grammar for generated expressions: a clause's range [s, e) on day d
    covers d*1440+s up to d*1440+e, or to the next day's e when e <= s, modulo the week."""
    if text.strip().lower() == "always":
        return True
    names = {n.lower(): i for i, n in enumerate(DAYS)} | {n.lower(): i for i, n in enumerate(FULL)}
    for part in text.split(";"):
        items = [i.strip() for i in part.split(",")]
        days, ranges = set(), []
        for item in items:
            for word in item.split():
                if ":" in word:
                    a, b = ((int(x.split(":")[0]) * 60 + int(x.split(":")[1])) for x in word.split("-"))
                    ranges.append((a, b))
                else:
                    ends = [names[x.lower()] for x in word.split("-")]
                    d = ends[0]
                    days.add(d)
                    while d != ends[-1]:
                        d = (d + 1) % 7
                        days.add(d)
        for d in days or range(7):
            for a, b in ranges or [(0, 1440)]:
                length = b - a if b > a else b + 1440 - a
                if (minute_of_week - (d * 1440 + a)) % 10080 < length:
                    return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, st.lists(st.integers(0, 10079), min_size=5, max_size=20))
def test_generated_expressions_parse_round_trip_and_mean_what_they_say(text, minutes):
    s = parse(text)
    again = parse(str(s))
    assert again == s and str(again) == str(s), (text, str(s))
    for m in minutes:
        t = MONDAY + timedelta(minutes=m)
        assert s.contains(t) == naive(text, m), (text, t)


@settings(max_examples=40, deadline=None)
@given(expressions, st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_next_change_agrees_with_a_minute_by_minute_scan(text, t):
    s = parse(text)
    now = s.contains(t)
    t0 = t.replace(second=0, microsecond=0)
    scan = next((t0 + timedelta(minutes=k) for k in range(1, 10081)
                 if s.contains(t0 + timedelta(minutes=k)) != now), None)
    assert s.next_change(t) == scan, (text, t)


def test_the_module_is_pure_standard_library():
    tree = ast.parse(Path(hours.__file__).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names
    assert "now(" not in Path(hours.__file__).read_text() and "time.time" not in Path(hours.__file__).read_text()
