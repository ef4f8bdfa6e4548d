"""The encoder child protects the PBX, read from /proc while it runs on a long recording:
niceness, a session (and autogroup) of its own, the idle I/O class, its share of a core a
busy process in another session wants, and memory that does not grow with the recording.

Machine-speed independent: each test looks at the running child or at ratios, never at how
long an encode takes.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiotools import (
    Background,
    encoders_of,
    probe,
    wait_for_encoder,
    write_speech_wav,
)

from poller.config.schema import Seconds, TranscodeConfig
from poller.recordings.encoder import io_priority_class
from poller.recordings.transcode import EncoderProcess, TranscodeError, to_mp3

NICE = 13  # not the default, so the child's niceness must come from transcode.nice
IDLE = 3  # IOPRIO_CLASS_IDLE
TICKS = os.sysconf("SC_CLK_TCK")
AUTOGROUP = re.compile(r"^/autogroup-(\d+) nice (-?\d+)$")

# each test runs a real encoder on a long recording, some for seconds of contention
pytestmark = pytest.mark.slow


def stat_fields(pid: int) -> dict[str, int]:
    """Fields of /proc/PID/stat by their number in proc(5) (after the command in brackets)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    rest = text.rsplit(")", 1)[1].split()
    field = {number: rest[number - 3] for number in range(3, len(rest) + 3)}
    return {"pgrp": int(field[5]), "session": int(field[6]), "utime": int(field[14]),
            "stime": int(field[15]), "nice": int(field[19])}


def cpu_ticks(pid: int) -> int:
    fields = stat_fields(pid)
    return fields["utime"] + fields["stime"]


def read_autogroup(pid: int | str = "self") -> str | None:
    try:
        return Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return None


def autogroups_do_not_apply() -> str | None:
    """Why the kernel's session autogroups do not decide CPU shares here, or None."""
    try:
        enabled = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip()
    except OSError:
        return "the kernel has no autogroups (no /proc/sys/kernel/sched_autogroup_enabled)"
    if enabled != "1":
        return f"autogroups are switched off (sched_autogroup_enabled = {enabled})"
    if read_autogroup() is None:
        return "/proc/self/autogroup is absent"
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (Path("/sys/fs/cgroup") / path.lstrip("/") / "cpu.weight"
                                  ).exists():
            return (f"cgroup v2 CPU controller on {path} (cpu.weight): autogroups do not apply, "
                    "the unit's CPU weight protects the PBX instead")
        if "cpu" in controllers.split(",") and path != "/":
            return (f"cgroup v1 CPU controller on {path}: autogroups do not apply, the unit's "
                    "CPU shares protect the PBX instead")
    return None


def wait_until_writing(target: Path, timeout: float = 20.0) -> None:
    """The child writes MP3 frames only after lowering its priority: wait for the first."""
    deadline = time.monotonic() + timeout
    while not (target.exists() and target.stat().st_size > 0):
        assert time.monotonic() < deadline, "the encoder wrote nothing"
        time.sleep(0.005)


def stop(job: Background, pid: int | None) -> None:
    """Kill the encoder's process group (it should lead one) and reap the thread."""
    if pid is not None:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError):
                kill(pid, signal.SIGKILL)
    job.join(timeout=30)
    assert not job.is_alive()


def restore_own_autogroup(before: str | None) -> None:
    """Should the child have reniced the test's own session, put it back (and say so)."""
    now = read_autogroup()
    match = AUTOGROUP.match(before or "")
    if match and now != before:
        with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as handle:
            handle.write(match.group(2))


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """90 minutes of real speech, 8 kHz 16-bit mono (82 MB), written chunk by chunk."""
    path = write_speech_wav(tmp_path_factory.mktemp("long") / "long-5400s.wav", 5400.0)
    yield path
    path.unlink()


@pytest.fixture(scope="module")
def running(long_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What /proc says about a run's encoder child at work on its second call (the first one
    started it; transcode.nice = 13)."""
    folder = tmp_path_factory.mktemp("out")
    target = folder / "running.mp3"
    own_before = read_autogroup()
    encoder = EncoderProcess(TranscodeConfig(nice=NICE, timeout=Seconds(120)))
    first = write_speech_wav(folder / "first.wav", 5.0)
    encoder.encode([first], folder / "first.mp3")
    pid = encoder.pid
    assert pid is not None
    job = Background(encoder.encode, [long_wav], target)
    job.start()
    try:
        wait_until_writing(target)
        seen = {"pid": pid, "stat": stat_fields(pid), "autogroup": read_autogroup(pid),
                "io_class": io_priority_class(pid), "own_autogroup": (own_before,
                                                                      read_autogroup())}
        assert encoders_of(os.getpid()) == [pid], "not the child that did the first call"
        assert job.is_alive(), "finished too soon"
    finally:
        stop(job, pid)
        restore_own_autogroup(own_before)
        encoder.close()
    assert isinstance(job.error, TranscodeError)  # killed by the fixture, as intended
    return seen


def test_encoder_runs_at_transcode_nice(running):
    """The running encoder's niceness (proc stat field 19) is transcode.nice = 13."""
    # transcode.nice = 13: the encoder child's niceness (proc stat field 19) is 13 above the
    # poller's own.
    expected = min(os.getpriority(os.PRIO_PROCESS, 0) + NICE, 19)
    assert running["stat"]["nice"] == expected


def test_encoder_has_a_session_of_its_own(running):
    """The encoder leads a session and process group of its own, apart from the poller's."""
    # The child leads a new session and process group, so lowering its autogroup never touches the
    # session of the shell or cron job that started the poller.
    pid = running["pid"]
    assert running["stat"]["session"] == pid != os.getsid(0)
    assert running["stat"]["pgrp"] == pid


def test_encoder_autogroup_is_niced_and_the_pollers_is_not(running):
    """The encoder's /proc autogroup shows nice 13; the poller's own autogroup is untouched."""
    # /proc/PID/autogroup of the child shows `nice 13` (plain nice only ranks it inside its own
    # session); the poller's own autogroup is another one and was left alone.
    if read_autogroup() is None or Path(
            "/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() != "1":
        pytest.skip("no autogroups on this kernel (sched_autogroup_enabled is not 1 or "
                    "/proc/PID/autogroup is absent)")
    child = AUTOGROUP.match(running["autogroup"] or "")
    before, after = running["own_autogroup"]
    assert child, running
    assert int(child.group(2)) == NICE
    own = AUTOGROUP.match(before or "")
    if own:
        assert child.group(1) != own.group(1)
    else:
        # A process whose session goes back to init (a service manager's job, a CI runner) is in
        # the root task group, which the kernel shows as an empty autogroup file.
        assert before == "", running
    assert after == before


def test_encoder_is_in_the_idle_io_class(running):
    """ioprio_get on the running encoder gives the idle I/O class."""
    # ioprio_get on the running child: the idle class, so the PBX's disk writes go first.
    if running["io_class"] is None:
        pytest.skip(f"ioprio_get is not available on {os.uname().machine}")
    assert running["io_class"] == IDLE


def test_encoder_yields_a_shared_core_to_a_busy_process_in_another_session(long_wav, tmp_path):
    """Pinned to a core with a busy process of another session, the encoder gets a small share."""
    # A CPU-bound process (Asterisk transcoding a conference, say) in another session and the
    # encoder child are pinned to one core. Over 4 seconds the encoder gets a small share of that
    # core (autogroup nice 10 against 0 gives about 0.1; plain nice would give 1.0).
    reason = autogroups_do_not_apply()
    if reason:
        pytest.skip(reason)
    saved, own_autogroup = os.sched_getaffinity(0), read_autogroup()
    core = max(saved)
    target = tmp_path / "contended.mp3"
    # nice 10 here (the default is 19): the share is measured against what the kernel's
    # weights say of nice 10, and a share of nothing would say nothing
    job = Background(to_mp3, [long_wav], target, TranscodeConfig(nice=10, timeout=Seconds(60)))
    os.sched_setaffinity(0, {core})  # inherited by the busy loop and by the encoder's thread
    try:
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                start_new_session=True)
        job.start()
    finally:
        os.sched_setaffinity(0, saved)
    encoder = None
    try:
        encoder = wait_for_encoder(os.getpid(), timeout=20)
        assert os.sched_getaffinity(encoder) == os.sched_getaffinity(busy.pid) == {core}
        assert os.getsid(busy.pid) != os.getsid(encoder)
        wait_until_writing(target)
        encoder_before, busy_before = cpu_ticks(encoder), cpu_ticks(busy.pid)
        time.sleep(4.0)
        encoder_used = cpu_ticks(encoder) - encoder_before
        busy_used = cpu_ticks(busy.pid) - busy_before
        assert encoders_of(os.getpid()) == [encoder] and job.is_alive(), "it finished"
    finally:
        busy.kill()
        busy.wait()
        stop(job, encoder)
        restore_own_autogroup(own_autogroup)
    assert read_autogroup() == own_autogroup, "the poller's own session was reniced"
    if busy_used <= 0.3 * 4.0 * TICKS:
        # other work on that core (a loaded CI host) leaves too few ticks to judge a share by
        pytest.skip(f"the busy process got only {busy_used} of {4 * TICKS} ticks: the core "
                    "was too busy with other work to measure the encoder's share")
    ratio = encoder_used / busy_used
    assert ratio < 0.35, f"encoder {encoder_used} ticks against {busy_used}: {ratio:.2f}"


def test_encoder_memory_is_flat_from_one_minute_to_two_hours(tmp_path):
    """The encoder's peak RSS for a 2-hour call is within 20 MB of a 1-minute call's."""
    # A 1-minute and a 2-hour call (8 kHz 16-bit mono; the long one 115 MB on disk) encoded one
    # after the other by one run's child: its peak RSS on each differs by less than 20 MB, and
    # both MP3s last as long as their input.
    short = write_speech_wav(tmp_path / "short-60s.wav", 60.0)
    long = write_speech_wav(tmp_path / "long-7200s.wav", 7200.0)
    # nice 0: this is about memory, and a niced encoder waits out any other load
    try:
        with EncoderProcess(TranscodeConfig(nice=0)) as encoder:
            one = encoder.encode([short], tmp_path / "short.mp3")
            pid = encoder.pid
            two = encoder.encode([long], tmp_path / "long.mp3")
            assert encoder.pid == pid, "the run's child did not serve both calls"
    finally:
        long.unlink()
    assert one.peak_rss_kb > 0 and two.peak_rss_kb > 0
    assert abs(two.peak_rss_kb - one.peak_rss_kb) < 20 * 1024, (one, two)
    for encoded, seconds, mp3 in ((one, 60.0, tmp_path / "short.mp3"),
                                  (two, 7200.0, tmp_path / "long.mp3")):
        assert abs(encoded.seconds - seconds) < 0.01
        assert abs(encoded.mp3_seconds - seconds) <= 0.5
        info = probe(mp3)
        assert info["channels"] == 1 and abs(info["duration"] - seconds) <= 0.5, info
        assert 0.9 < mp3.stat().st_size / (seconds * 32000 / 8) < 1.1  # 32 kbit/s
