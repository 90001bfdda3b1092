"""Is one capability (or scope) narrower than another? Sound by construction.

``is_narrower(child, parent)`` answers True only when every call the child allows,
the parent allows too. Where a rule is not known to be sound, the answer is False:
narrowing may refuse a child that is in fact narrower, never accept a wider one.
docs/narrowing.md has the full rule table; in short:

- actions: equal, or the parent is ``x.*`` and the child's action (or wildcard)
  starts with ``x.``;
- arguments (and ``fields`` of an object, by the same rules): the child may allow an
  argument to be absent only if the parent does, and its values must be inside the
  parent's; unnamed arguments: the child's ``"*"`` inside the parent's;
- values: a constraint is a conjunction of operators (``all_of`` is flattened into
  it). A child with ``eq``/``in`` has a finite value set: every value the child
  accepts is run through the parent with the real evaluator. A child ``any_of`` is
  split: every branch must be narrower. A parent ``any_of`` needs the child narrower
  than one branch. A parent ``not P`` needs a child ``not C`` with P narrower than C.
  Any other parent operator must be implied by a single child operator, per the
  table in docs/narrowing.md (bounds, lengths, prefixes, suffixes, globs, identical
  regexes, sub-roots, URL sub-patterns, domain and network subsets, ``each``,
  ``subset_of``, ``fields``);
- limits: the child carries every budget of the parent, same id and bounds (it may add
  its own): ``_limits.limits_narrower``;
- scopes: every child capability is narrower than at least one parent capability.

The proof search is bounded (``MAX_STEPS``): past it the answer is False.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from ._constraints import (
    MODIFIERS,
    STRING_OPERATORS,
    Capability,
    ConstraintError,
    _compile_constraint,
    _glob_parse,
    _is_json_tree,
    _membership,
    glob_literal_prefix,
    parse_capability,
)
from ._limits import Budget, LimitsError, limits_narrower, parse_budgets
from ._url import DEFAULT_PORTS

__all__ = ["MAX_STEPS", "is_narrower"]

# Work units (child operators looked at, list elements and finite values tried) per
# is_narrower call: ~0.1 s at worst, far more than a scope that fits in a token needs.
# Past it the answer is "not narrower" (an any_of split can otherwise grow exponentially).
MAX_STEPS = 50_000

_NOTHING: Mapping[str, Any] = {}  # sentinel: no value allowed (unnamed, no "*")

_Atom = tuple[str, Any]
_Pred = Callable[[Any], bool]

# "The value is JSON at every depth" (what all_of, any_of and not demand besides their
# members), and the operators whose success implies it.
_JSON: _Atom = ("$json", None)
_JSON_ONLY = frozenset(
    {"eq", "in", "not_in", "lt", "le", "gt", "ge", "max_len", "each", "subset_of", "fields"}
    | {"not", "any_of"}
    | STRING_OPERATORS
)

_NUMERIC_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


class _Unsure(Exception):
    """Raised inside the proof search when it cannot decide (budget, odd input)."""


class _Prover:
    """One narrowing question: a step budget shared by every sub-proof."""

    def __init__(self) -> None:
        self.steps = 0
        self._preds: dict[tuple[str, int], _Pred] = {}  # by operand identity, this call only

    def tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > MAX_STEPS:
            raise _Unsure("proof budget exhausted")

    # --- constraints as conjunctions of atoms ---------------------------------------

    def atoms(self, constraint: Mapping[str, Any]) -> list[_Atom]:
        """The operators of ``constraint`` with every ``all_of`` flattened in.

        ``all_of`` (like ``any_of`` and ``not``) also demands a JSON value, so
        flattening one leaves the pseudo-atom ``_JSON`` in its place.
        """
        out: list[_Atom] = []
        for op, operand in constraint.items():
            if op in MODIFIERS:
                continue
            if op == "all_of":
                if not isinstance(operand, list) or not operand:
                    raise _Unsure("empty all_of")  # never valid; fail closed
                out.append(_JSON)
                for member in operand:
                    out += self.atoms(member)
            else:
                if op == "any_of" and (not isinstance(operand, list) or not operand):
                    raise _Unsure("empty any_of")
                out.append((op, operand))
        if not out:
            raise _Unsure("a constraint without operators")
        return out

    def constraint_within(self, child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
        """Every value ``child`` accepts, ``parent`` accepts (modifiers ignored)."""
        return self.conj_within(self.atoms(child), self.atoms(parent))

    def conj_within(self, conj: list[_Atom], parent: list[_Atom]) -> bool:
        return all(self.implies(conj, atom) for atom in parent)

    def implies(self, conj: list[_Atom], atom: _Atom) -> bool:
        """Does the conjunction ``conj`` imply the single operator ``atom``?"""
        self.tick(len(conj))  # the work of one call is about one look at each child atom
        op, operand = atom
        if op == "any":
            return True
        finite = _finite_values(conj)
        if finite is not None:
            # Values the child itself rejects (eq 5 with lt 3) need not be in the parent.
            self.tick(len(finite))
            holds = self.predicate([atom])
            if len(conj) == 1:  # eq / in alone accepts each of its values
                return all(holds(v) for v in finite)
            accepts = self.predicate(conj)
            return all(holds(v) for v in finite if accepts(v))
        for i, (cop, branches) in enumerate(conj):
            if cop == "any_of":  # split: every branch of the child must imply the atom
                rest = [*conj[:i], _JSON, *conj[i + 1 :]]
                return all(self.implies(rest + self.atoms(b), atom) for b in branches)
        if op == _JSON[0]:
            return any(cop == _JSON[0] or cop in _JSON_ONLY for cop, _ in conj)
        if op == "any_of":  # holds for a JSON value that one branch accepts
            return self.implies(conj, _JSON) and any(
                self.conj_within(conj, self.atoms(b)) for b in operand
            )
        if op == "not":
            # not C (child) implies not P (parent) when P is narrower than C.
            return any(
                cop == "not" and self.constraint_within(operand, cv) for cop, cv in conj
            )
        return any(self.op_implies(cop, cv, op, operand) for cop, cv in conj)

    def op_implies(self, cop: str, cv: Any, pop: str, pv: Any) -> bool:
        """One child operator implies one parent operator (never any/any_of/not/all_of)."""
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
        if pop == "suffix":
            tail = _literal_tail(cop, cv)
            return tail is not None and tail.endswith(pv)
        if pop == "glob":
            if cop == "glob" and cv == pv:
                return True
            lead = _glob_is_prefix(pv)
            if lead is not None:
                head = _literal_head(cop, cv)
                return head is not None and head.startswith(lead)
            # `*L` under a child suffix only: glob-vs-glob stays as v1 had it (identical, or
            # `L*`), so that implementations keep agreeing on the existing vectors.
            trail = _glob_is_suffix(pv)
            return trail is not None and cop == "suffix" and cv.endswith(trail)
        if pop == "not_in":
            return cop == "not_in" and self.all_members(pv, cv)
        if pop == "regex":
            return cop == "regex" and cv == pv  # regex inclusion: not attempted
        if pop == "subpath":
            return cop == "subpath" and _root_within(cv, pv)
        if pop == "url":
            if cop != "url":
                return False
            self.tick(len(cv["hosts"]) * len(pv["hosts"]))  # hosts are compared pairwise
            return _url_within(cv, pv)
        if pop == "email_domain":
            return cop == "email_domain" and set(_as_list(cv)) <= set(_as_list(pv))
        if pop == "cidr":
            if cop != "cidr":
                return False
            self.tick(len(_as_list(cv)) * len(_as_list(pv)))  # networks too
            return _networks_within(cv, pv)
        if pop == "each":
            if cop == "each":
                return self.constraint_within(cv, pv)
            if cop == "subset_of":  # same list checks; every element JSON-equals one of S
                self.tick(len(cv))
                holds = self.predicate(self.atoms(pv))
                return all(holds(s) for s in cv)
            return False
        if pop == "subset_of":
            if cop == "subset_of":
                return self.all_members(cv, pv)
            if cop == "each":
                members = _finite_values(self.atoms(cv))
                if members is None:
                    return False
                accepts = self.predicate(self.atoms(cv))
                return self.all_members([m for m in members if accepts(m)], pv)
            return False
        if pop == "fields":
            return cop == "fields" and self.args_within(cv, pv)
        return False  # eq / in: only finite children (handled by `implies`)

    def predicate(self, conj: list[_Atom]) -> _Pred:
        """The real evaluator for a conjunction of atoms (each atom compiled once)."""
        preds = []
        for op, operand in conj:
            key = (op, id(operand))
            pred = self._preds.get(key)
            if pred is None:
                pred = _is_json_tree if op == _JSON[0] else _compile_constraint({op: operand})
                self._preds[key] = pred
            preds.append(pred)
        if len(preds) == 1:
            return preds[0]
        return lambda v: all(p(v) for p in preds)

    def all_members(self, items: list[Any], operand: list[Any]) -> bool:
        """Every item JSON-equals some element of ``operand`` (hashed: linear time)."""
        self.tick(len(items) + len(operand))
        member = _membership(operand)
        return all(member(x) for x in items)

    # --- argument maps (capability args, `fields`) ------------------------------------

    def values_within(self, child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
        if parent is _NOTHING:
            return child is _NOTHING
        if child is _NOTHING:
            return True
        return self.constraint_within(child, parent)

    def args_within(self, child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
        """Closed-world argument maps: absence and values per name, then the ``"*"``."""
        names = [*child, *(n for n in parent if n not in child)]  # a stable order
        for name in names:
            if name == "*":
                continue
            c_absent, c_values = _side(child, name)
            p_absent, p_values = _side(parent, name)
            if c_absent and not p_absent:
                return False
            if not self.values_within(c_values, p_values):
                return False
        return self.values_within(child.get("*", _NOTHING), parent.get("*", _NOTHING))


def _finite_values(conj: list[_Atom]) -> list[Any] | None:
    for op, operand in conj:
        if op == "eq":
            return [operand]
        if op == "in":
            return list(operand)
    return None


def _side(args: Mapping[str, Any], name: str) -> tuple[bool, Mapping[str, Any]]:
    """(may be absent, value constraint) of argument ``name`` under ``args``."""
    c = args.get(name)
    if c is not None:
        return bool(c.get("optional")), c
    return True, args.get("*", _NOTHING)


# --- strings ---------------------------------------------------------------------------


def _glob_is_prefix(pattern: str) -> str | None:
    """``L*`` with a literal L and a single trailing star -> L; else None."""
    segments = _glob_parse(pattern)
    if len(segments) == 2 and segments[1] == () and None not in segments[0]:
        return "".join(segments[0])  # type: ignore[arg-type]
    return None


def _glob_is_suffix(pattern: str) -> str | None:
    """``*L`` with a single leading star and a literal L -> L; else None."""
    segments = _glob_parse(pattern)
    if len(segments) == 2 and segments[0] == () and None not in segments[1]:
        return "".join(segments[1])  # type: ignore[arg-type]
    return None


def _literal_head(op: str, operand: Any) -> str | None:
    """Text every value accepted by ``op operand`` starts with."""
    if op == "prefix":
        return str(operand)
    if op == "glob":
        return glob_literal_prefix(operand)[0]
    return None


def _literal_tail(op: str, operand: Any) -> str | None:
    """Text every value accepted by ``op operand`` ends with."""
    if op == "suffix":
        return str(operand)
    if op == "glob":
        last = _glob_parse(operand)[-1]  # anchored at the end of the value
        tail: list[str] = []
        for c in reversed(last):
            if c is None:
                break
            tail.append(c)
        return "".join(reversed(tail))
    return None


# --- paths, URLs, domains, networks ------------------------------------------------------


def _root_within(child: str, parent: str) -> bool:
    """Subpath roots are absolute and normalized: a child root at or under the parent's."""
    if parent in (child, "/"):
        return True
    return child.startswith(parent + "/")


def _as_list(operand: Any) -> list[Any]:
    return [operand] if isinstance(operand, str) else list(operand)


def _host_is_ip(host: str) -> bool:
    """An IP literal, or a name a URL parser would read as one (last label numeric)."""
    if ":" in host or host.startswith("["):
        return True
    last = host.rstrip(".").rsplit(".", 1)[-1]
    return bool(_NUMERIC_LABEL.fullmatch(last))


def _host_within(child: str, parent: str) -> bool:
    if child == parent:
        return True
    if not parent.startswith("*."):
        return False
    if _host_is_ip(child):
        return False  # IP literals never match a domain pattern
    zone = parent[1:]  # ".example.com"
    if child.startswith("*."):
        return child[1:].endswith(zone)  # "*.a.example.com" under "*.example.com"
    return child.endswith(zone) and len(child) > len(zone)


def _origins(spec: Mapping[str, Any]) -> set[tuple[str, int | None]]:
    """(scheme, effective port) pairs a url operand allows. Without ``ports``: each
    scheme's default port (a URL without a port, for a scheme that has none)."""
    schemes = list(spec["schemes"])
    ports = spec.get("ports")
    if ports is not None:
        return {(s, p) for s in schemes for p in ports}
    return {(s, DEFAULT_PORTS.get(s)) for s in schemes}


def _path_prefix_within(child: str | None, parent: str | None) -> bool:
    """Prefixes are normalized, without a trailing "/" (except "/" itself). "/" still
    denies paths that cannot be normalized, so only a child with a prefix is under it."""
    if parent is None:
        return True
    if child is None:
        return False
    return parent in (child, "/") or child.startswith(parent + "/")


def _url_within(child: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    if not set(child["schemes"]) <= set(parent["schemes"]):
        return False
    if not _origins(child) <= _origins(parent):
        return False
    if not all(any(_host_within(h, ph) for ph in parent["hosts"]) for h in child["hosts"]):
        return False
    return _path_prefix_within(child.get("path_prefix"), parent.get("path_prefix"))


def _networks_within(child: Any, parent: Any) -> bool:
    try:
        cs = [ipaddress.ip_network(n, strict=True) for n in _as_list(child)]
        ps = [ipaddress.ip_network(n, strict=True) for n in _as_list(parent)]
    except (TypeError, ValueError):
        return False
    return all(
        any(c.version == p.version and c.subnet_of(p) for p in ps)  # type: ignore[arg-type]
        for c in cs
    )


# --- capabilities and scopes ----------------------------------------------------------


def _action_within(child: str, parent: str) -> bool:
    if child == parent:
        return True
    return parent.endswith(".*") and child.startswith(parent[:-1])


def _limits_within(child: Capability, parent: Capability) -> bool:
    return limits_narrower(child.limits, parent.limits)


def _capability_narrower(prover: _Prover, child: Capability, parent: Capability) -> bool:
    return (
        _action_within(child.action, parent.action)
        and prover.args_within(child.args, parent.args)
        and _limits_within(child, parent)
    )


def _as_capability(obj: Capability | Mapping[str, Any]) -> Capability:
    if isinstance(obj, Capability):
        return obj
    if not isinstance(obj, Mapping):
        raise ConstraintError("", "a capability is an object")
    data = dict(obj)
    token_form = "type" in data
    budgets: tuple[Budget, ...] = ()
    if token_form and "limits" in data:  # a token's budgets: split off, as the token parser does
        try:
            budgets = parse_budgets(data.pop("limits"), "limits")
        except LimitsError as exc:
            raise ConstraintError(exc.path, exc.message) from None
    cap = parse_capability(data, token_form=token_form)
    return replace(cap, limits=budgets) if budgets else cap


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
    prover = _Prover()
    try:
        return all(any(_capability_narrower(prover, c, p) for p in ps) for c in cs)
    except _Unsure:
        return False
