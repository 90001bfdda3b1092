"""Is one capability (or scope) narrower than another? Sound by construction.

``is_narrower(child, parent)`` answers True only when every call the child allows,
the parent allows too. Where a rule is not known to be sound, the answer is False:
narrowing may refuse a child that is in fact narrower, never accept a wider one.

Rules, per argument (the closed world gives each side, for every argument name,
"may it be absent?" and "which values may it take?"):

- absence: a child may allow an argument to be absent only if the parent does;
- values: the child's value set must be inside the parent's. A child with ``eq`` or
  ``in`` has a finite value set: each value is evaluated against the parent's
  constraint. Otherwise, every operator of the parent must be implied by a single
  operator of the child:

  ============  ==========================================================
  parent        implied by child
  ============  ==========================================================
  ``any``       anything
  ``lt a``      ``lt b`` (b <= a), ``le b`` (b < a)
  ``le a``      ``le b`` / ``lt b`` (b <= a)
  ``gt a``      ``gt b`` (b >= a), ``ge b`` (b > a)
  ``ge a``      ``ge b`` / ``gt b`` (b >= a)
  ``max_len n`` ``max_len m`` (m <= n)
  ``prefix p``  ``prefix q`` (q starts with p); ``glob g`` whose literal head starts with p
  ``glob g``    the same glob; or g is ``L*`` (one trailing star) and the child is a
                prefix/glob whose literal head starts with L
  ``not_in S``  ``not_in T`` with S ⊆ T
  ``eq``/``in`` only finite children (above)
  ============  ==========================================================

Actions: equal, or the parent is ``x.*`` and the child's action (or wildcard) starts
with ``x.``. A scope (list of capabilities) is narrower when each child capability
is narrower than at least one parent capability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._constraints import (
    MODIFIERS,
    Capability,
    ConstraintError,
    _compile_constraint,
    _glob_parse,
    glob_literal_prefix,
    json_equal,
    parse_capability,
)

__all__ = ["is_narrower"]

_NOTHING: Mapping[str, Any] = {}  # sentinel: no value allowed (unnamed, no "*")


def _finite_values(c: Mapping[str, Any]) -> list[Any] | None:
    if "eq" in c:
        return [c["eq"]]
    if "in" in c:
        return list(c["in"])
    return None


def _glob_is_prefix(pattern: str) -> str | None:
    """``L*`` with a literal L and a single trailing star -> L; else None."""
    segments = _glob_parse(pattern)
    if len(segments) == 2 and segments[1] == () and None not in segments[0]:
        return "".join(segments[0])  # type: ignore[arg-type]
    return None


def _literal_head(op: str, operand: Any) -> str | None:
    if op == "prefix":
        return str(operand)
    if op == "glob":
        return glob_literal_prefix(operand)[0]
    return None


def _op_implies(cop: str, cv: Any, pop: str, pv: Any) -> bool:
    if pop == "any":
        return True
    if pop == "lt":
        return (cop == "lt" and cv <= pv) or (cop == "le" and cv < pv)
    if pop == "le":
        return cop in ("le", "lt") and cv <= pv
    if pop == "gt":
        return (cop == "gt" and cv >= pv) or (cop == "ge" and cv > pv)
    if pop == "ge":
        return cop in ("ge", "gt") and cv >= pv
    if pop == "max_len":
        return cop == "max_len" and cv <= pv
    if pop == "prefix":
        head = _literal_head(cop, cv)
        return head is not None and head.startswith(pv)
    if pop == "glob":
        if cop == "glob" and cv == pv:
            return True
        lit = _glob_is_prefix(pv)
        head = _literal_head(cop, cv)
        return lit is not None and head is not None and head.startswith(lit)
    if pop == "not_in":
        return cop == "not_in" and all(any(json_equal(s, t) for t in cv) for s in pv)
    return False  # eq / in in the parent: only finite children (handled by the caller)


def _values_within(child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    if parent is _NOTHING:
        return child is _NOTHING
    if child is _NOTHING:
        return True
    finite = _finite_values(child)
    if finite is not None:
        child_pred = _compile_constraint(child)
        parent_pred = _compile_constraint(parent)
        # Values the child itself rejects (e.g. eq 5 with lt 3) need not be in the parent.
        return all(parent_pred(v) for v in finite if child_pred(v))
    child_ops = [(op, v) for op, v in child.items() if op not in MODIFIERS]
    return all(
        any(_op_implies(cop, cv, pop, pv) for cop, cv in child_ops)
        for pop, pv in parent.items()
        if pop not in MODIFIERS
    )


def _side(cap: Capability, name: str) -> tuple[bool, Mapping[str, Any]]:
    """(may be absent, value constraint) of argument ``name`` under ``cap``."""
    c = cap.args.get(name)
    if c is not None:
        return bool(c.get("optional")), c
    return True, cap.args.get("*", _NOTHING)


def _action_within(child: str, parent: str) -> bool:
    if child == parent:
        return True
    return parent.endswith(".*") and child.startswith(parent[:-1])


def _capability_narrower(child: Capability, parent: Capability) -> bool:
    if not _action_within(child.action, parent.action):
        return False
    names = (set(child.args) | set(parent.args)) - {"*"}
    for name in names:
        c_absent, c_values = _side(child, name)
        p_absent, p_values = _side(parent, name)
        if c_absent and not p_absent:
            return False
        if not _values_within(c_values, p_values):
            return False
    # Every other argument name: governed by each side's "*".
    return _values_within(child.args.get("*", _NOTHING), parent.args.get("*", _NOTHING))


def _as_capability(obj: Capability | Mapping[str, Any]) -> Capability:
    if isinstance(obj, Capability):
        return obj
    if not isinstance(obj, Mapping):
        raise ConstraintError("", "a capability is an object")
    data = dict(obj)
    return parse_capability(data, token_form="type" in data)


def _scope(obj: Any) -> list[Any]:
    """One capability, or a sequence of them; anything else (a string, bytes, a number,
    a set, an iterator) is malformed."""
    if isinstance(obj, Mapping | Capability):
        return [obj]
    if isinstance(obj, Sequence) and not isinstance(obj, str | bytes | bytearray):
        return list(obj)
    raise ConstraintError("", "expected a capability or a list of capabilities")


def is_narrower(
    child: Capability | Mapping[str, Any] | Sequence[Capability | Mapping[str, Any]],
    parent: Capability | Mapping[str, Any] | Sequence[Capability | Mapping[str, Any]],
) -> bool:
    """True only if everything ``child`` allows, ``parent`` allows too.

    Each side is a capability (API or ``authorization_details`` form) or a list of
    them (a scope). Malformed input raises ``ConstraintError``.
    """
    cs = [_as_capability(c) for c in _scope(child)]
    ps = [_as_capability(p) for p in _scope(parent)]
    return all(any(_capability_narrower(c, p) for p in ps) for c in cs)
