"""Narrowing escapes: a child scope that looks narrower but allows more than its parent.

Each test is one trick known from capability systems (an ``any_of`` branch that widens,
an empty ``all_of``/``any_of``, URL patterns that widen the scheme, host, port or path,
a glob or regex in place of a prefix, ``not`` inversions, ``"*"`` in ``fields``,
``each``/``subset_of`` confusion, ``optional`` making an argument absent, action
wildcards). Each asserts three things:

1. ``is_narrower(child, parent)`` is False, for a single capability, as a scope, and in
   the token's ``authorization_details`` form;
2. the escape is real: a token carrying the child scope lets ``Verifier.check`` allow a
   *witness* call that a token carrying the parent scope denies (so the refusal above
   is required, not merely conservative);
3. a safe variant of the same child *is* accepted, so the test can fail.
"""

from __future__ import annotations

from typing import Any

import pytest
import remit
from remit import Capability, Code, ConstraintError, Denied, is_narrower

from tests.tokens import AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

KEY = IssuerKey()
VERIFIER = remit.Verifier(
    KEY.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off", clock=lambda: NOW
)
ACTION = "tool.call"


def cap(action: str = ACTION, **args: Any) -> dict[str, Any]:
    return {"action": action, "args": args}


def _token(scope: dict[str, Any]) -> str:
    entry = {"type": "remit.capability", **scope}
    return sign(claims(authorization_details=[entry]), KEY)


def _allowed(scope: dict[str, Any], action: str, args: dict[str, Any]) -> Code | None:
    try:
        VERIFIER.check(_token(scope), action=action, args=args)
    except Denied as denied:
        return denied.code
    return None


def assert_escape_refused(
    child: dict[str, Any],
    parent: dict[str, Any],
    witness: dict[str, Any],
    *,
    action: str = ACTION,
    denied_as: Code = Code.ARGUMENT_DENIED,
) -> None:
    assert is_narrower(child, parent) is False
    assert is_narrower([child], [parent]) is False
    token_form = {"type": "remit.capability", **child}
    assert is_narrower([token_form], [{"type": "remit.capability", **parent}]) is False
    # The escape is real: the child allows the witness call, the parent denies it.
    assert _allowed(child, action, witness) is None, "the witness must be allowed by the child"
    assert _allowed(parent, action, witness) is denied_as


def assert_safe(child: dict[str, Any], parent: dict[str, Any]) -> None:
    assert is_narrower(child, parent) is True


# --- combinators ----------------------------------------------------------------------------


def test_any_of_branch_wider_than_the_parent() -> None:
    parent = cap(amount={"le": 100})
    child = cap(amount={"any_of": [{"le": 50}, {"le": 1000}]})
    assert_escape_refused(child, parent, {"amount": 500})
    assert_safe(cap(amount={"any_of": [{"le": 50}, {"eq": 100}]}), parent)


def test_any_of_child_needs_every_branch_not_one() -> None:
    parent = cap(to={"any_of": [{"eq": "alice"}, {"eq": "bob"}]})
    child = cap(to={"any_of": [{"eq": "alice"}, {"prefix": "b"}]})
    assert_escape_refused(child, parent, {"to": "bobby"})
    assert_safe(cap(to={"eq": "bob"}), parent)


def test_all_of_with_one_wider_member() -> None:
    parent = cap(amount={"le": 100})
    child = cap(amount={"all_of": [{"ge": 0}, {"le": 1000}]})
    assert_escape_refused(child, parent, {"amount": 500})
    assert_safe(cap(amount={"all_of": [{"ge": 0}, {"le": 100}]}), parent)


@pytest.mark.parametrize("op", ["all_of", "any_of"])
@pytest.mark.parametrize("side", ["child", "parent"])
def test_empty_all_of_or_any_of(op: str, side: str) -> None:
    """An empty ``all_of`` holds vacuously (allows everything) and an empty ``any_of``
    never holds (as a child, "narrower than anything" by vacuous truth): both are refused
    as malformed, and a pre-built ``Capability`` that carries one is never narrower."""
    normal = cap(amount={"le": 100})
    empty = cap(amount={op: []})
    pair = (empty, normal) if side == "child" else (normal, empty)
    with pytest.raises(ConstraintError) as info:
        is_narrower(*pair)
    assert "amount" in info.value.path
    built = Capability(action=ACTION, args={"amount": {op: []}})
    plain = Capability(action=ACTION, args={"amount": {"le": 100}})
    assert is_narrower(*((built, plain) if side == "child" else (plain, built))) is False


def test_not_inversion_excludes_less() -> None:
    parent = cap(path={"not": {"prefix": "/etc"}})
    child = cap(path={"not": {"prefix": "/etc/passwd"}})
    assert_escape_refused(child, parent, {"path": "/etc/shadow"})
    assert_safe(cap(path={"not": {"prefix": "/e"}}), parent)


def test_not_in_child_excludes_less() -> None:
    parent = cap(user={"not_in": ["root", "admin"]})
    child = cap(user={"not_in": ["root"]})
    assert_escape_refused(child, parent, {"user": "admin"})
    assert_safe(cap(user={"not_in": ["admin", "root", "sys"]}), parent)


def test_double_negation_in_place_of_not_in() -> None:
    parent = cap(user={"not_in": ["root"]})
    child = cap(user={"not": {"not_in": ["root"]}})  # = exactly "root"
    assert_escape_refused(child, parent, {"user": "root"})
    assert_safe(cap(user={"not": {"in": ["root", "admin"]}}), cap(user={"not": {"eq": "root"}}))


# --- strings and paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "witness"),
    [
        ("/sr*", "/srx/etc"),
        ("*/srv/*", "/etc/srv/x"),
        ("/srv?*", "/srvx/a"),
        ("?srv/*", "xsrv/a"),
    ],
)
def test_glob_wider_than_the_prefix_it_replaces(glob: str, witness: str) -> None:
    parent = cap(path={"prefix": "/srv/"})
    assert_escape_refused(cap(path={"glob": glob}), parent, {"path": witness})
    assert_safe(cap(path={"glob": "/srv/a*"}), parent)


def test_regex_in_place_of_a_prefix() -> None:
    parent = cap(name={"prefix": "abc"})
    assert_escape_refused(cap(name={"regex": "abc.*|x"}), parent, {"name": "x"})
    assert_safe(cap(name={"prefix": "abcd"}), parent)


def test_prefix_in_place_of_a_regex() -> None:
    """``prefix abc`` looks like ``abc.*`` but RE2's ``.`` does not match a newline."""
    parent = cap(name={"regex": "abc.*"})
    assert_escape_refused(cap(name={"prefix": "abc"}), parent, {"name": "abc\n"})
    assert_safe(cap(name={"regex": "abc.*"}), parent)


def test_prefix_in_place_of_a_subpath() -> None:
    parent = cap(path={"subpath": "/srv/build"})
    child = cap(path={"prefix": "/srv/build/"})
    assert_escape_refused(child, parent, {"path": "/srv/build/../../etc/passwd"})
    assert_safe(cap(path={"subpath": "/srv/build/out"}), parent)


def test_subpath_root_without_segment_boundary() -> None:
    parent = cap(path={"subpath": "/srv/build"})
    assert_escape_refused(cap(path={"subpath": "/srv/buildx"}), parent, {"path": "/srv/buildx/a"})


# --- URLs -------------------------------------------------------------------------------------

API = {"schemes": ["https"], "hosts": ["api.example.com"], "path_prefix": "/v1"}


def _url(**changes: Any) -> dict[str, Any]:
    return cap(url={"url": {**API, **changes}})


def test_url_child_widens_the_scheme() -> None:
    assert_escape_refused(
        _url(schemes=["https", "http"]), _url(), {"url": "http://api.example.com/v1/x"}
    )
    assert_safe(_url(), _url(schemes=["https", "http"]))


def test_url_child_widens_the_host_with_a_wildcard() -> None:
    assert_escape_refused(
        _url(hosts=["*.example.com"]), _url(), {"url": "https://evil.example.com/v1"}
    )
    assert_safe(_url(hosts=["api.example.com"]), _url(hosts=["*.example.com"]))


def test_url_apex_is_not_under_its_wildcard() -> None:
    assert_escape_refused(
        _url(hosts=["example.com"]), _url(hosts=["*.example.com"]), {"url": "https://example.com/v1"}
    )
    assert_safe(_url(hosts=["*.a.example.com"]), _url(hosts=["*.example.com"]))


def test_url_child_adds_a_port() -> None:
    assert_escape_refused(
        _url(ports=[443, 8443]), _url(), {"url": "https://api.example.com:8443/v1"}
    )
    assert_safe(_url(ports=[443]), _url())


def test_url_path_prefix_without_a_segment_boundary() -> None:
    assert_escape_refused(_url(path_prefix="/v1x"), _url(), {"url": "https://api.example.com/v1x"})
    assert_escape_refused(_url(path_prefix="/v"), _url(), {"url": "https://api.example.com/v/2"})
    child = cap(url={"url": {"schemes": ["https"], "hosts": ["api.example.com"]}})
    assert_escape_refused(child, _url(), {"url": "https://api.example.com/admin"})
    assert_safe(_url(path_prefix="/v1/users"), _url())


# --- lists and objects -------------------------------------------------------------------------


def test_fields_star_widens_an_object() -> None:
    parent = cap(body={"fields": {"to": {"eq": "bob"}}})
    child = cap(body={"fields": {"to": {"eq": "bob"}, "*": {"any": True}}})
    assert_escape_refused(child, parent, {"body": {"to": "bob", "bcc": "eve"}})
    assert_safe(cap(body={"fields": {"to": {"eq": "bob"}}}), parent)


def test_fields_optional_makes_a_field_absent() -> None:
    parent = cap(body={"fields": {"to": {"eq": "bob"}, "cc": {"any": True, "optional": True}}})
    child = cap(body={"fields": {"to": {"eq": "bob", "optional": True}}})
    assert_escape_refused(child, parent, {"body": {}})
    assert_safe(cap(body={"fields": {"to": {"eq": "bob"}}}), parent)


def test_each_in_place_of_subset_of() -> None:
    parent = cap(tags={"subset_of": ["alpha", "beta"]})
    assert_escape_refused(cap(tags={"each": {"prefix": "a"}}), parent, {"tags": ["admin"]})
    assert_safe(cap(tags={"each": {"in": ["alpha"]}}), parent)


def test_subset_of_with_an_element_outside_each() -> None:
    parent = cap(ids={"each": {"le": 5}})
    assert_escape_refused(cap(ids={"each": {"le": 9}}), parent, {"ids": [7]})
    assert_escape_refused(cap(ids={"subset_of": [1, 9]}), cap(ids={"subset_of": [1, 5]}),
                          {"ids": [9]})
    assert_safe(cap(ids={"each": {"lt": 5}}), parent)


# --- arguments, actions, sets ------------------------------------------------------------------


def test_optional_makes_a_required_argument_absent() -> None:
    parent = cap(amount={"le": 100}, to={"eq": "bob"})
    child = cap(amount={"le": 50, "optional": True}, to={"eq": "bob"})
    assert_escape_refused(child, parent, {"to": "bob"})
    assert_safe(cap(amount={"le": 50}, to={"eq": "bob"}), parent)


@pytest.mark.parametrize(
    ("child", "parent", "called"),
    [
        ("files.*", "files.read", "files.delete"),
        ("files.*", "files.tmp.*", "files.delete"),
        ("filesystem.read", "files.*", "filesystem.read"),
        ("files", "files.*", "files"),
    ],
)
def test_action_wildcards(child: str, parent: str, called: str) -> None:
    assert_escape_refused(
        cap(child), cap(parent), {}, action=called, denied_as=Code.ACTION_NOT_GRANTED
    )
    assert_safe(cap("files.tmp.read"), cap("files.*"))


def test_email_domain_list_grows() -> None:
    parent = cap(to={"email_domain": "example.com"})
    child = cap(to={"email_domain": ["example.com", "evil.com"]})
    assert_escape_refused(child, parent, {"to": "eve@evil.com"})
    assert_safe(cap(to={"email_domain": ["example.com"]}), parent)


def test_cidr_child_network_is_larger() -> None:
    parent = cap(ip={"cidr": "10.1.0.0/16"})
    assert_escape_refused(cap(ip={"cidr": "10.0.0.0/8"}), parent, {"ip": "10.2.0.1"})
    assert_escape_refused(cap(ip={"cidr": ["10.1.0.0/16", "::/0"]}), parent, {"ip": "::1"})
    assert_safe(cap(ip={"cidr": "10.1.2.0/24"}), parent)
