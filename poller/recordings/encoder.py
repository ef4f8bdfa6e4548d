"""The encoder child: a call's recording files in, one validated MP3 out, at low priority.

Run as `python -m poller.recordings.encoder` in a session of its own. With sched_autogroup (the
default on many distributions) plain nice ranks a process only against its own session, so the
child also lowers its session's autogroup niceness, and asks for the idle I/O class. It prints
one JSON line: the audio seconds written and its own peak memory.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from poller.localfiles import reason, refuses_writes
from poller.recordings.formats import UnreadableAudio, mp3_seconds

_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_IOPRIO_CLASS_SHIFT = 13
_SYS_IOPRIO = {"x86_64": (251, 252), "aarch64": (30, 31), "i686": (289, 290),
               "armv7l": (314, 315)}
LENGTH_TOLERANCE = 0.5  # seconds between input and output length (the spec)
# MixMonitor records while the channel lives, so no one file outlasts its call; the margin
# covers whole-second cdr durations and hangup handlers that run on after the call's end
RECORDING_MARGIN = 600.0
EXIT_UNREADABLE, EXIT_NO_DECODER = 3, 4
# the MP3 could not be written (state.dir/tmp refuses writes: full, read-only, not ours)
EXIT_CANNOT_WRITE = 5


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


def peak_rss_kb() -> int:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(r"VmHWM:\s+(\d+)", handle.read())
        return int(match.group(1)) if match else 0
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.recordings.encoder",
                                     description="Encode recordings into one MP3 (internal).")
    parser.add_argument("--bitrate", type=int, default=32, help="kbit/s")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--ffmpeg", default="ffmpeg")
    parser.add_argument("--call-seconds", type=float, default=None,
                        help="the call's duration: bounds each recording's length")
    parser.add_argument("output", type=Path)
    parser.add_argument("inputs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    lower_priority(args.nice)
    from poller.recordings.audio import DecoderMissing  # after lower_priority, as in encode()

    try:
        limit = None if args.call_seconds is None else max_recording_seconds(args.call_seconds)
        seconds = encode(args.inputs, args.output, args.bitrate, args.ffmpeg, limit)
        produced = validate(args.output, seconds)
    except UnreadableAudio as exc:
        print(f"unreadable: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except DecoderMissing as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_NO_DECODER
    except OSError as exc:
        if refuses_writes(exc) and exc.filename in (None, str(args.output)):
            # writing the MP3 failed: the folder's outage, never the call's
            print(f"cannot write {args.output}: {reason(exc)}", file=sys.stderr)
            return EXIT_CANNOT_WRITE
        # a file that cannot be read is unreadable, unless the poller's user lacks the right
        # (not in the asterisk group): that is fixed on the host, and the call retried
        denied = exc.errno in (errno.EACCES, errno.EPERM)
        if exc.filename and Path(exc.filename) in args.inputs and not denied:
            print(f"unreadable: {exc.strerror}: {exc.filename}", file=sys.stderr)
            return EXIT_UNREADABLE
        print(f"{exc.strerror}: {exc.filename}", file=sys.stderr)  # disk full, no state.dir
        return 1
    except Exception as exc:
        # not the audio's fault (a missing module, memory, a bug): retried, then parked and
        # shown by `status` — never a call sent out as if its recording were unreadable
        print(f"encoder error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"seconds": round(seconds, 3), "mp3_seconds": round(produced, 3),
                      "peak_rss_kb": peak_rss_kb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
