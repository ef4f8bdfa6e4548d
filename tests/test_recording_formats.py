"""Every format Asterisk records in, through the real encoder child and real ffmpeg, and the
length rule: a recording far longer than its call is refused before it is decoded in full.

The headerless formats (`.gsm`, `.ulaw`, `.sln16`, ...) are made by ffmpeg from real 8 kHz
speech (Debian's asterisk-core-sounds-en-wav, else the MixMonitor samples in tests/data) and
must come out as long as the speech they hold.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from support import P1_12_LEG, SAMPLES, call_of, leg

from poller.config.schema import RecordingsConfig, TranscodeConfig
from poller.model import Call
from poller.recordings.encoder import RECORDING_MARGIN
from poller.recordings.files import Plan, plan_recording, siblings
from poller.recordings.formats import mp3_seconds
from poller.recordings.transcode import Encoded, Unreadable, to_mp3

FFMPEG = shutil.which("ffmpeg") and shutil.which("ffprobe")
# under CI (.ci/run installs ffmpeg) a missing ffmpeg must fail, not skip quietly
needs_ffmpeg = pytest.mark.skipif(not FFMPEG and not os.environ.get("CI"),
                                  reason="ffmpeg and ffprobe are not installed")
pytestmark = needs_ffmpeg

SOUNDS = [Path("/usr/share/asterisk/sounds/en"),
          Path("/usr/share/asterisk/sounds/en_US_f_Allison")]
SPEECH_SECONDS = 20.0
TOLERANCE = 0.5  # seconds between the source's length and the MP3's
CALL_SECONDS = 30
STAMP = dt.datetime(2026, 11, 26, 9, 40, 15)
UNIQUEID = "1795675215.55"

# what MixMonitor writes for each format: ffmpeg's output options from 8 kHz speech, extension
FORMATS = {
    "gsm": (["-f", "gsm"], "gsm"),
    "ulaw": (["-f", "mulaw"], "ulaw"),
    "ul": (["-f", "mulaw"], "ul"),
    "pcm (mu-law)": (["-f", "mulaw"], "pcm"),
    "alaw": (["-f", "alaw"], "alaw"),
    "sln": (["-f", "s16le"], "sln"),
    "raw": (["-f", "s16le"], "raw"),
    "sln16": (["-ar", "16000", "-f", "s16le"], "sln16"),
    "sln48": (["-ar", "48000", "-f", "s16le"], "sln48"),
    "sln96": (["-ar", "96000", "-f", "s16le"], "sln96"),
    "g722": (["-ar", "16000", "-f", "g722"], "g722"),
    "g726-32": (["-c:a", "g726le", "-b:a", "32k", "-f", "g726le"], "g726-32"),
    "g726-16": (["-c:a", "g726le", "-b:a", "16k", "-f", "g726le"], "g726-16"),
    "wav49 (.WAV)": (["-c:a", "gsm_ms", "-f", "wav"], "WAV"),
    "wav49": (["-c:a", "gsm_ms", "-f", "wav"], "wav49"),
    "wav16": (["-ar", "16000", "-f", "wav"], "wav16"),
    "au": (["-f", "au"], "au"),
    "ogg vorbis": (["-c:a", "libvorbis", "-f", "ogg"], "ogg"),
    "mp3": (["-c:a", "libmp3lame", "-b:a", "32k", "-f", "mp3"], "mp3"),
}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def speech_source() -> Path:
    for folder in SOUNDS:
        if (folder / "demo-instruct.wav").is_file():
            return folder / "demo-instruct.wav"
    samples = sorted((SAMPLES / "recordings").rglob("*.wav"), key=lambda p: -p.stat().st_size)
    return samples[0]


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real telephony speech, 8 kHz 16-bit mono, SPEECH_SECONDS long (looped if shorter)."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    ffmpeg("-stream_loop", "-1", "-i", str(speech_source()), "-t", str(SPEECH_SECONDS),
           "-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le", str(path))
    return path


def mixmonitor_name(ext: str, stamp: dt.datetime = STAMP) -> str:
    return f"in-74951230001-+79161002312-{stamp:%Y%m%d-%H%M%S}-{UNIQUEID}.{ext}"


def made(speech: Path, folder: Path, kind: str) -> Path:
    options, ext = FORMATS[kind]
    path = folder / mixmonitor_name(ext)
    ffmpeg("-i", str(speech), *options, str(path))
    return path


def encode(source: Path | list[Path], target: Path, call_seconds: float | None = CALL_SECONDS
           ) -> Encoded:
    sources = source if isinstance(source, list) else [source]
    return to_mp3(sources, target, TranscodeConfig(nice=0), call_seconds=call_seconds)


# -- every format decodes, as long as the speech it holds

@pytest.mark.slow  # one encoder child and ffmpeg per format
@pytest.mark.parametrize("kind", FORMATS)
def test_each_asterisk_format_becomes_an_mp3_as_long_as_its_speech(tmp_path, speech, kind):
    """20 s of speech in each format Asterisk records becomes an MP3 of 20 s (within 0.5 s)."""
    # The headerless ones have nothing but their extension to say what they are; ffprobe alone
    # cannot tell μ-law from A-law or 8 kHz from 16 kHz linear.
    source = made(speech, tmp_path, kind)
    mp3 = tmp_path / "out.mp3"

    encoded = encode(source, mp3)

    assert abs(encoded.seconds - SPEECH_SECONDS) <= TOLERANCE, encoded
    assert abs(mp3_seconds(mp3) - SPEECH_SECONDS) <= TOLERANCE


def test_mu_law_opening_in_silence_is_not_taken_for_an_mp3(tmp_path, speech):
    """μ-law silence is 0xFF bytes, an MP3 frame sync to a sniffer: the extension decides."""
    source = made(speech, tmp_path, "ulaw")
    source.write_bytes(b"\xff" * 8000 + source.read_bytes())  # one second of silence first

    encoded = encode(source, tmp_path / "out.mp3")

    assert abs(encoded.seconds - (SPEECH_SECONDS + 1)) <= TOLERANCE


def test_a_wav_named_as_a_raw_format_is_read_by_its_header(tmp_path, speech):
    """A RIFF header says more than a name: a 16 kHz WAV named `.ulaw` is still 20 s long."""
    source = tmp_path / mixmonitor_name("ulaw")
    ffmpeg("-i", str(speech), "-ar", "16000", "-f", "wav", str(source))

    assert abs(encode(source, tmp_path / "out.mp3").seconds - SPEECH_SECONDS) <= TOLERANCE


@pytest.mark.slow  # an encoder child
def test_paused_and_resumed_raw_files_are_joined(tmp_path, speech):
    """*7/*8 in a `.g726-32` recording: both files, found as siblings, make one 40 s MP3."""
    first = made(speech, tmp_path, "g726-32")
    second = tmp_path / mixmonitor_name("g726-32", STAMP + dt.timedelta(seconds=24))
    shutil.copyfile(first, second)

    files = siblings(tmp_path, second)
    encoded = encode(files, tmp_path / "out.mp3")

    assert files == [first, second]
    assert abs(encoded.seconds - 2 * SPEECH_SECONDS) <= TOLERANCE


# -- the plan takes raw files like any other

def call_naming(recordingfile: str) -> Call:
    return call_of(leg("2026-11-26 09:40:15", **{**P1_12_LEG, "uniqueid": UNIQUEID,
                                                 "duration": CALL_SECONDS,
                                                 "billsec": CALL_SECONDS - 2,
                                                 "recordingfile": recordingfile}))


def plan_for(monitor: Path, path: Path) -> object:
    call = call_naming(path.name)
    os.utime(path, (0, 0))  # long finished
    return plan_recording(call, RecordingsConfig(dir=str(monitor)),
                          call.end + dt.timedelta(seconds=60))


@pytest.mark.parametrize("ext", ["gsm", "ulaw", "alaw", "sln16", "g722", "g726-32", "WAV"])
def test_a_raw_recording_named_by_recordingfile_is_planned(tmp_path, speech, ext):
    folder = tmp_path / "monitor" / "2026" / "11" / "26"
    folder.mkdir(parents=True)
    path = folder / mixmonitor_name(ext)
    path.write_bytes(b"\xd0" * 4096)

    assert plan_for(tmp_path / "monitor", path) == Plan((path.resolve(),))


def test_a_zero_length_raw_recording_is_empty(tmp_path):
    folder = tmp_path / "monitor" / "2026" / "11" / "26"
    folder.mkdir(parents=True)
    path = folder / mixmonitor_name("ulaw")
    path.touch()

    assert plan_for(tmp_path / "monitor", path) == Plan((), "empty")


# -- corrupt raw files

def test_a_gsm_file_that_holds_no_gsm_is_unreadable(tmp_path):
    """Text named `.gsm` would decode into noise: GSM frames carry a signature it lacks."""
    source = tmp_path / mixmonitor_name("gsm")
    source.write_bytes(b"<html><body>502 Bad Gateway</body></html>\n" * 200)

    with pytest.raises(Unreadable, match="not GSM"):
        encode(source, tmp_path / "out.mp3")


def test_a_gsm_file_cut_mid_frame_keeps_its_whole_frames(tmp_path, speech):
    source = made(speech, tmp_path, "gsm")
    with open(source, "r+b") as handle:
        handle.truncate(source.stat().st_size - 10)

    assert abs(encode(source, tmp_path / "out.mp3").seconds - SPEECH_SECONDS) <= TOLERANCE


def test_a_zero_length_raw_file_given_to_the_encoder_is_unreadable(tmp_path):
    source = tmp_path / mixmonitor_name("alaw")
    source.touch()

    with pytest.raises(Unreadable):
        encode(source, tmp_path / "out.mp3")


def test_bytes_that_are_no_audio_at_all_are_unreadable(tmp_path):
    source = tmp_path / mixmonitor_name("wav")
    source.write_bytes(b"\x00\x01\x02\x03" + bytes(range(256)) * 200)

    with pytest.raises(Unreadable, match="neither a WAV nor an MP3"):
        encode(source, tmp_path / "out.mp3")


# -- the length rule

def sparse_wav(path: Path, size: int = 1 << 30) -> Path:
    """A complete 16-bit 8 kHz header over `size` bytes of holes: 18.6 h of silence on paper,
    a few kB on disk."""
    with open(path, "wb") as out:
        out.write(b"RIFF" + struct.pack("<I", size - 8) + b"WAVE" + b"fmt " +
                  struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" +
                  struct.pack("<I", size - 44))
        out.truncate(size)
    assert path.stat().st_blocks * 512 < 1 << 20, "the file system does not keep holes"
    return path


def test_a_sparse_gigabyte_wav_on_a_30_second_call_is_refused_before_decoding(tmp_path):
    """The 1 GB WAV with a complete header that once became an 18.6-hour MP3 on a 30 s call."""
    source = sparse_wav(tmp_path / mixmonitor_name("wav"))
    mp3 = tmp_path / "out.mp3"

    with pytest.raises(Unreadable, match="implausible length") as caught:
        encode(source, mp3)

    assert "18.6 h" in str(caught.value) and source.name in str(caught.value)
    assert mp3.stat().st_size == 0  # not one second was encoded


def test_a_sparse_raw_file_is_refused_by_its_size(tmp_path):
    source = tmp_path / mixmonitor_name("sln")
    with open(source, "wb") as out:
        out.truncate(1 << 30)

    with pytest.raises(Unreadable, match="implausible length.*by its size"):
        encode(source, tmp_path / "out.mp3")
    assert (tmp_path / "out.mp3").stat().st_size == 0


@pytest.mark.slow  # encodes the ten minutes the call allows before it stops
def test_a_long_recording_without_a_length_in_its_header_stops_at_the_bound(tmp_path, speech):
    """40 minutes of wav49 (its header gives no length the reader trusts) on a 30 s call: the
    encoder stops once it has decoded what the call allows, and writes no more."""
    source = tmp_path / mixmonitor_name("WAV")
    ffmpeg("-stream_loop", "-1", "-i", str(speech), "-t", "2400", "-c:a", "gsm_ms", str(source))
    mp3 = tmp_path / "out.mp3"

    with pytest.raises(Unreadable, match="implausible length.*decoding stopped"):
        encode(source, mp3)

    allowed = CALL_SECONDS + RECORDING_MARGIN
    assert mp3.stat().st_size <= (allowed + 5) * 32000 / 8  # 32 kbit/s, not the 40 minutes


def test_a_recording_within_the_margin_is_kept(tmp_path, speech):
    """Whole-second cdr durations and hangup handlers: a recording longer than its call by less
    than the margin is attached."""
    assert abs(encode(speech, tmp_path / "out.mp3", call_seconds=5).seconds
               - SPEECH_SECONDS) <= TOLERANCE


def test_each_file_of_a_call_is_bounded_on_its_own(tmp_path, speech):
    """A transfer's recordings may overlap in time: two files, each within the bound, are joined
    even when together they last longer than the call and its margin allow."""
    files = [speech, speech]

    encoded = encode(files, tmp_path / "out.mp3", call_seconds=SPEECH_SECONDS - RECORDING_MARGIN)

    assert abs(encoded.seconds - 2 * SPEECH_SECONDS) <= TOLERANCE


@pytest.mark.slow  # an encoder child
def test_without_a_call_duration_nothing_is_bounded(tmp_path):
    """to_mp3 called without a call (a tool, an old caller) keeps the old behaviour."""
    source = sparse_wav(tmp_path / mixmonitor_name("wav"), size=44 + 700 * 16000)

    encoded = encode(source, tmp_path / "out.mp3", call_seconds=None)

    assert abs(encoded.seconds - 700) <= TOLERANCE
