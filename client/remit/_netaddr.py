"""IP addresses: the ``cidr`` operator and IP-literal hosts of the ``url`` operator.

Two parsers on purpose. ``cidr`` takes an IP *value* in standard text only
(``ipaddress``: dotted-quad decimal without leading zeros, RFC 4291 IPv6, no zone id):
an argument such as ``0177.0.0.1`` is denied, not guessed at. A URL host, however, is
read by HTTP clients the WHATWG way, where ``2130706433``, ``0177.0.0.1``, ``0x7f.1``
and ``127.1`` all mean 127.0.0.1; :func:`whatwg_ipv4` reproduces that parse (no library
does it: ``ipaddress`` rejects those forms, ``socket.inet_aton`` depends on the libc)
so a URL check sees the address a client would connect to. An IPv4-mapped IPv6 address
(``::ffff:127.0.0.1``) counts as its IPv4 address everywhere.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from ._operand import OperandError

__all__ = [
    "MAX_NETWORKS",
    "canonical_ip",
    "compile_cidr",
    "ends_in_number",
    "ipv6_host",
    "parse_networks",
    "whatwg_ipv4",
]

MAX_NETWORKS = 1024
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _unmap(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Any:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def canonical_ip(text: str) -> str | None:
    """Canonical text of a standard IP literal (mapped IPv6 as IPv4), else None."""
    if type(text) is not str or len(text) > 45 or "%" in text:
        return None
    try:
        return str(_unmap(ipaddress.ip_address(text)))
    except ValueError:
        return None


def ipv6_host(inner: str) -> str | None:
    """A bracketed URL host's content -> canonical IPv6 (or IPv4 if mapped), else None."""
    if "%" in inner or len(inner) > 45:  # no zone ids in URLs
        return None
    try:
        return str(_unmap(ipaddress.IPv6Address(inner)))
    except ValueError:
        return None


def _whatwg_number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if digits == "":
            return 0
        try:
            return int(digits, 16) if all(c in "0123456789abcdefABCDEF" for c in digits) else None
        except ValueError:  # pragma: no cover - guarded above
            return None
    if len(part) > 1 and part[0] == "0":
        digits = part[1:]
        return int(digits, 8) if all(c in "01234567" for c in digits) else None
    return int(part) if part.isascii() and part.isdigit() else None


def ends_in_number(host: str) -> bool:
    """WHATWG "ends in a number": the host is to be parsed as IPv4 (or fail)."""
    last = host.rsplit(".", 1)[-1]
    if last == "" and host.endswith("."):
        last = host[:-1].rsplit(".", 1)[-1]
    if last.isascii() and last.isdigit():
        return True
    return last[:2] in ("0x", "0X") and all(c in "0123456789abcdefABCDEF" for c in last[2:])


def whatwg_ipv4(host: str) -> str | None:
    """The WHATWG URL Standard's IPv4 parser: canonical dotted quad, or None (failure).

    Parts may be decimal, octal (leading 0) or hex (0x); 1 to 4 parts, the last
    filling the remaining bytes (``127.1`` = 127.0.0.1, ``2130706433`` = 127.0.0.1).
    """
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not 1 <= len(parts) <= 4 or any(p == "" for p in parts):
        return None
    numbers = []
    for part in parts:
        n = _whatwg_number(part)
        if n is None:
            return None
        numbers.append(n)
    last = numbers.pop()
    if any(n > 255 for n in numbers) or last >= 256 ** (5 - len(parts)):
        return None
    value = last
    for i, n in enumerate(numbers):
        value += n << (8 * (3 - i))
    return str(ipaddress.IPv4Address(value))


def parse_networks(operand: Any) -> tuple[_Network, ...]:
    """Validate a ``cidr`` operand (a CIDR string or a non-empty list of them)."""
    items = [operand] if type(operand) is str else operand
    if type(items) is not list or not items:
        raise OperandError("must be a CIDR string or a non-empty list of them")
    if len(items) > MAX_NETWORKS:
        raise OperandError(f"more than {MAX_NETWORKS} networks")
    out = []
    for i, item in enumerate(items):
        at = "" if type(operand) is str else f"[{i}]"
        if type(item) is not str or len(item) > 64 or "%" in item:
            raise OperandError("must be a CIDR string like '10.0.0.0/8'", at)
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise OperandError(f"not a CIDR network: {exc}", at) from None
        if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
            raise OperandError("write IPv4-mapped networks in IPv4 form", at)
        out.append(net)
    return tuple(out)


def compile_cidr(operand: Any) -> Callable[[object], bool]:
    """Predicate: the value is a standard IP text inside one of the networks."""
    nets = [(n.version, int(n.network_address), int(n.netmask)) for n in parse_networks(operand)]

    def holds(v: object) -> bool:
        if type(v) is not str or len(v) > 45 or "%" in v:
            return False
        try:
            addr = _unmap(ipaddress.ip_address(v))
        except ValueError:
            return False
        version, n = addr.version, int(addr)
        return any(ver == version and n & mask == net for ver, net, mask in nets)

    return holds
