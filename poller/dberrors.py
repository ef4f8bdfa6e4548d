"""What a database's refusal means for the run: bad configuration (exit 2) or an outage."""

from __future__ import annotations

from typing import Any

from .config import redact_url
from .errors import ConfigError, ServiceUnavailable

# MySQL/MariaDB: access denied (1044, 1045, and 1698 as MariaDB words it without "using
# password"), no such database, this host not allowed in, no SELECT / column privilege
CONFIG_CODES = (1044, 1045, 1049, 1130, 1142, 1143, 1698)


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
    return ServiceUnavailable(f"{label} database unreachable: {text} ({redact_url(url)})")
