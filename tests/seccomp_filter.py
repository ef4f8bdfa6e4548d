"""The seccomp filters systemd makes of a unit's SystemCallFilter=@system-service,
MemoryDenyWriteExecute=yes and RestrictAddressFamilies=, made here with libseccomp (through
ctypes) for a child process, so tests can run the real work under them on a machine where
systemd is not PID 1.

    subprocess.run([...], preexec_fn=SystemdLikeFilter.load_in_child(names))
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import shutil
import socket
import subprocess
from collections.abc import Callable

ALLOW = 0x7FFF0000
PROT_WRITE, PROT_EXEC = 0x2, 0x4
CMP_EQ, CMP_MASKED_EQ = 4, 7


def errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def syscall_set(group: str = "@system-service") -> set[str]:
    """The system calls of a group, groups within it expanded, as systemd-analyze lists them."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        raise RuntimeError("systemd-analyze is not installed")
    names: set[str] = set()
    todo, seen = [group], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        out = subprocess.run([analyze, "syscall-filter", current], capture_output=True,
                             text=True, check=True, timeout=60).stdout
        for line in out.splitlines()[1:]:
            word = line.strip()
            if not word or word.startswith("#"):
                continue
            if word.startswith("@"):
                todo.append(word)
            else:
                names.add(word)
    return names


def loader(allowed: set[str]) -> Callable[[], None]:
    """A preexec_fn loading the filter in the child: the listed calls allowed, except mmap
    and mprotect asking for memory both writable and executable (MemoryDenyWriteExecute), and
    socket() of a family other than AF_UNIX, AF_INET and AF_INET6; the rest fail EPERM."""
    path = ctypes.util.find_library("seccomp")
    if path is None:
        raise RuntimeError("libseccomp is not installed")
    lib = ctypes.CDLL(path)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in allowed}
    conditional = {"mmap", "mprotect", "pkey_mprotect", "socket"}

    def rule(ctx: int, name: str, *compare: ArgCmp) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        array = (ArgCmp * len(compare))(*compare) if compare else None
        lib.seccomp_rule_add_array(ctx, ALLOW, number, len(compare), array)

    def load() -> None:
        ctx = lib.seccomp_init(errno_action(errno.EPERM))
        for name, number in numbers.items():
            if number >= 0 and name not in conditional:
                lib.seccomp_rule_add_array(ctx, ALLOW, number, 0, None)
        both = PROT_WRITE | PROT_EXEC
        for allowed_prot in (0, PROT_WRITE, PROT_EXEC):
            rule(ctx, "mmap", ArgCmp(2, CMP_MASKED_EQ, both, allowed_prot))
        for name in ("mprotect", "pkey_mprotect"):
            rule(ctx, name, ArgCmp(2, CMP_MASKED_EQ, PROT_EXEC, 0))
        for family in (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6):
            rule(ctx, "socket", ArgCmp(0, CMP_EQ, int(family), 0))
        if lib.seccomp_load(ctx) != 0:
            raise OSError("seccomp_load failed")

    return load
