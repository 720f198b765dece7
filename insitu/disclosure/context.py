"""What the engine knows of a site: thresholds, identifiers, image sizes, fingerprints."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from insitu.config import DisclosureSection, NodeHome, PolicySection, SiteConfig, load_config

__all__ = ["Budget", "DisclosureContext", "SiteIdentifiers", "site_identifiers"]

_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")


@dataclass(frozen=True)
class SiteIdentifiers:
    """What of the site's data must never appear in an output."""

    texts: frozenset[str] = frozenset()  # subject pseudonyms, study and series UIDs
    dates: frozenset[str] = frozenset()  # study dates, as YYYYMMDD
    slice_shapes: frozenset[tuple[int, int]] = frozenset()  # (rows, cols), every orientation
    volume_shapes: frozenset[tuple[int, ...]] = frozenset()
    population_sizes: frozenset[int] = field(default_factory=frozenset)  # subjects, series


@dataclass(frozen=True)
class Budget:
    """How much one release may carry before a person must look."""

    values: int
    bytes: int


@dataclass(frozen=True)
class DisclosureContext:
    """Thresholds, identifiers and fingerprints the rules check against."""

    policy: PolicySection = field(default_factory=PolicySection)
    limits: DisclosureSection = field(default_factory=DisclosureSection)
    identifiers: SiteIdentifiers = field(default_factory=SiteIdentifiers)
    fingerprints: Any | None = None  # insitu.disclosure.provenance.FingerprintIndex

    @property
    def budget(self) -> Budget:
        return Budget(self.limits.budget_values, self.limits.budget_bytes)

    @classmethod
    def from_config(
        cls,
        config: SiteConfig,
        identifiers: SiteIdentifiers | None = None,
        fingerprints: Any | None = None,
    ) -> DisclosureContext:
        return cls(
            policy=config.policy,
            limits=config.disclosure,
            identifiers=identifiers or SiteIdentifiers(),
            fingerprints=fingerprints,
        )

    @classmethod
    def for_home(
        cls,
        home: NodeHome,
        identifiers: SiteIdentifiers,
        config: SiteConfig | None = None,
    ) -> DisclosureContext:
        """Everything from the node home: insitu.toml, the fingerprint index, and the
        identifiers its caller read from the catalog (the ground floor reads no
        catalog: :func:`insitu.datasets.disclosure_context.disclosure_context`).
        """
        config = config or load_config(home)
        return cls.from_config(config, identifiers, _fingerprints(home))


def _fingerprints(home: NodeHome) -> Any | None:
    """The site's fingerprint index, once insitu.disclosure.provenance exists."""
    try:
        provenance = importlib.import_module("insitu.disclosure.provenance")
    except ImportError:
        return None
    return provenance.FingerprintIndex.for_home(home)


def _normal_date(text: str) -> str | None:
    match = _DATE.fullmatch(text.strip())
    return "".join(match.groups()) if match else None


def site_identifiers(
    subjects: Iterable[str],
    studies: Iterable[tuple[str, str]],
    series: Iterable[tuple[str, Sequence[int]]],
    sizes: Iterable[Iterable[int]],
) -> SiteIdentifiers:
    """Pseudonyms, UIDs, dates and image shapes of every published version.

    From what the catalog lists: subject pseudonyms, (study UID, date), (series
    UID, shape) and each version's (subjects, series) counts.
    """
    texts: set[str] = set(subjects)
    dates: set[str] = set()
    slices: set[tuple[int, int]] = set()
    volumes: set[tuple[int, ...]] = set()
    population: set[int] = set()
    for study, date in studies:
        texts.add(study)
        if date and (normal := _normal_date(date)):
            dates.add(normal)
    for series_id, shape in series:
        texts.add(series_id)
        dims = tuple(int(d) for d in shape)
        volumes.add(dims)
        if len(dims) >= 2:
            slices.update(
                (dims[i], dims[j]) for i in range(len(dims)) for j in range(len(dims)) if i != j
            )
    for counts in sizes:
        population.update(n for n in counts if n)
    return SiteIdentifiers(
        texts=frozenset(t for t in texts if t),
        dates=frozenset(dates),
        slice_shapes=frozenset(slices),
        volume_shapes=frozenset(volumes),
        population_sizes=frozenset(population),
    )
