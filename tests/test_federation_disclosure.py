"""Attacks on the built-in analytics, and the site's DataSHIELD-style answers (no
federation needed: the site's side of the ClientApp on an in-memory dataset).

Fine bins that isolate subjects, suppressed cells that name themselves, histograms whose
edges leave a few subjects out, differencing queries, too many groups or bins."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from insitu.errors import QueryRefusedError, ServiceError
from insitu.federation import node_data
from insitu.federation.analytics import AnalysisSpec, feature_frame, site_summary
from insitu.federation.node_data import RunBinding, SiteData
from insitu.federation.settings import FederationSettings

MIN = 5


class Source:
    """12 subjects; ``arm`` splits them 11 / 1 (the one: the differencing target)."""

    def __init__(self) -> None:
        ids = [f"sub-{i:02d}" for i in range(12)]
        rng = np.random.default_rng(7)
        self.subjects = pd.DataFrame({"subject_id": ids})
        self.series = pd.DataFrame({"subject_id": ids, "series_id": [f"{s}-x" for s in ids]})
        self.tables = {
            "m": pd.DataFrame(
                {
                    "subject_id": ids,
                    "size": np.round(rng.normal(50, 10, 12), 2),
                    "arm": ["a"] * 11 + ["b"],
                    "site_group": ["all"] * 12,
                    "visit": [str(i) for i in range(12)],
                }
            )
        }

    def image(self, series_id: str):
        raise AssertionError("not used")

    def header(self, series_id: str):
        return {}


@pytest.fixture
def data(home):
    node_data.set_run(RunBinding(home, "mallory@site-a", "1"))
    try:
        yield SiteData(Source(), site="site-a", dataset="locat")
    finally:
        node_data.set_run(None)


def _reply(data, spec, settings=None):
    content = site_summary(
        feature_frame(data, spec),
        spec,
        site="site-a",
        min_cell_count=MIN,
        settings=settings or FederationSettings(min_bin_width=0.0, max_bins=100),
        release=data.release,
    )
    return {k: v.numpy() for k, v in content["summary"].items()}, content


def _set_min_cell(home):
    text = home.config_path.read_text().replace("min_cell_count = 10", f"min_cell_count = {MIN}")
    home.config_path.write_text(text)


def test_fine_bins_are_refused_relative_to_the_spread(data):
    values = data.table("m")["size"].to_numpy()
    edges = tuple(np.linspace(values.min() - 1e-3, values.max() + 1e-3, 13))
    spec = AnalysisSpec("locat", "m.size", bins=edges)
    with pytest.raises(QueryRefusedError, match=r"narrowest histogram bin.*min_bin_width"):
        _reply(data, spec, FederationSettings(min_bin_width=0.5, max_bins=100))
    with pytest.raises(QueryRefusedError, match=r"12 histogram bins.*max_bins"):
        _reply(data, spec, FederationSettings(max_bins=10, min_bin_width=0.0))


def test_bins_isolating_subjects_withhold_the_histogram_without_naming_bins(home, data):
    _set_min_cell(home)
    values = np.sort(data.table("m")["size"].to_numpy())
    # One bin around a single subject's value, the rest wide.
    edges = (values[0] - 1, values[5] - 1e-6, values[5] + 1e-6, values[-1] + 1)
    arrays, _ = _reply(data, AnalysisSpec("locat", "m.size", bins=edges))
    assert not any(k.endswith("/hist") for k in arrays)  # the whole histogram withheld
    assert int(arrays["withheld"][0]) == 1  # how many cells, never which
    assert not any("hidden" in k or "suppressed" in k for k in arrays)


def test_edges_that_leave_a_few_subjects_out_withhold_the_histogram(home, data):
    _set_min_cell(home)
    values = np.sort(data.table("m")["size"].to_numpy())
    # All but the two largest values inside: n - sum(counts) would give 2 away.
    edges = (values[0] - 1, values[5] + 1e-6, values[9] + 1e-6)
    arrays, _ = _reply(data, AnalysisSpec("locat", "m.size", bins=edges))
    assert not any(k.endswith("/hist") for k in arrays)


def test_a_small_group_is_left_out_unnamed_and_uncounted(home, data):
    _set_min_cell(home)
    arrays, content = _reply(data, AnalysisSpec("locat", "m.size", by="arm"))
    assert {k.split("/")[0] for k in arrays if k.startswith("g:")} == {"g:a"}
    assert int(arrays["withheld"][0]) == 1
    # num-examples counts only what was released (12 would give the small group away).
    assert content["meta"]["num-examples"] == 11


def test_differencing_all_subjects_then_all_but_one_is_refused(home, data):
    _set_min_cell(home)
    _reply(data, AnalysisSpec("locat", "m.size"))  # mean over all 12
    with pytest.raises(QueryRefusedError, match=r"differ .* by 1 subject"):
        _reply(data, AnalysisSpec("locat", "m.size", by="arm"))  # mean over 11
    # Repeating the first query is fine (identical subjects), and refusals left no trace.
    _reply(data, AnalysisSpec("locat", "m.size"))
    _reply(data, AnalysisSpec("locat", "m.size", by="site_group"))  # same 12 subjects


def test_differencing_with_shifted_bin_edges_is_refused(home, data):
    _set_min_cell(home)
    values = np.sort(data.table("m")["size"].to_numpy())
    low, high = values[0] - 1, values[-1] + 1
    _reply(data, AnalysisSpec("locat", "m.size", bins=(low, values[5] + 1e-6, high)))
    # Moving the middle edge past one more subject: bins of 7/5 after 6/6.
    with pytest.raises(QueryRefusedError, match="by 1 subject"):
        _reply(data, AnalysisSpec("locat", "m.size", bins=(low, values[6] + 1e-6, high)))


def test_differencing_is_per_researcher(home, data):
    _set_min_cell(home)
    _reply(data, AnalysisSpec("locat", "m.size"))
    node_data.set_run(RunBinding(home, "alice@site-a", "2"))
    _reply(data, AnalysisSpec("locat", "m.size", by="arm"))  # alice never saw the 12


def test_too_many_groups_are_refused(home, data):
    with pytest.raises(QueryRefusedError, match=r"12 groups.*max_levels"):
        _reply(data, AnalysisSpec("locat", "m.size", by="visit"), FederationSettings(max_levels=5))


def test_release_needs_a_run_bound_by_the_site(data):
    node_data.set_run(None)
    with pytest.raises(ServiceError, match="did not bind"):
        _reply(data, AnalysisSpec("locat", "m.size"))
