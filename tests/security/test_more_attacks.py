"""Attacks from issue 7 that test_token_attacks.py and test_proof_attacks.py did not pin.

Same rules as there: every call goes through ``remit.Verifier.check`` with a pinned
clock and revocation off, and ``pytest.raises(Denied)`` makes any other exception
(a ``RecursionError``, say) a failure too. Keys that must never load are checked for
``remit.KeyLoadError`` at construction. The grant-time checks go through a real
in-process service (gRPC on 127.0.0.1:0, real Redis) as well as the parser.
See tests/security/README.md for the whole table.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from remit import Code, Denied
from remit._constraints import parse_capabilities
from remit_service import KeyStore, Server, dev_config

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
    sign,
)

KEY = IssuerKey()
IBAN = "DE89 3704 0044 0532 0130 00"
API_KEY = "more-attacks-key"


def make_verifier(**overrides: Any) -> remit.Verifier:
    params: dict[str, Any] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "revocation": "off",
        "clock": lambda: NOW,
    }
    params.update(overrides)
    keys = params.pop("keys", KEY.jwks())
    return remit.Verifier(keys, **params)


def denied(token: str, code: Code, *, action: Any = ACTION, args: Any = ARGS,
           verifier: remit.Verifier | None = None, proof: Any = None) -> Denied:
    with pytest.raises(Denied) as info:
        (verifier or make_verifier()).check(token, action=action, args=args, proof=proof)
    assert info.value.code is code, info.value
    return info.value


def allowed(token: str, *, action: str = ACTION, args: Any = ARGS) -> None:
    assert make_verifier().check(token, action=action, args=args).allowed


def token_with(args: dict[str, Any], action: str = ACTION, **overrides: Any) -> str:
    """A valid token whose one capability is ``action`` with these argument constraints."""
    cap = {"type": "remit.capability", "action": action, "args": args}
    return sign(claims(authorization_details=[cap], **overrides), KEY)


# -- algorithm confusion: EdDSA with a P-256 key -------------------------------------------


def _p256() -> tuple[ec.EllipticCurvePrivateKey, dict[str, str]]:
    private = ec.generate_private_key(ec.SECP256R1())
    pub = private.public_key().public_numbers()
    jwk = {"kty": "EC", "crv": "P-256", "x": b64url(pub.x.to_bytes(32, "big")),
           "y": b64url(pub.y.to_bytes(32, "big"))}
    return private, jwk


def _ec_thumbprint(jwk: dict[str, str]) -> str:
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    return b64url(hashlib.sha256(json.dumps(members, separators=(",", ":"),
                                            sort_keys=True).encode()).digest())


P256_PRIVATE, P256_JWK = _p256()
P256_POINT = b"\x04" + b"".join(
    n.to_bytes(32, "big") for n in (P256_PRIVATE.public_key().public_numbers().x,
                                    P256_PRIVATE.public_key().public_numbers().y))


@pytest.mark.parametrize(
    "jwks",
    [
        pytest.param({"keys": [P256_JWK]}, id="ec-p256"),
        pytest.param({"keys": [{**P256_JWK, "alg": "EdDSA"}]}, id="ec-p256-claiming-eddsa"),
        pytest.param({"keys": [{**P256_JWK, "kid": KEY.kid}]}, id="ec-p256-under-our-kid"),
        pytest.param({"keys": [KEY.jwk(), P256_JWK]}, id="ec-p256-next-to-a-good-key"),
        pytest.param({"keys": [{**P256_JWK, "kty": "OKP"}]}, id="okp-with-p256-curve"),
        pytest.param({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": b64url(P256_POINT)}]},
                     id="okp-ed25519-holding-a-p256-point"),
        pytest.param({"keys": [{**KEY.jwk(), "alg": "ES256"}]}, id="ed25519-key-claiming-es256"),
    ],
)
def test_jwks_with_a_p256_key_is_refused_at_load(jwks: dict[str, Any], tmp_path: Path) -> None:
    """The whole key set is refused, never loaded with the bad entry skipped."""
    with pytest.raises(remit.KeyLoadError):
        make_verifier(keys=jwks)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks))
    with pytest.raises(remit.KeyLoadError):
        remit.Verifier.from_jwks(str(path), issuer=ISSUER, audience=AUDIENCE, revocation="off")


def _ecdsa_token(kid: str) -> str:
    """Header ``alg: EdDSA``, signed with ECDSA P-256 as JWS ES256 would (raw r || s)."""
    h = b64url(compact_json({"alg": "EdDSA", "typ": "remit+jwt", "kid": kid}))
    p = b64url(compact_json(claims()))
    der = P256_PRIVATE.sign(f"{h}.{p}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")  # 64 bytes, like Ed25519's
    return f"{h}.{p}.{b64url(signature)}"


def test_eddsa_header_over_an_ecdsa_p256_signature() -> None:
    # Under our kid: verified with our Ed25519 key, and it does not verify.
    denied(_ecdsa_token(KEY.kid), Code.BAD_SIGNATURE)
    # Under the P-256 key's own RFC 7638 thumbprint: no such key (none could be loaded).
    denied(_ecdsa_token(_ec_thumbprint(P256_JWK)), Code.UNKNOWN_KEY)


# -- kid tricks: duplicate keys in the JWKS --------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param([KEY.jwk(), KEY.jwk()], id="same-jwk-twice"),
        pytest.param([KEY.jwk(), {k: v for k, v in KEY.jwk().items() if k != "kid"}],
                     id="same-key-with-and-without-kid"),
        pytest.param([KEY.jwk(), {**KEY.jwk(), "use": "sig", "alg": "EdDSA", "key_ops": []}],
                     id="same-key-other-members"),
    ],
)
def test_jwks_with_the_same_key_twice_is_refused(keys: list[dict[str, Any]]) -> None:
    with pytest.raises(remit.KeyLoadError, match="duplicate"):
        make_verifier(keys={"keys": keys})


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"keys":[%(attacker)s],"keys":[%(ours)s]}', id="keys-member-twice"),
        pytest.param('{"keys":[%(ours)s],"keys":[%(attacker)s]}', id="keys-member-twice-reversed"),
        pytest.param('{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%(attacker_x)s",'
                     '"x":"%(ours_x)s"}]}', id="x-member-twice"),
        pytest.param('{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%(ours_x)s",'
                     '"kid":"%(attacker_kid)s","kid":"%(ours_kid)s"}]}', id="kid-member-twice"),
    ],
)
def test_jwks_file_with_duplicate_json_members_is_refused(text: str, tmp_path: Path) -> None:
    """A lenient JSON reader keeps the last member; which one wins must never matter."""
    attacker = IssuerKey()
    path = tmp_path / "jwks.json"
    path.write_text(text % {
        "ours": json.dumps(KEY.jwk()), "attacker": json.dumps(attacker.jwk()),
        "ours_x": KEY.jwk()["x"], "attacker_x": attacker.jwk()["x"],
        "ours_kid": KEY.kid, "attacker_kid": attacker.kid,
    })
    with pytest.raises(remit.KeyLoadError, match="duplicate"):
        remit.Verifier.from_jwks(str(path), issuer=ISSUER, audience=AUDIENCE, revocation="off")


# -- typ swapping: an OAuth access token presented as a capability token -------------------


def _rfc9068_claims() -> dict[str, Any]:
    return {"iss": ISSUER, "exp": NOW + 300, "aud": AUDIENCE, "sub": "user:alice",
            "client_id": "agent:a", "iat": NOW, "jti": "access-token-0001",
            "scope": "payments.transfer"}


@pytest.mark.parametrize(
    ("typ", "body"),
    [
        pytest.param("at+jwt", _rfc9068_claims, id="at+jwt-rfc9068-claims"),
        pytest.param("application/at+jwt", _rfc9068_claims, id="media-type-rfc9068-claims"),
        pytest.param("at+jwt", claims, id="at+jwt-remit-claims"),
        pytest.param("remit+jwt", _rfc9068_claims, id="remit-typ-rfc9068-claims"),
    ],
)
def test_oauth_access_token_presented_as_capability_token(
    typ: str, body: Callable[[], dict[str, Any]]
) -> None:
    """Same issuer, same key, valid signature: still not a capability token."""
    denied(sign(body(), KEY, {"typ": typ}), Code.MALFORMED)


# -- Unicode confusables in action names ---------------------------------------------------

CONFUSABLE_ACTIONS = [
    pytest.param("p\u0430yments.transfer", id="cyrillic-a"),
    pytest.param("payments.transf\u0435r", id="cyrillic-ie"),
    pytest.param("payments.tran\u0455fer", id="cyrillic-dze"),
    pytest.param("\uff50ayments.transfer", id="fullwidth-p"),
    pytest.param("payments\u2024transfer", id="one-dot-leader"),
    pytest.param("payments\uff0etransfer", id="fullwidth-full-stop"),
    pytest.param("payments.transfer\u200b", id="zero-width-space"),
    pytest.param("payments.trans\u017fer", id="long-s"),
]


@pytest.mark.parametrize("action", CONFUSABLE_ACTIONS)
@pytest.mark.parametrize("granted", [ACTION, "payments.*"])
def test_confusable_action_name_at_call_time(action: str, granted: str) -> None:
    args = {"*": {"any": True}}
    denied(token_with(args, granted), Code.INVALID_REQUEST, action=action, args={})


@pytest.mark.parametrize("action", CONFUSABLE_ACTIONS)
def test_confusable_action_name_in_a_token_capability(action: str) -> None:
    denied(token_with({"*": {"any": True}}, action), Code.MALFORMED, action=ACTION, args={})


@pytest.mark.parametrize("action", CONFUSABLE_ACTIONS)
def test_confusable_action_name_at_grant_time_in_the_parser(action: str) -> None:
    with pytest.raises(remit.ConstraintError) as info:
        parse_capabilities([{"action": action, "args": {}}], "capabilities")
    assert info.value.path == "capabilities[0].action"


@pytest.fixture
def app_client(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[remit.Client]:
    cfg = dev_config(data_dir=tmp_path, redis=redis_url, api_key=API_KEY,
                     grpc_port=0, http_port=0, prefix=redis_prefix)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    try:
        with remit.Client(server.grpc_target, api_key=API_KEY) as client:
            yield client
    finally:
        server.stop(grace=0)


def _keys_under(client: redis.Redis, prefix: str) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{prefix}*", count=1000))


def test_confusable_action_name_at_grant_time_over_grpc(
    app_client: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    """INVALID_ARGUMENT naming the field, nothing written; mint refuses it the same way."""
    real = [{"action": ACTION, "args": {"to": {"eq": IBAN}}}]
    grant = app_client.create_grant(subject="user:alice", agent="agent:a",
                                    audience=[AUDIENCE], capabilities=real)
    before = _keys_under(redis_client, redis_prefix)
    for action in ("p\u0430yments.transfer", "payments.transf\u0435r", "\uff50ayments.transfer"):
        fake = [{"action": action, "args": {"to": {"eq": IBAN}}}]
        with pytest.raises(remit.InvalidArgument) as info:
            app_client.create_grant(subject="user:alice", agent="agent:a",
                                    audience=[AUDIENCE], capabilities=fake)
        assert info.value.field == "capabilities[0].action"
        with pytest.raises(remit.InvalidArgument) as info:
            app_client.mint(grant.id, capabilities=fake)
        assert info.value.field == "capabilities[0].action"
    assert _keys_under(redis_client, redis_prefix) == before


# -- Unicode confusables in argument names and values ----------------------------------------


@pytest.mark.parametrize(
    "name",
    [pytest.param("t\u043e", id="cyrillic-o"), pytest.param("\uff54o", id="fullwidth-t"),
     pytest.param("to\u200b", id="zero-width-space"), pytest.param("TO", id="uppercase")],
)
def test_confusable_argument_name(name: str) -> None:
    """Closed world: a look-alike name is another argument, which no constraint names."""
    denied(sign(claims(), KEY), Code.UNEXPECTED_ARGUMENT, args={"amount": 50, name: "DE89"})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(IBAN.replace("E", "\u0415"), id="cyrillic-ie-for-E"),
        pytest.param(IBAN.replace("D", "\u13a0"), id="cherokee-a-for-D"),
        pytest.param(IBAN.replace("0", "\u041e", 1), id="cyrillic-o-for-zero"),
        pytest.param(IBAN.replace("DE", "\uff24\uff25"), id="fullwidth-letters"),
        pytest.param(IBAN.replace("89", "\u0668\u0669"), id="arabic-indic-digits"),
        pytest.param(IBAN.replace("89", "\U0001d7d6\U0001d7d7"), id="mathematical-digits"),
        pytest.param(IBAN.replace(" ", "\u00a0"), id="no-break-spaces"),
        pytest.param(IBAN.replace(" ", "\u2009"), id="thin-spaces"),
        pytest.param(IBAN + "\u200b", id="trailing-zero-width-space"),
        pytest.param("\u202e" + IBAN, id="right-to-left-override"),
    ],
)
def test_confusable_argument_value_against_eq(value: str) -> None:
    token = token_with({"amount": {"le": 100}, "to": {"eq": IBAN}})
    allowed(token, args={"amount": 50, "to": IBAN})
    denied(token, Code.ARGUMENT_DENIED, args={"amount": 50, "to": value})


@pytest.mark.parametrize(
    "constraint",
    [{"in": [IBAN]}, {"prefix": "DE89 "}, {"glob": "DE89 *"}],
    ids=["in", "prefix", "glob"],
)
def test_confusable_argument_value_against_in_prefix_and_glob(constraint: dict[str, Any]) -> None:
    token = token_with({"to": constraint})
    allowed(token, args={"to": IBAN})
    denied(token, Code.ARGUMENT_DENIED, args={"to": IBAN.replace("E", "\u0415")})


def test_unicode_normalization_forms_are_different_values() -> None:
    """No normalization: NFC and NFD spellings of one name are two strings; the token
    allows exactly the code points it names."""
    nfc, nfd = "Jos\u00e9", "Jose\u0301"
    token = token_with({"payee": {"eq": nfc}})
    allowed(token, args={"payee": nfc})
    denied(token, Code.ARGUMENT_DENIED, args={"payee": nfd})
    token = token_with({"payee": {"eq": nfd}})
    denied(token, Code.ARGUMENT_DENIED, args={"payee": nfc})


# -- deep nesting in arguments -------------------------------------------------------------


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


DEEP = [pytest.param(_deep_list, id="list"), pytest.param(_deep_dict, id="object")]


@pytest.mark.parametrize("make", DEEP)
def test_deeply_nested_argument_value(make: Callable[[int], Any]) -> None:
    """A 100,000-deep value: a decision in bounded time, never a RecursionError."""
    deep = make(100_000)
    token = token_with({"amount": {"le": 100}, "to": {"eq": IBAN},
                        "memo": {"not_in": [["x"]], "optional": True},
                        "tags": {"eq": [[["a"]]], "optional": True}})
    verifier = make_verifier()
    start = time.perf_counter()
    for name in ("amount", "to", "tags"):
        args = {"amount": 50, "to": IBAN, name: deep}
        denied(token, Code.ARGUMENT_DENIED, args=args, verifier=verifier)
    # not_in allows any JSON value outside its list, however deep (checked iteratively).
    assert verifier.check(token, action=ACTION, args={"amount": 50, "to": IBAN, "memo": deep})
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("make", DEEP)
def test_deeply_nested_argument_value_with_a_key_bound_token(make: Callable[[int], Any]) -> None:
    """The proof's argument hash cannot be computed for it: a proof mismatch, not a crash."""
    agent = remit.agent.AgentKey.generate()
    token = sign(claims(cnf={"jkt": agent.thumbprint},
                        authorization_details=[{"type": "remit.capability", "action": ACTION,
                                                "args": {"*": {"any": True}}}]), KEY)
    proof = remit.agent.proof(agent, token, audience=AUDIENCE, action=ACTION,
                              args={"v": 1}, clock=lambda: NOW)
    exc = denied(token, Code.PROOF_MISMATCH, args={"v": make(100_000)}, proof=proof)
    assert exc.message.startswith("argh:"), exc

