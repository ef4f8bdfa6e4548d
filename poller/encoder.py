"""The encoder child: PCM WAV files in, one MP3 out, at low CPU and I/O priority.

Run as `python -m poller.encoder` in a session of its own, so that lowering the session's
autogroup niceness affects only this process (with sched_autogroup, plain nice ranks a process
only against its own session).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import wave
from pathlib import Path

_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_IDLE = 3
_SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "i686": 289, "armv7l": 314}


def lower_priority(niceness: int) -> None:
    """Nice this process, its autogroup, and put it in the idle I/O class where allowed."""
    os.nice(niceness)
    try:
        with open("/proc/self/autogroup", "w") as handle:
            handle.write(str(niceness))
    except OSError:
        pass  # no autogroups (cgroup CPU control applies instead) or not permitted
    number = _SYS_IOPRIO_SET.get(os.uname().machine)
    if number is not None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, _IOPRIO_CLASS_IDLE << 13)
        except OSError:
            pass


class UnreadableAudio(Exception):
    """The input is not audio this encoder can read."""


def encode(sources: list[Path], target: Path, bitrate_kbps: int) -> float:
    """Encode the sources, joined in order, to one MP3; returns the audio seconds written."""
    import lameenc

    params = None
    seconds = 0.0
    with open(target, "wb") as out:
        encoder = None
        for source in sources:
            try:
                reader = wave.open(str(source), "rb")
            except (wave.Error, EOFError) as exc:
                raise UnreadableAudio(f"{source.name}: {exc}") from None
            with reader:
                shape = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate())
                if shape[1] != 2:
                    raise UnreadableAudio(f"{source.name}: {8 * shape[1]}-bit PCM is not supported")
                if params is None:
                    params = shape
                    encoder = lameenc.Encoder()
                    encoder.set_bit_rate(bitrate_kbps)
                    encoder.set_in_sample_rate(shape[2])
                    encoder.set_channels(shape[0])
                    encoder.set_quality(7)
                elif shape != params:
                    raise UnreadableAudio(f"{source.name}: format differs from the first file")
                assert encoder is not None
                chunk = shape[2]  # one second of frames: memory stays flat
                while True:
                    frames = reader.readframes(chunk)
                    if not frames:
                        break
                    seconds += len(frames) / (shape[0] * shape[1] * shape[2])
                    out.write(encoder.encode(frames))
        if encoder is None:
            raise UnreadableAudio("no input")
        out.write(encoder.flush())
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m poller.encoder")
    parser.add_argument("--bitrate", type=int, default=32, help="kbit/s")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("output", type=Path)
    parser.add_argument("inputs", type=Path, nargs="+")
    args = parser.parse_args(argv)
    lower_priority(args.nice)
    try:
        seconds = encode(args.inputs, args.output, args.bitrate)
    except UnreadableAudio as exc:
        print(f"unreadable: {exc}", file=sys.stderr)
        return 3
    print(f"{seconds:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
