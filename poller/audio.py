"""Reading what MixMonitor writes, in one-second chunks, and checking the MP3 that comes out.

16-bit PCM WAV is read directly and A-law/μ-law WAV decoded in C (audioop); GSM (`wav49`), the
headerless formats Asterisk names by extension (`.gsm`, `.ulaw`, `.sln16`, ...) and anything else
ffprobe recognises go through ffmpeg, streamed through a pipe, so memory stays flat whatever the
length of the call. A file longer than its call allows is refused as soon as that shows.
"""

from __future__ import annotations

import contextlib
import struct
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, NamedTuple

with warnings.catch_warnings():
    # deprecated on Python 3.11-3.12 (audioop-lts provides it from 3.13 on)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCM, ALAW, MULAW, GSM610, EXTENSIBLE = 0x0001, 0x0006, 0x0007, 0x0031, 0xFFFE
FORMAT_NAMES = {PCM: "PCM", ALAW: "A-law", MULAW: "mu-law", GSM610: "GSM 6.10 (wav49)"}


class UnreadableAudio(Exception):
    """The file is truncated, corrupt or not audio."""


class DecoderMissing(Exception):
    """The file needs ffmpeg and the configured ffmpeg cannot be run."""


class WavInfo(NamedTuple):
    """The `fmt ` and `data` chunks of a RIFF/WAVE file."""

    tag: int
    channels: int
    rate: int
    bits: int
    data_offset: int
    data_size: int  # as the header says; 0 while MixMonitor is still writing
    file_size: int

    @property
    def name(self) -> str:
        return FORMAT_NAMES.get(self.tag, f"format 0x{self.tag:04x}")

    @property
    def declared_complete(self) -> bool:
        return 0 < self.data_size and self.data_offset + self.data_size <= self.file_size


def wav_info(path: Path) -> WavInfo | None:
    """The WAV header, None for a file that is not RIFF/WAVE; UnreadableAudio if it is broken."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        fmt: tuple[int, int, int, int] | None = None
        while True:
            chunk = handle.read(8)
            if len(chunk) < 8:
                raise UnreadableAudio("no data chunk (truncated header)")
            kind, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if kind == b"fmt ":
                body = handle.read(length)
                if len(body) < 16:
                    raise UnreadableAudio("truncated fmt chunk")
                tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
                if tag == EXTENSIBLE and len(body) >= 26:
                    tag = struct.unpack("<H", body[24:26])[0]
                fmt = (tag, channels, rate, bits)
                if length % 2:
                    handle.read(1)
            elif kind == b"data":
                if fmt is None:
                    raise UnreadableAudio("data chunk before fmt chunk")
                if not fmt[1] or not fmt[2]:
                    raise UnreadableAudio("no channels or no sample rate in the header")
                return WavInfo(*fmt, handle.tell(), length, size)
            else:
                handle.seek(length + (length % 2), 1)


class RawFormat(NamedTuple):
    """A headerless format Asterisk writes: only the file's extension says what it holds."""

    options: tuple[str, ...]  # ffmpeg's input options for it
    rate: int  # samples per second
    bytes_per_second: int


def _slin(rate: int) -> RawFormat:
    return RawFormat(("-f", "s16le", "-ar", str(rate), "-ac", "1"), rate, 2 * rate)


def _g711(name: str) -> RawFormat:
    return RawFormat(("-f", name, "-ar", "8000", "-ac", "1"), 8000, 8000)


# Asterisk's format modules and their extensions (format_gsm, format_pcm, format_sln,
# format_g722, format_g726, format_g729); G.726 in RFC 3551 packing, which ffmpeg calls g726le
RAW_FORMATS: dict[str, RawFormat] = {
    "gsm": RawFormat(("-f", "gsm"), 8000, 1650),
    **dict.fromkeys(("ulaw", "ul", "mu", "ulw", "pcm"), _g711("mulaw")),
    **dict.fromkeys(("alaw", "al", "alw"), _g711("alaw")),
    **dict.fromkeys(("sln", "raw"), _slin(8000)),
    **{f"sln{khz}": _slin(rate) for khz, rate in ((12, 12000), (16, 16000), (24, 24000),
                                                  (32, 32000), (44, 44100), (48, 48000),
                                                  (96, 96000), (192, 192000))},
    "g722": RawFormat(("-f", "g722"), 16000, 8000),
    **{f"g726-{bits * 8}": RawFormat(("-f", "g726le", "-code_size", str(bits)), 8000, bits * 1000)
       for bits in (2, 3, 4, 5)},
    "g729": RawFormat(("-f", "g729"), 8000, 1000),
}
GSM_FRAME = 33
LAME_MAX_RATE = 48000


def raw_format(path: Path) -> RawFormat | None:
    """The headerless format the file's extension names, None for any other file."""
    return RAW_FORMATS.get(path.suffix[1:].lower())


def is_mp3(path: Path) -> bool:
    if raw_format(path) is not None:
        return False  # μ-law silence (0xFF 0xFF) looks like an MP3 frame sync
    with open(path, "rb") as handle:
        head = handle.read(3)
    return head == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)


class Shape(NamedTuple):
    """What the encoder is fed: 16-bit little-endian PCM at this rate, mono."""

    rate: int


def pcm_chunks(path: Path, shape: Shape | None, ffmpeg: str,
               max_seconds: float | None = None) -> tuple[Shape, Iterator[bytes]]:
    """Mono 16-bit PCM in about one-second chunks, at `shape` (or the file's own rate).

    A file longer than `max_seconds` is UnreadableAudio: at once where its header or size tells
    its length, else as soon as that much has been decoded.
    """
    info = wav_info(path)
    if info is not None and info.tag in (PCM, ALAW, MULAW):
        if info.data_size and not info.declared_complete:
            raise UnreadableAudio(f"truncated: the header promises {info.data_size} bytes of "
                                  f"audio, the file holds {info.file_size - info.data_offset}")
        if info.data_size == 0:
            raise UnreadableAudio("the WAV header was never completed (writer stopped?)")
        frame = info.channels * max(1, info.bits // 8)
        _within(path, info.data_size / (info.rate * frame), max_seconds, "by its header")
        direct = (info.tag == PCM and info.bits == 16) or (info.tag != PCM and info.bits == 8)
        if direct and (shape is None or shape.rate == info.rate):
            return Shape(info.rate), _bounded(_read_direct(path, info), info.rate, max_seconds,
                                              path)
    raw = raw_format(path) if info is None else None
    if raw is not None:
        if raw is RAW_FORMATS["gsm"]:
            _check_gsm(path)
        _within(path, path.stat().st_size / raw.bytes_per_second, max_seconds, "by its size")
        rate = shape.rate if shape else min(raw.rate, LAME_MAX_RATE)
    else:
        rate = shape.rate if shape else (info.rate if info else 8000)
    stream = _read_ffmpeg(path, rate, ffmpeg, raw.options if raw else (), known=info is not None,
                          max_seconds=max_seconds)
    return Shape(rate), _bounded(stream, rate, max_seconds, path)


def _check_gsm(path: Path) -> None:
    """Every GSM 06.10 frame starts with the nibble 0xD: the one sign that a headerless `.gsm`
    holds GSM at all (ffmpeg decodes any bytes into noise)."""
    with open(path, "rb") as handle:
        head = handle.read(GSM_FRAME * 50)
    for index in range(0, len(head) - GSM_FRAME + 1, GSM_FRAME):
        if head[index] >> 4 != 0xD:
            raise UnreadableAudio(f"not GSM: frame {index // GSM_FRAME} lacks GSM's signature")
    if len(head) < GSM_FRAME:
        raise UnreadableAudio("not GSM: shorter than one frame")


def _within(path: Path, seconds: float, max_seconds: float | None, how: str) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise UnreadableAudio(_too_long(path, f"lasts {_span(seconds)} {how}", max_seconds))


def _too_long(path: Path, what: str, max_seconds: float) -> str:
    return f"implausible length: {path.name} {what}; its call allows {max_seconds:.0f} s at most"


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" + (f" ({seconds / 3600:.1f} h)" if seconds >= 3600 else "")


def _bounded(chunks: Generator[bytes, None, None], rate: int, max_seconds: float | None,
             path: Path) -> Iterator[bytes]:
    """The chunks, cut off with UnreadableAudio once they run past `max_seconds`; the decoder
    behind them is closed (an ffmpeg child killed) on every path."""
    limit = None if max_seconds is None else int(max_seconds * rate) * 2
    got = 0
    with contextlib.closing(chunks):
        for chunk in chunks:
            got += len(chunk)
            if limit is not None and got > limit:
                seconds = max_seconds or 0.0
                raise UnreadableAudio(_too_long(
                    path, f"lasts over {seconds:.0f} s (decoding stopped there)", seconds))
            yield chunk


def _read_direct(path: Path, info: WavInfo) -> Generator[bytes, None, None]:
    width = info.bits // 8
    frame = width * info.channels
    chunk = info.rate * frame
    remaining = info.data_size - info.data_size % frame
    with open(path, "rb") as handle:
        handle.seek(info.data_offset)
        while remaining > 0:
            data = handle.read(min(chunk, remaining))
            if not data:
                break
            remaining -= len(data)
            yield _to_mono16(data, info)


def _to_mono16(data: bytes, info: WavInfo) -> bytes:
    if info.tag == ALAW:
        data = audioop.alaw2lin(data, 2)
    elif info.tag == MULAW:
        data = audioop.ulaw2lin(data, 2)
    if info.channels == 2:
        data = audioop.tomono(data, 2, 0.5, 0.5)
    elif info.channels > 2:
        first = bytearray()
        step = 2 * info.channels
        for offset in range(0, len(data) - step + 1, step):
            first += data[offset:offset + 2]
        data = bytes(first)
    return data


def _read_ffmpeg(path: Path, rate: int, ffmpeg: str, options: tuple[str, ...], known: bool,
                 max_seconds: float | None) -> Generator[bytes, None, None]:
    """`options` name a headerless input's format; without them ffmpeg finds it by content,
    after ffprobe has said there is audio in it (`known`: a WAV or MP3 by its header)."""
    import shutil  # here, not at the top: the common PCM path needs neither it nor subprocess

    executable = shutil.which(ffmpeg)
    if executable is None:
        raise DecoderMissing(f"{path.name} needs ffmpeg to decode, and {ffmpeg!r} was not found "
                             "(install ffmpeg or set transcode.ffmpeg)")
    if not options:
        _probe(path, known or is_mp3(path))
    # ffmpeg stops a second past the limit by itself, so a runaway file costs no more than that
    limit = () if max_seconds is None else ("-t", f"{max_seconds + 1:.0f}")
    return _ffmpeg_stream([executable, "-nostdin", "-v", "error", *options, "-i", str(path),
                           *limit], rate)


def _probe(path: Path, known: bool) -> None:
    """Ask ffprobe, through pydub, whether the file holds audio at all: a clear reason for a
    file that is not a recording, before a decoder is started on it."""
    import shutil

    if shutil.which("ffprobe") is None:
        return  # pydub's probe needs ffprobe on PATH; the decode will tell instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydub's audioop DeprecationWarning
        from pydub.utils import mediainfo_json

        try:
            info = mediainfo_json(str(path))
        except Exception as exc:  # a file ffprobe cannot even open
            raise UnreadableAudio(f"ffprobe cannot read it: {exc}") from None
    streams = info.get("streams") or []
    if not any(s.get("codec_type") == "audio" for s in streams):
        kind = (info.get("format") or {}).get("format_name", "unknown format")
        if known:
            raise UnreadableAudio(f"no audio stream in it ({kind})")
        raise UnreadableAudio(f"neither a WAV nor an MP3 file, nor audio ffprobe knows ({kind})")


def _ffmpeg_stream(command: list[str], rate: int) -> Generator[bytes, None, None]:
    import subprocess

    command = [*command, "-f", "s16le", "-ac", "1", "-ar", str(rate), "-"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    try:
        got = False
        while True:
            data = _read_full(process.stdout, rate * 2)
            if not data:
                break
            got = True
            yield data
        errors = process.stderr.read().decode(errors="replace").strip()
        if process.wait() != 0 or not got:
            raise UnreadableAudio(f"ffmpeg could not decode it: {errors[-300:] or 'no audio'}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _read_full(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        data = stream.read(left)
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


# MPEG audio frame header tables (ISO 11172-3 / 13818-3, MPEG 2.5)
_BITRATES = {
    (3, 1): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),  # MPEG1 L3
    (2, 1): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),  # MPEG2/2.5 L3
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_seconds(path: Path, max_seconds: float | None = None) -> float:
    """The audio length of an MP3 by walking its frame headers; UnreadableAudio if broken or,
    as soon as the walk passes it, longer than `max_seconds`."""
    seconds, frames = 0.0, 0
    with open(path, "rb") as handle:
        data = handle.read(10)
        if data[:3] == b"ID3":
            tag = ((data[6] & 0x7F) << 21) | ((data[7] & 0x7F) << 14) | \
                  ((data[8] & 0x7F) << 7) | (data[9] & 0x7F)
            handle.seek(10 + tag)
        else:
            handle.seek(0)
        while True:
            header = handle.read(4)
            if len(header) < 4 or header[:3] == b"TAG":
                break
            if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
                raise UnreadableAudio(f"MP3 frame sync lost after {frames} frames")
            version = (header[1] >> 3) & 3
            layer = (header[1] >> 1) & 3
            index, rate_index = header[2] >> 4, (header[2] >> 2) & 3
            if version == 1 or layer != 1 or index in (0, 15) or rate_index == 3:
                raise UnreadableAudio(f"not an MPEG layer III frame after {frames} frames")
            bitrate = _BITRATES[(3, 1) if version == 3 else (2, 1)][index] * 1000
            rate = _RATES[version][rate_index]
            samples = 1152 if version == 3 else 576
            length = samples // 8 * bitrate // rate + ((header[2] >> 1) & 1)
            handle.seek(length - 4, 1)
            seconds += samples / rate
            frames += 1
            if max_seconds is not None and seconds > max_seconds:
                raise UnreadableAudio(_too_long(path, f"lasts over {max_seconds:.0f} s",
                                                max_seconds))
    if frames == 0:
        raise UnreadableAudio("no MP3 frames")
    return seconds
