"""Gate pieces that need no hub: key safety and coalesced read accounting."""

from __future__ import annotations

import pytest

from insitu.audit import AuditLog
from insitu.errors import DatasetNotFoundError, InvalidRequestError
from insitu.hub.read_ledger import ReadLedger, part_of
from insitu.hub.stores import key_file, key_path, resolve, safe_key


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "..", "a/../b", "a//b", "./a", "a/.", "a\\..\\b", "%2e%2e/x", "a\x00",
     "a b", "series/s1/../../private"],
)  # fmt: skip
def test_bad_keys_are_refused(key):
    with pytest.raises(InvalidRequestError):
        safe_key(key)


def test_symlinks_cannot_lead_out(tmp_path):
    root = tmp_path / "store"
    (root / "series").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    (tmp_path / "secret").write_text("s")
    (root / "series" / "out").symlink_to(tmp_path / "secret")
    (root / "series" / "in").symlink_to(root / "zarr.json")
    assert key_path(root, "zarr.json") == (root / "zarr.json").resolve()
    assert key_path(root, "series/in") == (root / "zarr.json").resolve()
    with pytest.raises(DatasetNotFoundError):
        key_path(root, "series/out")


def test_key_file_answers_as_key_path(tmp_path):
    """The gate's fast confinement (one lstat per key segment) agrees with the full
    resolution for plain files, folders, absent keys and links in and out."""
    root = tmp_path / "store"
    (root / "series" / "s1").mkdir(parents=True)
    (root / "zarr.json").write_text("{}")
    (root / "series" / "s1" / "c").write_bytes(b"12345")
    (tmp_path / "secret").write_text("s")
    (root / "series" / "out").symlink_to(tmp_path / "secret")
    (root / "series" / "in").symlink_to(root / "zarr.json")
    (root / "dir-out").symlink_to(tmp_path)
    (root / "dir-in").symlink_to(root / "series")
    real_root = str(root.resolve())
    assert key_file(real_root, "series/s1/c") == (f"{real_root}/series/s1/c", 5)
    assert key_file(real_root, "series/in") == (str((root / "zarr.json").resolve()), 2)
    assert key_file(real_root, "dir-in/s1/c") == (f"{real_root}/series/s1/c", 5)
    for absent in ("series/out", "dir-out/secret", "series", "nope", "zarr.json/x", "series/s1/d"):
        assert key_file(real_root, absent) is None, absent
    for bad in ("../secret", "/etc/passwd", "a//b", "%2e%2e/secret"):
        with pytest.raises(InvalidRequestError):
            key_file(real_root, bad)


def test_resolve_latest_and_unknown(hub_home):
    assert resolve(hub_home, "trial-a", "latest")[0] == "v1"
    assert resolve(hub_home, "trial-a")[1].name == "v1.zarr"
    with pytest.raises(DatasetNotFoundError, match="versions: v1"):
        resolve(hub_home, "trial-a", "v7")
    with pytest.raises(InvalidRequestError):
        resolve(hub_home, "../private", None)


def test_parts_of_keys():
    assert part_of("series/abc/0/c/0/0/0") == ("series", "abc")
    assert part_of("labels/abc/liver/zarr.json") == ("series", "abc")
    assert part_of("tables/measurements/col/c/0") == ("table", "measurements")
    assert part_of("zarr.json") == ("metadata", "")
    assert part_of("series/zarr.json") == ("metadata", "")


def test_ledger_coalesces_reads_per_user_dataset_series(home):
    ledger = ReadLedger(home)
    for i in range(50):
        ledger.record("ada", "trial-a", "v1", f"series/s1/0/c/{i}/0/0", 100)
    ledger.record("ada", "trial-a", "v1", "series/s2/0/c/0/0/0", 7)
    ledger.record("bob", "trial-a", "v1", "series/s1/0/c/0/0/0", 5)
    ledger.refuse("eve", "trial-a", "none")
    ledger.refuse("eve", "trial-a", "none")
    assert ledger.flush() == 4
    assert ledger.flush() == 0
    log = AuditLog(home)
    reads = {
        (e["user"], e["details"]["series"]): e["details"]
        for e in log.query(kind="read")
        if e["kind"] == "read"  # the prefix "read" also matches "read.denied"
    }
    assert reads[("ada", "s1")]["bytes"] == 5000 and reads[("ada", "s1")]["requests"] == 50
    assert reads[("ada", "s2")]["bytes"] == 7
    assert reads[("bob", "s1")]["bytes"] == 5
    (denied,) = log.query(kind="read.denied")
    assert denied["user"] == "eve" and denied["details"]["requests"] == 2
    log.verify()
