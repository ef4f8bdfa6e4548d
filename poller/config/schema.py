"""The configuration's schema: one frozen dataclass per section, with the value types
(durations, secrets) the file's strings become. Secrets are kept in `Secret` values whose repr
never shows them."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from poller.model import record_fields

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Turn "90s", "10m", "4h", "1d" or "250ms" into seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. \"90s\", \"10m\", \"4h\")")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class Seconds(float):
    """A duration in seconds, written in the file as a string such as "4h"."""


class Secret(str):
    """A string that never shows itself in a repr, a log line or a traceback."""

    def __repr__(self) -> str:
        return "Secret('***')" if self else "Secret('')"


@dataclass(frozen=True)
class IncomingRules:
    did_set: bool = True
    channels: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ("from-trunk", "from-pstn")


# the columns cdr_csv writes, in file order: the 16 it always writes, then uniqueid
# (loguniqueid), userfield (loguserfield), then peeraccount, linkedid, sequence (newcdrcolumns)
CSV_BASE_COLUMNS = (
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp",
    "lastdata", "start", "answer", "end", "duration", "billsec", "disposition", "amaflags",
)
CSV_COLUMNS = (*CSV_BASE_COLUMNS, "uniqueid", "userfield", "peeraccount", "linkedid", "sequence")
SOURCE_KINDS = ("table", "csv")


@dataclass(frozen=True)
class CsvConfig:
    """`[source.csv]`: Asterisk's Master.csv, for `source.kind = "csv"`."""

    path: str = "/var/log/asterisk/cdr-csv/Master.csv"
    columns: str | tuple[str, ...] = "auto"  # or the column names in file order


@dataclass(frozen=True)
class ReconcileConfig:
    """`[source.reconcile]`: the Master.csv beside a table, for the calls the database lost."""

    csv: str = ""  # "" = off

    @property
    def enabled(self) -> bool:
        return bool(self.csv)


@dataclass(frozen=True)
class SourceConfig:
    name: str = ""  # the PBX's name: prefixes its call keys, the call field `pbx`
    kind: str = "table"
    url: Secret = Secret("")
    table: str = "cdr"
    timezone: str = "UTC"
    legacy_encoding: str = "cp1251"
    start: str = ""
    cursor: str = "calldate"
    lookback: Seconds = Seconds(4 * 3600)
    settle: Seconds = Seconds(60)
    batch_size: int = 1000
    # a leg longer than this (or ending in the future) is a broken row: it is clamped
    max_call_length: Seconds = Seconds(24 * 3600)
    incoming: IncomingRules = field(default_factory=IncomingRules)
    csv: CsvConfig = field(default_factory=CsvConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)


@dataclass(frozen=True)
class StateConfig:
    dir: str = "/var/lib/poller"
    url: Secret = Secret("")
    retention: Seconds = Seconds(90 * 86400)  # delivered calls are forgotten after this

    @property
    def database_url(self) -> str:
        return self.url or f"sqlite:///{Path(self.dir).resolve() / 'state.db'}"


@dataclass(frozen=True)
class RetryConfig:
    max_attempts: int = 20
    backoff: Seconds = Seconds(60)
    max_backoff: Seconds = Seconds(6 * 3600)


@dataclass(frozen=True)
class RecordingsConfig:
    dir: str = "/var/spool/asterisk/monitor"
    name: str = "{calldate:%Y/%m/%d}/{recordingfile}"
    wait: Seconds = Seconds(600)
    min_bytes: int = 1024
    after_upload: str = "keep"
    quiet: Seconds = Seconds(30)  # a file still being written is looked at again this much later


@dataclass(frozen=True)
class TranscodeConfig:
    ffmpeg: str = "ffmpeg"
    bitrate: str = "32k"
    nice: int = 19  # the PBX keeps >= 95 % of a core it shares with the encoder (bench row 4)
    timeout: Seconds = Seconds(600)


@dataclass(frozen=True)
class MetricsConfig:
    file: str = ""


@dataclass(frozen=True)
class ArchiveConfig:
    dir: str = "/var/lib/poller/archive"
    keep_days: int = 0  # 0 keeps everything
    locale: str = "en"  # language and date format of the archive's HTML pages


@dataclass(frozen=True)
class EaslaConfig:
    url: str = "https://easla.com/user/soap"
    login: str = "poller"
    password: Secret = Secret("")
    process: str = "call_management"
    objectdef: str = "incoming_call"
    objectdef_version: int = 0
    file_attribute: str = "incoming_call_file"
    timeout: Seconds = Seconds(60)
    verify_tls: bool = True
    ca_bundle: str = ""
    session_fault: str = "(?i)session|auth|login"
    start_format: str = "%Y-%m-%d %H:%M:%S"
    attributes: Mapping[str, str] = field(
        default_factory=lambda: {
            "key": "incoming_call_key",
            "number": "incoming_call_number",
            "duration": "incoming_call_time",
            "status": "status",
        }
    )
    statuses: Mapping[str, str] = field(
        default_factory=lambda: {
            "answered": "incoming_call_answered",
            "unanswered": "incoming_call_unanswered",
            "busy": "incoming_call_busy",
            "impossible": "incoming_call_congestion",
        }
    )


SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24  # the Standard Webhooks specification asks for 24 to 64 random bytes


def signing_key(secret: str) -> bytes:
    """The HMAC key a Standard Webhooks secret (`whsec_` and base64) stands for; a ValueError
    that never quotes the secret when it is not one."""
    text = secret.removeprefix(SECRET_PREFIX)
    if not re.fullmatch(r"[A-Za-z0-9+/]+={0,2}", text):
        raise ValueError("not a Standard Webhooks secret (whsec_ followed by base64)")
    key = base64.b64decode(text + "=" * (-len(text) % 4))
    if len(key) < SECRET_BYTES:
        raise ValueError(f"{len(key)} bytes is too short: give {SECRET_BYTES} or more random "
                         "bytes (e.g. whsec_ and the output of `openssl rand -base64 32`)")
    return key


@dataclass(frozen=True)
class WebhookConfig:
    """`[target.webhook]`: one signed POST per call (and per incident event) to `url`."""

    # a Secret: a receiver's URL may hold its credential (an automation's secret path)
    url: Secret = Secret("")
    secret: Secret = Secret("")  # whsec_<base64>, as the Standard Webhooks specification has it
    timeout: Seconds = Seconds(60)
    verify_tls: bool = True
    ca_bundle: str = ""
    # sent with every request; a value may be a credential (Authorization), so kept as Secret
    headers: Mapping[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetConfig:
    kind: str = "archive"
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    easla: EaslaConfig = field(default_factory=EaslaConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)


@dataclass(frozen=True)
class CallersConfig:
    """`[callers]`: the caller directory. Without `csv` or `url` there is none."""

    country: str = ""  # region for numbers written without a country code, e.g. "RU"
    csv: str = ""
    url: Secret = Secret("")
    query: str = ""
    refresh: Seconds = Seconds(600)
    fields: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.csv or self.url)


@dataclass(frozen=True)
class IncidentsConfig:
    """`[incidents]`: which calls open an incident. No statuses (the default): none do."""

    statuses: tuple[str, ...] = ()
    callers: str = "known"
    hours: str = ""
    fold: Seconds = Seconds(1800)
    objectdef: str = "incident"
    objectdef_version: int = 0
    attributes: Mapping[str, str] = field(
        default_factory=lambda: {
            "incident_title": "Missed call from {caller_name} {number}",
            "incident_call": "{key}",
        }
    )

    @property
    def enabled(self) -> bool:
        return bool(self.statuses)


@dataclass(frozen=True)
class Config:
    source: SourceConfig = field(default_factory=SourceConfig)
    state: StateConfig = field(default_factory=StateConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    recordings: RecordingsConfig = field(default_factory=RecordingsConfig)
    transcode: TranscodeConfig = field(default_factory=TranscodeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    callers: CallersConfig = field(default_factory=CallersConfig)
    incidents: IncidentsConfig = field(default_factory=IncidentsConfig)


TARGET_KINDS = ("easla", "archive", "webhook")
ARCHIVE_LOCALES = ("en", "ru")


# the call fields [callers] and [incidents] add to the record (design section 10)
CALLER_FIELDS = ("number_e164", "caller_id", "caller_name", "incident")
# the columns a directory row must or may have besides those named in callers.fields
DIRECTORY_COLUMNS = ("number", "name", "id")


def incident_fields(callers: CallersConfig) -> tuple[str, ...]:
    """The call fields a record has with these callers settings: what an
    `[incidents.attributes]` template may use and `target.easla.attributes` may map."""
    return record_fields(callers.fields)

