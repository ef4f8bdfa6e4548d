"""The encoder child: a call's recording files in, one validated MP3 out, at low priority.

Run as `python -m poller.recordings.encoder` in a session of its own. With sched_autogroup (the
default on many distributions) plain nice ranks a process only against its own session, so the
child also lowers its session's autogroup niceness, and asks for the idle I/O class. Given files,
it encodes them and prints one JSON line: the audio seconds written and its own peak memory.
With `--serve` it takes one job per line on stdin and answers each with a line, so that a run
pays the child's start-up (an interpreter, its imports, its priority) once, not once a call.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import re
import resource
import shutil
import sys
from pathlib import Path
from typing import Any

from poller.localfiles import reason, refuses_writes
from poller.recordings.formats import UnreadableAudio, mp3_seconds
from poller.recordings.jobs import EXIT_CANNOT_WRITE, EXIT_NO_DECODER, EXIT_UNREADABLE, Job

_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_SYS_IOPRIO = {"x86_64": (251, 252), "aarch64": (30, 31), "i686": (289, 290),
               "armv7l": (314, 315)}
LENGTH_TOLERANCE = 0.5  # seconds between input and output length (the spec)
# MixMonitor records while the channel lives, so no one file outlasts its call; the margin
# covers whole-second cdr durations and hangup handlers that run on after the call's end
RECORDING_MARGIN = 600.0


def lower_priority(niceness: int) -> None:
    """Nice this process, its autogroup, and put it in the idle I/O class where allowed."""
    os.nice(niceness)
    try:
        with open("/proc/self/autogroup", "w") as handle:
            handle.write(str(niceness))
    except OSError:
        pass  # no autogroups (a cgroup CPU controller applies instead) or not permitted
    numbers = _SYS_IOPRIO.get(os.uname().machine)
    if numbers is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall(numbers[0], _IOPRIO_WHO_PROCESS, 0,
                     _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT)


def io_priority_class(pid: int) -> int | None:
    """The I/O scheduling class of a process (3 = idle), None where it cannot be read."""
    numbers = _SYS_IOPRIO.get(os.uname().machine)
    if numbers is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    value = libc.syscall(numbers[1], _IOPRIO_WHO_PROCESS, pid)
    return None if value < 0 else value >> _IOPRIO_CLASS_SHIFT


def max_recording_seconds(call_seconds: float) -> float:
    """The longest any one recording file of a call may last.

    Each file, not their sum: a transfer's recordings can overlap in time, and the files of a
    paused and resumed recording add up to less than the call anyway.
    """
    return max(0.0, call_seconds) + RECORDING_MARGIN


def encode(sources: list[Path], target: Path, bitrate_kbps: int, ffmpeg: str,
           max_seconds: float | None = None) -> float:
    """Encode the sources, joined in order, into one mono MP3; returns the input seconds.

    A source longer than `max_seconds` stops the encode with UnreadableAudio.
    """
    # the audio modules (audioop, pydub's helpers) and LAME load here, after lower_priority:
    # even the child's imports run at its own low priority
    from poller.recordings.audio import pcm_chunks, wav_info
    from poller.recordings.formats import is_mp3

    if len(sources) == 1 and wav_info(sources[0]) is None and is_mp3(sources[0]):
        # already MP3: uploaded as it is, once checked
        seconds = mp3_seconds(sources[0], max_seconds)
        shutil.copyfile(sources[0], target)
        return seconds
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(bitrate_kbps)
    encoder.set_channels(1)
    encoder.set_quality(7)
    shape = None
    samples = 0
    with open(target, "wb") as out:
        for source in sources:
            file_shape, chunks = pcm_chunks(source, shape, ffmpeg, max_seconds)
            if shape is None:
                shape = file_shape
                encoder.set_in_sample_rate(shape.rate)
            for chunk in chunks:
                samples += len(chunk) // 2
                out.write(_lame(encoder.encode, chunk))
        out.write(_lame(encoder.flush))
    assert shape is not None
    return samples / shape.rate


def _lame(step: Any, *args: Any) -> bytes:
    """One call into LAME, whose only complaint is a RuntimeError about the audio it was fed
    (a sample rate it cannot take, say)."""

    try:
        return bytes(step(*args))
    except RuntimeError as exc:
        raise UnreadableAudio(f"the MP3 encoder refused the audio: {exc}") from None


def validate(target: Path, seconds: float) -> float:
    """The MP3 must parse frame by frame and last as long as its input (within 0.5 s)."""
    produced = mp3_seconds(target)
    if seconds <= 0:
        raise UnreadableAudio("no audio in the input")
    # LAME's delay and padding stay well under it (0.1-0.2 s at 8 kHz)
    if abs(produced - seconds) > LENGTH_TOLERANCE:
        raise UnreadableAudio(f"the MP3 lasts {produced:.2f}s for {seconds:.2f}s of input")
    return produced


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(field + r":\s+(\d+)", handle.read())
        return int(match.group(1)) if match else 0
    except OSError:
        return 0


def peak_rss_kb() -> int:
    return _status_kb("VmHWM")


def _reset_peak() -> None:
    """Start this job's peak memory afresh (a serving child's VmHWM would otherwise be its
    largest job's), where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # the figure is then the child's peak so far, an upper bound


def _cpu() -> float:
    """CPU seconds of this process and the decoders it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_job(job: Job, bitrate_kbps: int, ffmpeg: str) -> tuple[int, str, dict[str, Any]]:
    """Encode and validate one job: (exit code, message for stderr, figures on success)."""
    from poller.recordings.audio import DecoderMissing  # after lower_priority, as in encode()

    try:
        limit = None if job.call_seconds is None else max_recording_seconds(job.call_seconds)
        seconds = encode(job.inputs, job.output, bitrate_kbps, ffmpeg, limit)
        produced = validate(job.output, seconds)
    except UnreadableAudio as exc:
        return EXIT_UNREADABLE, f"unreadable: {exc}", {}
    except DecoderMissing as exc:
        return EXIT_NO_DECODER, str(exc), {}
    except OSError as exc:
        if refuses_writes(exc) and exc.filename in (None, str(job.output)):
            # writing the MP3 failed: the folder's outage, never the call's
            return EXIT_CANNOT_WRITE, f"cannot write {job.output}: {reason(exc)}", {}
        # a file that cannot be read is unreadable, unless the poller's user lacks the right
        # (not in the asterisk group): that is fixed on the host, and the call retried
        denied = exc.errno in (errno.EACCES, errno.EPERM)
        if exc.filename and Path(exc.filename) in job.inputs and not denied:
            return EXIT_UNREADABLE, f"unreadable: {exc.strerror}: {exc.filename}", {}
        return 1, f"{exc.strerror}: {exc.filename}", {}  # disk full, no state.dir
    except Exception as exc:
        # not the audio's fault (a missing module, memory, a bug): retried, then parked and
        # shown by `status` — never a call sent out as if its recording were unreadable
        return 1, f"encoder error: {type(exc).__name__}: {exc}", {}
    return 0, "", {"seconds": round(seconds, 3), "mp3_seconds": round(produced, 3)}


def serve(bitrate_kbps: int, ffmpeg: str) -> int:
    """Jobs from stdin, one JSON line each; one JSON line out per job: its exit code and
    message, or its figures with this job's CPU and peak memory and the memory left held.
    Ends at end of input (the poller closed the pipe, or died)."""
    # what every job needs, loaded once at the child's start (at its low priority already)
    import lameenc  # noqa: F401

    import poller.recordings.audio  # noqa: F401

    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        job = Job.from_line(line)
        _reset_peak()
        started = _cpu()
        code, message, figures = run_job(job, bitrate_kbps, ffmpeg)
        reply = {"code": code, "message": message, **figures,
                 "cpu": round(_cpu() - started, 6), "peak_rss_kb": peak_rss_kb(),
                 "rss_kb": _status_kb("VmRSS")}
        out.write(json.dumps(reply).encode() + b"\n")
        out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.recordings.encoder",
                                     description="Encode recordings into one MP3 (internal).")
    parser.add_argument("--bitrate", type=int, default=32, help="kbit/s")
    parser.add_argument("--nice", type=int, default=19)
    parser.add_argument("--ffmpeg", default="ffmpeg")
    parser.add_argument("--call-seconds", type=float, default=None,
                        help="the call's duration: bounds each recording's length")
    parser.add_argument("--serve", action="store_true",
                        help="take jobs as JSON lines on stdin, one reply line each")
    parser.add_argument("--parent", type=int, default=None,
                        help="the poller's pid (names the child in the process list)")
    parser.add_argument("output", type=Path, nargs="?")
    parser.add_argument("inputs", type=Path, nargs="*")
    args = parser.parse_args(argv)
    if not args.serve and (args.output is None or not args.inputs):
        parser.error("an output and at least one input are needed (or --serve)")
    lower_priority(args.nice)
    if args.serve:
        return serve(args.bitrate, args.ffmpeg)
    code, message, figures = run_job(Job(args.output, args.inputs, args.call_seconds),
                                     args.bitrate, args.ffmpeg)
    if code != 0:
        print(message, file=sys.stderr)
        return code
    print(json.dumps({**figures, "peak_rss_kb": peak_rss_kb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
