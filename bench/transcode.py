"""Benchmark of the recording transcode (not a test): `python bench/transcode.py`.

For 3-minute and 30-minute speech WAVs (8 kHz mono 16-bit, real telephony speech repeated) it
measures CPU seconds per audio second of
  (a) the poller's path, poller.recordings.transcode.to_mp3 (the
      `python -m poller.recordings.encoder` child),
  (b) plain `ffmpeg -i in.wav -ac 1 -b:a 32k out.mp3` (libmp3lame),
  (c) lameenc in a fresh Python child fed one-second chunks (the poller's LAME settings),
  (d) pydub `AudioSegment.from_wav(...).export(..., format="mp3", bitrate="32k")` in a child,
each the best of a few runs, CPU counted over the process and everything it spawned (user +
system, from wait4 / RUSAGE_CHILDREN). Then the peak RSS of each for a 1-minute and a 2-hour
file: the encoder child's own VmHWM (its JSON peak_rss_kb), ffmpeg's and the lameenc child's
ru_maxrss, pydub's Python process (VmHWM) beside its ffmpeg child (ru_maxrss).

Options: --runs N (default 3), --dir DIR (work files; default a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "tests"))

from audiotools import speech_pcm, write_speech_wav  # noqa: E402

from poller.config.schema import Seconds, TranscodeConfig  # noqa: E402
from poller.recordings.transcode import to_mp3  # noqa: E402

RATE = 8000

LAMEENC_CHILD = """
import json, re, sys, wave
import lameenc
source, target = sys.argv[1], sys.argv[2]
encoder = lameenc.Encoder()
encoder.set_bit_rate(32)
encoder.set_channels(1)
encoder.set_quality(7)
with wave.open(source, "rb") as wav, open(target, "wb") as out:
    encoder.set_in_sample_rate(wav.getframerate())
    while True:
        chunk = wav.readframes(wav.getframerate())
        if not chunk:
            break
        out.write(encoder.encode(chunk))
    out.write(encoder.flush())
"""

PYDUB_CHILD = """
import json, re, sys, warnings
warnings.simplefilter("ignore", DeprecationWarning)
from pydub import AudioSegment
AudioSegment.from_wav(sys.argv[1]).export(sys.argv[2], format="mp3", bitrate="32k")
hwm = int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
print(json.dumps({"self_kb": hwm}))
"""


@dataclass
class Measured:
    cpu: float  # seconds of user + system CPU, the process and all it spawned
    peak_kb: int  # the main process's own peak RSS


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spawn(command: list[str]) -> tuple[Measured, str]:
    """Run a command; its CPU (with its own children) and peak RSS from wait4."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    assert process.stdout is not None and process.stderr is not None
    out = process.stdout.read()
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stdout.close()
    process.stderr.close()
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {err.decode(errors='replace')[-500:]}")
    return Measured(usage.ru_utime + usage.ru_stime, usage.ru_maxrss), out.decode()


def poller(source: Path, target: Path) -> Measured:
    before = children_cpu()
    encoded = to_mp3([source], target, TranscodeConfig(timeout=Seconds(3600)))
    return Measured(children_cpu() - before, encoded.peak_rss_kb)


def ffmpeg(source: Path, target: Path) -> Measured:
    return spawn(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-ac", "1",
                  "-b:a", "32k", str(target)])[0]


def lameenc_child(source: Path, target: Path) -> Measured:
    return spawn([sys.executable, "-c", LAMEENC_CHILD, str(source), str(target)])[0]


def pydub_child(source: Path, target: Path) -> Measured:
    measured, out = spawn([sys.executable, "-c", PYDUB_CHILD, str(source), str(target)])
    # its own VmHWM: ru_maxrss would also count the ffmpeg child it forks, whose pre-exec
    # copy of this big process inflates the figure
    return Measured(measured.cpu, json.loads(out.strip().splitlines()[-1])["self_kb"])


METHODS: dict[str, Callable[[Path, Path], Measured]] = {
    "(a) poller to_mp3": poller,
    "(b) ffmpeg libmp3lame": ffmpeg,
    "(c) lameenc 1 s chunks": lameenc_child,
    "(d) pydub export": pydub_child,
}


def best(method: Callable[[Path, Path], Measured], source: Path, target: Path,
         runs: int) -> Measured:
    results = [method(source, target) for _ in range(runs)]
    return min(results, key=lambda m: m.cpu)


def mb(kb: int) -> str:
    return f"{kb / 1024:7.1f} MB"


def environment() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "?"
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True
                             ).stdout.split("\n", 1)[0]
    from importlib.metadata import version as package_version

    return (f"{model}, {os.cpu_count()} CPUs, Linux {platform.release()}, Python "
            f"{platform.python_version()}, lameenc {package_version('lameenc')}, pydub "
            f"{package_version('pydub')}, {version}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work_dir:
        work = Path(work_dir)
        pcm = speech_pcm()
        print(f"# {environment()}")
        print(f"# speech: {len(pcm) / 2 / RATE:.0f} s of real 8 kHz speech, repeated; "
              f"CPU = user + system of the process and its children, best of {args.runs}")
        print()
        print("CPU per audio second (32 kbit/s mono MP3 from an 8 kHz 16-bit mono WAV)")
        print(f"{'file':>8}  {'method':<24} {'CPU s':>8} {'CPU/audio s':>12} "
              f"{'vs best (b)/(c)':>16}")
        for minutes in (3, 30):
            seconds = minutes * 60.0
            source = write_speech_wav(work / f"speech-{minutes}min.wav", seconds)
            measured = {name: best(method, source, work / "out.mp3", args.runs)
                        for name, method in METHODS.items()}
            reference = min(measured["(b) ffmpeg libmp3lame"].cpu,
                            measured["(c) lameenc 1 s chunks"].cpu)
            for name, result in measured.items():
                print(f"{minutes:>5} min  {name:<24} {result.cpu:8.3f} "
                      f"{result.cpu / seconds * 1000:9.3f} ms {result.cpu / reference:15.2f}x")
            source.unlink()
        print()
        print("Peak RSS (fresh process each; VmHWM or ru_maxrss)")
        print(f"{'file':>8}  {'(a) encoder':>15} {'(b) ffmpeg':>11} {'(c) lameenc':>14} "
              f"{'(d) pydub':>13}")
        peaks: dict[int, dict[str, Measured]] = {}
        for minutes in (1, 120):
            source = write_speech_wav(work / f"speech-{minutes}min.wav", minutes * 60.0)
            started = time.monotonic()
            peaks[minutes] = {name: method(source, work / "out.mp3")
                              for name, method in METHODS.items()}
            row = peaks[minutes]
            print(f"{minutes:>4} min  {mb(row['(a) poller to_mp3'].peak_kb):>15} "
                  f"{mb(row['(b) ffmpeg libmp3lame'].peak_kb):>11} "
                  f"{mb(row['(c) lameenc 1 s chunks'].peak_kb):>14} "
                  f"{mb(row['(d) pydub export'].peak_kb):>13}"
                  f"   ({time.monotonic() - started:.0f} s for all four)")
            source.unlink()
        grow = {name: peaks[120][name].peak_kb - peaks[1][name].peak_kb for name in METHODS}
        print(f"{'growth':>8}  {mb(grow['(a) poller to_mp3']):>15} "
              f"{mb(grow['(b) ffmpeg libmp3lame']):>11} {mb(grow['(c) lameenc 1 s chunks']):>14} "
              f"{mb(grow['(d) pydub export']):>13}")
        print()
        print("(a) is the poller's path: the same LAME (lameenc, quality 7) as (c), in a child "
              "that also parses\n    the WAV itself, checks the MP3 frame by frame and lowers "
              "its priority; (b) and (d) pay ffmpeg's start-up.\n"
              "(d) pydub is its Python process (VmHWM); its export also runs an ffmpeg child "
              "like (b), ~(b)'s peak again.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
