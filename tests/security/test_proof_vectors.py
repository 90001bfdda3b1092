"""Run tests/vectors/proofs.json against remit.Verifier, and check the file is fresh.

Each case gets a fresh verifier (revocation off, local replay state), so no replay
state leaks from one case into the next; ``repeat`` presents the same proof that many
times to one verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import remit
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from remit import Code, Denied
from remit._encoding import strict_json_loads
from remit._proof import args_hash

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "proofs.json"
GENERATOR = ROOT / "scripts" / "gen_proof_vectors"
# The strict decoder: a vector file with a duplicate key would silently lose a case.
DATA: dict[str, Any] = strict_json_loads(VECTORS.read_bytes())
CASES: list[dict[str, Any]] = DATA["cases"]
PROOF_CODES = {"proof_required", "bad_proof", "proof_key_mismatch", "proof_mismatch",
               "proof_expired", "replayed"}


def generator() -> ModuleType:
    return load_script("gen_proof_vectors")


def vector_verifier() -> remit.Verifier:
    now = DATA["now"]
    return remit.Verifier(
        DATA["jwks"],
        issuer=DATA["issuer"],
        audience=DATA["audience"],
        revocation="off",
        replay="local",
        leeway=DATA["leeway"],
        proof_window=DATA["proof_window"],
        clock=lambda: now,
    )


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_proof_vector(case: dict[str, Any]) -> None:
    verifier = vector_verifier()
    expected = case["expected"]

    def call() -> remit.Decision:
        return verifier.check(case["token"], action=case["action"], args=case["args"],
                              proof=case["proof"])

    for _ in range(case.get("repeat", 1) - 1):
        assert call().allowed
    try:
        decision = call()
    except Denied as exc:
        assert not expected["allowed"], f"denied ({exc}), expected allowed"
        assert exc.code.value == expected["code"], exc
        if "mismatch" in case:
            assert exc.message.startswith(f"{case['mismatch']}:"), exc
    else:
        assert expected["allowed"], f"allowed, expected {expected['code']}"
        assert decision.action == case["action"]


def test_proof_vectors_are_fresh() -> None:
    gen = generator()
    assert gen.render(gen.build_vectors()) == VECTORS.read_text(encoding="utf-8"), (
        "tests/vectors/proofs.json is stale: run .venv/bin/python scripts/gen_proof_vectors"
    )


def test_proof_vectors_generator_check_flag(tmp_path: Path) -> None:
    gen = generator()
    assert gen.main(["--check", str(VECTORS)]) == 0
    stale = tmp_path / "proofs.json"
    stale.write_text(VECTORS.read_text(encoding="utf-8").replace('"now"', '"then"', 1))
    assert gen.main(["--check", str(stale)]) == 1


def test_proof_vectors_keys(tmp_path: Path) -> None:
    # The issuer key is the RFC 8032 §7.1 TEST 1 key (RFC 8037 §A.2, §A.3).
    (jwk,) = DATA["jwks"]["keys"]
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    assert unb64(DATA["private_key_seed"]).hex().startswith("9d61b19d")
    # The agent key in the file is the one the seed gives, and its thumbprint is cnf.jkt.
    raw = Ed25519PrivateKey.from_private_bytes(unb64(DATA["agent_private_key_seed"])) \
        .public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert DATA["agent_jwk"] == {"kty": "OKP", "crv": "Ed25519",
                                 "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}
    assert remit.jwk_thumbprint(DATA["agent_jwk"]["x"]) == DATA["agent_jkt"]
    # The seed is what an AgentKey file holds as "d".
    path = tmp_path / "agent.jwk"
    path.write_text(json.dumps({**DATA["agent_jwk"], "d": DATA["agent_private_key_seed"]}))
    assert remit.agent.AgentKey.load(path).thumbprint == DATA["agent_jkt"]


def test_proof_vectors_argh_examples() -> None:
    assert len(DATA["argh_examples"]) >= 3
    for example in DATA["argh_examples"]:
        assert args_hash(example["args"]) == example["argh"], example
        digest = base64.urlsafe_b64encode(
            hashlib.sha256(example["canonical"].encode("utf-8")).digest()
        ).rstrip(b"=").decode()
        assert digest == example["argh"], example


def test_proof_vectors_are_well_formed() -> None:
    assert DATA["version"] == 1
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    optional = {"repeat", "mismatch"}
    for c in CASES:
        required = {"name", "description", "token", "proof", "action", "args", "expected"}
        assert required <= set(c) <= required | optional, c["name"]
        assert type(c["token"]) is str and type(c["args"]) is dict
        assert c["proof"] is None or type(c["proof"]) is str
        assert c["expected"]["allowed"] is (c["expected"]["code"] is None)
        assert type(c.get("repeat", 1)) is int and c.get("repeat", 1) >= 1
        assert ("mismatch" in c) is (c["expected"]["code"] == "proof_mismatch")
        assert c.get("mismatch", "ath") in {"ath", "aud", "action", "argh"}


def test_proof_vectors_cover_every_proof_code() -> None:
    codes = {c["expected"]["code"] for c in CASES} - {None}
    assert codes <= {code.value for code in Code}
    assert codes >= PROOF_CODES
    assert {c["mismatch"] for c in CASES if "mismatch" in c} == {"ath", "aud", "action", "argh"}
    assert any(c.get("repeat", 1) > 1 for c in CASES)
    assert sum(c["expected"]["allowed"] for c in CASES) >= 5
