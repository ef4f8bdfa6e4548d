"""Database URLs and what a database's answers mean, for every database the poller opens (the
cdr table, the ledger, a directory's query).

A URL is refused when it cannot be read without guessing, and never shown whole: a password
holding a raw `@` is split by SQLAlchemy at the first `@`, so the rest of the secret becomes the
host name and travels into connection errors; such a URL is refused at load, before anything
connects or logs. A refusal is bad configuration (exit 2) or an outage.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

from poller.errors import ConfigError, ServiceUnavailable

ENCODING_HINT = ("percent-encode the password's special characters (@ %40, : %3A, / %2F, "
                 "# %23, ? %3F, % %25; python3 -c 'import sys, urllib.parse; "
                 "print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD' prints it), "
                 "in the file or in the environment variable")
_HOST = re.compile(r"[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]")
_DRIVERLESS = {"mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def redact_url(url: str) -> str:
    """A database URL with its password replaced, fit for messages."""
    # everything between the user name and the last "@" is hidden, whatever it holds, and so
    # is a ?password= query value
    text = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(?i)([?&](?:password|passwd)=)[^&]*", r"\1***", text)


def url_problem(key: str, url: str, variable: str) -> str | None:
    """Why `url` cannot be used as it is (naming `key` and the fix), or None. The value is
    never part of the answer: it may hold a password."""
    if not url:
        return None
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        return f"{key}: not a database URL (value not shown); if its password holds special " \
               f"characters, {ENCODING_HINT} ({variable})"
    authority = url.split("://", 1)[-1].split("?", 1)[0]
    if authority.count("@") > 1 or (parsed.host and not _HOST.fullmatch(parsed.host)):
        return f"{key}: the password holds a raw \"@\" (value not shown): {ENCODING_HINT} " \
               f"({variable})"
    driver = _DRIVERLESS.get(parsed.drivername)
    if driver:
        return f"{key}: write {driver}://… (the plain {parsed.drivername}:// scheme asks for " \
               "the MySQLdb driver, which is not installed; PyMySQL is)"
    return None


# a bind parameter as SQLAlchemy's text() finds one (not "::" casts, not "10:30")
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def query_parameters(query: str) -> set[str]:
    """The bind parameters (`:name`) of an SQL text."""
    return set(_BIND.findall(query))


# MySQL/MariaDB: access denied (1044, 1045, and 1698 as MariaDB words it without "using
# password"), no such database, this host not allowed in, no SELECT / column privilege
CONFIG_CODES = (1044, 1045, 1049, 1130, 1142, 1143, 1698)
# SQLite's words for a file or folder it may not write
_REFUSED_FILE = re.compile(r"readonly database|unable to open database file|disk I/O error|"
                           r"database or disk is full", re.I)


def missing_table(exc: Any) -> bool:
    """Whether a database's refusal says the table is not there (MySQL, SQLite, PostgreSQL)."""
    text = str(getattr(exc, "orig", exc)).lower()
    return any(words in text for words in ("doesn't exist", "no such table", "does not exist"))


def database_error(exc: Any, url: str, label: str) -> Exception:
    """The ConfigError or ServiceUnavailable for an OperationalError from `label`'s database."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    code = args[0] if args else None
    text = str(args[-1]) if args else str(orig)
    if code in CONFIG_CODES:
        return ConfigError(f"{label}: {text} ({redact_url(url)})")
    if _REFUSED_FILE.search(text):  # SQLite: its file, or the folder of its -wal and -shm
        from poller.localfiles import user

        return ServiceUnavailable(f"{label} database: {text} ({redact_url(url)}): its file "
                                  f"and folder must be writable by {user()} (a root run, a "
                                  "read-only or full disk?)")
    return ServiceUnavailable(f"{label} database unreachable: {text} ({redact_url(url)})")
