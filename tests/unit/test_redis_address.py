"""Redis addresses (remit._redis): the accepted forms, clear errors for the rest, and
passwords that never show up in an error or a config message. No server needed: a
single-server client connects on first use, and bad addresses fail before connecting."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection
from remit._redis import check_address, connect, is_address, is_cluster, redact
from remit_service._config import ConfigError, load_config

SECRET = "hunter2-very-secret"


@pytest.mark.parametrize(
    ("url", "connection_class", "where"),
    [
        ("redis://127.0.0.1:6379/3", redis.Connection, {"host": "127.0.0.1", "db": 3}),
        ("rediss://cache.example:6380/0", SSLConnection, {"host": "cache.example", "port": 6380}),
        ("unix:///run/redis/redis.sock?db=2", UnixDomainSocketConnection,
         {"path": "/run/redis/redis.sock", "db": 2}),
    ],
)
def test_single_server_forms(url: str, connection_class: type, where: dict[str, object]) -> None:
    client = connect(url, timeout=0.25)
    try:
        assert not is_cluster(client)
        pool = client.connection_pool
        assert pool.connection_class is connection_class
        for name, value in where.items():
            assert pool.connection_kwargs[name] == value
        assert pool.connection_kwargs["socket_timeout"] == 0.25  # tight, fail-closed timeouts
    finally:
        client.close()


def test_a_ready_client_passes_through_and_is_not_owned() -> None:
    client = redis.Redis()
    assert connect(client) is client
    assert not is_address(client)
    assert is_address("redis://x:1") and is_address(["redis://x:1", "redis://y:2"])


@pytest.mark.parametrize(
    "address",
    [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis:/127.0.0.1",
        "",
        "cluster://a:1",
        "redis+cluster://",
        "redis+cluster://a:1,,b:2",
        "redis+cluster://a:1,b:2/3",  # a cluster has only database 0
        "redis+cluster://a:1,b:notaport",
        "redis+cluster://a",  # nodes need a port
        [],
        ["redis://a:1", "unix:///tmp/x.sock"],  # cluster nodes are TCP
        ["redis://a:1", "rediss://b:2"],  # one TLS setting for all nodes
        ["redis://u:p@a:1", "redis://u:q@b:2"],  # one set of credentials
    ],
)
def test_other_addresses_are_refused_before_connecting(address: object) -> None:
    with pytest.raises(ValueError, match="Redis") as refused:
        connect(address)
    with pytest.raises(ValueError):
        check_address(address)  # type: ignore[arg-type]
    if isinstance(address, str) and address.startswith(("http", "127", "cluster")):
        assert "redis+cluster://" in str(refused.value)  # names the accepted forms


@pytest.mark.parametrize(
    "address",
    [
        f"http://admin:{SECRET}@db.example:6379",
        f"redis://:{SECRET}@db.example:notaport/0",
        f"redis+cluster://admin:{SECRET}@a:1,b:2/5",
        f"rediss+cluster://:{SECRET}@a:1,,b:2",
        [f"redis://:{SECRET}@a:1", "redis://:other@b:2"],
        [f"redis://:{SECRET}@a:1", f"unix://:{SECRET}@/tmp/s.sock"],
    ],
)
def test_passwords_never_appear_in_errors(address: object) -> None:
    with pytest.raises(ValueError) as refused:
        connect(address)
    assert SECRET not in str(refused.value)
    assert "***" in str(refused.value)


def test_an_unreachable_cluster_is_tried_on_each_use_and_its_error_masks_the_password() -> None:
    with connect(f"redis+cluster://:{SECRET}@127.0.0.1:1,127.0.0.1:2", timeout=0.2) as client:
        assert is_cluster(client)  # created although no node answers (LazyCluster)
        for _ in range(2):  # every use tries again, and fails as a Redis error
            with pytest.raises(redis.ConnectionError) as refused:
                client.get("k")
            assert SECRET not in str(refused.value)
            assert "127.0.0.1:1" in str(refused.value)
        script = client.register_script("return 1")  # needs no connection
        assert script.sha == hashlib.sha1(b"return 1").hexdigest()
        with pytest.raises(redis.ConnectionError):
            script(keys=["k"])


def test_redact() -> None:
    assert redact(f"rediss://user:{SECRET}@h:1/0") == "rediss://***@h:1/0"
    assert redact(f"unix://:{SECRET}@/run/r.sock") == "unix://***@/run/r.sock"
    assert redact("redis://h:1") == "redis://h:1"
    assert redact([f"redis://:{SECRET}@a:1"]) == "[redis://***@a:1]"


def _config(tmp_path: Path, redis_value: str) -> Path:
    path = tmp_path / "remit.toml"
    path.write_text(
        f'issuer = "i"\nkeys_dir = "k"\nredis = {redis_value}\n'
        '[apps.a]\napi_key_sha256 = "' + "0" * 64 + '"\nactions = ["*"]\naudiences = ["*"]\n',
        encoding="utf-8",
    )
    return path


def test_config_accepts_every_form(tmp_path: Path) -> None:
    for value, expected in [
        ('"rediss://h:1/0"', "rediss://h:1/0"),
        ('"unix:///run/redis.sock"', "unix:///run/redis.sock"),
        ('"redis+cluster://a:1,b:2"', "redis+cluster://a:1,b:2"),
        ('["redis://a:1", "redis://b:2"]', ("redis://a:1", "redis://b:2")),
    ]:
        assert load_config(_config(tmp_path, value)).redis == expected


@pytest.mark.parametrize(
    "value", [f'"tcp://:{SECRET}@h:1"', f'["redis://:{SECRET}@h:1/4", "redis://:x@b:2"]', "5"]
)
def test_config_refuses_other_forms_without_echoing_the_password(
    tmp_path: Path, value: str
) -> None:
    with pytest.raises(ConfigError, match=r"^redis: ") as refused:
        load_config(_config(tmp_path, value))
    assert SECRET not in str(refused.value)


def test_the_demo_does_not_print_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    from remit_service._demo import run_demo

    assert run_demo(redis_url=f"redis://:{SECRET}@127.0.0.1:1/0") == 1
    out = capsys.readouterr()
    assert "no Redis at redis://***@127.0.0.1:1/0" in out.out + out.err
    assert SECRET not in out.out + out.err
