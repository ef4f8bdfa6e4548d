"""What the files around a recording are: Asterisk's headerless formats by extension, and the
length of an MP3 by its frame headers."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class UnreadableAudio(Exception):
    """The file is truncated, corrupt or not audio."""


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


def too_long(path: Path, what: str, max_seconds: float) -> str:
    return f"implausible length: {path.name} {what}; its call allows {max_seconds:.0f} s at most"


def span(seconds: float) -> str:
    return f"{seconds:.0f} s" + (f" ({seconds / 3600:.1f} h)" if seconds >= 3600 else "")


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
                raise UnreadableAudio(too_long(path, f"lasts over {max_seconds:.0f} s",
                                                max_seconds))
    if frames == 0:
        raise UnreadableAudio("no MP3 frames")
    return seconds
