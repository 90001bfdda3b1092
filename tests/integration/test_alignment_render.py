"""`remit audit report` end to end (real Redis), and the renderers' escaping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from remit_service._alignment import compute
from remit_service._report_render import render
from remit_service.cli import main

from tests.audit_events import EventWriter

T0 = 1_700_000_000_000
EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


@pytest.fixture
def writer(redis_client: redis.Redis, redis_prefix: str) -> EventWriter:
    w = EventWriter(redis_client, redis_prefix)
    w.grant(
        "g_1",
        [{"action": "payments.transfer", "args": {"amount": {"le": 100}}}],
        ts=T0,
        purpose="rent " + EVIL,
    )
    w.decision(ts=T0, gid="g_1", action="payments.transfer", args={"amount": 40})
    w.decision(
        ts=T0 + 1,
        gid="g_1",
        action="payments.transfer",
        code="argument_denied",
        arg="amount",
        args={"amount": 1000, EVIL: EVIL},
    )
    w.decision(ts=T0 + 2, gid="g_1", action="x" + EVIL, code="action_not_granted", agent=EVIL)
    w.decision(ts=T0 + 3, gid="g_1", action="payments.transfer", args={EVIL: 1})
    return w


def _cli(redis_url: str, prefix: str, *extra: str) -> list[str]:
    return ["audit", "report", "--redis", redis_url, "--prefix", prefix, *extra]


def test_cli_json(
    writer: EventWriter, redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(redis_url, redis_prefix, "--format", "json", "--grant", "g_1")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["filters"] == {"grant": "g_1"}
    assert report["grants"][0]["attempts"] == 4


def test_cli_text(
    writer: EventWriter, redis_url: str, redis_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(redis_url, redis_prefix)) == 0
    out = capsys.readouterr().out
    assert "grant g_1" in out
    assert "argument_denied (argument outside the grant): 1" in out
    assert "narrowest grant covering every allowed call" in out


def test_cli_html_file(
    writer: EventWriter, redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    assert main(_cli(redis_url, redis_prefix, "--format", "html", "-o", str(out))) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<table>" in page


def test_cli_bad_input(
    redis_url: str, redis_prefix: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_cli(redis_url, redis_prefix, "--since", "last week")) == 2
    assert "--since" in capsys.readouterr().err
    assert main(_cli("http://nope", redis_prefix)) == 2
    with pytest.raises(SystemExit) as exit_:
        main(_cli(redis_url, redis_prefix, "--grant", "g", "--agent", "a"))
    assert exit_.value.code == 2
    redis_client.set(f"{redis_prefix}audit", "a string")
    assert main(_cli(redis_url, redis_prefix)) == 1
    assert "not a stream" in capsys.readouterr().err
    assert main(_cli("redis://127.0.0.1:1/0", redis_prefix)) == 1  # nothing listens there
    assert "Redis unavailable" in capsys.readouterr().err
    # an empty / missing stream is an empty report, not an error
    assert main(_cli(redis_url, redis_prefix + "nothing:", "--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["stream"]["entries"] == 0


def test_text_and_json_carry_the_values_verbatim(
    writer: EventWriter, redis_client: redis.Redis
) -> None:
    report = compute(redis_client, writer.key)
    assert EVIL in json.loads(render(report, "json"))["grants"][0]["purpose"]
    with pytest.raises(ValueError, match="unknown format"):
        render(report, "pdf")
