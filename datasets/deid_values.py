"""Replacement values: dummies valid for each VR, and date/time shifting.

Dates (DA, and the date part of DT) move by whole days, so the interval
between two of a subject's dates is kept exactly and the weekday pattern
changes. Times of day (TM, and the time part of DT) are kept: once the date is
moved, a time of day no longer points at a person, and intra-day intervals
(contrast timing, dynamic series) stay exact. A value that does not parse as
its VR is dropped rather than kept, since it may hold anything.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

DUMMY_TEXT = "ANONYMIZED"
# One value per VR that is valid for the VR (length, character set).
DUMMIES: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "UR": "urn:anonymized",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
    "AT": 0,
}
BINARY_DUMMY = b"\0\0"  # OB, OD, OF, OL, OV, OW, UN: an even-length zero value


def dummy_for(vr: str) -> Any:
    """The dummy (action D) value for a VR."""
    return DUMMIES.get(vr, BINARY_DUMMY)


_DA = re.compile(r"(\d{4})\.?(\d{2})\.?(\d{2})")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?")
_TM = re.compile(r"\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d{1,6})?)?)?")


def shift_da(value: str, days: int) -> str | None:
    """Shift one DA value (``YYYYMMDD``, or the old ``YYYY.MM.DD``); None if it is no date."""
    m = _DA.fullmatch(value.strip())
    if not m:
        return None
    try:
        d = date(int(m[1]), int(m[2]), int(m[3])) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return d.strftime("%Y%m%d") if d.year >= 1000 else None


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of one DT value, keeping its precision, time and offset."""
    m = _DT.fullmatch(value.strip())
    if not m:
        return None
    year, month, day, clock, offset = m.groups()
    try:
        d = date(int(year), int(month or 1), int(day or 1)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if d.year < 1000:
        return None
    out = f"{d.year:04d}"
    if month:
        out += f"{d.month:02d}"
    if day:
        out += f"{d.day:02d}"
    return out + (clock or "") + (offset or "")


def valid_tm(value: str) -> str | None:
    """One TM value if it is a time of day, else None."""
    v = value.strip()
    if not _TM.fullmatch(v):
        return None
    digits = v.replace(":", "")
    hh, mm, ss = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    return v if hh < 24 and mm < 60 and ss < 61 else None


def shift_temporal(vr: str, values: list[str], days: int) -> list[str] | None:
    """Shift each value of a DA/DT/TM element; None when any value is not valid."""
    fn = {"DA": shift_da, "DT": shift_dt}.get(vr)
    out: list[str] = []
    for v in values:
        new = fn(v, days) if fn else valid_tm(v)
        if new is None:
            return None
        out.append(new)
    return out
