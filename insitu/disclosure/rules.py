"""The registry of named rules: every finding the engine makes names one of these.

Each rule has a stable id (stored with release requests and shown to stewards),
the worst verdict it can give, the insitu.toml keys that set its thresholds,
who implements it (``insitu``, or ``acro`` when ACRO's own check runs) and the
reason it exists. docs/reference/airlock-checks.md is generated from this
registry (``python -m insitu.disclosure.docs``) and a test keeps the two in sync.
"""

from __future__ import annotations

from dataclasses import dataclass

from insitu.disclosure._types import Finding, Verdict

__all__ = ["RULES", "Rule", "finding"]


@dataclass(frozen=True)
class Rule:
    """One named disclosure-control rule."""

    id: str
    severity: Verdict  # the worst verdict the rule gives
    reason: str
    config_keys: tuple[str, ...] = ()
    by: str = "insitu"  # "acro" when ACRO's own check implements it
    group: str = "any output"


_LIMITS = (
    "disclosure.max_unpacked_bytes",
    "disclosure.max_expansion_ratio",
    "disclosure.max_nesting",
    "disclosure.max_members",
    "disclosure.max_image_pixels",
)
_F, _R = Verdict.FAIL, Verdict.REVIEW

_ALL = [
    Rule("file-type", _F, "The kind of an output is decided by its content (magic bytes and a full "
         "parse), never by its name: content that does not match its suffix fails, because a "
         "renamed archive or array dump would otherwise pass as text.", group="any output"),
    Rule("size", _F, "Outputs larger than the site's release limit are refused: aggregates are "
         "small, data dumps are not.", ("policy.max_release_bytes",)),
    Rule("malformed", _F, "An output that does not parse as its own format cannot be accounted "
         "for; readers differ on broken files, so what the engine could not read may still be "
         "read by someone else."),
    Rule("hidden-data", _F, "Bytes outside what the format's structure declares (after an image's "
         "end marker, in private chunks or segments, beside the declared arrays of a weights file, "
         "in extra or encrypted archive members, outside a PDF's objects) are a hiding place: "
         "every byte must be accounted for."),
    Rule("unpack-limits", _F, "Decompression is bounded (total size, ratio, nesting, members, "
         "pixels) so that a small file cannot exhaust the checker, and a bomb fails.", _LIMITS),
    Rule("not-understood", _R, "Default-deny: parts the engine cannot fully parse or interpret "
         "(e.g. embedded font programs, unknown output types in a notebook) need a person."),
    Rule("unsafe-code", _F, "Pickled objects (torch files) are never unpickled: the opcodes are "
         "read, and anything beyond tensors in plain containers fails.", group="weights"),
    Rule("image-resolution", _F, "Every numeric grid, image frame, channel and array is compared "
         "with the sizes of the site's slices and volumes: the same size give or take a few "
         "rows or columns, transposed, upscaled by a whole factor, or flattened/reshaped to a "
         "plane's or volume's number of values fails (raw pixels). A large single-channel image "
         "with the look of a pixel dump needs review.",
         ("disclosure.plane_tolerance", "disclosure.max_upscale"), group="images and arrays"),
    Rule("pixel-provenance", _F, "A grid, image or vector that matches the fingerprint of a series "
         "held here (after crop, resize, flip, transpose or rescaling of values) fails, naming "
         "the series.", group="images and arrays"),
    Rule("never-leave", _F, "Pixels of a never-leave series (fundus photographs, OCT: retinal "
         "vessels identify a person) found in an output by their fingerprint, however "
         "transformed: no steward override can release them; the airlock refuses and audits "
         "the attempt.", group="images and arrays"),
    Rule("vector-data", _R, "Numbers drawn in a PDF (coordinates and colours of paths, the "
         "positions of forms) are data: they count in the release budget, a lattice of filled "
         "cells (pixels drawn as rectangles) goes through the grid rules as an image, and more "
         "of them than the site allows in one figure needs a person.",
         ("disclosure.max_vector_values",), group="images and arrays"),
    Rule("identifiers-in-text", _F, "Pseudonyms, UIDs and study dates of the site's data, and any "
         "DICOM UID, fail wherever text can hide (cells, column names, keys, metadata, notebook "
         "outputs and tracebacks, PDF text, image text chunks), after Unicode normalisation "
         "(NFKC, invisible characters removed, look-alikes folded), case-insensitively, glued "
         "into other text, with or without separators, and dates in any common written format.",
         ("disclosure.min_identifier_length",), group="text"),
    Rule("encoded-payload", _F, "Long base64 runs in text are decoded and checked as files: an "
         "image or array encoded as text is still an image or array.",
         ("disclosure.base64_min_length",), group="text"),
    Rule("small-counts-in-text", _F, "Counts written in text (\"n=3\") below the minimum cell "
         "count disclose small groups as a table cell would.", ("policy.min_cell_count",),
         group="text"),
    Rule("identifier-columns", _F, "Columns that identify subjects, studies or series (by name or "
         "by value) make a table microdata.", group="tables"),
    Rule("row-per-subject", _F, "A table with as many rows as subjects or series, or a label that "
         "differs in every row, is one row per person, whatever its values.",
         ("policy.min_cell_count",), group="tables"),
    Rule("table-as-data", _R, "A table that is not a frequency table built by the SDC helpers "
         "(ACRO) is data: its numeric cells go through the grid rules, and a large grid of "
         "numbers needs review.", ("disclosure.review_grid_cells",), group="tables"),
    Rule("threshold", _F, "Cell counts below the minimum disclose small groups (ACRO's "
         "MinimumThresholdCheck). Counts are the count columns, counts written as text, every "
         "cell of an all-integer table, or ACRO's own counts.", ("policy.min_cell_count",),
         by="acro", group="tables"),
    Rule("zeros", _F, "A zero count reveals that nobody has a combination (ACRO's "
         "PresenceOfZeroCheck).", ("policy.zeros_disclosive",), by="acro", group="tables"),
    Rule("dominance-nk", _F, "The n largest contributions make up k of a cell's total (ACRO's "
         "NKCheck).", ("policy.nk_n", "policy.nk_k"), by="acro", group="tables"),
    Rule("dominance-p", _F, "The second largest contributor could estimate the largest (ACRO's "
         "PPercentCheck).", ("policy.p_ratio",), by="acro", group="tables"),
    Rule("degrees-of-freedom", _F, "Too few residual degrees of freedom (ACRO's "
         "MinimumDoFCheck).", ("policy.min_cell_count",), by="acro", group="tables"),
    Rule("linked-tables", _F, "ACRO's reminder to compare against other outputs.", by="acro",
         group="tables"),
    Rule("zeros-policy", _F, "ACRO's note of the zeros policy in force.", by="acro",
         group="tables"),
    Rule("manual-review", _F, "ACRO cannot check this analysis automatically.", by="acro",
         group="tables"),
    Rule("all-same", _F, "Every contribution to a cell is the same (ACRO's AllSameValuesCheck).",
         by="acro", group="tables"),
    Rule("missing", _F, "Missing values in the contributions (ACRO's MissingCheck).", by="acro",
         group="tables"),
    Rule("dominance", _R, "A finished table of statistics lacks the contributions the p% and n-k "
         "rules need; without ACRO evidence a person must judge dominance.", group="tables"),
    Rule("evidence", _F, "ACRO evidence sent with a table must describe exactly that table.",
         group="tables"),
    Rule("notebook-tables", _R, "Tables printed in a notebook's outputs are not checked for "
         "cell counts: a person reads them.", group="notebooks"),
    Rule("budget", _R, "An information budget per release: more numeric values or bytes than "
         "the site allows in one release needs a person.",
         ("disclosure.budget_values", "disclosure.budget_bytes")),
    Rule("checks", _F, "Checks that cannot run (a broken catalog, a crash) fail rather than "
         "pass."),
]  # fmt: skip

RULES: dict[str, Rule] = {rule.id: rule for rule in _ALL}


def finding(rule_id: str, verdict: Verdict, message: str, where: str = "") -> Finding:
    """A finding of a registered rule (an unknown id is a programming error)."""
    if rule_id not in RULES:
        raise KeyError(f"no disclosure rule {rule_id!r}: register it in insitu.disclosure.rules")
    return Finding(rule_id, verdict, message, where)
