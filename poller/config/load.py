"""Reading the TOML file: environment overrides, conversion into the schema's dataclasses,
then the rules between keys. Every problem is collected and reported together, each naming its
key."""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from poller.config.checks import check_semantics
from poller.config.convert import build
from poller.config.schema import Config
from poller.errors import ConfigError

DEFAULT_PATH = Path("/etc/poller/poller.toml")
ENV_CONFIG = "POLLER_CONFIG"
ENV_OVERRIDES = {
    ("source", "url"): "POLLER_SOURCE_URL",
    ("state", "url"): "POLLER_STATE_URL",
    ("target", "easla", "password"): "POLLER_EASLA_PASSWORD",
    ("target", "webhook", "secret"): "POLLER_WEBHOOK_SECRET",
    ("callers", "url"): "POLLER_CALLERS_URL",
}


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
    """A file holding a password (or the webhook's secret, or a credential among its headers)
    should be readable by the poller's user only (0600/0640)."""
    easla_password = data.get("target", {}).get("easla", {}).get("password", "")
    webhook = data.get("target", {}).get("webhook", {})
    webhook_secret = webhook.get("secret", "") or any(
        re.search(r"(?i)auth|token|key|secret|pass|cookie", str(name))
        for name in webhook.get("headers", {}))
    source_url = str(data.get("source", {}).get("url", ""))
    state_url = str(data.get("state", {}).get("url", ""))
    callers_url = str(data.get("callers", {}).get("url", ""))
    has_secret = bool(easla_password) or bool(webhook_secret) or any(
        re.search(r"(?i)://[^/@:]*:[^@]+@|[?&]passw(?:or)?d=.", url)
        for url in (source_url, state_url, callers_url))
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if has_secret and mode & 0o004:
        logging.getLogger("poller").warning(
            "%s holds a password and is readable by every user: chmod 0600 (or 0640)", path)


def from_mapping(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, origin: str = "config"
) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a `Config`."""
    merged = _apply_env(data, os.environ if env is None else env)
    problems: list[str] = []
    config = build(Config, merged, "", problems)
    if not problems:
        check_semantics(config, problems)
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
