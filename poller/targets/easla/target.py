"""The easla target: one call object per call and its MP3, over SOAP with suds-community.

The client is driven by the WSDL served at `target.easla.url` (the operation and element names
easla uses); arguments are passed as plain mappings, so no namespace, prefix or type name of our
own is involved. One client, one login and one lookup of the process and object definition per
run; a fault that says the session expired logs in again and retries that call once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import suds.cache
import suds.client
from suds.transport import Request

from poller.config.schema import EaslaConfig, IncidentsConfig
from poller.errors import ConfigError, DeliveryError, TargetUnavailable
from poller.model import Call
from poller.targets.easla.soap import ConnectionFailed, HttpStatusError, KeepAliveTransport
from poller.targets.interface import safe_name

log = logging.getLogger("poller")
T = TypeVar("T")

PLACEHOLDER = "@@poller-file-content@@"
# fault texts that say "try again later" rather than "this will never work"
TRANSIENT_FAULT = re.compile(r"(?i)temporar|unavailable|try again|timeout|timed out|busy|overload")
# a fault saying an attribute does not exist will fail every call alike: the mapping is wrong
# (one about a value, "too long for attribute X", is this call's own)
CONFIG_FAULT = re.compile(
    r"(?i)\b(unknown|no such|undefined|not defined|nonexistent|non-existent|invalid|no)\s+"
    r"(\w+\s+)?attribute\b(?!\s+value)"
    r"|\battribute\b(?:(?!value).){0,80}?\b(unknown|not found|undefined|not defined"
    r"|does ?n[o']t exist|not exist)\b(?!\s+value)")


# a fault about a value is that call's own, however it words the attribute
VALUE_FAULT = re.compile(r"(?i)\bvalues?\b")


class EaslaUnavailable(DeliveryError, TargetUnavailable):
    """easla did not answer (connection refused, reset, timed out, HTTP 5xx)."""


class LostInTransit(EaslaUnavailable):
    """The connection failed during one call's request (reset, timed out, refused)."""

    in_transit = True


def hms(seconds: int) -> str:
    """A duration as easla shows it: H:MM:SS."""
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def attribute_values(config: EaslaConfig, call: Call, record: dict[str, Any]) -> dict[str, str]:
    """The call's fields as easla attribute values (strings), per the configured mapping."""
    values: dict[str, str] = {}
    for name, attribute in config.attributes.items():
        value = record.get(name)
        if name in ("duration", "talk_time", "wait_time"):
            text = hms(int(value or 0))
        elif name == "start":
            text = call.start.strftime(config.start_format)
        elif name == "status":
            text = config.statuses.get(str(value), str(value))
        elif value is None:
            text = ""
        else:
            text = str(value)
        values[attribute] = text
    return values


class EaslaTarget:
    """Creates `incoming_call` objects in easla and attaches their recordings."""

    sends_recording_with_call = False  # addFile, once the object exists

    def __init__(self, config: EaslaConfig, state_dir: str | None,
                 incidents: IncidentsConfig | None = None):
        # suds logs whole envelopes at debug level, and the login envelope holds the password
        logging.getLogger("suds").setLevel(logging.WARNING)
        self.config = config
        self.incidents = incidents
        self.incident_def: Any = None  # looked up when the run's first incident is made
        self.session_fault = re.compile(config.session_fault)
        self.transport = KeepAliveTransport(float(config.timeout), config.verify_tls,
                                            config.ca_bundle)
        try:
            self._connect(state_dir)
        except BaseException:
            self.transport.close()
            raise

    def _connect(self, state_dir: str | None) -> None:
        config = self.config
        # no state_dir (poller check): no cache, so nothing is left behind in state.dir
        cache = None if state_dir is None else suds.cache.ObjectCache(
            location=str(Path(state_dir) / "wsdl-cache"), days=1)
        try:
            self.client = suds.client.Client(
                config.url, transport=self.transport, timeout=float(config.timeout), cache=cache)
        except ConnectionFailed as exc:
            raise EaslaUnavailable(f"easla: WSDL not reachable at {config.url}: {exc}") from None
        except Exception as exc:  # suds raises plain exceptions for a bad or missing WSDL
            raise self._wsdl_error(exc) from None
        self._login()
        self.process = self._call("getProcess", lambda s: s.getProcess(name=config.process),
                                  setup=True)
        self.objectdef = self._call(
            "getObjectdef",
            lambda s: s.getObjectdef(process=self.process, name=config.objectdef,
                                     version=config.objectdef_version), setup=True)
        log.debug("easla: process %s, object definition %s", self.process, self.objectdef)

    def _wsdl_error(self, exc: Exception) -> Exception:
        text = str(exc)
        status = _status_of(exc)
        if status is not None and status >= 500:
            return EaslaUnavailable(f"easla: WSDL at {self.config.url}: HTTP {status}")
        return ConfigError(f"target.easla.url: no usable WSDL at {self.config.url}: {text[:300]}")

    # -- the Target interface
    def _array(self, operation: str, items: list[dict[str, Any]]) -> Any:
        """An array argument as the WSDL's binding wants it: a list under rpc/encoded
        (SOAP-ENC arrays, as PHP's SoapServer describes them), an `item` sequence otherwise."""
        if self._rpc(operation):
            return items
        return {"item": items}

    def _rpc(self, operation: str) -> bool:
        binding = getattr(self.client.service, operation).method.binding.input
        return type(binding).__name__ in ("RPC", "Encoded")

    def create(self, call: Call, record: dict[str, Any], mp3: Path | None = None) -> str:
        return self._create(self.objectdef, None,
                            attribute_values(self.config, call, record))

    def _create(self, objectdef: Any, parent: str | None, attributes: dict[str, str]) -> str:
        rpc = self._rpc("createObjectref")
        items = [{"key": name, "values": [value] if rpc else {"item": [value]}}
                 for name, value in attributes.items()]
        result = self._call("createObjectref", lambda s: s.createObjectref(
            objectdef=objectdef, parent=None if parent is None else _object_ref(parent),
            attributes=self._array("createObjectref", items)))
        if result in (None, "", 0):
            raise DeliveryError("easla: createObjectref answered without an object id")
        return str(result)

    def create_incident(self, call: Call, parent: str, attributes: dict[str, str],
                        joined: list[str]) -> str:
        """An object of incidents.objectdef (same process) under the call's object."""
        return self._create(self._incident_objectdef(), parent, attributes)

    def update_incident(self, object_id: str, call: Call, attributes: dict[str, str],
                        joined: list[str]) -> None:
        # easla's operations hold no update: a joined call names its incident in its own
        # `incident` field (mappable to an attribute of the call object)
        pass

    def _incident_objectdef(self) -> Any:
        if self.incident_def is None:
            incidents = self.incidents or IncidentsConfig()
            try:
                self.incident_def = self._call("getObjectdef", lambda s: s.getObjectdef(
                    process=self.process, name=incidents.objectdef,
                    version=incidents.objectdef_version), setup=True)
            except ConfigError as exc:
                raise ConfigError(f"incidents.objectdef {incidents.objectdef!r} not usable: "
                                  f"{str(exc).partition(': ')[2].partition(': ')[2]}") from None
        return self.incident_def

    def attach(self, object_id: str, call: Call, mp3: Path) -> None:
        name = f"{safe_name(call.key)}.mp3"
        self._call("addFile", lambda s: self._stream_add_file(object_id, name, mp3))

    def ensure(self, object_id: str, call: Call, record: dict[str, Any]) -> None:
        pass  # easla confirmed the object and its file: nothing of ours can go missing there

    def answers(self) -> bool:
        """Whether easla answers at all (its WSDL, fetched afresh): after a request of one call
        failed in transit, this tells the target's fault from the call's."""

        try:
            self.transport.open(Request(self.config.url))
        except Exception as exc:
            log.debug("easla: probe of %s: %s", self.config.url, exc)
            return False
        return True

    def finish(self) -> None:
        pass  # every call is complete in easla once attached

    def close(self) -> None:
        self.transport.close()

    # -- internals
    def _login(self) -> None:
        config = self.config
        try:
            self.client.service.login(login=config.login, password=str(config.password))
        except ConnectionFailed as exc:
            raise EaslaUnavailable(f"easla: login: {exc}") from None
        except Exception as exc:
            text = _fault_text(exc)
            status = None if _is_fault(exc) else _status_of(exc)
            if TRANSIENT_FAULT.search(text) or (status or 0) >= 500:
                raise EaslaUnavailable(f"easla: login: {text}") from None
            raise ConfigError(f"target.easla: login as {config.login!r} refused: {text}") from None

    def _call(self, operation: str, invoke: Callable[[Any], T], setup: bool = False) -> T:
        """One operation, logging in again once if the session expired."""
        for attempt in (1, 2):
            try:
                return invoke(self.client.service)
            except ConnectionFailed as exc:
                raise LostInTransit(f"easla: {operation}: {exc}") from None
            except Exception as exc:
                text = _fault_text(exc)
                if attempt == 1 and _is_fault(exc) and self.session_fault.search(text):
                    log.info("easla: session expired (%s); logging in again", text)
                    self._login()
                    continue
                raise self._classify(operation, exc, text, setup) from None
        raise AssertionError("unreachable")

    def _classify(self, operation: str, exc: Exception, text: str, setup: bool) -> Exception:
        status = _status_of(exc)
        if status is not None and not _is_fault(exc):
            if status in (401, 403):
                return ConfigError(f"target.easla: {operation}: HTTP {status} (credentials?)")
            if status in (404, 405):
                return ConfigError(f"target.easla: {operation}: HTTP {status} (is target.easla."
                                   "url the service's WSDL address?)")
            if status in (408, 429):  # the server is slow or throttling: not this call's fault
                return EaslaUnavailable(f"easla: {operation}: HTTP {status}")
            if 400 <= status < 500:
                # the server refused this request (413: this call's file is too large)
                return DeliveryError(f"easla: {operation}: HTTP {status}")
            return EaslaUnavailable(f"easla: {operation}: HTTP {status}")
        if TRANSIENT_FAULT.search(text):
            return EaslaUnavailable(f"easla: {operation}: {text}")
        if setup:
            what = {"getProcess": f"process {self.config.process!r}",
                    "getObjectdef": f"object definition {self.config.objectdef!r}"}[operation]
            return ConfigError(f"target.easla: {what} not usable: {text}")
        if CONFIG_FAULT.search(text) and not VALUE_FAULT.search(text):
            return ConfigError(f"target.easla: {operation} refused: {text} "
                               "(check target.easla.attributes / file_attribute)")
        return DeliveryError(f"easla: {operation}: {text}")

    def _stream_add_file(self, object_id: str, name: str, mp3: Path) -> Any:
        """addFile with the base64 content streamed from disk (suds builds the rest)."""
        service = self.client.service
        self.client.options.nosend = True
        try:
            context = service.addFile(
                objectref=_object_ref(object_id), attribute=self.config.file_attribute,
                file=self._array("addFile", [{"key": "srcname", "value": name},
                                             {"key": "content", "value": PLACEHOLDER}]))
        finally:
            self.client.options.nosend = False
        envelope: bytes = context.envelope
        prefix, _, suffix = envelope.partition(PLACEHOLDER.encode())
        method = service.addFile.method
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": method.soap.action}
        status, reply = self.transport.post_stream(method.location, headers, prefix, mp3, suffix)
        if status == 200:
            return context.process_reply(reply)
        return context.process_reply(reply, status, f"HTTP {status}")


def _object_ref(object_id: str) -> int | str:
    return int(object_id) if object_id.isdigit() else object_id


def _is_fault(exc: Exception) -> bool:
    return type(exc).__name__ == "WebFault"


def _fault_text(exc: Exception) -> str:
    fault = getattr(exc, "fault", None)
    text = getattr(fault, "faultstring", None)
    if text:
        return str(text)
    return str(exc)


def _status_of(exc: Exception) -> int | None:
    """The HTTP status suds reports for a non-SOAP error: Exception((status, description))."""
    if _is_fault(exc):
        return 500
    if isinstance(exc, HttpStatusError):
        return exc.status
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], tuple) and args[0] and isinstance(args[0][0], int):
        return int(args[0][0])
    code = getattr(exc, "httpcode", None)
    return int(code) if isinstance(code, int) else None
