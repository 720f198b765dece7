"""GateStore against zarr's own store conformance tests (zarr.testing.store.StoreTests),
reading through a real gate on 127.0.0.1 behind a real hub.

A GateStore is read-only: the node publishes, researchers read. So the suite's
backdoor (``set``/``get``, "bypassing the store") writes the published store's
files on the node, as ingest would, and the gate serves them; zarr's tests that
fill the store through its own write methods run unchanged with those methods
pointed at the backdoor; every test that writes through the store is replaced
by the refusal it must meet (zarr's own read-only tests expect that ValueError).
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest
from zarr.abc.store import SupportsDeleteSync, SupportsGetSync, SupportsSetSync
from zarr.core.buffer import Buffer, default_buffer_prototype
from zarr.core.buffer.cpu import Buffer as CpuBuffer
from zarr.core.sync import sync
from zarr.testing.store import StoreTests

from insitu.kernels.gate_store import GateStore

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

READ_ONLY = "store was opened in read-only mode and does not support writing"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def gate(running_hub) -> dict[str, Any]:
    """ada approved for trial-a; the gate's own loopback address (what user servers get)."""
    from insitu.hub import access

    home = running_hub.home
    filed = access.request(home, "ada", "trial-a", "zarr conformance", "tests", 30)
    access.approve(home, "sam", filed.id, "ok")
    return {
        "url": running_hub.service_url("gate"),
        "token": running_hub.token("ada"),
        "root": home.stores / "trial-a" / "v1.zarr",
    }


def _write(root: Path, key: str, value: Buffer) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value.to_bytes())


class TestGateStore(StoreTests[GateStore, CpuBuffer]):
    store_cls = GateStore
    buffer_cls = CpuBuffer
    root: Path

    @pytest.fixture
    def store_kwargs(self, gate: dict[str, Any]) -> dict[str, Any]:
        root = gate["root"]
        for child in root.iterdir():  # every test starts from an empty published store
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        type(self).root = root
        return {"dataset": "trial-a", "version": "v1", "url": gate["url"], "token": gate["token"]}

    # Plain fixtures (zarr's are async, which only its own pytest-asyncio set-up serves
    # to its sync tests): opening a GateStore asks the gate once, in zarr's own loop.
    @pytest.fixture
    def store(self, open_kwargs: dict[str, Any]) -> GateStore:
        return sync(self.store_cls.open(**open_kwargs))

    @pytest.fixture
    def store_not_open(self, store_kwargs: dict[str, Any]) -> GateStore:
        return self.store_cls(**store_kwargs)

    # --- the backdoor: the node's files -----------------------------------------

    async def set(self, store: GateStore, key: str, value: Buffer) -> None:
        _write(self.root, key, value)

    async def get(self, store: GateStore, key: str) -> Buffer:
        return self.buffer_cls.from_bytes((self.root / key).read_bytes())

    async def _set_many(self, store: GateStore, values: Any) -> None:
        for key, value in values:
            await self.set(store, key, value)

    def _fill_through_backdoor(self, store: GateStore, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(store, "_set_many", lambda values: self._set_many(store, values))

    # --- what the store declares --------------------------------------------------

    def test_store_repr(self, store: GateStore) -> None:
        assert repr(store) == f"GateStore('trial-a', 'v1', url={store.url!r})"

    def test_store_supports_writes(self, store: GateStore) -> None:
        assert not store.supports_writes

    def test_store_supports_listing(self, store: GateStore) -> None:
        assert store.supports_listing

    def test_store_read_only(self, store: GateStore) -> None:
        assert store.read_only
        with pytest.raises(AttributeError):
            store.read_only = False  # type: ignore[misc]

    @pytest.mark.parametrize("read_only", [True, False])
    async def test_store_open_read_only(self, open_kwargs: dict[str, Any], read_only: bool) -> None:
        if read_only:
            store = await self.store_cls.open(**open_kwargs, read_only=True)
            assert store._is_open and store.read_only
        else:
            with pytest.raises(ValueError, match="read-only"):
                await self.store_cls.open(**open_kwargs, read_only=False)

    async def test_with_read_only_store(self, open_kwargs: dict[str, Any]) -> None:
        store = await self.store_cls.open(**open_kwargs, read_only=True)
        with pytest.raises(ValueError, match="never changed remotely"):
            store.with_read_only(read_only=False)
        assert store.with_read_only(read_only=True) is store
        for write in (
            lambda: store.set("foo", CpuBuffer.from_bytes(b"bar")),
            lambda: store.delete("foo"),
        ):
            with pytest.raises(ValueError, match=READ_ONLY):
                await write()

    async def test_serializable_store(self, store: GateStore) -> None:
        new_store: GateStore = pickle.loads(pickle.dumps(store))  # noqa: S301 (our own bytes)
        assert new_store == store
        assert new_store.read_only == store.read_only
        data = self.buffer_cls.from_bytes(b"\x01\x02\x03\x04")
        await self.set(store, "foo", data)
        observed = await new_store.get("foo", prototype=default_buffer_prototype())
        assert observed is not None and observed.to_bytes() == data.to_bytes()

    # --- zarr's reading tests, filled through the backdoor ------------------------

    async def test_getsize_prefix(self, store: GateStore, monkeypatch) -> None:
        self._fill_through_backdoor(store, monkeypatch)
        await super().test_getsize_prefix(store)

    async def test_exists(self, store: GateStore, monkeypatch) -> None:
        monkeypatch.setattr(store, "set", lambda key, value: self.set(store, key, value))
        await super().test_exists(store)

    async def test_list(self, store: GateStore, monkeypatch) -> None:
        self._fill_through_backdoor(store, monkeypatch)
        await super().test_list(store)

    async def test_list_prefix(self, store: GateStore, monkeypatch) -> None:
        self._fill_through_backdoor(store, monkeypatch)
        await super().test_list_prefix(store)

    async def test_list_empty_path(self, store: GateStore, monkeypatch) -> None:
        self._fill_through_backdoor(store, monkeypatch)
        await super().test_list_empty_path(store)

    async def test_list_dir(self, store: GateStore, monkeypatch) -> None:
        self._fill_through_backdoor(store, monkeypatch)
        await super().test_list_dir(store)

    # --- writing through the store: refused -----------------------------------------

    async def _refused(self, store: GateStore) -> None:
        data = self.buffer_cls.from_bytes(b"\x01")
        for write in (
            lambda: store.set("c/0", data),
            lambda: store._set_many([("c/0", data)]),
            lambda: store.set_if_not_exists("c/0", data),
            lambda: store.delete("c/0"),
        ):
            with pytest.raises(ValueError, match=READ_ONLY):
                await write()
        # zarr refuses these before the read-only check: the store supports no deletes
        for write in (lambda: store.delete_dir("c"), lambda: store.clear()):
            with pytest.raises(NotImplementedError):
                await write()
        assert await store.is_empty("")  # nothing was written

    @pytest.mark.parametrize("key", ["zarr.json", "c/0"])
    async def test_set(self, store: GateStore, key: str) -> None:
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.set(key, self.buffer_cls.from_bytes(b"\x01"))
        assert not await store.exists(key)

    async def test_set_not_open(self, store_not_open: GateStore) -> None:
        await self._refused(store_not_open)

    async def test_set_many(self, store: GateStore) -> None:
        await self._refused(store)

    async def test_set_if_not_exists(self, store: GateStore) -> None:
        await self._refused(store)

    async def test_clear(self, store: GateStore) -> None:
        await self.set(store, "key", self.buffer_cls.from_bytes(b"something"))
        with pytest.raises(NotImplementedError):  # zarr: no deletes, so no clear
            await store.clear()
        assert not await store.is_empty("")

    async def test_delete(self, store: GateStore) -> None:
        assert not store.supports_deletes
        await self.set(store, "foo/zarr.json", self.buffer_cls.from_bytes(b"bar"))
        with pytest.raises(ValueError, match=READ_ONLY):
            await store.delete("foo/zarr.json")
        assert await store.exists("foo/zarr.json")

    async def test_delete_dir(self, store: GateStore) -> None:
        await self._refused(store)

    async def test_delete_nonexistent_key_does_not_raise(self, store: GateStore) -> None:
        await self._refused(store)

    # --- the synchronous protocols: GateStore is async only (zarr skips these) -------

    def test_get_sync(self, store: GateStore) -> None:
        assert not isinstance(store, SupportsGetSync)

    def test_get_sync_missing(self, store: GateStore) -> None:
        assert not isinstance(store, SupportsGetSync)

    def test_set_sync(self, store: GateStore) -> None:
        assert not isinstance(store, SupportsSetSync)

    def test_delete_sync(self, store: GateStore) -> None:
        assert not isinstance(store, SupportsDeleteSync)

    def test_delete_sync_missing(self, store: GateStore) -> None:
        assert not isinstance(store, SupportsDeleteSync)
