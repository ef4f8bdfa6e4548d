"""The TOML configuration, validated once at start into frozen dataclasses.

Every problem is collected and reported together, each naming its key; secrets are kept in
`Secret` values whose repr never shows them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .model import RECORD_FIELDS, STATUSES

DEFAULT_PATH = Path("/etc/poller/poller.toml")
ENV_CONFIG = "POLLER_CONFIG"
ENV_OVERRIDES = {
    ("source", "url"): "POLLER_SOURCE_URL",
    ("state", "url"): "POLLER_STATE_URL",
    ("target", "easla", "password"): "POLLER_EASLA_PASSWORD",
    ("callers", "url"): "POLLER_CALLERS_URL",
}

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


def redact_url(url: str) -> str:
    """A database URL with its password replaced, fit for messages."""
    # a password may hold "@" and "/" unescaped (SQLAlchemy takes it up to the last "@"), or
    # come as ?password=…: hide everything up to the last "@", and that query value
    text = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(?i)([?&](?:password|passwd)=)[^&]*", r"\1***", text)


@dataclass(frozen=True)
class IncomingRules:
    did_set: bool = True
    channels: tuple[str, ...] = ()
    contexts: tuple[str, ...] = ("from-trunk", "from-pstn")


@dataclass(frozen=True)
class SourceConfig:
    url: Secret = Secret("")
    table: str = "cdr"
    timezone: str = "UTC"
    legacy_encoding: str = "cp1251"
    start: str = ""
    cursor: str = "calldate"
    lookback: Seconds = Seconds(4 * 3600)
    settle: Seconds = Seconds(60)
    batch_size: int = 1000
    incoming: IncomingRules = field(default_factory=IncomingRules)


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


@dataclass(frozen=True)
class TranscodeConfig:
    ffmpeg: str = "ffmpeg"
    bitrate: str = "32k"
    nice: int = 10
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


@dataclass(frozen=True)
class TargetConfig:
    kind: str = "archive"
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    easla: EaslaConfig = field(default_factory=EaslaConfig)


@dataclass(frozen=True)
class CallersConfig:
    """`[callers]`: the subscriber directory. Without `csv` or `url` there is none."""

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


CALL_FIELDS = RECORD_FIELDS  # what target.easla.attributes may map
TARGET_KINDS = ("easla", "archive")
ARCHIVE_LOCALES = ("en", "ru")


def load(path: str | os.PathLike[str] | None = None,
         env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment and validate the configuration file."""
    env = os.environ if env is None else env
    chosen = Path(path or env.get(ENV_CONFIG) or DEFAULT_PATH)
    try:
        with open(chosen, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {chosen}") from None
    except PermissionError:
        raise ConfigError(f"config file not readable: {chosen}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{chosen}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {chosen}: {exc.strerror}") from None
    config = from_mapping(data, env=env, origin=str(chosen))
    _warn_if_exposed(chosen, data)
    return config


def _warn_if_exposed(path: Path, data: Mapping[str, Any]) -> None:
    """A file holding a password should be readable by the poller's user only (0600/0640)."""
    easla_password = data.get("target", {}).get("easla", {}).get("password", "")
    source_url = str(data.get("source", {}).get("url", ""))
    state_url = str(data.get("state", {}).get("url", ""))
    callers_url = str(data.get("callers", {}).get("url", ""))
    has_secret = bool(easla_password) or any(
        re.search(r"://[^/@:]*:[^@]+@", url) for url in (source_url, state_url, callers_url))
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if has_secret and mode & 0o004:
        import logging

        logging.getLogger("poller").warning(
            "%s holds a password and is readable by every user: chmod 0600 (or 0640)", path)


def from_mapping(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, origin: str = "config"
) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a `Config`."""
    merged = _apply_env(data, os.environ if env is None else env)
    problems: list[str] = []
    config = _build(Config, merged, "", problems)
    if not problems:
        _check_semantics(config, problems)
    if problems:
        raise ConfigError(f"{origin}: " + "; ".join(problems))
    return config


def _apply_env(data: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged: dict[str, Any] = _deep_copy(data)
    for keys, variable in ENV_OVERRIDES.items():
        if env.get(variable):
            node = merged
            for key in keys[:-1]:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    break
            else:
                node[keys[-1]] = env[variable]
    return merged


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def _build(cls: type, data: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(data, Mapping):
        problems.append(f"[{prefix}] must be a table")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for unknown in sorted(set(data) - names):
        problems.append(f"unknown key {_join(prefix, unknown)!r}")
    values = {}
    for name in names & set(data):
        values[name] = _convert(hints[name], data[name], _join(prefix, name), problems)
    try:
        return cls(**values)
    except TypeError:  # only reached when a problem was already recorded
        return cls()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _convert(hint: Any, value: Any, key: str, problems: list[str]) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key, problems)  # type: ignore[arg-type]
    if hint is Seconds:
        if not isinstance(value, str):
            problems.append(f"{key} must be a duration string such as \"10m\"")
            return Seconds(0)
        try:
            return Seconds(parse_duration(value))
        except ValueError as exc:
            problems.append(f"{key}: {exc}")
            return Seconds(0)
    if hint is Secret:
        if not isinstance(value, str):
            # never echo a secret, even a mistyped one (`password = 12345678` unquoted)
            problems.append(f"{key} must be a string (quote it; value not shown)")
            return Secret("")
        return Secret(value)
    if hint is bool:
        return _expect(value, bool, key, problems, False)
    if hint is int:
        if isinstance(value, bool):
            problems.append(f"{key} must be an integer")
            return 0
        return _expect(value, int, key, problems, 0)
    if hint is str:
        return _expect(value, str, key, problems, "")
    if typing.get_origin(hint) is tuple:
        items = _expect(value, list, key, problems, [])
        if any(not isinstance(item, str) for item in items):
            problems.append(f"{key} must be a list of strings")
            return ()
        return tuple(items)
    if typing.get_origin(hint) is Mapping:
        table = _expect(value, dict, key, problems, {})
        bad = [k for k, v in table.items() if not isinstance(v, str)]
        for name in bad:
            problems.append(f"{key}.{name} must be a string")
        return {k: v for k, v in table.items() if isinstance(v, str)}
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a user one


def _expect(value: Any, kind: type, key: str, problems: list[str], fallback: Any) -> Any:
    if isinstance(value, kind):
        return value
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list",
             dict: "a table"}
    problems.append(f"{key} must be {names.get(kind, kind.__name__)}, not {value!r}")
    return fallback


def _check_semantics(config: Config, problems: list[str]) -> None:
    source = config.source
    if not source.url:
        problems.append("source.url is required (or set POLLER_SOURCE_URL)")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", source.table):
        problems.append(f"source.table: not a plain table name: {source.table!r}")
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(source.timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        problems.append(f"source.timezone: unknown time zone {source.timezone!r}")
    try:
        "".encode(source.legacy_encoding)
    except LookupError:
        problems.append(f"source.legacy_encoding: unknown encoding {source.legacy_encoding!r}")
    if source.start:
        from .clock import parse_local

        try:
            parse_local(source.start)
        except ValueError as exc:
            problems.append(f"source.start: {exc}")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source.cursor):
        problems.append(f"source.cursor: not a column name: {source.cursor!r} (\"calldate\", "
                        "or an insertion-ordered column such as \"id\" or \"addtime\")")
    if source.lookback <= 0:
        problems.append("source.lookback must be positive")
    if source.settle < 0:
        problems.append("source.settle must not be negative")
    if not 1 <= source.batch_size <= 100_000:
        problems.append("source.batch_size must be between 1 and 100000")
    if config.state.retention < 2 * source.lookback:
        problems.append("state.retention must be at least twice source.lookback (a call the "
                        "lookback re-reads must still be known)")
    if config.target.archive.keep_days < 0:
        problems.append("target.archive.keep_days must not be negative")
    if config.target.archive.locale not in ARCHIVE_LOCALES:
        problems.append(f"target.archive.locale must be one of {', '.join(ARCHIVE_LOCALES)}, "
                        f"not {config.target.archive.locale!r}")
    if not 1 <= config.retry.max_attempts <= 1000:
        problems.append("retry.max_attempts must be between 1 and 1000")
    if config.retry.backoff <= 0 or config.retry.max_backoff < config.retry.backoff:
        problems.append("retry.backoff must be positive and not above retry.max_backoff")
    if config.recordings.after_upload not in ("keep", "delete"):
        problems.append("recordings.after_upload must be \"keep\" or \"delete\"")
    if config.recordings.min_bytes < 0:
        problems.append("recordings.min_bytes must not be negative")
    _check_template(config.recordings.name, problems)
    if not re.fullmatch(r"\d+k", config.transcode.bitrate):
        problems.append(
            f"transcode.bitrate must look like \"32k\", not {config.transcode.bitrate!r}")
    if not 0 <= config.transcode.nice <= 19:
        problems.append("transcode.nice must be between 0 and 19")
    if config.transcode.timeout <= 0:
        problems.append("transcode.timeout must be positive")
    if config.target.easla.timeout <= 0:
        problems.append("target.easla.timeout must be positive")
    if config.target.kind not in TARGET_KINDS:
        problems.append(f"target.kind must be one of {', '.join(TARGET_KINDS)}")
    easla = config.target.easla
    if config.target.kind == "easla" and not easla.password:
        problems.append("target.easla.password is required (or set POLLER_EASLA_PASSWORD)")
    for name in set(easla.attributes) - set(CALL_FIELDS):
        problems.append(
            f"target.easla.attributes.{name}: not a call field ({', '.join(CALL_FIELDS)})")
    for name in set(easla.statuses) - set(STATUSES):
        problems.append(f"target.easla.statuses.{name}: not a status ({', '.join(STATUSES)})")
    try:
        re.compile(easla.session_fault)
    except re.error as exc:
        problems.append(f"target.easla.session_fault: bad pattern: {exc}")
    _check_callers(config.callers, problems)
    _check_incidents(config, problems)


def _check_template(template: str, problems: list[str]) -> None:
    from .recordings import template_fields

    try:
        unknown = template_fields(template) - set(TEMPLATE_COLUMNS)
    except ValueError as exc:
        problems.append(f"recordings.name: {exc}")
        return
    for name in sorted(unknown):
        problems.append(f"recordings.name: unknown field {{{name}}}")


TEMPLATE_COLUMNS = (
    "calldate", "uniqueid", "linkedid", "recordingfile", "src", "dst", "did", "cnum",
    "accountcode", "userfield",
)


# the call fields [callers] and [incidents] add to the record (design section 10)
CALLER_FIELDS = ("number_e164", "caller_id", "caller_name", "incident")
# the columns a directory row must or may have besides those named in callers.fields
DIRECTORY_COLUMNS = ("number", "name", "id")
# a bind parameter as SQLAlchemy's text() finds one (not "::" casts, not "10:30")
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def query_parameters(query: str) -> set[str]:
    """The bind parameters (`:name`) of an SQL text."""
    return set(_BIND.findall(query))


def incident_fields(callers: CallersConfig) -> tuple[str, ...]:
    """The call fields an `[incidents.attributes]` template may use."""
    extra = tuple(f"caller_{name}" for name in callers.fields)
    return tuple(dict.fromkeys((*CALL_FIELDS, *CALLER_FIELDS, *extra)))


def _check_callers(callers: CallersConfig, problems: list[str]) -> None:
    from .numbers import supported_region

    if callers.csv and callers.url:
        problems.append("callers.csv and callers.url exclude each other: name one directory")
    if callers.url:
        _check_callers_url(callers, problems)
    elif callers.query:
        problems.append("callers.query needs callers.url (the database it runs on)")
    if callers.enabled and not callers.country:
        problems.append("callers.country is required with a directory (the region of numbers "
                        "written without a country code, e.g. \"RU\")")
    if callers.country and not supported_region(callers.country):
        problems.append(f"callers.country: not a region code: {callers.country!r} (e.g. \"RU\")")
    if callers.refresh < 0:
        problems.append("callers.refresh must not be negative")
    for name in callers.fields:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            problems.append(f"callers.fields: not a column name: {name!r}")
        elif name.lower() in DIRECTORY_COLUMNS:
            problems.append(f"callers.fields: {name!r} is already a call field "
                            "(number_e164, caller_name, caller_id)")
    if len({name.lower() for name in callers.fields}) != len(callers.fields):
        problems.append("callers.fields: a column is listed twice")


def _check_callers_url(callers: CallersConfig, problems: list[str]) -> None:
    import sqlalchemy as sa

    try:
        sa.engine.make_url(callers.url)
    except sa.exc.ArgumentError:
        # not parsed, so redact_url cannot be trusted to find its password
        problems.append("callers.url: not a database URL (value not shown)")
    if not callers.query.strip():
        problems.append("callers.url needs callers.query (returning number, name[, id])")
    for name in sorted(query_parameters(callers.query) - {"numbers"}):
        problems.append(f"callers.query: unknown parameter :{name} (only :numbers is bound)")


def _check_incidents(config: Config, problems: list[str]) -> None:
    from .incidents import check_templates, parse_hours

    incidents = config.incidents
    for status in incidents.statuses:
        if status not in STATUSES:
            problems.append(f"incidents.statuses: {status!r} is not a status "
                            f"({', '.join(STATUSES)})")
    if incidents.callers not in ("known", "any"):
        problems.append("incidents.callers must be \"known\" or \"any\"")
    elif incidents.callers == "known" and incidents.enabled and not config.callers.enabled:
        problems.append("incidents.callers = \"known\" needs a directory: set callers.csv or "
                        "callers.url (or incidents.callers = \"any\")")
    try:
        parse_hours(incidents.hours)
    except ValueError as exc:
        problems.append(f"incidents.hours: {exc}")
    if incidents.fold < 0:
        problems.append("incidents.fold must not be negative (\"0s\" never folds)")
    if incidents.enabled and not incidents.objectdef:
        problems.append("incidents.objectdef must not be empty")
    if incidents.objectdef_version < 0:
        problems.append("incidents.objectdef_version must not be negative")
    problems.extend(check_templates(incidents.attributes, incident_fields(config.callers)))
