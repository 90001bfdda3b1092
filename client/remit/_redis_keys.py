"""Redis key names shared by the service (writers) and verifiers (readers).

Every key that one atomic operation touches carries the grant id as a hash tag
(``{gid}``), so the same commands work on a single Redis and on Redis Cluster:
the strict revocation check is one pipeline over the grant record, the grant's
revocation keys and every token id of the lineage, which all live in the grant's slot.

The revocation stream and the epoch share the hash tag ``{rev}``: one shard holds
both, so a shard that loses its data loses them together and a verifier following
the stream sees the loss as a missing or newer epoch (docs/revocation.md).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_PREFIX", "RedisKeys"]

DEFAULT_PREFIX = "remit:"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str = DEFAULT_PREFIX

    def grant(self, gid: str) -> str:
        """The grant record (JSON)."""
        return f"{self.prefix}grant:{{{gid}}}"

    def grant_revoked(self, gid: str) -> str:
        """Exists while a revoked grant could still have live tokens."""
        return f"{self.prefix}rev:{{{gid}}}:grant"

    def grant_cutoff(self, gid: str) -> str:
        """Integer seconds: the grant's tokens issued before it are revoked ("everything
        issued before T" by subject, agent or all, materialized per grant). Only rises."""
        return f"{self.prefix}rev:{{{gid}}}:before"

    def token_revoked(self, gid: str, jti: str) -> str:
        """Exists while a revoked token (or a descendant) could still be live."""
        return f"{self.prefix}rev:{{{gid}}}:jti:{jti}"

    def token_grant(self, jti: str) -> str:
        """jti -> gid of a minted token, so a token can be revoked by its id alone."""
        return f"{self.prefix}jti:{jti}"

    def epoch(self) -> str:
        """Integer seconds: tokens issued before it are dead. Its absence means Redis lost
        its data (restart without persistence, flush, failover to an empty replica).
        Same hash tag as :meth:`revocation_stream`."""
        return f"{self.prefix}{{rev}}:epoch"

    def revocation_stream(self) -> str:
        """The stream of every revocation (entry format: :mod:`remit._revfeed`)."""
        return f"{self.prefix}{{rev}}:stream"

    def proof_used(self, gid: str, jti: str) -> str:
        """Exists while a proof of possession with this jti could still be presented."""
        return f"{self.prefix}pop:{{{gid}}}:{jti}"

    def app_grants(self, app: str) -> str:
        """Sorted set of an app's grant ids by creation time."""
        return f"{self.prefix}app:{app}:grants"

    def revocation_check(self, gid: str, jti: str, ancestors: tuple[str, ...]) -> list[str]:
        """Keys whose existence means the token is revoked: grant, token, every ancestor."""
        return [
            self.grant_revoked(gid),
            self.token_revoked(gid, jti),
            *(self.token_revoked(gid, a) for a in ancestors),
        ]
