"""The action catalog: what each action is, so grants are checked when they are made.

Config (TOML), one table per action::

    catalog = "closed"                      # "open" (default): uncatalogued actions pass

    [actions."payments.transfer"]
    max_ttl = 300                           # token lifetime cap for this action
    risk = "high"                           # low | medium | high
    single_use = true                       # every grant gets limits uses = 1
    consent = "Send money from your account ({args})"
    [actions."payments.transfer".args]
    amount   = { type = "number", constraint = { gt = 0, le = 1000 }, label = "amount" }
    iban     = { type = "string" }
    currency = { type = "string", constraint = { in = ["EUR", "USD"] } }

Pattern entries (``"email.*"``) may set only ``max_ttl`` and ``risk``: the argument
schema, single-use and the consent text describe one exact action.

At CreateGrant (:func:`check_grant`) a capability for a catalogued action may name only
the action's arguments (else INVALID_ARGUMENT naming ``capabilities[i].args.NAME``), each
constraint must be narrower than the catalog's (``remit.is_narrower``) and agree with the
argument's JSON type, ``"*"`` is refused (it would allow arguments the action does not
have), and a single-use action gets ``limits.uses = 1`` (a larger ``uses`` is refused).
In a closed catalog an action without an exact entry, or a wildcard capability, is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from remit._constraints import Capability, ConstraintError, parse_capability
from remit._narrowing import is_narrower

from ._errors import BadRequest, PolicyDenied

__all__ = [
    "JSON_TYPES",
    "RISKS",
    "ActionPolicy",
    "ArgSpec",
    "check_grant",
    "parse_action",
    "pattern_covers",
    "patterns_overlap",
    "risk_of",
]

RISKS = ("low", "medium", "high")
JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null", "any"})
MAX_TEMPLATE = 512
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,512}\Z")
_ARG = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")

# Which JSON type an operator's check requires of the value (operators that can hold
# for several types, or for any, are not listed).
_OP_TYPE = {
    "lt": "number", "le": "number", "gt": "number", "ge": "number",
    "prefix": "string", "suffix": "string", "glob": "string", "regex": "string",
    "subpath": "string", "url": "string", "email_domain": "string", "cidr": "string",
    "each": "array", "subset_of": "array", "fields": "object",
}  # fmt: skip


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a catalogued action."""

    type: str = "any"
    constraint: Mapping[str, Any] | None = None  # grants must stay within it
    label: str = ""  # how consent text names the argument (default: its name)


@dataclass(frozen=True)
class ActionPolicy:
    """A catalog entry. ``args`` None: the arguments are not described (open)."""

    max_ttl: int
    risk: str = "medium"
    single_use: bool = False
    consent: str = ""
    args: Mapping[str, ArgSpec] | None = field(default=None)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _PRINTABLE.match(value):
        raise ValueError(f"{where}: must be 1 to {MAX_TEMPLATE} printable characters")
    return value


def _arg_spec(action: str, name: str, table: Any, where: str) -> ArgSpec:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table {{type = ..., constraint = ...}}")
    unknown = set(table) - {"type", "constraint", "label"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    kind = table.get("type", "any")
    if kind not in JSON_TYPES:
        raise ValueError(f"{where}.type: one of {sorted(JSON_TYPES)}")
    constraint = table.get("constraint")
    if constraint is not None:
        try:
            parse_capability({"action": action, "args": {name: constraint}}, where)
        except ConstraintError as exc:
            raise ValueError(str(exc)) from None
    label = _text(table["label"], f"{where}.label") if "label" in table else ""
    return ArgSpec(type=kind, constraint=constraint, label=label)


def parse_action(name: str, table: Any, default_ttl: int) -> ActionPolicy:
    """One ``[actions.NAME]`` table; raises ``ValueError`` naming the key."""
    where = f"actions.{name}"
    if not isinstance(table, dict):
        raise ValueError(f"{where}: must be a table")
    pattern = name == "*" or name.endswith(".*")
    allowed = {"max_ttl", "risk"} | (set() if pattern else {"single_use", "consent", "args"})
    unknown = set(table) - allowed
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
    max_ttl = table.get("max_ttl", default_ttl)
    if type(max_ttl) is not int or max_ttl <= 0:
        raise ValueError(f"{where}.max_ttl: must be a positive integer")
    risk = table.get("risk", "medium")
    if risk not in RISKS:
        raise ValueError(f"{where}.risk: one of {list(RISKS)}")
    single_use = table.get("single_use", False)
    if type(single_use) is not bool:
        raise ValueError(f"{where}.single_use: must be true or false")
    consent = _text(table["consent"], f"{where}.consent") if "consent" in table else ""
    args: dict[str, ArgSpec] | None = None
    if "args" in table:
        if not isinstance(table["args"], dict):
            raise ValueError(f"{where}.args: must be a table")
        args = {}
        for arg, spec in table["args"].items():
            if not _ARG.match(arg) or arg == "*":
                raise ValueError(f"{where}.args.{arg}: invalid argument name")
            args[arg] = _arg_spec(name, arg, spec, f"{where}.args.{arg}")
    return ActionPolicy(
        max_ttl=max_ttl, risk=risk, single_use=single_use, consent=consent, args=args
    )


def risk_of(actions: Mapping[str, ActionPolicy], action: str) -> str:
    """The action's risk: its exact entry, else the highest of the patterns covering it
    (a wildcard capability: of every entry it overlaps), else ``"unknown"``."""
    exact = actions.get(action)
    if exact is not None and not action.endswith(".*"):
        return exact.risk
    found = [p.risk for name, p in actions.items() if patterns_overlap(name, action)]
    return max(found, key=RISKS.index) if found else "unknown"


def pattern_covers(pattern: str, action: str) -> bool:
    """An action pattern (app policy, catalog): ``*`` (everything), ``x.*`` (x.anything
    and ``x.*`` itself), or exact."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return action.startswith(pattern[:-1])
    return pattern == action


def patterns_overlap(a: str, b: str) -> bool:
    """Some action matches both patterns."""
    return pattern_covers(a, b) or pattern_covers(b, a)


def _type_conflict(kind: str, constraint: Mapping[str, Any]) -> str | None:
    """An operator of the grant's constraint that no value of ``kind`` can satisfy."""
    if kind == "any":
        return None
    for op in constraint:
        need = _OP_TYPE.get(op)
        if need is None:
            continue
        if need == "number" and kind in ("number", "integer"):
            continue
        if need != kind:
            return op
    return None


def check_grant(
    actions: Mapping[str, ActionPolicy],
    *,
    closed: bool,
    capabilities: Sequence[Capability],
    limits: Sequence[Any],
    name: str = "capabilities",
) -> list[Any]:
    """Check parsed capabilities against the catalog; return their limits (request form,
    None where absent) with single-use added. Raises ``BadRequest`` naming the path, or
    ``PolicyDenied`` for what the catalog does not allow."""
    out: list[Any] = list(limits) + [None] * (len(capabilities) - len(limits))
    for i, cap in enumerate(capabilities):
        where = f"{name}[{i}]"
        entry = None if cap.action.endswith(".*") else actions.get(cap.action)
        if entry is None:
            if closed:
                raise PolicyDenied(
                    f"{where}.action: {cap.action!r} is not in the action catalog "
                    "(a closed catalog grants only catalogued actions, no wildcards)"
                )
            continue
        if entry.args is not None:
            _check_args(cap.action, entry.args, cap.args, where)
        if entry.single_use:
            current = dict(out[i] or {})
            uses = current.get("uses")
            if uses is None:
                current["uses"] = 1
            elif uses != 1:
                raise PolicyDenied(
                    f"{where}.limits.uses: {cap.action!r} is single-use; uses must be 1"
                )
            out[i] = current
    return out


def _check_args(
    action: str, specs: Mapping[str, ArgSpec], args: Mapping[str, Any], where: str
) -> None:
    if "*" in args:
        raise BadRequest(
            f"{where}.args.*: {action!r} has a fixed set of arguments; name each one",
            field=f"{where}.args.*",
        )
    for arg, constraint in args.items():
        path = f"{where}.args.{arg}"
        spec = specs.get(arg)
        if spec is None:
            raise BadRequest(
                f"{path}: action {action!r} has no argument {arg!r} "
                f"(it has: {', '.join(sorted(specs)) or 'none'})",
                field=path,
            )
        op = _type_conflict(spec.type, constraint)
        if op is not None:
            raise BadRequest(
                f"{path}.{op}: {arg!r} is a {spec.type} and {op!r} holds for no {spec.type}",
                field=f"{path}.{op}",
            )
        if spec.constraint is None:
            continue
        bound = dict(spec.constraint)
        bound["optional"] = True  # the catalog bounds values; whether to pass one is the grant's
        child = parse_capability({"action": action, "args": {arg: constraint}})
        parent = parse_capability({"action": action, "args": {arg: bound}})
        if not is_narrower(child, parent):
            raise PolicyDenied(
                f"{path}: not within the catalog's bound for {arg!r} "
                f"({_short(spec.constraint)})"
            )


def _short(value: Any) -> str:
    text = repr(dict(value))
    return text if len(text) <= 120 else text[:117] + "..."
