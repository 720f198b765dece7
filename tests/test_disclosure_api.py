"""The disclosure engine's public contract (docs: DISCLOSURE_API, airlock-checks.md)."""

from __future__ import annotations

import numpy as np
import pytest

import insitu.disclosure as disclosure
from insitu.disclosure import (
    RULES,
    DisclosureContext,
    Finding,
    Report,
    SiteIdentifiers,
    Verdict,
    check_arrays,
    check_file,
    check_grid,
    check_text,
)

SUBJECT = "sub-0003a9"
UID = "2.25.118827193764812211300990012345678901"
SLICE = (48, 40)


@pytest.fixture(scope="module")
def ctx() -> DisclosureContext:
    return DisclosureContext(
        identifiers=SiteIdentifiers(
            texts=frozenset({SUBJECT, UID}),
            dates=frozenset({"20190314"}),
            slice_shapes=frozenset({SLICE, SLICE[::-1], (6, 48), (48, 6), (6, 40), (40, 6)}),
            volume_shapes=frozenset({(6, *SLICE)}),
            population_sizes=frozenset({12}),
        )
    )


def test_the_public_names_are_the_contract():
    assert set(disclosure.__all__) >= {
        "Verdict", "Finding", "Report", "Rule", "RULES", "DisclosureContext",
        "check_file", "check_text", "check_arrays", "check_grid",
    }  # fmt: skip
    assert Verdict.PASS < Verdict.REVIEW < Verdict.FAIL
    assert max([Verdict.REVIEW, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert [v.value for v in Verdict] == ["pass", "review", "fail"]
    assert hasattr(DisclosureContext, "for_home")
    for rule in RULES.values():
        assert rule.id and rule.reason and isinstance(rule.severity, Verdict)


def test_every_rule_names_keys_that_exist():
    from dataclasses import fields

    from insitu.config import DisclosureSection, PolicySection

    known = {f"policy.{f.name}" for f in fields(PolicySection)}
    known |= {f"disclosure.{f.name}" for f in fields(DisclosureSection)}
    for rule in RULES.values():
        assert set(rule.config_keys) <= known, rule.id


@pytest.mark.parametrize(
    "text",
    [
        f"responder {SUBJECT}",
        f"responder X{SUBJECT.upper()}Y",
        "responder sub\u200b-0003a9",  # zero-width space
        "responder ѕub-0003а9",  # Cyrillic look-alikes
        "responder sub_0003a9",
        "responder ｓｕｂ－０００３ａ９",  # full width
        UID.replace(".", " "),
        "scanned 14/03/2019",
        "scanned March 14, 2019",
        "scanned 14-Mar-19",
        "scanned 2019.03.14",
        "scanned 20190314",
        "seen on 03/14/2019",
    ],
)
def test_identifiers_are_found_however_written(ctx, text):
    report = check_text(text, where="note", ctx=ctx)
    assert report.by_rule()["identifiers-in-text"] is Verdict.FAIL, text


def test_clean_text_passes(ctx):
    report = check_text("mean volume 12.5 ml (n=40), version 3.1.0", where="note", ctx=ctx)
    assert report.verdict is Verdict.PASS, report.findings
    assert isinstance(report, Report) and all(isinstance(f, Finding) for f in report.findings)


@pytest.mark.parametrize(
    "shape",
    [SLICE, (49, 40), (48, 41), SLICE[::-1], (96, 80), (3, *SLICE), (*SLICE, 3), (1920,),
     (6, *SLICE), (11520,), (60, 32), (240, 48)],
)  # fmt: skip
def test_image_shaped_arrays_fail(ctx, shape):
    found = check_grid(np.zeros(shape), ctx=ctx, where="w")
    assert any(f.verdict is Verdict.FAIL for f in found), shape


def test_weights_that_are_not_image_shaped_pass(ctx):
    arrays = {"conv.weight": np.ones((8, 1, 3, 3)), "fc.weight": np.ones((2, 72)), "b": np.ones(2)}
    report = check_arrays(arrays, ctx=ctx)
    assert report.verdict is Verdict.PASS, report.findings
    assert report.stats["numeric_values"] == 72 + 144 + 2


def test_array_names_are_text(ctx):
    report = check_arrays({f"layer_{SUBJECT}": np.ones(3)}, ctx=ctx)
    assert report.verdict is Verdict.FAIL


def test_an_unknown_suffix_is_never_a_pass(ctx):
    assert check_file(b"hello\n", name="a.xyz", ctx=ctx).verdict is Verdict.REVIEW
    assert check_file(b"\x00\x01binary", name="a.xyz", ctx=ctx).verdict is Verdict.FAIL


def test_the_rule_reference_is_generated_from_the_registry():
    from pathlib import Path

    from insitu.disclosure.docs import BEGIN, END, render

    page = (Path(__file__).parents[1] / "docs/reference/airlock-checks.md").read_text()
    generated = page.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == render(), "run: python -m insitu.disclosure.docs"
    for rule_id in RULES:
        assert f"`{rule_id}`" in generated


def test_the_information_budget_asks_for_review(ctx):
    from dataclasses import replace

    small = replace(ctx, limits=replace(ctx.limits, budget_values=100, budget_bytes=10_000))
    report = check_arrays({"w": np.ones((7, 30))}, ctx=small)
    assert report.by_rule()["budget"] is Verdict.REVIEW and report.verdict is Verdict.REVIEW
    assert check_arrays({"w": np.ones(10)}, ctx=small).verdict is Verdict.PASS


def test_drawn_pdf_numbers_count_and_many_need_review(ctx):
    """Path coordinates are data: budgeted, REVIEW above disclosure.max_vector_values, and
    read only up to the budget (a huge content stream does not stall the check)."""
    import zlib
    from dataclasses import replace

    from disclosure_corpus import PDF_PAGE, minimal_pdf, pdf_stream

    def drawn(points: int) -> bytes:
        ys = np.random.default_rng(0).random(points) * 100
        path = "0 0 m " + " ".join(f"{i * 0.01:.2f} {y:.2f} l" for i, y in enumerate(ys))
        content = zlib.compress(f"q 0.2 G {path} S Q".encode())
        return minimal_pdf([*PDF_PAGE, pdf_stream("/Filter /FlateDecode", content)])

    few = check_file(drawn(200), name="line.pdf", ctx=ctx)
    assert few.verdict is Verdict.PASS and few.stats["numeric_values"] >= 400
    limits = replace(ctx.limits, max_vector_values=1_000, budget_values=5_000)
    tight = replace(ctx, limits=limits)
    many = check_file(drawn(1_000), name="line.pdf", ctx=tight)
    assert many.by_rule()["vector-data"] is Verdict.REVIEW
    huge = check_file(drawn(20_000), name="line.pdf", ctx=tight)
    assert huge.by_rule()["vector-data"] is Verdict.REVIEW
    assert huge.stats["numeric_values"] <= 5_000


def test_decompression_is_bounded_by_the_config(ctx):
    import io
    import zipfile
    from dataclasses import replace

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.txt", "0" * 3_000_000)
    tight = replace(ctx, limits=replace(ctx.limits, max_unpacked_bytes=1_000_000))
    report = check_file(buf.getvalue(), name="a.zip", ctx=tight)
    assert report.by_rule()["unpack-limits"] is Verdict.FAIL


def test_disclosure_keys_are_validated_with_their_help():
    from insitu.config import parse_config
    from insitu.errors import ConfigError

    with pytest.raises(ConfigError, match=r"disclosure\.max_nesting must be at least 1"):
        parse_config({"disclosure": {"max_nesting": 0}})
    with pytest.raises(ConfigError, match=r"unknown key.*disclosure\.bogus"):
        parse_config({"disclosure": {"bogus": 1}})
    assert parse_config({"disclosure": {"plane_tolerance": 3}}).disclosure.plane_tolerance == 3


def test_a_fingerprint_match_fails_naming_the_series(ctx):
    from dataclasses import dataclass, replace

    @dataclass
    class Match:
        dataset: str = "trial"
        version: str = "v1"
        series_id: str = "series-7"
        orientation: str = "axial"
        score: float = 0.97

    class Index:
        def match_grid(self, grid):
            return Match() if grid.shape == (30, 30) else None

        def match_vector(self, vector):
            return None

    found = check_grid(np.ones((30, 30)), ctx=replace(ctx, fingerprints=Index()), where="x")
    assert [f.rule_id for f in found] == ["pixel-provenance"]
    assert found[0].verdict is Verdict.FAIL and "series-7" in found[0].message


def test_a_windows_1252_table_is_reviewed_and_still_read(ctx):
    table = "région,n\nÎle-de-France,20\nsüd,31\n".encode("cp1252")
    assert check_file(table, name="t.csv", ctx=ctx).verdict is Verdict.REVIEW
    leaking = f"région,case\nnord,{SUBJECT}\n".encode("cp1252")
    assert check_file(leaking, name="t.csv", ctx=ctx).verdict is Verdict.FAIL
    assert check_file(bytes(range(256)), name="t.csv", ctx=ctx).verdict is Verdict.FAIL
