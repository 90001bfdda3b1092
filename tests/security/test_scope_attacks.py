"""Attacks on the scope language's operators (issue 3): one named test per trick.

Call-time attacks go through ``Verifier.check`` with a signed token carrying the
capability, so the whole path (token parse, validation, compiled closures, the
closed world) does the refusing, and ``pytest.raises(Denied)`` makes any other
exception a failure. Grant-time attacks (a capability too deep, too large, or with
10,000-element lists) are checked where they are refused: capability validation
(``ConstraintError`` with the node's path), which the service runs in CreateGrant and
the verifier when it first sees a token.

There are no timed assertions; a pattern or value that made a check super-linear
would run into the suite's per-test timeout instead.
"""

from __future__ import annotations

import os
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import Parser
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import remit
from hypothesis import given, settings
from hypothesis import strategies as st
from remit import Code, ConstraintError, Denied
from remit._constraints import parse_capabilities
from remit._email import compile_email_domain
from remit._subpath import compile_subpath

from tests.tokens import ACTION, AUDIENCE, ISSUER, NOW, IssuerKey, claims, sign

KEY = IssuerKey()
HOSTS = ["api.example.com", "*.cdn.example.com"]
URL = {"url": {"schemes": ["https"], "hosts": HOSTS, "path_prefix": "/v1"}}
SUBPATH = {"subpath": "/srv/build"}


def _verifier() -> remit.Verifier:
    return remit.Verifier(
        KEY.jwks(), issuer=ISSUER, audience=AUDIENCE, revocation="off", clock=lambda: NOW
    )


def _token(constraint: dict[str, Any]) -> str:
    cap = {"type": "remit.capability", "action": ACTION, "args": {"v": constraint}}
    return sign(claims(authorization_details=[cap]), KEY)


def allowed(constraint: dict[str, Any], value: Any) -> None:
    assert _verifier().check(_token(constraint), action=ACTION, args={"v": value}).allowed


def denied(constraint: dict[str, Any], value: Any, operator: str | None = None) -> Denied:
    """Denied ``argument_denied``; the message names the argument (and the operator)."""
    with pytest.raises(Denied) as info:
        _verifier().check(_token(constraint), action=ACTION, args={"v": value})
    assert info.value.code is Code.ARGUMENT_DENIED, info.value
    assert "argument 'v'" in str(info.value)
    if operator is not None:
        assert f"{operator}" in str(info.value), info.value
    return info.value


def rejected(constraint: dict[str, Any], path: str) -> None:
    with pytest.raises(ConstraintError) as info:
        parse_capabilities([{"action": ACTION, "args": {"v": constraint}}], "capabilities")
    assert info.value.path == path, info.value


# -- url -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://user@api.example.com/v1",
        "https://api.example.com@evil.example/v1",
        "https://api.example.com:443@evil.example/v1",
        "https://api.example.com%40evil.example/v1",
        "https://user:secret@api.example.com/v1",
    ],
)
def test_url_userinfo_at_sign(value: str) -> None:
    """``a@b``: a reader that stops at the first ``@`` sees host ``a``, a client connects
    to ``b``. Any ``@`` (or an encoded one) in the authority is denied."""
    allowed(URL, "https://api.example.com/v1")
    denied(URL, value, "url")


@pytest.mark.parametrize(
    "value",
    [
        "https://api.example.com\\@evil.example/v1",
        "https://evil.example\\.api.example.com/v1",
        "https:\\\\api.example.com\\v1",
        "https://api.example.com/v1\\..\\admin",
    ],
)
def test_url_backslash(value: str) -> None:
    """Browsers read ``\\`` as ``/`` in http(s) URLs, other parsers as a plain character."""
    denied(URL, value, "url")


@pytest.mark.parametrize(
    "value",
    [
        "https://\u0430pi.example.com/v1",  # Cyrillic a
        "https://api.examp\u04cfe.com/v1",  # Cyrillic palochka for l
        "https://api\uff0eexample\uff0ecom/v1",  # fullwidth full stops (IDNA maps them to ".")
        "https://api.example.com\u3002/v1",  # ideographic full stop
        "https://\uff41pi.example.com/v1",  # fullwidth a
        "https://api.exa\u00admple.com/v1",  # soft hyphen (IDNA deletes it)
        "https://api.example.co\u200bm/v1",  # zero-width space
        "https://xn--pi-7ld.example.com/v1",  # the punycode of the Cyrillic spelling
        "https://API.EXAMPLE.COM\u212a/v1",  # Kelvin sign, lowercases to "k"
    ],
)
def test_url_idna_and_confusable_hosts(value: str) -> None:
    """A host must be ASCII; IDNA mapping never runs, so a look-alike cannot turn into a
    listed name; punycode labels match only when listed exactly."""
    denied(URL, value, "url")


IP_SPELLINGS = [
    "127.0.0.1",
    "2130706433",  # decimal integer
    "0177.0.0.1",  # octal
    "0x7f.0.0.1",  # hex
    "0x7f000001",  # hex integer
    "0177.1",  # octal, short form
    "127.1",  # short form
    "127.0.1",
    "0x7f.1",
    "127.0.0.1.",  # trailing dot
    "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:7f00:1]",
]


@pytest.mark.parametrize("host", IP_SPELLINGS)
def test_url_ip_literal_in_every_notation(host: str) -> None:
    """Every spelling of 127.0.0.1 is normalized first: it matches a listed 127.0.0.1,
    and never a capability that lists only domain names (SSRF to loopback)."""
    listed = {"url": {"schemes": ["https"], "hosts": ["127.0.0.1"]}}
    allowed(listed, f"https://{host}/x")
    denied({"url": {"schemes": ["https"], "hosts": HOSTS}}, f"https://{host}/x", "url")
    other = {"url": {"schemes": ["https"], "hosts": ["127.0.0.2", "10.0.0.1"]}}
    denied(other, f"https://{host}/x", "url")


@pytest.mark.parametrize(
    "host", ["0189.0.0.1", "256.0.0.1", "1.2.3.4.5", "0x100000000", "example.123", "[127.0.0.1]",
             "[::1%25eth0]"]
)
def test_url_ip_literal_that_fails_to_parse_is_not_a_domain(host: str) -> None:
    """A host that ends in a number is an IP or nothing (WHATWG): never a domain match."""
    listed = {"url": {"schemes": ["https"], "hosts": ["*.example.com", "127.0.0.1", "::1"]}}
    denied(listed, f"https://{host}/", "url")


@pytest.mark.parametrize(
    "value",
    [
        "http://api.example.com/v1",
        "ws://api.example.com/v1",
        "ftp://api.example.com/v1",
        "file:///srv/v1",
        "javascript://api.example.com/v1",
        "https:api.example.com/v1",
        "https:/api.example.com/v1",
        "//api.example.com/v1",
    ],
)
def test_url_scheme_widening(value: str) -> None:
    """Only the listed schemes, and only with an authority (``scheme://``)."""
    denied(URL, value, "url")


@pytest.mark.parametrize(
    "value",
    [
        "https://api.example.com:8443/v1",
        "https://api.example.com:80/v1",
        "https://api.example.com:/v1",
        "https://api.example.com:65979/v1",  # 65979 - 65536 = 443 on a wrapping parser
        "https://api.example.com:443:8443/v1",
        "https://api.example.com:+443/v1",
    ],
)
def test_url_port(value: str) -> None:
    """Without ``ports``, only the scheme's default port, written or not."""
    allowed(URL, "https://api.example.com:443/v1")
    denied(URL, value, "url")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../admin",
        "/v1/%2e%2e/admin",
        "/v1/.%2E/admin",
        "/v1//../admin",
        "/v1/..;/admin",
        "/v1%2f..%2fadmin",
        "/v1/..%5cadmin",
        "/v1x",
    ],
)
def test_url_path_prefix_escape(path: str) -> None:
    denied(URL, f"https://api.example.com{path}", "url")


# -- subpath -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ["/srv/build/../../etc/passwd", "/srv/build/a/../../x", "/srv/build/..", "/../srv/build/a"],
)
def test_subpath_dotdot(value: str) -> None:
    allowed(SUBPATH, "/srv/build/a/../b")
    denied(SUBPATH, value, "subpath")


def test_subpath_double_slash() -> None:
    """``//`` collapses like a filesystem: it neither escapes nor breaks a match."""
    allowed(SUBPATH, "//srv//build//out")
    denied(SUBPATH, "//srv//buildx", "subpath")
    denied(SUBPATH, "/srv/build//..//..//etc", "subpath")


@pytest.mark.parametrize(
    "value", ["/srv/build/%2e%2e/%2e%2e/etc", "/srv/build/%2E%2E/x", "/srv/build%2f..%2f..%2fetc"]
)
def test_subpath_percent_encoded_dotdot(value: str) -> None:
    denied(SUBPATH, value, "subpath")


@pytest.mark.parametrize(
    "value", ["/srv/build/%252e%252e/etc", "/srv/build/%25%32%65%25%32%65/etc", "/srv/build/a%252f"]
)
def test_subpath_double_encoding(value: str) -> None:
    """Text that still holds ``%XX`` after one decode is denied: a second decoder further
    on would see another path."""
    denied(SUBPATH, value, "subpath")


@pytest.mark.parametrize(
    "value", ["/srv/build/a\x00/../../etc", "/srv/build/a%00.txt", "/srv/build/a\x00"]
)
def test_subpath_nul(value: str) -> None:
    """C APIs end the string at NUL: the checked and the opened path would differ."""
    denied(SUBPATH, value, "subpath")


def test_subpath_backslash_and_controls() -> None:
    for value in ("/srv/build\\..\\etc", "/srv/build/a%5c..", "/srv/build/a\nb", "/srv/build/\x85"):
        denied(SUBPATH, value, "subpath")


@pytest.mark.parametrize("sep", ["%2f", "%2F", "%5c", "%5C", "%00"])
def test_subpath_encoded_separator_splits_readings(sep: str) -> None:
    """Review finding: ``R/a%2fb/../../secret`` is ``R/secret`` once decoded but
    ``dirname(R)/secret`` to ``open()``, which decodes nothing. An encoded separator or
    NUL is denied wherever it appears, as ``url``'s path_prefix does."""
    denied(SUBPATH, f"/srv/build/a{sep}b/../../secret", "subpath")
    denied(SUBPATH, f"/srv/build/a{sep}b", "subpath")


@pytest.mark.parametrize(
    "value", ["/srv/%62uild/x", "/srv/buil%64", "/srv/build/x/%2e%2e/..", "/srv/build/%2e/.."]
)
def test_subpath_raw_reading_leaves_the_root(value: str) -> None:
    """Inside the root once decoded, outside as given (``%62uild`` is another directory
    to ``open()``; ``..`` after a ``%2e%2e`` name climbs out): both readings must stay in."""
    denied(SUBPATH, value, "subpath")
    allowed(SUBPATH, "/srv/build/a/%2e%2e/b")  # /srv/build/b decoded, .../a/%2e%2e/b raw


SEGMENTS = ["srv", "build", "buildx", "a", "..", ".", "", "%2e", "%2e%2e", "%2E%2e", "%62uild",
            "%61", "a%2fb", "b%5Cc", "%25", "x%zz", "%", "caf%C3%A9", "%2f..", "..%2f"]


def _posix_inside(path: str, root: str) -> bool:
    """``os.path.normpath`` keeps a leading ``//`` (POSIX leaves it open); Linux reads it
    as ``/``."""
    norm = os.path.normpath(path)
    norm = "/" + norm.lstrip("/") if norm.startswith("//") else norm
    return norm == root or norm.startswith(root + "/")


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(["/", "/srv/", "/srv/build/"]),
       st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=8))
def test_subpath_both_readings_inside_root_differential(head: str, segments: list[str]) -> None:
    """Whatever ``subpath`` allows, ``os.path.normpath`` puts inside the root both as
    given (what ``open()`` sees) and percent-decoded once (what a decoding server sees)."""
    value = head + "/".join(segments)
    if not compile_subpath("/srv/build")(value):
        return
    assert _posix_inside(value, "/srv/build"), value
    assert _posix_inside(unquote(value, errors="strict"), "/srv/build"), value


def test_subpath_encoded_slash_on_a_real_filesystem(tmp_path: Path) -> None:
    """The finding on disk: a directory literally named ``a%2fb`` makes ``open()`` reach
    the file next to the root; remit denies the value. An allowed value with a literal
    ``%XX`` name opens inside the root."""
    base = Path(os.path.realpath(tmp_path))
    root = base / "root"
    (root / "a%2fb").mkdir(parents=True)
    (base / "secret").write_text("outside")
    (root / "inside").write_text("inside")
    attack = f"{root}/a%2fb/../../secret"
    assert Path(attack).read_text() == "outside"  # the raw reading leaves the root
    denied({"subpath": str(root)}, attack, "subpath")
    (root / "a%62").mkdir()
    value = f"{root}/a%62/../inside"
    allowed({"subpath": str(root)}, value)
    assert Path(value).read_text() == "inside"


# -- email_domain --------------------------------------------------------------------------

CORP = {"email_domain": "corp.com"}


@pytest.mark.parametrize(
    "value",
    [
        "=?utf-8?q?x=40evil.com=3e?=@corp.com",
        "=?utf-8?b?eEBldmlsLmNvbT4=?=@corp.com",
        "=?us-ascii?q?x=40evil.com?=@corp.com",
        "x?@corp.com",
    ],
)
def test_email_domain_rfc2047_encoded_word_local_part(value: str) -> None:
    """Review finding: Python's ``email`` package renders ``=?utf-8?q?x=40evil.com=3e?=@corp.com``
    as ``To: x@evil.com>@corp.com``, which a mail server delivers to ``x@evil.com``.
    ``?`` is not in the local part's character set, so no encoded word can form."""
    msg = EmailMessage()
    msg["To"] = "=?utf-8?q?x=40evil.com=3e?=@corp.com"
    assert "x@evil.com>" in msg.as_string()  # the attack is real in this Python
    denied(CORP, value, "email_domain")


@pytest.mark.parametrize(
    "value", ["user%evil.com@corp.com", "evil.com!user@corp.com", "@evil.com:user@corp.com"]
)
def test_email_domain_source_routing(value: str) -> None:
    """Percent hack, UUCP bang path and RFC 821 source routes: old relays forward on them."""
    denied(CORP, value, "email_domain")


@pytest.mark.parametrize(
    "value", [".a@corp.com", "a.@corp.com", "a..b@corp.com", "|cmd@corp.com", "/tmp/x@corp.com",
              "a\u200b@corp.com", "b\u00f6b@corp.com", "x" * 65 + "@corp.com"]
)
def test_email_domain_local_part_is_a_plain_dot_atom(value: str) -> None:
    denied(CORP, value, "email_domain")
    allowed(CORP, "first.last+tag@corp.com")


EMAIL_CHARS = [*"aZ09._+-='?=%!\"/|&$#*^`{}~ @<>()[],:;", "\u00e9", "\u0430", "\n"]


@settings(max_examples=600, deadline=None)
@given(st.text(st.sampled_from(EMAIL_CHARS), min_size=1, max_size=12))
def test_email_domain_differential_with_python_email(local: str) -> None:
    """Whatever ``email_domain`` allows, Python's ``email`` package writes to the header
    unchanged and reads back as exactly one mailbox at that domain, in both the modern
    and the compat32 API."""
    value = f"{local}@corp.com"
    if not compile_email_domain("corp.com")(value):
        return
    msg = EmailMessage()
    msg["To"] = value
    assert f"To: {value}\n" in msg.as_string()
    parsed = Parser(policy=email_policy.default).parsestr(msg.as_string())
    (addr,) = parsed["To"].addresses
    assert (addr.username, addr.domain, addr.display_name) == (local, "corp.com", "")
    assert getaddresses([value]) == [("", value)]


# -- regex ---------------------------------------------------------------------------------


def test_regex_huge_input() -> None:
    """Values above 4096 code points are denied without running the automaton; a
    1 MB value gets a decision."""
    pattern = {"regex": "[a-z]*"}
    allowed(pattern, "a" * 4096)
    denied(pattern, "a" * 4097, "regex")
    denied(pattern, "a" * 1_000_000, "regex")


@pytest.mark.parametrize("pattern", ["(a+)+b", "(a|a)*b", "(a*)*b", "(.*a){12}b", "(a|aa)+c"])
def test_regex_catastrophic_pattern_is_linear_in_re2(pattern: str) -> None:
    """Patterns that backtrack exponentially in Python's ``re`` on ``a`` * n: RE2 has no
    backtracking, so a 4096-character value is decided at once (a backtracking engine
    would never finish within the suite's timeout)."""
    denied({"regex": pattern}, "a" * 4096, "regex")


def test_regex_is_a_full_match() -> None:
    """No search semantics: a pattern cannot be satisfied by a value that merely contains
    an allowed part, and ``$`` tricks with a trailing newline do not apply."""
    denied({"regex": "[0-9]+"}, "123; rm -rf /", "regex")
    denied({"regex": "[0-9]+"}, "123\n", "regex")
    denied({"regex": "a|b"}, "ab", "regex")


def test_regex_constructs_outside_re2_are_rejected_at_grant_time() -> None:
    rejected({"regex": "(a)\\1"}, "capabilities[0].args.v.regex")
    rejected({"regex": "(?=a)a"}, "capabilities[0].args.v.regex")
    rejected({"regex": "a" * 1025}, "capabilities[0].args.v.regex")


# -- nesting and size ---------------------------------------------------------------------


@pytest.mark.parametrize("op", ["not", "each", "all_of", "fields"])
def test_deep_nesting_of_constraints(op: str) -> None:
    """10,000 levels: refused at level 9 with that node's path, no RecursionError."""
    node: Any = {"eq": 1}
    for _ in range(10_000):
        if op == "all_of":
            node = {"all_of": [node]}
        elif op == "fields":
            node = {"fields": {"f": node}}
        else:
            node = {op: node}
    with pytest.raises(ConstraintError) as info:
        parse_capabilities([{"action": ACTION, "args": {"v": node}}], "capabilities")
    step = {"not": ".not", "each": ".each", "all_of": ".all_of[0]", "fields": ".fields.f"}[op]
    assert info.value.path == "capabilities[0].args.v" + step * 8
    assert "deeper than 8" in info.value.message


def test_deep_value_gets_a_decision() -> None:
    """A 20,000-deep argument (20x the recursion limit) against the nesting operators:
    denied, no RecursionError."""
    deep: Any = 1
    for _ in range(20_000):
        deep = [deep]
    for constraint in (
        {"each": {"each": {"eq": 1}}},
        {"not": {"max_len": 5}},
        {"any_of": [{"eq": 1}, {"prefix": "a"}]},
        {"subset_of": [[1]]},
    ):
        with pytest.raises(Denied) as info:
            _verifier().check(_token(constraint), action=ACTION, args={"v": deep})
        assert info.value.code is Code.ARGUMENT_DENIED


@pytest.mark.parametrize("op", ["in", "not_in", "subset_of", "any_of", "email_domain", "cidr"])
def test_ten_thousand_element_operand(op: str) -> None:
    """Operand lists are capped at 1024 elements (and a capability at 16 KiB)."""
    item: Any = {"eq": 1} if op == "any_of" else "a.example" if op == "email_domain" else (
        "10.0.0.0/8" if op == "cidr" else 1
    )
    with pytest.raises(ConstraintError) as info:
        parse_capabilities([{"action": ACTION, "args": {"v": {op: [item] * 10_000}}}], "caps")
    assert info.value.path == "caps[0]"  # the 16 KiB cap comes first and bounds the rest
    with pytest.raises(ConstraintError) as info:
        parse_capabilities([{"action": ACTION, "args": {"v": {op: [item] * 1025}}}], "caps")
    assert info.value.path.startswith("caps[0]"), info.value


def test_ten_thousand_element_values() -> None:
    """List values over 1024 elements are denied by each / subset_of; a 10,000-key object
    gets a decision from fields."""
    denied({"each": {"eq": 1}}, [1] * 10_000, "each")
    denied({"subset_of": [1]}, [1] * 10_000, "subset_of")
    allowed({"fields": {"*": {"eq": 1}}}, {f"k{i}": 1 for i in range(10_000)})
    denied({"fields": {"*": {"eq": 1}}}, {**{f"k{i}": 1 for i in range(10_000)}, "z": 2}, "fields")
    denied({"in": [1, 2]}, list(range(10_000)), "in")
    denied({"max_len": 1024}, [1] * 10_000, "max_len")


def test_thousand_and_one_constraints() -> None:
    with pytest.raises(ConstraintError) as info:
        parse_capabilities(
            [{"action": ACTION, "args": {"v": {"any_of": [{"eq": i} for i in range(1000)]}}}], "c"
        )
    assert info.value.path == "c[0].args.v.any_of[999]"


# -- not over operators that deny what they cannot parse -------------------------------------


@pytest.mark.parametrize(
    ("constraint", "attack", "node"),
    [
        ({"prefix": "http", "not": {"url": {"schemes": ["http"], "hosts": ["169.254.169.254"]}}},
         "http://x@169.254.169.254/latest", "not.url"),
        ({"prefix": "", "not": {"cidr": "10.0.0.0/8"}}, "012.0.0.1", "not.cidr"),
        ({"suffix": "", "not": {"email_domain": "corp.com"}}, "Bob <bob@corp.com>",
         "not.email_domain"),
        ({"prefix": "/", "not": {"subpath": "/etc"}}, "/etc%2fshadow", "not.subpath"),
    ],
)
def test_not_over_parsing_operator_is_rejected(
    constraint: dict[str, Any], attack: str, node: str
) -> None:
    """Review finding: url, cidr, email_domain and subpath deny a value they cannot read
    unambiguously; under ``not`` that denial became an allow (httpx connects
    ``http://x@169.254.169.254/`` to 169.254.169.254; getaddrinfo reads ``012.0.0.1`` as
    10.0.0.1). Such a capability is refused at grant time and in a token; the allow-list
    form denies the attack."""
    rejected(constraint, f"capabilities[0].args.v.{node}")
    with pytest.raises(Denied) as info:
        _verifier().check(_token(constraint), action=ACTION, args={"v": attack})
    assert info.value.code is Code.MALFORMED and "cannot be under 'not'" in str(info.value)
    op = node.split(".")[1]
    denied({op: constraint["not"][op]}, attack, op)


def test_not_over_parsing_operator_nested_anywhere() -> None:
    """Through any_of, all_of, fields, each and a second not: the node is named."""
    inner = {"any_of": [{"eq": 1}, {"fields": {"a": {"each": {"all_of": [{"cidr": "::/0"}]}}}}]}
    rejected({"not": inner}, "capabilities[0].args.v.not.any_of[1].fields.a.each.all_of[0].cidr")
    rejected({"not": {"not": {"email_domain": "corp.com"}}},
             "capabilities[0].args.v.not.not.email_domain")
    allowed({"all_of": [{"not": {"eq": "x"}}, {"cidr": "10.0.0.0/8"}]}, "10.1.2.3")


@pytest.mark.parametrize(
    ("constraint", "padded", "fine"),
    [
        ({"not": {"regex": ".*password.*"}}, "password" + "x" * 4096, "x" * 4096),
        ({"not": {"regex": ".*password.*"}}, "password\ud800", "no secret here"),
        ({"not": {"each": {"eq": "root"}}}, ["root"] * 1025, ["user"] * 1024),
        ({"not": {"fields": {"cmd": {"regex": "rm .*"}}}}, {"cmd": "rm -rf /" + " " * 4096},
         {"cmd": "ls"}),
    ],
)
def test_not_blocklist_cannot_be_padded_past(
    constraint: dict[str, Any], padded: Any, fine: Any
) -> None:
    """regex / each / subset_of deny oversized values outright; negated, that denial
    would allow a padded value through a blocklist, so `not` denies it instead."""
    denied(constraint, padded, "not")
    allowed(constraint, fine)
