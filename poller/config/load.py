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
         env: Mapping[str, str] | None = None, warn_exposed: bool = True) -> Config:
    """Read, override from the environment and validate the configuration file. A file
    holding a secret that every user may read is warned about in the log, unless the caller
    says it (`check` shows it in its table: `exposure`)."""
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
    said = _exposure(chosen, data)
    if said and warn_exposed:
        logging.getLogger("poller").warning("%s", said)
    return config


def exposure(path: str | os.PathLike[str] | None = None,
             env: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with the mode of the configuration file (read again), or None."""
    env = os.environ if env is None else env
    chosen = Path(path or env.get(ENV_CONFIG) or DEFAULT_PATH)
    try:
        with open(chosen, "rb") as handle:
            return _exposure(chosen, tomllib.load(handle))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None  # load() said what is wrong with it


def _exposure(path: Path, data: Mapping[str, Any]) -> str | None:
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
        return None
    if has_secret and mode & 0o004:
        return f"{path} holds a password and is readable by every user: chmod 0600 (or 0640)"
    return None


def from_mapping(
    data: Mapping[str, Any], env: Mapping[str, str] | None = None, origin: str = "config"
) -> Config:
    """Validate a parsed TOML document (plus environment overrides) into a `Config`."""
    env = os.environ if env is None else env
    merged = _apply_env(data, env)
    problems: list[str] = []
    config = build(Config, merged, "", problems)
    if not problems:
        check_semantics(config, problems)
    if problems:
        raise ConfigError(blame(problems, origin, env))
    return config


def blame(problems: list[str], origin: str, env: Mapping[str, str]) -> str:
    """The problems as one message, each blamed on where its value came from: a key the
    environment overrides is the variable's fault, not the file's."""
    overridden = {".".join(keys): variable for keys, variable in ENV_OVERRIDES.items()
                  if env.get(variable)}
    from_file, from_env = [], []
    for problem in problems:
        key = next((key for key in overridden if problem.startswith(f"{key}:")), None)
        if key is None:
            from_file.append(problem)
        else:
            rest = problem[len(key) + 1:]
            from_env.append(f"{overridden[key]} (in the environment, it overrides {key}):{rest}")
    said = [f"{origin}: " + "; ".join(from_file)] if from_file else []
    return "; ".join(said + from_env)


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
