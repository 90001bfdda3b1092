"""Attacks on the token format: each is denied by remit.Verifier with one exact code.

Every check goes through ``Verifier.check`` with a pinned clock and revocation off;
``pytest.raises(Denied)`` makes any other exception a failure too. Tokens that must
be validly signed but malformed are built with ``sign_raw`` (see tests/tokens.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import remit
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from remit import Code, Denied

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
    default_header,
    sign,
    sign_raw,
)

KEY = IssuerKey()
OTHER = IssuerKey()  # not in the verifier's key set
ED25519_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point


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


def check(
    token: Any,
    *,
    verifier: remit.Verifier | None = None,
    action: Any = ACTION,
    args: Any = ARGS,
) -> remit.Decision:
    return (verifier or make_verifier()).check(token, action=action, args=args)


def denied(token: Any, code: Code, **kwargs: Any) -> Denied:
    with pytest.raises(Denied) as info:
        check(token, **kwargs)
    assert info.value.code is code, info.value
    return info.value


def allowed(token: Any, **kwargs: Any) -> remit.Decision:
    decision = check(token, **kwargs)
    assert decision.allowed
    return decision


def segments(token: str) -> list[str]:
    parts = token.split(".")
    assert len(parts) == 3
    return parts


def valid(**overrides: Any) -> str:
    return sign(claims(**overrides), KEY)


def signed_payload(payload: bytes, key: IssuerKey = KEY) -> str:
    """A token whose header is right and whose payload bytes are exactly ``payload``."""
    return sign_raw(compact_json(default_header(key)), payload, key)


def signed_header(header: bytes, key: IssuerKey = KEY) -> str:
    return sign_raw(header, compact_json(claims()), key)


def hs256_token(secret: bytes) -> str:
    h = b64url(compact_json({"alg": "HS256", "typ": "remit+jwt", "kid": KEY.kid}))
    p = b64url(compact_json(claims()))
    mac = hmac.new(secret, f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(mac)}"


# -- baseline ---------------------------------------------------------------------------


def test_valid_token_is_allowed() -> None:
    decision = allowed(valid())
    assert (decision.action, decision.audience, decision.subject, decision.agent) == (
        ACTION,
        AUDIENCE,
        "user:alice",
        "agent:a",
    )


# -- algorithm confusion ------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_unsigned_empty_signature(alg: str) -> None:
    h = b64url(compact_json({"alg": alg, "typ": "remit+jwt", "kid": KEY.kid}))
    p = b64url(compact_json(claims()))
    denied(f"{h}.{p}.", Code.MALFORMED)


def test_alg_none_with_a_valid_ed25519_signature() -> None:
    denied(sign(claims(), KEY, {"alg": "none"}), Code.MALFORMED)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(KEY.raw_public, id="raw-32-byte-public-key"),
        pytest.param(b64url(KEY.raw_public).encode(), id="jwk-x-string"),
        pytest.param(KEY.private.public_key().public_bytes(
            Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), id="pem-public-key"),
        pytest.param(json.dumps(KEY.jwk()).encode(), id="jwk-json"),
    ],
)
def test_alg_hs256_hmac_keyed_with_the_public_key(secret: bytes) -> None:
    denied(hs256_token(secret), Code.MALFORMED)


def test_alg_es256_header_with_a_real_es256_signature() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims(), ec_key, algorithm="ES256",
                       headers={"typ": "remit+jwt", "kid": KEY.kid})
    assert len(base64.urlsafe_b64decode(segments(token)[2] + "==")) == 64  # same size as EdDSA
    denied(token, Code.MALFORMED)


def test_alg_rs256_header_with_a_real_rs256_signature() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), rsa_key, algorithm="RS256",
                       headers={"typ": "remit+jwt", "kid": KEY.kid})
    denied(token, Code.MALFORMED)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "HS512", "Ed25519", "eddsa",
                                 "EDDSA", "EdDSA ", "ES256K", ""])
def test_alg_other_than_eddsa_with_an_ed25519_signature(alg: str) -> None:
    denied(sign(claims(), KEY, {"alg": alg}), Code.MALFORMED)


@pytest.mark.parametrize("alg", [OMIT, None, ["EdDSA"], {"name": "EdDSA"}, 1])
def test_alg_missing_or_not_a_string(alg: Any) -> None:
    denied(sign(claims(), KEY, {"alg": alg}), Code.MALFORMED)


# -- typ ----------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["JWT", "remit-pop+jwt", "application/remit+jwt", "jwt", "",
                                 "at+jwt", None, ["remit+jwt"]])
def test_wrong_typ(typ: Any) -> None:
    denied(sign(claims(), KEY, {"typ": typ}), Code.MALFORMED)


def test_typ_missing() -> None:
    denied(sign(claims(), KEY, {"typ": OMIT}), Code.MALFORMED)


@pytest.mark.parametrize("typ", ["REMIT+JWT", "Remit+JWT", "remit+JWT"])
def test_typ_case_variant(typ: str) -> None:
    denied(sign(claims(), KEY, {"typ": typ}), Code.MALFORMED)


# -- kid ----------------------------------------------------------------------------------


def test_unknown_kid() -> None:
    denied(sign(claims(), OTHER), Code.UNKNOWN_KEY)


def test_missing_kid() -> None:
    denied(sign(claims(), KEY, {"kid": OMIT}), Code.MALFORMED)


@pytest.mark.parametrize("kid", ["../../etc/passwd", "/dev/null", "file:///etc/passwd",
                                 "..%2f..%2fetc%2fpasswd"])
def test_kid_path_traversal(kid: str) -> None:
    denied(sign(claims(), KEY, {"kid": kid}), Code.UNKNOWN_KEY)


@pytest.mark.parametrize("kid", ["' OR '1'='1", "x'; DROP TABLE keys; --", "* ", "\u0000"])
def test_kid_sql_injection(kid: str) -> None:
    denied(sign(claims(), KEY, {"kid": kid}), Code.UNKNOWN_KEY)


@pytest.mark.parametrize("kid", [None, 1, [KEY.kid], {"kid": KEY.kid}, "", "k" * 257])
def test_kid_not_a_short_non_empty_string(kid: Any) -> None:
    denied(sign(claims(), KEY, {"kid": kid}), Code.MALFORMED)


def test_kid_of_another_trusted_key_with_this_keys_signature() -> None:
    both = {"keys": [KEY.jwk(), OTHER.jwk()]}
    token = sign(claims(), KEY, {"kid": OTHER.kid})
    denied(token, Code.BAD_SIGNATURE, verifier=make_verifier(keys=both))


# -- header parameters that would take a key or processing rule from the token ------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.test/jwks.json"),
        ("jwk", OTHER.jwk()),
        ("x5u", "https://attacker.test/cert.pem"),
        ("x5c", ["MIIBszCCAVmgAwIBAgIU"]),
        ("x5t", "aGVsbG8"),
        ("x5t#S256", "aGVsbG8"),
        ("crit", ["exp"]),
        ("b64", False),
        ("zip", "DEF"),
    ],
)
def test_forbidden_header_parameter(name: str, value: Any) -> None:
    # Signed by the key the header points at (jwk/jku attacks), and by the real key.
    denied(sign(claims(), OTHER, {name: value, "kid": KEY.kid}), Code.MALFORMED)
    denied(sign(claims(), KEY, {name: value}), Code.MALFORMED)


@pytest.mark.parametrize(("name", "value"), [("foo", "bar"), ("cty", "JWT"), ("enc", "A256GCM"),
                                             ("iss", ISSUER), ("nonce", "n")])
def test_extra_unknown_header_parameter(name: str, value: Any) -> None:
    denied(sign(claims(), KEY, {name: value}), Code.MALFORMED)


@pytest.mark.parametrize(
    "header",
    [
        '{"alg":"none","alg":"EdDSA","typ":"remit+jwt","kid":"%s"}',
        '{"alg":"EdDSA","typ":"remit+jwt","kid":"%s","alg":"EdDSA"}',
        '{"alg":"EdDSA","typ":"JWT","typ":"remit+jwt","kid":"%s"}',
        '{"alg":"EdDSA","typ":"remit+jwt","kid":"%s","kid":"other"}',
        '{"alg":"EdDSA","typ":"remit+jwt","kid":"%s","a\\u006cg":"none"}',
    ],
    ids=["alg-twice", "alg-twice-same", "typ-twice", "kid-twice", "alg-escaped-duplicate"],
)
def test_duplicate_keys_in_header(header: str) -> None:
    denied(signed_header((header % KEY.kid).encode()), Code.MALFORMED)


# -- time ---------------------------------------------------------------------------------


def test_expired() -> None:
    denied(valid(iat=NOW - 360, nbf=NOW - 360, exp=NOW - 60), Code.EXPIRED)


def test_expired_within_leeway_is_accepted() -> None:
    allowed(valid(iat=NOW - 300, nbf=NOW - 300, exp=NOW - 4))


def test_expired_at_exactly_the_leeway_bound() -> None:
    denied(valid(iat=NOW - 300, nbf=NOW - 300, exp=NOW - 5), Code.EXPIRED)


def test_not_yet_valid_nbf_in_the_future() -> None:
    denied(valid(nbf=NOW + 60), Code.NOT_YET_VALID)


def test_nbf_in_the_future_within_leeway_is_accepted() -> None:
    allowed(valid(nbf=NOW + 5))


def test_iat_in_the_future() -> None:
    denied(valid(iat=NOW + 60, nbf=NOW + 60, exp=NOW + 360), Code.NOT_YET_VALID)


def test_cached_token_is_denied_once_the_clock_passes_exp() -> None:
    now = [float(NOW)]
    verifier = make_verifier(clock=lambda: now[0])
    token = valid()
    allowed(token, verifier=verifier)
    now[0] = NOW + 300 + 5
    denied(token, Code.EXPIRED, verifier=verifier)
    now[0] = NOW  # clocks do step back; the evicted token verifies again from scratch
    allowed(token, verifier=verifier)


def test_lifetime_above_the_verifiers_max_ttl() -> None:
    verifier = make_verifier(max_ttl=600)
    denied(valid(exp=NOW + 601), Code.MALFORMED, verifier=verifier)
    allowed(valid(exp=NOW + 600), verifier=verifier)


def test_lifetime_above_the_default_max_ttl_of_a_day() -> None:
    denied(valid(exp=NOW + 24 * 3600 + 1), Code.MALFORMED)


@pytest.mark.parametrize("exp", [2**63, 2**64, 2**53, 10**30])
def test_exp_huge(exp: int) -> None:
    denied(valid(exp=exp), Code.MALFORMED)


@pytest.mark.parametrize("iat", [-1, -(2**63)])
def test_negative_iat(iat: int) -> None:
    denied(valid(iat=iat), Code.MALFORMED)


@pytest.mark.parametrize(
    "times",
    [
        {"exp": NOW},  # exp == nbf: an empty window
        {"exp": NOW - 1},
        {"nbf": NOW - 1},  # nbf before iat
    ],
    ids=["exp-equals-nbf", "exp-before-nbf", "nbf-before-iat"],
)
def test_inconsistent_time_claims(times: dict[str, int]) -> None:
    denied(valid(**times), Code.MALFORMED)


# -- audience and issuer ------------------------------------------------------------------


def test_wrong_audience() -> None:
    denied(valid(aud=["email"]), Code.WRONG_AUDIENCE)


@pytest.mark.parametrize("aud", ["Payments", "payments ", "payment", "payments.evil", "*"])
def test_audience_lookalike(aud: str) -> None:
    denied(valid(aud=[aud]), Code.WRONG_AUDIENCE)


def test_aud_as_string_is_accepted_when_it_matches() -> None:
    allowed(valid(aud=AUDIENCE))


def test_aud_as_string_that_does_not_match() -> None:
    denied(valid(aud="email"), Code.WRONG_AUDIENCE)


def test_aud_list_naming_this_audience_among_others_is_accepted() -> None:
    allowed(valid(aud=["email", AUDIENCE]))


@pytest.mark.parametrize("iss", ["https://evil.test", "https://issuer.test/",
                                 "HTTPS://ISSUER.TEST", "https://issuer.test.evil.test"])
def test_wrong_issuer(iss: str) -> None:
    denied(valid(iss=iss), Code.WRONG_ISSUER)


# -- signature ----------------------------------------------------------------------------


def test_tampered_payload_amount_bound_raised() -> None:
    h, _, s = segments(valid())
    c = claims()
    c["authorization_details"][0]["args"]["amount"] = {"le": 1_000_000}
    token = f"{h}.{b64url(compact_json(c))}.{s}"
    denied(token, Code.BAD_SIGNATURE, args={"amount": 999_999, "to": "DE89"})


def test_tampered_payload_same_claims_reserialized() -> None:
    token = valid()
    h, p, s = segments(token)
    c = json.loads(base64.urlsafe_b64decode(p + "=="))
    reserialized = b64url(json.dumps(c, indent=1).encode())  # same claims, other bytes
    denied(f"{h}.{reserialized}.{s}", Code.BAD_SIGNATURE)


def test_signature_from_another_token_spliced_on() -> None:
    h, p, _ = segments(valid())
    _, _, s = segments(valid())
    denied(f"{h}.{p}.{s}", Code.BAD_SIGNATURE)


def test_signature_by_a_different_key_under_the_right_kid() -> None:
    denied(sign(claims(), OTHER, {"kid": KEY.kid}), Code.BAD_SIGNATURE)


def test_signature_malleability_s_plus_group_order() -> None:
    h, p, s = segments(valid())
    sig = base64.urlsafe_b64decode(s + "==")
    s_int = int.from_bytes(sig[32:], "little") + ED25519_L
    forged = sig[:32] + s_int.to_bytes(32, "little")
    denied(f"{h}.{p}.{b64url(forged)}", Code.BAD_SIGNATURE)


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_signature_constant_bytes(fill: int) -> None:
    h, p, _ = segments(valid())
    denied(f"{h}.{p}.{b64url(bytes([fill]) * 64)}", Code.BAD_SIGNATURE)


def test_signature_with_one_bit_flipped() -> None:
    h, p, s = segments(valid())
    sig = bytearray(base64.urlsafe_b64decode(s + "=="))
    sig[10] ^= 0x01
    denied(f"{h}.{p}.{b64url(bytes(sig))}", Code.BAD_SIGNATURE)


@pytest.mark.parametrize("size", [0, 32, 63, 65, 128])
def test_signature_of_the_wrong_length(size: int) -> None:
    h, p, _ = segments(valid())
    denied(f"{h}.{p}.{b64url(bytes(size))}", Code.MALFORMED)


def test_no_single_character_mutation_of_a_valid_token_is_accepted() -> None:
    token = valid()
    verifier = make_verifier()
    allowed(token, verifier=verifier)
    codes: set[Code] = set()
    for i in range(len(token)):
        for c in "A_-.=+/é":
            mutated = token[:i] + c + token[i + 1 :]
            if mutated == token:
                continue
            with pytest.raises(Denied) as info:
                verifier.check(mutated, action=ACTION, args=ARGS)
            codes.add(info.value.code)
    assert codes <= {Code.MALFORMED, Code.BAD_SIGNATURE, Code.UNKNOWN_KEY}, codes


# -- structure ----------------------------------------------------------------------------


def test_truncated_token_at_every_length() -> None:
    token = valid()
    verifier = make_verifier()
    for n in range(len(token)):
        denied(token[:n], Code.MALFORMED, verifier=verifier)


def test_token_with_two_segments() -> None:
    h, p, _ = segments(valid())
    denied(f"{h}.{p}", Code.MALFORMED)


def test_token_with_four_segments() -> None:
    h, p, s = segments(valid())
    denied(f"{h}.{p}.{s}.{s}", Code.MALFORMED)
    denied(f"{h}.{p}..{s}", Code.MALFORMED)


def test_token_with_five_segments_jwe_shape() -> None:
    h, p, s = segments(valid())
    denied(f"{h}..{p}.{s}.{s}", Code.MALFORMED)


@pytest.mark.parametrize("token", ["", ".", "..", "...", " ", "null", "{}"])
def test_degenerate_strings(token: str) -> None:
    denied(token, Code.MALFORMED)


def test_one_megabyte_token_is_denied_fast() -> None:
    h, p, s = segments(valid())
    huge = [
        "A" * 1024 * 1024,
        f"{h}.{p}{'A' * 1024 * 1024}.{s}",
        ".".join([h, p, s] * 1_600),  # ~1 MB of well-formed segments
    ]
    for token in huge:
        start = time.perf_counter()
        denied(token, Code.MALFORMED)
        assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("payload", [b"not json", b"", b"{", b'{"iss":}', b"\x00", b"{}}"])
def test_non_json_payload(payload: bytes) -> None:
    denied(signed_payload(payload), Code.MALFORMED)


@pytest.mark.parametrize("header", [b"not json", b"", b"{", b'{"alg":"EdDSA",}', b"\xff"])
def test_non_json_header(header: bytes) -> None:
    denied(signed_header(header), Code.MALFORMED)


@pytest.mark.parametrize("value", [[], ["EdDSA"], "EdDSA", 1, None, True])
def test_header_is_not_a_json_object(value: Any) -> None:
    denied(signed_header(compact_json(value)), Code.MALFORMED)


@pytest.mark.parametrize("value", [[], [claims()], "claims", 1, None, False])
def test_claims_are_not_a_json_object(value: Any) -> None:
    denied(signed_payload(compact_json(value)), Code.MALFORMED)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xef\xbb\xbf" + compact_json(claims()),
        json.dumps(claims()).encode("utf-16-le"),
        json.dumps(claims()).encode("utf-16"),
        json.dumps(claims()).encode("utf-32"),
        compact_json(claims(purpose="x")).replace(b'"x"', b'"\xed\xa0\x80"'),  # CESU surrogate
        compact_json(claims(purpose="x")).replace(b'"x"', b'"\xff"'),
    ],
    ids=["utf8-bom", "utf16-le", "utf16-bom", "utf32", "encoded-surrogate", "invalid-utf8"],
)
def test_claims_not_in_utf8(payload: bytes) -> None:
    denied(signed_payload(payload), Code.MALFORMED)


# -- non-canonical base64url ----------------------------------------------------------------


def _token_with(chars: str) -> str:
    for _ in range(200):
        token = valid()
        if any(c in token for c in chars):
            return token
    raise AssertionError(f"no token with any of {chars!r}")  # pragma: no cover


def test_base64_padding() -> None:
    h, p, s = segments(valid())
    assert len(s) % 4 == 2
    denied(f"{h}.{p}.{s}==", Code.MALFORMED)
    if len(h) % 4:
        denied(f"{h}{'=' * (4 - len(h) % 4)}.{p}.{s}", Code.MALFORMED)
    if len(p) % 4:
        denied(f"{h}.{p}{'=' * (4 - len(p) % 4)}.{s}", Code.MALFORMED)


def test_base64_standard_alphabet_plus_and_slash() -> None:
    token = _token_with("-_")
    denied(token.replace("-", "+").replace("_", "/"), Code.MALFORMED)


def test_base64_non_zero_trailing_bits() -> None:
    h, p, s = segments(valid())
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(s[-1])
    assert last % 16 == 0  # 86 characters: the last carries 2 bits and 4 zero bits
    for bits in (1, 2, 4, 8, 15):
        forged = s[:-1] + alphabet[last + bits]
        assert base64.urlsafe_b64decode(forged + "==") == base64.urlsafe_b64decode(s + "==")
        denied(f"{h}.{p}.{forged}", Code.MALFORMED)


@pytest.mark.parametrize("junk", [" ", "\n", "\t", "\r\n", "*", "!"])
def test_base64_with_embedded_junk(junk: str) -> None:
    h, p, s = segments(valid())
    denied(f"{h}.{p[:8]}{junk}{p[8:]}.{s}", Code.MALFORMED)
    denied(f"{h}.{p}.{s[:8]}{junk}{s[8:]}", Code.MALFORMED)


@pytest.mark.parametrize("suffix", ["A", "AAAA", "AA==", ".", ". ", " ", "\n", "\x00", ".e30"])
def test_trailing_data_after_signature(suffix: str) -> None:
    denied(valid() + suffix, Code.MALFORMED)


@pytest.mark.parametrize("prefix", [" ", "\n", "Bearer ", "\ufeff"])
def test_leading_data_before_header(prefix: str) -> None:
    denied(prefix + valid(), Code.MALFORMED)


@pytest.mark.parametrize("char", ["é", "\u0410", "\uff0e", "\u2024", "\u00a0", "\U0001f600"])
def test_non_ascii_in_token(char: str) -> None:
    token = valid()
    denied(token[:20] + char + token[21:], Code.MALFORMED)
    denied(token.replace(".", char, 1), Code.MALFORMED)


# -- claims ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("iat", "123"),
        ("iat", 1.5),
        ("iat", float(NOW)),
        ("nbf", None),
        ("exp", True),
        ("exp", [NOW + 300]),
        ("aud", 7),
        ("aud", []),
        ("aud", [7]),
        ("aud", [""]),
        ("aud", {"aud": AUDIENCE}),
        ("aud", [AUDIENCE] * 33),
        ("act", "agent:a"),
        ("act", {}),
        ("act", {"sub": 1}),
        ("act", {"sub": ""}),
        ("act", {"sub": "agent:a", "act": {"sub": "agent:b"}}),
        ("anc", [f"ancestor{i:02d}" for i in range(9)]),
        ("anc", "ancestor01"),
        ("anc", ["bad id!!"]),
        ("jti", "abc{def}gh"),
        ("jti", "abc def gh"),
        ("jti", "short"),
        ("jti", "j" * 65),
        ("jti", "abcdefgh\n"),
        ("jti", 12345678),
        ("gid", ""),
        ("gid", None),
        ("gid", "../../../x"),
        ("iss", ""),
        ("iss", 5),
        ("sub", ""),
        ("sub", None),
        ("sub", "s" * 257),
        ("purpose", 5),
        ("purpose", "p" * 1025),
        ("authorization_details", []),
        ("authorization_details", {}),
        ("authorization_details", [{"type": "remit.capability", "action": "Payments.Transfer"}]),
        ("authorization_details", [{"action": ACTION, "args": {}}]),
        ("authorization_details", [{"type": "remit.capability", "action": ACTION, "x": 1}]),
        ("authorization_details", [{"type": "remit.capability", "action": ACTION,
                                    "args": {"amount": {"between": [1, 2]}}}]),
        ("authorization_details", [{"type": "remit.capability", "action": ACTION,
                                    "args": {"amount": {}}}]),
        ("cnf", "jkt"),
        ("cnf", {"jkt": "short"}),
        ("cnf", {"jkt": KEY.kid, "jwk": KEY.jwk()}),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_claim_of_the_wrong_type_or_shape(claim: str, value: Any) -> None:
    denied(valid(**{claim: value}), Code.MALFORMED)


@pytest.mark.parametrize(
    "fragment",
    ['"exp":NaN', '"exp":Infinity', '"exp":-Infinity', '"exp":1e400', '"exp":1767225900.0',
     '"exp":1767225900e0', '"exp":' + "9" * 5000],
)
def test_time_claim_that_is_not_a_json_integer(fragment: str) -> None:
    c = claims(exp=424242)
    payload = compact_json(c).replace(b'"exp":424242', fragment.encode())
    denied(signed_payload(payload), Code.MALFORMED)


@pytest.mark.parametrize(
    ("original", "duplicated"),
    [
        (b'"aud":["payments"]', b'"aud":["email"],"aud":["payments"]'),
        (b'"aud":["payments"]', b'"aud":["payments"],"aud":["payments"]'),
        (b'"exp":424242', b'"exp":99999999999,"exp":424242'),
        (b'"iss":"https://issuer.test"', b'"iss":"https://evil.test","iss":"https://issuer.test"'),
    ],
    ids=["aud-twice", "aud-twice-same", "exp-twice", "iss-twice"],
)
def test_duplicate_keys_in_claims(original: bytes, duplicated: bytes) -> None:
    payload = compact_json(claims(exp=424242))
    assert original in payload
    payload = payload.replace(original, duplicated).replace(b"424242", str(NOW + 300).encode())
    denied(signed_payload(payload), Code.MALFORMED)


def test_duplicate_keys_nested_in_a_capability() -> None:
    payload = compact_json(claims()).replace(b'{"le":100}', b'{"le":100,"le":1000000}')
    denied(signed_payload(payload), Code.MALFORMED)


@pytest.mark.parametrize(("name", "value"), [("admin", True), ("scope", "*"), ("roles", ["root"]),
                                             ("limits", {}), ("act_as", "user:bob")])
def test_unknown_extra_claim(name: str, value: Any) -> None:
    denied(valid(**{name: value}), Code.MALFORMED)


@pytest.mark.parametrize(
    "claim",
    ["iss", "sub", "aud", "act", "iat", "nbf", "exp", "jti", "gid", "anc",
     "authorization_details", "purpose"],
)
def test_missing_required_claim(claim: str) -> None:
    denied(valid(**{claim: OMIT}), Code.MALFORMED)


def test_authorization_details_entry_of_another_type() -> None:
    details = [{"type": "payment_initiation", "actions": ["initiate"],
                "instructedAmount": {"currency": "EUR", "amount": "1000000"}}]
    denied(valid(authorization_details=details), Code.MALFORMED)
    mixed = [*claims()["authorization_details"], *details]
    denied(valid(authorization_details=mixed), Code.MALFORMED)


def test_capability_with_limits_is_unsupported_without_redis() -> None:
    budgets = [{"id": "g0", "exp": NOW + 3600, "uses": 1}]
    cap = {**claims()["authorization_details"][0], "limits": budgets}
    denied(valid(authorization_details=[cap]), Code.UNSUPPORTED)  # never ignored
    # The grant's request form is not a token budget list.
    cap = {**claims()["authorization_details"][0], "limits": {"uses": 1}}
    denied(valid(authorization_details=[cap]), Code.MALFORMED)


def test_token_bound_with_cnf_requires_a_proof() -> None:
    agent = IssuerKey()
    denied(valid(cnf={"jkt": agent.kid}), Code.PROOF_REQUIRED)


def test_ten_thousand_capabilities() -> None:
    cap = claims()["authorization_details"][0]
    token = valid(authorization_details=[cap] * 10_000)
    denied(token, Code.MALFORMED)  # over the token size limit
    start = time.perf_counter()
    denied(token, Code.MALFORMED, verifier=make_verifier(max_token_bytes=10**8))  # over 64 caps
    assert time.perf_counter() - start < 1.0


def test_sixty_five_capabilities_within_the_size_limit() -> None:
    cap = {"type": "remit.capability", "action": "a.b"}
    token = valid(authorization_details=[cap] * 65)
    assert len(token) < 16 * 1024
    denied(token, Code.MALFORMED)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_json_in_claims() -> None:
    payload = compact_json(claims(purpose="NEST")).replace(b'"NEST"', _nested(10_000))
    token = signed_payload(payload)
    denied(token, Code.MALFORMED)  # over the token size limit
    start = time.perf_counter()
    denied(token, Code.MALFORMED, verifier=make_verifier(max_token_bytes=10**8))
    assert time.perf_counter() - start < 1.0


def test_deeply_nested_json_in_claims_within_the_size_limit() -> None:
    payload = compact_json(claims(purpose="NEST")).replace(b'"NEST"', _nested(5_000))
    token = signed_payload(payload)
    assert len(token) < 16 * 1024
    denied(token, Code.MALFORMED)


def test_deeply_nested_json_in_header() -> None:
    header = compact_json(default_header(KEY, x="NEST")).replace(b'"NEST"', _nested(5_000))
    token = signed_header(header)
    assert len(token) < 16 * 1024
    denied(token, Code.MALFORMED)
    denied(token, Code.MALFORMED, verifier=make_verifier(max_token_bytes=10**8))


def test_deeply_nested_constraint_operand() -> None:
    payload = compact_json(claims()).replace(b'{"eq":"DE89"}', b'{"eq":' + _nested(500) + b"}")
    denied(signed_payload(payload), Code.MALFORMED)


# -- the call itself ------------------------------------------------------------------------


class _Str(str):
    __slots__ = ()


@pytest.mark.parametrize(
    "make",
    [
        lambda t: None,
        lambda t: t.encode(),
        lambda t: bytearray(t.encode()),
        lambda t: 12345,
        lambda t: [t],
        lambda t: {"token": t},
        _Str,
        lambda t: memoryview(t.encode()),
    ],
    ids=["None", "bytes", "bytearray", "int", "list", "dict", "str-subclass", "memoryview"],
)
def test_token_that_is_not_a_str(make: Callable[[str], Any]) -> None:
    denied(make(valid()), Code.MALFORMED)


@pytest.mark.parametrize("action", [None, 1, b"payments.transfer", ["payments.transfer"],
                                    _Str("payments.transfer")])
def test_action_that_is_not_a_str(action: Any) -> None:
    denied(valid(), Code.INVALID_REQUEST, action=action)


@pytest.mark.parametrize("action", ["Payments.Transfer", "payments..transfer", "payments.*",
                                    "payments.transfer ", "", "x" * 129, "payments.tränsfer"])
def test_action_that_is_not_a_valid_name(action: str) -> None:
    denied(valid(), Code.INVALID_REQUEST, action=action)


@pytest.mark.parametrize(
    "args",
    [[], [("amount", 50), ("to", "DE89")], "amount=50", 50, ("amount", 50), {"amount", "to"},
     b"{}"],
    ids=["list", "pairs", "str", "int", "tuple", "set", "bytes"],
)
def test_args_that_are_not_a_dict(args: Any) -> None:
    denied(valid(), Code.INVALID_REQUEST, args=args)


@pytest.mark.parametrize("args", [{1: 50}, {None: 50}, {("amount",): 50}, {b"amount": 50}],
                         ids=["int", "None", "tuple", "bytes"])
def test_args_with_a_name_that_is_not_a_str(args: dict[Any, Any]) -> None:
    denied(valid(), Code.INVALID_REQUEST, args=args)


# -- keys -----------------------------------------------------------------------------------


def test_jwks_entry_whose_kid_is_not_its_thumbprint_is_refused() -> None:
    jwk = {**KEY.jwk(), "kid": OTHER.kid}
    with pytest.raises(remit.KeyLoadError):
        remit.Verifier({"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE, revocation="off")


def test_jwks_entry_with_a_private_key_is_refused() -> None:
    jwk = {**KEY.jwk(), "d": b64url(bytes(32))}
    with pytest.raises(remit.KeyLoadError):
        remit.Verifier({"keys": [jwk]}, issuer=ISSUER, audience=AUDIENCE, revocation="off")


# -- cross-check with PyJWT -------------------------------------------------------------------


def _pyjwt_decode(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        token,
        KEY.private.public_key(),
        algorithms=["EdDSA"],
        audience=AUDIENCE,
        issuer=ISSUER,
        leeway=5,
        options={"require": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"]},
    )
    return decoded


def _wall_clock_verifier(now: int) -> remit.Verifier:
    return make_verifier(clock=lambda: now)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"aud": AUDIENCE}, {"aud": ["email", AUDIENCE], "anc": ["ancestor01"]}],
    ids=["default", "aud-string", "aud-list-anc"],
)
def test_pyjwt_accepts_the_valid_tokens_remit_accepts(overrides: dict[str, Any]) -> None:
    now = int(time.time())  # PyJWT reads the wall clock; pin remit's to the same second
    c = claims(now=now, **overrides)
    token = sign(c, KEY)
    allowed(token, verifier=_wall_clock_verifier(now))
    assert _pyjwt_decode(token) == c


def _tamper_payload(token: str) -> str:
    h, p, s = segments(token)
    c = json.loads(base64.urlsafe_b64decode(p + "=="))
    c["authorization_details"][0]["args"]["amount"] = {"le": 10**6}
    return f"{h}.{b64url(compact_json(c))}.{s}"


_TAMPERED: dict[str, tuple[Callable[[int], str], Code]] = {
    "tampered-payload": (lambda now: _tamper_payload(sign(claims(now=now), KEY)),
                         Code.BAD_SIGNATURE),
    "other-key-right-kid": (lambda now: sign(claims(now=now), OTHER, {"kid": KEY.kid}),
                            Code.BAD_SIGNATURE),
    "alg-none": (lambda now: sign(claims(now=now), KEY, {"alg": "none"})
                 .rsplit(".", 1)[0] + ".", Code.MALFORMED),
    "hs256-public-key": (lambda now: hs256_token(KEY.raw_public), Code.MALFORMED),
    "expired": (lambda now: sign(claims(now=now - 400), KEY), Code.EXPIRED),
    "wrong-audience": (lambda now: sign(claims(now=now, aud=["email"]), KEY),
                       Code.WRONG_AUDIENCE),
    "wrong-issuer": (lambda now: sign(claims(now=now, iss="https://evil.test"), KEY),
                     Code.WRONG_ISSUER),
    "nbf-future": (lambda now: sign(claims(now=now, nbf=now + 60), KEY), Code.NOT_YET_VALID),
}


@pytest.mark.parametrize("case", sorted(_TAMPERED))
def test_pyjwt_and_remit_both_reject_tampered_tokens(case: str) -> None:
    now = int(time.time())
    make, code = _TAMPERED[case]
    token = make(now)
    denied(token, code, verifier=_wall_clock_verifier(now))
    with pytest.raises(jwt.InvalidTokenError):
        _pyjwt_decode(token)
