"""`hours:`: the windows a host's workers may run in, in the host's local (wall-clock) time.

Grammar (day names and ``always`` in any case)::

    hours  := "always" | clause ("; " clause)*
    clause := days | times | days " " times
    days   := day ("," day)*           day  := Mon | Mon-Fri | Fri-Mon ...
    times  := range (", " range)*      range := HH:MM-HH:MM

- A day is a 3-letter English abbreviation or a full name (``Mon``, ``monday``); ``Fri-Mon``
  wraps over the week end. No days: every day. No times: the whole day (00:00-24:00).
- Clauses are separated by ``;``, several time ranges for the same days by ``,`` (spaces around
  ``;``, ``,`` and ``-`` are optional; ``7:00`` is ``07:00``).
- A range includes its start minute and excludes its end minute; ``24:00`` may only end one.
  A range whose end is before its start crosses midnight and belongs to the day it starts on:
  ``Fri 19:00-07:00`` runs to Saturday 07:00, and ``Mon-Fri 19:00-07:00`` leaves Monday
  00:00-07:00 out (Sunday starts no window). A whole day ends at midnight, so ``Sat,Sun`` does
  not reach into Monday either; add ``Sun 19:00-07:00`` (or ``Mon 00:00-07:00``) for that.
- A range whose start equals its end (``19:00-19:00``) is an error, not a whole day.
- ``always``: inside at all times (a host's ``hours: always`` turns a top-level ``hours:`` off).
  There is no ``never``: to run no workers on a host, place none there.

Examples: ``Mon-Fri 19:00-07:00; Sat,Sun`` (weekday nights and the weekend), ``09:00-17:00``,
``Mon,Wed,Fri 12:00-13:00, 20:00-23:00``, ``Fri-Mon``, ``Sat 00:00-24:00``.
"""

from __future__ import annotations

import difflib
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta

DAY = 1440  # minutes
WEEK = 7 * DAY
EXAMPLE = 'write e.g. "Mon-Fri 19:00-07:00; Sat,Sun"'
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAYS = {**{n.lower(): i for i, n in enumerate(DAY_NAMES)}, **{n: i for i, n in enumerate(FULL_NAMES)}}
_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_DASH = re.compile(r"\s*-\s*")

Clause = tuple[tuple[int, ...], tuple[tuple[int, int], ...]]  # (days 0=Mon.., (start, end) minutes of the day)


@dataclass(frozen=True)
class Schedule:
    """When a host's workers may run: a set of minutes of the week.

    Two schedules are equal when they cover the same minutes, however they were written; ``str()``
    gives the normalised text (``text``)."""

    windows: tuple[tuple[int, int], ...]  # merged [start, end) minutes of the week, Monday 00:00 = 0
    text: str = field(default="", compare=False)
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _changes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(s for s, _ in self.windows))
        points = sorted({p % WEEK for w in self.windows for p in w})
        joined = bool(self.windows) and self.windows[0][0] == 0 and self.windows[-1][1] == WEEK
        object.__setattr__(self, "_changes", tuple(p for p in points if not (joined and p == 0)))

    @property
    def always(self) -> bool:
        return self.windows == ((0, WEEK),)

    def contains(self, t: datetime) -> bool:
        """Whether ``t`` (the host's local time; only its wall-clock fields count) is inside a window."""
        m = t.weekday() * DAY + t.hour * 60 + t.minute
        i = bisect_right(self._starts, m) - 1
        return i >= 0 and m < self.windows[i][1]

    def next_change(self, t: datetime) -> datetime | None:
        """The first minute after ``t`` at which ``contains`` gives the other answer (within a week;
        wall-clock arithmetic, ``t``'s tzinfo kept), or None when it never changes (``always``)."""
        if not self._changes:
            return None
        m = t.weekday() * DAY + t.hour * 60 + t.minute
        i = bisect_right(self._changes, m)
        nxt = self._changes[i] if i < len(self._changes) else self._changes[0] + WEEK
        return t.replace(second=0, microsecond=0) + timedelta(minutes=nxt - m)

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Schedule:
    """The schedule an `hours:` text describes; ValueError (one line, naming the bad part) if none."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an hours expression; {EXAMPLE}")
    if not text.strip():
        raise _fail(text, "no window given", f'{EXAMPLE} or "always"')
    if text.strip().lower() == "always":
        return Schedule(((0, WEEK),), "always")
    clauses = [_clause(text, part) for part in text.split(";")]
    windows = _merged([w for c in clauses for w in _windows(c)])
    if windows == [(0, WEEK)]:
        return Schedule(((0, WEEK),), "always")
    return Schedule(tuple(windows), "; ".join(_render(c) for c in clauses))


def _fail(text: str, what: str, example: str = EXAMPLE) -> ValueError:
    return ValueError(f"{_q(text, chr(34))}: {what}; {example}")


def _q(s: str, quote: str = "'", limit: int = 60) -> str:
    """``s`` quoted on one line (non-printable characters escaped), shortened past ``limit``."""
    s = s.strip()
    s = s if len(s) <= limit else s[: limit - 3] + "..."
    return quote + "".join(c if c.isprintable() else repr(c)[1:-1] for c in s) + quote


def _clause(text: str, part: str) -> Clause:
    """One `;`-separated clause: days, then time ranges."""
    part = _DASH.sub("-", part.strip())
    if not part:
        raise _fail(text, "a window between ';' is empty (or ';' ends the text)")
    if part.lower() == "never":
        raise _fail(text, "there is no 'never' (to run no workers on a host, place none there)")
    if part.lower() == "always":
        raise _fail(text, "'always' cannot be combined with other windows", 'write "always" alone')
    days: set[int] = set()
    ranges: list[tuple[int, int]] = []
    for item in (i.strip() for i in part.split(",")):
        if not item:
            raise _fail(text, f"{_q(part)} has an empty item between commas")
        words = item.split()
        kinds = [_is_time(w) for w in words]
        late = next((w for i, w in enumerate(words) if not kinds[i] and (ranges or any(kinds[:i]))), None)
        if late is not None:
            raise _fail(text, f"{_q(late)} follows the times in {_q(part)}; separate windows with ';'")
        if kinds not in ([False], [True], [False, True]):
            sep = "',' between days or '-' for a range" if kinds.count(False) > 1 else "', ' between time ranges"
            raise _fail(text, f"{_q(item)}: put {sep}")
        for word, is_time in zip(words, kinds):
            if is_time:
                ranges.append(_range(text, word))
            else:
                days.update(_day_range(text, word))
    whole = not ranges
    return (tuple(sorted(days)) or tuple(range(7)),
            ((0, DAY),) if whole else tuple(sorted(set(ranges))))


def _is_time(word: str) -> bool:
    return any(c.isdigit() or c == ":" for c in word)


def _day_range(text: str, word: str) -> list[int]:
    ends = word.split("-")
    if len(ends) > 2 or not all(ends):
        raise _fail(text, f"{_q(word)} is not a day or a day range like Mon-Fri")
    first, last = (_day(text, e) for e in (ends[0], ends[-1]))
    return [(first + k) % 7 for k in range((last - first) % 7 + 1)]


def _day(text: str, word: str) -> int:
    key = word.lower()
    if word.isascii() and key in _DAYS:
        return _DAYS[key]
    close = difflib.get_close_matches(key, list(_DAYS), n=1, cutoff=0.6)
    hint = f" (did you mean {DAY_NAMES[_DAYS[close[0]]]}?)" if close else ""
    raise _fail(text, f"{_q(word)} is not a day{hint}")


def _range(text: str, word: str) -> tuple[int, int]:
    ends = word.split("-")
    if len(ends) != 2 or not all(ends):
        raise _fail(text, f"{_q(word)} is not a time range", 'write e.g. "19:00-07:00" (HH:MM-HH:MM)')
    start, end = (_time(text, e) for e in ends)
    if start == DAY:
        raise _fail(text, f"{_q(word)} starts at 24:00, which may only end a range", 'write e.g. "00:00-07:00"')
    if start == end:
        raise _fail(text, f"{_q(word)} is empty (its start is its end)",
                    'for a whole day write the day alone, e.g. "Sat", or "00:00-24:00"')
    return start, end


def _time(text: str, word: str) -> int:
    m = _TIME.fullmatch(word)
    if m is None:
        raise _fail(text, f"{_q(word)} is not a time", 'write HH:MM, 00:00 to 24:00, e.g. "19:00-07:00"')
    h, mi = int(m[1]), int(m[2])
    if h > 24 or mi > 59 or (h == 24 and mi):
        raise _fail(text, f"{_q(word)} is not a time of day", 'write HH:MM, 00:00 to 24:00, e.g. "19:00-07:00"')
    return h * 60 + mi


def _windows(clause: Clause) -> list[tuple[int, int]]:
    """The clause's minutes of the week as [start, end) pieces inside [0, WEEK)."""
    days, ranges = clause
    out = []
    for d in days:
        for s, e in ranges:
            start, end = d * DAY + s, d * DAY + (e if e > s else e + DAY)
            if end > WEEK:
                out += [(start, WEEK), (0, end - WEEK)]
            else:
                out.append((start, end))
    return out


def _merged(pieces: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for s, e in sorted(pieces):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _render(clause: Clause) -> str:
    days, ranges = clause
    times = "" if ranges == ((0, DAY),) else ", ".join(f"{_hhmm(s)}-{_hhmm(e)}" for s, e in ranges)
    names = "" if len(days) == 7 else _render_days(days)
    return " ".join(p for p in (names, times) if p) or "00:00-24:00"


def _render_days(days: tuple[int, ...]) -> str:
    """Runs of three or more days as a range (``Mon-Fri``, ``Fri-Mon``), other days listed; Monday first."""
    inside = set(days)
    gap = max(d for d in range(7) if d not in inside)  # runs start after a gap
    parts: list[tuple[int, str]] = []
    run: list[int] = []
    for d in [(gap + k) % 7 for k in range(1, 8)]:
        if d in inside:
            run.append(d)
        elif len(run) >= 3:
            parts.append((run[0], f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}"))
            run = []
        else:
            parts += [(r, DAY_NAMES[r]) for r in run]
            run = []
    return ",".join(name for _, name in sorted(parts))


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
