"""PyTorch .pt files, read without unpickling.

A torch file is a zip archive of one pickle (``data.pkl``) and raw storages
(``data/<key>``). The pickle's opcodes are read (``pickletools.genops``, which
runs nothing) by a small stack machine that knows only tensors in plain
containers: any other global, or any opcode beyond containers and scalars,
fails. Every storage must be used by a tensor, exactly as large as declared,
and every element of it inside some tensor; the tensors then go through the
grid rules and every key and metadata string through the text rules.
"""

from __future__ import annotations

import pickletools
from dataclasses import dataclass
from typing import Any

import numpy as np

from insitu.disclosure._types import Verdict
from insitu.disclosure.arrays import scan_array
from insitu.disclosure.formats.zipfile import read_members
from insitu.disclosure.scan import Scan, join
from insitu.disclosure.text import scan_text

__all__ = ["scan_torch"]

_STORAGES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "<u2",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}  # fmt: skip
_CALLS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
}
_SMALL_MEMBERS = {"version", ".format_version", ".storage_alignment", "byteorder", ".data/version"}
_MARK = object()


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


class _Unsafe(Exception):
    pass


def _pop_mark(stack: list[Any]) -> list[Any]:
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    raise _Unsafe("a MARK is missing")


def _reduce(func: Any, args: Any) -> Any:
    if not isinstance(func, _Global) or (func.module, func.name) not in _CALLS:
        raise _Unsafe(f"calls {func}")
    if func.name == "OrderedDict":
        return {}
    if func.name == "_rebuild_parameter":
        return args[0]
    storage, offset, size, stride = args[:4]
    if not isinstance(storage, _Storage):
        raise _Unsafe("a tensor without a storage")
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


def _persistent(pid: Any) -> _Storage:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
        raise _Unsafe(f"an unknown persistent id {pid!r}")
    kind = pid[1]
    if not isinstance(kind, _Global) or kind.module != "torch" or kind.name not in _STORAGES:
        raise _Unsafe(f"an unknown storage type {kind}")
    return _Storage(str(pid[2]), _STORAGES[kind.name], int(pid[4]))


def _unpickle(data: bytes) -> Any:
    """The pickle's object, built from its opcodes for an allow-list of types only."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, raw, _pos in pickletools.genops(data):
        name = op.name
        arg: Any = raw
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            return stack.pop()
        if name == "MARK":
            stack.append(_MARK)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            stack.append(_Global(module, attr))
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[int(arg)])
        elif name in ("BININT", "BININT1", "BININT2", "LONG1", "LONG4", "INT", "LONG"):
            stack.append(int(arg))
        elif name in ("BINFLOAT", "FLOAT"):
            stack.append(float(arg))
        elif name in ("BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE"):
            stack.append(str(arg))
        elif name == "NONE":
            stack.append(None)
        elif name in ("NEWTRUE", "NEWFALSE"):
            stack.append(name == "NEWTRUE")
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            values = tuple(stack[-n:])
            del stack[-n:]
            stack.append(values)
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "LIST":
            stack.append(_pop_mark(stack))
        elif name == "APPEND":
            item = stack.pop()
            stack[-1].append(item)
        elif name == "APPENDS":
            items = _pop_mark(stack)
            stack[-1].extend(items)
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "DICT":
            items = _pop_mark(stack)
            stack.append(dict(zip(items[::2], items[1::2], strict=True)))
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            stack[-1][key] = value
        elif name == "SETITEMS":
            items = _pop_mark(stack)
            stack[-1].update(zip(items[::2], items[1::2], strict=True))
        elif name == "REDUCE":
            args, func = stack.pop(), stack.pop()
            stack.append(_reduce(func, args))
        elif name == "BUILD":
            state = stack.pop()
            target = stack[-1]
            if not isinstance(target, dict) or not isinstance(state, dict):
                raise _Unsafe("sets the state of an object")
            target.setdefault("\0state", {}).update(state)
        elif name == "BINPERSID":
            stack.append(_persistent(stack.pop()))
        else:
            raise _Unsafe(f"the opcode {name}")
    raise _Unsafe("no STOP opcode")


def _walk(node: Any, path: str, texts: list[str], tensors: list[tuple[str, _Tensor]]) -> None:
    if isinstance(node, _Tensor):
        tensors.append((path, node))
    elif isinstance(node, dict):
        for key, value in node.items():
            texts.append(str(key))
            _walk(value, join(path, str(key)) if key != "\0state" else path, texts, tensors)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            _walk(value, f"{path}[{i}]", texts, tensors)
    elif isinstance(node, str):
        texts.append(node)
    elif isinstance(node, _Storage | _Global):
        raise _Unsafe(f"a bare {type(node).__name__.strip('_').lower()}")


def _extent(tensor: _Tensor) -> int:
    if any(s == 0 for s in tensor.size):
        return tensor.offset
    return (
        tensor.offset
        + sum((s - 1) * st for s, st in zip(tensor.size, tensor.stride, strict=True))
        + 1
    )


def scan_torch(scan: Scan, data: bytes, where: str) -> None:
    place = where or "pt"
    members: dict[str, bytes] = {}

    def member(name: str, content: bytes, at: str) -> None:
        members[name] = content

    read_members(scan, data, place, member)
    roots = {name.split("/", 1)[0] for name in members}
    pickles = [n for n in members if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(roots) != 1 or len(pickles) != 1:
        raise scan.stop("malformed", "not a torch.save archive (one folder with data.pkl)", place)
    root = roots.pop()
    try:
        obj = _unpickle(members.pop(pickles[0]))
        texts: list[str] = []
        tensors: list[tuple[str, _Tensor]] = []
        _walk(obj, "", texts, tensors)
    except _Unsafe as exc:
        raise scan.stop(
            "unsafe-code",
            f"the pickle {exc}: only tensors in plain containers are released (save a "
            "state_dict, or use .safetensors)",
            join(place, "data.pkl"),
        ) from None
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise scan.stop(
            "malformed", f"an unreadable pickle ({exc})", join(place, "data.pkl")
        ) from None
    scan.ok("unsafe-code", "plain tensors only; nothing was unpickled")
    _storages(scan, root, members, tensors, place)
    scan_text(scan, "\n".join(texts), join(place, "keys"), grids=False)


def _storages(
    scan: Scan, root: str, members: dict[str, bytes], tensors: list[tuple[str, _Tensor]], place: str
) -> None:
    used: dict[str, list[_Tensor]] = {}
    for _name, tensor in tensors:
        used.setdefault(tensor.storage.key, []).append(tensor)
    for name, content in members.items():
        inner = name[len(root) + 1 :]
        at = join(place, inner)
        if inner in _SMALL_MEMBERS or inner == ".data/serialization_id":
            if len(content) > 64:
                scan.add("hidden-data", Verdict.FAIL, f"a {len(content)}-byte {inner}", at)
            elif inner == "byteorder" and content.strip() != b"little":
                raise scan.stop("not-understood", "a big-endian torch file", at)
            continue
        key = inner.removeprefix("data/")
        if not inner.startswith("data/") or key not in used:
            scan.add("hidden-data", Verdict.FAIL, "a member that holds no tensor's data", at)
            continue
        storage = used[key][0].storage
        dtype = np.dtype(storage.dtype)
        if len(content) != storage.numel * dtype.itemsize:
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"{len(content)} bytes where the storage declares {storage.numel} values",
                at,
            )
            continue
        reach = max(_extent(t) for t in used[key])
        if reach < storage.numel:
            scan.add(
                "hidden-data",
                Verdict.FAIL,
                f"{storage.numel - reach} values of the storage belong to no tensor",
                at,
            )
    for name, tensor in tensors:
        stored = members.get(f"{root}/data/{tensor.storage.key}")
        if stored is None:
            raise scan.stop("malformed", f"tensor {name!r} has no storage", place)
        values = np.frombuffer(stored, dtype=tensor.storage.dtype)
        if _extent(tensor) > values.size or min(tensor.stride, default=0) < 0:
            raise scan.stop("malformed", f"tensor {name!r} reaches outside its storage", place)
        array = np.lib.stride_tricks.as_strided(
            values[tensor.offset :],
            shape=tensor.size,
            strides=tuple(s * values.itemsize for s in tensor.stride),
            writeable=False,
        )
        scan_array(scan, np.array(array), join(place, name))
