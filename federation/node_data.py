"""What a ClientApp may read at a site: one dataset, through the node's home.

A ClientApp never opens a path. It calls :func:`site_data(context)
<site_data>` and gets the dataset named in the SuperNode's node config
(``insitu federation join --dataset NAME``). At a site the app runs in a
sandbox (:mod:`insitu.federation.sandbox`) and ``site_data`` there is a proxy:
every read is a request to the site's runner, where a :class:`SiteData`
opened from the node home answers it and counts which subjects and series it
handed out (the tally the checker uses lives there, out of the app's reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from insitu.config import NodeHome
from insitu.errors import ConfigError

__all__ = [
    "NODE_CONFIG_ALIAS",
    "NODE_CONFIG_DATASET",
    "NODE_CONFIG_HOME",
    "NODE_CONFIG_SITE",
    "DatasetLike",
    "RunBinding",
    "SiteData",
    "current",
    "current_run",
    "set_run",
    "site_data",
]

NODE_CONFIG_HOME = "insitu-home"
NODE_CONFIG_DATASET = "insitu-dataset"
NODE_CONFIG_SITE = "insitu-site"
# The name the federation uses for the dataset (``join --as``), if not its local name.
NODE_CONFIG_ALIAS = "insitu-dataset-alias"
SUBJECT = "subject_id"
SERIES = "series_id"


class DatasetLike(Protocol):
    """The reader's Dataset (insitu.datasets.reader) as far as federation uses it."""

    @property
    def subjects(self) -> Any: ...
    @property
    def series(self) -> Any: ...
    @property
    def tables(self) -> Any: ...
    def image(self, series_id: str) -> Any: ...
    def header(self, series_id: str) -> Any: ...


class SiteData:
    """One dataset of this site, handed to an approved ClientApp, with a tally."""

    def __init__(
        self,
        source: DatasetLike,
        *,
        site: str,
        dataset: str,
        alias: str | None = None,
        min_cell_count: int = 10,
    ) -> None:
        self._source = source
        self.site = site
        self.dataset = dataset
        self.alias = alias or dataset
        self.min_cell_count = min_cell_count
        self.settings: Any = None  # the site's [federation] settings (None: defaults)
        self.served_subjects: set[str] = set()
        self.served_series: set[str] = set()
        self.identifiers: set[str] = set()
        self._series_subject: dict[str, str] | None = None

    # -- reading ------------------------------------------------------------

    @property
    def version(self) -> str:
        """The dataset version being read ("" when the source does not say)."""
        return str(getattr(self._source, "version", "") or "")

    @property
    def subjects(self) -> Any:
        """The subjects table (pseudonyms and subject-level columns such as arm)."""
        frame = self._source.subjects.copy()
        self._serve(_column(frame, SUBJECT))
        return frame

    @property
    def series(self) -> Any:
        """The series index (one row per image volume); serves no image data."""
        frame = self._source.series.copy()
        self.identifiers.update(str(s) for s in _column(frame, SERIES))
        self.identifiers.update(str(s) for s in _column(frame, SUBJECT))
        return frame

    def table_names(self) -> list[str]:
        return sorted(self._source.tables.keys())

    def table(self, name: str) -> Any:
        """A measurement or clinical table; every subject in it counts as served."""
        tables = self._source.tables
        if name not in tables:
            raise KeyError(
                f"dataset {self.dataset!r} at site {self.site!r} has no table {name!r}; "
                f"tables: {', '.join(sorted(tables.keys())) or 'none'}"
            )
        frame = tables[name].copy()
        self._serve(_column(frame, SUBJECT))
        return frame

    def image(self, series_id: str) -> Any:
        """One series as a lazy xarray DataArray (z, y, x); its subject counts as served."""
        array = self._source.image(series_id)
        self.identifiers.add(str(series_id))
        self.served_series.add(str(series_id))
        subject = self._subject_of(str(series_id))
        if subject is not None:
            self._serve([subject])
        return array

    def header(self, series_id: str) -> dict[str, Any]:
        """The de-identified DICOM header of a series (DICOM JSON); its subject is served."""
        header = dict(self._source.header(series_id))
        self.identifiers.add(str(series_id))
        subject = self._subject_of(str(series_id))
        if subject is not None:
            self._serve([subject])
        return header

    def release(self, cells: Any) -> None:
        """The built-in analytics' differencing check before a reply is built.

        ``cells`` maps a label to the subject set of each cell the reply would
        release; the site's query ledger (node-private) refuses the query with
        QueryRefusedError when a cell differs from one this researcher was sent
        before by fewer than the minimum cell count. Runs on the site's side.
        """
        run = current_run()
        if run is None:
            from insitu.errors import ServiceError

            raise ServiceError("the site runner did not bind this call to a run")
        from insitu.config import load_config
        from insitu.federation.query_ledger import QueryLedger

        QueryLedger.for_home(run.home).check_and_record(
            run.researcher,
            self.dataset,
            cells,
            min_cell=load_config(run.home).policy.min_cell_count,
            run_id=run.run_id,
        )

    def image_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of every image in the store (the egress mod refuses arrays like them)."""
        frame = self._source.series
        if "shape" in getattr(frame, "columns", ()):
            return [tuple(int(s) for s in shape) for shape in frame["shape"]]
        return [
            tuple(int(s) for s in self._source.image(str(series_id)).shape)
            for series_id in _column(frame, SERIES)
        ]

    # -- tally --------------------------------------------------------------

    def _serve(self, subjects: Any) -> None:
        ids = {str(s) for s in subjects}
        self.served_subjects.update(ids)
        self.identifiers.update(ids)

    def has_series(self, series_id: str) -> bool:
        """Whether the dataset has this series (from the same table, read once)."""
        return series_id in self._series_subjects()

    def _subject_of(self, series_id: str) -> str | None:
        return self._series_subjects().get(series_id)

    def _series_subjects(self) -> dict[str, str]:
        if self._series_subject is None:
            frame = self._source.series
            self._series_subject = {
                str(a): str(b)
                for a, b in zip(_column(frame, SERIES), _column(frame, SUBJECT), strict=True)
            }
        return self._series_subject


def _column(frame: Any, name: str) -> list[Any]:
    if name in getattr(frame, "columns", ()):
        return list(frame[name])
    if getattr(frame.index, "name", None) == name:
        return list(frame.index)
    return []


_CURRENT: SiteData | None = None


@dataclass(frozen=True)
class RunBinding:
    """Who the ClientApp call in progress works for (set by the site runner only)."""

    home: NodeHome
    researcher: str
    run_id: str


_RUN: RunBinding | None = None


def current_run() -> RunBinding | None:
    return _RUN


def set_run(run: RunBinding | None) -> None:
    global _RUN
    _RUN = run


def current() -> SiteData | None:
    """The SiteData of the ClientApp call in progress (the egress mod reads its tally)."""
    return _CURRENT


def set_current(data: SiteData | None) -> None:
    global _CURRENT
    _CURRENT = data


def open_for_node(node_config: dict[str, Any]) -> SiteData:
    """Open the dataset the SuperNode was started for, from its node home."""
    try:
        home = NodeHome(Path(str(node_config[NODE_CONFIG_HOME])))
        dataset = str(node_config[NODE_CONFIG_DATASET])
        site = str(node_config.get(NODE_CONFIG_SITE, ""))
    except KeyError as missing:
        raise ConfigError(
            f"the SuperNode has no {missing} in its node config: start it with "
            "`insitu federation join`"
        ) from None
    from insitu.config import load_config
    from insitu.datasets.reader import open_dataset

    source = open_dataset(dataset, home=home)
    alias = str(node_config.get(NODE_CONFIG_ALIAS, "") or dataset)
    from insitu.federation.settings import federation_settings

    config = load_config(home)
    data = SiteData(
        source, site=site, dataset=dataset, alias=alias, min_cell_count=config.policy.min_cell_count
    )
    data.settings = federation_settings(config)
    return data


def site_data(context: Any) -> SiteData:
    """The site's dataset for this ClientApp call (the only way an app reads data)."""
    data = current()
    if data is None:
        data = open_for_node(dict(context.node_config))
        set_current(data)
    return data
