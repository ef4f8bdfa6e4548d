"""The rules a configuration must keep beyond its types: ranges, names, templates, and what
the keys say about each other. Each broken rule is one problem naming its key."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import string
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

from poller.clock import parse_local
from poller.config.hours import parse_hours
from poller.config.schema import (
    ARCHIVE_LOCALES,
    CSV_COLUMNS,
    DIRECTORY_COLUMNS,
    SOURCE_KINDS,
    TARGET_KINDS,
    CallersConfig,
    Config,
    WebhookConfig,
    incident_fields,
    signing_key,
)
from poller.databases import query_parameters, url_problem
from poller.errors import ConfigError
from poller.model import STATUSES
from poller.templates import (
    RECORDING_COLUMNS,
    TABLE_ONLY_COLUMNS,
    WILDCARD,
    check_attribute_templates,
    recording_fields,
    render_recording_name,
    sample_leg,
    wildcards,
)

SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")


def with_source(config: Config, name: str | None) -> Config:
    """The configuration seen as the source `name`'s (`status --source`, `retry --source`:
    another PBX's part of a shared ledger); the configuration itself when None."""
    if name is None or name == config.source.name:
        return config
    if name and not SOURCE_NAME.fullmatch(name):
        raise ConfigError(f"--source: {name!r} is not a source name (1 to 16 letters, "
                          "digits, \"-\" or \"_\"; \"\" for the unnamed one)")
    return dataclasses.replace(config, source=dataclasses.replace(config.source, name=name))


def check_semantics(config: Config, problems: list[str]) -> None:
    source = config.source
    if source.name and not SOURCE_NAME.fullmatch(source.name):
        problems.append(f"source.name: {source.name!r} is not a short name: 1 to 16 letters, "
                        "digits, \"-\" or \"_\", starting with a letter or digit (it prefixes "
                        "every call key)")
    if source.kind not in SOURCE_KINDS:
        problems.append(f"source.kind must be one of {', '.join(SOURCE_KINDS)}, "
                        f"not {source.kind!r}")
    elif source.kind == "table" and not source.url:
        problems.append("source.url is required (or set POLLER_SOURCE_URL)")
    _check_csv(config, problems)
    for key, url, variable in (("source.url", source.url, "POLLER_SOURCE_URL"),
                               ("state.url", config.state.url, "POLLER_STATE_URL")):
        problem = url_problem(key, url, variable)
        if problem:
            problems.append(problem)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*", source.table):
        problems.append(f"source.table: not a plain table name: {source.table!r}")
    try:
        zoneinfo.ZoneInfo(source.timezone)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        problems.append(f"source.timezone: unknown time zone {source.timezone!r}")
    try:
        b"\xc0".decode(source.legacy_encoding, errors="replace")
    except (LookupError, ValueError):
        problems.append(f"source.legacy_encoding: unknown encoding {source.legacy_encoding!r}")
    if source.start:
        _check_start(source.start, source.timezone, problems)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", source.cursor):
        problems.append(f"source.cursor: not a column name: {source.cursor!r} (\"calldate\", "
                        "or an insertion-ordered column such as \"id\" or \"addtime\")")
    if source.lookback <= 0:
        problems.append("source.lookback must be positive")
    if source.settle < 0:
        problems.append("source.settle must not be negative")
    elif source.settle < 10:
        _warn("source.settle below 10s takes a call the moment it ends: rows Asterisk writes "
              "a little later (cdr batch mode) make it rebuilt, or are missed once it was sent")
    if source.max_call_length < 60:
        problems.append("source.max_call_length must be at least 1m")
    if not 1 <= source.batch_size <= 100_000:
        problems.append("source.batch_size must be between 1 and 100000")
    if config.state.retention < 2 * source.lookback:
        problems.append("state.retention must be at least twice source.lookback (a call the "
                        "lookback re-reads must still be known)")
    if not 0 <= config.target.archive.keep_days <= MAX_KEEP_DAYS:
        problems.append(f"target.archive.keep_days must be between 0 (keep everything) and "
                        f"{MAX_KEEP_DAYS} (a hundred years)")
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
    if config.recordings.quiet <= 0:
        problems.append("recordings.quiet must be positive")
    _check_template(config.recordings.name, problems)
    _check_template_columns(config, problems)
    _check_folders(config, problems)
    match = re.fullmatch(r"(\d+)k", config.transcode.bitrate)
    if not match or int(match.group(1)) not in MP3_BITRATES:
        problems.append(f"transcode.bitrate must be one of MP3's bit rates "
                        f"({', '.join(f'{rate}k' for rate in MP3_BITRATES)}), "
                        f"not {config.transcode.bitrate!r}")
    if not 0 <= config.transcode.nice <= 19:
        problems.append("transcode.nice must be between 0 and 19")
    if config.transcode.timeout <= 0:
        problems.append("transcode.timeout must be positive")
    for key, version in (("target.easla.objectdef_version", config.target.easla.objectdef_version),
                         ("incidents.objectdef_version", config.incidents.objectdef_version)):
        if not 0 <= version <= MAX_INT32:  # easla's version is an xsd:int
            problems.append(f"{key} must be between 0 (the current version) and {MAX_INT32}")
    if config.target.easla.timeout <= 0:
        problems.append("target.easla.timeout must be positive")
    if config.target.kind not in TARGET_KINDS:
        problems.append(f"target.kind must be one of {', '.join(TARGET_KINDS)}")
    easla = config.target.easla
    if config.target.kind == "easla" and not easla.password:
        problems.append("target.easla.password is required (or set POLLER_EASLA_PASSWORD)")
    call_fields = incident_fields(config.callers)  # with caller_<column> per callers.fields
    for name in set(easla.attributes) - set(call_fields):
        problems.append(
            f"target.easla.attributes.{name}: not a call field ({', '.join(call_fields)})")
    for name in set(easla.statuses) - set(STATUSES):
        problems.append(f"target.easla.statuses.{name}: not a status ({', '.join(STATUSES)})")
    try:
        re.compile(easla.session_fault)
    except re.error as exc:
        problems.append(f"target.easla.session_fault: bad pattern: {exc}")
    if config.target.kind == "webhook":
        _check_webhook(config.target.webhook, problems)
    _check_callers(config.callers, problems)
    _check_incidents(config, problems)


# set by the poller itself: a configured value would break the signature or the framing
WEBHOOK_OWN_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature", "content-type",
                       "content-length", "host", "transfer-encoding", "connection")


def _check_webhook(webhook: WebhookConfig, problems: list[str]) -> None:
    parts = urlsplit(webhook.url)
    if not webhook.url:
        problems.append("target.webhook.url is required (the receiver's address)")
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("target.webhook.url must be an http:// or https:// URL with a host "
                        "(value not shown: it may hold a credential)")
    elif parts.username or parts.password:
        # the URL is logged: a credential belongs in target.webhook.headers (Authorization)
        problems.append("target.webhook.url must not hold a user or password: send it as "
                        "target.webhook.headers.Authorization")
    if not webhook.secret:
        problems.append("target.webhook.secret is required (or set POLLER_WEBHOOK_SECRET)")
    else:
        try:
            signing_key(webhook.secret)
        except ValueError as exc:
            problems.append(f"target.webhook.secret: {exc} (value not shown)")
    if webhook.timeout <= 0:
        problems.append("target.webhook.timeout must be positive")
    if webhook.ca_bundle and not Path(webhook.ca_bundle).is_file():
        problems.append(f"target.webhook.ca_bundle: no such file {webhook.ca_bundle!r}")
    for name, value in webhook.headers.items():
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            problems.append(f"target.webhook.headers: not a header name: {name!r}")
        elif name.lower() in WEBHOOK_OWN_HEADERS:
            problems.append(f"target.webhook.headers.{name}: set by the poller itself")
        if re.search(r"[\x00-\x08\x0a-\x1f\x7f]", value):
            problems.append(f"target.webhook.headers.{name}: a control character or line break "
                            "in the value (value not shown)")


def _check_template(template: str, problems: list[str]) -> None:
    try:
        unknown = recording_fields(template) - set(RECORDING_COLUMNS)
    except ValueError as exc:
        problems.append(f"recordings.name: {exc}")
        return
    for name in sorted(unknown):
        problems.append(f"recordings.name: unknown field {{{name}}}")
    stars = wildcards(template)
    if stars > 1 or stars and "/" in template.split(WILDCARD, 1)[1]:
        problems.append("recordings.name: one `*` at most, in the file name (not in a folder): "
                        "the one complete file that matches it is the recording")
    for _, field_name, spec, _ in string.Formatter().parse(template):
        # a width such as {uniqueid:>999999999} would build a name of gigabytes
        if field_name != "calldate" and spec and any(
                int(n) > 255 for n in re.findall(r"\d+", spec)):
            problems.append(f"recordings.name: the format {{{field_name}:{spec}}} asks for more "
                            "than 255 characters")
            return
    if unknown:
        return
    try:  # as the run will: over a leg with a value of its type in every column
        render_recording_name(template, sample_leg())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        problems.append(f"recordings.name: {template!r} cannot be filled in: {what} (a cdr "
                        "column is text, calldate a date-time: {calldate:%Y/%m/%d})")


def _check_csv(config: Config, problems: list[str]) -> None:
    """`[source.csv]` and `[source.reconcile]`: what Master.csv can and cannot give."""
    source = config.source
    if source.kind == "csv":
        if not source.csv.path:
            problems.append("source.csv.path is required with source.kind = \"csv\"")
        if source.cursor != "calldate":
            problems.append("source.cursor applies to a table: Master.csv is read by its "
                            "checkpoint (the byte offset of the last line taken)")
        if source.reconcile.enabled:
            problems.append("source.reconcile applies to a table source: with source.kind = "
                            "\"csv\" every call already comes from Master.csv")
    columns = source.csv.columns
    if isinstance(columns, str):
        if columns != "auto":
            problems.append(f"source.csv.columns must be \"auto\" or the list of column names "
                            f"in file order, not {columns!r}")
        return
    for name in columns:
        if name not in CSV_COLUMNS:
            problems.append(f"source.csv.columns: {name!r} is not a column cdr_csv writes "
                            f"({', '.join(CSV_COLUMNS)})")
    if len(set(columns)) != len(columns):
        problems.append("source.csv.columns: a column is listed twice")
    if "uniqueid" not in columns:
        problems.append("source.csv.columns: without uniqueid no call has a key: set "
                        "loguniqueid = yes in Asterisk's cdr.conf [csv] section (and list "
                        "uniqueid here)")


def _check_template_columns(config: Config, problems: list[str]) -> None:
    """A recordings.name over columns Master.csv lacks would name no file for its calls."""
    if config.source.kind == "csv":
        reason = "Master.csv has no {column} column"
    elif config.source.reconcile.enabled:
        reason = ("a call taken from Master.csv (source.reconcile) has no {column}: use "
                  "e.g. \"{{uniqueid}}.wav\" or a pattern such as "
                  "\"{{calldate:%Y/%m/%d}}/*-{{uniqueid}}.wav\"")
    else:
        return
    try:
        used = recording_fields(config.recordings.name)
    except ValueError:
        return  # reported as recordings.name
    for column in sorted(used & set(TABLE_ONLY_COLUMNS)):
        problems.append("recordings.name: " + reason.format(column=column))


MAX_KEEP_DAYS = 36500
MAX_INT32 = 2**31 - 1

# the bit rates an MPEG-1/2 layer III encoder accepts, in kbit/s
MP3_BITRATES = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 192, 224, 256, 320)


def _check_start(start: str, timezone: str, problems: list[str]) -> None:
    try:
        first = parse_local(start)
    except ValueError as exc:
        problems.append(f"source.start: {exc}")
        return
    try:
        now = dt.datetime.now(zoneinfo.ZoneInfo(timezone)).replace(tzinfo=None)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return  # reported as source.timezone
    if first > now:
        # the first run would store it as the ledger's origin and read nothing until then
        problems.append(f"source.start: {start!r} is in the future (now {now:%Y-%m-%d %H:%M} "
                        f"in {timezone}): give a past date, or \"\" for the lookback before now")


def _check_folders(config: Config, problems: list[str]) -> None:
    """The archive must not share a folder with the recordings: keep_days would delete the
    spool's files, and after_upload = "delete" the archive's."""
    if config.target.kind != "archive":
        return
    archive = Path(config.target.archive.dir).resolve()
    spool = Path(config.recordings.dir).resolve()
    if archive == spool or spool in archive.parents or archive in spool.parents:
        problems.append(f"target.archive.dir ({archive}) and recordings.dir ({spool}) overlap: "
                        "give the archive a folder of its own, outside the recordings")


def _warn(message: str) -> None:
    logging.getLogger("poller").warning("%s", message)


def _check_callers(callers: CallersConfig, problems: list[str]) -> None:
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


def supported_region(code: str) -> bool:
    """Whether the phone-number library knows this ISO 3166 region code ("RU", "DE", "US")."""
    import phonenumbers  # only where callers.country is set: a run without [callers] never loads it

    return code.upper() in phonenumbers.SUPPORTED_REGIONS


def _check_callers_url(callers: CallersConfig, problems: list[str]) -> None:
    problem = url_problem("callers.url", callers.url, "POLLER_CALLERS_URL")
    if problem:
        problems.append(problem)
    if not callers.query.strip():
        problems.append("callers.url needs callers.query (returning number, name[, id])")
    for name in sorted(query_parameters(callers.query) - {"numbers"}):
        problems.append(f"callers.query: unknown parameter :{name} (only :numbers is bound)")


def _check_incidents(config: Config, problems: list[str]) -> None:
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
    problems.extend(check_attribute_templates(incidents.attributes,
                                              incident_fields(config.callers)))
