"""RemitMiddleware in front of a FastAPI app (pydantic bodies, query parameters, a guard)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import remit
from remit.agent import AgentKey
from remit.integrations.asgi import RemitMiddleware
from remit.integrations.http import HttpxAuth

from tests.integration.test_http_adapters import (
    BALANCE,
    CAPS,
    GUARDED,
    OK_BODY,
    ROUTES,
    TRANSFER,
    serve,
)
from tests.tokens import AUDIENCE, ISSUER, IssuerKey, claims, sign

fastapi = pytest.importorskip("fastapi")
pydantic = pytest.importorskip("pydantic")


class Transfer(pydantic.BaseModel):  # type: ignore[misc]
    amount: int
    to: str


def test_fastapi_app() -> None:
    issuer = IssuerKey()
    verifier = remit.Verifier(issuer.jwks(), issuer=ISSUER, audience=AUDIENCE,
                              revocation="off", replay="local")
    ran: list[tuple[Transfer, remit.Credentials | None]] = []

    def mint(key: AgentKey | None = None) -> str:
        cnf = {"cnf": {"jkt": key.thumbprint}} if key is not None else {}
        return sign(claims(now=int(time.time()), authorization_details=CAPS, **cnf), issuer)

    @verifier.guard(TRANSFER)
    def move(amount: int, to: str) -> str:
        return f"moved {amount} to {to}"

    api = fastapi.FastAPI()

    @api.post("/transfer")
    def transfer(body: Transfer) -> dict[str, Any]:
        ran.append((body, remit.current_credentials()))
        return {"amount": body.amount, "to": body.to}

    @api.get("/balance")
    async def balance(account: str) -> dict[str, str]:
        return {"account": account}

    @api.post("/guarded")
    def guarded(body: Transfer) -> dict[str, str]:
        return {"result": move(body.amount, body.to)}

    app = RemitMiddleware(api, verifier, ROUTES, public=["/openapi.json"])
    key = AgentKey.generate()
    bound = mint(key)

    def auth(action: str, token: str = bound, k: AgentKey | None = key) -> HttpxAuth:
        return HttpxAuth(k, token, audience=AUDIENCE, action=action)

    with serve(app) as url, httpx.Client(base_url=url, trust_env=False) as client:
        r = client.post("/transfer", json=OK_BODY, auth=auth(TRANSFER))
        assert r.status_code == 200, r.text
        assert r.json() == OK_BODY
        assert ran[0][1] is not None and ran[0][1].token == bound
        r = client.post("/transfer", json={"amount": 101, "to": "DE89"}, auth=auth(TRANSFER))
        assert r.status_code == 403 and r.json()["code"] == "argument_denied"
        r = client.get("/balance", params={"account": "DE89"}, auth=auth(BALANCE))
        assert r.status_code == 200 and r.json() == {"account": "DE89"}
        r = client.get("/docs")  # FastAPI serves it; it is neither mapped nor public
        assert r.status_code == 401 and r.json()["code"] == "token_required"
        r = client.get("/docs", auth=auth(TRANSFER))
        assert r.status_code == 403 and r.json()["code"] == "action_not_granted"
        assert client.get("/openapi.json").status_code == 200
        r = client.post("/guarded", json=OK_BODY, auth=auth(GUARDED, mint(), None))
        assert r.status_code == 200 and r.json() == {"result": "moved 50 to DE89"}
    assert len(ran) == 1
    verifier.close()
