"""Consent text: what a grant (or a list of capabilities) allows, in plain words.

Generated only from the structure (actions, constraints, limits, audiences, expiry) and
the operator's catalog (labels, consent templates, risk). Free text from the request
(the purpose) is shown quoted as the app's words and never interpreted.

The text must never claim less than the grant allows. Every operator of the scope
language is rendered with all of its operands; a shape this module does not know
renders as "any value" (an over-statement, never an under-statement), and under
``not`` (where over-stating the inner part would under-state the whole) any unknown
part turns the whole ``not`` into "any value". Every quoted value is JSON with
control, format (bidi, zero-width) and separator characters escaped, so a value
cannot disguise itself or reorder the surrounding text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._catalog import RISKS, ActionPolicy, ArgSpec, risk_of

__all__ = ["Description", "describe_capabilities", "describe_capability", "quote"]

_RANK = (*RISKS, "unknown")  # an action the catalog does not describe ranks highest
_UNSAFE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
ANY = "any value"


@dataclass(frozen=True)
class Description:
    text: str
    capabilities: list[str]
    risk: str


def _safe(text: str) -> str:
    return "".join(
        (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        if unicodedata.category(ch) in _UNSAFE
        else ch
        for ch in text
    )


def quote(value: Any) -> str:
    """A JSON value as JSON text, safe to show (see the module docstring)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return _safe(text)


def _list(values: Any, joiner: str = " or ") -> str:
    if isinstance(values, list):
        return joiner.join(quote(v) for v in values) if values else "(nothing)"
    return quote(values)


def _host(host: Any) -> str:
    if isinstance(host, str) and host.startswith("*."):
        return f"{quote(host)} (any subdomain of {quote(host[2:])}, not {quote(host[2:])} itself)"
    return quote(host)


def _url(operand: Any) -> tuple[str, bool]:
    if not isinstance(operand, dict) or not {"schemes", "hosts"} <= set(operand) or set(
        operand
    ) - {"schemes", "hosts", "ports", "path_prefix"}:
        return ANY, False
    ports = operand.get("ports")
    port_text = (
        f"port {_list(ports)}" if ports is not None else "the scheme's default port only"
    )
    prefix = operand.get("path_prefix")
    path_text = (
        f"a path equal to {quote(prefix)} or below it" if prefix is not None else "any path"
    )
    hosts = operand["hosts"]
    host_text = " or ".join(_host(h) for h in hosts) if isinstance(hosts, list) else _host(hosts)
    return (
        f"a URL with scheme {_list(operand['schemes'])}, host {host_text}, {port_text}, "
        f"{path_text} (no user name, no backslashes, IP addresses only as listed)",
        True,
    )


def _op(op: str, x: Any, depth: int) -> tuple[str, bool]:
    """One operator as words; the flag says whether the rendering is exact."""
    if op == "any":
        return ANY, True
    if op == "eq":
        return f"exactly {quote(x)}", True
    if op == "in":
        return f"one of {_list(x, ', ')}", True
    if op == "not_in":
        return f"any value except {_list(x, ', ')}", True
    words = {"lt": "less than", "le": "at most", "gt": "more than", "ge": "at least"}
    if op in words:
        return f"a number {words[op]} {quote(x)}", True
    if op == "max_len":
        n = quote(x)
        return f"a text of at most {n} characters or a list of at most {n} items", True
    if op == "prefix":
        return f"a text starting with {quote(x)}", True
    if op == "suffix":
        return f"a text ending with {quote(x)}", True
    if op == "glob":
        return (
            f"a text matching the pattern {quote(x)} (* stands for any run of characters, "
            "? for any one character)",
            True,
        )
    if op == "regex":
        return f"a text matching the regular expression {quote(x)} in full", True
    if op == "subpath":
        if x == "/":
            return f"any absolute path (under {quote(x)})", True
        return f"the path {quote(x)} or any path below it", True
    if op == "url":
        return _url(x)
    if op == "email_domain":
        return f"an email address at the domain {_list(x)} exactly (not a subdomain)", True
    if op == "cidr":
        return f"an IP address in {_list(x)}", True
    if op == "each":
        inner, exact = _constraint(x, depth + 1)
        return f"a list (possibly empty) whose every item is {_paren(inner)}", exact
    if op == "subset_of":
        return f"a list whose items are each one of {_list(x, ', ')}", True
    if op == "fields":
        if not isinstance(x, dict):
            return ANY, False
        inner, exact = _members(x, {}, "field", depth + 1)
        return f"an object with {inner}", exact
    if op in ("all_of", "any_of"):
        if not isinstance(x, list) or not x:
            return ANY, False
        parts = [_constraint(c, depth + 1) for c in x]
        joiner = "; and " if op == "all_of" else "; or "
        head = "all of" if op == "all_of" else "at least one of"
        body = joiner.join(_paren(t) for t, _ in parts)
        return f"{head}: {body}", all(e for _, e in parts)
    if op == "not":
        inner, exact = _constraint(x, depth + 1)
        if not exact:  # over-stating the inner part would under-state the whole
            return ANY, False
        return f"any value that is not {_paren(inner)}", True
    return ANY, False  # an operator this text does not know: claim everything


def _paren(text: str) -> str:
    return f"({text})"


def _constraint(c: Any, depth: int = 0) -> tuple[str, bool]:
    if depth > 32 or not isinstance(c, dict):
        return ANY, False
    parts = [_op(op, operand, depth) for op, operand in c.items() if op != "optional"]
    if not parts:
        return ANY, c.keys() <= {"optional"}
    return " and ".join(t for t, _ in parts), all(e for _, e in parts)


def _optional(c: Any) -> bool:
    return isinstance(c, dict) and c.get("optional") is True


def _members(
    members: Mapping[str, Any], specs: Mapping[str, ArgSpec], noun: str, depth: int
) -> tuple[str, bool]:
    """Named members (arguments or object fields) and the rule for the others."""
    items, exact = [], True
    for name, c in members.items():
        if name == "*":
            continue
        text, ok = _constraint(c, depth)
        exact = exact and ok
        spec = specs.get(name)
        label = f"{_safe(spec.label)} ({quote(name)})" if spec and spec.label else quote(name)
        presence = " (may be omitted)" if _optional(c) else " (required)"
        items.append(f"{label}: {text}{presence}")
    if "*" in members:
        text, ok = _constraint(members["*"], depth)
        exact = exact and ok
        items.append(f"any other {noun}: {text}")
    else:
        items.append(f"no other {noun}s")
    if len(items) == 1 and "*" not in members:
        return f"no {noun}s", exact
    return f"{noun}s " + "; ".join(items), exact


def _limits(limits: Any) -> str:
    """Request form (one object) or token form (a list of budgets)."""
    budgets = limits if isinstance(limits, list) else [limits]
    out = []
    for b in budgets:
        if not isinstance(b, dict):
            continue
        if "uses" in b:
            out.append(f"at most {quote(b['uses'])} use(s) in total")
        s = b.get("sum")
        if isinstance(s, dict):
            out.append(f"at most {quote(s.get('max'))} in total of {quote(s.get('arg'))}")
        if set(b) - {"id", "exp", "uses", "sum"}:
            out.append("(and a limit this text cannot show)")
    return "; ".join(out)


def _action(action: str) -> str:
    if action == "*":
        return "any action"
    if action.endswith(".*"):
        return f"any action whose name starts with {quote(action[:-1])} ({quote(action)})"
    return quote(action)


def describe_capability(
    cap: Mapping[str, Any], actions: Mapping[str, ActionPolicy]
) -> tuple[str, str]:
    """One capability (CreateGrant or token form) -> (text, risk)."""
    action = cap.get("action")
    if not isinstance(action, str):
        return "any action with any arguments (a capability this text cannot read)", "unknown"
    risk = risk_of(actions, action)
    entry = None if action.endswith(".*") else actions.get(action)
    args = cap.get("args")
    if isinstance(args, dict):
        specs = (entry.args or {}) if entry is not None else {}
        arg_text, _ = _members(args, specs, "argument", 0)
    else:
        arg_text = "any arguments"
    head = f"[{risk} risk] {_action(action)}"
    if entry is not None and entry.consent:
        template = entry.consent
        body = (
            template.replace("{args}", arg_text)
            if "{args}" in template
            else f"{template}; {arg_text}"
        )
        text = f"{head}: {body}"
    else:
        text = f"{head} with {arg_text}"
    if cap.get("limits"):
        text += f"; limits shared by every token of the grant: {_limits(cap['limits'])}"
    return text, risk


def highest(risks: Sequence[str]) -> str:
    return max(risks, key=_RANK.index) if risks else "low"


def describe_capabilities(
    caps: Sequence[Mapping[str, Any]],
    actions: Mapping[str, ActionPolicy],
    *,
    grant: Any = None,
) -> Description:
    """Capabilities, optionally with the grant's terms (a ``GrantRecord``)."""
    lines, risks = [], []
    for cap in caps:
        text, risk = describe_capability(cap, actions)
        lines.append(text)
        risks.append(risk)
    out = []
    if grant is not None:
        until = datetime.fromtimestamp(grant.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        out.append(
            f"App {quote(grant.app)} asks that agent {quote(grant.agent)} may act for user "
            f"{quote(grant.subject)} at {_list(grant.audience, ', ')} only, until {until}, "
            "as follows (anything not listed is refused):"
        )
    out += [f"{i}. {line}" for i, line in enumerate(lines, 1)]
    if grant is not None:
        if grant.purpose:
            out.append(f"Purpose, in the app's own words (not checked): {quote(grant.purpose)}")
        if grant.revoked:
            out.append("This grant is revoked.")
    return Description(text="\n".join(out), capabilities=lines, risk=highest(risks))
