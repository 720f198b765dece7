"""De-identification fixtures and the marker planter the end-to-end ingest tests reuse.

    markers = plant_markers(ds, seed="series-1")   # ds changed in place
    ... write ds, ingest it, read every published byte ...
    assert not find_markers(blob, markers)

``plant_markers`` puts a unique marker in every attribute Table E.1-1 (with the
options applied) says to change (D/Z/X/C/U and the combined codes), at the top
level and nested in sequences, plus private attributes (also a text value in a
safe-listed private slot), overlays, curves and unlisted free text. It leaves
the attributes that ingest needs alone (geometry, pixels, and the existing
Study/Series/SOP Instance and Frame of Reference UIDs, whose original values go
into the returned set instead), so a planted series still ingests as a series.
Markers depend only on ``seed``: plant every file of one series with the same
seed and they keep one patient and one study.
"""

from __future__ import annotations

import random
import re
from datetime import date, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom import config as pydicom_config
from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from insitu.datasets.deid import Deidentifier, DeidOptions

SITE_KEY = bytes(range(32))
DEID_DATA = Path(pydicom.__file__).parents[1] / "deid_data" / "data"
# Planted dates fall in this window; a shift of at least 365 days moves every
# one of them out of it, so a shifted date never equals a planted one.
_DATE_WINDOW = (date(2021, 1, 1), 280)
# Groups that a dataset does not carry (command, file meta, DICOMDIR) or that
# are not attributes (data set trailing padding).
_SKIP_GROUPS = {0x0000, 0x0002, 0x0004, 0xFFFC}
# Already present in real files and needed to group slices: their original
# values become markers instead of being overwritten.
_KEEP_ORIGINAL = {"StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
# An unlisted sequence that ingest does not interpret, to carry nested markers.
_CARRIER = 0x00089215  # Derivation Code Sequence


def _unlisted_free_text() -> list[tuple[int, str]]:
    """Names, free text and comments that Table E.1-1 does not list (newer attributes)."""
    listed = Deidentifier(SITE_KEY)._table.tags
    out = []
    for tag, entry in sorted(DicomDictionary.items()):
        vr, keyword = entry[0], entry[4]
        if tag in listed or tag >> 16 in _SKIP_GROUPS or "x" in f"{tag:08x}" or not keyword:
            continue
        if vr in ("PN", "LT", "ST", "UT") or keyword.endswith("Comments"):
            out.append((tag, "LT" if " or " in vr else vr))
    return out


_UNLISTED_FREE_TEXT = _unlisted_free_text()


class _Planter:
    def __init__(self, seed: int | str, deid: Deidentifier) -> None:
        self.rng = random.Random(str(seed))
        self.deid = deid
        self.markers: set[str] = set()

    def text(self) -> str:
        m = "MK" + "".join(self.rng.choice("0123456789ABCDEF") for _ in range(12))
        self.markers.add(m)
        return m

    def number(self) -> str:
        m = str(self.rng.randrange(100_000_000, 999_999_999))
        self.markers.add(m)
        return m

    def uid(self) -> str:
        m = "1.2.826.0.1.3680043.10.54321." + str(self.rng.randrange(10**11, 10**12))
        self.markers.add(m)
        return m

    def day(self) -> date:
        start, width = _DATE_WINDOW
        return start + timedelta(days=self.rng.randrange(width))

    def value(self, vr: str) -> object | None:
        """A marker valid for the VR, or None when the VR cannot carry one (binary numbers)."""
        if vr in _TEXT_VRS:
            return self.text()
        if vr == "UR":
            return "urn:" + self.text()
        if vr in ("DS", "IS"):
            return self.number()
        if vr == "UI":
            return self.uid()
        if vr == "DA":
            d = self.day().strftime("%Y%m%d")
            self.markers.add(d)
            return d
        if vr == "DT":
            hh, mm, ss = self.rng.randrange(24), self.rng.randrange(60), self.rng.randrange(60)
            clock = f"{hh:02d}{mm:02d}{ss:02d}"
            d = self.day().strftime("%Y%m%d") + clock
            self.markers.add(d)
            return d
        if vr == "TM":
            return f"{self.rng.randrange(24):02d}{self.rng.randrange(60):02d}00"  # kept: no marker
        if vr in ("OB", "OW", "UN"):
            return self.text().encode("ascii")
        if vr == "SQ":
            item = Dataset()
            item.PatientName = self.text()
            item.ReferencedSOPInstanceUID = self.uid()
            return Sequence([item])
        return None

    def identifying_tags(self) -> list[tuple[int, str]]:
        """Every tag the effective table changes, with the VR to plant."""
        out = []
        for tag, rule in sorted(self.deid._table.tags.items()):
            if rule.action == "K" or tag >> 16 in _SKIP_GROUPS or not keyword_for_tag(tag):
                continue
            try:
                vr = dictionary_VR(tag).split(" or ")[0]
            except KeyError:
                continue
            out.append((tag, vr))
        return out

    def plant_table(self, ds: Dataset, top: bool) -> None:
        for tag, vr in self.identifying_tags():
            keyword = keyword_for_tag(tag)
            if top and keyword in _KEEP_ORIGINAL and tag in ds:
                self.markers.add(str(ds[tag].value))
                continue
            value = self.value(vr)
            if value is not None:
                ds[tag] = DataElement(tag, vr, value, validation_mode=pydicom_config.IGNORE)

    def plant_extras(self, ds: Dataset) -> None:
        """Private tags, a safe-list slot with text, overlays, curves, unlisted free text."""
        block = ds.private_block(0x0009, "ACME " + self.text(), create=True)
        block.add_new(0x01, "LO", self.text())
        block.add_new(0x02, "UN", self.text().encode("ascii"))
        block.add_new(0x03, "UI", self.uid())
        philips = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        # text in a safe slot: LO (explicit VR) or four floats (implicit VR): must go
        philips.add_new(0x0E, "LO", self.text() + "ZZ")
        ds.add_new(0x60000022, "LO", self.text())  # Overlay Description
        ds.add_new(0x60004000, "LT", self.text())  # Overlay Comments
        ds.add_new(0x60003000, "OW", self.text().encode("ascii"))  # Overlay Data
        ds.add_new(0x50000022, "LO", self.text())  # Curve Description (retired)
        for tag, vr in self.rng.sample(_UNLISTED_FREE_TEXT, 4):
            ds[tag] = DataElement(tag, vr, self.value(vr), validation_mode=pydicom_config.IGNORE)
        for elem in list(ds):
            standard = str(elem.value).startswith("1.2.840.10008.")
            if elem.VR == "UI" and elem.value and not standard:
                self.markers.add(str(elem.value))


def plant_markers(
    ds: Dataset, seed: int | str = 0, options: DeidOptions | None = None, depth: int = 2
) -> set[str]:
    """Plant markers in ``ds`` (in place); return every string that must not leak."""
    planter = _Planter(seed, Deidentifier(SITE_KEY, options or DeidOptions()))
    listed = {tag for tag, _vr in planter.identifying_tags()}
    for elem in list(ds):  # unlisted dates stay and must come out shifted
        if elem.VR in ("DA", "DT") and elem.value and elem.tag not in listed:
            planter.markers.add(str(elem.value))
    if "PatientID" not in ds:
        ds.PatientID = planter.text()
    planter.plant_table(ds, top=True)
    planter.plant_extras(ds)
    parent = ds
    for _ in range(depth):  # nest: a kept sequence whose item carries everything again
        item = Dataset()
        planter.plant_table(item, top=False)
        planter.plant_extras(item)
        parent[_CARRIER] = DataElement(_CARRIER, "SQ", Sequence([item]))
        parent = item
    planter.markers.discard("")
    return planter.markers


def find_markers(blob: bytes | str, markers: set[str]) -> set[str]:
    """The markers that occur in ``blob`` (bytes are searched as ASCII).

    A marker made of digits and dots (dates, numbers, UIDs) counts only where
    a value starts, not inside a longer run of digits: a shifted date-time or a
    new 2.25 UID may contain any eight digits by chance. (No right boundary:
    in written bytes the next tag may well be ASCII digits.)
    """
    text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
    numeric = {m for m in markers if re.fullmatch(r"[0-9.]+", m)}
    lengths = {len(m) for m in numeric}
    starts = set()
    for run in re.finditer(r"(?<![0-9.])[0-9][0-9.]*", text):
        starts.update(run.group()[:n] for n in lengths)
    found = numeric & starts
    found.update(m for m in markers - numeric if m in text)
    return found


@pytest.fixture
def deid() -> Deidentifier:
    """A Deidentifier with a fixed test key and the default options."""
    return Deidentifier(SITE_KEY)


@pytest.fixture
def lenient_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real files break value rules (an LO of 122 characters): read them as a site would."""
    monkeypatch.setattr(pydicom_config.settings, "reading_validation_mode", pydicom_config.IGNORE)
