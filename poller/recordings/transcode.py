"""Turning a call's recording files into one MP3 in a low-priority child process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from poller.config.schema import TranscodeConfig
from poller.errors import DeliveryError, StorageUnavailable

log = logging.getLogger(__name__)


class TranscodeError(DeliveryError):
    """The MP3 could not be made this time (a stuck encoder, no ffmpeg): retried later."""


class Unreadable(Exception):
    """The input is truncated, corrupt or not audio: the call goes out without it."""


@dataclass(frozen=True)
class Encoded:
    """What the encoder child reported."""

    seconds: float  # audio seconds read
    mp3_seconds: float  # audio seconds in the MP3, by its frame headers
    peak_rss_kb: int  # the child's own peak memory


def to_mp3(sources: list[Path], target: Path, config: TranscodeConfig, *,
           call_seconds: float | None = None) -> Encoded:
    """Encode `sources` (joined in order) into `target`.

    The child runs in a session of its own at `transcode.nice` (see poller.recordings.encoder)
    and is killed with its whole process group when it exceeds `transcode.timeout` or when this
    process is interrupted. Given `call_seconds` (the call's duration), a file far longer than
    the call is Unreadable, and the child stops decoding it there
    (encoder.max_recording_seconds).
    """
    command = [sys.executable, "-m", "poller.recordings.encoder",
               "--bitrate", config.bitrate.rstrip("k"), "--nice", str(config.nice),
               "--ffmpeg", config.ffmpeg]
    if call_seconds is not None:
        command += ["--call-seconds", str(call_seconds)]
    command += [str(target), *map(str, sources)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, start_new_session=True, text=True)
    try:
        out, err = process.communicate(timeout=float(config.timeout))
    except subprocess.TimeoutExpired:
        _kill(process)
        raise TranscodeError(f"encoder killed after {config.timeout:.0f}s") from None
    except BaseException:
        _kill(process)
        raise
    if process.returncode == 3:
        raise Unreadable(err.strip().removeprefix("unreadable: "))
    if process.returncode == 5:  # the folder of the MP3 refuses writes: nobody's call's fault
        raise StorageUnavailable(f"state.dir: the encoder {err.strip()[-500:]}")
    if process.returncode != 0:
        raise TranscodeError(f"encoder failed ({process.returncode}): {err.strip()[-500:]}")
    return Encoded(**json.loads(out.strip().splitlines()[-1]))


def _kill(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()
