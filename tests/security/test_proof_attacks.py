"""Attacks on proofs of possession: each is denied by remit.Verifier with one exact code.

A token bound to an agent key (``cnf.jkt``) needs, on every call, a proof signed by
that key over this token, this audience, this action and these arguments, with a
fresh ``jti`` inside the proof window. Proofs here are built independently of
``remit`` (``cryptography`` signs, ``rfc8785`` canonicalizes), so a malformed proof
can carry a valid signature: what fails is then the check under test, not the
signature. The clock is pinned to :data:`NOW`; ``pytest.raises(Denied)`` makes any
other exception a failure too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import redis
import remit
import rfc8785
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from remit import Code, Denied

from tests.redis_server import PrivateRedis
from tests.tokens import (
    ACTION,
    ARGS,
    AUDIENCE,
    ISSUER,
    NOW,
    OMIT,
    IssuerKey,
    b64url,
    claims,
    compact_json,
    sign,
)

KEY = IssuerKey()
POP_TYP = "remit-pop+jwt"
OTHER_AUDIENCE = "ledger"
WINDOW = 30  # the verifier's default proof_window
LEEWAY = 5  # the verifier's default leeway
ED25519_L = 2**252 + 27742317777372353535851937790883648493
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class Agent:
    """An agent's Ed25519 key (``cryptography``), its public JWK and RFC 7638 thumbprint."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.x = b64url(raw)
        members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": self.x},
                             separators=(",", ":"), sort_keys=True).encode()
        self.jkt = b64url(hashlib.sha256(members).digest())

    def jwk(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": self.x}

    def sign_bytes(self, data: bytes) -> bytes:
        return self.private.sign(data)


AGENT = Agent()
THIEF = Agent()  # holds a stolen token, but not AGENT's key


def _apply(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    for name, value in overrides.items():
        if value is OMIT:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def sha256_b64(data: bytes) -> str:
    return b64url(hashlib.sha256(data).digest())


def argh(args: Mapping[str, Any]) -> str:
    return sha256_b64(rfc8785.dumps(dict(args)))


_counter = iter(range(10**9))


def fresh_jti() -> str:
    return f"proof-jti-{next(_counter):08d}"  # 18 base64url characters


def pop_header(agent: Agent = AGENT, **overrides: Any) -> dict[str, Any]:
    return _apply({"alg": "EdDSA", "typ": POP_TYP, "jwk": agent.jwk()}, overrides)


def pop_claims(
    token: str,
    *,
    iat: int = NOW,
    aud: str = AUDIENCE,
    action: str = ACTION,
    args: Mapping[str, Any] = ARGS,
    **overrides: Any,
) -> dict[str, Any]:
    base = {
        "jti": fresh_jti(),
        "iat": iat,
        "ath": sha256_b64(token.encode("ascii")),
        "aud": aud,
        "action": action,
        "argh": argh(args),
    }
    return _apply(base, overrides)


def sign_pop_raw(header_bytes: bytes, payload_bytes: bytes, agent: Agent = AGENT) -> str:
    signing_input = f"{b64url(header_bytes)}.{b64url(payload_bytes)}"
    return f"{signing_input}.{b64url(agent.sign_bytes(signing_input.encode('ascii')))}"


def make_proof(
    token: str,
    *,
    agent: Agent = AGENT,
    header: Mapping[str, Any] | None = None,
    signer: Agent | None = None,
    **claim_overrides: Any,
) -> str:
    """A proof for ``token``; ``signer`` signs it (default: ``agent``, whose jwk it carries)."""
    hdr = dict(header) if header is not None else pop_header(agent)
    return sign_pop_raw(compact_json(hdr), compact_json(pop_claims(token, **claim_overrides)),
                        signer or agent)


def bound_token(agent: Agent = AGENT, **overrides: Any) -> str:
    return sign(claims(cnf={"jkt": agent.jkt}, **overrides), KEY)


def make_verifier(**overrides: Any) -> remit.Verifier:
    params: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "revocation": "off",
        "replay": "local",
        "clock": lambda: NOW,
    }
    params.update(overrides)
    return remit.Verifier(KEY.jwks(), **params)


def check(
    token: str,
    proof: Any,
    *,
    verifier: remit.Verifier | None = None,
    action: str = ACTION,
    args: Any = ARGS,
) -> remit.Decision:
    return (verifier or make_verifier()).check(token, action=action, args=args, proof=proof)


def denied(token: str, proof: Any, code: Code, **kwargs: Any) -> Denied:
    with pytest.raises(Denied) as info:
        check(token, proof, **kwargs)
    assert info.value.code is code, info.value
    return info.value


def mismatch(token: str, proof: Any, field: str, **kwargs: Any) -> None:
    exc = denied(token, proof, Code.PROOF_MISMATCH, **kwargs)
    assert exc.message.startswith(f"{field}:"), exc


def allowed(token: str, proof: Any, **kwargs: Any) -> remit.Decision:
    decision = check(token, proof, **kwargs)
    assert decision.allowed
    return decision


def gid_of(token: str) -> str:
    gid: str = json.loads(base64url_bytes(segments(token)[1]))["gid"]
    return gid


def segments(jws: str) -> list[str]:
    parts = jws.split(".")
    assert len(parts) == 3
    return parts


@pytest.fixture
def redis_verifiers(
    redis_url: str, redis_prefix: str
) -> Iterator[Callable[..., remit.Verifier]]:
    """Verifiers sharing one Redis replay namespace (``replay="redis"``)."""
    made: list[remit.Verifier] = []

    def make(**overrides: Any) -> remit.Verifier:
        params: dict[str, Any] = {"redis": redis_url, "prefix": redis_prefix, "replay": "redis"}
        params.update(overrides)
        verifier = make_verifier(**params)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


# -- baseline ---------------------------------------------------------------------------


def test_bound_token_with_its_proof_is_allowed() -> None:
    token = bound_token()
    decision = allowed(token, make_proof(token))
    assert (decision.action, decision.audience) == (ACTION, AUDIENCE)


def test_bound_token_with_a_proof_from_remit_agent_is_allowed() -> None:
    key = remit.agent.AgentKey.generate()
    token = sign(claims(cnf={"jkt": key.thumbprint}), KEY)
    proof = remit.agent.proof(key, token, audience=AUDIENCE, action=ACTION, args=ARGS,
                              clock=lambda: NOW)
    allowed(token, proof)


# -- no proof, stolen token -------------------------------------------------------------


def test_bound_token_without_proof() -> None:
    denied(bound_token(), None, Code.PROOF_REQUIRED)


def test_stolen_token_with_a_proof_signed_by_another_key() -> None:
    token = bound_token()
    denied(token, make_proof(token, agent=THIEF), Code.PROOF_KEY_MISMATCH)


def test_stolen_token_with_a_proof_naming_the_bound_key_but_signed_by_another() -> None:
    token = bound_token()
    denied(token, make_proof(token, agent=AGENT, signer=THIEF), Code.BAD_PROOF)


def test_key_binding_is_checked_before_the_signature() -> None:
    token = bound_token()
    h, p, _ = segments(make_proof(token, agent=THIEF))
    denied(token, f"{h}.{p}.{b64url(bytes(64))}", Code.PROOF_KEY_MISMATCH)


# -- replay -----------------------------------------------------------------------------


def test_proof_replayed_at_the_same_backend() -> None:
    token = bound_token()
    proof = make_proof(token)
    verifier = make_verifier()
    allowed(token, proof, verifier=verifier)
    denied(token, proof, Code.REPLAYED, verifier=verifier)
    # A fresh proof for the same call is fine.
    allowed(token, make_proof(token), verifier=verifier)


def test_proof_replayed_at_the_same_backend_with_redis_replay(
    redis_verifiers: Callable[..., remit.Verifier],
) -> None:
    token = bound_token()
    proof = make_proof(token)
    verifier = redis_verifiers()
    allowed(token, proof, verifier=verifier)
    denied(token, proof, Code.REPLAYED, verifier=verifier)


def test_proof_replayed_at_a_backend_with_another_audience(
    redis_verifiers: Callable[..., remit.Verifier],
) -> None:
    token = bound_token(aud=[AUDIENCE, OTHER_AUDIENCE])
    proof = make_proof(token)
    payments, ledger = redis_verifiers(), redis_verifiers(audience=OTHER_AUDIENCE)
    allowed(token, proof, verifier=payments)
    mismatch(token, proof, "aud", verifier=ledger)
    # The audience pins the proof whether or not it was used before.
    mismatch(token, make_proof(token), "aud", verifier=ledger)
    allowed(token, make_proof(token, aud=OTHER_AUDIENCE), verifier=ledger)


def test_proof_replayed_at_another_instance_of_the_same_backend(
    redis_verifiers: Callable[..., remit.Verifier],
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    token = bound_token()
    pop = pop_claims(token)
    proof = sign_pop_raw(compact_json(pop_header()), compact_json(pop))
    first, second = redis_verifiers(), redis_verifiers()
    allowed(token, proof, verifier=first)
    denied(token, proof, Code.REPLAYED, verifier=second)  # SET NX found the jti
    gid = gid_of(token)
    assert redis_client.exists(f"{redis_prefix}pop:{{{gid}}}:{pop['jti']}") == 1


def test_replay_claim_lasts_the_proof_window_whatever_redis_clock_says(
    redis_verifiers: Callable[..., remit.Verifier],
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    """The verifier's clock (pinned to NOW, far from Redis's wall clock) sets the claim's
    lifetime: an absolute expiry read by Redis's own clock could drop it at once."""
    token = bound_token()
    pop = pop_claims(token, iat=NOW - 10)
    proof = sign_pop_raw(compact_json(pop_header()), compact_json(pop))
    allowed(token, proof, verifier=redis_verifiers())
    gid = gid_of(token)
    ttl = redis_client.pttl(f"{redis_prefix}pop:{{{gid}}}:{pop['jti']}")
    # Usable until iat + window + leeway; kept one second longer.
    assert (WINDOW + LEEWAY - 10) * 1000 < ttl <= (WINDOW + LEEWAY - 10 + 1) * 1000


def test_local_replay_state_is_per_verifier() -> None:
    """Why ``replay="redis"`` is the default when a Redis is given: a local set cannot
    see what another process accepted."""
    token = bound_token()
    proof = make_proof(token)
    allowed(token, proof, verifier=make_verifier())
    allowed(token, proof, verifier=make_verifier())


def test_denied_call_does_not_consume_the_proof() -> None:
    token = bound_token(authorization_details=[
        {"type": "remit.capability", "action": ACTION, "args": {"amount": {"le": 10}}},
    ])
    args = {"amount": 50}
    proof = make_proof(token, args=args)
    verifier = make_verifier()
    denied(token, proof, Code.ARGUMENT_DENIED, verifier=verifier, args=args)
    denied(token, proof, Code.ARGUMENT_DENIED, verifier=verifier, args=args)  # not replayed


# -- proof for another call -------------------------------------------------------------


@pytest.mark.parametrize(
    "call_args",
    [
        pytest.param({"amount": 51, "to": "DE89"}, id="amount-changed"),
        pytest.param({"amount": 50, "to": "DE90"}, id="to-changed"),
        pytest.param({"amount": 50, "to": "DE89", "memo": "x"}, id="arg-added"),
        pytest.param({"amount": 50, "to": "DE89", "to2": "DE89"}, id="arg-added-similar"),
        pytest.param({"amount": 50}, id="arg-removed"),
        pytest.param({}, id="all-args-removed"),
        pytest.param({"amount": "50", "to": "DE89"}, id="int-as-string"),
        pytest.param({"amount": True, "to": "DE89"}, id="int-as-bool"),
        pytest.param({"amount": [50], "to": "DE89"}, id="int-in-list"),
        pytest.param({"amount": 50, "to": "de89"}, id="case-changed"),
        pytest.param({"amount": 50, "to": "DE89 "}, id="trailing-space"),
        pytest.param({"amount": 50, "to": None}, id="null"),
    ],
)
def test_proof_for_other_args(call_args: dict[str, Any]) -> None:
    token = bound_token()
    mismatch(token, make_proof(token, args=ARGS), "argh", args=call_args)


def test_proof_for_string_one_presented_with_int_one() -> None:
    token = bound_token(authorization_details=[
        {"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}},
    ])
    mismatch(token, make_proof(token, args={"n": "1"}), "argh", args={"n": 1})
    mismatch(token, make_proof(token, args={"n": 1}), "argh", args={"n": "1"})
    allowed(token, make_proof(token, args={"n": 1}), args={"n": 1})


def test_proof_args_key_order_is_irrelevant() -> None:
    token = bound_token()
    proof = make_proof(token, args={"to": "DE89", "amount": 50})
    allowed(token, proof, args={"amount": 50, "to": "DE89"})
    nested = bound_token(authorization_details=[
        {"type": "remit.capability", "action": ACTION, "args": {"*": {"any": True}}},
    ])
    proof = make_proof(nested, args={"b": {"y": 1, "x": [1, {"q": 2, "p": 3}]}, "a": "é"})
    allowed(nested, proof, args={"a": "é", "b": {"x": [1, {"p": 3, "q": 2}], "y": 1}})


def test_proof_args_integral_float_is_the_same_json_number() -> None:
    """RFC 8785 writes 50.0 as 50: one JSON number, one hash (the scope agrees: 50.0 <= 100)."""
    token = bound_token()
    allowed(token, make_proof(token, args=ARGS), args={"amount": 50.0, "to": "DE89"})


@pytest.mark.parametrize(
    "call_args",
    [
        pytest.param({"amount": float("nan"), "to": "DE89"}, id="nan"),
        pytest.param({"amount": float("inf"), "to": "DE89"}, id="inf"),
        pytest.param({"amount": 2**64, "to": "DE89"}, id="int-beyond-2-pow-53"),
        pytest.param({"amount": 50, "to": b"DE89"}, id="bytes"),
        pytest.param({"amount": 50, 7: "DE89"}, id="non-string-key"),
    ],
)
def test_args_json_cannot_carry_never_match_a_proof(call_args: dict[Any, Any]) -> None:
    token = bound_token()
    mismatch(token, make_proof(token), "argh", args=call_args)


def test_proof_for_another_action() -> None:
    token = bound_token(authorization_details=[
        {"type": "remit.capability", "action": "payments.*", "args": {"*": {"any": True}}},
    ])
    proof = make_proof(token, action="payments.refund")
    mismatch(token, proof, "action", action="payments.transfer")
    allowed(token, proof, action="payments.refund")


def test_proof_for_another_token() -> None:
    mine, other = bound_token(), bound_token()
    mismatch(mine, make_proof(other), "ath")
    mismatch(mine, make_proof(mine, ath=sha256_b64(mine.encode() + b" ")), "ath")


def test_proof_mismatch_fields_are_checked_in_order() -> None:
    """ath, then aud, then action, then the iat window, then argh."""
    token, other = bound_token(), bound_token()
    everything = {"aud": "email", "action": "payments.refund", "iat": NOW - 3600,
                  "args": {"amount": 1}}
    mismatch(token, make_proof(other, **everything), "ath")
    mismatch(token, make_proof(token, **everything), "aud")
    del everything["aud"]
    mismatch(token, make_proof(token, **everything), "action")
    del everything["action"]
    denied(token, make_proof(token, **everything), Code.PROOF_EXPIRED)
    del everything["iat"]
    mismatch(token, make_proof(token, **everything), "argh")


def test_proof_is_checked_before_the_scope() -> None:
    token = bound_token()
    over = {"amount": 101, "to": "DE89"}
    mismatch(token, make_proof(token, args=ARGS), "argh", args=over)
    denied(token, make_proof(token, args=over), Code.ARGUMENT_DENIED, args=over)


def test_token_is_checked_before_the_proof() -> None:
    token = bound_token(iat=NOW - 400, nbf=NOW - 400, exp=NOW - 100)
    denied(token, make_proof(token), Code.EXPIRED)
    denied(token, "not a proof", Code.EXPIRED)


# -- the proof window -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        pytest.param(0, None, id="now"),
        pytest.param(-WINDOW, None, id="window-start"),
        pytest.param(-WINDOW - LEEWAY, None, id="window-start-with-leeway"),
        pytest.param(-WINDOW - LEEWAY - 1, Code.PROOF_EXPIRED, id="too-old-by-1s"),
        pytest.param(-3600, Code.PROOF_EXPIRED, id="an-hour-old"),
        pytest.param(LEEWAY, None, id="future-within-leeway"),
        pytest.param(LEEWAY + 1, Code.PROOF_EXPIRED, id="future-beyond-leeway"),
        pytest.param(86_400, Code.PROOF_EXPIRED, id="a-day-ahead"),
    ],
)
def test_proof_window_bounds(offset: int, code: Code | None) -> None:
    token = bound_token()
    proof = make_proof(token, iat=NOW + offset)
    if code is None:
        allowed(token, proof)
    else:
        denied(token, proof, code)


@pytest.mark.parametrize(
    ("offset", "ok"), [(-10, True), (-11, False), (0, True), (1, False)]
)
def test_proof_window_bounds_without_leeway(offset: int, ok: bool) -> None:
    token = bound_token()
    verifier = make_verifier(proof_window=10, leeway=0)
    proof = make_proof(token, iat=NOW + offset)
    if ok:
        allowed(token, proof, verifier=verifier)
    else:
        denied(token, proof, Code.PROOF_EXPIRED, verifier=verifier)


def test_proof_ages_out_at_the_same_verifier() -> None:
    token = bound_token()
    clock = [float(NOW)]
    verifier = make_verifier(clock=lambda: clock[0])
    proof = make_proof(token)
    clock[0] = NOW + WINDOW + LEEWAY
    allowed(token, proof, verifier=verifier)
    clock[0] = NOW + WINDOW + LEEWAY + 1
    denied(token, make_proof(token), Code.PROOF_EXPIRED, verifier=verifier)


# -- malformed proofs -------------------------------------------------------------------

TOKEN = bound_token()  # every malformed proof below is meant for this token


def _raw(header: Any, payload: Any, signer: Agent = AGENT) -> str:
    """Sign exactly these header / payload bytes (or values, written as compact JSON)."""
    hb = header if isinstance(header, bytes) else compact_json(header)
    pb = payload if isinstance(payload, bytes) else compact_json(payload)
    return sign_pop_raw(hb, pb, signer)


def _claims(**overrides: Any) -> dict[str, Any]:
    """Claims of a good proof for TOKEN, members replaced (``OMIT`` drops one)."""
    return _apply(pop_claims(TOKEN), overrides)


def _claims_json(**overrides: Any) -> bytes:
    return compact_json(_claims(**overrides))


def _replace(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data, (old, data)
    return data.replace(old, new, 1)


def _good() -> str:
    return make_proof(TOKEN)


GOOD = _good()  # one accepted proof (each test below gets a fresh verifier)


def _bit_flipped() -> str:
    h, p, s = segments(GOOD)
    sig = bytearray(base64url_bytes(s))
    sig[10] ^= 0x01
    return f"{h}.{p}.{b64url(bytes(sig))}"


def _swap_last_bits(segment: str) -> str:
    last = B64URL.index(segment[-1])
    assert last % 4 == 0  # canonical: unused bits are zero
    return segment[:-1] + B64URL[last + 1]


def _malleated(proof: str) -> str:
    h, p, s = segments(proof)
    sig = base64url_bytes(s)
    s_plus_l = int.from_bytes(sig[32:], "little") + ED25519_L
    return f"{h}.{p}.{b64url(sig[:32] + s_plus_l.to_bytes(32, 'little'))}"


def base64url_bytes(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _rsa_jwk() -> dict[str, str]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    n = numbers.public_numbers()
    return {"kty": "RSA", "n": b64url(n.n.to_bytes(256, "big")), "e": "AQAB"}


def _ec_jwk() -> dict[str, str]:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64url(pub.x.to_bytes(32, "big")),
            "y": b64url(pub.y.to_bytes(32, "big"))}


def _x25519_jwk() -> dict[str, str]:
    raw = x25519.X25519PrivateKey.generate().public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "X25519", "x": b64url(raw)}


def _hs256() -> str:
    h = b64url(compact_json(pop_header(alg="HS256")))
    p = b64url(_claims_json())
    mac = hmac.new(base64url_bytes(AGENT.x), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(mac)}"


def _other_proofs_signature() -> str:
    h, p, _ = segments(_good())
    _, _, s = segments(_good())  # another proof: another jti, so another signature
    return f"{h}.{p}.{s}"


def _oversized() -> str:
    proof = _raw(pop_header(), _claims_json() + b" " * 3200)
    assert len(proof) > 4096
    return proof


MALFORMED: list[Any] = [
    # structure and encoding
    pytest.param(lambda: "", id="empty"),
    pytest.param(lambda: ".".join(segments(GOOD)[:2]), id="two-segments"),
    pytest.param(lambda: f"{GOOD}.{segments(GOOD)[2]}", id="four-segments"),
    pytest.param(lambda: f"{GOOD}.", id="trailing-dot"),
    pytest.param(lambda: f"{GOOD}==", id="base64-padding"),
    pytest.param(lambda: _swap_last_bits(GOOD), id="base64-trailing-bits-signature"),
    pytest.param(lambda: ".".join([*segments(GOOD)[:2], "+" + segments(GOOD)[2][1:]]),
                 id="base64-standard-alphabet"),
    pytest.param(lambda: GOOD[:30] + "\n" + GOOD[30:], id="base64-newline"),
    pytest.param(lambda: GOOD[:30] + " " + GOOD[31:], id="base64-space"),
    pytest.param(lambda: GOOD[:30] + "\u00e9" + GOOD[31:], id="non-ascii"),
    pytest.param(lambda: GOOD[:30] + "\uff21" + GOOD[31:], id="non-ascii-fullwidth-A"),
    pytest.param(_oversized, id="oversized"),
    # header
    pytest.param(lambda: _raw(b"not json", _claims_json()), id="header-not-json"),
    pytest.param(lambda: _raw(b"[]", _claims_json()), id="header-array"),
    pytest.param(lambda: _raw(b"\xef\xbb\xbf" + compact_json(pop_header()), _claims_json()),
                 id="header-utf8-bom"),
    pytest.param(lambda: _raw(_replace(compact_json(pop_header()), b'{"alg":',
                                       b'{"alg":"none","alg":'), _claims_json()),
                 id="header-duplicate-alg"),
    pytest.param(lambda: _raw(_replace(compact_json(pop_header()), b'"typ":',
                                       b'"typ":"remit+jwt","typ":'), _claims_json()),
                 id="header-duplicate-typ"),
    pytest.param(lambda: _raw(_replace(compact_json(pop_header()), b'"jwk":',
                                       b'"jwk":' + compact_json(THIEF.jwk()) + b',"jwk":'),
                              _claims_json()),
                 id="header-duplicate-jwk"),
    pytest.param(lambda: _raw(pop_header(kid=AGENT.jkt), _claims()), id="header-extra-kid"),
    pytest.param(lambda: _raw(pop_header(crit=["exp"]), _claims()), id="header-extra-crit"),
    pytest.param(lambda: _raw(pop_header(jku="https://a.test/k"), _claims()),
                 id="header-extra-jku"),
    pytest.param(lambda: _raw(pop_header(b64=False), _claims()), id="header-extra-b64"),
    pytest.param(lambda: _raw(pop_header(alg=OMIT), _claims()), id="header-missing-alg"),
    pytest.param(lambda: _raw(pop_header(typ=OMIT), _claims()), id="header-missing-typ"),
    pytest.param(lambda: _raw(pop_header(jwk=OMIT), _claims()), id="header-missing-jwk"),
    # alg and typ
    pytest.param(lambda: f"{b64url(compact_json(pop_header(alg='none')))}"
                         f".{b64url(_claims_json())}.", id="alg-none-unsigned"),
    pytest.param(lambda: _raw(pop_header(alg="none"), _claims()), id="alg-none-signed"),
    pytest.param(_hs256, id="alg-hs256-keyed-with-x"),
    pytest.param(lambda: _raw(pop_header(alg="Ed25519"), _claims()), id="alg-ed25519"),
    pytest.param(lambda: _raw(pop_header(alg="eddsa"), _claims()), id="alg-lowercase"),
    pytest.param(lambda: _raw(pop_header(alg=None), _claims()), id="alg-null"),
    pytest.param(lambda: _raw(pop_header(typ="remit+jwt"), _claims()), id="typ-token"),
    pytest.param(lambda: _raw(pop_header(typ="JWT"), _claims()), id="typ-jwt"),
    pytest.param(lambda: _raw(pop_header(typ="dpop+jwt"), _claims()), id="typ-dpop"),
    pytest.param(lambda: _raw(pop_header(typ="REMIT-POP+JWT"), _claims()), id="typ-uppercase"),
    pytest.param(lambda: _raw(pop_header(typ="application/remit-pop+jwt"), _claims()),
                 id="typ-media-type"),
    # jwk
    pytest.param(lambda: _raw(pop_header(jwk=_rsa_jwk()), _claims()), id="jwk-rsa"),
    pytest.param(lambda: _raw(pop_header(jwk=_ec_jwk()), _claims()), id="jwk-ec-p256"),
    pytest.param(lambda: _raw(pop_header(jwk=_x25519_jwk()), _claims()), id="jwk-okp-x25519"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "crv": "Ed448"}), _claims()),
                 id="jwk-okp-ed448"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "kty": "EC"}), _claims()),
                 id="jwk-kty-ec-with-ed25519-x"),
    pytest.param(lambda: _raw(pop_header(jwk={
        **AGENT.jwk(), "d": b64url(AGENT.private.private_bytes_raw())}), _claims()),
                 id="jwk-with-private-d"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "kid": AGENT.jkt}), _claims()),
                 id="jwk-extra-kid"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "alg": "EdDSA"}), _claims()),
                 id="jwk-extra-alg"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "use": "sig"}), _claims()),
                 id="jwk-extra-use"),
    pytest.param(lambda: _raw(pop_header(jwk={"kty": "OKP", "crv": "Ed25519"}), _claims()),
                 id="jwk-missing-x"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "x": AGENT.x[:-2]}), _claims()),
                 id="jwk-x-short"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "x": _swap_last_bits(AGENT.x)}),
                              _claims()), id="jwk-x-non-canonical"),
    pytest.param(lambda: _raw(pop_header(jwk={**AGENT.jwk(), "x": 7}), _claims()),
                 id="jwk-x-int"),
    pytest.param(lambda: _raw(pop_header(jwk=json.dumps(AGENT.jwk())), _claims()),
                 id="jwk-as-string"),
    # signature
    pytest.param(_bit_flipped, id="signature-bit-flipped"),
    pytest.param(lambda: ".".join([*segments(GOOD)[:2], b64url(bytes(64))]),
                 id="signature-zero"),
    pytest.param(lambda: ".".join([*segments(GOOD)[:2], b64url(bytes(63))]),
                 id="signature-63-bytes"),
    pytest.param(lambda: ".".join([*segments(GOOD)[:2], ""]), id="signature-empty"),
    pytest.param(_other_proofs_signature, id="signature-of-another-proof"),
    pytest.param(lambda: _malleated(GOOD), id="signature-s-plus-l"),
    # claims: syntax
    pytest.param(lambda: _raw(pop_header(), b"not json"), id="claims-not-json"),
    pytest.param(lambda: _raw(pop_header(), b"[]"), id="claims-array"),
    pytest.param(lambda: _raw(pop_header(), b"null"), id="claims-null"),
    pytest.param(lambda: _raw(pop_header(), json.dumps(_claims()).encode("utf-16-le")),
                 id="claims-utf16"),
    pytest.param(lambda: _raw(pop_header(), _replace(_claims_json(), b'"aud":',
                                                     b'"aud":"email","aud":')),
                 id="claims-duplicate-aud"),
    pytest.param(lambda: _raw(pop_header(), _replace(_claims_json(), b'"jti":',
                                                     b'"jti":"proof-jti-dup-0001","jti":')),
                 id="claims-duplicate-jti"),
    pytest.param(lambda: _raw(pop_header(), _replace(_claims_json(), b'"iat":',
                                                     b'"iat":0,"iat":')),
                 id="claims-duplicate-iat"),
    # claims: set
    *(pytest.param(lambda name=name: _raw(pop_header(), _claims(**{name: OMIT})),
                   id=f"claims-missing-{name}")
      for name in ("jti", "iat", "ath", "aud", "action", "argh")),
    pytest.param(lambda: _raw(pop_header(), _claims(exp=NOW + 30)), id="claims-extra-exp"),
    pytest.param(lambda: _raw(pop_header(), _claims(htm="POST")), id="claims-extra-htm"),
    pytest.param(lambda: _raw(pop_header(), _claims(nonce=None)), id="claims-extra-null"),
    # claims: types and shapes
    pytest.param(lambda: _raw(pop_header(), _claims(jti=1234567890123456789)), id="jti-int"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="a" * 15)), id="jti-15-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="a" * 65)), id="jti-65-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof.jti.000001")), id="jti-dot"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof jti 000001")), id="jti-space"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof+jti/000001")),
                 id="jti-standard-base64"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof-jti-00001=")), id="jti-padding"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof-jti-000001\n")),
                 id="jti-trailing-newline"),
    pytest.param(lambda: _raw(pop_header(), _claims(jti="proof-jti-00000\u00e9")),
                 id="jti-non-ascii"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=str(NOW))), id="iat-string"),
    pytest.param(lambda: _raw(pop_header(), _replace(_claims_json(), f'"iat":{NOW}'.encode(),
                                                     f'"iat":{NOW}.0'.encode())),
                 id="iat-float-integral"),
    pytest.param(lambda: _raw(pop_header(), _replace(_claims_json(), f'"iat":{NOW}'.encode(),
                                                     b'"iat":1.7672256e9')),
                 id="iat-exponent"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=NOW + 0.5)), id="iat-float"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=True)), id="iat-bool"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=-1)), id="iat-negative"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=2**53)), id="iat-2-pow-53"),
    pytest.param(lambda: _raw(pop_header(), _claims(iat=None)), id="iat-null"),
    pytest.param(lambda: _raw(pop_header(), _claims(ath=sha256_b64(TOKEN.encode())[:42])),
                 id="ath-42-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(ath=sha256_b64(TOKEN.encode()) + "A")),
                 id="ath-44-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(ath=sha256_b64(TOKEN.encode()) + "=")),
                 id="ath-padded"),
    pytest.param(lambda: _raw(pop_header(), _claims(ath="+" + sha256_b64(TOKEN.encode())[1:])),
                 id="ath-standard-base64"),
    pytest.param(lambda: _raw(pop_header(), _claims(
        ath=hashlib.sha256(TOKEN.encode()).hexdigest())), id="ath-hex"),
    pytest.param(lambda: _raw(pop_header(), _claims(ath=None)), id="ath-null"),
    pytest.param(lambda: _raw(pop_header(), _claims(argh=argh(ARGS)[:42])), id="argh-42-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(argh=1)), id="argh-int"),
    pytest.param(lambda: _raw(pop_header(), _claims(aud=[AUDIENCE])), id="aud-list"),
    pytest.param(lambda: _raw(pop_header(), _claims(aud="")), id="aud-empty"),
    pytest.param(lambda: _raw(pop_header(), _claims(aud="a" * 257)), id="aud-257-chars"),
    pytest.param(lambda: _raw(pop_header(), _claims(action=None)), id="action-null"),
    pytest.param(lambda: _raw(pop_header(), _claims(action="")), id="action-empty"),
    pytest.param(lambda: _raw(pop_header(), _claims(action={"name": ACTION})),
                 id="action-object"),
]


@pytest.mark.parametrize("build", MALFORMED)
def test_malformed_proof(build: Callable[[], str]) -> None:
    denied(TOKEN, build(), Code.BAD_PROOF)


def test_malformed_proofs_are_malformed_only_in_the_way_they_say() -> None:
    """The builders above start from a proof that is accepted."""
    allowed(TOKEN, _good())
    allowed(TOKEN, _raw(pop_header(), _claims()))
    allowed(TOKEN, _raw(pop_header(), json.dumps(_claims(), indent=2).encode()))


def _sized(size: int) -> str:
    """A valid proof exactly ``size`` characters long (JSON whitespace as padding)."""
    for head in range(4):
        for body in range(4096):
            hb = compact_json(pop_header()) + b" " * head
            pb = _claims_json() + b" " * body
            if len(b64url(hb)) + len(b64url(pb)) + 2 + 86 == size:
                return _raw(hb, pb)
    raise AssertionError(size)


def test_proof_size_bound_is_4096_characters() -> None:
    exact = _sized(4096)
    assert len(exact) == 4096
    allowed(TOKEN, exact)
    over = _sized(4097)
    assert len(over) == 4097
    denied(TOKEN, over, Code.BAD_PROOF)


def test_capability_token_presented_as_proof() -> None:
    denied(TOKEN, TOKEN, Code.BAD_PROOF)
    other = bound_token()
    denied(TOKEN, other, Code.BAD_PROOF)


def test_proof_presented_as_token() -> None:
    proof = _good()
    with pytest.raises(Denied) as info:
        make_verifier().check(proof, action=ACTION, args=ARGS, proof=proof)
    assert info.value.code is Code.MALFORMED


@pytest.mark.parametrize(
    "proof",
    [
        pytest.param(lambda: _good().encode(), id="bytes"),
        pytest.param(lambda: bytearray(_good().encode()), id="bytearray"),
        pytest.param(lambda: memoryview(_good().encode()), id="memoryview"),
        pytest.param(lambda: 0, id="int-zero"),
        pytest.param(lambda: 1, id="int"),
        pytest.param(lambda: False, id="false"),
        pytest.param(lambda: [_good()], id="list"),
        pytest.param(lambda: {"proof": _good()}, id="dict"),
        pytest.param(lambda: type("S", (str,), {})(_good()), id="str-subclass"),
    ],
)
def test_proof_that_is_not_a_str(proof: Callable[[], Any]) -> None:
    denied(TOKEN, proof(), Code.BAD_PROOF)


def test_empty_string_proof_is_not_a_missing_proof() -> None:
    denied(TOKEN, "", Code.BAD_PROOF)


# -- unbound tokens ---------------------------------------------------------------------


def test_unbound_token_with_a_proof_is_allowed_and_the_proof_ignored() -> None:
    token = sign(claims(), KEY)
    verifier = make_verifier()
    proof = make_proof(token)
    allowed(token, proof, verifier=verifier)
    allowed(token, proof, verifier=verifier)  # not recorded, so not a replay
    allowed(token, "garbage", verifier=verifier)
    allowed(token, b"garbage", verifier=verifier)
    allowed(token, None, verifier=verifier)


# -- Redis down during the jti check ----------------------------------------------------


@pytest.mark.parametrize("revocation", ["off", "strict"])
def test_redis_down_during_the_jti_check(private_redis: PrivateRedis, revocation: str) -> None:
    gid = "g_redisdownjti0001"
    token = bound_token(gid=gid)
    private_redis.set_epoch()
    private_redis.seed_grant(gid)
    with make_verifier(redis=private_redis.url, replay="redis",
                       revocation=revocation) as verifier:
        allowed(token, make_proof(token), verifier=verifier)
        private_redis.stop()
        proof = make_proof(token)
        denied(token, proof, Code.REVOCATION_UNAVAILABLE, verifier=verifier)
        denied(token, make_proof(token), Code.REVOCATION_UNAVAILABLE, verifier=verifier)
        private_redis.start()
        private_redis.set_epoch()  # what the service does within a second of a restart
        private_redis.seed_grant(gid)  # a grant made after the restart (the old one is lost)
        # Recovers by itself; the proof refused while Redis was down was not used up.
        allowed(token, proof, verifier=verifier)
        denied(token, proof, Code.REPLAYED, verifier=verifier)
        allowed(token, make_proof(token), verifier=verifier)


# -- concurrency ------------------------------------------------------------------------

THREADS = 20


def _race(verifiers: list[remit.Verifier], token: str, proof: str) -> list[str]:
    """THREADS threads present ``proof`` at once, round-robin over ``verifiers``."""
    barrier = threading.Barrier(THREADS)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        barrier.wait()
        try:
            check(token, proof, verifier=verifiers[i % len(verifiers)])
            outcome = "allowed"
        except Denied as exc:
            outcome = exc.code.value
        except Exception as exc:  # reported in the assertion, never swallowed
            outcome = f"error: {exc!r}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(outcomes) == THREADS, outcomes
    return outcomes


def test_concurrent_replay_at_one_verifier_allows_exactly_one() -> None:
    token = bound_token()
    verifier = make_verifier(replay="local")
    check(token, make_proof(token), verifier=verifier)  # warm the token cache: a tight race
    for _ in range(5):
        outcomes = _race([verifier], token, make_proof(token))
        assert sorted(outcomes) == ["allowed"] + ["replayed"] * (THREADS - 1), outcomes


def test_concurrent_replay_across_two_verifiers_with_redis_allows_exactly_one(
    redis_verifiers: Callable[..., remit.Verifier],
) -> None:
    token = bound_token()
    verifiers = [redis_verifiers(), redis_verifiers()]
    for verifier in verifiers:
        check(token, make_proof(token), verifier=verifier)
    for _ in range(5):
        outcomes = _race(verifiers, token, make_proof(token))
        assert sorted(outcomes) == ["allowed"] + ["replayed"] * (THREADS - 1), outcomes


def test_backend_requiring_binding_refuses_a_bearer_token() -> None:
    """require_binding=True: a stolen *unbound* token is useless here too."""
    verifier = make_verifier(require_binding=True)
    bearer = sign(claims(), KEY)
    with pytest.raises(Denied) as exc:
        verifier.check(bearer, action=ACTION, args=ARGS)
    assert exc.value.code == Code.PROOF_REQUIRED
    token = bound_token()
    assert verifier.check(token, action=ACTION, args=ARGS, proof=make_proof(token)).allowed
