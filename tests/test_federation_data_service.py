"""What the site runner serves a sandboxed app, and what it loads before its task.

The data service answers an app's image request with the reader's own decode of the
published series (the same values, coordinates and attributes as ``Dataset.image``),
in memory; a runner started ahead has loaded the fingerprint index and what its first
request would import, and still sees an index that changed after it started.
"""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures_datasets import make_series, run_json

from insitu.config import NodeHome
from insitu.datasets.reader import open_dataset
from insitu.disclosure.provenance import INDEX_NAME, FingerprintIndex, fingerprints_dir
from insitu.federation import site_runner
from insitu.federation.channel import Channel
from insitu.federation.data_service import DataService
from insitu.federation.node_data import SiteData


@pytest.fixture
def published(home: NodeHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> NodeHome:
    series = make_series(tmp_path / "ct", n=6, step=2.0)
    code, _ = run_json(["ingest", str(series), "--dataset", "trial"], capsys)
    assert code == 0
    return home


def _ask(service: DataService, request: bytes) -> tuple[bytes, bytes]:
    ours, theirs = socket.socketpair()
    try:
        service.answer(Channel(ours), request)
        return Channel(theirs).recv()
    finally:
        ours.close()
        theirs.close()


def test_an_image_is_served_as_the_reader_reads_it(published: NodeHome) -> None:
    dataset = open_dataset("trial", home=published)
    series_id = str(dataset.series.series_id[0])
    service = DataService(SiteData(dataset, site="site-a", dataset="trial"))
    kind, payload = _ask(service, b'{"op": "image", "arg": "%s"}' % series_id.encode())
    assert kind == b"D"
    served = pickle.loads(payload)  # noqa: S301 (our own runner's bytes, as the sandbox reads them)
    expected = dataset.image(series_id)
    assert isinstance(served.data, np.ndarray)  # in memory, no dask graph to the app
    np.testing.assert_array_equal(served.values, expected.values)
    assert served.dims == expected.dims and served.attrs.keys() == expected.attrs.keys()
    for name in ("z", "y", "x"):
        np.testing.assert_array_equal(served[name].values, expected[name].values)
    assert service.tally().series == {series_id}  # counted as served


def test_an_unknown_series_is_refused_in_the_sites_words(published: NodeHome) -> None:
    dataset = open_dataset("trial", home=published)
    service = DataService(SiteData(dataset, site="site-a", dataset="trial"))
    kind, payload = _ask(service, b'{"op": "image", "arg": "nope"}')
    assert kind == b"X" and b"no series 'nope'" in payload
    assert service.tally().series == set()


def test_a_runner_started_ahead_has_the_index_and_sees_it_change(published: NodeHome) -> None:
    index_file = fingerprints_dir(published) / INDEX_NAME
    assert index_file.is_file()  # the ingest fingerprinted its series
    site_runner._warm_fingerprints(str(published.root))
    warm = FingerprintIndex.for_home(published)
    assert len(warm) == 1
    assert FingerprintIndex.for_home(published) is warm  # the task's check: no reload
    index_file.write_text(index_file.read_text() + " ")  # a publish after the start
    assert FingerprintIndex.for_home(published) is not warm


def test_a_runner_started_ahead_makes_its_runtime_client_without_importing() -> None:
    # The first httpx client imports httpcore (and trio); xarray scans entry points for
    # its chunk managers on first use: both belong before the task, not in it.
    code = (
        "import sys; from insitu.federation import site_runner; site_runner._preload(); "
        "from xarray.namedarray.parallelcompat import list_chunkmanagers; "
        "before = set(sys.modules); import httpx; httpx.Client(verify=False).close(); "
        "print(sorted(set(sys.modules) - before), list_chunkmanagers.cache_info().currsize)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["[]", "1"]
