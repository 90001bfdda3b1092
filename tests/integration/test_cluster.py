"""The key revocation scenarios on a real 3-master Redis Cluster (tests/redis_cluster.py):
strict and stream verifiers, revocation by token, grant and agent, proof replay, and a
shard that loses its data (the grant's shard, the stream's shard, every shard).

The service and the verifiers get the ``redis+cluster://`` address; every test also
records, with :class:`~tests.redis_cluster.SlotAudit`, the hash slots each Redis
operation of remit touches, and fails on any multi-key command, transaction or script
that spans slots (a CROSSSLOT error on a cluster, or a silently non-atomic split).
"""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import remit
from remit._redis import connect, is_cluster
from remit._redis_keys import RedisKeys
from remit.agent import AgentKey, proof

from tests.redis_cluster import RedisClusterProcs, SlotAudit

pytestmark = pytest.mark.redis_kinds("cluster")

CAP = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}
ARGS = {"amount": 5}

def _claims(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    return decoded


def _grant(client: remit.Client) -> Any:
    return client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"], capabilities=[CAP],
        purpose="cluster test", ttl=600,
    )


def _code(verifier: remit.Verifier, token: str, **kwargs: Any) -> str:
    try:
        verifier.check(token, action="payments.transfer", args=ARGS, **kwargs)
    except remit.Denied as denied:
        return str(denied.code)
    return "allowed"


def test_service_and_verifier_run_on_the_cluster(
    redis_url: str, client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    assert redis_url.startswith("redis+cluster://")
    verifier = make_verifier(client)
    assert is_cluster(verifier._state._client)  # type: ignore[attr-defined]
    grant = _grant(client)
    assert _code(verifier, client.mint(grant.id)) == "allowed"


def test_revoke_by_jti_and_grant_on_the_cluster(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier], slot_audit: SlotAudit
) -> None:
    verifier = make_verifier(client)
    grants = [_grant(client) for _ in range(4)]  # several grants: several slots, shards
    tokens = {g.id: (client.mint(g.id), client.mint(g.id)) for g in grants}
    for first, second in tokens.values():
        assert _code(verifier, first) == _code(verifier, second) == "allowed"
    revoked_jti, revoked_grant = grants[0], grants[1]
    client.revoke(jti=_claims(tokens[revoked_jti.id][0])["jti"])
    client.revoke(grant_id=revoked_grant.id)
    assert _code(verifier, tokens[revoked_jti.id][0]) == "revoked"
    assert _code(verifier, tokens[revoked_jti.id][1]) == "allowed"
    assert [_code(verifier, t) for t in tokens[revoked_grant.id]] == ["revoked", "revoked"]
    for g in grants[2:]:
        assert [_code(verifier, t) for t in tokens[g.id]] == ["allowed", "allowed"]
    assert {x.id for x in client.list_grants()} >= {g.id for g in grants[2:]}
    assert client.get_grant(revoked_grant.id).revoked
    slot_audit.assert_single_slot()
    assert "remit._revocation.settle" in slot_audit.callers() or slot_audit.uses


def test_proof_replay_is_refused_across_backends_on_the_cluster(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier], slot_audit: SlotAudit
) -> None:
    key = AgentKey.generate()
    grant = _grant(client)
    token = client.mint(grant.id, cnf_jkt=key.thumbprint)
    one, other = make_verifier(client), make_verifier(client)
    pop = proof(key, token, audience="payments", action="payments.transfer", args=ARGS)
    assert _code(one, token, proof=pop) == "allowed"
    assert _code(other, token, proof=pop) == "replayed"  # claimed in the cluster
    fresh = proof(key, token, audience="payments", action="payments.transfer", args=ARGS)
    assert _code(other, token, proof=fresh) == "allowed"
    slot_audit.assert_single_slot()


def test_flushing_the_grants_shard_never_lets_a_revoked_token_back(
    client: remit.Client,
    make_verifier: Callable[..., remit.Verifier],
    redis_cluster: RedisClusterProcs,
    redis_prefix: str,
) -> None:
    """A shard that loses its data (restart without persistence, failover to an empty
    replica) loses the revocations it held; the tokens they covered stay refused."""
    verifier = make_verifier(client)
    keys = RedisKeys(redis_prefix)
    grant = _grant(client)
    revoked, bystander = client.mint(grant.id), client.mint(grant.id)
    client.revoke(jti=_claims(revoked)["jti"])
    assert _code(verifier, revoked) == "revoked"
    shard = redis_cluster.node_for(keys.grant_revoked(grant.id))
    with connect(shard, timeout=5.0) as node:
        node.flushall()
    assert _code(verifier, revoked) in ("revoked", "revocation_unavailable")
    assert _code(verifier, bystander) in ("revoked", "revocation_unavailable")
    # New tokens work again once the service has noticed (it re-creates what it keeps).
    assert _code(verifier, client.mint(_grant(client).id)) == "allowed"


def test_flushing_every_shard_is_detected_by_the_epoch(
    client: remit.Client,
    make_verifier: Callable[..., remit.Verifier],
    redis_cluster: RedisClusterProcs,
    redis_prefix: str,
) -> None:
    verifier = make_verifier(client)
    keys = RedisKeys(redis_prefix)
    grant = _grant(client)
    revoked = client.mint(grant.id)
    client.revoke(grant_id=grant.id)
    assert _code(verifier, revoked) == "revoked"
    shard = redis_cluster.node_for(keys.epoch())
    with connect(shard, timeout=5.0) as node:
        node.flushall()
    assert _code(verifier, revoked) in ("revoked", "revocation_unavailable")


def test_the_slot_audit_flags_cross_slot_operations(
    redis_cluster: RedisClusterProcs, slot_audit: SlotAudit
) -> None:
    """The audit itself: operations issued from a remit module that span slots are
    recorded by kind; one-slot ones are not."""
    namespace: dict[str, Any] = {"__name__": "remit._audit_probe"}
    exec(  # a function whose frame belongs to a "remit" module, as the audit requires
        "def probe(r):\n"
        "    p = r.pipeline(transaction=False); p.get('a{x}'); p.get('b{y}'); p.execute()\n"
        "    p = r.pipeline(transaction=False); p.get('a{x}'); p.get('b{x}'); p.execute()\n"
        "    r.exists('a{x}', 'b{y}')\n"
        "    try:\n"
        "        p = r.pipeline(transaction=True); p.set('a{x}', 1); p.set('b{y}', 1)\n"
        "        p.execute()\n"
        "    except Exception:\n"
        "        pass\n",
        namespace,
    )
    with redis_cluster.client() as client:
        namespace["probe"](client)
        client.delete("a{x}", "b{y}")  # from the test: not recorded
    crossing = {(u.kind, u.caller, u.commands) for u in slot_audit.crossing()}
    assert crossing == {
        ("pipeline", "remit._audit_probe.probe", ("GET", "GET")),
        ("split", "remit._audit_probe.probe", ("EXISTS",)),
        ("pipeline", "remit._audit_probe.probe", ("EXISTS", "EXISTS")),  # how redis-py splits
        ("transaction", "remit._audit_probe.probe", ("SET", "SET")),
    }


# -- stream mode (the default) on the cluster ---------------------------------------------


def _eventually(condition: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Poll until ``condition`` holds (a liveness bound, not a latency assertion)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.01)


@pytest.fixture
def stream_verifier(
    client: remit.Client, redis_url: str, redis_prefix: str
) -> Iterator[remit.Verifier]:
    with remit.Verifier.from_jwks(
        client.jwks(), issuer=client.issuer(), audience="payments",
        revocation="stream", redis=redis_url, prefix=redis_prefix,
    ) as verifier:
        yield verifier


def _grant_for(client: remit.Client, agent: str) -> Any:
    return client.create_grant(
        subject="user:alice", agent=agent, audience=["payments"], capabilities=[CAP],
        purpose="cluster test", ttl=600,
    )


def test_stream_mode_revokes_by_jti_grant_and_agent_on_the_cluster(
    client: remit.Client, stream_verifier: remit.Verifier, slot_audit: SlotAudit
) -> None:
    by_jti, by_grant, by_agent, bystander = (
        _grant_for(client, agent) for agent in ("agent:a", "agent:a", "agent:b", "agent:c")
    )
    tokens = {g.id: (client.mint(g.id), client.mint(g.id)) for g in (by_jti, by_grant, by_agent,
                                                                      bystander)}
    for pair in tokens.values():
        assert [_code(stream_verifier, t) for t in pair] == ["allowed", "allowed"]
    client.revoke(jti=_claims(tokens[by_jti.id][0])["jti"])
    client.revoke(grant_id=by_grant.id)
    client.revoke(agent="agent:b")
    for token in (tokens[by_jti.id][0], *tokens[by_grant.id], *tokens[by_agent.id]):
        _eventually(lambda t=token: _code(stream_verifier, t) == "revoked", "revocation seen")
    assert _code(stream_verifier, tokens[by_jti.id][1]) == "allowed"
    assert [_code(stream_verifier, t) for t in tokens[bystander.id]] == ["allowed", "allowed"]
    slot_audit.assert_single_slot()


def test_stream_mode_survives_a_flushed_grant_shard_and_detects_a_flushed_stream_shard(
    client: remit.Client,
    stream_verifier: remit.Verifier,
    redis_cluster: RedisClusterProcs,
    redis_prefix: str,
) -> None:
    keys = RedisKeys(redis_prefix)
    stream_shard = redis_cluster.node_for(keys.epoch())
    assert redis_cluster.node_for(keys.revocation_stream()) == stream_shard  # one hash tag
    # A grant on another shard than the stream: losing it loses no revocation.
    grant = next(
        g for g in (_grant_for(client, "agent:a") for _ in range(64))
        if redis_cluster.node_for(keys.grant(g.id)) != stream_shard
    )
    revoked, live = client.mint(grant.id), client.mint(grant.id)
    client.revoke(jti=_claims(revoked)["jti"])
    _eventually(lambda: _code(stream_verifier, revoked) == "revoked", "revocation seen")
    with connect(redis_cluster.node_for(keys.grant(grant.id)), timeout=5.0) as node:
        node.flushall()
    assert _code(stream_verifier, revoked) == "revoked"  # held in memory and in the stream
    assert _code(stream_verifier, live) == "allowed"
    # The stream's shard loses its data: the epoch goes with it. Never accepted again.
    with connect(stream_shard, timeout=5.0) as node:
        node.flushall()

    def settled() -> bool:
        assert _code(stream_verifier, revoked) in ("revoked", "revocation_unavailable")
        return _code(stream_verifier, live) == "revoked"  # issued before the new epoch

    _eventually(settled, "the new epoch (the service re-creates it within a second)")
    fresh = client.mint(_grant_for(client, "agent:a").id)
    _eventually(lambda: _code(stream_verifier, fresh) == "allowed", "new tokens work")
    assert _code(stream_verifier, revoked) == "revoked"


def test_a_cluster_that_fails_to_start_leaves_no_process_or_directory() -> None:
    cluster = RedisClusterProcs()
    with socket.socket() as taken:  # one node's port is in use: that node cannot start
        taken.bind(("127.0.0.1", cluster.ports[1]))
        taken.listen()
        with pytest.raises(RuntimeError, match="gave up waiting"):
            cluster.start()
    assert cluster.procs == [] and cluster.directory is None
    for port in (cluster.ports[0], cluster.ports[2]):  # the nodes that did start are gone
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_proof_is_not_replayable_after_its_grants_shard_lost_its_data(
    client: remit.Client, redis_url: str, redis_prefix: str, redis_cluster: RedisClusterProcs
) -> None:
    """Proof claims live in the grant's slot; when that shard (not the stream's) is flushed
    the claim of a used proof is gone, so a stream verifier checks the grant record in the
    claim's round trip and refuses the token (``revoked``, reason epoch)."""
    keys = RedisKeys(redis_prefix)
    stream_shard = redis_cluster.node_for(keys.epoch())
    grant = next(
        g for g in (_grant(client) for _ in range(64))
        if redis_cluster.node_for(keys.grant(g.id)) != stream_shard
    )
    key = AgentKey.generate()
    token = client.mint(grant.id, cnf_jkt=key.thumbprint)
    backends = [
        remit.Verifier.from_jwks(client.jwks(), issuer=client.issuer(), audience="payments",
                                 revocation="stream", redis=redis_url, prefix=redis_prefix)
        for _ in range(2)
    ]
    try:
        pop = proof(key, token, audience="payments", action="payments.transfer", args=ARGS)
        assert _code(backends[0], token, proof=pop) == "allowed"
        with connect(redis_cluster.node_for(keys.grant(grant.id)), timeout=5.0) as node:
            node.flushall()
        assert _code(backends[1], token, proof=pop) != "allowed"
    finally:
        for v in backends:
            v.close()
