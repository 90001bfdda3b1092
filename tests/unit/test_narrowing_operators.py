"""Property tests of narrowing over the whole scope language (issue 3).

A parent constraint is drawn from a grammar of every operator (leaves with small operands
near interesting edges, and ``each``/``fields``/``all_of``/``any_of``/``not`` nesting
them); the child is usually derived from it (an operand tightened or loosened, a branch
dropped or added, a finite set of values, the constraint wrapped in ``any_of``/``all_of``/
``not``), sometimes unrelated. Whenever ``is_narrower(child, parent)`` holds, every value
of a pool that the child accepts must pass the parent too, with the real evaluator
(``compile_capability`` + the verifier's argument check). The pool aims at the edges:
bounds +- epsilon, prefixes and suffixes extended by one character, path traversal and
percent-encoding, URLs with userinfo, backslashes, other schemes and ports, IP literals
in every notation, look-alike domains, addresses just outside a network, nested lists and
objects built from the operands, and values that are not JSON.
"""

from __future__ import annotations

import ipaddress
import math
import random
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from remit import ConstraintError, is_narrower
from remit._constraints import NOT_NEGATABLE, compile_capability, parse_capability
from remit._verifier import _check_args

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# --- operands --------------------------------------------------------------------------

NUMBERS = [-1, 0, 0.5, 1, 2, 2.5, 10**20]
STRINGS = ["", "a", "ab", "/", "a/", ".txt", "a.txt", "b"]
SCALARS: list[Any] = [*NUMBERS, *STRINGS, True, False, None]
REGEXES = ["a.*", "[ab]+", "a|b", ".*", "a\\d", "(a|/)*", "a", ".*\\.txt", "[^/]*"]
GLOBS = ["*", "a*", "*.txt", "a?", "a*b", "/*", "a\\*"]
ROOTS = ["/", "/srv", "/srv/build", "/srv/buil", "/srv/build/out", "/etc"]
HOSTS = [
    "api.example.com", "*.example.com", "example.com", "*.api.example.com",
    "b.example.com", "127.0.0.1", "10.0.0.1", "::1",
]
PATH_PREFIXES = [None, "/", "/v1", "/v1/x", "/v"]
PORTS = [None, [443], [8443], [80, 443], [80]]
DOMAINS = ["example.com", "b.example.com", "example.org"]
NETWORKS = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "0.0.0.0/0", "::/0", "::1/128",
            "2001:db8::/32", "11.0.0.0/8"]
FIELD_NAMES = ("x", "y")

scalar = st.sampled_from(SCALARS)
small_value = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=2) | st.dictionaries(
        st.sampled_from(FIELD_NAMES), inner, max_size=2), max_leaves=3,
)


@st.composite
def url_operand(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schemes": draw(st.lists(st.sampled_from(["https", "http"]), min_size=1, unique=True)),
        "hosts": draw(st.lists(st.sampled_from(HOSTS), min_size=1, max_size=3, unique=True)),
    }
    ports = draw(st.sampled_from(PORTS))
    if ports is not None:
        out["ports"] = ports
    path = draw(st.sampled_from(PATH_PREFIXES))
    if path is not None:
        out["path_prefix"] = path
    return out


def _one_or_list(items: list[str]) -> st.SearchStrategy[Any]:
    return st.sampled_from(items) | st.lists(st.sampled_from(items), min_size=1, max_size=3,
                                             unique=True)


LEAF: dict[str, st.SearchStrategy[Any]] = {
    "eq": small_value,
    "in": st.lists(small_value, min_size=1, max_size=3),
    "not_in": st.lists(small_value, max_size=3),
    "lt": st.sampled_from(NUMBERS[:-1]),
    "le": st.sampled_from(NUMBERS[:-1]),
    "gt": st.sampled_from(NUMBERS[:-1]),
    "ge": st.sampled_from(NUMBERS[:-1]),
    "max_len": st.integers(0, 3),
    "prefix": st.sampled_from(STRINGS),
    "suffix": st.sampled_from(STRINGS),
    "glob": st.sampled_from(GLOBS),
    "regex": st.sampled_from(REGEXES),
    "subpath": st.sampled_from(ROOTS),
    "url": url_operand(),
    "email_domain": _one_or_list(DOMAINS),
    "cidr": _one_or_list(NETWORKS),
    "subset_of": st.lists(small_value, min_size=1, max_size=3),
}
NESTING = ("each", "fields", "all_of", "any_of", "not")


def constraint(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    single = st.sampled_from(sorted(LEAF)).flatmap(lambda op: LEAF[op].map(lambda x: {op: x}))
    pair = st.lists(st.sampled_from(sorted(LEAF)), min_size=2, max_size=2, unique=True).flatmap(
        lambda ops: st.fixed_dictionaries({op: LEAF[op] for op in ops})
    )  # often contradictory (rejected, skipped); the valid ones mix operators
    leaf = st.one_of(single, single, pair)
    if depth == 0:
        return leaf | st.just({"any": True})
    inner = constraint(depth - 1)
    nested = st.one_of(
        inner.map(lambda c: {"each": c}),
        fields_operand(inner).map(lambda f: {"fields": f}),
        st.lists(inner, min_size=1, max_size=2).map(lambda cs: {"all_of": cs}),
        st.lists(inner, min_size=1, max_size=3).map(lambda cs: {"any_of": cs}),
        inner.filter(_negatable).map(lambda c: {"not": c}),
    )
    return st.one_of(leaf, leaf, leaf, nested, st.just({"any": True}))


def _negatable(c: Any) -> bool:
    """No url / cidr / email_domain / subpath at any depth: those are invalid under
    ``not`` (they deny what they cannot parse), so wrapping them would only be skipped."""
    if isinstance(c, list):
        return all(_negatable(x) for x in c)
    if not isinstance(c, dict):
        return True
    return not (NOT_NEGATABLE & c.keys()) and all(
        _negatable(x) for op, x in c.items() if op in ("each", "not", "all_of", "any_of")
    ) and all(_negatable(fc) for fc in (c.get("fields") or {}).values())


def fields_operand(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    def optional(c: dict[str, Any], opt: bool) -> dict[str, Any]:
        return c | {"optional": True} if opt else c

    named = st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        st.tuples(inner, st.booleans()).map(lambda t: optional(*t)),
        max_size=2,
    )
    return st.tuples(named, st.none() | inner).map(
        lambda t: t[0] | ({"*": t[1]} if t[1] is not None else {})
    )


# --- children ----------------------------------------------------------------------------


def _tighter_operand(op: str, x: Any, rng: random.Random) -> Any:
    """Another operand for ``op``: often tighter, sometimes wider (the test must see both)."""
    if op in ("lt", "le", "gt", "ge"):
        return x + rng.choice([-1, -0.5, 0, 0.5, 1])
    if op == "max_len":
        return max(0, x + rng.choice([-1, 0, 1]))
    if op in ("prefix", "suffix", "glob", "regex", "subpath"):
        if op == "prefix":
            return rng.choice([x + "a", x + "/", x[:-1], x])
        if op == "suffix":
            return rng.choice(["a" + x, "/" + x, x[1:], x])
        if op == "subpath":
            return rng.choice([x.rstrip("/") + "/out", x, "/srv/build", "/srv", "/srv/buildx"])
        return rng.choice(GLOBS if op == "glob" else [*REGEXES, x])
    if op in ("in", "not_in", "subset_of"):
        items = list(x)
        if rng.random() < 0.5 and len(items) > (0 if op == "not_in" else 1):
            items.pop(rng.randrange(len(items)))
        else:
            items.append(rng.choice(SCALARS))
        return items
    if op in ("email_domain", "cidr"):
        pool = DOMAINS if op == "email_domain" else NETWORKS
        items = [x] if isinstance(x, str) else list(x)
        if rng.random() < 0.5 and len(items) > 1:
            items.pop(rng.randrange(len(items)))
        elif op == "cidr" and rng.random() < 0.5:
            inside = [n for n in NETWORKS if any(_subnet(n, m) for m in items)]
            items = [rng.choice(inside)] if inside else items
        elif rng.random() < 0.5:
            items = [rng.choice(pool)]
        else:
            items = sorted({*items, rng.choice(pool)})
        return items
    if op == "url":
        out = dict(x)
        change = rng.randrange(5)
        if change == 0 and len(x["hosts"]) > 1:
            out["hosts"] = x["hosts"][1:]
        elif change == 1:
            out["hosts"] = [rng.choice(HOSTS)]
        elif change == 2:
            out["schemes"] = rng.choice([["https"], ["http"], ["https", "http"]])
        elif change == 3:
            ports = rng.choice(PORTS)
            out.pop("ports", None)
            if ports is not None:
                out["ports"] = ports
        else:
            path = rng.choice([*PATH_PREFIXES, "/v1x", "/v10"])
            out.pop("path_prefix", None)
            if path is not None:
                out["path_prefix"] = path
        return out
    if op == "eq":
        return rng.choice(SCALARS)
    return x


def _subnet(a: str, b: str) -> bool:
    na, nb = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return na.version == nb.version and na.subnet_of(nb)  # type: ignore[arg-type]


def derive(c: dict[str, Any], rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A constraint near ``c``: mostly narrower, sometimes wider, never checked here."""
    kind = rng.randrange(10)
    ops = [op for op in c if op != "optional"]
    if kind <= 3 and ops:  # one operator changed
        op = rng.choice(ops)
        out = dict(c)
        x = c[op]
        if op == "each" or op == "not":
            out[op] = derive(x, rng, depth + 1)
        elif op in ("all_of", "any_of"):
            items = [derive(m, rng, depth + 1) if rng.random() < 0.5 else m for m in x]
            if len(items) > 1 and rng.random() < 0.4:
                items.pop(rng.randrange(len(items)))
            elif rng.random() < 0.3:
                items.append(derive(rng.choice(x), rng, depth + 1))
            out[op] = items
        elif op == "fields":
            fields = dict(x)
            if fields and rng.random() < 0.7:
                name = rng.choice(sorted(fields))
                fc = fields[name]
                new = derive({k: v for k, v in fc.items() if k != "optional"}, rng, depth + 1)
                if fc.get("optional") and rng.random() < 0.7 and name != "*":
                    new["optional"] = True
                fields[name] = new
            elif rng.random() < 0.5 and fields:
                fields.pop(rng.choice(sorted(fields)))
            else:
                fields[rng.choice(FIELD_NAMES)] = {"any": True}
            out[op] = fields
        elif op == "any":
            return {"prefix": "a"} if rng.random() < 0.5 else {"any": True}
        else:
            out[op] = _tighter_operand(op, x, rng)
        return out
    if kind == 4 and depth < 2:  # split into branches
        return {"any_of": [derive(c, rng, depth + 1) for _ in range(rng.randrange(1, 3))]}
    if kind == 5 and depth < 2:
        return {"all_of": [derive(c, rng, depth + 1), rng.choice([c, {"any": True}])]}
    if kind == 6 and depth < 2 and "not" in c:  # not C -> not (something wider or narrower)
        return {"not": derive(c["not"], rng, depth + 1)}
    if kind == 7:  # a finite set of values near the operands, mostly ones ``c`` accepts
        near = _values_near(c) + SCALARS
        accepts = _compiled(_cap(c))
        inside = [x for x in near if accepts is not None and _allows(accepts, {"a": x})]
        values = rng.sample(inside, min(2, len(inside))) + rng.sample(near, 1)
        if rng.random() < 0.6 and len(values) > 1:
            values.pop()  # only accepted values: narrower
        return {"in": values} if rng.random() < 0.6 else {"eq": values[0]}
    if kind == 8 and ops:  # an operator added
        op = rng.choice(sorted(LEAF))
        extra = dict(c)
        extra.pop("any", None)
        extra[op] = _tighter_operand(op, _default_operand(op), rng)
        return extra
    return c


def _default_operand(op: str) -> Any:
    return {
        "eq": "a", "in": ["a", 1], "not_in": [1], "lt": 1, "le": 1, "gt": 0, "ge": 0,
        "max_len": 2, "prefix": "a", "suffix": ".txt", "glob": "a*", "regex": "a.*",
        "subpath": "/srv", "email_domain": "example.com", "cidr": "10.0.0.0/8",
        "subset_of": ["a", 1], "url": {"schemes": ["https"], "hosts": ["api.example.com"]},
    }[op]


# --- values ------------------------------------------------------------------------------

PATH_TAILS = ["", "/", "/a", "/a/", "/../x", "/a/../..", "x", "/./a", "//a", "/%2e%2e/x",
              "/%252e%252e/x", "/a%2Fb", "\\a", "/a\x00", "/a\n"]
URL_HOSTS = ["api.example.com", "API.Example.COM.", "a.api.example.com", "example.com",
             "evilexample.com", "b.example.com", "127.0.0.1", "2130706433", "0x7f.1", "127.1",
             "0177.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "10.0.0.1", "012.0.0.1",
             "xn--80ak6aa92e.com", "\u0430pi.example.com", "api.example.com%2e"]
URL_PORTS = ["", ":443", ":8443", ":80", ":0443"]
URL_PATHS = ["", "/", "/v1", "/v1/", "/v1x", "/v10", "/v1/x", "/v1/x/../../v2", "/v1/%2e%2e/v2",
             "/v", "/V1", "/v1/x/y"]
URL_TRICKS = [
    "https://evil.com@api.example.com/v1", "https://api.example.com\\@evil.com/v1",
    "https://api.example.com /v1", "HTTPS://api.example.com/v1", "https:/api.example.com/v1",
    "//api.example.com/v1", "https://api.example.com:443@evil.com/", "ftp://api.example.com/",
    "https://api.example.com./v1", "https://api.example.com:/v1", "https://[::1]:443/v1",
    "https://api.example.com#@evil.com/v1", "https://api.example.com?x=/v1",
]
EMAILS = ["a@example.com", "a@EXAMPLE.com", "a@b.example.com", "a@example.com.evil", "@example.com",
          "\"a\"@example.com", "a@@example.com", "a b@example.com", "a@example.org",
          "a@example.com\n", "a@xn--exmple-cua.com"]
IPS = ["10.0.0.1", "10.1.2.3", "10.1.3.1", "11.0.0.1", "9.255.255.255", "::1", "::2",
       "::ffff:10.0.0.1", "010.0.0.1", "0.0.0.0", "2001:db8::1", "10.0.0.1/32", " 10.0.0.1"]
ODD: list[Any] = [math.nan, math.inf, -math.inf, (1,), b"a", {1: "a"}, [math.nan], -0.0,
                  10**20 + 1, 1e300]


def _walk(c: Any, out: list[Any], rng: random.Random) -> None:
    if not isinstance(c, dict):
        return
    for op, x in c.items():
        if op in ("lt", "le", "gt", "ge"):
            out += [x, x - 1, x + 1, x - 0.5, x + 0.5, float(x)]
        elif op == "max_len":
            out += ["a" * x, "a" * (x + 1), [0] * x, [0] * (x + 1)]
        elif op in ("prefix", "suffix"):
            out += [x, x + "a", "a" + x, x[:-1], x[1:], x + "/"]
        elif op == "glob":
            out += [x.replace("*", "").replace("?", "b"), x.replace("*", "ab").replace("?", "a")]
        elif op == "eq":
            out += [x]
        elif op in ("in", "not_in", "subset_of"):
            out += list(x)
            if op == "subset_of":
                out += [list(x), x[:1], [*x, "zz"], []]
        elif op == "subpath":
            out += [x + t for t in PATH_TAILS] + [x.rstrip("/") + "x", "/srv/build/../../etc"]
        elif op == "url":
            for _ in range(12):
                out.append(rng.choice(["https", "http"]) + "://" + rng.choice(URL_HOSTS)
                           + rng.choice(URL_PORTS) + rng.choice(URL_PATHS))
            for h in x["hosts"]:
                host = f"[{h}]" if ":" in h else h.replace("*", "a")
                for s in x["schemes"]:
                    out += [f"{s}://{host}{p}" for p in rng.sample(URL_PATHS, 3)]
        elif op == "email_domain":
            out += [f"u@{d}" for d in ([x] if isinstance(x, str) else x)]
        elif op == "each":
            inner: list[Any] = []
            _walk(x, inner, rng)
            inner += SCALARS
            out += [[], rng.sample(inner, 1), rng.sample(inner, 2), [rng.choice(inner)] * 3]
        elif op == "fields":
            inner = []
            for fc in x.values():
                _walk(fc, inner, rng)
            inner += SCALARS
            for _ in range(6):
                names = rng.sample(["x", "y", "z"], rng.randrange(0, 3))
                out.append({n: rng.choice(inner) for n in names})
        elif op in ("all_of", "any_of"):
            for m in x:
                _walk(m, out, rng)
        elif op == "not":
            _walk(x, out, rng)


def _values_near(c: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    _walk(c, out, random.Random(0))
    return out


def _pool(rng: random.Random, *cs: dict[str, Any]) -> list[Any]:
    out: list[Any] = [*SCALARS, *ODD, *rng.sample(URL_TRICKS, 5), *EMAILS, *IPS,
                      [], [1], ["a", "b"], {}, {"x": 1}, {"x": "a", "y": None}]
    for c in cs:
        _walk(c, out, rng)
    return out


# --- the properties -----------------------------------------------------------------------


def _cap(c: dict[str, Any]) -> dict[str, Any]:
    return {"action": "t.x", "args": {"a": c}}


def _compiled(obj: dict[str, Any]) -> Any:
    try:
        return compile_capability(parse_capability(obj))
    except ConstraintError:
        return None


def _allows(compiled: Any, args: dict[str, Any]) -> bool:
    return _check_args(compiled, args) is None


STATS = {"pairs": 0, "narrower": 0, "values": 0}


def _check_pair(parent: dict[str, Any], child: dict[str, Any], rng: random.Random) -> None:
    p, c = _compiled(_cap(parent)), _compiled(_cap(child))
    if p is None or c is None:
        return
    STATS["pairs"] += 1
    if not is_narrower(_cap(child), _cap(parent)):
        return
    STATS["narrower"] += 1
    for v in [*_pool(rng, parent, child), _MISSING]:
        args = {} if v is _MISSING else {"a": v}
        if _allows(c, args):
            STATS["values"] += 1
            if not _allows(p, args):
                note(f"value {v!r}")
                raise AssertionError(f"child {child!r} allows {v!r}; parent {parent!r} denies")


_MISSING = object()


@SETTINGS
@given(parent=constraint(), seed=st.integers(0, 2**32 - 1), optional=st.booleans())
def test_narrower_child_never_accepts_a_value_its_parent_denies(
    parent: dict[str, Any], seed: int, optional: bool
) -> None:
    rng = random.Random(seed)
    if optional:
        parent = parent | {"optional": True}
    for _ in range(4):
        child = derive({k: v for k, v in parent.items() if k != "optional"}, rng)
        if rng.random() < 0.5 and parent.get("optional"):
            child = child | {"optional": True}
        _check_pair(parent, child, rng)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parent=constraint(1), child=constraint(1), seed=st.integers(0, 2**32 - 1))
def test_unrelated_pairs(parent: dict[str, Any], child: dict[str, Any], seed: int) -> None:
    _check_pair(parent, child, random.Random(seed))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=constraint())
def test_every_valid_constraint_is_narrower_than_itself(c: dict[str, Any]) -> None:
    if _compiled(_cap(c)) is None:
        return
    assert is_narrower(_cap(c), _cap(c)), c


def test_the_generator_finds_narrower_pairs() -> None:
    """Guard against a vacuous soundness test: enough pairs must be narrower, with values."""
    STATS.update(pairs=0, narrower=0, values=0)
    settings(max_examples=60, deadline=None, database=None,
             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])(
        given(parent=constraint(), seed=st.integers(0, 2**32 - 1), optional=st.booleans())(
            test_narrower_child_never_accepts_a_value_its_parent_denies.hypothesis.inner_test  # type: ignore[attr-defined]
        )
    )()
    assert STATS["pairs"] >= 100, STATS
    assert STATS["narrower"] >= STATS["pairs"] // 5, STATS
    assert STATS["values"] >= 3 * STATS["narrower"], STATS
