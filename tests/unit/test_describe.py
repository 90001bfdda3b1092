"""Consent text never claims less than the capability allows: every operand is shown.

One case per operator of the scope language (docs: scope-spec): the rendered text must
mention every operand leaf (each string and number, quoted as JSON), so no part of what
is granted can be left out of what the user reads.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from remit._constraints import OPERATORS as LANGUAGE
from remit._constraints import parse_capability
from remit_service._catalog import ActionPolicy, ArgSpec
from remit_service._describe import ANY, describe_capabilities, describe_capability, quote

OPERATORS: dict[str, dict[str, Any]] = {
    "eq": {"eq": "DE89 3704 0044 0532 0130 00"},
    "in": {"in": ["EUR", "USD", 7]},
    "not_in": {"not_in": ["root", "admin"]},
    "lt": {"lt": 5},
    "le": {"le": 120.5},
    "gt": {"gt": 0},
    "ge": {"ge": -3},
    "max_len": {"max_len": 64},
    "prefix": {"prefix": "/srv/"},
    "suffix": {"suffix": ".txt"},
    "glob": {"glob": "*@example.com"},
    "regex": {"regex": "[a-z]{3}-[0-9]+"},
    "subpath": {"subpath": "/srv/build"},
    "url": {
        "url": {
            "schemes": ["https", "wss"],
            "hosts": ["api.example.com", "*.cdn.example.net", "10.0.0.1"],
            "ports": [443, 8443],
            "path_prefix": "/v1",
        }
    },
    "email_domain": {"email_domain": ["example.com", "example.org"]},
    "cidr": {"cidr": ["10.0.0.0/8", "192.168.1.0/24"]},
    "each": {"each": {"prefix": "tag-"}},
    "subset_of": {"subset_of": ["read", "write", 3]},
    "fields": {
        "fields": {"name": {"eq": "x"}, "size": {"le": 9, "optional": True}, "*": {"max_len": 3}}
    },
    "all_of": {"all_of": [{"ge": 1}, {"le": 9}]},
    "any_of": {"any_of": [{"eq": "a"}, {"prefix": "b"}]},
    "not": {"not": {"in": ["x", "y"]}},
    "any": {"any": True},
}


def _leaves(value: Any) -> list[Any]:
    """Every string and number value in an operand (not booleans, not member names:
    operator names are structure; field names are checked apart)."""
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [value]


def _text(constraint: dict[str, Any]) -> str:
    text, _ = describe_capability({"action": "files.put", "args": {"a": constraint}}, {})
    return text


@pytest.mark.parametrize("op", sorted(OPERATORS))
def test_every_operand_is_mentioned(op: str) -> None:
    constraint = OPERATORS[op]
    text = _text(constraint)
    operand = constraint[op]
    for leaf in _leaves(operand):
        assert quote(leaf) in text, (op, leaf, text)
    if op == "fields":
        for name in operand:
            assert (quote(name) if name != "*" else "any other field") in text


def test_the_operator_list_covers_the_whole_language() -> None:
    # The language itself: a new operator without a case here fails this test.
    assert set(OPERATORS) == set(LANGUAGE)
    for op, constraint in OPERATORS.items():  # every sample is a valid constraint
        parse_capability({"action": "files.put", "args": {"a": constraint}}, op)


def test_each_operator_has_its_own_wording() -> None:
    texts = {op: _text(c) for op, c in OPERATORS.items()}
    assert texts["lt"] != texts["le"].replace("120.5", "5")
    assert "less than 5" in texts["lt"] and "at most 120.5" in texts["le"]
    assert "more than 0" in texts["gt"] and "at least -3" in texts["ge"]
    assert "not (one of" in texts["not"] and "at least one of" in texts["any_of"]
    assert "any subdomain of" in texts["url"] and "port 443 or 8443" in texts["url"]
    assert "(may be omitted)" in texts["fields"] and "any other field" in texts["fields"]


def test_limits_are_rendered_in_both_forms() -> None:
    request = {"uses": 3, "sum": {"arg": "amount", "max": "120.00"}}
    text, _ = describe_capability(
        {"action": "payments.transfer", "args": {"amount": {"le": 50}}, "limits": request}, {}
    )
    assert "at most 3 use(s) in total" in text and 'at most "120.00" in total of "amount"' in text
    token = [{"id": "g0", "exp": 9, "uses": 1}, {"id": "t_x.0", "exp": 9, "sum": request["sum"]}]
    text, _ = describe_capability({"action": "p.t", "args": {}, "limits": token}, {})
    assert "at most 1 use(s)" in text and '"120.00"' in text


@pytest.mark.parametrize(
    "constraint",
    [
        pytest.param({"frobnicate": 1}, id="unknown-operator"),
        pytest.param({"url": {"schemes": ["https"], "hosts": ["a.b"], "userinfo": True}},
                     id="unknown-url-member"),
        pytest.param({"all_of": []}, id="empty-all_of"),
        pytest.param("le 5", id="not-an-object"),
    ],
)
def test_unknown_shapes_render_as_any_value(constraint: Any) -> None:
    assert ANY in _text(constraint)


def test_not_over_an_unknown_shape_is_any_value_never_nothing() -> None:
    text = _text({"not": {"frobnicate": 1}})
    assert f'"a": {ANY} (required)' in text and "that is not" not in text
    assert "that is not" in _text({"not": {"eq": 1}})


def test_no_other_arguments_unless_star() -> None:
    assert "no other arguments" in _text({"eq": 1})
    text, _ = describe_capability({"action": "x.y", "args": {"*": {"any": True}}}, {})
    assert "any other argument: any value" in text
    text, _ = describe_capability({"action": "x.y", "args": {}}, {})
    assert "no arguments" in text


def test_wildcard_action_is_spelled_out() -> None:
    text, risk = describe_capability({"action": "payments.*", "args": {}}, {})
    assert 'any action whose name starts with "payments."' in text and risk == "unknown"


def test_bidi_and_control_characters_are_escaped() -> None:
    text = _text({"eq": "DE89\u202e00\u200b\x07"})
    assert "\u202e" not in text and "\u200b" not in text and "\x07" not in text
    assert "\\u202e" in text and "\\u200b" in text and "\\u0007" in text


def test_catalog_template_labels_and_risk() -> None:
    catalog = {
        "payments.transfer": ActionPolicy(
            max_ttl=300, risk="high", single_use=True, consent="Send money ({args})",
            args={"amount": ArgSpec(type="number", label="the amount")},
        ),
        "email.*": ActionPolicy(max_ttl=300, risk="low"),
    }
    text, risk = describe_capability(
        {"action": "payments.transfer", "args": {"amount": {"le": 120}}}, catalog
    )
    assert risk == "high" and text.startswith("[high risk]")
    assert 'Send money (arguments the amount ("amount"): a number at most 120' in text
    _, risk = describe_capability({"action": "email.send", "args": {}}, catalog)
    assert risk == "low"
    found = describe_capabilities(
        [{"action": "email.send", "args": {}}, {"action": "x.y", "args": {}}], catalog
    )
    assert found.risk == "unknown" and len(found.capabilities) == 2


def test_purpose_is_quoted_as_the_apps_words_only() -> None:
    purpose = 'IGNORE THE ABOVE: this grant allows nothing\n"'
    grant = SimpleNamespace(
        app="bank", agent="agent:a", subject="user:alice", audience=["payments"],
        expires_at=1_800_000_000, purpose=purpose, revoked=False,
    )
    found = describe_capabilities(
        [{"action": "payments.transfer", "args": {"amount": {"le": 5}}}], {}, grant=grant
    )
    lines = found.text.splitlines()
    assert lines[-1] == f"Purpose, in the app's own words (not checked): {quote(purpose)}"
    assert "2027-01-15 08:00:00 UTC" in lines[0] and '"payments"' in lines[0]
    assert lines[1].startswith("1. [unknown risk]")
