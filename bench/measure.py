"""Measuring side by side: child processes timed by wait4, interleaved pairs, medians, and the
machine the figures come from."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN = Path(__file__).resolve().parent / "run.py"


@dataclass
class Cost:
    """One measured piece of work."""

    wall: float  # seconds
    cpu: float  # user + system seconds, the process and everything it waited for
    rss_kb: int = 0  # peak resident memory of the process (of its largest child with wait4)
    extra: dict[str, Any] | None = None


def waited(command: list[str], stdout: Any = subprocess.DEVNULL,
           env: dict[str, str] | None = None) -> tuple[Cost, bytes]:
    """Run a command; wall time, and CPU and peak RSS from wait4 (it and its children)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, env=env)
    out = process.stdout.read() if process.stdout is not None else b""
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({process.returncode}): "
                           f"{err.decode(errors='replace')[-1500:]}")
    return Cost(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss), out


def child(case: str, **work: Any) -> Cost:
    """A case of run.py in a fresh interpreter: the figures it measured of its own work."""
    _, out = waited([sys.executable, str(RUN), "--child", case, json.dumps(work, default=str)],
                    stdout=subprocess.PIPE)
    data = json.loads(out.decode().strip().splitlines()[-1])
    return Cost(data.pop("wall"), data.pop("cpu"), data.pop("rss_kb", 0), data)


def timed(work: Callable[[], Any]) -> tuple[Cost, Any]:
    """Wall and CPU of `work` in this process (its children's CPU included)."""
    wall, cpu, kids = time.perf_counter(), time.process_time(), children_cpu()
    result = work()
    return Cost(time.perf_counter() - wall,
                time.process_time() - cpu + children_cpu() - kids, peak_rss_kb()), result


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def peak_rss_kb() -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def rss_kb() -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+)", text)
    return int(match.group(1)) if match else 0


def pairs(ours: Callable[[], Cost], reference: Callable[[], Cost],
          count: int) -> tuple[Cost, Cost]:
    """Both measured `count` times, alternating (which goes first alternates too, so a
    neighbour's load falls on both alike); the median of each figure."""
    mine: list[Cost] = []
    theirs: list[Cost] = []
    for index in range(count):
        if index % 2:
            theirs.append(reference())
            mine.append(ours())
        else:
            mine.append(ours())
            theirs.append(reference())
    return median(mine), median(theirs)


def rotated(works: list[Callable[[], Cost]], count: int) -> list[Cost]:
    """Each measured `count` times in turn, the first of a round moving on each round (a
    neighbour's load falls on all alike); the median of each figure, in the order given."""
    results: list[list[Cost]] = [[] for _ in works]
    for index in range(count):
        for offset in range(len(works)):
            which = (index + offset) % len(works)
            results[which].append(works[which]())
    return [median(costs) for costs in results]


def median(costs: list[Cost]) -> Cost:
    return Cost(statistics.median(c.wall for c in costs), statistics.median(c.cpu for c in costs),
                int(statistics.median(c.rss_kb for c in costs)), costs[len(costs) // 2].extra)


def machine(client: list[str]) -> str:
    """CPU, kernel, Python and the versions of what the figures depend on; `client` logs the
    mariadb client in, to ask the server its version."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "?"
    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, {_version(['mariadb', '--version'])}, "
            f"server {_server_version(client)}, {_version(['ffmpeg', '-version'])}, "
            f"lameenc {_package('lameenc')}, SQLAlchemy {_package('sqlalchemy')}, "
            f"PyMySQL {_package('pymysql')}")


def _version(command: list[str]) -> str:
    try:
        out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"{command[0]} missing"
    first = out.split("\n", 1)[0]
    match = re.search(r"(Distrib [\d.]+-MariaDB|ffmpeg version \S+|Ver [\d.]+)", first)
    return f"{command[0]} {match.group(1) if match else first[:40]}"


def _server_version(client: list[str]) -> str:
    out = subprocess.run(["mariadb", *client, "-N", "-B", "-e", "SELECT VERSION()"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "?"


def _package(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "missing"
