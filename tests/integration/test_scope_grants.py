"""The scope language end to end: a grant using every operator is created, minted and
enforced by a verifier; malformed ones are INVALID_ARGUMENT naming the node, nothing stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import remit
from remit_service import Server

from .conftest import count_keys

EVERY_OPERATOR: dict[str, Any] = {
    "url": {"url": {"schemes": ["https"], "hosts": ["api.example.com", "*.cdn.example.com"],
                    "path_prefix": "/v1"}},
    "method": {"in": ["GET", "HEAD"], "not_in": ["POST"]},
    "save_to": {"subpath": "/srv/build", "suffix": ".json"},
    "ticket": {"regex": "[A-Z]{2,5}-[0-9]{1,6}", "prefix": "OPS-", "glob": "OPS-*"},
    "timeout": {"gt": 0, "le": 30, "lt": 31, "ge": 1},
    "tags": {"each": {"max_len": 32}, "max_len": 8, "subset_of": ["a", "b", "c"]},
    "notify": {"email_domain": ["example.com"], "optional": True},
    "peer": {"cidr": ["10.0.0.0/8"], "optional": True},
    "meta": {"fields": {"owner": {"eq": "ops"}, "*": {"any": True}}},
    "retry": {"any_of": [{"eq": 0}, {"all_of": [{"ge": 1}, {"le": 3}]}], "not": {"eq": 2}},
}
GOOD_CALL: dict[str, Any] = {
    "url": "https://img.cdn.example.com/v1/a.png",
    "method": "GET",
    "save_to": "/srv/build/out/a.json",
    "ticket": "OPS-12",
    "timeout": 30,
    "tags": ["a", "c"],
    "notify": "ops@example.com",
    "peer": "10.1.2.3",
    "meta": {"owner": "ops", "note": [1, {"x": None}]},
    "retry": 3,
}


def _grant(client: remit.Client, args: dict[str, Any]) -> remit.Grant:
    return client.create_grant(
        subject="user:alice", agent="agent:a", audience=["payments"],
        capabilities=[{"action": "http.fetch", "args": args}], purpose="scope", ttl=600,
    )


def test_every_operator_through_grant_mint_and_verify(
    client: remit.Client, make_verifier: Callable[..., remit.Verifier]
) -> None:
    grant = _grant(client, EVERY_OPERATOR)
    token = client.mint(grant.id, ttl=60)
    verifier = make_verifier(client)
    assert verifier.check(token, action="http.fetch", args=GOOD_CALL).allowed
    bad = {
        "url": "https://img.cdn.example.com@evil.example/v1/a.png",
        "save_to": "/srv/build/%2e%2e/etc/a.json",
        "ticket": "OPS-12\n",
        "tags": ["a", "d"],
        "notify": "ops@example.com.evil.example",
        "peer": "010.1.2.3",
        "meta": {"owner": "root"},
        "retry": 2,
    }
    for name, value in bad.items():
        with pytest.raises(remit.Denied) as info:
            verifier.check(token, action="http.fetch", args={**GOOD_CALL, name: value})
        assert info.value.code is remit.Code.ARGUMENT_DENIED
        assert f"argument {name!r}" in str(info.value)


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"v": {"regex": "(a)\\1"}}, "capabilities[0].args.v.regex"),
        ({"v": {"url": {"schemes": ["https"], "hosts": ["API.example.com"]}}},
         "capabilities[0].args.v.url.hosts[0]"),
        ({"v": {"subpath": "/srv/../etc"}}, "capabilities[0].args.v.subpath"),
        ({"v": {"all_of": [{"ge": 0}, {"gt": 5, "lt": 3}]}}, "capabilities[0].args.v.all_of[1]"),
        ({"v": {"any_of": []}}, "capabilities[0].args.v.any_of"),
        ({"v": {"fields": {"a": {"each": {"lte": 1}}}}},
         "capabilities[0].args.v.fields.a.each.lte"),
    ],
)
def test_bad_capability_is_invalid_argument_naming_the_node(
    service: Server, client: remit.Client, redis_url: str, redis_prefix: str,
    args: dict[str, Any], field: str,
) -> None:
    store = redis.Redis.from_url(redis_url)
    before = count_keys(store, redis_prefix)
    with pytest.raises(remit.InvalidArgument) as info:
        _grant(client, args)
    assert info.value.field == field, str(info.value)
    assert count_keys(store, redis_prefix) == before
    store.close()
