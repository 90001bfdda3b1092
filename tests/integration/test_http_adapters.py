"""HTTP adapters end to end: agent auth (httpx, requests) → real uvicorn → RemitMiddleware → app.

A Starlette app (and a FastAPI one) sits behind :class:`RemitMiddleware` with a real
:class:`remit.Verifier`, served by uvicorn on 127.0.0.1 in a background thread. Every
case runs with both client libraries; each asserts what the endpoint saw, or that it
never ran.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis
import remit
import requests
import uvicorn
from remit.agent import PROOF_HEADER, AgentKey, http_headers
from remit.integrations.asgi import DECISION_SCOPE_KEY, RemitMiddleware
from remit.integrations.http import HttpxAuth, RequestsAuth
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.tokens import AUDIENCE, ISSUER, IssuerKey, claims, sign

TRANSFER = "payments.transfer"
BALANCE = "payments.balance"
GUARDED = "payments.guarded"
OK_BODY = {"amount": 50, "to": "DE89"}
ONE_MIB = 1 << 20

CAPS: list[dict[str, Any]] = [
    {
        "type": "remit.capability",
        "action": TRANSFER,
        "args": {
            "amount": {"le": 100},
            "to": {"eq": "DE89"},
            "memo": {"max_len": 2 * ONE_MIB, "optional": True},
        },
    },
    {
        "type": "remit.capability",
        "action": BALANCE,
        "args": {
            "account": {"eq": "DE89"},
            "fields": {"eq": ["iban", "owner"], "optional": True},
        },
    },
    {
        "type": "remit.capability",
        "action": GUARDED,
        "args": {"amount": {"le": 100}, "to": {"eq": "DE89"}},
    },
]

ROUTES = {
    ("POST", "/transfer"): TRANSFER,
    ("GET", "/balance"): BALANCE,
    ("POST", "/guarded"): GUARDED,
}


# -- the tool backend -------------------------------------------------------------------


@dataclass
class Seen:
    """What the endpoints ran with, in order: (endpoint, arguments, credentials, decision)."""

    calls: list[tuple[str, Any, remit.Credentials | None, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, args: Any, request: Request) -> None:
        with self.lock:
            decision = request.scope.get(DECISION_SCOPE_KEY)
            self.calls.append((name, args, remit.current_credentials(), decision))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def starlette_app(verifier: remit.Verifier, seen: Seen) -> Starlette:
    @verifier.guard(TRANSFER)
    def transfer_tool(amount: int, to: str) -> dict[str, Any]:
        creds = remit.current_credentials()
        assert creds is not None
        return {"moved": amount, "to": to, "token_seen": creds.token[-12:]}

    async def transfer(request: Request) -> JSONResponse:
        body = await request.json()
        seen.add("transfer", body, request)
        decision = request.scope[DECISION_SCOPE_KEY]
        return JSONResponse({"seen": body, "token_id": decision.token_id})

    def balance(request: Request) -> JSONResponse:  # sync: runs in Starlette's threadpool
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        seen.add("balance", query, request)
        return JSONResponse({"query": query})

    async def guarded_endpoint(request: Request) -> JSONResponse:
        body = await request.json()
        seen.add("guarded", body, request)
        try:
            # to_thread copies the context: the guard finds the call's credentials there
            result = await asyncio.to_thread(transfer_tool, **body)
        except remit.Denied as denied:
            return JSONResponse({"guard": denied.code.value})
        return JSONResponse({"guard": "allowed", "result": result})

    async def admin(request: Request) -> JSONResponse:  # served by the app, not in ROUTES
        seen.add("admin", await request.body(), request)
        return JSONResponse({"admin": True})

    async def healthz(request: Request) -> JSONResponse:
        seen.add("healthz", None, request)
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/transfer", transfer, methods=["POST"]),
            Route("/balance", balance, methods=["GET"]),
            Route("/guarded", guarded_endpoint, methods=["POST"]),
            Route("/admin", admin, methods=["POST", "GET"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    return app


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn died on startup"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture(scope="module")
def issuer() -> IssuerKey:
    return IssuerKey()


def local_verifier(issuer: IssuerKey, **kwargs: Any) -> remit.Verifier:
    return remit.Verifier(
        issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off", replay="local",
        **kwargs,
    )


@pytest.fixture(scope="module")
def backend(issuer: IssuerKey) -> Iterator[tuple[str, Seen, remit.Verifier]]:
    seen = Seen()
    verifier = local_verifier(issuer)
    app = RemitMiddleware(
        starlette_app(verifier, seen), verifier, ROUTES, public=["/healthz"]
    )
    with serve(app) as url:
        yield url, seen, verifier


@pytest.fixture
def seen(backend: tuple[str, Seen, remit.Verifier]) -> Seen:
    backend[1].calls.clear()
    return backend[1]


def mint(issuer: IssuerKey, key: AgentKey | None = None, **overrides: Any) -> str:
    extra: dict[str, Any] = {"authorization_details": CAPS}
    if key is not None:
        extra["cnf"] = {"jkt": key.thumbprint}
    return sign(claims(now=int(time.time()), **{**extra, **overrides}), issuer)


# -- one interface over both client libraries --------------------------------------------


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]
    sent_headers: Mapping[str, str]
    sent_body: bytes


class Http:
    """Send requests with httpx or requests; answer in one shape."""

    def __init__(self, kind: str, base: str) -> None:
        self.kind = kind
        self.base = base
        self._httpx = httpx.Client(base_url=base, timeout=10, trust_env=False)
        self._session = requests.Session()
        self._session.trust_env = False

    def auth(
        self, key: AgentKey | None, token: str, action: str | Callable[[Any], str] = TRANSFER
    ) -> Any:
        cls = HttpxAuth if self.kind == "httpx" else RequestsAuth
        return cls(key, token, audience=AUDIENCE, action=action)

    def send(
        self,
        method: str,
        path: str,
        *,
        auth: Any = None,
        json: Any = None,
        content: bytes | None = None,
        params: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        if self.kind == "httpx":
            r = self._httpx.request(
                method, path, auth=auth, json=json, content=content, params=params,
                headers=headers,
            )
            sent_body = r.request.content
            return Reply(r.status_code, _json(r.headers, r.content), r.headers,
                         r.request.headers, sent_body)
        q = self._session.request(
            method, self.base + path, auth=auth, json=json, data=content, params=params,
            headers=headers, timeout=10,
        )
        body = q.request.body
        sent = body.encode() if isinstance(body, str) else (body or b"")
        return Reply(q.status_code, _json(q.headers, q.content), q.headers,
                     q.request.headers, sent)

    def close(self) -> None:
        self._httpx.close()
        self._session.close()


def _json(headers: Mapping[str, str], content: bytes) -> Any:
    if headers.get("content-type", "").startswith("application/json") and content:
        return json.loads(content)
    return None


@pytest.fixture(params=["httpx", "requests"])
def http(
    request: pytest.FixtureRequest, backend: tuple[str, Seen, remit.Verifier]
) -> Iterator[Http]:
    h = Http(request.param, backend[0])
    yield h
    h.close()


def assert_denied(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply.body
    assert reply.body["error"] == "denied"
    assert reply.body["code"] == code, reply.body
    assert isinstance(reply.body["message"], str)
    if status == 401:
        assert reply.headers["www-authenticate"] == f'Remit error="{code}"'
    else:
        assert "www-authenticate" not in reply.headers


# -- allowed calls -----------------------------------------------------------------------


def test_bound_token_with_proof_reaches_endpoint_with_body(
    http: Http, seen: Seen, issuer: IssuerKey
) -> None:
    key = AgentKey.generate()
    token = mint(issuer, key)
    body = {"amount": 50, "to": "DE89", "memo": "rent ünïcode"}
    reply = http.send("POST", "/transfer", auth=http.auth(key, token), json=body)
    assert reply.status == 200, reply.body
    assert reply.body["seen"] == body
    assert PROOF_HEADER in reply.sent_headers
    assert reply.sent_headers["Authorization"] == f"Remit {token}"
    [(name, args, creds, decision)] = seen.calls
    assert (name, args) == ("transfer", body)
    assert creds == remit.Credentials(token, reply.sent_headers[PROOF_HEADER], True)
    assert isinstance(decision, remit.Decision) and decision.action == TRANSFER
    assert reply.body["token_id"] == decision.token_id


def test_each_request_gets_a_fresh_proof(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key))
    proofs = set()
    for amount in (1, 2, 3):
        reply = http.send("POST", "/transfer", auth=auth, json={"amount": amount, "to": "DE89"})
        assert reply.status == 200, reply.body
        proofs.add(reply.sent_headers[PROOF_HEADER])
    assert len(proofs) == 3
    assert [c[1]["amount"] for c in seen.calls] == [1, 2, 3]


def test_unbound_token_needs_no_proof(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    reply = http.send("POST", "/transfer", auth=http.auth(None, mint(issuer)), json=OK_BODY)
    assert reply.status == 200, reply.body
    assert PROOF_HEADER not in reply.sent_headers
    assert seen.calls[0][2] == remit.Credentials(seen.calls[0][2].token, None, True)


def test_action_from_a_callable(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    names: list[str] = []

    def action(request: Any) -> str:
        names.append(str(request.url))
        return TRANSFER

    auth = http.auth(key, mint(issuer, key), action=action)
    reply = http.send("POST", "/transfer", auth=auth, json=OK_BODY)
    assert reply.status == 200, reply.body
    assert names == [f"{http.base}/transfer"]


def test_get_with_query_arguments(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    token = mint(issuer, key)
    auth = http.auth(key, token, action=BALANCE)
    reply = http.send("GET", "/balance", auth=auth, params={"account": "DE89"})
    assert reply.status == 200, reply.body
    assert reply.body == {"query": {"account": ["DE89"]}}
    # a repeated name is a list of strings, checked as such
    params = [("account", "DE89"), ("fields", "iban"), ("fields", "owner")]
    reply = http.send("GET", "/balance", auth=auth, params=params)
    assert reply.status == 200, reply.body
    assert reply.body == {"query": {"account": ["DE89"], "fields": ["iban", "owner"]}}
    assert seen.names() == ["balance", "balance"]
    assert all(c[2] is not None and c[2].token == token for c in seen.calls)  # sync endpoint
    # another account, a repeated scalar, an extra parameter: denied before the endpoint
    for bad, code in (
        ({"account": "FR76"}, "argument_denied"),
        ([("account", "DE89"), ("account", "DE89")], "argument_denied"),
        ({"account": "DE89", "limit": "5"}, "unexpected_argument"),
    ):
        assert_denied(http.send("GET", "/balance", auth=auth, params=bad), 403, code)
    assert seen.names() == ["balance", "balance"]


def test_public_path_needs_no_token(http: Http, seen: Seen) -> None:
    reply = http.send("GET", "/healthz")
    assert reply.status == 200
    assert seen.calls == [("healthz", None, None, None)]


# -- denials: the endpoint never runs ----------------------------------------------------


def test_argument_outside_the_grant_is_denied(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key))
    reply = http.send("POST", "/transfer", auth=auth, json={"amount": 500, "to": "DE89"})
    assert_denied(reply, 403, "argument_denied")
    reply = http.send("POST", "/transfer", auth=auth, json={"amount": 5, "to": "X", "cc": 1})
    assert reply.status == 403 and reply.body["code"] in ("argument_denied", "unexpected_argument")
    assert seen.calls == []


def test_route_not_in_the_table_is_denied(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key))
    # /admin exists in the app; it is just not an action: the middleware must not pass it on
    assert_denied(http.send("POST", "/admin", auth=auth, json={}), 403, "action_not_granted")
    assert_denied(http.send("GET", "/admin", auth=auth), 403, "action_not_granted")
    # a mapped path with another method, another spelling of a mapped path, an unknown path
    assert_denied(http.send("PUT", "/transfer", auth=auth, json=OK_BODY), 403,
                  "action_not_granted")
    assert_denied(http.send("POST", "/transfer/", auth=auth, json=OK_BODY), 403,
                  "action_not_granted")
    assert_denied(http.send("GET", "/nowhere", auth=auth), 403, "action_not_granted")
    assert seen.calls == []


def test_no_token_is_401(http: Http, seen: Seen) -> None:
    assert_denied(http.send("POST", "/transfer", json=OK_BODY), 401, "token_required")
    reply = http.send("POST", "/transfer", json=OK_BODY, headers={"Authorization": "Bearer abc"})
    assert_denied(reply, 401, "token_required")
    # unmapped routes answer the same to a caller without a token: no route map for free
    assert_denied(http.send("POST", "/admin", json={}), 401, "token_required")
    assert seen.calls == []


def test_garbage_token_is_401(http: Http, seen: Seen) -> None:
    reply = http.send("POST", "/transfer", json=OK_BODY, headers={"Authorization": "Remit x.y.z"})
    assert_denied(reply, 401, "malformed")
    reply = http.send("POST", "/transfer", json=OK_BODY, headers={"Authorization": "Remit a b"})
    assert_denied(reply, 401, "malformed")
    assert seen.calls == []


def test_token_from_another_issuer_is_401(http: Http, seen: Seen) -> None:
    reply = http.send("POST", "/transfer", auth=http.auth(None, mint(IssuerKey())), json=OK_BODY)
    assert reply.status == 401 and reply.body["code"] in ("unknown_key", "bad_signature")
    assert seen.calls == []


def test_bound_token_without_proof_is_401(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    token = mint(issuer, key)
    reply = http.send("POST", "/transfer", auth=http.auth(None, token), json=OK_BODY)
    assert_denied(reply, 401, "proof_required")
    assert seen.calls == []
    reply = http.send("POST", "/transfer", auth=http.auth(key, token), json=OK_BODY)
    assert reply.status == 200, reply.body
    assert seen.names() == ["transfer"]


def test_proof_by_another_key_is_401(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    token = mint(issuer, AgentKey.generate())
    reply = http.send("POST", "/transfer", auth=http.auth(AgentKey.generate(), token),
                      json=OK_BODY)
    assert_denied(reply, 401, "proof_key_mismatch")
    assert seen.calls == []


def test_replayed_proof_is_401(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    first = http.send("POST", "/transfer", auth=http.auth(key, mint(issuer, key)), json=OK_BODY)
    assert first.status == 200
    captured = {
        "Authorization": first.sent_headers["Authorization"],
        PROOF_HEADER: first.sent_headers[PROOF_HEADER],
        "Content-Type": "application/json",
    }
    again = http.send("POST", "/transfer", content=first.sent_body, headers=captured)
    assert_denied(again, 401, "replayed")
    assert seen.names() == ["transfer"]


def test_proof_for_other_arguments_is_401(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    token = mint(issuer, key)
    headers = http_headers(key, token, audience=AUDIENCE, action=TRANSFER, args=OK_BODY)
    reply = http.send("POST", "/transfer", json={"amount": 60, "to": "DE89"}, headers=headers)
    assert_denied(reply, 401, "proof_mismatch")
    # a proof for another action (the route's action is what is checked)
    headers = http_headers(key, token, audience=AUDIENCE, action=GUARDED, args=OK_BODY)
    reply = http.send("POST", "/transfer", json=OK_BODY, headers=headers)
    assert_denied(reply, 401, "proof_mismatch")
    # a proof for another backend
    headers = http_headers(key, token, audience="email", action=TRANSFER, args=OK_BODY)
    reply = http.send("POST", "/transfer", json=OK_BODY, headers=headers)
    assert_denied(reply, 401, "proof_mismatch")
    assert seen.calls == []


def test_client_action_differs_from_route_action(
    http: Http, seen: Seen, issuer: IssuerKey
) -> None:
    """The agent cannot choose the action: the backend's route table does."""
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key), action=GUARDED)
    assert_denied(http.send("POST", "/transfer", auth=auth, json=OK_BODY), 401, "proof_mismatch")
    assert seen.calls == []


def test_oversized_body_is_413(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key))
    big = {**OK_BODY, "memo": "x" * ONE_MIB}
    assert_denied(http.send("POST", "/transfer", auth=auth, json=big), 413, "invalid_request")
    # just under the cap is fine
    fits = {**OK_BODY, "memo": "x" * (ONE_MIB - 100)}
    reply = http.send("POST", "/transfer", auth=auth, json=fits)
    assert reply.status == 200, reply.body
    assert seen.names() == ["transfer"]


def test_oversized_chunked_body_is_413(
    backend: tuple[str, Seen, remit.Verifier], seen: Seen, issuer: IssuerKey
) -> None:
    """No Content-Length: the middleware counts the chunks as they arrive."""
    token = mint(issuer)

    def chunks() -> Iterator[bytes]:
        yield b'{"amount": 1, "to": "DE89", "memo": "'
        for _ in range(20):
            yield b"x" * (64 * 1024)
        yield b'"}'

    with httpx.Client(base_url=backend[0], trust_env=False, timeout=10) as client:
        r = client.post("/transfer", content=chunks(),
                        headers={"Authorization": f"Remit {token}",
                                 "Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert r.json()["code"] == "invalid_request"
    assert "content-length" not in r.request.headers
    assert seen.calls == []


def test_non_json_body_fails_before_sending(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = http.auth(key, mint(issuer, key))
    for content, headers in (
        (b"amount=5&to=DE89", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b"not json", {"Content-Type": "application/json"}),
        (b"[1, 2]", {"Content-Type": "application/json"}),
        (b'{"a": 1, "a": 2}', {"Content-Type": "application/json"}),
        (b'{"a": NaN}', {"Content-Type": "application/json"}),
    ):
        with pytest.raises(ValueError):
            http.send("POST", "/transfer", auth=auth, content=content, headers=headers)
    with pytest.raises(ValueError):  # a POST carries its arguments in the body only
        http.send("POST", "/transfer", auth=auth, json=OK_BODY, params={"to": "evil"})
    with pytest.raises(ValueError):  # an integer a proof cannot hash exactly
        http.send("POST", "/transfer", auth=auth, json={"amount": 2**60, "to": "DE89"})
    assert seen.calls == []


def test_non_json_body_sent_anyway_is_400(http: Http, seen: Seen, issuer: IssuerKey) -> None:
    auth = {"Authorization": f"Remit {mint(issuer)}"}
    for content, ctype, status in (
        (b"not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b'{"amount": 5, "amount": 500, "to": "DE89"}', "application/json", 400),
        (b'{"amount": 5, "to": "DE89"}', "text/plain", 415),
        (b"\xff\xfe{}", "application/json", 400),
    ):
        reply = http.send("POST", "/transfer", content=content,
                          headers={**auth, "Content-Type": ctype})
        assert_denied(reply, status, "invalid_request")
    reply = http.send("POST", "/transfer?to=evil", json=OK_BODY, headers=auth)
    assert_denied(reply, 400, "invalid_request")
    reply = http.send("GET", "/balance?account=DE89", content=b'{"account": "FR76"}',
                      headers=auth)
    assert_denied(reply, 400, "invalid_request")
    assert seen.calls == []


def test_repeated_credential_header_is_400(
    backend: tuple[str, Seen, remit.Verifier], seen: Seen, issuer: IssuerKey
) -> None:
    token = mint(issuer)
    with httpx.Client(base_url=backend[0], trust_env=False) as client:
        r = client.post("/transfer", json=OK_BODY,
                        headers=[("Authorization", f"Remit {token}"),
                                 ("Authorization", "Remit other")])
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert seen.calls == []


# -- @verifier.guard inside a checked endpoint ---------------------------------------------


def test_guard_inside_endpoint_sees_the_call_credentials(
    http: Http, seen: Seen, issuer: IssuerKey
) -> None:
    token = mint(issuer)  # unbound: the same credentials can be checked twice
    auth = http.auth(None, token, action=GUARDED)
    reply = http.send("POST", "/guarded", auth=auth, json=OK_BODY)
    assert reply.status == 200, reply.body
    assert reply.body == {
        "guard": "allowed",
        "result": {"moved": 50, "to": "DE89", "token_seen": token[-12:]},
    }


def test_guard_inside_endpoint_checks_its_own_arguments(
    issuer: IssuerKey, seen: Seen, http: Http
) -> None:
    # The route's capability allows the body; the guarded tool's own capability is
    # narrower for this token, so the inner check denies.
    caps = [dict(CAPS[2]), {**CAPS[0], "args": {"amount": {"le": 10}, "to": {"eq": "DE89"}}}]
    token = mint(issuer, authorization_details=caps)
    reply = http.send("POST", "/guarded", auth=http.auth(None, token, action=GUARDED),
                      json=OK_BODY)
    assert reply.status == 200 and reply.body == {"guard": "argument_denied"}


def test_guard_inside_endpoint_with_bound_token_trusts_the_middlewares_proof(
    http: Http, seen: Seen, issuer: IssuerKey
) -> None:
    """The middleware checked the proof (and spent it); the guard inside re-checks the
    token's scope for its own action and arguments, without asking for the proof again."""
    key = AgentKey.generate()
    reply = http.send("POST", "/guarded", auth=http.auth(key, mint(issuer, key), action=GUARDED),
                      json=OK_BODY)
    assert reply.status == 200 and reply.body["guard"] == "allowed"


# -- async httpx, strict Redis, an unavailable Redis, a broken verifier ------------------


def test_httpx_async_client(backend: tuple[str, Seen, remit.Verifier], seen: Seen,
                            issuer: IssuerKey) -> None:
    key = AgentKey.generate()
    auth = HttpxAuth(key, mint(issuer, key), audience=AUDIENCE, action=TRANSFER)

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=backend[0], trust_env=False) as client:
            replies = await asyncio.gather(*(
                client.post("/transfer", json={"amount": n, "to": "DE89"}, auth=auth)
                for n in range(1, 6)
            ))
        return [r.status_code for r in replies]

    assert asyncio.run(go()) == [200] * 5
    assert sorted(c[1]["amount"] for c in seen.calls) == [1, 2, 3, 4, 5]
    # concurrent requests each saw their own credentials
    assert len({c[2].proof for c in seen.calls if c[2] is not None}) == 5


def test_strict_revocation_and_shared_replay_state_in_redis(
    issuer: IssuerKey, redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    """Two backends share Redis: a proof used at one is refused at the other; a revoked
    grant is refused at both."""
    seen_a, seen_b = Seen(), Seen()
    verifiers = [
        remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="strict",
                       replay="redis", redis=redis_url, prefix=redis_prefix)
        for _ in range(2)
    ]
    apps = [RemitMiddleware(starlette_app(v, s), v, ROUTES)
            for v, s in zip(verifiers, (seen_a, seen_b), strict=True)]
    key = AgentKey.generate()
    token_claims = claims(now=int(time.time()), authorization_details=CAPS,
                          cnf={"jkt": key.thumbprint})
    token = sign(token_claims, issuer)
    # Strict checks want the grant record (its absence means Redis lost its data).
    redis_client.set(f"{redis_prefix}grant:{{{token_claims['gid']}}}", b"{}", ex=600)
    with serve(apps[0]) as url_a, serve(apps[1]) as url_b:
        first = httpx.post(f"{url_a}/transfer", json=OK_BODY, trust_env=False,
                           auth=HttpxAuth(key, token, audience=AUDIENCE, action=TRANSFER))
        assert first.status_code == 200, first.text
        replay = requests.post(f"{url_b}/transfer", data=first.request.content, timeout=10,
                               headers={k: first.request.headers[k] for k in
                                        ("authorization", PROOF_HEADER, "content-type")})
        assert replay.status_code == 401 and replay.json()["code"] == "replayed"

        redis_client.set(f"{redis_prefix}rev:{{{token_claims['gid']}}}:grant", b"1")
        for url in (url_a, url_b):
            r = requests.post(f"{url}/transfer", json=OK_BODY, timeout=10,
                              auth=RequestsAuth(key, token, audience=AUDIENCE, action=TRANSFER))
            assert r.status_code == 401 and r.json()["code"] == "revoked"
    assert len(seen_a.calls) == 1 and seen_b.calls == []
    for v in verifiers:
        v.close()


def test_unreachable_redis_is_503(issuer: IssuerKey) -> None:
    seen = Seen()
    verifier = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE,
                              revocation="strict", replay="local", redis="redis://127.0.0.1:1/0")
    with serve(RemitMiddleware(starlette_app(verifier, seen), verifier, ROUTES)) as url:
        r = requests.post(f"{url}/transfer", json=OK_BODY, timeout=10,
                          auth=RequestsAuth(None, mint(issuer), audience=AUDIENCE,
                                            action=TRANSFER))
    assert r.status_code == 503
    assert r.json()["code"] == "revocation_unavailable"
    assert "www-authenticate" not in r.headers
    assert seen.calls == []
    verifier.close()


class _BrokenVerifier(remit.Verifier):
    """Fault injection: a check that fails with something other than Denied."""

    def check(self, token: str, *, action: str, args: Any = None, proof: Any = None) -> Any:
        raise RuntimeError("boom: secret detail")


class _LaxVerifier(remit.Verifier):
    """Fault injection: a check that returns instead of raising, with no Decision."""

    def check(self, token: str, *, action: str, args: Any = None, proof: Any = None) -> Any:
        return None


@pytest.mark.parametrize("verifier_cls", [_BrokenVerifier, _LaxVerifier])
def test_unexpected_failure_in_the_check_is_500_and_never_calls_the_app(
    issuer: IssuerKey, verifier_cls: type[remit.Verifier], caplog: pytest.LogCaptureFixture
) -> None:
    seen = Seen()
    verifier = verifier_cls(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off")
    with serve(RemitMiddleware(starlette_app(verifier, seen), verifier, ROUTES)) as url:
        r = httpx.post(f"{url}/transfer", json=OK_BODY, trust_env=False,
                       auth=HttpxAuth(None, mint(issuer), audience=AUDIENCE, action=TRANSFER))
    assert r.status_code == 500
    assert r.json() == {"error": "internal"}
    assert seen.calls == []
    assert any("remit: the check of POST /transfer failed" in m for m in caplog.messages)


# -- construction --------------------------------------------------------------------------


def _noop_app() -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not called")

    return app


@pytest.mark.parametrize(
    ("routes", "public", "error"),
    [
        ({("POST", "/x"): "Not An Action"}, (), ValueError),
        ({("POST", "x"): "a.b"}, (), ValueError),
        ({("PO ST", "/x"): "a.b"}, (), ValueError),
        ({("POST", "/x"): "a.b", ("post", "/x"): "a.c"}, (), ValueError),
        ({"/x": "a.b"}, (), TypeError),
        ({("POST", "/x"): "a.b"}, ["/x"], ValueError),
        ({("POST", "/x"): "a.b"}, "/healthz", TypeError),
        ({("POST", "/x"): "a.*"}, (), ValueError),
    ],
)
def test_bad_configuration_is_refused(
    issuer: IssuerKey, routes: Any, public: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        RemitMiddleware(_noop_app(), local_verifier(issuer), routes, public=public)
