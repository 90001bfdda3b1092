"""``in`` / ``not_in`` / ``subset_of`` freeze the call's value into a hashable key. A value
built in Python may share sub-lists by reference (``v = [v] * 8``, seven times: 8^7
leaves once expanded); freezing must follow the sharing, not expand it."""

from __future__ import annotations

from typing import Any

from remit._constraints import _freeze, compile_capability, parse_capability


def shared(levels: int, width: int) -> list[Any]:
    v: list[Any] = []
    for _ in range(levels):
        v = [v] * width
    return v


def copied(levels: int, width: int) -> list[Any]:
    """The same JSON value as ``shared``, with no sharing at all."""
    if levels == 0:
        return []
    return [copied(levels - 1, width) for _ in range(width)]


def test_a_shared_sub_list_freezes_once_into_one_shared_key() -> None:
    key = _freeze(shared(7, 8))
    # every level's items are one and the same object: built once, not 8^7 times
    node = key
    for _ in range(7):
        assert len(node.items) == 8 and all(x is node.items[0] for x in node.items)
        node = node.items[0]
    assert node.items == ()


def test_sharing_does_not_change_what_the_key_equals() -> None:
    for levels, width in ((3, 3), (4, 2), (2, 5)):
        a, b = _freeze(shared(levels, width)), _freeze(copied(levels, width))
        assert a == b and hash(a) == hash(b)
    assert _freeze(shared(3, 3)) != _freeze(shared(3, 2))
    obj: dict[str, Any] = {"k": 1}
    assert _freeze([obj, obj]) == _freeze([{"k": 1.0}, {"k": 1}])
    assert _freeze([obj, obj]) != _freeze([{"k": True}, {"k": 1}])


def test_membership_of_the_reviewers_value_is_decided() -> None:
    value = shared(7, 8)
    for op, expected in (("in", False), ("not_in", True), ("subset_of", False)):
        cap = parse_capability(
            {"action": "a.b", "args": {"x": {op: [copied(3, 2), 1, "s"]}}}
        )
        assert compile_capability(cap, 0).named["x"](value) is expected, op
    # the same operand matches the shared spelling of an equal value
    cap = parse_capability({"action": "a.b", "args": {"x": {"in": [copied(3, 2)]}}})
    assert compile_capability(cap, 0).named["x"](shared(3, 2)) is True
