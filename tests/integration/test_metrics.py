"""Prometheus metrics: the service's /metrics (real gRPC + HTTP), and a verifier's, exposed
from the backend's own process."""

from __future__ import annotations

import contextlib
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import remit
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from remit import metrics
from remit_service import Server

CAP = {"action": "payments.transfer", "args": {"amount": {"le": 100}}}


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_service_metrics(service: Server, client: remit.Client) -> None:
    grant = client.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[CAP])
    client.mint(grant.id)
    client.mint(grant.id)
    client.revoke(grant_id=grant.id)
    with pytest.raises(remit.InvalidArgument):
        client.get_grant("bad id!")
    s = _scrape(service.http_url + "/metrics")
    assert _get(s, "remit_rpc_requests_total", method="Mint", code="OK") == 2
    assert _get(s, "remit_rpc_requests_total", method="CreateGrant", code="OK") == 1
    assert _get(s, "remit_rpc_requests_total", method="GetGrant", code="INVALID_ARGUMENT") == 1
    assert _get(s, "remit_rpc_duration_seconds_count", method="Mint", code="OK") == 2
    assert _get(s, "remit_tokens_minted_total", method="Mint") == 2
    assert _get(s, "remit_revocations_total") == 1
    assert _get(s, "remit_redis_errors_total", where="rpc") == 0
    assert _get(s, "remit_revocation_requests_total", kind="grant") == 1
    assert _get(s, "remit_revocation_requests_total", kind="jti") == 0
    assert _get(s, "remit_revocation_stream_written_total") == 1
    assert _get(s, "remit_revocation_stream_entries") >= 1  # the stream is shared by the tests
    assert 0 <= _get(s, "remit_revocation_stream_newest_age_seconds") < 60


def test_service_counts_redis_errors(
    service: Server, client: remit.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remit_service._errors import StoreDown

    def down(*a: object, **kw: object) -> None:
        raise StoreDown("Redis unavailable")

    # A Redis failure as the store reports it (a real outage is tested in test_redis_down).
    monkeypatch.setattr(service.core._store, "get_with_epoch", down)
    with pytest.raises(remit.Unavailable):
        remit.Client(service.grpc_target, api_key="test-key", retry=None).mint("g_0123456789ab")
    s = _scrape(service.http_url + "/metrics")
    assert _get(s, "remit_redis_errors_total", where="rpc") == 1
    assert _get(s, "remit_rpc_requests_total", method="Mint", code="UNAVAILABLE") == 1


@pytest.fixture
def exporter() -> Iterator[tuple[CollectorRegistry, str]]:
    registry = CollectorRegistry()
    server, thread = metrics.start_http_server(0, registry=registry)
    yield registry, f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_verifier_metrics(
    client: remit.Client,
    make_verifier: Callable[..., remit.Verifier],
    exporter: tuple[CollectorRegistry, str],
) -> None:
    registry, url = exporter
    verifier = make_verifier(client, audit="sync")
    m = metrics.instrument(verifier, registry)
    assert metrics.instrument(verifier, registry) is m  # idempotent
    m.feed_lag(lambda: 1.5)
    grant = client.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[CAP])
    token = client.mint(grant.id)
    for amount in (1, 2, 3):
        verifier.check(token, action="payments.transfer", args={"amount": amount})
    with pytest.raises(remit.Denied):
        verifier.check(token, action="payments.transfer", args={"amount": 500})
    with pytest.raises(remit.Denied):
        verifier.check(token, action="NOT AN ACTION <x>", args={})

    @verifier.guard("payments.transfer")
    def transfer(amount: int) -> int:
        return amount

    with remit.credentials(token):
        assert transfer(7) == 7
    s = _scrape(url)
    a = "payments"
    assert (
        _get(s, "remit_verifier_decisions_total", audience=a, code="ok", action="payments.transfer")
        == 4
    )
    assert (
        _get(
            s,
            "remit_verifier_decisions_total",
            audience=a,
            code="argument_denied",
            action="payments.transfer",
        )
        == 1
    )
    assert (
        _get(
            s,
            "remit_verifier_decisions_total",
            audience=a,
            code="invalid_request",
            action="(other)",
        )
        == 1
    )
    assert _get(s, "remit_verifier_check_seconds_count", audience=a) == 6
    assert _get(s, "remit_verifier_revocation_feed_lag_seconds", audience=a) == 1.5
    assert _get(s, "remit_verifier_audit_events_written_total", audience=a) == 6
    assert _get(s, "remit_verifier_audit_events_dropped_total", audience=a) == 0


def test_action_labels_are_bounded(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    registry = CollectorRegistry()
    verifier = make_verifier(client, audit="off")
    metrics.instrument(verifier, registry)
    for i in range(metrics.MAX_ACTIONS + 20):
        with pytest.raises(remit.Denied):
            verifier.check("not-a-token", action=f"a.n{i}", args={})
    actions = {
        s.labels["action"]
        for family in registry.collect()
        for s in family.samples
        if s.name == "remit_verifier_decisions_total"
    }
    assert len(actions) == metrics.MAX_ACTIONS + 1 and "(other)" in actions


def test_two_verifiers_one_registry_and_asgi(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    from starlette.testclient import TestClient

    registry = CollectorRegistry()
    v1 = make_verifier(client, audience="payments", audit="off")
    v2 = make_verifier(client, audience="email", audit="off")
    metrics.instrument(v1, registry)
    metrics.instrument(v2, registry)
    for v in (v1, v2):
        with pytest.raises(remit.Denied):
            v.check("x", action="a.b", args={})
    # (no lifespan: mounted in a framework app, only the parent app gets lifespan events)
    text = TestClient(metrics.asgi_app(registry)).get("/").text
    assert 'audience="payments",code="malformed"' in text
    assert 'audience="email",code="malformed"' in text


def test_counts_from_many_threads_add_up(client: remit.Client) -> None:
    import threading

    registry = CollectorRegistry()
    verifier = remit.Verifier(
        client.jwks(), issuer=client.issuer(), audience="payments", revocation="off"
    )
    m = metrics.instrument(verifier, registry)
    grant = client.create_grant(subject="u", agent="a", audience=["payments"], capabilities=[CAP])
    token = client.mint(grant.id)

    def work() -> None:
        for i in range(300):
            with contextlib.suppress(remit.Denied):
                verifier.check(token, action="payments.transfer", args={"amount": i})

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts, buckets, _ = m.snapshot()
    assert counts == {
        ("ok", "payments.transfer"): 4 * 101,
        ("argument_denied", "payments.transfer"): 4 * 199,
    }
    assert sum(buckets) == 1200


def test_stream_verifier_reports_its_feed_lag_by_itself(
    client: remit.Client,
    make_verifier: Callable[..., remit.Verifier],
    exporter: tuple[CollectorRegistry, str],
) -> None:
    """In stream mode the lag gauge needs no callback: it is the feed's own age."""
    registry, url = exporter
    verifier = make_verifier(client, revocation="stream")
    assert verifier.wait_revocations_ready(10)
    metrics.instrument(verifier, registry)
    lag = _get(_scrape(url), "remit_verifier_revocation_feed_lag_seconds", audience="payments")
    assert 0 <= lag < 2.0  # the default revocation_max_age: past it checks fail closed
    strict = make_verifier(client, revocation="strict")
    metrics.instrument(strict, registry)  # no feed: no sample for it, nothing breaks
    assert _scrape(url)
