"""A real SOAP server on loopback that imitates easla's ``/user/soap``, for tests.

It serves a document/literal-wrapped WSDL (or, with ``style="rpc"``, an rpc/encoded one with
SOAP-ENC arrays as PHP's SoapServer writes) on GET, with or without ``?wsdl``, and answers SOAP 1.1
POSTs over HTTP/1.1 with keep-alive, parsing each request as a stream (expat, local names, no
tree copies of a large base64 body). It is strict the way a real server is strict: the operation
element must be in the WSDL's target namespace, every element must be where the schema puts it,
ints must be ints, and every error is a SOAP 1.1 Fault with HTTP 500.

Sessions are a ``PHPSESSID`` cookie set by ``login``; every other operation needs it. Switches
make the next calls of an operation fail in the ways a real server fails (``fail_next``), and
everything received is recorded (``objects``, ``calls``, ``logins``, ``connections``, ...).

    with EaslaServer(login="poller", password="secret", expire_after=3) as easla:
        client = suds.client.Client(easla.url, cache=None, timeout=5)
        ...
        assert easla.objects[1001]["attributes"]["status"] == ["incoming_call_answered"]
"""

from __future__ import annotations

import binascii
import contextlib
import http.cookies
import re
import secrets
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit
from xml.parsers import expat
from xml.sax.saxutils import escape

import pytest

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PATH = "/user/soap"
SESSION_TEXT = "Session expired, please login"
LOGIN_TEXT = "Invalid login or password"
UNAVAILABLE_TEXT = "Service temporarily unavailable"
KINDS = ("http500", "fault", "timeout", "reset", "lost_reply")
MAX_DELAY = 5.0
_READ = 256 * 1024
_INT = re.compile(r"[+-]?[0-9]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/\s]*(?:=\s*){0,2}")

# operation -> its parameters in schema order: (name, type)
OPERATIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "login": (("login", "string"), ("password", "string")),
    "getProcess": (("name", "string"),),
    "getObjectdef": (("process", "int"), ("name", "string"), ("version", "int")),
    "createObjectref": (("objectdef", "int"), ("parent", "int?"),
                        ("attributes", "KeyValuesPairSoapArray")),
    "addFile": (("objectref", "int"), ("attribute", "string"), ("file", "KeyValuePairSoapArray")),
}
RETURNS = {"login": "boolean", "getProcess": "int", "getObjectdef": "int",
           "createObjectref": "int", "addFile": "boolean"}


class Fault(Exception):
    """Answered as a SOAP 1.1 Fault with HTTP 500."""

    def __init__(self, text: str, code: str = "Server") -> None:
        super().__init__(text)
        self.text = text
        self.code = code


# ---------------------------------------------------------------------------------------------
# WSDL


_XSD_TYPES = {"string": "xsd:string", "int": "xsd:int", "int?": "xsd:int", "boolean": "xsd:boolean"}


def wsdl(namespace: str, prefix: str, location: str, qualified: bool = True,
         style: str = "document") -> str:
    """easla's contract as a WSDL 1.1: document/literal-wrapped, or rpc/encoded as PHP's
    SoapServer writes it (SOAP-ENC arrays) when ``style == "rpc"``."""
    p = prefix
    rpc = style == "rpc"

    def xsd_type(kind: str) -> str:
        return _XSD_TYPES.get(kind, f"{p}:{kind}")

    def params(items: Iterable[tuple[str, str]]) -> str:
        nil = ' nillable="true"'
        return "".join(
            f'<xsd:element name="{name}" type="{xsd_type(kind)}"{nil if kind == "int?" else ""}/>'
            for name, kind in items)

    def parts(items: Iterable[tuple[str, str]]) -> str:
        return "".join(f'<wsdl:part name="{name}" type="{xsd_type(kind)}"/>'
                       for name, kind in items)

    elements = []
    messages = []
    port_ops = []
    binding_ops = []
    if rpc:
        body = (f'<soap:body use="encoded" namespace="{escape(namespace)}" '
                f'encodingStyle="{SOAP_ENC}"/>')
    else:
        body = '<soap:body use="literal"/>'
    for op, args in OPERATIONS.items():
        result = [("return", RETURNS[op])]
        if rpc:
            messages.append(
                f'<wsdl:message name="{op}Request">{parts(args)}</wsdl:message>'
                f'<wsdl:message name="{op}Response">{parts(result)}</wsdl:message>')
        else:
            elements.append(
                f'<xsd:element name="{op}"><xsd:complexType><xsd:sequence>{params(args)}'
                f'</xsd:sequence></xsd:complexType></xsd:element>'
                f'<xsd:element name="{op}Response"><xsd:complexType><xsd:sequence>'
                f'{params(result)}</xsd:sequence></xsd:complexType></xsd:element>')
            messages.append(
                f'<wsdl:message name="{op}Request">'
                f'<wsdl:part name="parameters" element="{p}:{op}"/></wsdl:message>'
                f'<wsdl:message name="{op}Response">'
                f'<wsdl:part name="parameters" element="{p}:{op}Response"/></wsdl:message>')
        port_ops.append(
            f'<wsdl:operation name="{op}"><wsdl:input message="{p}:{op}Request"/>'
            f'<wsdl:output message="{p}:{op}Response"/></wsdl:operation>')
        binding_ops.append(
            f'<wsdl:operation name="{op}"><soap:operation soapAction="{escape(namespace)}#{op}"/>'
            f'<wsdl:input>{body}</wsdl:input><wsdl:output>{body}</wsdl:output></wsdl:operation>')
    if rpc:
        types = f"""<xsd:schema targetNamespace="{escape(namespace)}">
<xsd:import namespace="{SOAP_ENC}"/>
<xsd:complexType name="ArrayOfString"><xsd:complexContent><xsd:restriction base="soapenc:Array">
<xsd:attribute ref="soapenc:arrayType" wsdl:arrayType="xsd:string[]"/>
</xsd:restriction></xsd:complexContent></xsd:complexType>
<xsd:complexType name="KeyValuesPairSoap"><xsd:all>
<xsd:element name="key" type="xsd:string"/>
<xsd:element name="values" type="{p}:ArrayOfString"/>
</xsd:all></xsd:complexType>
<xsd:complexType name="KeyValuesPairSoapArray"><xsd:complexContent>
<xsd:restriction base="soapenc:Array">
<xsd:attribute ref="soapenc:arrayType" wsdl:arrayType="{p}:KeyValuesPairSoap[]"/>
</xsd:restriction></xsd:complexContent></xsd:complexType>
<xsd:complexType name="KeyValuePairSoap"><xsd:all>
<xsd:element name="key" type="xsd:string"/>
<xsd:element name="value" type="xsd:string"/>
</xsd:all></xsd:complexType>
<xsd:complexType name="KeyValuePairSoapArray"><xsd:complexContent>
<xsd:restriction base="soapenc:Array">
<xsd:attribute ref="soapenc:arrayType" wsdl:arrayType="{p}:KeyValuePairSoap[]"/>
</xsd:restriction></xsd:complexContent></xsd:complexType>
</xsd:schema>"""
    else:
        form = "qualified" if qualified else "unqualified"
        types = f"""<xsd:schema targetNamespace="{escape(namespace)}" elementFormDefault="{form}">
<xsd:complexType name="KeyValuesPairSoap"><xsd:sequence>
<xsd:element name="key" type="xsd:string"/>
<xsd:element name="values"><xsd:complexType><xsd:sequence>
<xsd:element name="item" type="xsd:string" minOccurs="0" maxOccurs="unbounded"/>
</xsd:sequence></xsd:complexType></xsd:element>
</xsd:sequence></xsd:complexType>
<xsd:complexType name="KeyValuesPairSoapArray"><xsd:sequence>
<xsd:element name="item" type="{p}:KeyValuesPairSoap" minOccurs="0" maxOccurs="unbounded"/>
</xsd:sequence></xsd:complexType>
<xsd:complexType name="KeyValuePairSoap"><xsd:sequence>
<xsd:element name="key" type="xsd:string"/>
<xsd:element name="value" type="xsd:string"/>
</xsd:sequence></xsd:complexType>
<xsd:complexType name="KeyValuePairSoapArray"><xsd:sequence>
<xsd:element name="item" type="{p}:KeyValuePairSoap" minOccurs="0" maxOccurs="unbounded"/>
</xsd:sequence></xsd:complexType>
{"".join(elements)}
</xsd:schema>"""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<wsdl:definitions name="easla" targetNamespace="{escape(namespace)}"
  xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:soapenc="{SOAP_ENC}"
  xmlns:{p}="{escape(namespace)}">
<wsdl:types>
{types}
</wsdl:types>
{"".join(messages)}
<wsdl:portType name="EaslaPortType">{"".join(port_ops)}</wsdl:portType>
<wsdl:binding name="EaslaBinding" type="{p}:EaslaPortType">
<soap:binding style="{"rpc" if rpc else "document"}" transport="http://schemas.xmlsoap.org/soap/http"/>
{"".join(binding_ops)}
</wsdl:binding>
<wsdl:service name="EaslaService"><wsdl:port name="EaslaPort" binding="{p}:EaslaBinding">
<soap:address location="{escape(location)}"/></wsdl:port></wsdl:service>
</wsdl:definitions>
"""


# ---------------------------------------------------------------------------------------------
# Streaming request parser: expat, namespaces resolved, text kept as UTF-8 bytes


class Node:
    """One element of a request: namespace, local name, attributes, children, text."""

    __slots__ = ("ns", "name", "attrs", "children", "text")

    def __init__(self, ns: str, name: str, attrs: dict[str, str]) -> None:
        self.ns = ns
        self.name = name
        self.attrs = attrs
        self.children: list[Node] = []
        self.text = bytearray()

    def __repr__(self) -> str:
        return f"<Node {{{self.ns}}}{self.name}>"

    @property
    def nil(self) -> bool:
        return self.attrs.get(f"{XSI} nil", "").strip() in ("true", "1")


class StreamParser:
    """Feed a request body in pieces; ``close()`` returns the root element."""

    def __init__(self) -> None:
        self._parser = expat.ParserCreate(namespace_separator=" ")
        self._parser.buffer_text = True
        self._parser.buffer_size = 1 << 20
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._parser.CharacterDataHandler = self._data
        self._parser.StartDoctypeDeclHandler = self._doctype
        self._parser.EntityDeclHandler = self._doctype
        self._stack: list[Node] = []
        self.root: Node | None = None

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        ns, _, local = name.rpartition(" ")
        return ns, local

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        node = Node(*self._split(name), attrs)
        if self._stack:
            self._stack[-1].children.append(node)
        else:
            self.root = node
        self._stack.append(node)

    def _end(self, name: str) -> None:
        self._stack.pop()

    def _data(self, data: str) -> None:
        if self._stack:
            self._stack[-1].text += data.encode("utf-8")

    def _doctype(self, *args: Any) -> None:
        raise Fault("A DOCTYPE or entity declaration is not allowed in a SOAP message", "Client")

    def feed(self, data: bytes) -> None:
        self._parser.Parse(data, False)

    def close(self) -> Node:
        self._parser.Parse(b"", True)
        if self.root is None:
            raise Fault("Empty request", "Client")
        return self.root


# ---------------------------------------------------------------------------------------------
# Fault switches and the server's state


@dataclass
class _Switch:
    kind: str
    count: int
    text: str
    delay: float
    status: int = 500


@dataclass
class _Call:
    """A parsed request: the operation and its arguments."""

    operation: str
    args: dict[str, Any] = field(default_factory=dict)


class EaslaServer:
    """easla's SOAP service on 127.0.0.1, an ephemeral port, in a background thread.

    Constructor (all keyword arguments after the credentials):
      login, password      -- the one account that ``login`` accepts
      namespace, prefix    -- target namespace of the WSDL and the prefix it uses for it
      style                -- "document" (document/literal-wrapped, the default) or "rpc"
                              (rpc/encoded with SOAP-ENC arrays, as PHP's SoapServer serves)
      qualified            -- document style: elementFormDefault="qualified" (parameters and
                              their members in the namespace too) or not; rpc: always unqualified
      processes            -- {name: id} for ``getProcess`` (default {"call_management": 7})
      objectdefs           -- {(process, name): id} or {(process, name, version): id}
                              (default {(7, "incoming_call"): 42}); a 2-tuple matches version 0
      attributes           -- names ``createObjectref`` accepts (None: any)
      file_attributes      -- attribute names ``addFile`` accepts (default "incoming_call_file")
      session_text         -- fault text for a missing, unknown or expired session
      expire_after         -- a session expires after this many authenticated calls (None: never)
      first_object_id      -- id of the first created object (default 1001)
    """

    def __init__(
        self,
        login: str = "poller",
        password: str = "secret",
        *,
        namespace: str = "urn:easla",
        prefix: str = "tns",
        style: str = "document",
        qualified: bool = True,
        processes: Mapping[str, int] | None = None,
        objectdefs: Mapping[tuple[Any, ...], int] | None = None,
        attributes: Iterable[str] | None = None,
        file_attributes: Iterable[str] = ("incoming_call_file",),
        session_text: str = SESSION_TEXT,
        expire_after: int | None = None,
        first_object_id: int = 1001,
    ) -> None:
        self.login = login
        self.password = password
        self.namespace = namespace
        self.prefix = prefix
        if style not in ("document", "rpc"):
            raise ValueError(f"style must be 'document' or 'rpc', not {style!r}")
        self.style = style
        self.qualified = qualified and style == "document"
        self.processes = dict(processes if processes is not None else {"call_management": 7})
        self.objectdefs = dict(objectdefs if objectdefs is not None
                               else {(7, "incoming_call"): 42})
        self.attributes = None if attributes is None else frozenset(attributes)
        self.file_attributes = frozenset(file_attributes)
        self.session_text = session_text
        self.expire_after = expire_after

        # what happened (read these in tests; guarded by _lock while the server runs)
        self.objects: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, str | None]] = []
        self.faults: list[tuple[str, str]] = []
        self.logins = 0
        self.connections = 0
        self.wsdl_requests = 0
        self.max_request_bytes = 0
        self.errors: list[BaseException] = []  # unexpected exceptions in the server: a bug
        # (operation, kind, arguments but a file's content) of every request a switch failed
        self.switched: list[tuple[str, str, dict[str, Any]]] = []
        # called from the handler thread as hook(moment, operation): "request" once a POST's
        # headers are in (the operation from its SOAPAction, the body not read yet) and
        # "answered" once a reply of success is sent -- for a test to act at that very point
        # (kill the client, lock its database) before the client can react
        self.hook: Callable[[str, str], None] | None = None

        self._next_id = first_object_id
        self._sessions: dict[str, int] = {}  # session id -> authenticated calls so far
        self._switches: dict[str, list[_Switch]] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> EaslaServer:
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.easla = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}{PATH}"
        self._wsdl = wsdl(self.namespace, self.prefix, self.url, self.qualified,
                          self.style).encode()
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"easla-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            sockets = list(self._open)
            handlers = list(self._handlers)
        for sock in sockets:  # wake handler threads waiting on an idle keep-alive connection
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in handlers:
            thread.join(timeout)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> EaslaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def wsdl_text(self) -> str:
        return self._wsdl.decode()

    # -- switches and helpers for tests --------------------------------------------------------

    def fail_next(self, operation: str, kind: str, count: int = 1, *, text: str | None = None,
                  delay: float = 3.0, status: int = 500) -> None:
        """Make the next ``count`` calls of ``operation`` ("*": any; "wsdl": the GET) fail.

        kind: "http500"    -- HTTP ``status`` (default 500; 502, 503, ... as well, or a 4xx
                              such as 413) with a plain-text body, no SOAP; nothing done
              "fault"      -- a SOAP Fault with ``text`` (default "Service temporarily
                              unavailable"); nothing done
              "timeout"    -- wait ``delay`` seconds (at most 5; make it longer than the client's
                              timeout), then reset the connection; nothing done
              "reset"      -- reset the connection (TCP RST) without answering; nothing done
              "lost_reply" -- do the operation (e.g. create the object), then reset the connection
        Switches queue up per operation, in the order given.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if operation not in OPERATIONS and operation not in ("*", "wsdl"):
            raise ValueError(f"unknown operation {operation!r}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be a 4xx or 5xx code, not {status}")
        switch = _Switch(kind, count, text if text is not None else UNAVAILABLE_TEXT,
                         min(float(delay), MAX_DELAY), status)
        with self._lock:
            self._switches.setdefault(operation, []).append(switch)

    def clear_failures(self) -> None:
        with self._lock:
            self._switches.clear()

    def expire_sessions(self) -> None:
        """Forget every session now: the next call of each client faults with session_text."""
        with self._lock:
            self._sessions.clear()

    def find_objects(self, attribute: str, value: str) -> list[int]:
        """Ids of the objects whose ``attribute`` holds ``value``."""
        with self._lock:
            return [oid for oid, obj in self.objects.items()
                    if value in obj["attributes"].get(attribute, [])]

    def operations(self) -> list[str]:
        """The operations called so far, in order (login included)."""
        with self._lock:
            return [op for op, _ in self.calls]

    def _notify(self, moment: str, operation: str) -> None:
        hook = self.hook
        if hook is None:
            return
        try:
            hook(moment, operation)
        except Exception as exc:  # the test's own bug: shown, never a failed request
            with self._lock:
                self.errors.append(exc)

    def _take_switch(self, operation: str) -> _Switch | None:
        with self._lock:
            for name in (operation, "*"):
                queue = self._switches.get(name)
                if queue:
                    switch = queue[0]
                    switch.count -= 1
                    if switch.count <= 0:
                        queue.pop(0)
                    return switch
        return None

    # -- SOAP ----------------------------------------------------------------------------------

    def _read_call(self, root: Node) -> _Call:
        """The operation and arguments of a request envelope; strict about its shape."""
        if (root.ns, root.name) != (SOAP_ENV, "Envelope"):
            raise Fault(f"Not a SOAP 1.1 envelope: {{{root.ns}}}{root.name}", "VersionMismatch")
        body = None
        for child in root.children:
            if child.ns == SOAP_ENV and child.name == "Header" and body is None:
                continue
            if child.ns == SOAP_ENV and child.name == "Body" and body is None:
                body = child
                continue
            raise Fault(f"Unexpected element {child.name} in the envelope", "Client")
        if body is None:
            raise Fault("No SOAP Body", "Client")
        if len(body.children) != 1:
            raise Fault(f"The Body must hold one operation, not {len(body.children)}", "Client")
        wrapper = body.children[0]
        if wrapper.name not in OPERATIONS:
            raise Fault(f"Procedure '{wrapper.name}' not present", "Client")
        if wrapper.ns != self.namespace:
            raise Fault(f"Operation {wrapper.name} must be in namespace {self.namespace!r}, "
                        f"not {wrapper.ns!r}", "Client")
        spec = dict(OPERATIONS[wrapper.name])
        call = _Call(wrapper.name)
        for child in self._children(wrapper, spec.keys()):
            if child.name in call.args:
                raise Fault(f"Element {child.name} given twice", "Client")
            call.args[child.name] = self._value(child, spec[child.name])
        if self.style == "rpc" and "parent" in spec:  # suds leaves a None part out
            call.args.setdefault("parent", None)
        missing = [name for name in spec if name not in call.args]
        if missing:
            raise Fault(f"Missing element {missing[0]} in {wrapper.name}", "Client")
        return call

    def _children(self, node: Node, allowed: Iterable[str] | None) -> list[Node]:
        """The children of ``node``, each with a name in ``allowed`` (None: any name, as the
        members of a SOAP-ENC array may have) and in the namespace the schema puts it."""
        expected_ns = self.namespace if self.qualified else ""
        names = None if allowed is None else set(allowed)
        for child in node.children:
            if names is not None and child.name not in names:
                raise Fault(f"Unknown element {child.name} in {node.name}", "Client")
            if child.ns != expected_ns:
                raise Fault(f"Element {child.name} must be in namespace {expected_ns!r}, "
                            f"not {child.ns!r}", "Client")
        if node.text.strip():
            raise Fault(f"Unexpected text in {node.name}", "Client")
        return node.children

    def _leaf(self, node: Node) -> bytearray:
        if node.children:
            raise Fault(f"Element {node.name} must hold text, not elements", "Client")
        if node.nil:
            raise Fault(f"Element {node.name} is not nillable", "Client")
        return node.text

    def _string(self, node: Node) -> str:
        try:
            return self._leaf(node).decode("utf-8")
        except UnicodeDecodeError as exc:  # expat already checked, but be explicit
            raise Fault(f"Element {node.name} is not UTF-8", "Client") from exc

    def _int(self, node: Node) -> int:
        text = self._string(node).strip()
        if not _INT.fullmatch(text):
            raise Fault(f"Element {node.name} must be an int, not {text[:40]!r}", "Client")
        value = int(text)
        if not -(2**31) <= value < 2**31:
            raise Fault(f"Element {node.name} is out of the range of xsd:int", "Client")
        return value

    def _one(self, node: Node, name: str) -> Node:
        found = [child for child in node.children if child.name == name]
        if len(found) != 1:
            raise Fault(f"{node.name} must hold one {name}, not {len(found)}", "Client")
        return found[0]

    def _value(self, node: Node, kind: str) -> Any:
        if kind == "string":
            return self._string(node)
        if kind == "int":
            return self._int(node)
        if kind == "int?":
            if node.nil:
                if node.children or node.text.strip():
                    raise Fault(f"Element {node.name} is nil but has content", "Client")
                return None
            return self._int(node)
        if node.nil:
            raise Fault(f"Element {node.name} is not nillable", "Client")
        pairs: list[Any] = []
        members = None if self.style == "rpc" else {"item"}
        if kind == "KeyValuesPairSoapArray":
            for item in self._children(node, members):
                self._children(item, {"key", "values"})
                key = self._string(self._one(item, "key"))
                values_node = self._one(item, "values")
                if values_node.nil:
                    raise Fault("Element values is not nillable", "Client")
                values = [self._string(v) for v in self._children(values_node, members)]
                pairs.append((key, values))
            return pairs
        if kind == "KeyValuePairSoapArray":
            for item in self._children(node, members):
                self._children(item, {"key", "value"})
                key = self._string(self._one(item, "key"))
                value_node = self._one(item, "value")
                # the value stays bytes: a file's content is tens of megabytes of base64
                pairs.append((key, self._leaf(value_node)))
            return pairs
        raise AssertionError(kind)

    def _answer(self, operation: str, value: Any) -> bytes:
        if isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        p = self.prefix
        ns = f'xmlns:SOAP-ENV="{SOAP_ENV}" xmlns:{p}="{escape(self.namespace)}"'
        if self.style == "rpc":
            xsd_type = "xsd:boolean" if isinstance(value, bool) else "xsd:int"
            ns += (f' xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="{XSI}"'
                   f' SOAP-ENV:encodingStyle="{SOAP_ENC}"')
            child = f'return xsi:type="{xsd_type}"'
        else:
            child = f"{p}:return" if self.qualified else "return"
        end = child.split()[0]
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope {ns}>'
                f'<SOAP-ENV:Body><{p}:{operation}Response><{child}>{text}</{end}>'
                f'</{p}:{operation}Response></SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()

    @staticmethod
    def fault_body(text: str, code: str = "Server") -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?>\n<SOAP-ENV:Envelope '
                f'xmlns:SOAP-ENV="{SOAP_ENV}"><SOAP-ENV:Body><SOAP-ENV:Fault>'
                f'<faultcode>SOAP-ENV:{code}</faultcode>'
                f'<faultstring>{escape(text)}</faultstring>'
                f'</SOAP-ENV:Fault></SOAP-ENV:Body></SOAP-ENV:Envelope>').encode()

    # -- operations ----------------------------------------------------------------------------

    def _perform(self, call: _Call, session: str | None) -> tuple[Any, str | None]:
        """Run one operation; returns (result, new session id or None). Raises Fault."""
        with self._lock:
            if call.operation == "login":
                good = (secrets.compare_digest(call.args["login"].encode(), self.login.encode())
                        and secrets.compare_digest(call.args["password"].encode(),
                                                   self.password.encode()))
                if not good:
                    raise Fault(LOGIN_TEXT)
                new = secrets.token_hex(13)
                self._sessions[new] = 0
                self.logins += 1
                return True, new
            if session is None or session not in self._sessions:
                raise Fault(self.session_text)
            if self.expire_after is not None and self._sessions[session] >= self.expire_after:
                del self._sessions[session]
                raise Fault(self.session_text)
            self._sessions[session] += 1
            handler: Callable[..., Any] = getattr(self, f"_op_{call.operation}")
            return handler(**call.args), None

    def _op_getProcess(self, name: str) -> int:
        if name not in self.processes:
            raise Fault(f"Unknown process {name}")
        return self.processes[name]

    def _op_getObjectdef(self, process: int, name: str, version: int) -> int:
        if version < 0:
            raise Fault(f"Invalid version {version}")
        for key in ((process, name, version), (process, name) if version == 0 else None):
            if key is not None and key in self.objectdefs:
                return self.objectdefs[key]
        raise Fault(f"Unknown objectdef {name}")

    def _op_createObjectref(self, objectdef: int, parent: int | None,
                            attributes: list[tuple[str, list[str]]]) -> int:
        if objectdef not in self.objectdefs.values():
            raise Fault(f"Unknown objectdef {objectdef}")
        if parent is not None and parent not in self.objects:
            raise Fault(f"Unknown parent {parent}")
        stored: dict[str, list[str]] = {}
        for key, values in attributes:
            if self.attributes is not None and key not in self.attributes:
                raise Fault(f"Unknown attribute {key}")
            if key in stored:
                raise Fault(f"Duplicate attribute {key}")
            stored[key] = values
        oid = self._next_id
        self._next_id += 1
        self.objects[oid] = {"objectdef": objectdef, "parent": parent, "attributes": stored,
                             "files": []}
        return oid

    def _op_addFile(self, objectref: int, attribute: str,
                    file: list[tuple[str, bytearray]]) -> bool:
        if objectref not in self.objects:
            raise Fault(f"Unknown objectref {objectref}")
        if attribute not in self.file_attributes:
            raise Fault(f"Unknown attribute {attribute}")
        parts: dict[str, bytearray] = {}
        for key, value in file:
            if key not in ("srcname", "content"):
                raise Fault(f"Unknown file field {key}")
            if key in parts:
                raise Fault(f"Duplicate file field {key}")
            parts[key] = value
        if set(parts) != {"srcname", "content"}:
            raise Fault("A file needs srcname and content")
        srcname = parts["srcname"].decode("utf-8")
        if not srcname:
            raise Fault("Empty srcname")
        content = parts.pop("content")
        if not _BASE64.fullmatch(content):
            raise Fault("content is not base64")
        try:
            data = binascii.a2b_base64(content)  # skips the whitespace the regex allowed
        except binascii.Error as exc:
            raise Fault(f"content is not base64: {exc}") from exc
        content.clear()  # the request's text is done with: keep only the decoded bytes
        self.objects[objectref]["files"].append((srcname, data))
        return True


# ---------------------------------------------------------------------------------------------
# HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    easla: EaslaServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # the client went away: not the server's fault
            return
        if exc is not None:
            with self.easla._lock:
                self.easla.errors.append(exc)
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "easla-test/1.0"
    timeout = 30  # an idle keep-alive connection is closed after this
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -- connection bookkeeping ----------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        easla = self.server.easla
        with easla._lock:
            easla.connections += 1
            easla._open.add(self.connection)
            easla._handlers.add(threading.current_thread())

    def finish(self) -> None:
        easla = self.server.easla
        with easla._lock:
            easla._open.discard(self.connection)
            easla._handlers.discard(threading.current_thread())
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- replies -------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str = "text/xml; charset=utf-8",
              cookie: str | None = None) -> None:
        lines = [
            f"{self.protocol_version} {status} {self.responses.get(status, ('Error',))[0]}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        if cookie is not None:
            lines.append(f"Set-Cookie: PHPSESSID={cookie}; path=/")
        if self.close_connection:
            lines.append("Connection: close")
        # headers and body in one write: two small writes cost a delayed-ACK wait per reply
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _reset(self) -> None:
        """Drop the connection with a TCP RST, answering nothing."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.rfile.close()
        with contextlib.suppress(OSError):
            self.connection.close()

    def _switch_reply(self, operation: str, switch: _Switch) -> bool:
        """Answer as the switch says, before any work; True when the request is answered."""
        easla = self.server.easla
        if switch.kind == "http500":
            reason = self.responses.get(switch.status, ("Server Error",))[0]
            self._send(switch.status, f"{reason}\n".encode(), "text/plain; charset=utf-8")
            return True
        if switch.kind == "fault":
            with easla._lock:
                easla.faults.append((operation, switch.text))
            self._send(500, easla.fault_body(switch.text))
            return True
        if switch.kind == "timeout":
            easla._stopping.wait(switch.delay)
            self._reset()
            return True
        if switch.kind == "reset":
            self._reset()
            return True
        return False

    # -- GET: the WSDL -------------------------------------------------------------------------

    def do_GET(self) -> None:
        easla = self.server.easla
        if urlsplit(self.path).path != PATH:
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")
            return
        with easla._lock:
            easla.wsdl_requests += 1
        switch = easla._take_switch("wsdl")
        if switch is not None:
            if switch.kind == "lost_reply":
                self._reset()
            if self._switch_reply("wsdl", switch) or switch.kind == "lost_reply":
                return
        self._send(200, easla._wsdl)

    # -- POST: SOAP ----------------------------------------------------------------------------

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces, by Content-Length or chunked transfer coding."""
        coding = self.headers.get("Transfer-Encoding", "").lower()
        if coding:
            if coding != "chunked":
                raise _BadRequest(501, f"Transfer-Encoding {coding} is not supported")
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise _BadRequest(400, "bad chunk size line")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise _BadRequest(400, "bad chunk size") from None
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    piece = self.rfile.read(min(size, _READ))
                    if not piece:
                        raise ConnectionResetError("client closed mid-chunk")
                    size -= len(piece)
                    yield piece
                if self.rfile.readline(1024).strip():
                    raise _BadRequest(400, "chunk not followed by CRLF")
        length = self.headers.get("Content-Length")
        if length is None:
            raise _BadRequest(411, "Content-Length or chunked transfer coding required")
        try:
            remaining = int(length)
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        while remaining > 0:
            piece = self.rfile.read(min(remaining, _READ))
            if not piece:
                raise ConnectionResetError("client closed mid-body")
            remaining -= len(piece)
            yield piece

    def _session(self) -> str | None:
        cookies = http.cookies.SimpleCookie()
        for header in self.headers.get_all("Cookie", []):
            with contextlib.suppress(http.cookies.CookieError):
                cookies.load(header)
        morsel = cookies.get("PHPSESSID")
        return morsel.value if morsel is not None else None

    def do_POST(self) -> None:
        easla = self.server.easla
        if urlsplit(self.path).path != PATH:
            self.close_connection = True
            self._send(404, b"Not Found\n", "text/plain; charset=utf-8")
            return
        action = self.headers.get("SOAPAction", "").strip().strip('"').rpartition("#")[2]
        easla._notify("request", action)
        parser = StreamParser()
        size = 0
        error: Fault | None = None
        try:
            for piece in self._body():
                size += len(piece)
                if error is None:
                    try:
                        parser.feed(piece)
                    except expat.ExpatError as exc:
                        error = Fault(f"Bad request: {exc}", "Client")
                    except Fault as exc:
                        error = exc
            root = parser.close() if error is None else None
        except _BadRequest as exc:
            self.close_connection = True
            self._send(exc.status, f"{exc}\n".encode(), "text/plain; charset=utf-8")
            return
        except expat.ExpatError as exc:
            error, root = Fault(f"Bad request: {exc}", "Client"), None
        except Fault as exc:
            error, root = exc, None
        with easla._lock:
            easla.max_request_bytes = max(easla.max_request_bytes, size)
        del parser

        session = self._session()
        call: _Call | None = None
        if error is None and root is not None:
            try:
                call = easla._read_call(root)
            except Fault as exc:
                error = exc
        del root
        operation = call.operation if call is not None else "?"
        with easla._lock:
            easla.calls.append((operation, session))
        if error is not None or call is None:
            self._fault(operation, error or Fault("Bad request", "Client"))
            return

        switch = easla._take_switch(call.operation)
        if switch is not None:
            with easla._lock:
                easla.switched.append((call.operation, switch.kind, {
                    name: value for name, value in call.args.items() if name != "file"}))
        if switch is not None and self._switch_reply(call.operation, switch):
            return
        try:
            result, new_session = easla._perform(call, session)
        except Fault as exc:
            if switch is not None:  # lost_reply: the work failed, the reply is lost all the same
                self._reset()
                return
            self._fault(call.operation, exc)
            return
        if switch is not None:  # lost_reply: the work is done, the client never hears of it
            self._reset()
            return
        self._send(200, easla._answer(call.operation, result), cookie=new_session)
        easla._notify("answered", call.operation)

    def _fault(self, operation: str, fault: Fault) -> None:
        easla = self.server.easla
        with easla._lock:
            easla.faults.append((operation, fault.text))
        self._send(500, easla.fault_body(fault.text, fault.code))


class _BadRequest(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


# ---------------------------------------------------------------------------------------------
# pytest


def easla_fixture(name: str = "easla", **kwargs: Any) -> Any:
    """A pytest fixture (function scope) yielding a started EaslaServer built from ``kwargs``.

    In a test module:  ``easla = easla_fixture(expire_after=3)``  then  ``def test_x(easla): ...``
    """

    @pytest.fixture(name=name)
    def _fixture() -> Iterator[EaslaServer]:
        with EaslaServer(**kwargs) as server:
            yield server
            assert not server.errors, f"the easla test server failed: {server.errors!r}"

    return _fixture
