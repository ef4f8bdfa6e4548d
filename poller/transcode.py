"""Turning a call's WAV files into one MP3 in a low-priority child process."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from .config import TranscodeConfig

log = logging.getLogger(__name__)


class TranscodeError(Exception):
    """The recording could not be turned into an MP3."""


class Unreadable(TranscodeError):
    """The input is truncated, corrupt or of a format the encoder cannot read."""


def to_mp3(sources: list[Path], target: Path, config: TranscodeConfig) -> float:
    """Encode `sources` (joined in order) into `target`; returns the audio seconds.

    The child runs in a session of its own at `transcode.nice` and is killed, with its whole
    process group, when it exceeds `transcode.timeout`.
    """
    command = [sys.executable, "-m", "poller.encoder", "--bitrate", config.bitrate.rstrip("k"),
               "--nice", str(config.nice), str(target), *map(str, sources)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, text=True)
    try:
        out, err = process.communicate(timeout=float(config.timeout))
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise TranscodeError(f"encoder killed after {config.timeout:.0f}s") from None
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if process.returncode == 3:
        raise Unreadable(err.strip().removeprefix("unreadable: "))
    if process.returncode != 0:
        raise TranscodeError(f"encoder failed ({process.returncode}): {err.strip()[-500:]}")
    return float(out.strip() or 0)
