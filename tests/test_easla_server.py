"""The easla test server itself, driven by a real suds-community client and by raw HTTP."""

from __future__ import annotations

import base64
import http.client
import io
import os
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit
from xml.sax import SAXParseException

import pytest
from easla_server import LOGIN_TEXT, SESSION_TEXT, SOAP_ENV, EaslaServer, easla_fixture
from suds import WebFault
from suds.cache import ObjectCache
from suds.client import Client
from suds.transport import Reply, Transport, TransportError

TIMEOUT = 5

easla = easla_fixture()


def client(server: EaslaServer, timeout: float = TIMEOUT) -> Client:
    return Client(server.url, cache=None, timeout=timeout)


def logged_in(server: EaslaServer, timeout: float = TIMEOUT) -> Client:
    c = client(server, timeout)
    assert c.service.login("poller", "secret") is True
    return c


def attributes(c: Client, **values: str | list[str]) -> Any:
    """A KeyValuesPairSoapArray built from the WSDL's types, as a client would."""
    array = c.factory.create("KeyValuesPairSoapArray")
    for key, value in values.items():
        pair = c.factory.create("KeyValuesPairSoap")
        pair.key = key
        pair.values.item = value if isinstance(value, list) else [value]
        array.item.append(pair)
    return array


def file_pairs(c: Client, srcname: str, data: bytes) -> Any:
    array = c.factory.create("KeyValuePairSoapArray")
    for key, value in (("srcname", srcname), ("content", base64.b64encode(data).decode())):
        pair = c.factory.create("KeyValuePairSoap")
        pair.key, pair.value = key, value
        array.item.append(pair)
    return array


def fault_text(excinfo: pytest.ExceptionInfo[WebFault]) -> str:
    return str(excinfo.value.fault.faultstring)


# --- raw HTTP helpers --------------------------------------------------------------------------


def envelope(operation: str, inner: str, namespace: str = "urn:easla") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" '
            f'xmlns:e="{namespace}"><s:Body><e:{operation}>{inner}</e:{operation}>'
            f'</s:Body></s:Envelope>').encode()


def post(conn: http.client.HTTPConnection, body: bytes | Iterator[bytes],
         cookie: str | None = None, chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    if cookie:
        headers["Cookie"] = f"PHPSESSID={cookie}"
    conn.request("POST", "/user/soap", body=body, headers=headers, encode_chunked=chunked)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def connect(server: EaslaServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)


def raw_login(conn: http.client.HTTPConnection) -> str:
    status, headers, _ = post(conn, envelope(
        "login", "<e:login>poller</e:login><e:password>secret</e:password>"))
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("PHPSESSID=") and cookie.endswith("; path=/")
    return cookie.split(";")[0].split("=", 1)[1]


def faultstring(body: bytes) -> str:
    root = ET.fromstring(body)
    fault = root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, body
    assert (fault.findtext("faultcode") or "").startswith("SOAP-ENV:")
    return fault.findtext("faultstring") or ""


# --- WSDL and sessions ------------------------------------------------------------------------


def test_wsdl_is_served_on_get_with_and_without_query(easla):
    conn = connect(easla)
    for path in ("/user/soap", "/user/soap?wsdl", "/user/soap?WSDL"):
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        assert int(response.getheader("Content-Length")) == len(body)
        root = ET.fromstring(body)
        assert root.get("targetNamespace") == "urn:easla"
    conn.request("GET", "/other")
    response = conn.getresponse()
    response.read()
    assert response.status == 404
    conn.close()
    assert easla.url == f"http://127.0.0.1:{easla.port}/user/soap"
    assert easla.wsdl_requests == 3


def test_suds_reads_the_contract_from_the_wsdl(easla):
    c = client(easla)
    methods = {m[0] for m in c.sd[0].ports[0][1]}
    assert methods == {"login", "getProcess", "getObjectdef", "createObjectref", "addFile"}
    types = {t[0].name for t in c.sd[0].types}
    assert {"KeyValuesPairSoap", "KeyValuesPairSoapArray", "KeyValuePairSoap",
            "KeyValuePairSoapArray"} <= types


def test_suds_object_cache_reads_the_wsdl_once(easla, tmp_path):
    cache = ObjectCache(location=str(tmp_path / "suds"), days=1)
    for _ in range(2):
        c = Client(easla.url, cache=cache, timeout=TIMEOUT)
        assert c.service.login("poller", "secret") is True
    assert easla.wsdl_requests == 1


def test_login_sets_a_session_cookie_that_later_calls_use(easla):
    c = logged_in(easla)
    cookies = {cookie.name: cookie.value for cookie in c.options.transport.cookiejar}
    assert set(cookies) == {"PHPSESSID"}
    assert c.service.getProcess("call_management") == 7
    assert c.service.getObjectdef(7, "incoming_call", 0) == 42
    assert easla.logins == 1
    assert easla.calls == [("login", None), ("getProcess", cookies["PHPSESSID"]),
                           ("getObjectdef", cookies["PHPSESSID"])]


def test_calls_without_a_session_fault(easla):
    c = client(easla)
    with pytest.raises(WebFault) as excinfo:
        c.service.getProcess("call_management")
    assert fault_text(excinfo) == SESSION_TEXT
    conn = connect(easla)
    status, _, body = post(conn, envelope("getProcess", "<e:name>call_management</e:name>"),
                           cookie="forged")
    assert (status, faultstring(body)) == (500, SESSION_TEXT)
    conn.close()


def test_wrong_password_faults_and_opens_no_session(easla):
    c = client(easla)
    with pytest.raises(WebFault) as excinfo:
        c.service.login("poller", "wrong")
    assert fault_text(excinfo) == LOGIN_TEXT
    with pytest.raises(WebFault):
        c.service.login("someone", "secret")
    assert easla.logins == 0
    assert list(c.options.transport.cookiejar) == []
    with pytest.raises(WebFault) as excinfo:
        c.service.getProcess("call_management")
    assert fault_text(excinfo) == SESSION_TEXT


def test_session_expires_after_n_calls_and_a_new_login_works():
    with EaslaServer(expire_after=2, session_text="Your session has timed out") as server:
        c = logged_in(server)
        assert c.service.getProcess("call_management") == 7
        assert c.service.getObjectdef(7, "incoming_call", 0) == 42
        with pytest.raises(WebFault) as excinfo:
            c.service.getProcess("call_management")
        assert fault_text(excinfo) == "Your session has timed out"
        assert c.service.login("poller", "secret") is True
        assert c.service.getProcess("call_management") == 7
        assert server.logins == 2
        sessions = [session for op, session in server.calls if op != "login"]
        assert sessions[0] == sessions[1] == sessions[2] != sessions[3]


def test_expire_sessions_ends_every_session_now(easla):
    c = logged_in(easla)
    easla.expire_sessions()
    with pytest.raises(WebFault) as excinfo:
        c.service.getProcess("call_management")
    assert fault_text(excinfo) == SESSION_TEXT


# --- data ---------------------------------------------------------------------------------------


def test_unknown_process_and_objectdef_fault(easla):
    c = logged_in(easla)
    with pytest.raises(WebFault) as excinfo:
        c.service.getProcess("sales")
    assert fault_text(excinfo).startswith("Unknown process")
    with pytest.raises(WebFault) as excinfo:
        c.service.getObjectdef(7, "outgoing_call", 0)
    assert fault_text(excinfo).startswith("Unknown objectdef")
    with pytest.raises(WebFault) as excinfo:
        c.service.getObjectdef(8, "incoming_call", 0)
    assert fault_text(excinfo).startswith("Unknown objectdef")


def test_processes_and_versioned_objectdefs_are_configurable():
    with EaslaServer(processes={"calls": 3},
                     objectdefs={(3, "call"): 30, (3, "call", 2): 32}) as server:
        c = logged_in(server)
        assert c.service.getProcess("calls") == 3
        assert c.service.getObjectdef(3, "call", 0) == 30
        assert c.service.getObjectdef(3, "call", 2) == 32
        with pytest.raises(WebFault):
            c.service.getObjectdef(3, "call", 1)


def test_create_objectref_stores_the_attributes(easla):
    c = logged_in(easla)
    first = c.service.createObjectref(42, None, attributes(
        c, incoming_call_number="+79161234567", incoming_call_time="0:01:05",
        status="incoming_call_answered", tags=["a", "b"], empty=[]))
    second = c.service.createObjectref(42, first, attributes(c, status="incoming_call_busy"))
    assert (first, second) == (1001, 1002)
    assert easla.objects[first] == {
        "objectdef": 42, "parent": None, "files": [],
        "attributes": {"incoming_call_number": ["+79161234567"],
                       "incoming_call_time": ["0:01:05"], "status": ["incoming_call_answered"],
                       "tags": ["a", "b"], "empty": []}}
    assert easla.objects[second]["parent"] == first
    assert easla.find_objects("status", "incoming_call_busy") == [second]


def test_create_objectref_accepts_plain_dicts_too(easla):
    c = logged_in(easla)
    oid = c.service.createObjectref(42, None, {"item": [
        {"key": "status", "values": {"item": ["incoming_call_answered"]}}]})
    assert easla.objects[oid]["attributes"] == {"status": ["incoming_call_answered"]}


def test_create_objectref_rejects_unknown_attributes_objectdefs_and_parents():
    with EaslaServer(attributes={"status", "incoming_call_number"}) as server:
        c = logged_in(server)
        with pytest.raises(WebFault) as excinfo:
            c.service.createObjectref(42, None, attributes(c, status="x", colour="red"))
        assert fault_text(excinfo) == "Unknown attribute colour"
        with pytest.raises(WebFault) as excinfo:
            c.service.createObjectref(43, None, attributes(c, status="x"))
        assert fault_text(excinfo).startswith("Unknown objectdef")
        with pytest.raises(WebFault) as excinfo:
            c.service.createObjectref(42, 999, attributes(c, status="x"))
        assert fault_text(excinfo).startswith("Unknown parent")
        with pytest.raises(WebFault) as excinfo:
            c.service.createObjectref(42, None, {"item": [
                {"key": "status", "values": {"item": ["a"]}},
                {"key": "status", "values": {"item": ["b"]}}]})
        assert fault_text(excinfo) == "Duplicate attribute status"
        assert server.objects == {}


def test_add_file_stores_the_decoded_bytes(easla):
    c = logged_in(easla)
    oid = c.service.createObjectref(42, None, attributes(c, status="incoming_call_answered"))
    data = os.urandom(200_000)
    assert c.service.addFile(oid, "incoming_call_file", file_pairs(c, "1764.1.mp3", data)) is True
    assert easla.objects[oid]["files"] == [("1764.1.mp3", data)]
    assert easla.max_request_bytes > len(data) * 4 // 3


def test_add_file_needs_a_known_object_attribute_and_a_base64_content(easla):
    c = logged_in(easla)
    oid = c.service.createObjectref(42, None, attributes(c, status="incoming_call_answered"))
    with pytest.raises(WebFault) as excinfo:
        c.service.addFile(5555, "incoming_call_file", file_pairs(c, "a.mp3", b"x"))
    assert fault_text(excinfo).startswith("Unknown objectref")
    with pytest.raises(WebFault) as excinfo:
        c.service.addFile(oid, "recording", file_pairs(c, "a.mp3", b"x"))
    assert fault_text(excinfo) == "Unknown attribute recording"
    bad = file_pairs(c, "a.mp3", b"x")
    bad.item[1].value = "not base64!"
    with pytest.raises(WebFault) as excinfo:
        c.service.addFile(oid, "incoming_call_file", bad)
    assert "base64" in fault_text(excinfo)
    no_content = file_pairs(c, "a.mp3", b"x")
    no_content.item.pop()
    with pytest.raises(WebFault):
        c.service.addFile(oid, "incoming_call_file", no_content)
    assert easla.objects[oid]["files"] == []


def test_base64_with_line_breaks_is_accepted(easla):
    c = logged_in(easla)
    oid = c.service.createObjectref(42, None, attributes(c, status="x"))
    data = os.urandom(1000)
    pairs = file_pairs(c, "a.mp3", data)
    pairs.item[1].value = base64.encodebytes(data).decode()
    c.service.addFile(oid, "incoming_call_file", pairs)
    assert easla.objects[oid]["files"] == [("a.mp3", data)]


# --- strict parsing -----------------------------------------------------------------------------

CREATE = ("<e:objectdef>42</e:objectdef><e:parent xmlns:i='http://www.w3.org/2001/"
          "XMLSchema-instance' i:nil='true'/><e:attributes><e:item><e:key>status</e:key>"
          "<e:values><e:item>x</e:item></e:values></e:item></e:attributes>")


@pytest.mark.parametrize(("operation", "inner", "expected"), [
    ("getObjectdef", "<e:process>seven</e:process><e:name>incoming_call</e:name>"
                     "<e:version>0</e:version>", "must be an int"),
    ("getObjectdef", "<e:process>7.0</e:process><e:name>incoming_call</e:name>"
                     "<e:version>0</e:version>", "must be an int"),
    ("getObjectdef", "<e:process>99999999999</e:process><e:name>incoming_call</e:name>"
                     "<e:version>0</e:version>", "out of the range"),
    ("getObjectdef", "<e:process>7</e:process><e:name>incoming_call</e:name>",
     "Missing element version"),
    ("getProcess", "<e:name>call_management</e:name><e:colour>red</e:colour>",
     "Unknown element colour"),
    ("getProcess", "<e:name>a</e:name><e:name>b</e:name>", "given twice"),
    ("getProcess", "<name>call_management</name>", "must be in namespace"),
    ("createObjectref", CREATE.replace("<e:key>status</e:key>", ""), "must hold one key"),
    ("createObjectref", CREATE.replace("<e:values>", "<e:vals>").replace("</e:values>",
                                                                         "</e:vals>"),
     "Unknown element vals"),
    ("createObjectref", CREATE.replace("<e:objectdef>42", "<e:objectdef>4 2"), "must be an int"),
    ("createObjectref", CREATE.replace("<e:item>x</e:item>", "<e:item><e:b/></e:item>"),
     "must hold text"),
    ("deleteEverything", "", "not present"),
])
def test_malformed_requests_are_client_faults(easla, operation, inner, expected):
    conn = connect(easla)
    cookie = raw_login(conn)
    status, headers, body = post(conn, envelope(operation, inner), cookie=cookie)
    assert status == 500
    assert headers["Content-Type"].startswith("text/xml")
    assert expected in faultstring(body)
    assert "SOAP-ENV:Client" in body.decode()
    conn.close()
    assert easla.objects == {}


def test_a_raw_envelope_with_nil_parent_is_accepted(easla):
    conn = connect(easla)
    cookie = raw_login(conn)
    status, _, body = post(conn, envelope("createObjectref", CREATE), cookie=cookie)
    assert status == 200, body
    assert easla.objects[1001]["attributes"] == {"status": ["x"]}
    conn.close()


@pytest.mark.parametrize(("body", "expected"), [
    (b"this is not xml", "Bad request"),
    (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x/>", "DOCTYPE"),
    (f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body/></s:Envelope>'.encode(), "one operation"),
    (b'<Envelope xmlns="http://www.w3.org/2003/05/soap-envelope"><Body/></Envelope>',
     "Not a SOAP 1.1 envelope"),
])
def test_bodies_that_are_not_soap_1_1_are_faults(easla, body, expected):
    conn = connect(easla)
    status, _, reply = post(conn, body)
    assert status == 500
    assert expected in faultstring(reply)
    conn.close()


# --- fault switches -----------------------------------------------------------------------------


def test_http500_switch_answers_a_plain_500_that_suds_cannot_parse(easla):
    c = logged_in(easla)
    easla.fail_next("createObjectref", "http500")
    # suds tries to read a fault from the 500's body and fails on the plain text
    with pytest.raises(SAXParseException):
        c.service.createObjectref(42, None, attributes(c, status="x"))
    assert easla.objects == {}
    assert c.service.createObjectref(42, None, attributes(c, status="x")) == 1001


def test_http500_switch_is_a_plain_500_on_the_wire(easla):
    easla.fail_next("login", "http500")
    conn = connect(easla)
    status, headers, body = post(conn, envelope(
        "login", "<e:login>poller</e:login><e:password>secret</e:password>"))
    assert status == 500 and headers["Content-Type"].startswith("text/plain")
    assert b"Envelope" not in body
    assert easla.logins == 0
    raw_login(conn)  # the connection stays usable
    conn.close()


def test_http500_switch_with_another_5xx_status(easla):
    c = logged_in(easla)
    easla.fail_next("getProcess", "http500", status=503)
    # suds raises a bare Exception((status, reason)) for a non-200, non-500 reply
    with pytest.raises(Exception, match="503"):
        c.service.getProcess("call_management")
    assert c.service.getProcess("call_management") == 7


def test_fault_switch_raises_a_webfault_with_the_text(easla):
    c = logged_in(easla)
    easla.fail_next("getProcess", "fault", count=2)
    easla.fail_next("getProcess", "fault", text="Database is locked")
    for text in ("Service temporarily unavailable", "Service temporarily unavailable",
                 "Database is locked"):
        with pytest.raises(WebFault) as excinfo:
            c.service.getProcess("call_management")
        assert fault_text(excinfo) == text
    assert c.service.getProcess("call_management") == 7


def test_reset_switch_drops_the_connection_and_does_nothing(easla):
    c = logged_in(easla)
    easla.fail_next("createObjectref", "reset")
    with pytest.raises(OSError):  # ConnectionResetError, or urllib's URLError around it
        c.service.createObjectref(42, None, attributes(c, status="x"))
    assert easla.objects == {}
    assert c.service.createObjectref(42, None, attributes(c, status="x")) == 1001


@pytest.mark.slow  # waits out a timeout
def test_timeout_switch_outlasts_the_client_timeout_and_does_nothing(easla):
    c = logged_in(easla, timeout=0.5)
    easla.fail_next("createObjectref", "timeout", delay=6)
    started = time.monotonic()
    with pytest.raises(OSError):  # TimeoutError (socket.timeout)
        c.service.createObjectref(42, None, attributes(c, status="x"))
    assert time.monotonic() - started < 4  # the client gave up long before the server answered
    assert easla.objects == {}
    assert c.service.createObjectref(42, None, attributes(c, status="x")) == 1001


def test_lost_reply_switch_does_the_work_but_the_client_errs(easla):
    c = logged_in(easla)
    oid = c.service.createObjectref(42, None, attributes(c, incoming_call_key="k1"))
    easla.fail_next("createObjectref", "lost_reply")
    with pytest.raises(OSError):
        c.service.createObjectref(42, None, attributes(c, incoming_call_key="k2"))
    assert easla.find_objects("incoming_call_key", "k2") == [oid + 1]
    easla.fail_next("addFile", "lost_reply")
    with pytest.raises(OSError):
        c.service.addFile(oid, "incoming_call_file", file_pairs(c, "k1.mp3", b"abc"))
    assert easla.objects[oid]["files"] == [("k1.mp3", b"abc")]


def test_a_switch_for_any_operation_and_for_the_wsdl(easla):
    easla.fail_next("wsdl", "http500")
    with pytest.raises(TransportError) as excinfo:
        client(easla)
    assert excinfo.value.httpcode == 500
    c = logged_in(easla)
    easla.fail_next("*", "fault", text="Maintenance")
    with pytest.raises(WebFault) as excinfo:
        c.service.getObjectdef(7, "incoming_call", 0)
    assert fault_text(excinfo) == "Maintenance"
    easla.fail_next("addFile", "reset")
    easla.clear_failures()
    assert c.service.getProcess("call_management") == 7


def test_fail_next_rejects_unknown_kinds_and_operations(easla):
    with pytest.raises(ValueError):
        easla.fail_next("login", "explode")
    with pytest.raises(ValueError):
        easla.fail_next("logout", "fault")


# --- namespaces and styles ------------------------------------------------------------------------


def full_round(c: Client, server: EaslaServer, arrays: str) -> None:
    """login, look-ups, an object and a file, with arrays built the way ``arrays`` says."""
    assert c.service.login("poller", "secret") is True
    process = c.service.getProcess("call_management")
    objectdef = c.service.getObjectdef(process, "incoming_call", 0)
    if arrays == "factory":
        attrs = attributes(c, status="incoming_call_answered", incoming_call_key="k")
        pairs = file_pairs(c, "k.mp3", b"mp3 bytes")
    else:  # rpc/encoded: a SOAP-ENC array is a Python list
        attrs = [{"key": "status", "values": ["incoming_call_answered"]},
                 {"key": "incoming_call_key", "values": ["k"]}]
        pairs = [{"key": "srcname", "value": "k.mp3"},
                 {"key": "content", "value": base64.b64encode(b"mp3 bytes").decode()}]
    oid = c.service.createObjectref(objectdef, None, attrs)
    assert c.service.addFile(oid, "incoming_call_file", pairs) is True
    assert server.objects[oid] == {
        "objectdef": 42, "parent": None, "files": [("k.mp3", b"mp3 bytes")],
        "attributes": {"status": ["incoming_call_answered"], "incoming_call_key": ["k"]}}


@pytest.mark.parametrize("qualified", [True, False])
def test_another_namespace_and_prefix_serve_the_same_contract(qualified):
    with EaslaServer(namespace="http://itsm.example.invalid/soap/v2", prefix="itsm",
                     qualified=qualified) as server:
        assert 'xmlns:itsm="http://itsm.example.invalid/soap/v2"' in server.wsdl_text
        assert "urn:easla" not in server.wsdl_text
        full_round(client(server), server, "factory")


def test_a_request_in_the_wrong_namespace_is_rejected():
    with EaslaServer(namespace="http://itsm.example.invalid/soap/v2") as server:
        conn = connect(server)
        status, _, body = post(conn, envelope(
            "login", "<e:login>poller</e:login><e:password>secret</e:password>"))
        assert status == 500 and "must be in namespace" in faultstring(body)
        assert server.logins == 0
        conn.close()


def test_rpc_encoded_style_with_soap_enc_arrays():
    with EaslaServer(style="rpc", namespace="urn:easla-rpc", prefix="ns1") as server:
        assert 'style="rpc"' in server.wsdl_text and 'use="encoded"' in server.wsdl_text
        full_round(client(server), server, "lists")


# --- HTTP ---------------------------------------------------------------------------------------


def test_keep_alive_serves_many_calls_on_one_connection(easla):
    conn = connect(easla)
    cookie = raw_login(conn)
    for _ in range(3):
        status, headers, body = post(conn, envelope("getProcess",
                                                    "<e:name>call_management</e:name>"), cookie)
        assert status == 200 and int(headers["Content-Length"]) == len(body)
        assert ET.fromstring(body).find(".//{urn:easla}return").text == "7"
    conn.close()
    assert easla.connections == 1
    assert len(easla.calls) == 4


def test_suds_default_transport_opens_a_connection_per_call(easla):
    c = logged_in(easla)
    c.service.getProcess("call_management")
    assert easla.connections == 3  # the WSDL, login, getProcess


class KeepAliveTransport(Transport):
    """The smallest keep-alive transport suds accepts: one HTTP/1.1 connection, one cookie."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        self.cookie: str | None = None

    def _exchange(self, method: str, url: str, body: bytes | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        headers = dict(headers)
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.conn.request(method, urlsplit(url).path or "/", body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        set_cookie = response.getheader("Set-Cookie")
        if set_cookie:
            self.cookie = set_cookie.split(";", 1)[0]
        return response.status, data

    def open(self, request: Any) -> io.BytesIO:
        status, data = self._exchange("GET", request.url, None, {})
        if status != 200:
            raise TransportError(f"HTTP {status}", status, io.BytesIO(data))
        return io.BytesIO(data)

    def send(self, request: Any) -> Reply:
        status, data = self._exchange("POST", request.url, request.message, request.headers)
        if status != 200:  # suds reads a fault from the TransportError's fp
            raise TransportError(f"HTTP {status}", status, io.BytesIO(data))
        return Reply(status, {}, data)


def test_a_keep_alive_transport_under_suds_uses_one_connection(easla):
    transport = KeepAliveTransport(easla.port)
    c = Client(easla.url, cache=None, transport=transport)
    full_round(c, easla, "factory")
    with pytest.raises(WebFault) as excinfo:
        c.service.getProcess("sales")
    assert fault_text(excinfo).startswith("Unknown process")
    transport.conn.close()
    assert easla.connections == 1
    assert len({session for op, session in easla.calls if op != "login"}) == 1


def test_chunked_request_bodies_are_read(easla):
    data = os.urandom(300_000)
    conn = connect(easla)
    cookie = raw_login(conn)
    status, _, body = post(conn, envelope("createObjectref", CREATE), cookie)
    assert status == 200

    def pieces() -> Iterator[bytes]:
        encoded = base64.b64encode(data)
        yield (b'<s:Envelope xmlns:s="' + SOAP_ENV.encode() + b'" xmlns:e="urn:easla">'
               b"<s:Body><e:addFile><e:objectref>1001</e:objectref>"
               b"<e:attribute>incoming_call_file</e:attribute><e:file>"
               b"<e:item><e:key>srcname</e:key><e:value>c.mp3</e:value></e:item>"
               b"<e:item><e:key>content</e:key><e:value>")
        for start in range(0, len(encoded), 65536):
            yield encoded[start:start + 65536]
        yield b"</e:value></e:item></e:file></e:addFile></s:Body></s:Envelope>"

    status, _, body = post(conn, pieces(), cookie, chunked=True)
    assert status == 200, body
    assert easla.objects[1001]["files"] == [("c.mp3", data)]
    # and the connection stays in step for the next request
    status, _, _ = post(conn, envelope("getProcess", "<e:name>call_management</e:name>"), cookie)
    assert status == 200
    conn.close()


@pytest.mark.slow  # streams 40 MB
def test_a_40_mb_envelope_is_streamed_through(easla):
    """A two-hour call: a 30 MB MP3, 40 MB of base64, sent in pieces."""
    data = os.urandom(30 * 1024 * 1024)
    encoded = base64.b64encode(data)
    head = (b'<s:Envelope xmlns:s="' + SOAP_ENV.encode() + b'" xmlns:e="urn:easla">'
            b"<s:Body><e:addFile><e:objectref>1001</e:objectref>"
            b"<e:attribute>incoming_call_file</e:attribute><e:file>"
            b"<e:item><e:key>srcname</e:key><e:value>long.mp3</e:value></e:item>"
            b"<e:item><e:key>content</e:key><e:value>")
    tail = b"</e:value></e:item></e:file></e:addFile></s:Body></s:Envelope>"
    conn = http.client.HTTPConnection("127.0.0.1", easla.port, timeout=30)
    cookie = raw_login(conn)
    post(conn, envelope("createObjectref", CREATE), cookie)
    conn.putrequest("POST", "/user/soap")
    conn.putheader("Content-Type", "text/xml; charset=utf-8")
    conn.putheader("Content-Length", str(len(head) + len(encoded) + len(tail)))
    conn.putheader("Cookie", f"PHPSESSID={cookie}")
    conn.endheaders()
    conn.send(head)
    view = memoryview(encoded)
    for start in range(0, len(view), 1 << 20):
        conn.send(view[start:start + (1 << 20)])
    conn.send(tail)
    response = conn.getresponse()
    assert response.status == 200, response.read()
    response.read()
    conn.close()
    assert easla.objects[1001]["files"][0][1] == data
    assert easla.max_request_bytes == len(head) + len(encoded) + len(tail)


def test_a_request_without_a_length_is_refused(easla):
    with socket.create_connection(("127.0.0.1", easla.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /user/soap HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 411")


def test_stop_is_prompt_with_idle_and_sleeping_connections():
    server = EaslaServer().start()
    idle = connect(server)
    raw_login(idle)
    server.fail_next("getProcess", "timeout", delay=30)
    sleeper = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    body = envelope("getProcess", "<e:name>x</e:name>")
    sleeper.sendall(b"POST /user/soap HTTP/1.1\r\nHost: x\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
    time.sleep(0.2)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 5  # not the 30 s the sleeping handler would take
    idle.close()
    sleeper.close()
    assert not server.errors
