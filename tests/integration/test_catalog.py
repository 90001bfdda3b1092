"""The action catalog (config) checks grants at CreateGrant; Describe renders consent text.

Real service from a TOML file on real Redis, driven through ``remit.Client`` and the CLI.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import remit
from remit_service import KeyStore, Server, load_config
from remit_service._config import ConfigError
from remit_service.cli import main as cli_main

from .conftest import count_keys

KEY = "catalog-app-key-0123"

CATALOG = """
[actions."payments.transfer"]
max_ttl = 300
risk = "high"
single_use = true
consent = "Send money from your account ({args})"
[actions."payments.transfer".args]
amount = { type = "number", constraint = { gt = 0, le = 1000 }, label = "the amount" }
iban = { type = "string", label = "the recipient's IBAN" }
currency = { type = "string", constraint = { in = ["EUR", "USD"] } }

[actions."files.delete"]
risk = "medium"
[actions."files.delete".args]
path = { type = "string", constraint = { subpath = "/srv" } }

[actions."email.*"]
max_ttl = 600
risk = "low"
"""


def _config_text(redis_url: str, prefix: str, catalog: str = "open") -> str:
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    return f"""
issuer = "https://remit.catalog.test"
keys_dir = "keys"
redis = "{redis_url}"
prefix = "{prefix}"
catalog = "{catalog}"

[apps.app]
api_key_sha256 = "{digest}"
actions = ["*"]
audiences = ["*"]
{CATALOG}"""


@pytest.fixture(params=["open"])
def catalog_service(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str,
    stop_in_background: Callable[[Server], None],
) -> Iterator[Server]:
    path = tmp_path / "remit.toml"
    path.write_text(_config_text(redis_url, redis_prefix, request.param), encoding="utf-8")
    cfg = dataclasses.replace(load_config(path), grpc_port=0, http_port=0)
    KeyStore(cfg.keys_dir).ensure()
    server = Server(cfg).start()
    yield server
    stop_in_background(server)


@pytest.fixture
def app(catalog_service: Server) -> Iterator[remit.Client]:
    with remit.Client(catalog_service.grpc_target, api_key=KEY) as c:
        yield c


def _grant(c: remit.Client, *caps: dict[str, Any]) -> remit.Grant:
    return c.create_grant(subject="user:alice", agent="agent:a", audience=["payments"],
                          capabilities=list(caps), purpose="pay the rent")


TRANSFER = {
    "action": "payments.transfer",
    "args": {"amount": {"gt": 0, "le": 120}, "iban": {"eq": "DE89370400440532013000"},
             "currency": {"eq": "EUR"}},
}


def test_an_argument_the_action_does_not_have_is_invalid_argument_naming_it(
    app: remit.Client, redis_client: redis.Redis, redis_prefix: str
) -> None:
    before = count_keys(redis_client, redis_prefix)
    bad = {**TRANSFER, "args": {**TRANSFER["args"], "memo": {"any": True}}}
    with pytest.raises(remit.InvalidArgument) as exc:
        _grant(app, {"action": "email.send", "args": {}}, bad)
    assert exc.value.field == "capabilities[1].args.memo"
    assert "has no argument 'memo'" in exc.value.message
    assert count_keys(redis_client, redis_prefix) == before


def test_star_on_a_catalogued_action_is_refused(app: remit.Client) -> None:
    with pytest.raises(remit.InvalidArgument) as exc:
        _grant(app, {**TRANSFER, "args": {**TRANSFER["args"], "*": {"any": True}}})
    assert exc.value.field == "capabilities[0].args.*"


def test_a_constraint_beyond_the_catalog_bound_is_refused(app: remit.Client) -> None:
    with pytest.raises(remit.PermissionDenied, match="catalog's bound for 'amount'"):
        _grant(app, {**TRANSFER, "args": {**TRANSFER["args"], "amount": {"le": 5000}}})
    with pytest.raises(remit.PermissionDenied, match="catalog's bound for 'path'"):
        _grant(app, {"action": "files.delete", "args": {"path": {"prefix": "/"}}})
    assert _grant(app, {"action": "files.delete", "args": {"path": {"subpath": "/srv/build"}}})


def test_an_operator_no_value_of_the_type_satisfies_is_invalid_argument(
    app: remit.Client,
) -> None:
    with pytest.raises(remit.InvalidArgument) as exc:
        _grant(app, {**TRANSFER, "args": {**TRANSFER["args"], "iban": {"le": 5}}})
    assert exc.value.field == "capabilities[0].args.iban.le"


def test_single_use_adds_uses_1_and_refuses_more(app: remit.Client) -> None:
    grant = _grant(app, TRANSFER)
    assert grant.capabilities[0]["limits"] == {"uses": 1}
    with_sum = {**TRANSFER, "limits": {"sum": {"arg": "amount", "max": "120.00"}}}
    assert _grant(app, with_sum).capabilities[0]["limits"] == {
        "sum": {"arg": "amount", "max": "120.00"}, "uses": 1,
    }
    with pytest.raises(remit.PermissionDenied, match="single-use"):
        _grant(app, {**TRANSFER, "limits": {"uses": 3}})


def test_uncatalogued_actions_pass_an_open_catalog(app: remit.Client) -> None:
    assert _grant(app, {"action": "calendar.read", "args": {"day": {"any": True}}})
    assert _grant(app, {"action": "payments.*", "args": {}})


@pytest.mark.parametrize("catalog_service", ["closed"], indirect=True)
def test_a_closed_catalog_refuses_uncatalogued_and_wildcard_actions(app: remit.Client) -> None:
    assert _grant(app, TRANSFER)
    with pytest.raises(remit.PermissionDenied, match="not in the action catalog"):
        _grant(app, {"action": "calendar.read", "args": {}})
    with pytest.raises(remit.PermissionDenied, match="not in the action catalog"):
        _grant(app, {"action": "payments.*", "args": {}})


def test_dev_mode_keeps_an_open_catalog(client: remit.Client) -> None:
    grant = client.create_grant(
        subject="u", agent="a", audience=["x"],
        capabilities=[{"action": "anything.at_all", "args": {"*": {"any": True}}}],
    )
    assert grant.capabilities[0]["args"] == {"*": {"any": True}}


# -- describe --------------------------------------------------------------------------------


def test_describe_a_grant_is_precise_and_quotes_the_purpose(app: remit.Client) -> None:
    grant = _grant(app, TRANSFER, {"action": "email.send", "args": {"to": {"eq": "bob@x.org"}}})
    consent = app.describe(grant.id)
    assert consent.risk == "high" and len(consent.capabilities) == 2
    first = consent.capabilities[0]
    assert first.startswith('[high risk] "payments.transfer": Send money from your account')
    for shown in ("a number more than 0 and a number at most 120", '"DE89370400440532013000"',
                  '"EUR"',
                  "the recipient's IBAN", "at most 1 use(s) in total", "no other arguments"):
        assert shown in first, shown
    assert consent.capabilities[1].startswith('[low risk] "email.send"')
    assert consent.text.splitlines()[-1] == (
        "Purpose, in the app's own words (not checked): \"pay the rent\""
    )


def test_describe_capabilities_checks_them_like_a_grant(app: remit.Client) -> None:
    consent = app.describe(capabilities=[TRANSFER])
    assert "at most 1 use(s)" in consent.text and consent.risk == "high"
    with pytest.raises(remit.InvalidArgument) as exc:
        app.describe(capabilities=[{**TRANSFER, "args": {"memo": {"any": True}}}])
    assert exc.value.field == "capabilities[0].args.memo"
    with pytest.raises(remit.InvalidArgument):
        app.describe(capabilities=[{"action": "x.y", "args": {"a": {"frob": 1}}}])


def test_describe_another_apps_grant_is_not_found(app: remit.Client, client: remit.Client,
                                                  catalog_service: Server) -> None:
    other = client.create_grant(subject="u", agent="a", audience=["x"],
                                capabilities=[{"action": "x.y", "args": {}}])
    with pytest.raises(remit.NotFound):
        app.describe(other.id)


def test_cli_describe_grant_and_file(
    app: remit.Client, catalog_service: Server, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grant = _grant(app, TRANSFER)
    base = ["--target", catalog_service.grpc_target, "--api-key", KEY]
    assert cli_main(["describe", grant.id, *base]) == 0
    out = capsys.readouterr().out
    assert "Send money from your account" in out and "Purpose" in out
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps([TRANSFER]), encoding="utf-8")
    assert cli_main(["describe", "--capabilities", str(caps), "--json", *base]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["risk"] == "high" and len(doc["capabilities"]) == 1
    assert cli_main(["describe", *base]) == 2  # neither a grant nor a file


# -- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('risk = "extreme"', "actions.a.b.risk"),
        ("single_use = 1", "actions.a.b.single_use"),
        ("colour = 1", "unknown keys ['colour']"),
        ("max_ttl = 0", "actions.a.b.max_ttl"),
        ('[actions."a.b".args]\nx = { type = "decimal" }', "actions.a.b.args.x.type"),
        ('[actions."a.b".args]\nx = { constraint = { le = "5" } }', "le"),
        ('[actions."a.b".args]\nx = { type = "string", extra = 1 }', "unknown keys"),
    ],
)
def test_bad_catalog_entries_are_config_errors(
    tmp_path: Path, redis_url: str, entry: str, message: str
) -> None:
    path = tmp_path / "remit.toml"
    head = _config_text(redis_url, "p:").replace(CATALOG, "")
    path.write_text(f'{head}\n[actions."a.b"]\n{entry}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_pattern_entries_take_only_ttl_and_risk(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "remit.toml"
    head = _config_text(redis_url, "p:").replace(CATALOG, "")
    path.write_text(f'{head}\n[actions."mail.*"]\nsingle_use = true\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_config(path)
    path.write_text(f'{head}\ncatalog = "half"\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(path)
