"""The ``email_domain`` operator: an e-mail address whose domain is one of a list.

The value must be a plain ``local@domain`` address, nothing a mail library could read
as several recipients or a display name: exactly one ``@``, a non-empty local part
without quotes, whitespace, control or invisible characters, ``( ) , : ; < > [ ] \\``.
The domain is compared lowercased, exactly (no subdomains, no trailing dot), and must
be ASCII (punycode for internationalized domains).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._operand import OperandError

__all__ = ["MAX_DOMAINS", "MAX_EMAIL", "compile_email_domain", "email_domain_of", "parse_domains"]

MAX_EMAIL = 4096
MAX_DOMAINS = 1024
_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")
_BAD_LOCAL = re.compile(
    r'[\x00-\x20\x7f-\x9f"(),:;<>\[\]\\\s\u00ad\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]'
)


def email_domain_of(value: object) -> str | None:
    """The lowercased domain of a plain address, or None if the value is not one."""
    if type(value) is not str or len(value) > MAX_EMAIL or value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if not local or _BAD_LOCAL.search(local) or not domain.isascii():
        return None
    return domain.lower()


def parse_domains(operand: Any) -> frozenset[str]:
    """Validate an ``email_domain`` operand: a domain or a non-empty list of them."""
    items = [operand] if type(operand) is str else operand
    if type(items) is not list or not items or len(items) > MAX_DOMAINS:
        raise OperandError(f"must be a domain or a list of 1 to {MAX_DOMAINS} domains")
    for i, d in enumerate(items):
        at = "" if type(operand) is str else f"[{i}]"
        if type(d) is not str or len(d) > 253 or not _DOMAIN.match(d):
            raise OperandError("a domain is lowercase ASCII like 'example.com'", at)
    return frozenset(items)


def compile_email_domain(operand: Any) -> Callable[[object], bool]:
    domains = parse_domains(operand)
    return lambda v: email_domain_of(v) in domains
