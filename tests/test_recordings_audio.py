"""Recordings with real audio, real files and the real encoder child: every format MixMonitor
writes, paused-and-resumed files joined, header-only and corrupt files, a file still being
written, a file that appears late, hostile paths, after_upload, interrupts and timeouts.

Speech comes from Debian's asterisk-core-sounds-en-wav when it is installed, else from the
real MixMonitor samples in tests/data; ffmpeg makes the other formats and checks the output.
Speech WAVs, ffmpeg/ffprobe and process scans come from audiotools.py.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import datetime as dt
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from audiotools import (
    RATE,
    SAMPLE_DAY,
    Background,
    decode_errors,
    decoded,
    encoders_of,
    ffmpeg,
    gone,
    probe,
    processes_with,
    rms,
    settle,
    speech_pcm,
    wait_for_encoder,
    wait_for_process,
    write_speech_wav,
)
from support import (
    DIRECT_ANSWERED,
    MSK,
    P1_12_LEG,
    ROOT,
    archive_files,
    archived,
    call_of,
    clone_call,
    entry_of,
    key_of,
    leg,
    legs_of,
    local,
    make_config,
    msk,
    write_config,
)

from poller.config.schema import RecordingsConfig, Seconds, TranscodeConfig, parse_duration
from poller.errors import DeliveryError
from poller.model import Call, Leg
from poller.recordings.files import (
    Plan,
    Wait,
    inspect,
    is_settled,
    open_for_writing,
    plan_recording,
)
from poller.recordings.transcode import TranscodeError, Unreadable, to_mp3
from poller.run.options import RunOptions
from poller.run.pipeline import run_once
from poller.targets.archive.target import ArchiveTarget

HEADER_ONLY = SAMPLE_DAY / "in-74951230001-+79161002403-20261126-094122-1795675282.75.wav"
PAUSE_RESUME = "1795675215.55"  # P1-12: *7 after 4 s of talk, *8 4 s later: two files
TOLERANCE = 0.5  # seconds between the input's and the MP3's length
DEFAULT_TEMPLATE = "{calldate:%Y/%m/%d}/{recordingfile}"


# -- calls and plans without a database

def mixmonitor_name(when: dt.datetime, uniqueid: str, ext: str = "wav",
                    caller: str = "+79161002312") -> str:
    """FreePBX's file name for an incoming call: in-<did>-<caller>-<stamp>-<uniqueid>.<ext>."""
    return f"in-74951230001-{caller}-{when:%Y%m%d-%H%M%S}-{uniqueid}.{ext}"


CALLDATE = local("2026-11-26 09:40:15")  # P1-12's first leg


def recorded(recordingfile: str, calldate: dt.datetime = CALLDATE, **columns: Any) -> Leg:
    """A leg of P1-12's shape naming `recordingfile`."""
    return leg(calldate, **{**P1_12_LEG, "recordingfile": recordingfile, **columns})


def day_folder(monitor: Path, when: dt.datetime = CALLDATE) -> Path:
    folder = monitor / when.strftime("%Y/%m/%d")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def soon_after(call: Call, seconds: float = 60) -> dt.datetime:
    """A run's time shortly after the call ended, well within recordings.wait."""
    return call.end + dt.timedelta(seconds=seconds)


@pytest.fixture
def monitor(tmp_path: Path) -> Path:
    base = tmp_path / "monitor"
    base.mkdir()
    return base.resolve()


def plan_of(call: Call, monitor: Path, **values: Any) -> Plan | Wait:
    return plan_recording(call, RecordingsConfig(dir=str(monitor), **values), soon_after(call))


def encode(plan: Plan | Wait, target: Path, **values: Any) -> Any:
    assert isinstance(plan, Plan) and plan.files, plan
    return to_mp3(list(plan.files), target, TranscodeConfig(**{"nice": 0, **values}))


def assert_good_mp3(mp3: Path, seconds: float) -> dict[str, Any]:
    """Decodes without an error, is mono and lasts `seconds` (within 0.5 s)."""
    with open(mp3, "rb") as handle:
        head = handle.read(3)
    assert head == b"ID3" or (head[0] == 0xFF and head[1] & 0xE0 == 0xE0), head
    assert decode_errors(mp3) == ""
    info = probe(mp3)
    assert info["codec"] == "mp3" and info["channels"] == 1, info
    assert abs(info["duration"] - seconds) <= TOLERANCE, (info["duration"], seconds)
    return info


# -- every format MixMonitor writes

FORMATS = {
    # MixMonitor's format: ffmpeg options that make it from 8 kHz 16-bit speech, file suffix
    "pcm-8k": ([], "wav"),
    "pcm-16k": (["-c:a", "pcm_s16le", "-ar", "16000"], "wav"),
    "pcm-48k": (["-c:a", "pcm_s16le", "-ar", "48000"], "wav"),
    "wav49-gsm": (["-c:a", "gsm_ms", "-ar", "8000"], "WAV"),
    "mu-law": (["-c:a", "pcm_mulaw"], "wav"),
    "a-law": (["-c:a", "pcm_alaw"], "wav"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "32k", "-ac", "1"], "mp3"),
}


@pytest.mark.slow  # seven real encodes, each checked by ffprobe and a full decode
@pytest.mark.parametrize("kind", FORMATS)
def test_each_mixmonitor_format_becomes_a_mono_mp3_of_the_same_length(tmp_path, monitor, kind):
    """A 25 s MixMonitor recording in each format it writes becomes a clean mono MP3 as long."""
    # A 25-second call recorded by MixMonitor as 16-bit PCM at 8/16/48 kHz, wav49 (GSM), mu-law,
    # A-law or MP3: the plan finds it, the encoder child makes a mono MP3 that decodes cleanly,
    # lasts as long as the input and still holds the speech (an MP3 is kept as is).
    options, ext = FORMATS[kind]
    speech = write_speech_wav(tmp_path / "speech.wav", 25.0)
    name = mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME, ext)
    source = day_folder(monitor) / name
    if options:
        ffmpeg("-i", str(speech), *options, str(source))
    else:
        source.write_bytes(speech.read_bytes())
    settle(source)
    wanted = probe(source)["duration"]

    plan = plan_of(call_of(recorded(name)), monitor)
    assert plan == Plan((source,))
    mp3 = tmp_path / "out.mp3"
    encoded = encode(plan, mp3)

    assert abs(encoded.seconds - wanted) <= TOLERANCE
    assert abs(encoded.mp3_seconds - wanted) <= TOLERANCE
    assert_good_mp3(mp3, wanted)
    loudness = rms(decoded(mp3)) / rms(decoded(speech))
    assert 0.7 < loudness < 1.3, f"the speech did not survive: RMS ratio {loudness:.2f}"
    if kind == "mp3":
        assert mp3.read_bytes() == source.read_bytes()  # uploaded as it is
    assert source.exists()  # the recording itself is never touched


def _either_side(samples: array.array[int], boundary: float) -> tuple[float, float]:
    """RMS before and after `boundary` seconds, half a second clear of it (encoder delay)."""
    return (rms(samples[:int((boundary - 0.5) * RATE)]),
            rms(samples[int((boundary + 0.5) * RATE):]))


@pytest.mark.slow  # real encodes
def test_paused_and_resumed_recording_is_joined_oldest_first(tmp_path, monitor):
    """A call paused with *7 and resumed with *8 (two files) becomes one MP3, oldest part first."""
    # The agent pauses MixMonitor with *7 and resumes with *8: two files that differ only in their
    # time stamp, recordingfile naming only the later one. Both are found and joined oldest first
    # into one MP3 as long as the two together; another call's file whose uniqueid merely looks
    # alike is left out.
    folder = day_folder(monitor)
    older = folder / mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME)
    newer = folder / mixmonitor_name(local("2026-11-26 09:40:26"), PAUSE_RESUME)
    lookalike = folder / mixmonitor_name(local("2026-11-26 09:40:30"), "1795675215.5")
    write_speech_wav(older, 6.0)  # loud speech before the pause
    write_speech_wav(newer, 4.0, offset=30, gain=0.02)  # barely audible after it
    write_speech_wav(lookalike, 3.0)
    settle(older, 3600 + 11)
    settle(newer)
    settle(lookalike)

    plan = plan_of(call_of(recorded(newer.name)), monitor)
    assert plan == Plan((older, newer))
    mp3 = tmp_path / "joined.mp3"
    encoded = encode(plan, mp3)
    assert abs(encoded.seconds - 10.0) < 0.01
    assert_good_mp3(mp3, 10.0)
    loud, quiet = _either_side(decoded(mp3), 6.0)
    assert loud > 10 * quiet, f"not oldest first: {loud:.0f} then {quiet:.0f}"


@pytest.mark.slow  # real encodes
def test_transferred_call_joins_each_legs_file_in_time_order(tmp_path, monitor):
    """A call transferred from 201 to 202 joins each leg's own file in the legs' time order."""
    # A call transferred from 201 to 202: each leg names its own MixMonitor file (different
    # uniqueids). They are joined in the legs' time order, whatever their names sort like.
    folder = day_folder(monitor)
    first_leg = recorded(mixmonitor_name(local("2026-11-26 09:40:15"), "1795675215.55"),
                    duration=12, billsec=9)
    # named so that it sorts first: the legs' time order must win over the names'
    second_leg = recorded("external-202-+79161002312-20261126-094027-1795675127.60.wav",
                     calldate=local("2026-11-26 09:40:27"), uniqueid="1795675127.60",
                     sequence=70, duration=8, billsec=7)
    write_speech_wav(folder / first_leg.recordingfile, 7.0)
    write_speech_wav(folder / second_leg.recordingfile, 5.0, offset=40, gain=0.02)
    settle(folder / first_leg.recordingfile, 3600 + 12)
    settle(folder / second_leg.recordingfile)

    plan = plan_of(call_of(second_leg, first_leg), monitor)
    assert plan == Plan((folder / first_leg.recordingfile, folder / second_leg.recordingfile))
    mp3 = tmp_path / "transfer.mp3"
    encode(plan, mp3)
    assert_good_mp3(mp3, 12.0)
    loud, quiet = _either_side(decoded(mp3), 7.0)
    assert loud > 10 * quiet


def test_header_only_file_of_an_unanswered_call_is_empty(monitor):
    """MixMonitor's bare 44-byte header of a call nobody answered is "empty", left in place."""
    # MixMonitor's bare 44-byte header (a call nobody answered, P1-17): not a recording,
    # recording_problem "empty", left in place, nothing to encode.
    target = day_folder(monitor, local("2026-11-26 09:41:22")) / HEADER_ONLY.name
    target.write_bytes(HEADER_ONLY.read_bytes())
    settle(target)
    assert target.stat().st_size == 44
    call = call_of(recorded(HEADER_ONLY.name, calldate=local("2026-11-26 09:41:22"),
                       uniqueid="1795675282.75", linkedid="1795675282.74", duration=10,
                       billsec=0))
    assert plan_of(call, monitor) == Plan((), "empty")
    assert target.stat().st_size == 44


def test_file_below_min_bytes_is_empty_and_above_it_a_recording(tmp_path, monitor):
    """A 60 ms WAV (1004 bytes) is "empty" under min_bytes 1024 and a recording under 512."""
    # A 60 ms WAV (1004 bytes) is below recordings.min_bytes = 1024: "empty". Lowered to 512, the
    # same file is a recording.
    name = mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME)
    path = settle(write_speech_wav(day_folder(monitor) / name, 0.060))
    assert 44 < path.stat().st_size < 1024
    call = call_of(recorded(name))
    assert plan_of(call, monitor) == Plan((), "empty")
    assert plan_of(call, monitor, min_bytes=512) == Plan((path,))


# -- corrupt and truncated files

def _random_bytes(path: Path, size: int = 64_000) -> Path:
    data = bytearray(random.Random(3).randbytes(size))
    data[:4] = b"\x00\x01\x02\x03"  # neither RIFF nor an MP3 frame sync
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path) -> Path:
    """A WAV whose header promises 20 s of audio, cut off after 8 s (disk full, bad copy)."""
    write_speech_wav(path, 20.0)
    with open(path, "r+b") as handle:
        handle.truncate(44 + 8 * RATE * 2)
    return path


def _riff_garbage(path: Path) -> Path:
    """A RIFF/WAVE header whose chunks are noise: no fmt or data chunk to be found."""
    body = random.Random(5).randbytes(32_000)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body)
    return path


CORRUPT = {"random-bytes": _random_bytes, "truncated": _truncated, "riff-garbage": _riff_garbage}


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_file_is_unreadable_for_the_encoder(tmp_path, kind):
    """Random bytes, a WAV cut short, noise behind a RIFF header: to_mp3 raises Unreadable."""
    # Random bytes named .wav, a WAV cut short of what its header promises, a RIFF header over
    # noise: the encoder child says so and to_mp3 raises Unreadable (not a retryable
    # TranscodeError), naming why.
    source = CORRUPT[kind](tmp_path / "in-x-20261126-094015-1795675215.55.wav")
    with pytest.raises(Unreadable) as caught:
        to_mp3([source], tmp_path / "out.mp3", TranscodeConfig())
    assert str(caught.value)
    if kind == "truncated":
        assert "truncated" in str(caught.value)


@pytest.mark.parametrize("kind, run_at", [("random-bytes", "09:32"), ("truncated", "09:45")])
def test_corrupt_recording_goes_out_marked_unreadable_and_is_kept(tmp_path, cdr_db, sample_rows,
                                                                  caplog, kind, run_at):
    """A call with a corrupt WAV goes out as "unreadable"; the file is kept, the log says why."""
    # End to end on MariaDB: the call's WAV is corrupt. The call is still delivered, without a
    # recording and with recording_problem "unreadable"; the file stays as it was even with
    # after_upload = "delete"; the log names the file and why. (A file shorter than its header
    # promises may still be arriving, so it is looked at again until recordings.wait is over: the
    # run at 09:45 is past it.)
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 09:30:00"),
                      keep_name=True)
    cdr_db.insert(rows)
    path = day_folder(tmp_path / "monitor", local("2026-11-26 09:30:00")) / rows[0][
        "recordingfile"]
    settle(CORRUPT[kind](path))
    before = path.read_bytes()
    config = make_config(tmp_path, cdr_db.url, recordings={"after_upload": "delete"})

    with caplog.at_level(logging.WARNING):
        report = run_once(config, RunOptions(now=msk(f"2026-11-26 {run_at}")))
    assert report.exit_code == 0 and report.failures == 0, report.summary()
    record = archived(tmp_path)[key_of(rows)]
    assert record["recording"] is None and record["recording_problem"] == "unreadable"
    assert record["status"] == "answered"
    assert not archive_files(tmp_path, ".mp3")
    assert path.read_bytes() == before
    assert entry_of(config, key_of(rows)).stage == "done"
    message = next(r.getMessage() for r in caplog.records if "unreadable" in r.getMessage())
    assert path.name in message
    assert ("truncated" if kind == "truncated" else "neither a WAV nor an MP3") in message


# -- a file still being written

WRITER = textwrap.dedent("""
    # MixMonitor's way: a header with zero sizes, audio appended while the call goes on,
    # the sizes written when the file is closed. Commands on stdin: hold, finish.
    import select, struct, sys

    path, pcm = sys.argv[1], open(sys.argv[2], "rb").read()

    def header(size):
        return (b"RIFF" + struct.pack("<I", size and size + 36) + b"WAVE" + b"fmt "
                + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data"
                + struct.pack("<I", size))

    out = open(path, "wb", buffering=0)
    out.write(header(0))
    written, appending = 0, True
    print("started", flush=True)
    while True:
        if select.select([sys.stdin], [], [], 0.05)[0]:
            command = sys.stdin.readline().strip()
            if command == "hold":  # stop appending; the header stays final-less; still open
                appending = False
            elif command == "finalize":  # sizes written but the file still held open
                out.seek(0)
                out.write(header(written))
                out.seek(0, 2)
            elif command == "finish":  # the last second of audio, the sizes, close
                out.write(pcm[:16000])
                written += 16000
                out.seek(0)
                out.write(header(written))
                out.close()
                print("finished", written, flush=True)
                break
            print(command, written, flush=True)
        if appending:
            chunk = pcm[written % len(pcm):][:1600]
            out.write(chunk)
            written += len(chunk)
""")


def _watch_the_writer(writer: subprocess.Popen[str], path: Path,
                      monitor: Path) -> tuple[Plan | Wait, int]:
    """Steps the writer through growing, held open and closed; the plan at each step."""
    assert writer.stdin is not None and writer.stdout is not None
    stdin, stdout = writer.stdin, writer.stdout

    def tell(command: str) -> str:
        stdin.write(command + "\n")
        stdin.flush()
        return stdout.readline()

    call = call_of(recorded(path.name))
    assert stdout.readline().strip() == "started"
    time.sleep(0.3)
    first = inspect(path)
    plan = plan_of(call, monitor)
    assert isinstance(plan, Wait) and "still being written" in plan.note, plan
    assert plan.until <= soon_after(call) + dt.timedelta(seconds=30)
    assert not first.header_final
    assert open_for_writing([path]) == {path}
    time.sleep(0.3)
    assert inspect(path).size > first.size  # still growing

    assert tell("hold").startswith("hold")
    assert tell("finalize").startswith("finalize")
    settle(path)  # header final, quiet for an hour: only the open descriptor is left
    assert is_settled(inspect(path))
    assert open_for_writing([path]) == {path}
    assert isinstance(plan_of(call, monitor), Wait)

    done = tell("finish").split()
    assert done[0] == "finished"
    assert writer.wait(timeout=10) == 0
    closed = time.time()
    assert open_for_writing([path]) == set()
    assert isinstance(plan_of(call, monitor), Wait)  # just written: not quiet yet
    deadline = time.monotonic() + 10
    while isinstance(plan := plan_of(call, monitor), Wait):
        assert time.monotonic() < deadline, "never settled"
        time.sleep(0.1)
    assert time.time() - closed >= 1.9  # the quiet time (2 s), not sooner
    assert plan == Plan((path,))
    return plan, int(done[1])


@pytest.mark.slow
def test_growing_file_is_waited_for_until_the_writer_closed_it(tmp_path, monitor):
    """A WAV MixMonitor is still writing defers the call until it is closed and quiet."""
    # The cdr row is in while MixMonitor still writes: a writer process keeps appending speech under
    # a header with zero sizes. The call waits while the file grows, and while the writer holds it
    # open even once the header is final and the file has been quiet (only /proc shows the writer);
    # after the writer wrote the last audio, the sizes and closed it, the call still waits out the
    # quiet time, then the file is planned and encodes to its full length.
    name = mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME)
    path = day_folder(monitor) / name
    raw = tmp_path / "speech.pcm"
    raw.write_bytes(speech_pcm()[:RATE * 2 * 30])
    with subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(raw)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as writer:
        try:
            plan, written = _watch_the_writer(writer, path, monitor)
        finally:
            if writer.poll() is None:
                writer.kill()
    encoded = encode(plan, tmp_path / "grown.mp3")
    assert abs(encoded.seconds - written / (2 * RATE)) < 0.01
    assert_good_mp3(tmp_path / "grown.mp3", written / (2 * RATE))


def test_expected_file_that_appears_later_is_delivered_with_it(tmp_path, cdr_db, sample_rows):
    """A cdr row that comes before its WAV: deferred, then delivered with the MP3 once it is in."""
    # The cdr row of a recorded call arrives before its WAV (MixMonitor still closing it, or a slow
    # copy from the PBX). The first run defers the call, the ledger keeps it at stage `seen` with a
    # note; once the file is there the next run delivers it with the MP3.
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), local("2026-11-26 09:30:00"),
                      keep_name=True)
    cdr_db.insert(rows)
    key = key_of(rows)
    config = make_config(tmp_path, cdr_db.url)

    first = run_once(config, RunOptions(now=msk("2026-11-26 09:32")))  # ended 09:30:09
    assert first.exit_code == 0 and first.waiting == 1, first.summary()
    entry = entry_of(config, key)
    assert entry.stage == "seen" and entry.attempts == 0
    assert "waiting for recording" in entry.note and rows[0]["recordingfile"] in entry.note
    assert not archive_files(tmp_path, ".json")

    source = SAMPLE_DAY / legs_of(sample_rows, DIRECT_ANSWERED)[0]["recordingfile"]
    path = day_folder(tmp_path / "monitor", local("2026-11-26 09:30:00")) / rows[0][
        "recordingfile"]
    path.write_bytes(source.read_bytes())
    settle(path, 30)
    second = run_once(config, RunOptions(now=msk("2026-11-26 09:33")))
    assert second.exit_code == 0 and second.recordings == 1, second.summary()
    record = archived(tmp_path)[key]
    assert record["recording"] == f"{key}.mp3" and record["recording_problem"] is None
    [mp3] = archive_files(tmp_path, ".mp3")
    assert_good_mp3(mp3, probe(source)["duration"])
    assert entry_of(config, key).stage == "done"


# -- paths that leave the recordings directory

IN_OPEN, IN_ACCESS = 0x20, 0x01


class OpenWatch:
    """inotify on a directory: the names of its files that something opened or read."""

    def __init__(self, directory: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, ctypes.get_errno()
        watch = self.libc.inotify_add_watch(self.fd, str(directory).encode(), IN_OPEN | IN_ACCESS)
        assert watch >= 0, ctypes.get_errno()

    def touched(self) -> set[str]:
        names: set[str] = set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return names
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                names.add(name)
                offset += 16 + length

    def close(self) -> None:
        os.close(self.fd)


@contextlib.contextmanager
def watched(directory: Path) -> Iterator[OpenWatch]:
    watch = OpenWatch(directory)
    try:
        yield watch
    finally:
        watch.close()


def _outside(tmp_path: Path) -> Path:
    """A real recording outside the recordings directory: it would encode fine if read."""
    return settle(write_speech_wav(tmp_path / "outside" / "secret.wav", 5.0))


def _hostile_names(tmp_path: Path, monitor: Path, kind: str) -> str:
    """The recordingfile value: a path climbing out, or a symlink in the day folder."""
    if kind == "traversal":
        return "../../../../outside/secret.wav"
    name = mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME)
    os.symlink(tmp_path / "outside" / "secret.wav", day_folder(monitor) / name)
    return name


@pytest.mark.parametrize("kind", ["traversal", "symlink"])
def test_path_leaving_the_directory_is_refused_and_never_opened(tmp_path, monitor, kind):
    """A `..` recordingfile or a symlink to a file outside: refused_path, the file never opened."""
    # recordingfile `../../../../outside/secret.wav`, or a file in the day folder that is a symbolic
    # link to a file outside: refused_path at once (no waiting), and the file outside is never
    # opened (inotify on its folder sees no open).
    secret = _outside(tmp_path)
    name = _hostile_names(tmp_path, monitor, kind)
    with watched(secret.parent) as watch:
        plan = plan_of(call_of(recorded(name)), monitor)
        touched = watch.touched()
        assert plan == Plan((), "refused_path")
        assert touched == set(), f"opened: {touched}"
        secret.read_bytes()  # the watch itself works
        assert watch.touched() == {secret.name}


def test_sibling_symlink_pointing_outside_is_not_joined(tmp_path, monitor):
    """A planted `-<uniqueid>.wav` symlink to outside is not joined to a paused call's file."""
    # A planted `…-<uniqueid>.wav` symlink beside a real paused-and-resumed recording points
    # outside: the real file is planned alone and the target outside is never opened.
    secret = _outside(tmp_path)
    folder = day_folder(monitor)
    real = settle(write_speech_wav(folder / mixmonitor_name(local("2026-11-26 09:40:26"),
                                                            PAUSE_RESUME), 4.0))
    os.symlink(secret, folder / mixmonitor_name(local("2026-11-26 09:40:15"), PAUSE_RESUME))
    with watched(secret.parent) as watch:
        plan = plan_of(call_of(recorded(real.name)), monitor)
        assert plan == Plan((real,))
        encode(plan, tmp_path / "out.mp3")
        assert watch.touched() == set()
    assert_good_mp3(tmp_path / "out.mp3", 4.0)


@pytest.mark.parametrize("kind", ["traversal", "symlink"])
def test_hostile_recording_delivered_as_refused_path(tmp_path, cdr_db, sample_rows, kind):
    """On MariaDB, a call naming a path outside goes out at once as refused_path, nothing opened."""
    # End to end on MariaDB: the same two hostile recordings; the call goes out at once with
    # recording_problem "refused_path", no MP3, and the file outside is never opened.
    secret = _outside(tmp_path)
    monitor = tmp_path / "monitor"
    start = local("2026-11-26 09:40:15")
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), start, keep_name=True)
    if kind == "traversal":
        for row in rows:
            row["recordingfile"] = "../../../../outside/secret.wav"
    else:
        os.symlink(secret, day_folder(monitor, start) / rows[0]["recordingfile"])
    cdr_db.insert(rows)
    config = make_config(tmp_path, cdr_db.url)
    with watched(secret.parent) as watch:
        report = run_once(config, RunOptions(now=msk("2026-11-26 09:42")))
        assert watch.touched() == set()
    assert report.exit_code == 0 and report.waiting == 0, report.summary()
    record = archived(tmp_path)[key_of(rows)]
    assert record["recording"] is None and record["recording_problem"] == "refused_path"
    assert not archive_files(tmp_path, ".mp3")


# -- after_upload

class RecordingTarget(ArchiveTarget):
    """The real archive target; notes which WAVs existed when the MP3 was handed over, and
    can fail the upload (the archive disk is offline)."""

    def __init__(self, config: Any, wavs: list[Path], fail: bool = False):
        super().__init__(config.target.archive, config.source.timezone)
        self.wavs, self.fail = wavs, fail
        self.present_at_attach: list[bool] = []

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        self.present_at_attach = [path.exists() for path in self.wavs]
        if self.fail:
            raise DeliveryError("archive: disk offline")
        super().attach(object_id, call, mp3)


def _paused_call(tmp_path: Path, cdr_db: Any, sample_rows: list[dict[str, Any]]) -> tuple[
        list[dict[str, Any]], list[Path], float]:
    """P1-12 (paused and resumed) at 09:30 with its two real WAVs; their total length."""
    start = local("2026-11-26 09:30:00")
    rows = clone_call(legs_of(sample_rows, PAUSE_RESUME), start, keep_name=True)
    cdr_db.insert(rows)
    later = rows[0]["recordingfile"]
    earlier = later.replace("20261126-094026", start.strftime("%Y%m%d-%H%M%S"))
    assert earlier != later
    folder = day_folder(tmp_path / "monitor", start)
    wavs = []
    for name, original, age in ((earlier, "094015", 3611), (later, "094026", 3600)):
        source = SAMPLE_DAY / f"in-74951230001-+79161002312-20261126-{original}-{PAUSE_RESUME}.wav"
        (folder / name).write_bytes(source.read_bytes())
        wavs.append(settle(folder / name, age))
    return rows, wavs, sum(probe(path)["duration"] for path in wavs)


def test_after_upload_delete_removes_both_files_only_once_the_archive_has_the_mp3(
        tmp_path, cdr_db, sample_rows):
    """after_upload = "delete" removes both paused-call WAVs only after the archive took the MP3."""
    # after_upload = "delete" on the paused-and-resumed call: while the archive refuses the MP3,
    # both WAVs stay; once it has taken it, both are removed, and never before the upload (both
    # still existed when the MP3 was handed over).
    rows, wavs, seconds = _paused_call(tmp_path, cdr_db, sample_rows)
    key = key_of(rows)
    config = make_config(tmp_path, cdr_db.url, recordings={"after_upload": "delete"})

    offline = RecordingTarget(config, wavs, fail=True)
    first = run_once(config, RunOptions(now=msk("2026-11-26 09:35")),
                     target_factory=lambda c: offline)
    assert first.failures == 1, first.summary()
    assert offline.present_at_attach == [True, True]
    assert all(path.exists() for path in wavs)
    assert not archive_files(tmp_path, ".mp3")
    assert entry_of(config, key).stage == "created"

    online = RecordingTarget(config, wavs)
    second = run_once(config, RunOptions(now=msk("2026-11-26 09:40")),
                      target_factory=lambda c: online)
    assert second.exit_code == 0 and second.recordings == 1, second.summary()
    assert online.present_at_attach == [True, True]
    assert not any(path.exists() for path in wavs)
    [mp3] = archive_files(tmp_path, ".mp3")
    assert_good_mp3(mp3, seconds)
    assert entry_of(config, key).stage == "done"


def test_after_upload_keep_leaves_the_files(tmp_path, cdr_db, sample_rows):
    """after_upload = "keep" (the default) leaves both WAVs of a paused call as they were."""
    # after_upload = "keep" (the default: FreePBX's own reports play the WAVs back): both files of
    # the paused-and-resumed call are still there, unchanged, after delivery.
    rows, wavs, seconds = _paused_call(tmp_path, cdr_db, sample_rows)
    before = [path.read_bytes() for path in wavs]
    config = make_config(tmp_path, cdr_db.url)
    assert config.recordings.after_upload == "keep"

    report = run_once(config, RunOptions(now=msk("2026-11-26 09:35")))
    assert report.exit_code == 0 and report.recordings == 1, report.summary()
    assert [path.read_bytes() for path in wavs] == before
    [mp3] = archive_files(tmp_path, ".mp3")
    assert_good_mp3(mp3, seconds)


# -- interrupts and timeouts

@pytest.mark.slow
def test_sigterm_mid_encode_leaves_no_temporary_file_and_no_encoder(tmp_path, cdr_db,
                                                                     sample_rows):
    """SIGTERM to `poller run` mid-encode leaves no temporary file, no encoder, the call pending."""
    # systemd stops the service (SIGTERM) while `poller run` encodes a two-hour recording: the run
    # unwinds (exit 1, "interrupted"), the encoder child is gone, state.dir/tmp holds nothing and
    # the call is still at stage `seen`, to be delivered by the next run.
    now = dt.datetime.now(MSK).replace(tzinfo=None, microsecond=0)
    # a two-hour call (a recording far longer than its call is refused unread)
    start = now - dt.timedelta(hours=2, minutes=5)
    rows = clone_call(legs_of(sample_rows, DIRECT_ANSWERED), start, keep_name=True,
                      duration=7200, billsec=7195)
    cdr_db.insert(rows)
    wav = day_folder(tmp_path / "monitor", start) / rows[0]["recordingfile"]
    settle(write_speech_wav(wav, 7200.0))
    config_path = write_config(tmp_path, cdr_db.url, source={
        "start": (start - dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M")})
    cli = subprocess.Popen([sys.executable, "-m", "poller.cli", "--config", str(config_path),
                            "run"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        encoder = wait_for_encoder(cli.pid, timeout=60)
        assert os.getsid(encoder) != os.getsid(cli.pid)
        deadline = time.monotonic() + 60
        while not list((tmp_path / "state" / "tmp").iterdir()):
            assert time.monotonic() < deadline, "the encoder never began the MP3"
            time.sleep(0.01)
        time.sleep(0.2)
        # still encoding
        assert encoders_of(cli.pid) == [encoder]
        assert list((tmp_path / "state" / "tmp").iterdir())  # its MP3 is being written
        cli.send_signal(signal.SIGTERM)
        _, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
        wav.unlink()
    assert cli.returncode == 1, err
    assert "interrupted" in err
    assert encoders_of(cli.pid) == []
    assert list((tmp_path / "state" / "tmp").iterdir()) == []
    assert not archive_files(tmp_path, ".mp3") and not archive_files(tmp_path, ".json")
    assert entry_of(make_config(tmp_path, cdr_db.url), key_of(rows)).stage == "seen"


def test_tiny_timeout_kills_the_encoder(tmp_path):
    """transcode.timeout = "10ms" on a 20-minute WAV: TranscodeError, no encoder left behind."""
    # transcode.timeout = "10ms" on a 20-minute recording: TranscodeError (retried later, not
    # "unreadable"), and no encoder process is left behind.
    source = write_speech_wav(tmp_path / "long-1795675215.55.wav", 1200.0)
    config = TranscodeConfig(timeout=Seconds(0.01))
    started = time.monotonic()
    with pytest.raises(TranscodeError, match="killed"):
        to_mp3([source], tmp_path / "out.mp3", config)
    assert time.monotonic() - started < 5
    assert encoders_of(os.getpid()) == []


@pytest.mark.slow
def test_stuck_decoder_is_killed_with_the_encoder(tmp_path):
    """A hung ffmpeg decoding a wav49 file is killed with the encoder when the timeout strikes."""
    # A wav49 (GSM) recording goes through an ffmpeg decoder inside the encoder child. The decoder
    # hangs (stopped, as on a dead network mount); transcode.timeout kills the whole process group:
    # neither the encoder nor its ffmpeg is left, and to_mp3 raises TranscodeError.
    speech = write_speech_wav(tmp_path / "speech.wav", 1200.0)
    source = tmp_path / "in-x-20261126-094015-1795675215.55.WAV"
    ffmpeg("-i", str(speech), "-c:a", "gsm_ms", "-ar", "8000", str(source))
    # nice 0 and a timeout with room: under load a niced encoder could be killed before it even
    # started its decoder, and the test is about the decoder stuck afterwards
    job = Background(to_mp3, [source], tmp_path / "out.mp3",
                     TranscodeConfig(nice=0, timeout=Seconds(8)))
    job.start()
    decoder = None
    try:
        encoder = wait_for_encoder(os.getpid(), timeout=10)
        decoder = wait_for_process(str(source), program="ffmpeg", timeout=10)
        assert decoder != encoder
        os.kill(decoder, signal.SIGSTOP)  # stuck
        job.join(timeout=30)
        assert not job.is_alive()
        assert isinstance(job.error, TranscodeError), job.error or job.result
        assert encoders_of(os.getpid()) == []
        assert gone(str(source), program="ffmpeg"), "the stuck decoder was left behind"
    finally:
        if decoder is not None and decoder in processes_with(str(source), program="ffmpeg"):
            os.kill(decoder, signal.SIGKILL)
        job.join(timeout=30)


@pytest.mark.parametrize("quiet", ["5s", "2m"])
def test_a_recording_still_being_written_is_looked_at_again_after_recordings_quiet(
        tmp_path, quiet):
    """The time between looks at a file MixMonitor still writes is recordings.quiet."""
    monitor = (tmp_path / "monitor").resolve()
    call = call_of(recorded("in-progress.wav"))
    # a RIFF header whose sizes MixMonitor has not written yet, and audio behind it
    (day_folder(monitor) / "in-progress.wav").write_bytes(
        b"RIFF\0\0\0\0WAVEfmt " + bytes(4000))
    now = soon_after(call)
    plan = plan_recording(call, RecordingsConfig(dir=str(monitor), quiet=parse_duration(quiet)),
                          now)
    assert isinstance(plan, Wait) and "still being written" in plan.note
    assert plan.until == now + dt.timedelta(seconds=parse_duration(quiet))
