"""The whole Redis Cluster goes away and comes back empty (every master killed, restarted
without persistence): verifiers fail closed with ``revocation_unavailable`` (never an
unexpected exception: redis-py's cluster client raises ``RedisClusterException``, not a
``RedisError``, when no node answers), the service answers UNAVAILABLE, a service and
verifiers started meanwhile start anyway and fail closed, and everything recovers on its
own — with the revoked token still refused.

A private cluster (not the session's): the test kills it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import remit
from remit_service import KeyStore, Server, dev_config

from tests.redis_cluster import RedisClusterProcs

from .conftest import API_KEY

PREFIX = "remit-cfault:"
CAP = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 5}

pytestmark = pytest.mark.slow


@pytest.fixture
def private_cluster() -> Iterator[RedisClusterProcs]:
    cluster = RedisClusterProcs()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_service(
    tmp_path: Path, private_cluster: RedisClusterProcs,
    stop_in_background: Callable[[Server], None],
) -> Iterator[Server]:
    cfg = dev_config(data_dir=tmp_path, redis=private_cluster.url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix=PREFIX)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


def _code(verifier: remit.Verifier, token: str) -> str:
    try:
        verifier.check(token, action="payments.transfer", args=ARGS)
    except remit.Denied as denied:
        return str(denied.code)
    return "allowed"


def _eventually(condition: Callable[[], bool], what: str, limit: float = 15.0) -> None:
    """Poll until ``condition`` holds (a liveness bound, not a latency assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.02)


def _jti(token: str) -> str:
    body = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return str(claims["jti"])


def test_the_whole_cluster_lost_and_back_empty(
    private_cluster: RedisClusterProcs, cluster_service: Server,
    stop_in_background: Callable[[Server], None],
) -> None:
    with remit.Client(cluster_service.grpc_target, api_key=API_KEY,
                      retry=None) as client:
        def grant() -> Any:
            return client.create_grant(subject="user:a", agent="agent:a",
                                       audience=["payments"], capabilities=[CAP],
                                       purpose="faults", ttl=600)

        g = grant()
        revoked, live = client.mint(g.id), client.mint(g.id)
        client.revoke(jti=_jti(revoked))
        verifiers = {
            mode: remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(),
                                           audience="payments", revocation=mode,
                                           redis=private_cluster.url, prefix=PREFIX)
            for mode in ("strict", "stream")
        }
        try:
            for v in verifiers.values():
                _eventually(lambda v=v: _code(v, revoked) == "revoked", "revocation seen")
                assert _code(v, live) == "allowed"

            private_cluster.kill_all()
            for mode, v in verifiers.items():
                assert _code(v, revoked) in ("revoked", "revocation_unavailable"), mode
                _eventually(lambda v=v: _code(v, live) == "revocation_unavailable",
                            f"{mode}: fail closed while the cluster is gone")
            with pytest.raises(remit.Unavailable):
                client.mint(g.id)
            # Started while no node answers: they start, and fail closed (LazyCluster).
            for mode in ("strict", "stream"):
                verifiers[f"late-{mode}"] = remit.Verifier(
                    client.jwks(), issuer=client.issuer(), audience="payments",
                    revocation=mode, redis=private_cluster.url, prefix=PREFIX,
                    revocation_load_timeout=1.0,
                )
            late_service = Server(dataclasses.replace(cluster_service.config, grpc_port=0,
                                                      http_port=0)).start()
            try:
                with remit.Client(late_service.grpc_target, api_key=API_KEY,
                                  retry=None) as late:
                    with pytest.raises(remit.Unavailable):
                        late.mint(g.id)
                    for mode, v in verifiers.items():
                        assert _code(v, live) == "revocation_unavailable", mode

                    private_cluster.restart_all()  # empty: revocations and epoch lost
                    fresh = late.mint(late_grant(late).id)  # the epoch is re-created first
            finally:
                stop_in_background(late_service)
            for mode, v in verifiers.items():
                _eventually(lambda v=v: _code(v, fresh) == "allowed", f"{mode}: recovers")
                assert _code(v, revoked) == "revoked", mode  # never accepted again
                assert _code(v, live) == "revoked", mode  # issued before the new epoch
            assert _code(verifiers["strict"], client.mint(grant().id)) == "allowed"
        finally:
            for v in verifiers.values():
                v.close()


def late_grant(client: remit.Client) -> Any:
    return client.create_grant(subject="user:a", agent="agent:a", audience=["payments"],
                               capabilities=[CAP], purpose="faults", ttl=600)
