"""A strict verifier works under a narrow Redis role that cannot un-revoke anything.

The role reads the prefix and writes only proof claims (docs/threat-model.md, "Redis
ACLs"). This pins the reason the strict check is plain pipelined commands and not a Lua
script: a script counts as writing every key it names.
"""

from __future__ import annotations

import pytest
import redis
import remit
from remit._redis_keys import RedisKeys
from remit._revfeed import FIELD, RevocationEntry, encode_entry
from remit.agent import AgentKey, proof

from tests.redis_server import PrivateRedis
from tests.tokens import NOW, IssuerKey, claims, sign

ISSUER = "https://issuer.test"
ARGS = {"amount": 50, "to": "DE89"}
VERIFIER_ROLE = [
    "on",
    ">verifier-secret",
    "resetkeys",
    "%R~remit:*",
    "%W~remit:pop:*",
    "resetchannels",
    "-@all",
    "+get",
    "+exists",
    "+set",
    "+ping",
    "+xread",  # stream mode: load and follow the revocation stream, read only
    "+xrange",
    "+xinfo|stream",
]
# What the audit trail adds (docs/threat-model.md): its own stream, its Lua writer.
AUDIT_ROLE = ["~remit:audit", "+evalsha", "+script|load", "+xrevrange", "+xadd"]


@pytest.fixture
def acl_redis(private_redis: PrivateRedis) -> PrivateRedis:
    private_redis.set_epoch()
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.execute_command("ACL", "SETUSER", "verifier", *VERIFIER_ROLE)
    return private_redis


def test_strict_verifier_with_replay_works_under_the_narrow_role(acl_redis: PrivateRedis) -> None:
    issuer, agent = IssuerKey(), AgentKey.generate()
    c = claims(cnf={"jkt": agent.thumbprint})
    token = sign(c, issuer)
    acl_redis.seed_grant(c["gid"])  # strict checks want the grant record
    url = f"redis://verifier:verifier-secret@127.0.0.1:{acl_redis.port}/0"
    with remit.Verifier(
        issuer.jwks(),
        issuer=ISSUER,
        audience="payments",
        revocation="strict",
        redis=url,
        clock=lambda: NOW,
    ) as v:
        pop = proof(
            agent,
            token,
            audience="payments",
            action="payments.transfer",
            args=ARGS,
            clock=lambda: NOW,
        )
        assert v.check(token, action="payments.transfer", args=ARGS, proof=pop).allowed
        with pytest.raises(remit.Denied) as exc:
            v.check(token, action="payments.transfer", args=ARGS, proof=pop)
        assert exc.value.code == "replayed"
        # The service (admin here) revokes the grant; the verifier sees it.
        with redis.Redis.from_url(acl_redis.url) as admin:
            admin.set(f"remit:rev:{{{c['gid']}}}:grant", "revoked")
        fresh = proof(
            agent,
            token,
            audience="payments",
            action="payments.transfer",
            args=ARGS,
            clock=lambda: NOW,
        )
        with pytest.raises(remit.Denied) as exc:
            v.check(token, action="payments.transfer", args=ARGS, proof=fresh)
        assert exc.value.code == "revoked"


@pytest.mark.parametrize(
    "command",
    [
        ("SET", "remit:rev:{g_0123456789}:grant", "x", "PX", "1"),
        ("DEL", "remit:rev:{g_0123456789}:grant"),
        ("SET", "remit:epoch", "0"),
        ("EVAL", "return 1", "0"),
        ("FLUSHALL",),
    ],
)
def test_the_narrow_role_cannot_un_revoke(
    acl_redis: PrivateRedis, command: tuple[str, ...]
) -> None:
    url = f"redis://verifier:verifier-secret@127.0.0.1:{acl_redis.port}/0"
    with (
        redis.Redis.from_url(url) as verifier_conn,
        pytest.raises(redis.exceptions.NoPermissionError),
    ):
        verifier_conn.execute_command(*command)


def test_stream_verifier_works_under_the_narrow_role(acl_redis: PrivateRedis) -> None:
    """The default mode needs only reads: XRANGE, XREAD, XINFO STREAM and GET."""
    issuer = IssuerKey()
    revoked, live = claims(), claims()
    keys = RedisKeys("remit:")
    with redis.Redis.from_url(acl_redis.url) as admin:  # the service's side
        admin.xadd(keys.revocation_stream(),
                   {FIELD: encode_entry(RevocationEntry("j", revoked["jti"], 4_000_000_000))})
    url = f"redis://verifier:verifier-secret@127.0.0.1:{acl_redis.port}/0"
    with remit.Verifier(issuer.jwks(), issuer=ISSUER, audience="payments", redis=url,
                        replay="local", clock=lambda: NOW) as v:
        assert v.wait_revocations_ready(10), v.revocation_status()
        assert v.check(sign(live, issuer), action="payments.transfer", args=ARGS).allowed
        with pytest.raises(remit.Denied) as exc:
            v.check(sign(revoked, issuer), action="payments.transfer", args=ARGS)
        assert exc.value.code == "revoked"


def test_buffered_audit_writes_every_event_under_the_documented_role(
    private_redis: PrivateRedis,
) -> None:
    private_redis.set_epoch()
    with redis.Redis.from_url(private_redis.url) as admin:
        admin.execute_command("ACL", "SETUSER", "verifier", *VERIFIER_ROLE, *AUDIT_ROLE)
    issuer, c = IssuerKey(), claims()
    token = sign(c, issuer)
    private_redis.seed_grant(c["gid"])
    url = f"redis://verifier:verifier-secret@127.0.0.1:{private_redis.port}/0"
    with remit.Verifier(
        issuer.jwks(), issuer=ISSUER, audience="payments", revocation="strict", redis=url,
        clock=lambda: NOW,
    ) as v:
        for _ in range(3):
            v.check(token, action="payments.transfer", args=ARGS)
    stats = v.audit_stats()
    assert (stats.written, stats.dropped, stats.write_errors) == (3, 0, 0)
    with redis.Redis.from_url(url) as conn:  # the scripting it needs un-revokes nothing
        sha = conn.script_load("return redis.call('DEL', KEYS[1])")
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.evalsha(sha, 1, RedisKeys("remit:").grant_revoked(c["gid"]))
