"""The `remit` command line, run as a user would: real subprocesses, real service, real Redis."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REMIT = [sys.executable, "-m", "remit_service"]
API_KEY = "cli-test-key"


def remit_cli(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*REMIT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        input=input,
        check=False,
    )


@pytest.fixture
def dev_server(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[dict[str, Any]]:
    proc = subprocess.Popen(
        [
            *REMIT,
            "serve",
            "--dev",
            "--data-dir",
            str(tmp_path / "dev"),
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--redis",
            redis_url,
            "--prefix",
            redis_prefix,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REMIT_DEV_API_KEY": API_KEY},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        info = json.loads(line)
        info["proc"] = proc
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_serve_dev_prints_ready_line_warns_and_serves_http(dev_server: dict[str, Any]) -> None:
    assert dev_server["ready"] is True and dev_server["dev"] is True
    assert dev_server["issuer"] == "remit-dev"
    with urllib.request.urlopen(dev_server["http"] + "/healthz", timeout=5) as resp:
        health = json.loads(resp.read())
    assert health["status"] == "ok" and health["issuer"] == dev_server["issuer"]
    with urllib.request.urlopen(dev_server["jwks"], timeout=5) as resp:
        jwks = json.loads(resp.read())
    assert len(jwks["keys"]) == 1 and jwks["keys"][0]["kty"] == "OKP"


def test_serve_stops_cleanly_on_sigterm(dev_server: dict[str, Any]) -> None:
    proc = dev_server["proc"]
    proc.terminate()
    assert proc.wait(timeout=10) == 0
    assert "DEV MODE" in proc.stderr.read()


def test_grant_mint_verify_revoke_round_trip(
    dev_server: dict[str, Any], redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    app = ["--target", dev_server["grpc"], "--api-key", API_KEY]
    cap = json.dumps({"action": "payments.transfer", "args": {"amount": {"le": 100}}})
    out = remit_cli(
        "grant",
        "create",
        *app,
        "--subject",
        "user:alice",
        "--agent",
        "agent:a",
        "--audience",
        "payments",
        "--capability",
        cap,
        "--purpose",
        "rent",
        "--ttl",
        "600",
    )
    assert out.returncode == 0, out.stderr
    grant = json.loads(out.stdout)
    assert grant["subject"] == "user:alice" and grant["revoked"] is False

    out = remit_cli("mint", *app, grant["id"], "--ttl", "120")
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.count(".") == 2

    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(urllib.request.urlopen(dev_server["jwks"], timeout=5).read().decode())
    verify = [
        "verify",
        token,
        "--jwks",
        str(jwks_file),
        "--issuer",
        dev_server["issuer"],
        "--audience",
        "payments",
        "--action",
        "payments.transfer",
        "--revocation",
        "strict",
        "--redis",
        redis_url,
        "--prefix",
        redis_prefix,
    ]

    out = remit_cli(*verify, "--args", '{"amount": 50}')
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["allowed"] is True

    out = remit_cli(*verify, "--args", '{"amount": 500}')
    assert out.returncode == 3
    decision = json.loads(out.stdout)
    assert decision["allowed"] is False and decision["code"] == "argument_denied"
    assert "amount" in decision["message"]

    # the token can also come from stdin, and the JWKS from the URL
    out = remit_cli(
        "verify",
        "-",
        "--jwks",
        dev_server["jwks"],
        "--issuer",
        dev_server["issuer"],
        "--audience",
        "email",
        "--action",
        "payments.transfer",
        "--args",
        "{}",
        input=token,
    )
    assert out.returncode == 3 and json.loads(out.stdout)["code"] == "wrong_audience"

    out = remit_cli("revoke", *app, "--grant", grant["id"], "--reason", "test")
    assert out.returncode == 0, out.stderr
    out = remit_cli(*verify, "--args", '{"amount": 50}')
    assert out.returncode == 3 and json.loads(out.stdout)["code"] == "revoked"

    out = remit_cli("mint", *app, grant["id"])
    assert out.returncode == 1 and "FailedPrecondition" in out.stderr


def test_wrong_api_key_is_a_clean_error(dev_server: dict[str, Any]) -> None:
    out = remit_cli("grant", "list", "--target", dev_server["grpc"], "--api-key", "nope")
    assert out.returncode == 1
    assert "Unauthenticated" in out.stderr and "Traceback" not in out.stderr


def test_verify_usage_errors_exit_2(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    base = ["verify", "x.y.z", "--issuer", "i", "--audience", "a", "--action", "a.b"]
    assert remit_cli(*base).returncode == 2  # --jwks missing
    out = remit_cli(*base, "--jwks", str(jwks), "--args", "{not json")
    assert out.returncode == 2 and "--args" in out.stderr
    out = remit_cli(*base, "--jwks", str(jwks), "--args", "[1]")
    assert out.returncode == 2
    out = remit_cli(*base, "--jwks", str(jwks), "--revocation", "strict")
    assert out.returncode == 2 and "--redis" in out.stderr
    out = remit_cli(*base, "--jwks", str(jwks))  # a JWKS with no key is unusable
    assert out.returncode == 2 and "key" in out.stderr


def test_verify_malformed_token_is_denied_not_crashed(tmp_path: Path) -> None:
    from tests.tokens import IssuerKey

    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(IssuerKey().jwks()))
    out = remit_cli(
        "verify",
        "not-a-token",
        "--jwks",
        str(jwks),
        "--issuer",
        "i",
        "--audience",
        "a",
        "--action",
        "a.b",
        "--revocation",
        "off",
    )
    assert out.returncode == 3
    assert json.loads(out.stdout)["code"] == "malformed"


def test_inspect_decodes_without_verifying_and_says_so() -> None:
    from tests.tokens import IssuerKey, claims, sign

    token = sign(claims(), IssuerKey())
    out = remit_cli("inspect", token)
    assert out.returncode == 0
    shown = json.loads(out.stdout)
    assert shown["verified"] is False and "WITHOUT" in shown["warning"]
    assert shown["header"]["typ"] == "remit+jwt" and shown["claims"]["sub"] == "user:alice"
    assert remit_cli("inspect", "garbage").returncode == 1


def test_keys_generate_rotate_list(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    out = remit_cli("keys", "generate", "--dir", str(keys_dir))
    assert out.returncode == 0, out.stderr
    first = json.loads(out.stdout)["generated"]
    assert stat.S_IMODE((keys_dir / f"{first}.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    assert remit_cli("keys", "generate", "--dir", str(keys_dir)).returncode == 2
    # Default rotation: the new key is published at once and signs only after 60 s.
    out = remit_cli("keys", "rotate", "--dir", str(keys_dir))
    second = json.loads(out.stdout)["new"]
    assert second != first
    rows = json.loads(remit_cli("keys", "list", "--dir", str(keys_dir)).stdout)
    assert {r["kid"]: r["status"] for r in rows} == {first: "signing", second: "pending"}
    # An immediate rotation (after a compromise): the newest signs, the other stays
    # published for its live tokens, and is retired once they have all expired.
    out = remit_cli("keys", "rotate", "--dir", str(keys_dir), "--activate-in", "0")
    third = json.loads(out.stdout)["new"]
    rows = json.loads(remit_cli("keys", "list", "--dir", str(keys_dir)).stdout)
    assert {r["kid"]: r["status"] for r in rows} == {
        first: "published", second: "pending", third: "signing",
    }
    time.sleep(2.1)
    rows = json.loads(
        remit_cli(
            "keys", "list", "--dir", str(keys_dir), "--max-token-ttl", "1", "--margin", "1"
        ).stdout
    )
    assert {r["kid"]: r["status"] for r in rows}[first] == "retired"
    assert {r["kid"]: r["status"] for r in rows}[third] == "signing"


def test_demo_runs_and_every_step_behaves(redis_url: str) -> None:
    out = remit_cli("demo", "--redis", redis_url, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "17/17 steps behaved as expected" in text
    for code in ("argument_denied", "action_not_granted", "revoked", "proof_required",
                 "replayed", "proof_mismatch", "wrong_audience", "permission_denied"):
        assert f"DENIED ({code}" in text
    assert "UNEXPECTED" not in text
    assert "sub-agent -> email.send a receipt to the landlord" in text  # Exchange
    assert "[ok ] consent text names every bound of the grant" in text  # Describe


def test_agent_keygen_show_and_verify_with_proof(tmp_path: Path) -> None:
    from remit.agent import AgentKey, proof

    from tests.tokens import IssuerKey, claims, sign

    path = tmp_path / "agent.json"
    out = remit_cli("agent", "keygen", "--out", str(path))
    assert out.returncode == 0, out.stderr
    thumbprint = json.loads(out.stdout)["thumbprint"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert remit_cli("agent", "keygen", "--out", str(path)).returncode == 2  # no overwrite
    shown = json.loads(remit_cli("agent", "show", str(path)).stdout)
    assert shown["thumbprint"] == thumbprint and "d" not in shown["jwk"]

    issuer = IssuerKey()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(issuer.jwks()))
    now = int(time.time())  # the CLI verifies against the real clock
    token = sign(claims(cnf={"jkt": thumbprint}, iat=now, nbf=now, exp=now + 300), issuer)
    args = {"amount": 5, "to": "DE89"}
    base = ["verify", token, "--jwks", str(jwks), "--issuer", "https://issuer.test",
            "--audience", "payments", "--action", "payments.transfer", "--args", json.dumps(args),
            "--revocation", "off"]
    out = remit_cli(*base)
    assert out.returncode == 3 and json.loads(out.stdout)["code"] == "proof_required"
    pop = proof(AgentKey.load(path), token, audience="payments", action="payments.transfer",
                args=args)
    out = remit_cli(*base, "--proof", pop)
    assert out.returncode == 0, out.stdout
