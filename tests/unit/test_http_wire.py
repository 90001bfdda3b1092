"""The HTTP argument rule shared by agent and backend, the auth objects offline, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
import requests
from remit.agent import PROOF_HEADER, AgentKey
from remit.integrations._wire import MediaTypeError, call_args, is_json_content_type, query_args
from remit.integrations.http import HttpxAuth, RequestsAuth

TOKEN = "aaa.bbb.ccc"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", {}),
        ("a=1", {"a": "1"}),
        ("a=1&b=2&a=3", {"a": ["1", "3"], "b": "2"}),
        ("a=1&a=2&a=3", {"a": ["1", "2", "3"]}),
        ("a=&b", {"a": "", "b": ""}),
        ("q=caf%C3%A9+au+lait", {"q": "café au lait"}),
        ("a%3Db=c%26d", {"a=b": "c&d"}),
        (b"x=%2F..%2Fetc", {"x": "/../etc"}),
    ],
)
def test_query_args(query: str | bytes, expected: dict[str, Any]) -> None:
    assert query_args(query) == expected


@pytest.mark.parametrize("query", ["a=%FF", "a=é", b"a=\xc3\xa9", "&".join(["a=1"] * 1001)])
def test_bad_query_is_refused(query: str | bytes) -> None:
    with pytest.raises(ValueError):
        query_args(query)


def test_body_methods_take_a_json_object() -> None:
    assert call_args("POST", b"", "", None) == {}
    assert call_args("put", b'{"a": [1, {"b": null}]}', b"", "application/json") == {
        "a": [1, {"b": None}]
    }
    assert call_args("PATCH", b'{"a": 1}', "", "application/merge-patch+json") == {"a": 1}
    assert call_args("POST", b'{"a": 1}', "", None) == {"a": 1}  # no Content-Type: JSON it is
    for body in (b"[]", b"1", b'"s"', b"null", b"{", b'{"a":1,"a":2}', b'{"a":NaN}',
                 b'{"a":1e999}', b"\xef\xbb\xbf{}", b" "):
        with pytest.raises(ValueError):
            call_args("POST", body, "", "application/json")
    with pytest.raises(MediaTypeError):
        call_args("POST", b'{"a": 1}', "", "text/plain")
    with pytest.raises(ValueError, match="query parameters are not allowed"):
        call_args("POST", b"{}", "a=1", "application/json")


def test_other_methods_take_the_query() -> None:
    assert call_args("GET", b"", "a=1", None) == {"a": "1"}
    assert call_args("DELETE", b"", b"id=7", None) == {"id": "7"}
    with pytest.raises(ValueError, match="a body is not allowed"):
        call_args("GET", b"{}", "", "application/json")


@pytest.mark.parametrize(
    ("value", "ok"),
    [("application/json", True), ("Application/JSON; charset=utf-8", True),
     ("application/problem+json", True), ("text/json", False), ("application/jsonx", False),
     ("text/plain", False), ("", False)],
)
def test_json_content_types(value: str, ok: bool) -> None:
    assert is_json_content_type(value) is ok


def _httpx_headers(auth: HttpxAuth, request: httpx.Request) -> httpx.Headers:
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    return sent.headers


def test_httpx_auth_signs_body_and_query() -> None:
    key = AgentKey.generate()
    auth = HttpxAuth(key, TOKEN, audience="payments", action="payments.transfer")
    post = httpx.Request("POST", "http://x/t", json={"amount": 5})
    headers = _httpx_headers(auth, post)
    assert headers["authorization"] == f"Remit {TOKEN}"
    assert headers[PROOF_HEADER].count(".") == 2
    get = httpx.Request("GET", "http://x/t", params={"a": "1"})
    assert PROOF_HEADER in _httpx_headers(auth, get)
    unbound = HttpxAuth(None, TOKEN, audience="payments", action="payments.transfer")
    fresh = httpx.Request("POST", "http://x/t", json={"amount": 5})
    assert PROOF_HEADER not in _httpx_headers(unbound, fresh)


def test_auth_refuses_what_the_backend_could_not_read() -> None:
    key = AgentKey.generate()
    hx = HttpxAuth(key, TOKEN, audience="payments", action="payments.transfer")
    with pytest.raises(ValueError):
        _httpx_headers(hx, httpx.Request("POST", "http://x/t", content=b"[1]"))
    with pytest.raises(ValueError):
        _httpx_headers(hx, httpx.Request("GET", "http://x/t", content=b"{}"))
    rq = RequestsAuth(key, TOKEN, audience="payments", action="payments.transfer")
    with pytest.raises(ValueError, match="streamed"):
        rq(requests.Request("POST", "http://x/t", data=iter([b"{}"])).prepare())
    with pytest.raises(ValueError):
        rq(requests.Request("POST", "http://x/t", data={"a": "1"}).prepare())  # a form


def test_requests_auth_sends_the_bytes_it_signed() -> None:
    key = AgentKey.generate()
    rq = RequestsAuth(key, TOKEN, audience="payments", action="payments.transfer")
    prepared = requests.Request(
        "POST", "http://x/t", data='{"memo": "ünï"}', headers={"Content-Type": "application/json"}
    ).prepare()
    out = rq(prepared)
    assert out.body == '{"memo": "ünï"}'.encode()
    assert out.headers["Content-Length"] == str(len(out.body))
    assert PROOF_HEADER in out.headers


def test_action_callable_must_return_a_name() -> None:
    def action(request: httpx.Request) -> Any:
        return 42

    auth = HttpxAuth(None, TOKEN, audience="payments", action=action)
    with pytest.raises(TypeError):
        _httpx_headers(auth, httpx.Request("POST", "http://x/t", json={}))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token": ""},
        {"token": "a b"},
        {"audience": ""},
        {"action": ""},
        {"action": 3},
        {"key": "not a key"},
    ],
)
def test_bad_construction(kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"key": None, "token": TOKEN, "audience": "p", "action": "a.b"}
    args.update(kwargs)
    for cls in (HttpxAuth, RequestsAuth):
        with pytest.raises((TypeError, ValueError)):
            cls(args["key"], args["token"], audience=args["audience"], action=args["action"])


def test_repr_never_shows_the_token() -> None:
    for cls in (HttpxAuth, RequestsAuth):
        text = repr(cls(AgentKey.generate(), TOKEN, audience="p", action="a.b"))
        assert TOKEN not in text and "bbb" not in text


def _modules_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_import_remit_loads_no_integration() -> None:
    mods = _modules_after("import remit")
    assert not {m for m in mods if m.startswith("remit.integrations")}
    assert not mods & {"httpx", "requests", "starlette", "anyio", "grpc", "jwt"}


def test_http_module_loads_each_client_library_on_first_use() -> None:
    mods = _modules_after("import remit.integrations.http")
    assert not mods & {"httpx", "requests"}
    mods = _modules_after("from remit.integrations.http import HttpxAuth")
    assert "httpx" in mods and "requests" not in mods
    mods = _modules_after("from remit.integrations.http import RequestsAuth")
    assert "requests" in mods and "httpx" not in mods


def test_asgi_module_keeps_grpc_and_jwt_out() -> None:
    mods = _modules_after("import remit.integrations.asgi")
    assert not {m for m in mods if m == "grpc" or m.startswith(("grpc.", "jwt", "google.protobuf"))}
    assert "starlette" not in mods  # pure ASGI: no framework needed
