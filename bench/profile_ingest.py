"""Where the CPU of one ``insitu ingest`` goes: CPU seconds per stage and per thread.

Runs the real CLI (``insitu ingest DICOM --dataset bench``) in this process
with light timers wrapped around the ingest's stages (``time.thread_time``
deltas, so each figure is the CPU of the thread that ran the stage, user and
system alike). No sampling profiler: the timers cost ~a microsecond a call,
so the figures add up to the process's own ``getrusage`` total. Imports are
every import done by the ingest (pydicom, zarr, ...) except the interpreter's own
start-up, reported apart. Threads are listed with their CPU from /proc.

Run: ``.venv/bin/python bench/profile_ingest.py [DICOM_FOLDER]`` (without a
folder the bench input of bench_ingest.py is built in a temporary folder:
``BENCH_SERIES`` x ``BENCH_SLICES``). Not a test; results go to BENCHMARKS.md.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import importlib
import inspect
import io
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

_T0 = time.perf_counter()  # wall time from here (the stdlib imports above are ~ms)
CPU: defaultdict[str, float] = defaultdict(float)  # stage -> CPU seconds (its thread's)
CALLS: defaultdict[str, int] = defaultdict(int)
THREADS: defaultdict[str, float] = defaultdict(float)  # thread role -> CPU seconds
_LOCK = threading.Lock()
_ACTIVE = threading.local()  # stages open in this thread: nested stages count only once

# (module, attribute, stage): wrapped where the ingest looks them up
STAGES = [
    ("insitu.datasets.dicom_read", "_read_input", "scan: read (main thread)"),
    ("insitu.datasets.dicom_read", "_sha256_hex", "scan: sha256 (hash thread)"),
    ("insitu.datasets.dicom_read", "_read_hashed", "scan: read + sha256 (reader thread)"),
    ("insitu.datasets.dicom_read", "_classify", "scan: header parse + pixel checks"),
    ("insitu.datasets.duplicates", "resolve_duplicates", "duplicates"),
    ("insitu.datasets.ingest", "plan_geometry", "series: geometry"),
    ("insitu.datasets.ingest", "read_full", "series: read again, attach pixels"),
    ("insitu.datasets.deid.Deidentifier", "apply", "series: de-identify kept header"),
    ("insitu.datasets.deid", "burned_in_reason", "series: refusal checks"),
    ("insitu.datasets.deid.Deidentifier", "pseudonym", "series: refusal checks"),
    ("insitu.datasets.ingest", "decode_volume", "series: decode"),
    ("insitu.datasets.ingest", "_read_native", "series: read + decode (uncompressed, direct)"),
    ("insitu.datasets.deface_ingest", "deface_series", "series: deface decision"),
    ("insitu.datasets.ingest", "_header_json", "series: header JSON"),
    ("insitu.datasets.store_write", "_downsample_block", "write: 2x2 means (levels, fingerprint)"),
    ("insitu.datasets.ingest", "_volume_fingerprint", "write: pixel fingerprint, rest"),
    ("insitu.datasets.store_write", "_encode", "write: Blosc encode"),
    ("insitu.datasets.store_write", "_write_chunk", "write: chunks (cut, test, file, sha256)"),
    ("insitu.datasets.store_write", "write_chunks", "write: chunk folders, thread start"),
    ("insitu.datasets.store_write", "write_series", "write: zarr metadata, rest"),
    ("insitu.datasets.store_write", "_file_sha256", "publish: checksums"),
    ("insitu.datasets.publish", "checksum_tree", "publish: checksums"),
    ("insitu.datasets.publish", "record_store", "publish: pixel fingerprint (index)"),
    ("insitu.datasets.publish", "publish", "publish: catalog, rename, freeze"),
    ("insitu.datasets.derived", "attach_derived", "attach derived"),
    ("insitu.datasets.ingest", "_audit", "audit"),
    ("insitu.datasets.ingest", "_inside_home", "inputs: walk, inside-home check"),
    ("insitu.datasets.ingest", "walk_inputs", "inputs: walk, inside-home check"),
    ("insitu.datasets.ingest", "_refuse_incomplete_series", "grouping, series checks"),
    ("insitu.datasets.ingest", "group_series", "grouping, series checks"),
    ("insitu.datasets.ingest", "_split_unstackable", "grouping, series checks"),
    ("insitu.datasets.deid.Deidentifier", "subject_key", "series: refusal checks"),
    ("insitu.datasets.ingest", "_build_series", "series: rest of the build"),
    ("insitu.datasets.ingest", "_ingest_locked", "ingest: rest (fates, markers, catalog)"),
    ("insitu.datasets.ingest", "ingest", "ingest: config, lock, recover"),
]


def _timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        active: list[float] = getattr(_ACTIVE, "stack", [])
        _ACTIVE.stack = active
        start = time.thread_time()
        active.append(0.0)  # CPU of stages nested in this one, subtracted from it
        try:
            return fn(*args, **kwargs)
        finally:
            took = time.thread_time() - start
            inner = active.pop()
            if active:
                active[-1] += took
            with _LOCK:
                CPU[stage] += took - inner
                CALLS[stage] += 1

    return wrapper


def _install() -> None:
    """Wrap each stage's function in its module and wherever it was imported by name."""
    for module_name, attr, stage in STAGES:
        owner: Any
        if module_name.endswith(".Deidentifier"):
            owner = importlib.import_module(module_name.rsplit(".", 1)[0]).Deidentifier
        else:
            owner = importlib.import_module(module_name)
        original = getattr(owner, attr, None)
        if original is None:  # an older tree without this function (before/after runs)
            continue
        wrapped = _timed(stage, original)
        if isinstance(inspect.getattr_static(owner, attr), staticmethod):
            setattr(owner, attr, staticmethod(wrapped))
        else:
            setattr(owner, attr, wrapped)
        for module in list(sys.modules.values()):
            name = getattr(module, "__name__", "")
            if name.startswith("insitu") and getattr(module, attr, None) is original:
                setattr(module, attr, wrapped)
    _time_imports()
    _time_threads()
    _time_gc()


def _time_gc() -> None:
    """Python's cyclic garbage collector: pydicom makes many small objects."""
    import gc

    started: dict[int, float] = {}

    def callback(phase: str, info: dict[str, int]) -> None:
        key = threading.get_ident()
        if phase == "start":
            started[key] = time.thread_time()
        elif key in started:
            took = time.thread_time() - started.pop(key)
            with _LOCK:
                CPU[f"garbage collection (gen {info['generation']})"] += took
                CALLS[f"garbage collection (gen {info['generation']})"] += 1
                stack = getattr(_ACTIVE, "stack", [])
                if stack:
                    stack[-1] += took

    gc.callbacks.append(callback)


def _time_imports() -> None:
    """Every import done during the run, counted once (outermost import only)."""
    original = builtins.__import__

    timed = _timed("imports during the run", original)

    def timed_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name in sys.modules and not (args[2:3] and args[2]):  # already loaded, no fromlist
            return original(name, *args, **kwargs)
        return timed(name, *args, **kwargs)

    builtins.__import__ = timed_import


def _role(thread: threading.Thread) -> str:
    target = getattr(thread, "_target", None)
    if thread.name.startswith("ThreadPoolExecutor"):
        return "insitu's pool threads (reader, writer, Blosc, pyramid)"
    return f"thread {thread.name.split('-')[0]} ({getattr(target, '__qualname__', '?')})"


def _time_threads() -> None:
    run = threading.Thread.run

    def timed_run(self: threading.Thread) -> None:
        start = time.thread_time()
        try:
            run(self)
        finally:
            with _LOCK:
                THREADS[_role(self)] += time.thread_time() - start

    threading.Thread.run = timed_run  # type: ignore[method-assign]


def _bench_input(work: Path) -> Path:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_ingest import build_input

    series = int(os.environ.get("BENCH_SERIES", "4"))
    slices = int(os.environ.get("BENCH_SLICES", "150"))
    build_input(work / "dicom", series, slices)
    return work / "dicom"


def _report(wall: float, start_cpu: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    print(f"wall {wall:.2f} s; CPU {total:.2f} s (user {usage.ru_utime:.2f}, system "
          f"{usage.ru_stime:.2f})")  # fmt: skip
    print("\n| stage | CPU s | calls |\n| --- | --- | --- |")
    print(f"| start-up: interpreter, `insitu.cli` | {start_cpu:.2f} | |")
    for stage, cpu in sorted(CPU.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {cpu:.2f} | {CALLS[stage]} |")
    counted = start_cpu + sum(CPU.values())
    print(f"| not in a named stage (CLI, catalog, glue) | {total - counted:.2f} | |")
    print(f"| **total (getrusage)** | **{total:.2f}** | |")
    print("\n| thread | CPU s |\n| --- | --- |")
    threads = dict(THREADS)  # threads that ended; those still alive from /proc
    for role, cpu in _live_threads().items():
        threads[role] = threads.get(role, 0.0) + cpu
    for role, cpu in sorted(threads.items(), key=lambda kv: -kv[1]):
        print(f"| {role} | {cpu:.2f} |")


def _live_threads() -> dict[str, float]:
    """CPU seconds of every thread still alive, by role (Linux /proc; C threads too)."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t for t in threading.enumerate()}
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        thread = names.get(int(task.name))
        if thread is threading.main_thread():
            role = "main thread"
        elif thread is not None:
            role = f"{_role(thread)} (alive at the end)"
        else:
            role = "threads started in C (OpenBLAS, Blosc, ...)"
        out[role] = out.get(role, 0.0) + cpu
    return out


def _child(dicom: str) -> None:
    """The measured process: what `insitu ingest` runs, with the stage timers."""
    from insitu.cli import main as cli

    start_cpu = time.process_time()
    _install()  # imports the ingest's modules (pydicom, zarr, ...): counted as imports
    CPU["imports during the run"] += time.process_time() - start_cpu
    CALLS["imports during the run"] += 1
    with contextlib.redirect_stdout(io.StringIO()) as said:
        code = cli(["ingest", dicom, "--dataset", "bench"])
    print(said.getvalue().splitlines()[0][:200])
    if code not in (0,):
        raise SystemExit(f"insitu ingest exited {code}")
    _report(time.perf_counter() - _T0, start_cpu)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2])
        return
    work = Path(tempfile.mkdtemp(prefix="insitu-profile-ingest-"))
    try:
        dicom = _bench_input(work)
        for f in dicom.rglob("*"):  # page cache warm, as in bench_ingest
            if f.is_file():
                f.read_bytes()
        env = {**os.environ, "INSITU_HOME": str(work / "home")}
        insitu = Path(sys.executable).parent / "insitu"
        subprocess.run([str(insitu), "init", "--site", "bench"], env=env, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        child = [sys.executable, __file__, "--child", str(dicom)]
        subprocess.run(child, env=env, check=True, stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
