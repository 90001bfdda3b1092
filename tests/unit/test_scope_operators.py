"""The scope-language operators beyond the vectors: Python-only values, messages, helpers,
limits, the compiled-closure design and the shipped JSON Schema.

Language-neutral cases (every operator, its edge cases, invalid capabilities) are in
tests/vectors/constraints.json and invalid_capabilities.json; attacks in
tests/security/test_scope_attacks.py.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remit import ConstraintError, _subpath, _url
from remit._constraints import (
    MAX_CAPABILITY_BYTES,
    NOT_NEGATABLE,
    OPERATORS,
    compile_capability,
    explain_failure,
    parse_capability,
)
from remit._email import compile_email_domain
from remit._netaddr import whatwg_ipv4
from remit._regex import compile_regex
from remit._verifier import _check_args
from remit_service._errors import BadRequest
from remit_service._schema import check_capabilities, schema, schema_errors

from tests.unit.test_constraints import NOT_JSON

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
URL = {"schemes": ["https"], "hosts": ["api.example.com", "*.cdn.example.com", "10.0.0.1"],
       "path_prefix": "/v1"}

# One constraint per new operator (and the nesting ones around `any`, which alone
# would accept anything).
NEW_OPERATORS: list[dict[str, Any]] = [
    {"suffix": ""},
    {"regex": ".*"},
    {"subpath": "/"},
    {"url": URL},
    {"email_domain": "example.com"},
    {"cidr": ["0.0.0.0/0", "::/0"]},
    {"each": {"any": True}},
    {"subset_of": [1, "a", [1], {"a": 1}]},
    {"fields": {"*": {"any": True}}},
    {"all_of": [{"any": True}]},
    {"any_of": [{"any": True}, {"eq": 1}]},
    {"not": {"eq": "never"}},
]


def _check(constraint: dict[str, Any], value: Any) -> str | None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"v": constraint}}))
    denial = _check_args(cap, {"v": value})
    return None if denial is None else denial.code.value


def test_every_operator_is_covered() -> None:
    named = {next(iter(c)) for c in NEW_OPERATORS}
    old = {"eq", "in", "not_in", "lt", "le", "gt", "ge", "max_len", "prefix", "glob", "any"}
    assert named | old == OPERATORS


@pytest.mark.parametrize("constraint", NEW_OPERATORS, ids=lambda c: next(iter(c)))
@pytest.mark.parametrize("value", list(NOT_JSON.values()), ids=list(NOT_JSON))
def test_non_json_values_satisfy_no_new_operator(constraint: dict[str, Any], value: Any) -> None:
    """Only ``any`` itself accepts a value that is not JSON at some depth; wrapping it
    in each / fields / all_of / any_of / not does not."""
    assert _check(constraint, value) == "argument_denied"
    assert isinstance(explain_failure(constraint, value), str)


# -- never an exception: any value, any constraint --------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40)
    | st.sampled_from(["https://api.example.com/v1/x", "/srv/a/../b", "a@example.com",
                       "10.0.0.1", "::ffff:10.0.0.1", "%2e%2e", "a" * 5000, "\ud800"])
    | st.sampled_from(list(NOT_JSON.values())),  # and values JSON cannot spell
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=5),
    max_leaves=12,
)
POOL = [
    *NEW_OPERATORS,
    {"each": {"fields": {"a": {"regex": "[a-z]+"}, "b": {"optional": True, "cidr": "10.0.0.0/8"}}}},
    {"any_of": [{"subpath": "/srv"}, {"url": URL}, {"each": {"email_domain": ["example.com"]}}]},
    {"not": {"any_of": [{"suffix": ".exe"}, {"subset_of": [True]}]}},
    {"all_of": [{"max_len": 3}, {"each": {"gt": 0, "le": 10}}]},
    {"fields": {"x": {"not": {"in": [None]}}, "*": {"max_len": 2}}},
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(constraint=st.sampled_from(POOL), value=json_values)
def test_any_value_gets_a_decision(constraint: dict[str, Any], value: Any) -> None:
    code = _check(constraint, value)
    assert code in (None, "argument_denied")
    if code is not None:
        why = explain_failure(constraint, value)
        assert why.split(maxsplit=1)[0].rstrip(":").split("[")[0].split(".")[0] in OPERATORS, why


# -- messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "value", "message"),
    [
        ({"each": {"le": 5}}, [1, 7], "each[1]: le 5 does not hold"),
        ({"each": {"le": 5}}, "x", "each: value is not a list"),
        ({"fields": {"city": {"eq": "Paris"}}}, {"city": "Lyon"}, "fields.city: eq 'Paris'"),
        ({"fields": {"city": {"eq": "Paris"}}}, {"city": "Paris", "x": 1},
         "field 'x' is not allowed"),
        ({"fields": {"city": {"eq": "Paris"}}}, {}, "field 'city' is required"),
        ({"all_of": [{"ge": 0}, {"le": 3}]}, 4, "all_of[1]: le 3 does not hold"),
        ({"any_of": [{"eq": 1}, {"eq": 2}]}, 3, "any_of: none of the 2 alternatives"),
        ({"not": {"eq": 1}}, 1, "not: the negated constraint holds"),
        ({"url": URL}, "http://api.example.com/v1", "url: scheme 'http' is not allowed"),
        ({"url": URL}, "https://evil.example/v1", "url: host 'evil.example' is not allowed"),
        ({"url": URL}, "https://api.example.com:8443/v1", "url: port 8443 is not allowed"),
        ({"url": URL}, "https://api.example.com/v2", "url: path '/v2' is outside '/v1'"),
        ({"url": URL}, "https://a@api.example.com/v1", "url: not an unambiguous absolute URL"),
        ({"url": URL}, "https://api.example.com/v1//x", "url: ambiguous path"),
        ({"subpath": "/srv"}, "/etc", "subpath: outside '/srv'"),
        ({"subpath": "/srv"}, "/srv/%252e", "subpath: not a plain absolute path"),
        ({"regex": "a+"}, "a" * 5000, "regex: value longer than 4096"),
        ({"regex": "a+"}, 5, "regex: value is not a string"),
        ({"subset_of": ["a"]}, ["a", "b"], "subset_of: element [1]"),
        ({"cidr": "10.0.0.0/8"}, "11.0.0.1", "cidr '10.0.0.0/8' does not hold"),
        ({"email_domain": "example.com"}, "a@b.example", "email_domain 'example.com'"),
    ],
)
def test_denial_names_the_failing_operator(
    constraint: dict[str, Any], value: Any, message: str
) -> None:
    cap = compile_capability(parse_capability({"action": "t.x", "args": {"amount": constraint}}))
    denial = _check_args(cap, {"amount": value})
    assert denial is not None
    assert "argument 'amount'" in str(denial)
    assert message in str(denial), str(denial)


# -- helpers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x", "0.0.0.0"),
        ("0", "0.0.0.0"),
        ("4294967295", "255.255.255.255"),
        ("1.2.3.4.", "1.2.3.4"),
        ("4294967296", None),
        ("1.2.3.256", None),
        ("1.2.65536", None),
        ("256.1", None),
        ("08", None),
        ("0x1g", None),
        ("1..2", None),
        ("1.2.3.4.5", None),
        ("1_0", None),
    ],
)
def test_whatwg_ipv4(host: str, ip: str | None) -> None:
    assert whatwg_ipv4(host) == ip


@pytest.mark.parametrize(
    ("path", "normalized"),
    [
        ("/a/b", "/a/b"),
        ("", "/"),
        ("/a/./b", "/a/b"),
        ("/a/../b", "/b"),
        ("/../a", "/a"),
        ("/a/..", "/"),
        ("/a/.", "/a/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/.%2e", "/"),
        ("/a//b", None),
        ("/a/%2fb", None),
        ("/a/..;/b", None),
        ("/a/.;x/b", None),
        ("/a/b;x", "/a/b;x"),
    ],
)
def test_normalize_url_path(path: str, normalized: str | None) -> None:
    assert _url.normalize_url_path(path) == normalized


@pytest.mark.parametrize(
    ("value", "normalized"),
    [
        ("/srv/a", "/srv/a"),
        ("/srv/a/", "/srv/a"),
        ("//srv//a", "/srv/a"),
        ("/srv/./a/../b", "/srv/b"),
        ("/srv/%61", "/srv/a"),
        ("/srv/caf%C3%A9", "/srv/caf\u00e9"),
        ("/srv/%e9", None),
        ("/srv/%2561", None),
        ("/..", None),
        ("srv", None),
        ("/srv/\ud800", "/srv/\ud800"),
        ("/srv/%41\ud800", None),
        ("/srv/a%2fb", None),
        ("/srv/a%2Fb", None),
        ("/srv/a%5cb", None),
        ("/srv/a%5Cb", None),
        ("/srv/a%00", None),
        (5, None),
    ],
)
def test_normalize_subpath(value: Any, normalized: str | None) -> None:
    assert _subpath.normalize_subpath(value) == normalized


@pytest.mark.parametrize(
    ("value", "readings"),
    [
        ("/srv/a/../b", ("/srv/b", "/srv/b")),
        ("/srv/%62uild/x", ("/srv/build/x", "/srv/%62uild/x")),
        ("/srv/x/%2e%2e/y", ("/srv/y", "/srv/x/%2e%2e/y")),
        ("/srv/x/%2e%2e/..", ("/", "/srv/x")),
        ("/srv/100%", ("/srv/100%", "/srv/100%")),
        ("/srv/a%2fb/../../x", None),
    ],
)
def test_subpath_readings(value: str, readings: tuple[str, str] | None) -> None:
    """(decoded, raw): the value must stay under the root in both."""
    assert _subpath.subpath_readings(value) == readings


LOCAL_ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+='-")


@pytest.mark.parametrize("char", [chr(c) for c in range(0x20, 0x7F)])
def test_email_local_part_character_set(char: str) -> None:
    """Exactly the documented set (docs/scope-language.md, email_domain): letters, digits
    and ``_ + - = '`` inside atoms, ``.`` only between atoms."""
    holds = compile_email_domain("example.com")
    assert holds(f"a{char}b@example.com") is (char in LOCAL_ALLOWED or char == ".")
    assert holds(f"{char}@example.com") is (char in LOCAL_ALLOWED)


def test_email_local_part_length() -> None:
    holds = compile_email_domain("example.com")
    assert holds("x" * 64 + "@example.com")
    assert not holds("x" * 65 + "@example.com")
    assert not holds("\u00e9@example.com") and not holds("a@example.com\n")


@pytest.mark.parametrize("op", sorted(NOT_NEGATABLE))
def test_not_over_parsing_operator_message(op: str) -> None:
    operand = {"url": URL, "cidr": "10.0.0.0/8", "email_domain": "example.com",
               "subpath": "/srv"}[op]
    with pytest.raises(ConstraintError) as info:
        parse_capability({"action": "t.x", "args": {"v": {"not": {"all_of": [{op: operand}]}}}})
    assert info.value.path == f"args.v.not.all_of[0].{op}"
    assert info.value.message.startswith(f"{op!r} cannot be under 'not' (at args.v.not)")
    assert "list what is allowed instead" in info.value.message
    parse_capability({"action": "t.x", "args": {"v": {"all_of": [{op: operand}]}}})


def test_parse_url() -> None:
    parsed = _url.parse_url("HTTPS://Api.Example.COM.:0443/v1/x?q#f")
    assert parsed == _url.ParsedUrl("https", "api.example.com", False, 443, "/v1/x")
    assert _url.parse_url("https://[::FFFF:10.0.0.1]:8443") == _url.ParsedUrl(
        "https", "10.0.0.1", True, 8443, ""
    )
    assert _url.parse_url("https://0xa.1/") == _url.ParsedUrl("https", "10.0.0.1", True, None, "/")


# -- the compiled-closure design ------------------------------------------------------


def test_warm_check_does_no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    """After compile_capability, a check never parses an operand again."""
    cap = compile_capability(parse_capability({"action": "t.x", "args": {
        "u": {"url": URL}, "p": {"subpath": "/srv"}, "r": {"regex": "[a-z]+"},
        "n": {"cidr": "10.0.0.0/8"}, "e": {"email_domain": "example.com"},
    }}))

    def boom(*_: Any) -> Any:
        raise AssertionError("operand parsed on the hot path")

    import remit._constraints as constraints

    for module, name in [(_url, "parse_url_operand"), (_subpath, "subpath_root"),
                         (constraints, "compile_regex"), (constraints, "parse_networks"),
                         (constraints, "parse_domains"), (constraints, "_compile_constraint")]:
        monkeypatch.setattr(module, name, boom)
    args = {"u": "https://api.example.com/v1/x", "p": "/srv/a", "r": "abc", "n": "10.1.1.1",
            "e": "a@example.com"}
    assert _check_args(cap, args) is None


def test_regex_compiles_once_per_pattern() -> None:
    assert compile_regex("[a-z]{3}") is compile_regex("[a-z]{3}")


# -- validation limits and contradictions ------------------------------------------------


def test_capability_size_limit_is_exact() -> None:
    def cap(n: int) -> dict[str, Any]:
        return {"action": "t.x", "args": {f"a{i}": {"prefix": "p" * n} for i in range(5)}}

    base = len(json.dumps(cap(0), separators=(",", ":")).encode())
    fill = (MAX_CAPABILITY_BYTES - base) // 5
    exact = cap(fill)
    last = json.dumps(exact, separators=(",", ":")).encode()
    exact["args"]["a0"]["prefix"] += "p" * (MAX_CAPABILITY_BYTES - len(last))
    assert len(json.dumps(exact, separators=(",", ":")).encode()) == MAX_CAPABILITY_BYTES
    parse_capability(exact)
    exact["args"]["a0"]["prefix"] += "p"
    with pytest.raises(ConstraintError) as info:
        parse_capability(exact)
    assert info.value.path == ""


def test_size_counts_utf8_bytes() -> None:
    euro = {"action": "t.x", "args": {f"a{i}": {"prefix": "\u20ac" * 1400} for i in range(4)}}
    with pytest.raises(ConstraintError):  # 5600 characters, 16800 bytes
        parse_capability(euro)


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        ({"gt": 5, "lt": 3}, "the bounds leave no number"),
        ({"le": 5, "prefix": "a"}, "le and prefix need different value types"),
        ({"eq": 7, "le": 5}, "no value of 'eq' satisfies the other operators"),
        ({"in": [1, 2], "gt": 2}, "no value of 'in' satisfies the other operators"),
    ],
)
def test_contradiction_messages(constraint: dict[str, Any], message: str) -> None:
    with pytest.raises(ConstraintError) as info:
        parse_capability({"action": "t.x", "args": {"v": constraint}})
    assert info.value.path == "args.v" and info.value.message == message


def test_optional_inside_fields_but_not_inside_each() -> None:
    inner = {"eq": 1, "optional": True}
    parse_capability({"action": "t.x", "args": {"v": {"fields": {"a": inner}}}})
    with pytest.raises(ConstraintError) as info:
        parse_capability({"action": "t.x", "args": {"v": {"not": inner}}})
    assert info.value.path == "args.v.not.optional"


# -- the JSON Schema ---------------------------------------------------------------------

# Invalid vectors the schema cannot express: left to the semantic checks (RE2 compilation,
# normalized roots / hosts / prefixes, network math, contradictions, depth, node count,
# size, deep operands), plus API-form-only rules (the schema also describes the token
# form, where `type` and `limits` are allowed).
SEMANTIC_ONLY = {
    "eq_operand_too_deep", "eq_operand_object_too_deep", "in_element_too_deep",
    "not_in_element_too_deep", "limits_member_not_in_api_form", "type_member_not_in_api_form",
    "not_any_allows_nothing", "limit_depth_9", "limit_depth_9_each", "limit_1001_nodes",
    "limit_over_16_kib", "cidr_host_bits_set", "cidr_bad_element", "cidr_ipv4_mapped_network",
    "cidr_zone_id",
}
SEMANTIC_PREFIXES = ("contradiction_", "regex_", "subpath_root_", "url_host_", "url_path_prefix_",
                     "negated_")


def _vector_caps(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((VECTORS / name).read_text("utf-8"))["cases"]
    return cases


def test_schema_is_shipped_in_the_package() -> None:
    text = resources.files("remit").joinpath("schema/capability.schema.json").read_text("utf-8")
    assert json.loads(text) == schema()
    assert schema()["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(schema()["$defs"]["operators"]["properties"]) == OPERATORS


def test_schema_accepts_every_valid_vector() -> None:
    for case in _vector_caps("constraints.json"):
        assert schema_errors(case["capability"]) is None, case["name"]


def test_schema_rejects_invalid_vectors_it_can_express() -> None:
    passed = {
        c["name"] for c in _vector_caps("invalid_capabilities.json")
        if schema_errors(c["capability"]) is None
    }
    unexpected = {n for n in passed - SEMANTIC_ONLY if not n.startswith(SEMANTIC_PREFIXES)}
    assert unexpected == set()
    assert "regex_not_string" not in passed and "url_missing_hosts" not in passed


def test_schema_check_names_the_node() -> None:
    with pytest.raises(BadRequest) as info:
        check_capabilities([{"action": "t.x"}, {"action": "t.y", "args": {"v": {"regex": 5}}}],
                           "capabilities")
    assert info.value.field == "capabilities[1].args.v.regex"
    check_capabilities([{"action": "t.x", "args": {"v": {"url": URL, "optional": True}}}], "c")
