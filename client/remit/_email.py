"""The ``email_domain`` operator: an e-mail address whose domain is one of a list.

The value must be a plain ``local@domain`` address that every mail library reads as
that one mailbox. The local part is therefore not all of RFC 5321's syntax but a
conservative **dot-atom**: 1 to 64 ASCII characters from ``A-Z a-z 0-9`` and
``_ + - = '``, in atoms joined by single dots (no leading, trailing or double dot).
Everything else is denied, each for a reason:

- ``?`` (with ``=``, RFC 2047 encoded words: ``=?utf-8?q?x=40evil.com=3e?=@corp.com``
  is rendered by Python's ``email`` package as the mailbox ``x@evil.com``),
- ``%`` and ``!`` (the percent hack and UUCP bang paths: old relays route on them),
- quotes, whitespace, controls, ``( ) , : ; < > [ ] \\ @`` (display names, comments,
  lists of recipients, quoted local parts),
- ``/ | & $ # * ^ ` { } ~`` (file and pipe delivery in sendmail-style aliases, shell
  and template metacharacters: legal atext, never needed by a real mailbox),
- anything non-ASCII (SMTPUTF8 mailboxes; confusables).

The domain is compared lowercased, exactly (no subdomains, no trailing dot), and must
be ASCII (punycode for internationalized domains).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ._operand import OperandError

__all__ = [
    "LOCAL_CHARS",
    "MAX_DOMAINS",
    "MAX_EMAIL",
    "MAX_LOCAL",
    "compile_email_domain",
    "email_domain_of",
    "parse_domains",
]

MAX_EMAIL = 4096
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAINS = 1024
LOCAL_CHARS = "A-Za-z0-9_+='-"  # the atext a local part may use, besides '.' between atoms
_LOCAL = re.compile(rf"[{LOCAL_CHARS}]+(?:\.[{LOCAL_CHARS}]+)*")
_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")


def email_domain_of(value: object) -> str | None:
    """The lowercased domain of a plain address, or None if the value is not one."""
    if type(value) is not str or len(value) > MAX_EMAIL or value.count("@") != 1:
        return None
    local, domain = value.split("@")
    if len(local) > MAX_LOCAL or not _LOCAL.fullmatch(local) or not domain.isascii():
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
