"""Budgets: stateful limits on a capability (``uses``, ``sum``), consumed atomically in Redis.

Forms. At grant creation a capability may carry one budget as an object
``{"uses": 3, "sum": {"arg": "amount", "max": "120.00"}}``. In tokens a capability's
``limits`` is a *list* of budgets ``{"id", "exp", "uses"?, "sum"?}``: ``id`` names the
counter (``g<i>`` for the grant's capability ``i``; ``<jti>.<n>`` for one an Exchange
child added), ``exp`` is the grant's expiry (the counter's lifetime: budgets belong to
the grant and outlive every token, so the token's own ``exp`` would be too short).

Money is never a float. A ``sum`` bound is an int or a decimal string (``"120.00"``);
its scale (digits after the point) fixes the minor unit. A counted argument must be an
int or a decimal string with at most that scale (``"12.5"`` under ``"120.00"`` is 1250
minor units); floats, bools, exponents, signs and anything else are ``argument_denied``.
Every bound and running total stays below 2**53, so the Lua side (doubles) is exact.

Consumption: every budget of the capability that allowed the call must admit it, and
all are charged together by one Lua script in one round trip (``EVALSHA``; redis-py's
``Script`` loads it once and reloads on ``NOSCRIPT``, which means it did not run). All
keys of one call carry the grant id as hash tag (``{gid}``): one slot, Redis Cluster
safe. Retry ambiguity: the client retries once on a dropped connection or a timeout,
and a script may have run before the reply was lost, so each call writes a one-minute
marker key; a re-sent script sees it and charges nothing again. When no reply ever
arrives the call is denied ``limit_unavailable`` and its charge may stand: a timeout
can only under-spend a user's budget, never over-spend it.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._errors import Code, Denied
from ._redis import REDIS_ERRORS, RedisLike

__all__ = [
    "MAX_BUDGETS",
    "MAX_SCALE",
    "MAX_TIME",
    "MAX_UNITS",
    "Budget",
    "Charge",
    "Limits",
    "LimitsError",
    "SumBound",
    "budget_from_request",
    "budget_key",
    "limits_narrower",
    "parse_budgets",
    "parse_decimal",
]

MAX_UNITS = 2**53 - 1  # every bound and total in minor units: exact in a double (Lua)
MAX_BUDGETS = 16  # per capability: the grant's, plus a few per Exchange generation
MAX_SCALE = 15  # digits after the decimal point (2**53 has 16 digits)
MAX_TIME = 2**53 - 1
MARKER_TTL_MS = 60_000  # a retried script within this window charges nothing again
KEY_MARGIN = 3600  # counters outlive the grant by this (clock skew between hosts)
MAX_KEY_TTL = 10 * 366 * 86400  # seconds; a PEXPIRE far beyond this overflows in Redis

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}(?:\.[0-9]{1,3})?\Z")  # g0, t_xxx.0: no ':' in keys
_ARG = re.compile(r"[^\x00-\x1f\x7f]{1,128}\Z")
# ASCII digits only ([0-9], not \d), no sign, no exponent, no leading zeros, no bare point.
_DECIMAL = re.compile(r"(0|[1-9][0-9]{0,15})(?:\.([0-9]{1,15}))?\Z")


class LimitsError(ValueError):
    """A budget is malformed; ``path`` names the node (``capabilities[0].limits.sum.max``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def parse_decimal(value: object, path: str) -> tuple[int, int]:
    """A ``sum`` bound (int or decimal string) as ``(minor units, scale)``."""
    if type(value) is int:
        units, scale = value, 0
    elif type(value) is str:
        m = _DECIMAL.match(value)
        if m is None:
            raise LimitsError(path, "must be an integer or a decimal string like \"120.00\"")
        frac = m.group(2) or ""
        units, scale = int(m.group(1) + frac), len(frac)
    else:
        raise LimitsError(path, "must be an integer or a decimal string (never a float)")
    if not 0 < units <= MAX_UNITS:
        raise LimitsError(path, f"must be positive and below 2**53 minor units ({MAX_UNITS})")
    return units, scale


@dataclass(frozen=True, slots=True)
class SumBound:
    """A cumulative bound on one argument, in minor units of ``10**-scale``."""

    arg: str
    max: int | str  # as written, for to_json
    units: int
    scale: int

    def to_json(self) -> dict[str, Any]:
        return {"arg": self.arg, "max": self.max}


@dataclass(frozen=True, slots=True)
class Budget:
    """One counter of a grant: at most ``uses`` calls, at most ``sum`` in total."""

    id: str
    exp: int
    uses: int | None = None
    sum: SumBound | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "exp": self.exp}
        if self.uses is not None:
            out["uses"] = self.uses
        if self.sum is not None:
            out["sum"] = self.sum.to_json()
        return out

    def same_bounds(self, other: Budget) -> bool:
        return (
            self.id == other.id
            and self.exp == other.exp
            and self.uses == other.uses
            and (self.sum is None) == (other.sum is None)
            and (
                self.sum is None
                or (
                    other.sum is not None
                    and self.sum.arg == other.sum.arg
                    and self.sum.units == other.sum.units
                    and self.sum.scale == other.sum.scale
                )
            )
        )


def _bounds(obj: Mapping[str, Any], path: str) -> tuple[int | None, SumBound | None]:
    uses = obj.get("uses")
    if uses is not None and (type(uses) is not int or not 1 <= uses <= MAX_UNITS):
        raise LimitsError(f"{path}.uses", "must be an integer >= 1 (below 2**53)")
    raw_sum = obj.get("sum")
    bound = None
    if raw_sum is not None:
        spath = f"{path}.sum"
        if type(raw_sum) is not dict or set(raw_sum) != {"arg", "max"}:
            raise LimitsError(spath, 'must be {"arg": <argument name>, "max": <bound>}')
        arg = raw_sum["arg"]
        if type(arg) is not str or not _ARG.match(arg) or arg == "*":
            raise LimitsError(f"{spath}.arg", "must name one argument (1-128 printable chars)")
        units, scale = parse_decimal(raw_sum["max"], f"{spath}.max")
        if scale > MAX_SCALE:
            raise LimitsError(f"{spath}.max", f"at most {MAX_SCALE} digits after the point")
        bound = SumBound(arg=arg, max=raw_sum["max"], units=units, scale=scale)
    if uses is None and bound is None:
        raise LimitsError(path, 'a budget needs "uses", "sum" or both')
    return uses, bound


def budget_from_request(raw: object, *, budget_id: str, exp: int, path: str) -> Budget:
    """The request form (CreateGrant, Exchange) ``{"uses"?, "sum"?}`` as a budget."""
    if type(raw) is not dict:
        raise LimitsError(path, 'must be an object {"uses"?: int, "sum"?: {"arg", "max"}}')
    unknown = set(raw) - {"uses", "sum"}
    if unknown:
        raise LimitsError(path, f"unknown members {sorted(unknown, key=repr)}")
    if not _ID.match(budget_id) or type(exp) is not int or not 0 < exp <= MAX_TIME:
        raise ValueError("budget id or expiry out of range")  # a caller bug, not input
    uses, bound = _bounds(raw, path)
    return Budget(id=budget_id, exp=exp, uses=uses, sum=bound)


def parse_budgets(raw: object, path: str) -> tuple[Budget, ...]:
    """A token capability's ``limits``: a non-empty list of budgets with distinct ids."""
    if type(raw) is not list or not raw:
        raise LimitsError(path, "must be a non-empty list of budgets")
    if len(raw) > MAX_BUDGETS:
        raise LimitsError(path, f"more than {MAX_BUDGETS} budgets")
    out: list[Budget] = []
    for i, item in enumerate(raw):
        ipath = f"{path}[{i}]"
        if type(item) is not dict:
            raise LimitsError(ipath, "a budget is an object")
        unknown = set(item) - {"id", "exp", "uses", "sum"}
        if unknown:
            raise LimitsError(ipath, f"unknown members {sorted(unknown, key=repr)}")
        bid, exp = item.get("id"), item.get("exp")
        if type(bid) is not str or not _ID.match(bid):
            raise LimitsError(f"{ipath}.id", "must be a budget id (g<i> or <jti>.<n>)")
        if type(exp) is not int or not 0 < exp <= MAX_TIME:
            raise LimitsError(f"{ipath}.exp", "must be an integer NumericDate")
        if any(b.id == bid for b in out):
            raise LimitsError(f"{ipath}.id", f"duplicate budget id {bid!r}")
        uses, bound = _bounds(item, ipath)
        out.append(Budget(id=bid, exp=exp, uses=uses, sum=bound))
    return tuple(out)


def limits_narrower(child: Sequence[Budget], parent: Sequence[Budget]) -> bool:
    """A child keeps every budget of its parent (same id, same bounds); it may add more.

    Extra child budgets only ever deny more, so they need no further rule.
    """
    return all(any(c.same_bounds(p) for c in child) for p in parent)


def budget_key(prefix: str, gid: str, budget_id: str) -> str:
    """The counter hash (fields ``u``: calls, ``s``: minor units) of one budget."""
    return f"{prefix}lim:{{{gid}}}:{budget_id}"


# --- consumption ------------------------------------------------------------------

# KEYS[1]: this call's marker; KEYS[2..]: budget hashes.
# ARGV[1]: marker ttl (ms); then per budget: max uses, max units, amount, ttl (ms); -1 = none.
# The marker is '1' once this call was charged, '0' when it was refused (decided afresh
# if re-sent). Commands used: SET GET HINCRBY PEXPIRE, so the verifier's Redis role needs
# no DEL (docs/limits.md, "Redis role").
# Returns 0 when charged (or charged before: the marker is '1'), else {budget, 1 | 2}
# (1: uses spent, 2: sum would be exceeded). Charges first and rolls the charges back when
# a budget says no (3 commands per call instead of 5 on the common, allowed path); inside
# one script nobody sees the intermediate state. HINCRBY replies are exact integers; a
# total above 2**53 may round in Lua, but is then above every bound anyway. Amounts go
# back to Redis as the caller's digit strings, never as Lua numbers (which print as
# 1.2e+14). A counter gets its lifetime when this call created it (first charge).
LUA = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  if redis.call('GET', KEYS[1]) == '1' then return 0 end
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
for i = 1, #KEYS - 1 do
  local a, k = 2 + (i - 1) * 4, KEYS[i + 1]
  local umax, smax, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local fail, fresh, charged = 0, false, false
  if umax >= 0 then
    local u = redis.call('HINCRBY', k, 'u', 1)
    if u > umax then fail = 1 end
    fresh = u == 1
  end
  if fail == 0 and smax >= 0 then
    local spent = redis.call('HINCRBY', k, 's', ARGV[a + 2])
    charged = true
    if spent > smax then fail = 2 end
    fresh = fresh or spent == amount
  end
  if fresh then redis.call('PEXPIRE', k, ARGV[a + 3]) end
  if fail ~= 0 then
    for j = 1, i do
      local b = 2 + (j - 1) * 4
      if tonumber(ARGV[b]) >= 0 then redis.call('HINCRBY', KEYS[j + 1], 'u', -1) end
      if tonumber(ARGV[b + 1]) >= 0 and tonumber(ARGV[b + 2]) > 0 and (j < i or charged) then
        redis.call('HINCRBY', KEYS[j + 1], 's', '-' .. ARGV[b + 2])
      end
    end
    redis.call('SET', KEYS[1], '0', 'PX', ARGV[1])
    return {i, fail}
  end
end
return 0
"""

_MISSING = object()
_TEN: tuple[int, ...] = tuple(10**i for i in range(MAX_SCALE + 1))


class Charge(NamedTuple):
    """A call's prepared charge: its budgets and the script arguments for them."""

    budgets: tuple[Budget, ...]
    argv: tuple[int, ...]  # per budget: max uses, max units, amount, ttl (ms); -1 = none


def _not_amount(bound: SumBound, why: str) -> Denied:
    return Denied(Code.ARGUMENT_DENIED, f"argument {bound.arg[:80]!r}: {why}")


def _amount(bound: SumBound, args: Mapping[str, Any]) -> int:
    """The value of the counted argument in minor units (above the bound: bound + 1)."""
    value = args.get(bound.arg, _MISSING)
    kind = type(value)
    if kind is str:
        m = _DECIMAL.match(value)
        if m is None:
            raise _not_amount(
                bound, "not a plain decimal (digits, optional point; no sign, exponent or "
                "leading zeros)"
            )
        whole, frac = m.groups()
        if frac is None:
            return int(whole) * _TEN[bound.scale]
        if len(frac) > bound.scale:
            raise _not_amount(bound, f"more than {bound.scale} digits after the point")
        return int(whole + frac.ljust(bound.scale, "0"))
    if kind is int:
        if value < 0:
            raise _not_amount(bound, "negative amount")
        if value > bound.units:  # exact, and before scaling a huge int
            return bound.units + 1
        return value * _TEN[bound.scale]  # type: ignore[no-any-return]
    if value is _MISSING:
        raise _not_amount(bound, "counted by a budget but missing")
    raise _not_amount(
        bound, f"an amount must be an integer or a decimal string, not {kind.__name__}"
    )


def _exceeded(budget: Budget, why: str) -> Denied:
    return Denied(Code.LIMIT_EXCEEDED, f"budget {budget.id}: {why}")


class Limits:
    """Enforce budgets against Redis for one verifier (thread safe: redis-py pools)."""

    def __init__(self, client: RedisLike, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._script = client.register_script(LUA)
        # Call markers: a random per-instance part and a counter (unique, and cheaper
        # than fresh randomness per call; itertools.count is atomic under the GIL).
        self._nonce = secrets.token_urlsafe(9)
        self._seq = itertools.count()

    @staticmethod
    def prepare(budgets: tuple[Budget, ...], args: Mapping[str, Any], now: float) -> Charge:
        """Check the call's amounts locally (no I/O): ``argument_denied`` for a value
        that is not an amount, ``limit_exceeded`` for one above a whole budget."""
        argv: list[int] = []
        base = KEY_MARGIN - int(now)
        for b in budgets:
            bound = b.sum
            if bound is None:
                amount, smax = 0, -1
            else:
                amount, smax = _amount(bound, args), bound.units
                if amount > smax:
                    raise _exceeded(b, f"amount is above the whole budget of {bound.max}")
            uses = b.uses
            ttl = min(max(1, b.exp + base), MAX_KEY_TTL) * 1000
            argv += (-1 if uses is None else uses, smax, amount, ttl)
        return Charge(budgets, tuple(argv))

    def consume(self, gid: str, charge: Charge) -> None:
        """Charge every budget or none; raises ``limit_exceeded`` / ``limit_unavailable``."""
        tag = f"{self._prefix}lim:{{{gid}}}:"  # == budget_key(prefix, gid, "")
        keys = [f"{tag}call:{self._nonce}.{next(self._seq)}"]
        keys += [tag + b.id for b in charge.budgets]
        try:
            result = self._script(keys=keys, args=(MARKER_TTL_MS, *charge.argv))
        except REDIS_ERRORS as exc:  # RedisClusterException is no RedisError
            raise Denied(
                Code.LIMIT_UNAVAILABLE,
                f"budgets unknown (Redis: {type(exc).__name__}); failing closed",
            ) from None
        if result == 0:
            return
        index, kind = int(result[0]), int(result[1])
        budget = charge.budgets[index - 1]
        if kind == 1:
            raise _exceeded(budget, f"all {budget.uses} uses are spent")
        assert budget.sum is not None
        raise _exceeded(budget, f"the amount would exceed the total of {budget.sum.max}")
