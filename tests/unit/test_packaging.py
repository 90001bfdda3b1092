"""Packaging contracts: public names, the grpc-free verify path, fresh generated stubs."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import remit
import remit_service

ROOT = Path(__file__).resolve().parents[2]

PUBLIC_REMIT = {
    "Capability",
    "Client",
    "Code",
    "ConstraintError",
    "Credentials",
    "Decision",
    "Denied",
    "FailedPrecondition",
    "Grant",
    "InvalidArgument",
    "KeyLoadError",
    "KeySet",
    "NotFound",
    "PermissionDenied",
    "PublicKey",
    "RemitError",
    "Retry",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
    "Verifier",
    "__version__",
    "agent",
    "credentials",
    "current_credentials",
    "is_narrower",
    "jwk_thumbprint",
    "load_jwks",
    "peek_unverified",
}


def test_public_names_of_remit_are_pinned() -> None:
    assert set(remit.__all__) == PUBLIC_REMIT
    for name in remit.__all__:
        assert getattr(remit, name) is not None


def test_public_names_of_remit_service_resolve() -> None:
    for name in remit_service.__all__:
        assert getattr(remit_service, name) is not None


def test_verify_path_never_imports_grpc() -> None:
    x = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    code = (
        "import sys, remit\n"
        f"jwks = {{'keys': [{{'kty': 'OKP', 'crv': 'Ed25519', 'x': '{x}'}}]}}\n"
        "v = remit.Verifier(jwks, issuer='i', audience='a', revocation='off')\n"
        "try:\n    v.check('x.y.z', action='a.b', args={})\nexcept remit.Denied:\n    pass\n"
        "heavy = ('grpc.', 'google.protobuf', 'jwt', 'prometheus_client')\n"
        "bad = sorted(m for m in sys.modules if m == 'grpc' or m.startswith(heavy))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"verify path imported: {out.stdout}"


def test_client_import_is_lazy_but_works() -> None:
    code = (
        "import sys, remit; assert 'grpc' not in sys.modules;"
        " remit.Client; assert 'grpc' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos"), str(tmp_path)],
        check=True,
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable},
    )
    generated = tmp_path / "remit" / "v1"
    committed = ROOT / "client" / "remit" / "v1"
    names = sorted(p.name for p in generated.iterdir() if p.is_file())
    assert names == ["remit_pb2.py", "remit_pb2.pyi", "remit_pb2_grpc.py"]
    _, mismatch, errors = filecmp.cmpfiles(generated, committed, names, shallow=False)
    assert not mismatch and not errors, (
        f"stubs differ from proto/ ({mismatch or errors}): run scripts/gen_protos and commit"
    )
