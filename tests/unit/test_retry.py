"""``remit.Retry`` (a value object, no grpc) and how ``remit.Client`` reads its target."""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from typing import Any

import grpc
import pytest
import remit
import remit._client
from remit._client import channel_target


def test_retry_is_an_immutable_value() -> None:
    assert remit.Retry() == remit.Retry(attempts=4, initial=0.05, maximum=1.0, multiplier=2.0)
    assert hash(remit.Retry()) == hash(remit.Retry())
    with pytest.raises(AttributeError):
        remit.Retry().attempts = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"attempts": -1},
        {"initial": -0.1},
        {"initial": 2.0, "maximum": 1.0},
        {"multiplier": 0.5},
        {"multiplier": float("nan")},
    ],
)
def test_retry_rejects_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        remit.Retry(**kwargs)


def test_retry_attempts_must_be_an_int() -> None:
    with pytest.raises(TypeError):
        remit.Retry(attempts=True)
    with pytest.raises(TypeError):
        remit.Retry(attempts=2.0)  # type: ignore[arg-type]


def test_backoff_grows_to_the_maximum_with_jitter() -> None:
    r = remit.Retry(attempts=10, initial=0.1, maximum=1.0, multiplier=2.0)
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert [r.backoff(n, rand=lambda: 1.0) for n in range(1, 7)] == pytest.approx(caps)
    assert [r.backoff(n, rand=lambda: 0.0) for n in range(1, 7)] == pytest.approx(
        [c / 2 for c in caps]
    )
    # Huge retry numbers do not overflow.
    assert r.backoff(10_000, rand=lambda: 1.0) == 1.0
    for n in range(1, 20):
        assert 0 <= r.backoff(n) <= 1.0
    with pytest.raises(ValueError):
        r.backoff(0)


def test_retry_needs_no_grpc() -> None:
    code = "import sys, remit; remit.Retry(attempts=2); assert 'grpc' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051"),
        ("localhost:50051", "localhost:50051"),  # one target: grpc resolves it
        ("dns:///remit.internal:50051", "dns:///remit.internal:50051"),
        ("ipv4:10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        ("unix:/run/remit.sock", "unix:/run/remit.sock"),
        ("10.0.0.1:1,10.0.0.2:2", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (" 10.0.0.1:1 , 10.0.0.2:2 ", "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (["10.0.0.1:1", "10.0.0.2:2"], "ipv4:10.0.0.1:1,10.0.0.2:2"),
        (["127.0.0.1:7"], "127.0.0.1:7"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
    ],
)
def test_channel_target(target: Any, expected: str) -> None:
    assert channel_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "",
        [],
        "10.0.0.1:1,",
        "localhost:1,localhost:2",  # host names: give one dns:/// target instead
        "10.0.0.1,10.0.0.2",
        "10.0.0.1:0,10.0.0.2:1",
        "10.0.0.1:1,[::1]:2",
        "10.0.0.1:x,10.0.0.2:1",
    ],
)
def test_channel_target_rejects(target: Any) -> None:
    with pytest.raises(ValueError):
        channel_target(target)


def test_client_rejects_a_retry_that_is_not_a_retry() -> None:
    with pytest.raises(TypeError):
        remit.Client("127.0.0.1:1", api_key="k", retry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(("pushback", "waits"), [("-1", []), ("junk", []), ("30", [0.03] * 2)])
def test_server_pushback_shapes_or_stops_the_retry(
    pushback: str, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``grpc-retry-pushback-ms`` (gRPC retry design): negative or unparsable = do not
    retry; otherwise wait that long instead of the client's own backoff."""
    calls = []

    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        calls.append(1)
        context.set_trailing_metadata((("grpc-retry-pushback-ms", pushback),))
        context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        raise AssertionError("unreachable")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "remit.v1.Remit", {"GetKeys": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    slept: list[float] = []
    monkeypatch.setattr(remit._client, "_sleep", slept.append)
    try:
        retry = remit.Retry(attempts=3, initial=0.5, maximum=1.0)
        with (
            remit.Client(f"127.0.0.1:{port}", api_key="k", retry=retry) as c,
            pytest.raises(remit.Unavailable, match="busy"),
        ):
            c.jwks()
    finally:
        server.stop(None)
    assert slept == pytest.approx(waits)
    assert len(calls) == len(waits) + 1
