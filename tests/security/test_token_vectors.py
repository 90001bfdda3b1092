"""Run tests/vectors/tokens.json against remit.Verifier, and check the file is fresh.

The file is what other-language verifiers test against, so it must both pass here
and be exactly what scripts/gen_token_vectors writes today.
"""

from __future__ import annotations

import base64
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import remit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from remit import Code, Denied
from remit._encoding import strict_json_loads

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "tokens.json"
GENERATOR = ROOT / "scripts" / "gen_token_vectors"
# The strict decoder: a vector file with a duplicate key would silently lose a case.
DATA: dict[str, Any] = strict_json_loads(VECTORS.read_bytes())
CASES: list[dict[str, Any]] = DATA["cases"]


def generator() -> ModuleType:
    return load_script("gen_token_vectors")


def vector_verifier() -> remit.Verifier:
    now = DATA["now"]
    return remit.Verifier(
        DATA["jwks"],
        issuer=DATA["issuer"],
        audience=DATA["audience"],
        revocation="off",
        leeway=DATA["leeway"],
        max_ttl=DATA["max_ttl"],
        max_token_bytes=DATA["max_token_bytes"],
        clock=lambda: now,
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_token_vector(case: dict[str, Any]) -> None:
    verifier = vector_verifier()
    expected = case["expected"]
    try:
        decision = verifier.check(case["token"], action=case["action"], args=case["args"])
    except Denied as exc:
        assert not expected["allowed"], f"denied ({exc}), expected allowed"
        assert exc.code.value == expected["code"], exc
    else:
        assert expected["allowed"], f"allowed, expected {expected['code']}"
        assert decision.action == case["action"]
    # The verdict also holds for the token when it comes from the cache.
    if expected["allowed"]:
        assert verifier.check(case["token"], action=case["action"], args=case["args"]).allowed


def test_token_vectors_are_fresh() -> None:
    gen = generator()
    assert gen.render(gen.build_vectors()) == VECTORS.read_text(encoding="utf-8"), (
        "tests/vectors/tokens.json is stale: run .venv/bin/python scripts/gen_token_vectors"
    )


def test_token_vectors_key_is_the_rfc_8032_test_key() -> None:
    seed = base64.urlsafe_b64decode(DATA["private_key_seed"] + "=")
    raw = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )
    (jwk,) = DATA["jwks"]["keys"]
    # RFC 8037 §A.2 and §A.3: this key's x and its RFC 7638 thumbprint.
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert remit.PublicKey(raw).kid == jwk["kid"]


def test_token_vectors_are_well_formed() -> None:
    assert DATA["version"] == 1
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for c in CASES:
        assert set(c) == {"name", "description", "token", "action", "args", "expected"}
        assert type(c["token"]) is str and type(c["args"]) is dict
        assert c["expected"]["allowed"] is (c["expected"]["code"] is None)


def test_token_vectors_cover_every_code_a_token_check_gives_without_redis() -> None:
    codes = {c["expected"]["code"] for c in CASES} - {None}
    assert codes <= {code.value for code in Code}
    not_from_tokens_alone = {
        "revoked", "revocation_unavailable", "token_required", "bad_proof",
        "proof_key_mismatch", "proof_mismatch", "proof_expired", "replayed",
        "audit_unavailable",
        "limit_exceeded", "limit_unavailable",  # budgets need Redis: tests/vectors/limits.json
    }
    assert codes == {code.value for code in Code} - not_from_tokens_alone
    assert sum(c["expected"]["allowed"] for c in CASES) >= 10
