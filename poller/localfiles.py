"""The poller's own files (state.dir, its tmp/, the archive, the directory's copy): what a
failure to write them means, and the user it is written as.

A folder of ours that refuses writes — a root run left it root's (EACCES), it was remounted
read-only (EROFS), its disk or quota is full (ENOSPC, EDQUOT) — is a local outage: nobody's
call's fault (design §4), said with the place and the user so it can be fixed.
"""

from __future__ import annotations

import errno
import os
import pwd

# a folder that takes no writes at all: every call would fail alike
REFUSING = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


def refuses_writes(exc: OSError) -> bool:
    """Whether an error writing a file of ours means the place takes no writes."""
    return exc.errno in REFUSING


def user() -> str:
    """`user poller` (or `uid 998` without a name): who the files are written as."""
    try:
        return f"user {pwd.getpwuid(os.geteuid()).pw_name}"
    except KeyError:
        return f"uid {os.geteuid()}"


def reason(exc: OSError) -> str:
    """An OSError as an administrator reads it: `permission denied (as user poller)`."""
    text = (exc.strerror or str(exc)).lower()
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"{text} (as {user()})"
    return text
