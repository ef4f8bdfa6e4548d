"""A command run as root against a state.dir that belongs to the poller's user is refused.

Whatever such a run creates — the lock, the SQLite ledger and its journal, temporary files,
archive day folders — would be root's, and every later run as the service user would fail on
it (`Permission denied`, `attempt to write a readonly database`). The message gives the exact
command to run instead.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sys
from pathlib import Path

from poller.errors import ConfigError


def refuse_root_on_foreign_state(state_dir: str, argv: list[str] | None = None,
                                 label: str = "state.dir") -> None:
    """Raise ConfigError when root runs against a state.dir (or the folder `label` names)
    another user owns."""
    if os.geteuid() != 0:
        return
    try:
        owner = Path(state_dir).stat().st_uid
    except OSError:
        return  # not made yet: the install section makes it for the poller's user first
    if owner == 0:
        return
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = f"#{owner}"
    raise ConfigError(
        f"running as root, but {label} {state_dir} belongs to {name}: what this run wrote "
        f"would be root's and stop {name}'s runs; run it as {name}: "
        f"{runuser_line(name, argv if argv is not None else sys.argv)}")


def runuser_line(user: str, argv: list[str]) -> str:
    """`runuser -u USER -- poller ARGS…`: the program by its name when PATH finds the same one,
    else by the path it was started by."""
    return shlex.join(["runuser", "-u", user, "--", invoked_as(argv), *argv[1:]])


def invoked_as(argv: list[str]) -> str:
    """How to start this program again: its name when PATH finds the same file, else the path
    it was started by (a virtual environment's `.venv/bin/poller`)."""
    program = argv[0] if argv else "poller"
    name = os.path.basename(program)
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(shutil.which(program) or program):
        return name
    return program
