"""``remit.Retry``: how :class:`remit.Client` retries a call the service could not take.

A value object (as in redis-py): immutable, compared by value, safe to share between
clients. It lives apart from the client so that ``import remit`` stays free of grpc.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Retry"]


@dataclass(frozen=True, slots=True)
class Retry:
    """Retry with exponential backoff and jitter.

    ``attempts`` counts every try, the first included (1 = never retry). Before retry
    ``n`` (1 for the first) the client waits a random time between half and all of
    ``min(maximum, initial * multiplier ** (n - 1))`` seconds: the wait grows, and
    clients that failed together do not come back together.

    The client retries only what is safe to repeat (see :class:`remit.Client`): reads,
    ``Mint`` and ``Revoke``, never ``CreateGrant``; on ``UNAVAILABLE``,
    ``DEADLINE_EXCEEDED`` and ``CANCELLED`` (which this client never causes itself).
    A server may shape this with gRPC's ``grpc-retry-pushback-ms`` trailer: negative
    means do not retry, otherwise wait that long (at most ``maximum``).
    Each attempt has the client's full ``timeout``, so a call may take up to
    ``attempts * timeout`` plus the waits: a service whose Redis hangs answers each
    attempt only after its own Redis timeout.
    """

    attempts: int = 4
    initial: float = 0.05
    maximum: float = 1.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError("attempts must be an int")
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1 (1: no retry)")
        if not 0 <= self.initial <= self.maximum:
            raise ValueError("need 0 <= initial <= maximum")
        if not self.multiplier >= 1:
            raise ValueError("multiplier must be at least 1")

    def backoff(self, retry: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 = the first retry)."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        # min() before the power would overflow: cap the exponent first.
        cap = self.initial
        for _ in range(retry - 1):
            if cap >= self.maximum:
                break
            cap *= self.multiplier
        cap = min(cap, self.maximum)
        return cap / 2 + rand() * cap / 2
