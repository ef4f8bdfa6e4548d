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

import shutil
import subprocess

from poller.recordings.formats import (
    GSM_FRAME,
    LAME_MAX_RATE,
    RAW_FORMATS,
    UnreadableAudio,
    is_mp3,
    mp3_seconds,
    raw_format,
    span,
    too_long,
)

# re-exported: the encoder and tests know them as poller.audio's
__all__ = ["UnreadableAudio", "is_mp3", "mp3_seconds", "raw_format"]

PCM, ALAW, MULAW, GSM610, EXTENSIBLE = 0x0001, 0x0006, 0x0007, 0x0031, 0xFFFE
FORMAT_NAMES = {PCM: "PCM", ALAW: "A-law", MULAW: "mu-law", GSM610: "GSM 6.10 (wav49)"}


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
        raise UnreadableAudio(too_long(path, f"lasts {span(seconds)} {how}", max_seconds))


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
                raise UnreadableAudio(too_long(
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

    if shutil.which("ffprobe") is None:
        return  # pydub's probe needs ffprobe on PATH; the decode will tell instead
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydub's audioop DeprecationWarning
        # pydub only for a format Python cannot read itself: most recordings never load it
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


