"""The ``url`` operator: scheme, host, port and path prefix of an absolute URL.

Operand: ``{"schemes": [...], "hosts": [...], "ports"?: [...], "path_prefix"?: "/..."}``.
The value is read the way an HTTP client following the WHATWG URL Standard reads it,
and any URL two such readers could disagree about is **denied** rather than guessed at:
userinfo (an ``@`` in the authority), a backslash anywhere, whitespace or control or
invisible (format) characters, a non-ASCII or percent-encoded host, an empty host or
port, anything but ``scheme://`` after the scheme. IP literals in every notation
(``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``, ``[::ffff:127.0.0.1]``) are
normalized first and match only IP entries of ``hosts``, never a domain pattern.

With ``path_prefix``, the path is normalized like a browser does (``.``/``..``
segments, also spelled ``%2e``) and must equal the prefix or continue it at a ``/``;
paths that servers are known to read differently are denied: ``//`` (empty segments,
which some servers collapse before resolving ``..``), encoded ``/`` ``\\`` or NUL
(``%2f`` ``%5c`` ``%00``), and dot segments with parameters (``..;``).

Hand-written because ``urllib.parse`` is not a WHATWG parser (it splits on ``@`` and
``\\`` differently from browsers and keeps ``0x7f.1`` as a domain), and the WHATWG
implementations on PyPI normalize ambiguities away instead of exposing them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._netaddr import canonical_ip, ends_in_number, ipv6_host, whatwg_ipv4
from ._operand import OperandError

__all__ = [
    "DEFAULT_PORTS",
    "MAX_URL",
    "ParsedUrl",
    "UrlSpec",
    "compile_url",
    "normalize_url_path",
    "parse_url",
    "parse_url_operand",
    "url_allows",
    "url_denial",
]

MAX_URL = 4096
MAX_HOSTS = 1024
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}

# Internal fixed patterns (stdlib re): no nested quantifiers, linear.
_UNSAFE_ASCII = re.compile(r"[\x00-\x20\x7f\\]")
_SPLIT = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)([^?#]*)", re.DOTALL)
# The common case in one match: domain host, optional port, path, query/fragment, and
# no unsafe ASCII character anywhere. Anything else takes the general route below.
# The host's last label starts with a non-digit here, so it is never an IP literal.
_FAST = re.compile(
    r"([a-zA-Z][a-zA-Z0-9+.\-]*)://((?:[A-Za-z0-9_-]+\.)*[A-Za-z_-][A-Za-z0-9_-]*)\.?"
    r"(?::([0-9]{1,5}))?(/[^?#\x00-\x20\x7f\\]*)?(?:[?#][^\x00-\x20\x7f\\]*)?\Z"
)
_DOMAIN_PORT = re.compile(r"([A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*)\.?(?::([0-9]{1,5}))?\Z")
_V6_PORT = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?\Z")
_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")
_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*\Z")
_BAD_PATH = re.compile(r"%(?:2[fF]|5[cC]|00)|//")
_SINGLE_DOT = frozenset({".", "%2e", "%2E"})
_DOUBLE_DOT = frozenset(
    {"..", ".%2e", ".%2E", "%2e.", "%2E.", "%2e%2e", "%2E%2E", "%2e%2E", "%2E%2e"}
)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


class ParsedUrl(NamedTuple):
    """What a URL check looks at: lowercase scheme, canonical host, port, raw path."""

    scheme: str
    host: str  # lowercase domain without trailing dot, or canonical IP text
    is_ip: bool
    port: int | None  # explicit port, None when absent
    path: str  # as written ("" when absent), not yet normalized


@dataclass(frozen=True, slots=True)
class UrlSpec:
    """A validated ``url`` operand."""

    schemes: frozenset[str]
    hosts: frozenset[str]  # exact domains and canonical IPs
    wildcards: frozenset[str]  # "*.example.com" stored as "example.com"
    ports: frozenset[int] | None  # None: each scheme's default port only
    path_prefix: str | None
    path_dir: str | None = None  # path_prefix + "/" (precomputed for the hot path)


def _safe_unicode(value: str) -> bool:
    """No invisible, control, separator, private-use or unassigned character."""
    return all(c.isascii() or unicodedata.category(c) not in _UNSAFE_CATEGORIES for c in value)


def _safe_text(value: str) -> bool:
    return not _UNSAFE_ASCII.search(value) and (value.isascii() or _safe_unicode(value))


def _split(value: object) -> tuple[str, str, bool, int | None, str] | None:
    """(scheme, host, is_ip, port, path) of an unambiguous absolute URL, else None."""
    if type(value) is not str or len(value) > MAX_URL:
        return None
    fast = _FAST.match(value) if value.isascii() else None
    if fast is not None:  # the common case: a domain name, nothing odd anywhere
        scheme, host, port_text, path = fast.groups()
        if len(host) <= 253:
            port = None if port_text is None else int(port_text)
            if port is None or port <= 65535:
                return scheme.lower(), host.lower(), False, port, path or ""
    if _UNSAFE_ASCII.search(value):
        return None
    if not value.isascii() and not _safe_unicode(value):
        return None
    m = _SPLIT.match(value)
    if m is None:
        return None
    scheme, authority, path = m.groups()
    hp = _DOMAIN_PORT.match(authority)  # ASCII letters, digits, "_-." only: no "@" or "%"
    if hp is not None:
        host = hp.group(1).lower()
        if len(host) > 253:
            return None
        is_ip = host[host.rfind(".") + 1 :][:1].isdigit() and ends_in_number(host)
        if is_ip:
            ipv4 = whatwg_ipv4(host)
            if ipv4 is None:
                return None  # a failed IPv4 parse is a failed URL, never a domain
            host = ipv4
    else:
        hp = _V6_PORT.match(authority)
        if hp is None:
            return None  # userinfo, "%", non-ASCII, empty host, empty or bad port...
        v6 = ipv6_host(hp.group(1))
        if v6 is None:
            return None
        host, is_ip = v6, True
    port_text = hp.group(2)
    port = None
    if port_text is not None:
        port = int(port_text)
        if port > 65535:
            return None
    return scheme.lower(), host, is_ip, port, path


def parse_url(value: object) -> ParsedUrl | None:
    """Parse an absolute URL strictly; None for anything ambiguous or malformed."""
    parts = _split(value)
    return None if parts is None else ParsedUrl(*parts)


def normalize_url_path(path: str) -> str | None:
    """WHATWG dot-segment removal (``%2e`` counts as ``.``); None when ambiguous."""
    if path == "":
        return "/"
    if "/." not in path and "%" not in path and "//" not in path and path[0] == "/":
        return path  # no dot segment, no encoding, no empty segment: the common case
    if not path.startswith("/") or _BAD_PATH.search(path):
        return None
    segments = path[1:].split("/")
    out: list[str] = []
    last = len(segments) - 1
    for i, seg in enumerate(segments):
        head = seg.split(";", 1)[0]
        if head != seg and (head in _SINGLE_DOT or head in _DOUBLE_DOT):
            return None  # "..;/": Tomcat-style servers resolve it, browsers do not
        if seg in _DOUBLE_DOT:
            if out:
                out.pop()
            if i == last:
                out.append("")
        elif seg in _SINGLE_DOT:
            if i == last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _host_pattern(item: Any, at: str) -> tuple[str, bool]:
    """Validate one ``hosts`` entry -> (key, is_wildcard)."""
    if type(item) is not str or not item or len(item) > 253:
        raise OperandError("a host is a non-empty string of at most 253 characters", at)
    if ":" in item:
        ip = canonical_ip(item)
        if ip is None or ip != item:
            raise OperandError("an IPv6 host must be in canonical form (e.g. '2001:db8::1')", at)
        return item, False
    wildcard = item.startswith("*.")
    name = item[2:] if wildcard else item
    if not _HOSTNAME.match(name):
        raise OperandError(
            "a host is a lowercase ASCII name (punycode for IDNs), '*.' + name, or an IP", at
        )
    if ends_in_number(name):
        if wildcard:
            raise OperandError("a wildcard cannot cover IP addresses", at)
        ip = canonical_ip(name)
        if ip is None or ip != name:
            raise OperandError("an IPv4 host must be a canonical dotted quad", at)
    return name, wildcard


def parse_url_operand(operand: Any) -> UrlSpec:
    """Validate a ``url`` operand; raises :class:`OperandError` naming the member."""
    if type(operand) is not dict:
        raise OperandError("must be an object with schemes, hosts, ports?, path_prefix?")
    unknown = set(operand) - {"schemes", "hosts", "ports", "path_prefix"}
    if unknown:
        raise OperandError(f"unknown members {sorted(unknown, key=repr)}")
    schemes = operand.get("schemes")
    if type(schemes) is not list or not schemes or len(schemes) > 16:
        raise OperandError("must be a list of 1 to 16 lowercase schemes", ".schemes")
    for i, s in enumerate(schemes):
        if type(s) is not str or len(s) > 32 or not _SCHEME.match(s):
            raise OperandError("a scheme is lowercase, like 'https'", f".schemes[{i}]")
    hosts = operand.get("hosts")
    if type(hosts) is not list or not hosts or len(hosts) > MAX_HOSTS:
        raise OperandError(f"must be a list of 1 to {MAX_HOSTS} hosts", ".hosts")
    exact: set[str] = set()
    wild: set[str] = set()
    for i, h in enumerate(hosts):
        key, is_wild = _host_pattern(h, f".hosts[{i}]")
        (wild if is_wild else exact).add(key)
    ports = None
    if "ports" in operand:
        raw = operand["ports"]
        if type(raw) is not list or not raw or len(raw) > 64:
            raise OperandError("must be a list of 1 to 64 ports", ".ports")
        for i, p in enumerate(raw):
            if type(p) is not int or not 0 < p <= 65535:
                raise OperandError("a port is an integer 1..65535", f".ports[{i}]")
        ports = frozenset(raw)
    prefix = None
    if "path_prefix" in operand:
        prefix = operand["path_prefix"]
        if (
            type(prefix) is not str
            or len(prefix) > 1024
            or not _safe_text(prefix)
            or "?" in prefix
            or "#" in prefix
            or normalize_url_path(prefix) != prefix
            or (prefix != "/" and prefix.endswith("/"))
        ):
            raise OperandError(
                "must be a normalized absolute path without a trailing '/' (e.g. '/v1')",
                ".path_prefix",
            )
    return UrlSpec(
        schemes=frozenset(schemes),
        hosts=frozenset(exact),
        wildcards=frozenset(wild),
        ports=ports,
        path_prefix=prefix,
        path_dir=None if prefix is None else prefix.rstrip("/") + "/",
    )


def _host_allowed(spec: UrlSpec, url: ParsedUrl) -> bool:
    host = url.host
    if host in spec.hosts:
        return True
    if url.is_ip or not spec.wildcards:
        return False
    dot = host.find(".")
    while dot >= 0:
        if host[dot + 1 :] in spec.wildcards:
            return True
        dot = host.find(".", dot + 1)
    return False


def url_allows(spec: UrlSpec, value: object) -> bool:
    """The ``url`` operator on one value."""
    parts = _split(value)
    if parts is None:
        return False
    scheme, host, is_ip, port, path = parts
    if scheme not in spec.schemes:
        return False
    if host not in spec.hosts:
        if is_ip or not spec.wildcards:
            return False
        dot = host.find(".")
        while dot >= 0 and host[dot + 1 :] not in spec.wildcards:
            dot = host.find(".", dot + 1)
        if dot < 0:
            return False
    if (port is not None or spec.ports is not None) and not _port_allowed(spec, scheme, port):
        return False
    prefix = spec.path_prefix
    if prefix is None:
        return True
    if "/." in path or "%" in path or "//" in path or path[:1] != "/":  # else: as it is
        found = normalize_url_path(path)
        if found is None:
            return False
        path = found
    return prefix in ("/", path) or path.startswith(spec.path_dir or "/")


def _port_allowed(spec: UrlSpec, scheme: str, port: int | None) -> bool:
    if spec.ports is None:  # the scheme's default port only, written or not
        return port is None or port == DEFAULT_PORTS.get(scheme)
    return (port if port is not None else DEFAULT_PORTS.get(scheme)) in spec.ports


def compile_url(operand: Any) -> Callable[[object], bool]:
    spec = parse_url_operand(operand)
    return lambda v: url_allows(spec, v)


def url_denial(spec: UrlSpec, value: object) -> str:
    """Why ``url_allows(spec, value)`` is False (for denial messages)."""
    url = parse_url(value)
    if url is None:
        return "not an unambiguous absolute URL (userinfo, backslash, encoding, bad host...)"
    if url.scheme not in spec.schemes:
        return f"scheme {url.scheme[:32]!r} is not allowed"
    if not _host_allowed(spec, url):
        return f"host {url.host[:80]!r} is not allowed"
    if not _port_allowed(spec, url.scheme, url.port):
        return f"port {url.port if url.port is not None else 'default'} is not allowed"
    path = normalize_url_path(url.path)
    if path is None:
        return "ambiguous path (//, %2f, %5c, %00 or ..;)"
    return f"path {path[:80]!r} is outside {spec.path_prefix!r}"
