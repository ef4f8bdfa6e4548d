"""Real audio and the processes that handle it, for the recordings and encoder tests:
speech WAVs as MixMonitor writes them, ffmpeg and ffprobe to make and check audio, and /proc
scans that find (or miss) the encoder child.

Speech comes from Debian's asterisk-core-sounds-en-wav when it is installed, else from the
real MixMonitor samples in tests/data.
"""

from __future__ import annotations

import array
import functools
import json
import math
import os
import subprocess
import threading
import time
import wave
from pathlib import Path
from typing import Any

from support import SAMPLES

SOUNDS = Path("/usr/share/asterisk/sounds/en")
SPEECH_SOUNDS = ("demo-instruct.wav", "demo-congrats.wav", "priv-callee-options.wav",
                 "basic-pbx-ivr-main.wav", "demo-echotest.wav")
SAMPLE_DAY = SAMPLES / "recordings" / "2026" / "11" / "26"
RATE = 8000


# -- real speech, as MixMonitor writes it

def speech_files() -> list[Path]:
    """Real 8 kHz telephony speech: Asterisk's core sounds if installed, else the samples."""
    found = [SOUNDS / name for name in SPEECH_SOUNDS if (SOUNDS / name).is_file()]
    return found or sorted(p for p in SAMPLE_DAY.glob("*.wav") if p.stat().st_size > 4096)


@functools.cache
def speech_pcm() -> bytes:
    """All that speech as one run of 8 kHz 16-bit mono PCM (a few MB)."""
    parts = []
    for path in speech_files():
        with wave.open(str(path), "rb") as source:
            assert (source.getframerate(), source.getsampwidth(), source.getnchannels()) == (
                RATE, 2, 1), path
            parts.append(source.readframes(source.getnframes()))
    return b"".join(parts)


def write_speech_wav(path: Path, seconds: float, *, offset: float = 0.0,
                     gain: float = 1.0) -> Path:
    """A 16-bit 8 kHz mono WAV of real speech, repeated to `seconds`, written chunk by chunk
    (a two-hour file is never held in memory). `gain` scales the samples (quiet speech)."""
    pcm = speech_pcm()
    if gain != 1.0:
        samples = array.array("h", pcm)
        pcm = array.array("h", (max(-32768, min(32767, int(s * gain))) for s in samples)
                          ).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    start = int(offset * RATE) * 2 % len(pcm)
    left = int(round(seconds * RATE)) * 2
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        while left:
            part = pcm[start:start + min(left, 1 << 20)]
            out.writeframesraw(part)
            left -= len(part)
            start = (start + len(part)) % len(pcm)
    return path


def settle(path: Path, age: float = 3600.0) -> Path:
    """Last written `age` seconds ago: quiet for long enough to count as finished."""
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True,
                   capture_output=True, timeout=300)


def probe(path: Path) -> dict[str, Any]:
    """ffprobe's view of the first audio stream: duration, channels, sample_rate, codec."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=codec_name,channels,sample_rate:format=duration", "-of", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=True)
    data = json.loads(result.stdout)
    stream = data["streams"][0]
    return {"duration": float(data["format"]["duration"]), "channels": stream["channels"],
            "sample_rate": int(stream["sample_rate"]), "codec": stream["codec_name"]}


def decode_errors(path: Path) -> str:
    """ffmpeg's complaints when decoding the whole file ('' when it decodes cleanly)."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null",
                             "-"], capture_output=True, text=True, timeout=300)
    return result.stderr.strip() or ("" if result.returncode == 0 else f"exit {result.returncode}")


def decoded(path: Path) -> array.array[int]:
    """The file's audio as 8 kHz 16-bit mono samples, decoded by ffmpeg."""
    result = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le",
                             "-ac", "1", "-ar", str(RATE), "-"], capture_output=True, timeout=300,
                            check=True)
    return array.array("h", result.stdout)


def rms(samples: array.array[int]) -> float:
    return math.sqrt(sum(s * s for s in samples) / max(len(samples), 1))


# -- processes, as /proc shows them

def processes_with(*markers: str, program: str | None = None) -> list[int]:
    """Live processes (not zombies) whose command line holds every marker (and which run
    `program`, when given: the basename of their argv[0])."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        cmdline = b" ".join(argv).decode(errors="replace")
        if int(entry.name) == os.getpid() or state in "ZX":
            continue
        if program is not None and Path(argv[0].decode(errors="replace")).name != program:
            continue
        if all(marker in cmdline for marker in markers):
            found.append(int(entry.name))
    return found


def wait_for_process(*markers: str, program: str | None = None, timeout: float = 30.0) -> int:
    """The pid of the one process whose command line holds the markers, once it shows up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = processes_with(*markers, program=program)
        if pids:
            assert len(pids) == 1, pids
            return pids[0]
        time.sleep(0.005)
    raise AssertionError(f"no process with {markers} within {timeout}s")


def encoders_of(parent: int) -> list[int]:
    """The live encoder children the process `parent` started (their `--parent=PID`)."""
    found = []
    for pid in processes_with("poller.recordings.encoder"):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"--parent={parent}".encode() in argv:
            found.append(pid)
    return found


def wait_for_encoder(parent: int, timeout: float = 30.0) -> int:
    """The pid of the encoder child of `parent`, once it shows up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = encoders_of(parent)
        if pids:
            assert len(pids) == 1, pids
            return pids[0]
        time.sleep(0.005)
    raise AssertionError(f"no encoder child of {parent} within {timeout}s")


def gone(*markers: str, program: str | None = None, grace: float = 2.0) -> bool:
    """No such process is left once a killed grandchild (not ours to reap) had `grace`
    seconds to finish dying."""
    deadline = time.monotonic() + grace
    while processes_with(*markers, program=program):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Background(threading.Thread):
    """Runs a function in a thread and keeps what it returned or raised."""

    def __init__(self, function: Any, *args: Any):
        super().__init__(daemon=True)
        self.function, self.args = function, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.function(*self.args)
        except BaseException as exc:  # handed to the test
            self.error = exc
