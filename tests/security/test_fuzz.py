"""Bounded fuzzing of remit's untrusted-input surface (issue 7, item 2).

Four targets, each checked against an independent *reference* written here from the
documents, not from the code: DESIGN.md and ``remit/_token.py``'s docstring for the token
format, the proof claims in ``remit/_proof.py``'s docstring, and the constraint semantics
in ``tests/vectors/README.md`` (the table the ``_constraints`` docstring summarises).

- token parser: arbitrary text, character-level mutations of a signed token, and header or
  claims JSON rewritten (every JSON type, duplicate keys, huge numbers, deep nesting, bad
  encodings) and *re-signed with the right key*. ``Verifier.check`` raises only
  :class:`remit.Denied` with a :class:`remit.Code`, allows a character-mutated token never,
  and allows a re-signed token exactly when the reference finds header and claims of the
  valid shape and the call inside the scope.
- proof parser: the same for proofs of possession over a key-bound token.
- constraint evaluator: random capabilities and call arguments of any Python type (nested,
  deep, cyclic, NaN, huge ints, bytes, tuples, sets, subclasses, objects): ``_check_args``
  returns a decision (never raises) and agrees with the reference, reason code included;
  capability validation agrees with the reference validator.
- narrowing: ``is_narrower`` returns a bool for valid capabilities and raises only
  ``ConstraintError`` for anything else; sampled soundness (child narrower and child allows
  implies parent allows).

Budget: the ``ci`` profile (default) keeps this file to about 20 s. ``REMIT_FUZZ_PROFILE=long``
runs 50x the examples. Coverage-guided campaigns: ``scripts/fuzz_atheris`` drives the same
reference and invariants (the ``ref_*`` and ``expect_*`` functions below) from libFuzzer.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import json
import math
import os
import random
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

import remit
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey
from remit import Code, ConstraintError, Denied, is_narrower
from remit._constraints import compile_capability, parse_capability
from remit._verifier import _check_args

from tests.tokens import (
    ACTION,
    ARGS,
    AUDIENCE,
    ISSUER,
    NOW,
    IssuerKey,
    b64url,
    claims,
    compact_json,
    default_header,
    sign,
    sign_raw,
)
from tests.unit.test_narrowing_properties import _glob_instances
from tests.unit.test_narrowing_properties import capability as small_capability
from tests.unit.test_narrowing_properties import child_of as small_child_of

# --- budget --------------------------------------------------------------------------

_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("ci", max_examples=100, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("long", max_examples=5000, **_COMMON)  # type: ignore[arg-type]
PROFILE = os.environ.get("REMIT_FUZZ_PROFILE", "ci")
_BASE = settings.get_profile(PROFILE)


def fuzz(weight: float = 1.0) -> settings:
    """This file's profile (REMIT_FUZZ_PROFILE), with ``weight`` x its example count."""
    return settings(_BASE, max_examples=max(10, int(_BASE.max_examples * weight)))


# --- fixed material ------------------------------------------------------------------

KEY = IssuerKey.from_seed(b"remit fuzz issuer key, fixed...!")
AGENT = remit.agent.AgentKey(SigningKey(b"remit fuzz agent key, fixed....!"))
AGENT_X = AGENT.public_jwk["x"]
LEEWAY = 5
MAX_TTL = 24 * 3600
PROOF_WINDOW = 30
JTI = "fuzz-jti-0000001"
GID = "fuzz-gid-0000001"


def make_verifier() -> remit.Verifier:
    return remit.Verifier(
        KEY.jwks(),
        issuer=ISSUER,
        audience=AUDIENCE,
        revocation="off",
        replay="local",
        clock=lambda: NOW,
    )


# One verifier for the whole run, so that its memos (header segments, scopes by value,
# compiled scopes, verified tokens) are shared across examples as in production.
SHARED = make_verifier()


# --- the reference ---------------------------------------------------------------------
# Written from the documents. Deliberately plain: recursion, no memos beyond what keeps it
# linear, no code shared with remit.

MAX_TIME = 2**53 - 1
B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
ACTION_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
OPERATORS = ("eq", "in", "not_in", "lt", "le", "gt", "ge", "max_len", "prefix", "glob", "any")
BOUNDS = ("lt", "le", "gt", "ge")
FAIL: Any = type("FAIL", (), {"__repr__": lambda self: "FAIL"})()
REF_MAX_DEPTH = 200  # deeper values: remit must still decide; the reference abstains
REF_MAX_GLOB_WORK = 400_000


def ref_b64url_decode(segment: str) -> bytes | None:
    """Unpadded, canonical base64url (the encoding of the result must give ``segment``)."""
    if not all(c in B64URL for c in segment) or len(segment) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if b64url(raw) == segment else None


class _Reject(Exception):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) != len(pairs):
        raise _Reject("duplicate key")
    return dict(pairs)


def _constant(name: str) -> Any:
    raise _Reject(name)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(text)
    return value


def ref_json(data: bytes) -> Any:
    """RFC 8259 UTF-8 JSON, no duplicate keys, finite numbers, Unicode text only; else FAIL."""
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_pairs, parse_constant=_constant,
            parse_float=_float,
        )
    except (ValueError, RecursionError, _Reject):
        return FAIL
    stack = [value]
    while stack:  # no surrogate code point anywhere (what a lone "\ud800" escape decodes to)
        v = stack.pop()
        if type(v) is str:
            if any("\ud800" <= c <= "\udfff" for c in v):
                return FAIL
        elif type(v) is list:
            stack.extend(v)
        elif type(v) is dict:
            stack.extend(v)
            stack.extend(v.values())
    return value


def ref_depth(v: Any) -> float:
    """Containers nested on the deepest path (inf for a cycle); linear on shared sub-trees."""
    memo: dict[int, float] = {}
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(v, False)]
    while stack:
        x, leaving = stack.pop()
        if type(x) not in (list, dict):
            continue
        children = list(x.values()) if type(x) is dict else x
        if leaving:
            on_path.discard(id(x))
            memo[id(x)] = 1 + max(
                (memo.get(id(c), 0) for c in children if type(c) in (list, dict)), default=0
            )
            continue
        if id(x) in memo:
            continue
        if id(x) in on_path:
            return math.inf
        on_path.add(id(x))
        stack.append((x, True))
        for c in children:
            if type(c) in (list, dict):
                if id(c) in on_path:
                    return math.inf
                stack.append((c, False))
    return memo.get(id(v), 0)


def ref_number(v: Any) -> bool:
    return type(v) is int or (type(v) is float and math.isfinite(v))


def ref_is_json(v: Any, _ok: set[int] | None = None) -> bool:
    """A JSON value at every depth: exact types, finite numbers, string keys. Call only on
    values of finite, moderate :func:`ref_depth` (no cycles)."""
    ok = set() if _ok is None else _ok  # containers already found good (shared sub-trees)
    if type(v) in (str, bool, int) or v is None:
        return True
    if type(v) is float:
        return math.isfinite(v)
    if type(v) not in (list, dict):
        return False
    if id(v) in ok:
        return True
    if type(v) is list:
        good = all(ref_is_json(x, ok) for x in v)
    else:
        good = all(type(k) is str and ref_is_json(x, ok) for k, x in v.items())
    if good:
        ok.add(id(v))
    return good


def ref_equal(a: Any, b: Any) -> bool:
    """JSON equality of two JSON values: numbers by value, no conversion between types."""
    if ref_number(a) or ref_number(b):
        return ref_number(a) and ref_number(b) and a == b
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(ref_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(ref_equal(a[k], b[k]) for k in a)
    return bool(a == b)


STAR_TOKEN, ONE_TOKEN = object(), object()


def ref_glob_tokens(pattern: str) -> list[Any] | None:
    out: list[Any] = []
    chars = iter(pattern)
    for c in chars:
        if c == "\\":
            nxt = next(chars, None)
            if nxt is None:
                return None  # trailing lone backslash
            out.append(nxt)
        else:
            out.append(STAR_TOKEN if c == "*" else ONE_TOKEN if c == "?" else c)
    return out


def ref_glob(pattern: str, value: str) -> bool:
    """Full match; ``*`` any run, ``?`` one code point, ``\\`` escapes. Dynamic programming."""
    tokens = ref_glob_tokens(pattern)
    assert tokens is not None
    row = [True] + [False] * len(value)  # row[j]: tokens so far match value[:j]
    for t in tokens:
        if t is STAR_TOKEN:
            new, seen = [], False
            for j in range(len(value) + 1):
                seen = seen or row[j]
                new.append(seen)
        else:
            new = [False] + [
                row[j - 1] and (t is ONE_TOKEN or value[j - 1] == t)
                for j in range(1, len(value) + 1)
            ]
        row = new
    return row[len(value)]


def ref_json_within(v: Any, depth: int) -> bool:
    """A JSON value with at most ``depth`` nested containers (operands: 16)."""
    if type(v) in (list, dict):
        if depth <= 0:
            return False
        if type(v) is list:
            return all(ref_json_within(x, depth - 1) for x in v)
        return all(type(k) is str and ref_json_within(x, depth - 1) for k, x in v.items())
    return ref_is_json(v)


def ref_action(name: Any, *, wildcard: bool) -> bool:
    if type(name) is not str or len(name) > 128 or not name.isascii():
        return False
    parts = name.split(".")
    if wildcard and len(parts) > 1 and parts[-1] == "*":
        parts = parts[:-1]
    return all(p and all(c in ACTION_CHARS for c in p) for p in parts)


def ref_action_matches(pattern: str, action: str) -> bool:
    if pattern.endswith(".*"):
        return action.startswith(pattern[:-1])
    return pattern == action


def ref_constraint_ok(c: Any, *, star: bool) -> bool:
    if type(c) is not dict or not c:
        return False
    for op, x in c.items():
        if op == "optional":
            if star or x is not True:
                return False
        elif op == "any":
            if x is not True:
                return False
        elif op in BOUNDS:
            if not ref_number(x):
                return False
        elif op == "max_len":
            if type(x) is not int or x < 0:
                return False
        elif op in ("prefix", "glob"):
            if type(x) is not str or len(x) > 4096:
                return False
            if op == "glob" and ref_glob_tokens(x) is None:
                return False
        elif op in ("in", "not_in"):
            if type(x) is not list or len(x) > 1024 or (op == "in" and not x):
                return False
            if not all(ref_json_within(e, 16) for e in x):
                return False
        elif op == "eq":
            if not ref_json_within(x, 16):
                return False
        else:
            return False
    ops = set(c) - {"optional"}
    if not ops or ("any" in ops and len(ops) > 1):
        return False
    return ref_satisfiable(c, ops)


REF_KINDS = {
    **{op: {float} for op in BOUNDS},
    "max_len": {str, list},
    "prefix": {str},
    "glob": {str},
}


def ref_satisfiable(c: Mapping[str, Any], ops: set[str]) -> bool:
    """docs/scope-language.md, "Contradictions": sibling operators that can never all
    hold make the constraint invalid (value types, numeric bounds, eq/in vs the rest)."""
    kinds: set[type] = {str, float, bool, type(None), list, dict}
    for op in ops:
        kinds &= REF_KINDS.get(op, kinds)
    if not kinds:
        return False
    lows = [(c[op], op == "gt") for op in ("gt", "ge") if op in c]
    highs = [(c[op], op == "lt") for op in ("lt", "le") if op in c]
    for low, strict_low in lows:
        for high, strict_high in highs:
            if low > high or (low == high and (strict_low or strict_high)):
                return False
    if "eq" in ops or "in" in ops:
        key = "eq" if "eq" in ops else "in"
        candidates = [c["eq"]] if key == "eq" else c["in"]
        return any(all(ref_op(op, c[op], v) for op in ops if op != key) for v in candidates)
    return True


def ref_capability_ok(obj: Any, *, token_form: bool = False) -> bool:
    """Grant-time validation (tests/vectors/README.md, invalid_capabilities.json)."""
    if type(obj) is not dict:
        return False
    allowed = {"action", "args"} | ({"type", "limits"} if token_form else set())
    if not all(k in allowed for k in obj):
        return False
    if token_form and not (type(obj.get("type")) is str and obj["type"] == "remit.capability"):
        return False
    if "limits" in obj or not ref_action(obj.get("action"), wildcard=True):
        return False
    args = obj.get("args", {})
    if type(args) is not dict or len(args) > 64:
        return False
    return all(
        type(name) is str and 0 < len(name) <= 128 and ref_constraint_ok(c, star=name == "*")
        for name, c in args.items()
    )


def ref_op(op: str, x: Any, v: Any) -> bool:
    """One operator on a JSON value ``v``."""
    if op == "eq":
        return ref_equal(v, x)
    if op == "in":
        return any(ref_equal(v, e) for e in x)
    if op == "not_in":
        return not any(ref_equal(v, e) for e in x)
    if op in BOUNDS:
        if not ref_number(v):
            return False
        return {"lt": v < x, "le": v <= x, "gt": v > x, "ge": v >= x}[op]
    if op == "max_len":
        return type(v) in (str, list) and len(v) <= x
    if op == "prefix":
        return type(v) is str and v.startswith(x)
    if op == "glob":
        return type(v) is str and ref_glob(x, v)
    raise AssertionError(op)


class Abstain(Exception):
    """The reference does not judge this input (too deep, or too costly to compute)."""


def ref_allows(c: Mapping[str, Any], v: Any) -> bool:
    """Every operator holds; a value that is not JSON at some depth satisfies only ``any``."""
    if "any" in c:
        return True
    depth = ref_depth(v)
    if depth == math.inf:
        return False  # a cycle is not JSON
    if depth > REF_MAX_DEPTH:
        raise Abstain("deep value")
    if not ref_is_json(v):
        return False
    if "glob" in c and type(v) is str and len(c["glob"]) * (len(v) + 1) > REF_MAX_GLOB_WORK:
        raise Abstain("glob work")
    return all(ref_op(op, x, v) for op, x in c.items() if op != "optional")


def ref_check_args(cap_args: Mapping[str, Any], args: Mapping[Any, Any]) -> str | None:
    """The decision for one capability, in the documented order: each call argument
    (its name must be a string), then the required ones. None allows; else the code."""
    for name, value in args.items():
        if type(name) is not str:
            return "invalid_request"
        c = cap_args.get(name) if name != "*" else None
        if c is None:
            c = cap_args.get("*")
            if c is None:
                return "unexpected_argument"
        if not ref_allows(c, value):
            return "argument_denied"
    for name, c in cap_args.items():
        if name != "*" and not c.get("optional") and name not in args:
            return "argument_denied"
    return None


def ref_scope_allows(caps: list[dict[str, Any]], action: Any, args: Any) -> bool:
    if not ref_action(action, wildcard=False):
        return False
    candidates = [c for c in caps if ref_action_matches(c["action"], action)]
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        return False
    try:
        args = dict(args)
    except Exception:  # a Mapping that cannot be read is not a JSON object
        return False
    return any(ref_check_args(c.get("args", {}), args) is None for c in candidates)


def _ref_text(v: Any, limit: int = 256) -> bool:
    return type(v) is str and 0 < len(v) <= limit


def _ref_id(v: Any, lo: int = 8, hi: int = 64) -> bool:
    return type(v) is str and lo <= len(v) <= hi and all(c in B64URL for c in v)


def _ref_time(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_TIME


def ref_claims(c: Any, *, now: float = NOW) -> dict[str, Any] | None:
    """The claims of a token this verifier accepts (shape, issuer, audience, lifetime,
    time window), or None."""
    required = {"iss", "sub", "aud", "act", "iat", "nbf", "exp", "jti", "gid", "anc",
                "authorization_details", "purpose"}
    if type(c) is not dict or not required <= c.keys() <= required | {"cnf"}:
        return None
    aud = [c["aud"]] if type(c["aud"]) is str else c["aud"]
    act, anc, scope = c["act"], c["anc"], c["authorization_details"]
    ok = (
        _ref_text(c["iss"]) and c["iss"] == ISSUER
        and _ref_text(c["sub"])
        and type(aud) is list and 0 < len(aud) <= 32 and all(_ref_text(a) for a in aud)
        and AUDIENCE in aud
        and type(act) is dict and list(act) == ["sub"] and _ref_text(act["sub"])
        and all(_ref_time(c[t]) for t in ("iat", "nbf", "exp"))
        and _ref_id(c["jti"]) and _ref_id(c["gid"])
        and type(anc) is list and len(anc) <= 8 and all(_ref_id(a) for a in anc)
        and type(c["purpose"]) is str and len(c["purpose"]) <= 1024
        and type(scope) is list and 0 < len(scope) <= 64
        and all(ref_capability_ok(cap, token_form=True) for cap in scope)
    )
    if "cnf" in c:
        cnf = c["cnf"]
        ok = ok and type(cnf) is dict and list(cnf) == ["jkt"] and _ref_id(cnf["jkt"], 43, 43)
    if not ok:
        return None
    iat, nbf, exp = c["iat"], c["nbf"], c["exp"]
    if not (iat <= nbf < exp and exp - iat <= MAX_TTL and iat <= now + LEEWAY):
        return None
    if not (now < exp + LEEWAY and nbf <= now + LEEWAY):
        return None
    return c  # type: ignore[no-any-return]


def ref_token(token: str) -> dict[str, Any] | None:
    """Split, decode and check header, signature and claims of a token; the claims or None."""
    if len(token) > 16 * 1024 or not token.isascii():
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    raw = [ref_b64url_decode(p) for p in parts]
    if None in raw:
        return None
    header, payload, signature = raw
    assert header is not None and payload is not None and signature is not None
    if ref_json(header) != {"alg": "EdDSA", "typ": "remit+jwt", "kid": KEY.kid}:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(KEY.raw_public).verify(
            signature, f"{parts[0]}.{parts[1]}".encode("ascii")
        )
    except InvalidSignature:
        return None
    return ref_claims(ref_json(payload))


def ref_token_allows(token: str, action: Any, args: Any) -> bool:
    """What an unbound-call verifier must answer (no proof: a bound token is denied)."""
    c = ref_token(token)
    if c is None or "cnf" in c:
        return False
    return ref_scope_allows(c["authorization_details"], action, args)


def sha256_b64(data: bytes) -> str:
    return b64url(hashlib.sha256(data).digest())


def ref_proof_ok(
    proof: Any, token: str, action: str, args: Mapping[str, Any], used: set[str],
    *, jkt_x: str = AGENT_X, now: float = NOW,
) -> str | None:
    """The proof's jti if it proves this call with ``token`` by the key ``jkt_x``; else None."""
    if type(proof) is not str or len(proof) > 4096 or not proof.isascii():
        return None
    parts = proof.split(".")
    if len(parts) != 3:
        return None
    raw = [ref_b64url_decode(p) for p in parts]
    if None in raw:
        return None
    header, payload, signature = raw
    assert header is not None and payload is not None and signature is not None
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": jkt_x}
    if ref_json(header) != {"alg": "EdDSA", "typ": "remit-pop+jwt", "jwk": jwk}:
        return None
    try:
        Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jkt_x + "=")).verify(
            signature, f"{parts[0]}.{parts[1]}".encode("ascii")
        )
    except InvalidSignature:
        return None
    c = ref_json(payload)
    if type(c) is not dict or c.keys() != {"jti", "iat", "ath", "aud", "action", "argh"}:
        return None
    try:
        argh = sha256_b64(rfc8785.dumps(dict(args)))
    except Exception:
        return None
    ok = (
        _ref_id(c["jti"], 16, 64) and c["jti"] not in used
        and type(c["iat"]) is int and now - PROOF_WINDOW - LEEWAY <= c["iat"] <= now + LEEWAY
        and c["ath"] == sha256_b64(token.encode("ascii"))
        and c["aud"] == AUDIENCE and c["action"] == action and c["argh"] == argh
    )
    return c["jti"] if ok else None  # type: ignore[no-any-return]


# --- invariants shared with scripts/fuzz_atheris ------------------------------------------


def outcome(
    verifier: remit.Verifier, token: Any, action: Any, args: Any, proof: Any = None
) -> Code | None:
    """None when allowed; the code when denied. Anything but Denied propagates (a bug)."""
    try:
        decision = verifier.check(token, action=action, args=args, proof=proof)
    except Denied as exc:
        assert isinstance(exc.code, Code), exc
        assert type(exc.message) is str
        assert exc.to_json()["code"] == exc.code.value and exc.http_status in (401, 403, 503)
        return exc.code
    assert decision.allowed and decision.audience == AUDIENCE, decision
    return None


def expect_token(token: Any, action: Any = ACTION, args: Any = ARGS) -> Code | None:
    """Check ``token`` twice (cold, then cached) with a fresh and with the shared verifier;
    every answer must be the reference's."""
    expected = type(token) is str and ref_token_allows(token, action, args)
    fresh = make_verifier()
    codes = [outcome(v, token, action, args) for v in (fresh, fresh, SHARED, SHARED)]
    for code in codes:
        assert (code is None) == expected, (
            f"verifier {'allowed' if code is None else code} but the reference "
            f"{'allows' if expected else 'denies'}: {token!r} {action!r} {args!r}"
        )
    return codes[0]


def expect_denied(token: Any, action: Any = ACTION, args: Any = ARGS, proof: Any = None) -> Code:
    code = outcome(SHARED, token, action, args, proof)
    assert code is not None, f"allowed: {token!r} {action!r} {args!r} {proof!r}"
    return code


def bound_token(seconds: int = 300) -> str:
    jkt = AGENT.thumbprint
    return sign(claims(jti=JTI, gid=GID, exp=NOW + seconds, cnf={"jkt": jkt}), KEY)


def expect_proof(
    verifier: remit.Verifier, used: set[str], token: str, proof: Any,
    action: str = ACTION, args: Mapping[str, Any] = ARGS,
) -> Code | None:
    """A bound, valid ``token``: allowed exactly when the reference accepts the proof."""
    jti = ref_proof_ok(proof, token, action, args, used)
    code = outcome(verifier, token, action, args, proof)
    assert (code is None) == (jti is not None), (
        f"verifier {'allowed' if code is None else code}; reference "
        f"{'accepts' if jti else 'rejects'} proof {proof!r}"
    )
    if jti is not None:
        used.add(jti)
        assert outcome(verifier, token, action, args, proof) is Code.REPLAYED
    return code


def expect_check_args(cap: Mapping[str, Any], args: dict[Any, Any]) -> str | None:
    """``_check_args`` of a valid capability: a decision, equal to the reference's."""
    compiled = compile_capability(parse_capability(cap))
    denial = _check_args(compiled, args)
    if denial is not None:
        assert isinstance(denial, Denied) and isinstance(denial.code, Code)
        assert type(denial.message) is str
    got = None if denial is None else denial.code.value
    try:
        expected = ref_check_args(cap.get("args", {}), args)
    except Abstain:
        return got
    assert got == expected, f"remit: {got}, reference: {expected}: {cap!r} {args!r}"
    return got


def expect_parse(obj: Any, *, token_form: bool = False) -> bool:
    """``parse_capability`` raises only ConstraintError, exactly when the reference rejects."""
    valid = ref_capability_ok(obj, token_form=token_form)
    try:
        parse_capability(obj, token_form=token_form)
    except ConstraintError:
        assert not valid, f"rejected a valid capability {obj!r}"
        return False
    assert valid, f"accepted an invalid capability {obj!r}"
    return True


def expect_narrowing(child: Any, parent: Any) -> bool | None:
    """``is_narrower``: a bool when both sides are valid, else ConstraintError (None here)."""
    def valid(side: Any) -> bool:
        if isinstance(side, Mapping | remit.Capability):
            side = [side]
        elif not isinstance(side, Sequence) or isinstance(side, str | bytes | bytearray):
            return False
        return all(
            isinstance(s, remit.Capability)
            or (isinstance(s, Mapping) and ref_capability_ok(dict(s), token_form="type" in s))
            for s in side
        )

    both = valid(child) and valid(parent)
    try:
        answer = is_narrower(child, parent)
    except ConstraintError:
        assert not both, f"ConstraintError for valid capabilities {child!r} {parent!r}"
        return None
    assert both, f"answered {answer} for invalid input {child!r} {parent!r}"
    assert type(answer) is bool
    return answer


def expect_sound(child: dict[str, Any], parent: dict[str, Any], calls: list[Any]) -> int:
    """For a narrower pair: every call the child allows, the parent allows too (remit and
    reference). ``calls`` are (action, args); returns how many the child allowed."""
    c_compiled, p_compiled = compile_capability(parse_capability(child)), compile_capability(
        parse_capability(parent)
    )
    allowed = 0
    for action, args in calls:
        if not ref_action_matches(child["action"], action):
            continue
        if _check_args(c_compiled, args) is not None:
            continue
        allowed += 1
        assert ref_action_matches(parent["action"], action), (child, parent, action)
        denial = _check_args(p_compiled, args)
        assert denial is None, f"child {child!r} allows {action} {args!r}; parent denies: {denial}"
        with contextlib.suppress(Abstain):
            assert ref_check_args(parent.get("args", {}), args) is None, (child, parent, args)
    return allowed


# --- strategies -------------------------------------------------------------------------

huge_ints = st.sampled_from(
    [2**53 - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63, 2**64 + 1, 10**30, -(10**30), 10**400]
)
ints = st.integers(-3, 3) | st.integers() | huge_ints
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 0.5, 1.0, 1e16, 2.0**53, 1e308, 5e-324, -1.5]
)
texts = st.text(max_size=6) | st.sampled_from(
    ["", "a", "ab", "é", "e\u0301", "\U0001f600", "\x00", "a\n", "*", "?", "\\", "a*b", "/a/../b"]
)
json_scalars = st.none() | st.booleans() | ints | floats | texts
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


class StrSub(str):
    __slots__ = ()

    def __repr__(self) -> str:
        return f"StrSub({str(self)!r})"


class IntSub(int):
    pass


class FloatSub(float):
    pass


class ListSub(list[Any]):
    pass


class DictSub(dict[str, Any]):
    pass


class Hostile:
    """Raises from every protocol a careless check might call."""

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("compared")

    def __hash__(self) -> int:
        return hash("a")  # collides with the argument name "a"

    def __len__(self) -> int:
        raise RuntimeError("measured")

    def __lt__(self, other: object) -> bool:
        raise RuntimeError("ordered")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("iterated")

    def __repr__(self) -> str:
        return "Hostile()"


class BrokenMapping(Mapping[str, Any]):
    """A Mapping whose items cannot be read."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def __getitem__(self, key: str) -> Any:
        if self.fail_on == "getitem":
            raise KeyError(key)
        return 1

    def __iter__(self) -> Iterator[str]:
        if self.fail_on == "iter":
            raise RuntimeError("iterated")
        yield "amount"

    def __len__(self) -> int:
        if self.fail_on == "len":
            raise RuntimeError("measured")
        return 1

    def __repr__(self) -> str:
        return f"BrokenMapping({self.fail_on!r})"


def _cycle_list() -> list[Any]:
    v: list[Any] = [1]
    v.append(v)
    return v


def _cycle_dict() -> dict[str, Any]:
    v: dict[str, Any] = {"a": 1}
    v["b"] = v
    return v


def deep(n: int, leaf: Any = 1, kind: str = "list") -> Any:
    v = leaf
    for _ in range(n):
        v = [v] if kind == "list" else {"a": v}
    return v


NAN, INF = math.nan, math.inf
py_leaves = (
    st.sampled_from([NAN, INF, -INF, b"a", bytearray(b"a"), (1,), (), {1}, frozenset(),
                     Decimal(1), Decimal("NaN"), 1j, Ellipsis, int, len])
    | st.builds(object)
    | st.builds(Hostile)
    | st.builds(StrSub, texts)
    | st.builds(IntSub, st.integers(-3, 3))
    | st.builds(FloatSub, st.sampled_from([0.0, 1.0, NAN]))
)
py_keys = (
    texts | st.integers(-2, 2) | st.none() | st.tuples(st.integers(0, 1))
    | st.builds(StrSub, st.sampled_from(["a", "b", "*", "zz"]))
)
py_values = st.recursive(
    json_scalars | py_leaves,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(py_keys, inner, max_size=3)
    | st.lists(inner, max_size=3).map(tuple)
    | st.lists(inner, max_size=3).map(ListSub)
    | st.dictionaries(texts, inner, max_size=2).map(DictSub)
    | inner.map(lambda x: [x, x])  # a shared sub-tree: still JSON if x is
    | st.builds(_cycle_list)
    | st.builds(_cycle_dict),
    max_leaves=8,
) | st.builds(
    deep, st.integers(1, 3000), json_scalars | py_leaves, st.sampled_from(["list", "dict"])
)

NAMES = ("a", "b", "c", "é", "a.b", "*x")
ACTIONS = ("t.x", "t.y", "t.x.z", "t.*", "t.x.*", "a-b_c.d9")
CALL_ACTIONS = ("t.x", "t.y", "t.x.z", "t.x.z.w", "t", "u.x", "t.", "t.*", "T.X", "t.x\n", "")

glob_patterns = st.lists(
    st.sampled_from(["a", "b", "é", "/", "*", "?", "\\*", "\\?", "\\\\", "\\a", "**"]), max_size=6
).map("".join)
OPERANDS: dict[str, st.SearchStrategy[Any]] = {
    "eq": json_values,
    "in": st.lists(json_values, min_size=1, max_size=4),
    "not_in": st.lists(json_values, max_size=4),
    "lt": ints | floats,
    "le": ints | floats,
    "gt": ints | floats,
    "ge": ints | floats,
    "max_len": st.integers(0, 5),
    "prefix": texts,
    "glob": glob_patterns,
}


@st.composite
def constraints(draw: st.DrawFn, *, star: bool = False) -> dict[str, Any]:
    if draw(st.integers(0, 7)) == 0:
        c: dict[str, Any] = {"any": True}
    else:
        ops = draw(st.lists(st.sampled_from(sorted(OPERANDS)), min_size=1, max_size=3, unique=True))
        c = {op: draw(OPERANDS[op]) for op in ops}
        if not ref_satisfiable(c, set(c)):  # contradictory siblings are invalid: keep one
            c = {ops[0]: c[ops[0]]}
    if not star and draw(st.booleans()):
        c["optional"] = True
    return c


@st.composite
def capabilities(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))
    args = {n: draw(constraints()) for n in names}
    if draw(st.integers(0, 2)) == 0:
        args["*"] = draw(constraints(star=True))
    return {"action": draw(st.sampled_from(ACTIONS)), "args": args}


def near(cap: Mapping[str, Any]) -> list[Any]:
    """Values at and around every operand: equal, JSON-equal in another spelling, bounds
    +- a little, longer and shorter strings, glob instances."""
    out: list[Any] = []
    args = cap.get("args", {}) if isinstance(cap, dict) else {}
    for c in args.values() if isinstance(args, dict) else ():
        for op, x in c.items() if isinstance(c, dict) else ():
            if op in BOUNDS and ref_number(x):
                out += [x, x + 1, x - 1, float(x) if abs(x) < 1e300 else x]
                if type(x) is float:
                    out += [math.nextafter(x, INF), math.nextafter(x, -INF)]
            elif op == "max_len" and type(x) is int and 0 <= x <= 100:
                out += ["a" * x, "a" * (x + 1), [0] * x, [[0]] * (x + 1)]
            elif op == "prefix" and type(x) is str:
                out += [x, x + "a", x[:-1], StrSub(x)]
            elif op == "glob" and type(x) is str and ref_glob_tokens(x) is not None:
                out += _glob_instances(x)
            elif op == "eq":
                out += [x, [x], _respell(x)]
            elif op in ("in", "not_in") and type(x) is list:
                out += [*x, *(_respell(e) for e in x[:2])]
    return out


def _respell(v: Any) -> Any:
    """A JSON-equal value with other Python types (int <-> float), or v."""
    if type(v) is int and abs(v) < 2**53:
        return float(v)
    if type(v) is float and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if type(v) is list:
        return [_respell(x) for x in v]
    if type(v) is dict:
        return {k: _respell(x) for k, x in v.items()}
    return v


@st.composite
def call_args(draw: st.DrawFn, cap: Mapping[str, Any], *, python: bool) -> dict[Any, Any]:
    pool = [v for v in near(cap) if python or ref_is_json(v)]
    values = json_values | py_values if python else json_values
    value = st.sampled_from(pool) | values if pool else values
    names = [*cap.get("args", {}), *NAMES, "*", "zz"]
    args: dict[Any, Any] = {}
    for name in draw(st.lists(st.sampled_from(names), max_size=4, unique=True)):
        args[name] = draw(value)
    if python and draw(st.integers(0, 4)) == 0:  # a key that is not a string
        key = draw(py_keys | st.builds(Hostile))
        if isinstance(key, Hostile):  # its hash is "a"'s: only where no "a" can meet it
            args.pop("a", None)
        if draw(st.booleans()):
            args[key] = draw(value)
        else:
            args = {key: draw(value), **args}
    return args


# Mutating JSON documents: trees with markers the serializer writes as given.


class Raw(str):
    """A literal JSON text placed as is (``NaN``, ``1e999``, 5000 digits, deep nesting)."""

    __slots__ = ()


class Dup:
    """An object written with these (possibly repeated) pairs."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        self.pairs = pairs

    def __repr__(self) -> str:
        return f"Dup({self.pairs!r})"


def dump(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, Dup):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(x)}" for k, x in v.pairs) + "}"
    if type(v) is dict:
        return "{" + ",".join(
            f"{json.dumps(k, ensure_ascii=False)}:{dump(x)}" for k, x in v.items()
        ) + "}"
    if type(v) in (list, tuple):
        return "[" + ",".join(dump(x) for x in v) + "]"
    return json.dumps(v, ensure_ascii=False)


RAW_LITERALS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" + "0" * 5000, "9" * 4300, "-0",
    "1.0", "1e2", "1E+2", "0.1e1", "1767225600.0", "1.7672256e9", "01", "+1", ".5",
    '"\\ud800"', '"\\udc00\\ud800"', '"\\ud83d\\ude00"', '"\\\\ud800"', '"\\u0000"',
    '"\\u0041"', '"a\\/b"', '"\t"', "'a'", "true", "null", "[]", "{}", '{"":1}',
    "[" * 1500 + "]" * 1500, '{"a":' * 1200 + "1" + "}" * 1200,
    "[" * 17 + "1" + "]" * 17, "[" * 16 + "1" + "]" * 16,
]
SPECIALS: list[Any] = [
    None, True, False, 0, -1, 1, 2**53 - 1, 2**53, 10**30, 0.5, 1.5, -0.0,
    NOW, NOW + 1, NOW - 1, NOW + 300, NOW + 86401, float(NOW),
    "", "a", "x" * 256, "x" * 257, "x" * 1025, "abcdefgh", "abcdefg", "abcdefgh\n", "a" * 65,
    "a" * 43, "a" * 43 + "=", "abc+efgh", ISSUER, ISSUER + "/", AUDIENCE, "ledger", "EdDSA",
    "none", "HS256", "remit+jwt", "remit-pop+jwt", "JWT", KEY.kid, "remit.capability",
    [], [AUDIENCE], [AUDIENCE, "x"], ["x"] * 33, {}, {"sub": "agent:a"}, {"jkt": "a" * 43},
    [{"type": "remit.capability", "action": "t.*"}],
    [{"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}}],
    {"le": 100}, {"any": True}, {"optional": True}, {"eq": 1, "any": True}, {"limits": {}},
]
specials = st.sampled_from(SPECIALS).map(copy.deepcopy)  # never share (and so mutate) them
HINT_KEYS = [
    "iss", "sub", "aud", "act", "iat", "nbf", "exp", "jti", "gid", "anc", "cnf", "purpose",
    "authorization_details", "type", "action", "args", "limits", "eq", "in", "not_in", "le",
    "optional", "any", "*", "jkt", "alg", "typ", "kid", "jwk", "x5u", "crit", "b64", "x",
    "kty", "crv", "ath", "argh", "", "ISS", "iss\u0000",
]


def _paths(v: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if type(v) is dict:
        for k, x in v.items():
            yield from _paths(x, (*prefix, k))
    elif type(v) is list:
        for i, x in enumerate(v):
            yield from _paths(x, (*prefix, i))


def _get(v: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        v = v[p]
    return v


def _confused(v: Any) -> list[Any]:
    """The same content in other JSON types (and near misses)."""
    out: list[Any] = [[v], {"v": v}, Raw(json.dumps(json.dumps(v))) if _plain(v) else None]
    if type(v) is int and not isinstance(v, bool):
        out += [str(v), v == 1, v + 1, v - 1, -v, Raw(f"{v}.0"), Raw(f"{v}e0")]
        out += [float(v)] if abs(v) < 2**1000 else []
    elif type(v) is str:
        out += [v + "\n", " " + v, v.upper(), v[:-1], v + v, Raw(json.dumps(v, ensure_ascii=True))]
    elif type(v) is list:
        out += [v[:-1], v + v, {str(i): x for i, x in enumerate(v)}, [*v, None]]
    elif type(v) is dict:
        out += [list(v.items()), list(v.values()), Dup([*v.items(), *list(v.items())[:1]])]
    return out


def _plain(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


@st.composite
def mutated_doc(draw: st.DrawFn, doc: dict[str, Any], max_changes: int = 3) -> Any:
    """``doc`` after 0..``max_changes`` edits at random nodes: replaced (any JSON type,
    near-valid specials, raw literals), deleted, inserted, type-confused, duplicated."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(0, max_changes))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        node = _get(doc, path)
        kind = draw(st.integers(0, 7))
        new: Any
        if kind == 0:
            new = draw(json_values)
        elif kind == 1:
            new = draw(specials)
        elif kind == 2:
            new = Raw(draw(st.sampled_from(RAW_LITERALS)))
        elif kind == 3:
            new = draw(st.sampled_from([x for x in _confused(node) if x is not None]))
        elif kind == 4 and type(node) is dict:
            key = draw(st.sampled_from(HINT_KEYS) | texts)
            node[key] = draw(specials | json_values)
            continue
        elif kind == 4 and type(node) is list:
            node.insert(draw(st.integers(0, len(node))), draw(specials))
            continue
        elif kind == 5 and path:
            parent = _get(doc, path[:-1])
            del parent[path[-1]]
            continue
        elif kind == 6 and type(node) is dict and node:
            key = draw(st.sampled_from(sorted(node)))
            dup_value = draw(st.sampled_from([node[key], *SPECIALS[:12]]))
            first = draw(st.booleans())
            pairs = list(node.items())
            new = Dup([(key, dup_value), *pairs] if first else [*pairs, (key, dup_value)])
        elif kind == 7 and type(node) is dict and len(node) > 1:
            items = list(node.items())
            new = dict(items[::-1])  # key order must not matter
        else:
            continue
        if not path:
            doc = new
        else:
            _get(doc, path[:-1])[path[-1]] = new
    return doc


@st.composite
def encoded(draw: st.DrawFn, doc: Any) -> bytes:
    """``doc`` as JSON bytes; rarely in a wrong encoding or with bytes around it."""
    data = dump(doc).encode("utf-8", "surrogatepass")
    kind = draw(st.integers(0, 15))
    if kind == 0:
        data = b"\xef\xbb\xbf" + data
    elif kind == 1:
        data = dump(doc).encode("utf-16", "surrogatepass")
    elif kind == 2:
        i = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\x00"]))
        data = data[:i] + bad + data[i:]
    elif kind == 3:
        data = draw(st.sampled_from([b" ", b"\n", b"\t", b"\r"])) + data + b" \n"
    elif kind == 4:
        data += draw(st.sampled_from([b"x", b"{}", b",", b"\x00", b"]"]))
    elif kind == 5:
        data = data[: draw(st.integers(0, len(data)))]
    return data


CHAR_POOL = [*sorted(B64URL), ".", "=", "+", "/", " ", "\n", "\x00", "é", "\u2024", "\uff0e"]


@st.composite
def mutated_string(draw: st.DrawFn, s: str) -> str:
    """Character-level edits of a compact JWS: flip, insert, delete, swap or duplicate
    segments, truncate, change case, pad."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 8))
        i = draw(st.integers(0, max(0, len(s) - 1)))
        c = draw(st.sampled_from(CHAR_POOL))
        parts = s.split(".")
        if kind == 0 and s:
            s = s[:i] + c + s[i + 1 :]
        elif kind == 1:
            s = s[:i] + c + s[i:]
        elif kind == 2:
            s = s[:i] + s[i + 1 :]
        elif kind == 3 and len(parts) >= 2:
            a, b = draw(st.sampled_from([(0, 1), (0, 2), (1, 2)]))
            if b < len(parts):
                parts[a], parts[b] = parts[b], parts[a]
            s = ".".join(parts)
        elif kind == 4:
            j = draw(st.integers(0, len(parts) - 1))
            parts.insert(j, parts[j])
            s = ".".join(parts)
        elif kind == 5:
            s = s[:i]
        elif kind == 6 and s:
            s = s[:i] + s[i].swapcase() + s[i + 1 :]
        elif kind == 7:
            s = draw(st.sampled_from(["", " ", "Bearer ", "Remit "])) + s + draw(
                st.sampled_from(["", "=", "==", ".", "\n", " "])
            )
        elif kind == 8:
            j = draw(st.integers(0, len(parts) - 1))
            parts[j] = parts[j] + draw(st.sampled_from(["A", "AA", "AAA", "AAAA", "Q", "w"]))
            s = ".".join(parts)
    return s


def valid_claims(**overrides: Any) -> dict[str, Any]:
    return claims(jti=JTI, gid=GID, **overrides)


VALID_TOKEN = sign(valid_claims(), KEY)


# --- token parser -------------------------------------------------------------------------


@fuzz(2)
@given(
    st.text(max_size=200)
    | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
    | st.lists(st.text([*sorted(B64URL), "=", "+", "/"], max_size=80), min_size=1, max_size=5)
    .map(".".join)
)
def test_arbitrary_text_is_denied(token: str) -> None:
    expect_denied(token)
    expect_token(token)


@fuzz()
@given(
    token=st.none() | st.binary(max_size=20) | ints | st.builds(StrSub, st.just(VALID_TOKEN))
    | st.lists(st.just(VALID_TOKEN), max_size=1) | st.just(VALID_TOKEN) | py_leaves,
    action=st.sampled_from([ACTION, None, 1, b"payments.transfer", StrSub(ACTION), "x" * 200])
    | texts,
    args=st.none() | st.just(ARGS) | json_values | py_values | st.builds(DictSub, st.just(ARGS))
    | st.builds(BrokenMapping, st.sampled_from(["iter", "getitem", "len", "none"])),
)
def test_any_python_inputs_are_denied_or_decided(token: Any, action: Any, args: Any) -> None:
    code = outcome(SHARED, token, action, args)
    with contextlib.suppress(Abstain):  # the reference does not judge very deep values
        if code is None:
            assert token == VALID_TOKEN and type(token) is str
            assert ref_token_allows(token, action, args)
        elif type(token) is str and token == VALID_TOKEN and type(action) is str:
            assert not ref_token_allows(token, action, args), code


@fuzz(2)
@given(mutated_string(VALID_TOKEN))
def test_mutated_token_is_denied_unless_identical(token: str) -> None:
    code = outcome(SHARED, token, ACTION, ARGS)
    assert (code is None) == (token == VALID_TOKEN), (code, token)


@fuzz(3)
@given(data=st.data())
def test_resigned_claims_agree_with_reference(data: st.DataObject) -> None:
    doc = data.draw(mutated_doc(valid_claims()), label="claims")
    payload = data.draw(encoded(doc), label="payload")
    token = sign_raw(compact_json(default_header(KEY)), payload, KEY)
    note(f"payload: {payload[:600]!r}")
    if data.draw(st.integers(0, 3)) == 0:
        cap = data.draw(capabilities(), label="call from capability")
        action = data.draw(st.sampled_from(CALL_ACTIONS))
        args: Any = data.draw(call_args(cap, python=False))
    else:
        action, args = ACTION, ARGS
    expect_token(token, action, args)


@fuzz(1.5)
@given(data=st.data())
def test_resigned_header_agrees_with_reference(data: st.DataObject) -> None:
    header = data.draw(mutated_doc(default_header(KEY), max_changes=2), label="header")
    header_bytes = data.draw(encoded(header), label="header bytes")
    token = sign_raw(header_bytes, compact_json(valid_claims()), KEY)
    note(f"header: {header_bytes[:300]!r}")
    expect_token(token)


@fuzz(1.5)
@given(data=st.data())
def test_scopes_agree_with_reference(data: st.DataObject) -> None:
    """End to end: random valid scopes in signed tokens, random calls (any Python args)."""
    caps = data.draw(st.lists(capabilities(), min_size=1, max_size=3), label="scope")
    scope = [{"type": "remit.capability", **c} for c in caps]
    token = sign(valid_claims(authorization_details=scope), KEY)
    cap = data.draw(st.sampled_from(caps))
    action = data.draw(st.sampled_from(CALL_ACTIONS) | st.sampled_from(ACTIONS))
    args = data.draw(call_args(cap, python=data.draw(st.booleans())), label="args")
    code = outcome(SHARED, token, action, args)
    try:
        expected = ref_token_allows(token, action, args)
    except Abstain:
        return
    assert (code is None) == expected, (code, action, args)


# --- proof parser --------------------------------------------------------------------------


def _proof(token: str) -> str:
    return remit.agent.proof(
        AGENT, token, audience=AUDIENCE, action=ACTION, args=ARGS, clock=lambda: NOW
    )


def _proof_claims(token: str, jti: str = "proof-jti-fuzz-0001") -> dict[str, Any]:
    return {
        "jti": jti,
        "iat": NOW,
        "ath": sha256_b64(token.encode("ascii")),
        "aud": AUDIENCE,
        "action": ACTION,
        "argh": sha256_b64(rfc8785.dumps(dict(ARGS))),
    }


def _signed_proof(header: Any, claims_doc: Any, header_bytes: bytes | None = None,
                  payload: bytes | None = None) -> str:
    h = b64url(header_bytes if header_bytes is not None else dump(header).encode())
    p = b64url(payload if payload is not None else dump(claims_doc).encode())
    return f"{h}.{p}.{b64url(AGENT.sign(f'{h}.{p}'.encode('ascii')))}"


BOUND_TOKEN = bound_token()


@fuzz(1.5)
@given(data=st.data())
def test_mutated_proof_is_denied_unless_identical(data: st.DataObject) -> None:
    verifier, used = make_verifier(), set[str]()
    proof = _proof(BOUND_TOKEN)
    mutated = data.draw(mutated_string(proof) | st.text(max_size=100) | st.none() | ints)
    code = expect_proof(verifier, used, BOUND_TOKEN, mutated)
    assert (code is None) == (mutated == proof), code
    # the untouched proof still works once, whatever came before
    if mutated != proof:
        assert expect_proof(verifier, used, BOUND_TOKEN, proof) is None


@fuzz(3)
@given(data=st.data())
def test_resigned_proofs_agree_with_reference(data: st.DataObject) -> None:
    verifier, used = make_verifier(), set[str]()
    header = {"alg": "EdDSA", "typ": "remit-pop+jwt", "jwk": AGENT.public_jwk}
    if data.draw(st.booleans()):
        header = data.draw(mutated_doc(header, max_changes=2), label="proof header")
    doc = data.draw(mutated_doc(_proof_claims(BOUND_TOKEN)), label="proof claims")
    header_bytes = data.draw(encoded(header))
    payload = data.draw(encoded(doc))
    proof = _signed_proof(None, None, header_bytes, payload)
    note(f"proof header {header_bytes[:300]!r} claims {payload[:600]!r}")
    token = BOUND_TOKEN
    if data.draw(st.integers(0, 5)) == 0:
        token = data.draw(mutated_string(BOUND_TOKEN))
        code = outcome(verifier, token, ACTION, ARGS, proof)
        assert code is not None or token == BOUND_TOKEN
        return
    expect_proof(verifier, used, token, proof)


# --- constraint evaluator -------------------------------------------------------------


@fuzz(3)
@given(data=st.data())
def test_evaluator_agrees_with_reference_on_json(data: st.DataObject) -> None:
    cap = data.draw(capabilities() | small_capability(), label="capability")
    if not ref_capability_ok(cap):
        assume(False)
    args = data.draw(call_args(cap, python=False), label="args")
    expect_check_args(cap, args)


@fuzz(3)
@given(data=st.data())
def test_evaluator_decides_any_python_value(data: st.DataObject) -> None:
    cap = data.draw(capabilities(), label="capability")
    args = data.draw(call_args(cap, python=True), label="args")
    expect_check_args(cap, args)


@fuzz(2)
@given(data=st.data())
def test_capability_validation_agrees_with_reference(data: st.DataObject) -> None:
    token_form = data.draw(st.booleans())
    base = data.draw(capabilities())
    if token_form:
        base = {"type": "remit.capability", **base}
    if data.draw(st.integers(0, 4)):
        obj = as_json(data.draw(mutated_doc(base), label="capability"))
    else:
        obj = data.draw(py_values | json_values, label="capability")
    expect_parse(obj, token_form=token_form)


def as_json(doc: Any) -> Any:
    """A mutated document as the JSON parser would give it (FAIL: it doesn't parse)."""
    value = ref_json(dump(doc).encode("utf-8", "surrogatepass"))
    assume(value is not FAIL)
    return value


# --- narrowing ----------------------------------------------------------------------------


@fuzz(2)
@given(data=st.data())
def test_is_narrower_total(data: st.DataObject) -> None:
    side = (
        capabilities()
        | small_capability()
        | st.lists(capabilities(), max_size=2)
        | st.lists(capabilities(), max_size=2).map(tuple)
        | capabilities().flatmap(lambda c: mutated_doc(c, max_changes=1)).map(as_json)
        | capabilities().map(lambda c: parse_capability(c) if ref_capability_ok(c) else c)
        | py_values
        | st.lists(py_values, max_size=2)
    )
    child, parent = data.draw(side, label="child"), data.draw(side, label="parent")
    expect_narrowing(child, parent)


@fuzz(3)
@given(data=st.data())
def test_is_narrower_sound(data: st.DataObject) -> None:
    parent = data.draw(small_capability() | capabilities().filter(_moderate), label="parent")
    child = data.draw(small_child_of(parent), label="child")
    assume(ref_capability_ok(parent) and ref_capability_ok(child))
    if not expect_narrowing(child, parent):
        return
    # Calls the child allows: for every argument, a value its constraint accepts (or none).
    pool = near(parent) + near(child) + data.draw(st.lists(py_values | json_values, max_size=6))
    pool += [None, True, 0, -0.0, "", [], {}, NAN, (1,), StrSub("a")]
    compiled = compile_capability(parse_capability(child))
    options: list[tuple[str, list[Any]]] = []
    for name in sorted({*child["args"], *parent["args"], "zz"} - {"*"}):
        pred = compiled.named.get(name, compiled.star)
        values = [v for v in pool if pred is not None and pred(v)]
        values += [MISSING] * (name not in compiled.required)
        if not values:
            return  # the child allows no call at all
        options.append((name, values))
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
    calls = []
    for _ in range(40):
        args = {name: rng.choice(values) for name, values in options}
        calls.append((rng.choice(CALL_ACTIONS[:5]), {k: v for k, v in args.items()
                                                      if v is not MISSING}))
    assert expect_sound(child, parent, calls) > 0 or not any(
        ref_action_matches(child["action"], a) for a in CALL_ACTIONS[:5]
    )


MISSING = object()


def _moderate(cap: dict[str, Any]) -> bool:
    """Bounds a float can hold (child_of moves them by 0.5)."""
    return all(
        abs(x) < 2**1000 for c in cap["args"].values() for op, x in c.items() if op in BOUNDS
    )


def test_budget_profile_is_known() -> None:
    assert PROFILE in ("ci", "long"), f"REMIT_FUZZ_PROFILE={PROFILE!r}: use ci or long"
