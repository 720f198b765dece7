"""Properties of the date shift, and the options as an admin sets them in insitu.toml."""

from __future__ import annotations

from datetime import date, timedelta

from fixtures_deid import SITE_KEY
from hypothesis import given, settings
from hypothesis import strategies as st

from insitu.config import NodeHome, load_config
from insitu.datasets.deid import Deidentifier, DeidOptions
from insitu.datasets.deid_values import shift_da, shift_dt, shift_temporal, valid_tm

DEID = Deidentifier(SITE_KEY)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2100, 12, 31))
subjects = st.text(min_size=1, max_size=20).filter(lambda s: s.strip())


def _parse(da: str) -> date:
    return date(int(da[:4]), int(da[4:6]), int(da[6:8]))


@settings(max_examples=200, deadline=None)
@given(subject=subjects, first=dates, second=dates)
def test_shift_keeps_intervals_and_never_keeps_a_date(
    subject: str, first: date, second: date
) -> None:
    a = DEID.shift_date(subject, first.strftime("%Y%m%d"))
    b = DEID.shift_date(subject, second.strftime("%Y%m%d"))
    assert _parse(b) - _parse(a) == second - first
    assert a != first.strftime("%Y%m%d")
    assert timedelta(days=365) <= first - _parse(a) <= timedelta(days=3650)


@settings(max_examples=100, deadline=None)
@given(
    day=dates,
    shift=st.integers(min_value=-3650, max_value=-365),
    clock=st.sampled_from(["", "10", "1015", "101530", "101530.123456"]),
    zone=st.sampled_from(["", "+0100", "-0500"]),
)
def test_dt_keeps_precision_time_and_zone(day: date, shift: int, clock: str, zone: str) -> None:
    for fmt in ("%Y", "%Y%m", "%Y%m%d"):
        value = day.strftime(fmt) + (clock if fmt == "%Y%m%d" else "") + zone
        new = shift_dt(value, shift)
        assert new is not None
        assert len(new) == len(value)
        assert new.endswith((clock if fmt == "%Y%m%d" else "") + zone)
    full = shift_dt(day.strftime("%Y%m%d") + clock + zone, shift)
    assert full is not None
    assert _parse(full[:8]) == day + timedelta(days=shift)


def test_values_that_are_no_dates_or_times_are_refused() -> None:
    assert shift_da("20200230", -400) is None  # 30 February
    assert shift_da("JOHN", -400) is None
    assert shift_dt("2020-01-01", -400) is None
    assert valid_tm("256000") is None
    assert valid_tm("10:15:30") == "10:15:30"  # the old ACR-NEMA form
    assert shift_temporal("DA", ["20200101", "nope"], -400) is None  # one bad value: all go
    assert shift_temporal("TM", ["101500", "235959.99"], -400) == ["101500", "235959.99"]


def test_options_from_the_node_config(home: NodeHome) -> None:
    text = home.config_path.read_text()
    home.config_path.write_text(
        text.replace("retain_device_identity = false", "retain_device_identity = true")
    )
    options = DeidOptions.from_config(load_config(home).deid)
    assert options.retain_device_identity
    assert not options.allow_burned_in
    deid = Deidentifier(home.site_key(), options)
    assert "Retain Device Identity Option" in deid.profile["options"]
    # the node's key makes other values than the test key
    assert deid.pseudonym("P1") != DEID.pseudonym("P1")
