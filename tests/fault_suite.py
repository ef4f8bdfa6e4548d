"""The fault suite: a PBX workload delivered over and over while every fault is injected,
then one clean run and an audit. Prints one table; exits 1 when a promise is broken.

    python tests/fault_suite.py            # the short form (as in CI), about a minute
    python tests/fault_suite.py --long     # hundreds of calls and faults, ~ten minutes
    python tests/fault_suite.py --seed 7   # another fixed workload and fault order

Needs the MariaDB server of POLLER_TEST_MYSQL_URL (a database of its own is made and
dropped), mariadbd binaries for a private server, ffmpeg; as root it mounts a small tmpfs and a
read-only bind mount (else it simulates ENOSPC and EROFS and says so).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdrtable import load_table  # noqa: E402
from faults.audit import Result, audit, findings, table  # noqa: E402
from faults.suite import LONG, SHORT, Plan, Suite  # noqa: E402
from support import SAMPLES  # noqa: E402

SEED = 20261126


def run_suite(plan: Plan, seed: int = SEED, keep: bool = False, verbose: bool = False) -> Result:
    """Build, inject, heal, audit; everything made is removed again on every path."""
    started = time.monotonic()
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if verbose else (lambda _: None)
    with Suite(plan, seed, load_table(SAMPLES / "cdr.txt"), keep=keep, say=say) as suite:
        suite.run()
        result = Result(suite.tally, audit(suite), seed)
        if keep:
            print(f"kept: {suite.root}", file=sys.stderr)
    result.seconds = time.monotonic() - started
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--long", action="store_true", help="the long form")
    parser.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="say each round")
    args = parser.parse_args()
    # SIGTERM unwinds like an error: the private server, mounts and folders are cleaned up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # the poller's own log of hundreds of runs would drown the table: problems are in it
    logging.getLogger("poller").setLevel(logging.CRITICAL)
    result = run_suite(LONG if args.long else SHORT, args.seed, args.keep, args.verbose)
    print(table(result))
    broken = findings(result)
    for line in broken:
        print(f"FAIL {line}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
