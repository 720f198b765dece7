"""Federated analytics, built in: counts, moments, histograms and quantiles per group.

A researcher runs, from a notebook::

    from insitu.federation import analyze
    table = analyze(federation="locat", dataset="locat", feature="hu_mean", by="arm")

Each site's ClientApp reads the feature from its own dataset (through
:func:`insitu.federation.node_data.site_data`), summarises it per group with
mergeable sufficient statistics (:mod:`insitu.federation.stats`), withholds
groups and histogram bins below the site's ``policy.min_cell_count``, and
replies with arrays only. The ServerApp merges the sites' summaries; the
merged numbers equal the pooled computation (exactly for counts and
histograms, to rounding for moments).

Features and groups: a table column (``"TABLE.COLUMN"`` or a column name
found in the subjects table, any table or the series index), a DICOM keyword
of each subject's first series (``KVP``, ``CTDIvol``: de-identified header),
or an image feature computed from each subject's first series: ``hu_mean``,
``hu_std`` (intensity in the central region: the middle half along each axis)
and ``volume_ml`` (volume of voxels above -500 HU, i.e. the body, in mL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from insitu.errors import DatasetNotFoundError, InvalidRequestError
from insitu.federation.analytic import Analytic
from insitu.federation.app_package import AppPackage, entry_module

__all__ = [
    "IMAGE_FEATURES",
    "AnalysisSpec",
    "analytics_fab",
    "analytics_fingerprint",
    "analyze",
    "combine",
    "feature_frame",
    "site_summary",
]

APP_NAME = "insitu-analytics"
APP_VERSION = "1.0.0"
IMAGE_FEATURES = ("hu_mean", "hu_std", "volume_ml")
ALL = "all"


@dataclass(frozen=True)
class AnalysisSpec:
    dataset: str
    feature: str
    by: str = ""
    bins: tuple[float, ...] = ()
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)
    min_sites: int = 1

    def to_run_config(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "feature": self.feature,
            "by": self.by,
            "bins": ",".join(repr(float(b)) for b in self.bins),
            "quantiles": ",".join(repr(float(q)) for q in self.quantiles),
            "min-sites": self.min_sites,
        }

    @classmethod
    def from_run_config(cls, config: Any) -> AnalysisSpec:
        def floats(text: Any) -> tuple[float, ...]:
            return tuple(float(t) for t in str(text).split(",") if t.strip())

        return cls(
            dataset=str(config["dataset"]),
            feature=str(config["feature"]),
            by=str(config.get("by", "")),
            bins=floats(config.get("bins", "")),
            quantiles=floats(config.get("quantiles", "")),
            min_sites=int(config.get("min-sites", 1)),
        )


# --- the site's side ------------------------------------------------------


def _image_feature(array: Any, feature: str) -> float:
    import numpy as np

    values = np.asarray(array.values if hasattr(array, "values") else array, dtype=float)
    if feature == "volume_ml":
        spacing = 1.0
        for dim in getattr(array, "dims", ()):
            coord = (
                np.asarray(array.coords[dim].values, dtype=float)
                if dim in array.coords
                else np.empty(0)
            )
            spacing *= float(abs(coord[1] - coord[0])) if len(coord) > 1 else 1.0
        return float((values > -500).sum() * spacing / 1000.0)
    region = tuple(slice(s // 4, s - s // 4) if s >= 4 else slice(None) for s in values.shape)
    centre = values[region]
    if feature == "hu_mean":
        return float(centre.mean())
    return float(centre.std())


def _find_column(data: Any, name: str) -> Any:
    """A frame (subject_id + the column) holding ``name``: subjects, or a table."""
    if "." in name:
        table, column = name.split(".", 1)
        if table in data.table_names():
            frame = data.table(table)
            if column not in frame.columns:
                raise InvalidRequestError(
                    f"table {table!r} has no column {column!r}; columns: "
                    f"{', '.join(map(str, frame.columns))}"
                )
            return frame.rename(columns={column: name})
    subjects = data.subjects
    if name in subjects.columns:
        return subjects
    for table in data.table_names():
        frame = data.table(table)
        if name in frame.columns:
            return frame
    series = data.series
    if name in series.columns and name not in ("shape", "spacing"):
        return series.sort_values("series_id").drop_duplicates("subject_id")
    header_frame = _header_column(data, series, name)
    if header_frame is not None:
        return header_frame
    raise InvalidRequestError(
        f"no column {name!r} in dataset {data.dataset!r} at site {data.site!r}: use a "
        "subjects or series column, TABLE.COLUMN, a DICOM keyword (e.g. KVP), or an "
        f"image feature ({', '.join(IMAGE_FEATURES)})"
    )


def _header_column(data: Any, series: Any, keyword: str) -> Any:
    """A DICOM attribute of each subject's first series (its de-identified header)."""
    import pandas as pd
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    key = f"{tag:08X}"
    rows = []
    for row in series.sort_values("series_id").drop_duplicates("subject_id").itertuples():
        entry = data.header(str(row.series_id)).get(key, {})
        values = entry.get("Value") if isinstance(entry, dict) else None
        rows.append({"subject_id": str(row.subject_id), keyword: values[0] if values else None})
    return pd.DataFrame(rows, columns=["subject_id", keyword])


def feature_frame(data: Any, spec: AnalysisSpec) -> Any:
    """One row per unit (subject or table row): columns subject_id, value, group."""
    import pandas as pd

    if spec.feature in IMAGE_FEATURES:
        series = data.series.sort_values("series_id")
        first = series.drop_duplicates("subject_id")
        rows = [
            {
                "subject_id": str(row.subject_id),
                "value": _image_feature(data.image(str(row.series_id)), spec.feature),
            }
            for row in first.itertuples()
        ]
        frame = pd.DataFrame(rows, columns=["subject_id", "value"])
    else:
        source = _find_column(data, spec.feature)
        frame = source[["subject_id", spec.feature]].rename(columns={spec.feature: "value"})
        if spec.by and spec.by in source.columns:
            frame["group"] = source[spec.by].astype(str).to_numpy()
    if spec.by and "group" not in frame.columns:
        groups = _find_column(data, spec.by)[["subject_id", spec.by]].drop_duplicates("subject_id")
        frame = frame.merge(groups, on="subject_id", how="left")
        frame = frame.rename(columns={spec.by: "group"})
        frame["group"] = frame["group"].astype(str)
    if not spec.by:
        frame["group"] = ALL
    frame = frame[pd.to_numeric(frame["value"], errors="coerce").notna()]
    frame["value"] = frame["value"].astype(float)
    return frame


def check_query(frame: Any, spec: AnalysisSpec, settings: Any) -> None:
    """Refuse (QueryRefusedError) a query the site's disclosure settings do not allow.

    Too many histogram bins or groups, or bins narrower than ``min_bin_width`` x
    the feature's standard deviation at this site: fine bins isolate subjects.
    """
    import numpy as np

    from insitu.errors import QueryRefusedError

    levels = frame["group"].nunique()
    if levels > settings.max_levels:
        raise QueryRefusedError(
            f"grouping by {spec.by!r} gives {levels} groups at this site; the most this site "
            f"returns is {settings.max_levels} ([federation] max_levels): group by a coarser "
            "variable"
        )
    if not spec.bins:
        return
    if len(spec.bins) - 1 > settings.max_bins:
        raise QueryRefusedError(
            f"{len(spec.bins) - 1} histogram bins asked; the most this site returns is "
            f"{settings.max_bins} ([federation] max_bins)"
        )
    values = frame["value"].to_numpy(dtype=float)
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    narrowest = float(np.min(np.diff(np.asarray(spec.bins, dtype=float))))
    if narrowest < settings.min_bin_width * spread:
        raise QueryRefusedError(
            f"the narrowest histogram bin is {narrowest:.4g} wide; this site allows no bin "
            f"narrower than {settings.min_bin_width:g} x the feature's spread "
            "([federation] min_bin_width): use wider bins"
        )


@dataclass
class Release:
    """What a site's reply would release: arrays, the cells' subject sets, what was withheld."""

    arrays: dict[str, Any] = field(default_factory=dict)
    cells: dict[str, frozenset[str]] = field(default_factory=dict)
    withheld: int = 0
    rows: int = 0


def disclose(frame: Any, spec: AnalysisSpec, *, min_cell_count: int) -> Release:
    """Per group moments, histogram and sketch, with DataSHIELD-style suppression.

    A group under the minimum cell count is left out without naming it; a
    group's histogram is left out whole when any bin (or the values outside
    the edges) holds 1 .. min-1 values, so no withheld bin can be told apart
    from an empty one or recovered from the group's total. Only a count of
    withheld cells leaves the site, never which.
    """
    import numpy as np

    from insitu.federation.stats import Histogram, Moments, Sketch

    out = Release()
    for group, part in sorted(frame.groupby("group"), key=lambda kv: str(kv[0])):
        values = part["value"].tolist()
        subjects = part["subject_id"].astype(str).to_numpy()
        key = f"g:{group}"
        if len(values) < min_cell_count or len(set(subjects)) < min_cell_count:
            out.withheld += 1
            continue
        out.rows += len(values)
        out.cells[f"group {group!r}"] = frozenset(subjects)
        moments = Moments.of(values)
        out.arrays[f"{key}/moments"] = np.array(
            [moments.n, moments.mean, moments.m2, moments.mean_lo], dtype=np.float64
        )
        out.arrays[f"{key}/subjects"] = np.array([len(set(subjects))], dtype=np.int64)
        if spec.bins:
            hist = Histogram.of(values, spec.bins)
            outside = len(values) - sum(hist.counts)
            if any(0 < c < min_cell_count for c in (*hist.counts, outside)):
                out.withheld += 1
            else:
                out.arrays[f"{key}/hist"] = np.array(hist.counts, dtype=np.int64)
                index = np.searchsorted(np.asarray(spec.bins), np.asarray(values), side="right")
                last = len(spec.bins) - 1
                index[np.asarray(values) == spec.bins[-1]] = last  # numpy: last edge inclusive
                for i in range(1, last + 1):
                    members = frozenset(subjects[index == i])
                    if members:
                        out.cells[f"bin {i} of group {group!r}"] = members
        sketch = Sketch.of(values, min_count=min_cell_count)
        out.arrays[f"{key}/sketch_means"] = np.array(sketch.means, dtype=float)
        out.arrays[f"{key}/sketch_counts"] = np.array(sketch.counts, dtype=np.int64)
        order = subjects[np.argsort(np.asarray(values, dtype=float), kind="stable")]
        start = 0
        for i, count in enumerate(sketch.counts):
            out.cells[f"quantile centroid {i} of group {group!r}"] = frozenset(
                order[start : start + count]
            )
            start += count
    return out


def site_summary(
    frame: Any,
    spec: AnalysisSpec,
    *,
    site: str,
    min_cell_count: int,
    settings: Any = None,
    release: Any = None,
) -> Any:
    """The reply content: per group moments, histogram and sketch, as arrays only.

    ``settings`` (the site's [federation] settings) limits bins and groups;
    ``release`` is called with the cells' subject sets before anything is
    built (the site's differencing check; it raises to refuse the query).
    """
    import numpy as np
    from flwr.app import ArrayRecord, MetricRecord, RecordDict

    from insitu.federation.settings import FederationSettings

    check_query(frame, spec, settings or FederationSettings())
    out = disclose(frame, spec, min_cell_count=min_cell_count)
    if release is not None:
        release(out.cells)
    arrays = dict(out.arrays)
    arrays["withheld"] = np.array([out.withheld], dtype=np.int64)
    return RecordDict(
        {
            "summary": ArrayRecord({k: _array(v) for k, v in arrays.items()}),
            "meta": MetricRecord({f"site:{site}": 1, "num-examples": out.rows}),
        }
    )


def _array(values: Any) -> Any:
    from flwr.app import Array

    return Array(values)


# --- the coordinator's side -----------------------------------------------


@dataclass
class SiteReply:
    site: str
    arrays: dict[str, Any]
    num_examples: int


@dataclass
class Combined:
    groups: list[dict[str, Any]] = field(default_factory=list)
    histogram: list[dict[str, Any]] = field(default_factory=list)
    suppressed: list[dict[str, str]] = field(default_factory=list)


def parse_reply(content: Any) -> SiteReply:
    meta = content["meta"]
    site = next((k.split(":", 1)[1] for k in meta if k.startswith("site:")), "?")
    arrays = {k: v.numpy() for k, v in content["summary"].items()}
    return SiteReply(site=site, arrays=arrays, num_examples=int(meta.get("num-examples", 0)))


def combine(replies: Sequence[SiteReply], spec: AnalysisSpec) -> Combined:
    """Merge the sites' summaries per group."""
    from insitu.federation.stats import Histogram, Moments, Sketch

    out = Combined()
    for reply in replies:
        withheld = reply.arrays.get("withheld")
        if withheld is not None and int(withheld[0]):
            # How many cells a site withheld, never which (no group names, no bins).
            out.suppressed.append({"site": reply.site, "cells": str(int(withheld[0]))})
    groups = sorted(
        {k.split("/", 1)[0][2:] for r in replies for k in r.arrays if k.startswith("g:")}
    )
    for group in groups:
        key = f"g:{group}"
        parts: list[Moments] = []
        sketch = Sketch((), ())
        hist: Histogram | None = None
        sites: list[str] = []
        subjects = 0
        for reply in replies:
            if f"{key}/moments" not in reply.arrays:
                continue
            n, mean, m2, mean_lo = reply.arrays[f"{key}/moments"].tolist()
            parts.append(Moments(int(n), float(mean), float(m2), float(mean_lo)))
            subjects += int(reply.arrays[f"{key}/subjects"][0])
            sites.append(reply.site)
            sketch = sketch.merge(
                Sketch(
                    tuple(reply.arrays[f"{key}/sketch_means"].tolist()),
                    tuple(int(c) for c in reply.arrays[f"{key}/sketch_counts"].tolist()),
                )
            )
            if spec.bins and f"{key}/hist" in reply.arrays:
                part = Histogram(
                    tuple(spec.bins), tuple(int(c) for c in reply.arrays[f"{key}/hist"])
                )
                hist = part if hist is None else hist.merge(part)
        moments = Moments.combine(parts)
        row: dict[str, Any] = {
            "group": group,
            "n": moments.n,
            "subjects": subjects,
            "mean": moments.mean if moments.n else math.nan,
            "variance": moments.variance,
            "std": moments.std,
            "sites": len(sites),
        }
        for q in spec.quantiles:
            row[f"q{q:g}"] = sketch.quantile(q)
        out.groups.append(row)
        if hist is not None:
            for i, count in enumerate(hist.counts):
                out.histogram.append(
                    {
                        "group": group,
                        "bin_low": hist.edges[i],
                        "bin_high": hist.edges[i + 1],
                        "count": count,
                    }
                )
    return out


# --- the Flower apps ------------------------------------------------------


def _client_app() -> Any:
    from flwr.app import Message
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Any) -> Message:
        from insitu.federation.node_data import site_data

        spec = AnalysisSpec.from_run_config(context.run_config)
        data = site_data(context)
        if spec.dataset not in (data.dataset, data.alias):
            raise DatasetNotFoundError(
                f"this site serves dataset {data.alias!r} to the federation, not {spec.dataset!r}"
            )
        frame = feature_frame(data, spec)
        content = site_summary(
            frame,
            spec,
            site=data.site,
            min_cell_count=data.min_cell_count,
            settings=data.settings,
            release=data.release,
        )
        return Message(content, reply_to=msg)

    return app


def _server_app() -> Any:
    from flwr.app import Message, RecordDict
    from flwr.serverapp import Grid, ServerApp

    from insitu.federation.apps import report_result, send_and_collect
    from insitu.federation.credit import fold, read_credit

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        spec = AnalysisSpec.from_run_config(context.run_config)
        timeout = float(context.run_config.get("timeout", 120.0))
        nodes = _wait_for_nodes(grid, spec.min_sites, timeout)
        messages = [Message(RecordDict(), dst_node_id=node, message_type="query") for node in nodes]
        replies = send_and_collect(grid, messages, timeout=timeout)
        answered = {r.metadata.src_node_id for r in replies}
        ok: list[SiteReply] = []
        refused: list[dict[str, Any]] = []
        credits = []
        for reply in replies:
            if reply.has_error():
                refused.append({"node": reply.metadata.src_node_id, "reason": reply.error.reason})
            else:
                ok.append(parse_reply(reply.content))
                credits.append(read_credit(reply.content))
        missing = [
            {"node": n, "reason": "no reply (site down?)"} for n in nodes if n not in answered
        ]
        combined = combine(ok, spec)
        report_result(
            {
                "spec": spec.to_run_config(),
                "sites": sorted(r.site for r in ok),
                "site_rows": {r.site: r.num_examples for r in ok},
                "refused": refused + missing,
                "groups": combined.groups,
                "histogram": combined.histogram,
                "suppressed": combined.suppressed,
                # each site's citation and contribution (issue 17)
                **fold(credits, title=f"Federated analysis of {spec.dataset}: {spec.feature}"),
            }
        )
        if len(ok) < spec.min_sites:
            raise RuntimeError(
                f"only {len(ok)} site(s) answered ({', '.join(sorted(r.site for r in ok))}); "
                f"the analysis needs {spec.min_sites}"
            )

    return app


def _wait_for_nodes(grid: Any, minimum: int, timeout: float) -> list[int]:
    import time

    from insitu.federation.apps import online_nodes

    deadline = time.monotonic() + timeout
    while True:
        nodes = online_nodes(grid)
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(0.5)


# The FAB: a tiny module pointing at this installed code (sites are offline and
# run only pre-installed code; the fingerprint pins the app's name, version
# and configuration).
ANALYTIC = Analytic(
    about="counts, moments, histograms and quantiles of a feature per group",
    package=AppPackage(
        name=APP_NAME,
        version=APP_VERSION,
        description="insitu built-in federated analytics: counts, moments, histograms, quantiles",
        dependencies=("flwr>=1.42", "insitu"),
        module="insitu_analytics_app",
        entry=entry_module(
            "insitu built-in federated analytics (the code is insitu.federation.analytics).",
            "insitu.federation.analytics",
        ),
        config="""\
dataset = ""
feature = ""
by = ""
bins = ""
quantiles = "0.25,0.5,0.75"
min-sites = 1
timeout = 120.0
# The researcher's identity, signed by their home site (insitu.federation.identity).
insitu-identity = ""

""",
        egress="""\
[tool.insitu.egress]
message-types = ["query"]
max-replies = 1
max-values-per-reply = 20000
max-values-per-run = 20000
metrics = ["meta/site:*", "meta/num-examples"]

[[tool.insitu.egress.arrays]]
name = "summary/withheld"
dtype = "int64"
shape = [1]

[[tool.insitu.egress.arrays]]
name = "summary/g:*/moments"
dtype = "float64"
shape = [4]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/subjects"
dtype = "int64"
shape = [1]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/suppressed"
dtype = "int64"
shape = [1]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/hist"
dtype = "int64"
shape = [-1]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/hist_hidden"
dtype = "int64"
shape = [-1]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/sketch_means"
dtype = "float64"
shape = [-1]
max-count = 64

[[tool.insitu.egress.arrays]]
name = "summary/g:*/sketch_counts"
dtype = "int64"
shape = [-1]
max-count = 64
""",
    ),
)


def client_app() -> Any:
    return _client_app()


def server_app() -> Any:
    return _server_app()


def analytics_fab_files() -> dict[str, bytes]:
    return ANALYTIC.package.files()


def analytics_fab() -> bytes:
    return ANALYTIC.fab()


def analytics_fingerprint() -> str:
    """What a steward approves to let the built-in analytics read a dataset."""
    return ANALYTIC.fingerprint()


def analyze(
    *,
    federation: str | None = None,
    dataset: str,
    feature: str,
    by: str | None = None,
    bins: Sequence[float] | None = None,
    quantiles: Sequence[float] = (0.25, 0.5, 0.75),
    min_sites: int = 1,
    address: str | None = None,
    insecure: bool = False,
    timeout: float = 300.0,
    identity: Any = None,
    token: str | None = None,
) -> Any:
    """Run the built-in analytics across a federation; a pandas DataFrame per group.

    ``identity`` and ``token`` say who asks (see :meth:`insitu.federation.apps.RunHandle.submit`;
    by default from the environment of the researcher's server).

    ``federation`` names a SuperLink connection in ``$FLWR_HOME/config.toml``.
    The frame's ``attrs`` hold ``run_id``, ``sites`` (who answered), ``refused``
    (who did not, with each site's reason), ``suppressed`` cells, the merged
    ``histogram`` when ``bins`` are given, and what to cite: ``citations`` (one per
    site's dataset version), ``contributions`` (site, dataset, version, subjects: a
    table, ``pd.DataFrame(frame.attrs["contributions"])``) and ``citation_files``
    (CITATIONS.cff, .bib, .md as text).
    """
    import pandas as pd

    from insitu.errors import ServiceError
    from insitu.federation.apps import run_fab

    spec = AnalysisSpec(
        dataset=dataset,
        feature=feature,
        by=by or "",
        bins=tuple(float(b) for b in bins or ()),
        quantiles=tuple(float(q) for q in quantiles),
        min_sites=min_sites,
    )
    outcome = run_fab(
        analytics_fab(),
        federation=federation,
        address=address,
        insecure=insecure,
        run_config=spec.to_run_config() | {"timeout": float(timeout) / 2},
        timeout=timeout,
        identity=identity,
        token=token,
    )
    result = outcome.result
    if result is None or not outcome.completed:
        refused = "; ".join(r["reason"] for r in (result or {}).get("refused", []))
        raise ServiceError(
            f"federated analysis run {outcome.run_id} ended {outcome.status}"
            + (f": {outcome.details}" if outcome.details else "")
            + (f"; refusals: {refused}" if refused else "")
        )
    frame = pd.DataFrame(result["groups"])
    if by and not frame.empty:
        frame = frame.rename(columns={"group": by})
    frame.attrs.update(
        run_id=outcome.run_id,
        sites=result["sites"],
        refused=result["refused"],
        suppressed=result["suppressed"],
        histogram=result["histogram"],
        # how to cite what each site contributed, and how much (subjects per site)
        citations=result.get("citations", []),
        contributions=result.get("contributions", []),
        citation_files=result.get("citation_files", {}),
    )
    return frame
