"""Confine this process and its children with Linux Landlock (no privileges needed).

The sandbox an approved app runs in (:mod:`insitu.federation.sandbox`) calls
:func:`restrict` before the task arrives. Where the node can give the app an
account of its own (root), the account already keeps it out of the node home;
where it cannot (a node not run as root, every SuperNode pod of the chart), the
app shares the node's account, and Landlock is what keeps it out: afterwards
the process can

- read and execute only below the given read-only paths (the Python
  installation and insitu's own packages), read and write only below its own
  working folder, and open nothing else: not the node home, the stores, the
  SuperExec secret or another account's files (Landlock holds for root too);
- open no TCP connection and bind no TCP port (ABI 4, Linux 6.7);
- send no signal to, and reach no abstract Unix socket of, a process outside
  its domain (ABI 6, Linux 6.12); ptrace and ``/proc/<pid>/mem`` of processes
  outside it are refused by every ABI.

Restrictions only ever tighten and pass to every child; there is no way back.
The syscall numbers are the same on every architecture (444-446).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Confinement", "abi_version", "restrict"]

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # ABI 2 REFER, 3 TRUNCATE, 5 IOCTL_DEV
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | (1 << 14) | (1 << 15)  # valid on a file
_NET_BIND_TCP, _NET_CONNECT_TCP = 1, 2
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1, 2


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


@dataclass(frozen=True)
class Confinement:
    """What :func:`restrict` put in place (for the audit's isolation entry)."""

    abi: int
    files: bool
    tcp: bool
    signals: bool

    def describe(self) -> str:
        if not self.files:
            return "not confined (no Landlock in this kernel)"
        parts = ["files: only the Python installation (read) and its own folder"]
        parts.append("no TCP" if self.tcp else "TCP not covered (Landlock ABI < 4)")
        parts.append(
            "no signals or abstract sockets outside" if self.signals else "signals not covered"
        )
        return f"Landlock ABI {self.abi}: " + ", ".join(parts)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI, 0 where there is none (or it is switched off)."""
    version = _libc().syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def _fs_rights(abi: int) -> int:
    return (1 << _FS_BITS_BY_ABI.get(abi, 16)) - 1


def _add_path(libc: ctypes.CDLL, ruleset: int, path: Path, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # a path this system does not have
    try:
        if not path.is_dir():
            access &= _FILE_ONLY
        rule = _PathBeneathAttr(allowed_access=access, parent_fd=fd)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"landlock_add_rule({path}): {os.strerror(error)}")
    finally:
        os.close(fd)


def restrict(read_only: Iterable[Path], read_write: Iterable[Path]) -> Confinement:
    """Confine this process (and all it starts) to these paths, no TCP, no signals out.

    Returns what held; with no Landlock in the kernel nothing changes and
    ``files`` is False (the caller decides whether that is acceptable).
    """
    abi = abi_version()
    if abi < 1:
        return Confinement(0, files=False, tcp=False, signals=False)
    libc = _libc()
    fs = _fs_rights(abi)
    attr = _RulesetAttr(handled_access_fs=fs)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if ruleset < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"landlock_create_ruleset: {os.strerror(error)}")
    try:
        for path in read_only:
            _add_path(libc, ruleset, Path(path), EXECUTE | READ_FILE | READ_DIR)
        for path in read_write:
            _add_path(libc, ruleset, Path(path), fs)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(error)}")
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"landlock_restrict_self: {os.strerror(error)}")
    finally:
        os.close(ruleset)
    return Confinement(abi, files=True, tcp=abi >= 4, signals=abi >= 6)
