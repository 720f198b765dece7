"""The gate's multi-key read (``POST batch/<dataset>/<version>``) and GateStore's use of it,
behind a real hub: the same bytes as single reads, the same refusals, every key ledgered.

One hub for the module (``running_hub``); tests run in file order and share its state.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import numpy as np
import pytest
import requests

from insitu import gate_batch
from insitu.audit import AuditLog

pytestmark = pytest.mark.slow

STORE = ("trial-a", "v1")


@pytest.fixture(scope="module")
def hub(running_hub):
    from insitu.hub import access

    home = running_hub.home
    for user in ("ada", "root_admin"):
        filed = access.request(home, user, "trial-a", "batch reads", "tests", 30)
        access.approve(home, "sam", filed.id, "ok")
    return running_hub


def _h(token):
    return {"Authorization": f"token {token}"}


def _batch(hub, keys, *, token=None, user="ada", dataset="trial-a", version="v1", body=None):
    headers = _h(token if token is not None else hub.token(user)) if token != "" else {}
    data = json.dumps({"keys": keys}).encode() if body is None else body
    url = f"{hub.service_url('gate')}batch/{dataset}/{version}"
    return requests.post(url, data=data, headers=headers, timeout=60)


def _reader(data):
    buffer = bytearray(data)

    def read(n):
        part = bytes(buffer[:n])
        del buffer[:n]
        return part

    return read


def _frames(response, keys):
    return dict(gate_batch.read_frames(_reader(response.content), keys))


def _store_keys(hub):
    root = hub.home.stores / "trial-a" / "v1.zarr"
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _single(hub, key, user="ada"):
    url = f"{hub.service_url('gate')}stores/trial-a/v1/{key}"
    return requests.get(url, headers=_h(hub.token(user)), timeout=30)


def test_a_batch_answers_what_single_reads_answer(hub):
    keys = [*_store_keys(hub), "series/s1/0/c/9/9/9", "nope/zarr.json"]
    r = _batch(hub, keys)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == gate_batch.CONTENT_TYPE
    assert r.headers["X-Insitu-Version"] == "v1"
    got = _frames(r, keys)
    for index, key in enumerate(keys):
        single = _single(hub, key)
        if single.status_code == 404:
            assert single.headers["X-Insitu-Error"] == "KeyMissingError"
            assert got[index] is None, key
        else:
            assert single.status_code == 200 and got[index] == single.content, key
    assert sum(v is None for v in got.values()) == 2
    # 'latest' is pinned for the whole batch, and a key may be asked twice.
    r = _batch(hub, ["zarr.json", "zarr.json"], version="latest")
    assert r.status_code == 200 and r.headers["X-Insitu-Version"] == "v1"
    assert len(_frames(r, ["zarr.json", "zarr.json"])) == 2


def test_the_framing_refuses_a_cut_or_reordered_answer(hub):
    from insitu.errors import ServiceError

    keys = ["zarr.json", "series/zarr.json"]
    body = _batch(hub, keys).content
    reader = _reader
    with pytest.raises(ServiceError, match="cut short"):
        list(gate_batch.read_frames(reader(body[:-3]), keys))
    with pytest.raises(ServiceError, match="not the key asked for"):
        list(gate_batch.read_frames(reader(body), list(reversed(keys))))
    with pytest.raises(ServiceError, match="no proper end frame"):
        list(gate_batch.read_frames(reader(body + b"x"), keys))
    with pytest.raises(ServiceError, match="unknown format"):
        list(gate_batch.read_frames(reader(b"HTTP/1.1 200 OK\r\n" + body), keys))


def _refused(r, status, error, *, words=""):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert not r.content.startswith(gate_batch.MAGIC)
    answer = r.json()
    assert answer["error"] == error and words in answer["message"], answer
    assert "\n" not in answer["message"] and str(os.sep + "tmp") not in answer["message"]


def test_batches_are_refused_like_single_reads(hub):
    keys = ["zarr.json", "series/s1/0/c/0/0/0"]
    _refused(_batch(hub, keys, token=""), 401, "AuthenticationError", words="token")
    _refused(_batch(hub, keys, token="forged-token"), 401, "AuthenticationError")
    # bob's own valid token: he has no approval for trial-a.
    _refused(_batch(hub, keys, user="bob"), 403, "AccessDeniedError", words="request_access")
    _refused(_batch(hub, keys, dataset="nope"), 404, "DatasetNotFoundError", words="no dataset")
    _refused(_batch(hub, keys, version="v9"), 404, "DatasetNotFoundError", words="versions: v1")
    # A cookie is not enough for a POST; a GET on the batch route is no read.
    url = f"{hub.service_url('gate')}batch/trial-a/v1"
    assert requests.get(url, headers=_h(hub.token("ada")), timeout=30).status_code == 405


@pytest.mark.parametrize(
    "bad",
    [
        "../../../private/site.key",
        "series/../../../private/site.key",
        "/etc/passwd",
        "%2e%2e/%2e%2e/private/site.key",
        "..%2f..%2fprivate%2fsite.key",
        "series\\..\\..\\private\\site.key",
        "zarr.json\x00",
        "series//s1/zarr.json",
        "",
    ],
)
def test_a_key_that_escapes_refuses_the_whole_batch(hub, bad):
    secret = hub.home.site_key_path.read_bytes().strip()
    r = _batch(hub, ["zarr.json", bad, "series/s1/0/c/0/0/0"])
    _refused(r, 400, "InvalidRequestError")
    assert secret not in r.content


def test_a_symlink_out_of_the_store_is_missing_inside_a_batch(hub):
    store = hub.home.stores / "trial-a" / "v1.zarr"
    links = {store / "key-link": hub.home.site_key_path, store / "private-link": hub.home.private}
    for link, target in links.items():
        link.symlink_to(target)
    inside = store / "series" / "inside-link"
    inside.symlink_to(store / "zarr.json")
    try:
        keys = ["key-link", "private-link/site.key", "series/inside-link"]
        r = _batch(hub, keys)
        assert r.status_code == 200
        got = _frames(r, keys)
        assert got[0] is None and got[1] is None
        assert got[2] == (store / "zarr.json").read_bytes()
        assert hub.home.site_key_path.read_bytes().strip() not in r.content
    finally:
        for link in (*links, inside):
            link.unlink()


def test_malformed_and_oversized_batches_are_refused(hub):
    for body in (b"not json", b"[1]", b'{"keys": "zarr.json"}', b'{"keys": []}',
                 b'{"keys": [1, 2]}', b'{"nokeys": ["zarr.json"]}'):  # fmt: skip
        _refused(_batch(hub, None, body=body), 400, "InvalidRequestError")
    too_many = ["zarr.json"] * (gate_batch.MAX_KEYS + 1)
    _refused(_batch(hub, too_many), 413, "BatchTooLargeError", words=str(gate_batch.MAX_KEYS))
    # Bytes: two sparse files that each fit but together exceed one answer.
    store = hub.home.stores / "trial-a" / "v1.zarr"
    big = [store / "big" / "a", store / "big" / "b"]
    big[0].parent.mkdir()
    for path in big:
        with open(path, "wb") as fh:
            fh.truncate(gate_batch.MAX_BYTES // 2 + 1)
    try:
        r = _batch(hub, ["big/a", "big/b"])
        _refused(r, 413, "BatchTooLargeError", words=str(gate_batch.MAX_BYTES))
        assert len(r.content) < 1000
        # GateStore halves such a batch and still reads both keys.
        from insitu.kernels.gate_store import GateStore

        store_ = GateStore("trial-a", "v1", url=hub.service_url("gate"), token=hub.token("ada"))
        values = asyncio.run(_get_all(store_, ["big/a", "big/b"]))
        assert [len(v) for v in values] == [gate_batch.MAX_BYTES // 2 + 1] * 2
    finally:
        for path in big:
            path.unlink()
        big[0].parent.rmdir()


async def _get_all(store, keys):
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()
    found = await asyncio.gather(*(store.get(k, proto) for k in keys))
    return [None if b is None else b.to_bytes() for b in found]


def test_gatestore_batches_concurrent_gets_and_answers_as_localstore(hub, monkeypatch):
    import zarr

    from insitu.kernels import gate_store
    from insitu.kernels.gate_store import GateStore

    sizes = []
    fetch = GateStore._get_many_sync

    def spy(self, keys, deliver):
        sizes.append(len(keys))
        return fetch(self, keys, deliver)

    monkeypatch.setattr(GateStore, "_get_many_sync", spy)
    store = GateStore("trial-a", url=hub.service_url("gate"), token=hub.token("ada"))
    keys = [*_store_keys(hub), "series/s9/zarr.json"]
    got = asyncio.run(_get_all(store, keys))
    assert got == [(hub.home.stores / "trial-a/v1.zarr" / k).read_bytes() for k in keys[:-1]] + [
        None
    ]
    assert len(sizes) < len(keys) and max(sizes) <= gate_store.BATCH_KEYS
    local = zarr.storage.LocalStore(hub.home.stores / "trial-a" / "v1.zarr", read_only=True)
    for sid in ("s1", "s2"):
        np.testing.assert_array_equal(
            zarr.open_array(store, path=f"series/{sid}/0", mode="r")[...],
            zarr.open_array(local, path=f"series/{sid}/0", mode="r")[...],
        )


def test_a_refusal_reaches_every_get_of_the_batch(hub):
    from insitu.errors import AccessDeniedError
    from insitu.kernels.gate_store import GateStore

    store = GateStore("trial-a", url=hub.service_url("gate"), token=hub.token("bob"))
    with pytest.raises(AccessDeniedError, match="request_access"):
        asyncio.run(_get_all(store, _store_keys(hub)))


def test_every_key_of_a_batch_lands_in_the_read_ledger(hub):
    keys = [k for k in _store_keys(hub) if k.startswith("series/s2/0/c/")]
    asked = [*keys, "series/s2/0/c/9/9/9"]
    r = _batch(hub, asked, user="root_admin")
    assert r.status_code == 200
    total = sum(len(v) for v in _frames(r, asked).values() if v is not None)
    log = AuditLog(hub.home)

    def s2_reads():
        return [e for e in log.query(kind="read", user="root_admin")
                if e["kind"] == "read" and e["details"].get("series") == "s2"]  # fmt: skip

    deadline = time.monotonic() + 30
    while sum(e["details"]["bytes"] for e in s2_reads()) < total and time.monotonic() < deadline:
        time.sleep(0.2)  # the gate flushes its ledger every 0.3 s in tests
    entries = s2_reads()
    assert sum(e["details"]["bytes"] for e in entries) == total
    assert sum(e["details"]["requests"] for e in entries) == len(keys)  # the missing one: none
    assert {(e["details"]["via"], e["details"]["version"]) for e in entries} == {("gate", "v1")}
    # Refused batches are audited as refusals.
    _batch(hub, keys, user="bob")
    deadline = time.monotonic() + 30
    while not log.query(kind="read.denied", user="bob") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert log.query(kind="read.denied", user="bob")
    log.verify()


def test_a_retired_version_refuses_the_next_batch(hub):
    from fixtures_hub import publish_tiny_store

    from insitu.errors import VersionRetiredError
    from insitu.hub import access
    from insitu.hub.retire import retire
    from insitu.kernels.gate_store import GateStore

    for version in ("v1", "v2"):
        publish_tiny_store(hub.home, "trial-r", version=version, seed=int(version[1]))
    filed = access.request(hub.home, "ada", "trial-r", "batch reads", "tests", 30)
    access.approve(hub.home, "sam", filed.id, "ok")
    store = GateStore("trial-r", "v1", url=hub.service_url("gate"), token=hub.token("ada"))
    assert asyncio.run(_get_all(store, ["zarr.json"]))[0]
    assert _batch(hub, ["zarr.json"], dataset="trial-r").status_code == 200  # cached now
    why = "withdrawn: re-read"
    retire(hub.home, actor="sam", dataset="trial-r", version="v1", reason=why, only_copy=True)
    _refused(_batch(hub, ["zarr.json"], dataset="trial-r"), 410, "VersionRetiredError", words=why)
    with pytest.raises(VersionRetiredError, match=why):
        asyncio.run(_get_all(store, ["zarr.json", "series/zarr.json"]))
