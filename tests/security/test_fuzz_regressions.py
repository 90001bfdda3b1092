"""Findings of the fuzz tests (tests/security/test_fuzz.py, scripts/fuzz_atheris), pinned.

Each finding's test is named after what it found, says what found it and holds the exact
input. Before the fix, each let an exception other than ``Denied`` / ``ConstraintError``
out of remit, or allowed what the reference denies. Next to them, ``..._still_...`` tests
pin the behaviour the fixes had to keep. The last tests run the atheris harness's targets
without atheris: on its seeds, on its findings (in remit, made on the pre-fix code; and in
the harness itself), and on a fixed sample of random inputs.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import pytest
import remit
from remit import Code, ConstraintError, Denied, is_narrower
from remit._constraints import compile_capability, parse_capability
from remit._verifier import _check_args

from tests.scripts import load_script
from tests.security.test_fuzz import (
    KEY,
    VALID_TOKEN,
    BrokenMapping,
    DictSub,
    Hostile,
    ListSub,
    StrSub,
    make_verifier,
    valid_claims,
)
from tests.tokens import ACTION, ARGS, sign

ROOT = Path(__file__).resolve().parents[2]


def _compiled(cap: dict[str, Any]) -> Any:
    return compile_capability(parse_capability(cap))


# --- evaluator: argument names ---------------------------------------------------------


def test_str_subclass_argument_name_passed_as_the_named_argument() -> None:
    """Found by test_evaluator_decides_any_python_value (hypothesis). A ``str`` subclass
    equal to a named argument was looked up as that argument and allowed, while the same
    subclass under ``"*"`` was ``invalid_request``: an argument object that is not JSON
    (a non-string key) must never satisfy a capability."""
    cap = _compiled({"action": "t.x", "args": {"a": {"eq": None}}})
    denial = _check_args(cap, {StrSub("a"): None})  # was None: allowed
    assert denial is not None and denial.code is Code.INVALID_REQUEST
    assert _check_args(cap, {"a": None}) is None


def test_str_subclass_argument_name_through_the_verifier() -> None:
    verifier = make_verifier()
    args = {StrSub("amount"): 50, "to": "DE89"}  # was allowed
    with pytest.raises(Denied) as info:
        verifier.check(VALID_TOKEN, action=ACTION, args=args)
    assert info.value.code is Code.INVALID_REQUEST
    assert verifier.check(VALID_TOKEN, action=ACTION, args=dict(ARGS)).allowed


def test_argument_name_with_a_colliding_hash_ran_its_eq() -> None:
    """Found by test_evaluator_decides_any_python_value (hypothesis, Hostile keys). A key
    whose hash equals a named argument's made the lookup call its ``__eq__``, and its
    RuntimeError escaped ``_check_args`` and ``Verifier.check``."""
    cap = _compiled({"action": "t.x", "args": {"a": {"any": True}}})
    denial = _check_args(cap, {Hostile(): 1})  # was RuntimeError("compared")
    assert denial is not None and denial.code is Code.INVALID_REQUEST
    # the same, as scripts/fuzz_atheris --target constraints found it on the pre-fix code
    cap = _compiled({"action": "a-b_c.d9", "args": {"a": {"prefix": ""}}})
    denial = _check_args(cap, {Hostile(): (1,)})
    assert denial is not None and denial.code is Code.INVALID_REQUEST

    token = sign(
        valid_claims(authorization_details=[
            {"type": "remit.capability", "action": "t.x", "args": {"a": {"any": True}}}
        ]),
        KEY,
    )
    with pytest.raises(Denied) as info:
        make_verifier().check(token, action="t.x", args={Hostile(): 1})
    assert info.value.code is Code.INVALID_REQUEST


@pytest.mark.parametrize("fail_on", ["iter", "getitem"])
def test_args_mapping_that_cannot_be_read(fail_on: str) -> None:
    """Found while writing test_any_python_inputs_are_denied_or_decided (code review of
    ``_authorize``, then pinned by the property): ``dict(args)`` on a Mapping that raises
    let its RuntimeError / KeyError out of ``Verifier.check``."""
    with pytest.raises(Denied) as info:
        make_verifier().check(VALID_TOKEN, action=ACTION, args=BrokenMapping(fail_on))
    assert info.value.code is Code.INVALID_REQUEST


def test_readable_mapping_subclass_args_still_work() -> None:
    assert make_verifier().check(VALID_TOKEN, action=ACTION, args=DictSub(ARGS)).allowed


# --- narrowing and validation: input that is not a capability -------------------------

CAP = {"action": "t.x", "args": {"a": {"le": 5}}}


@pytest.mark.parametrize(
    ("child", "parent", "was"),
    [
        (None, [], "TypeError: 'NoneType' object is not iterable"),
        ([], None, "TypeError: 'NoneType' object is not iterable"),
        (5, CAP, "TypeError: 'int' object is not iterable"),
        ([1], CAP, "TypeError: 'int' object is not iterable"),
        ([None], CAP, "TypeError: 'NoneType' object is not iterable"),
        ("ab", CAP, "ValueError: dictionary update sequence element #0 has length 1"),
        (CAP, b"ab", "TypeError: 'int' object is not iterable"),
        (CAP, {1, 2}, "TypeError: 'int' object is not iterable"),
        (CAP, range(2), "TypeError: 'int' object is not iterable"),
        (CAP, (x for x in [CAP]), "True: a one-shot iterator was taken for a scope"),
        (object(), object(), "TypeError: 'object' object is not iterable (atheris, empty input)"),
    ],
    ids=["none-child", "none-parent", "int", "list-of-int", "list-of-none", "str", "bytes",
         "set", "range", "generator", "object"],
)
def test_is_narrower_on_non_capabilities(child: Any, parent: Any, was: str) -> None:
    """Found by test_is_narrower_total (hypothesis): ``is_narrower`` promises
    ``ConstraintError`` for malformed input, but anything neither a Mapping nor iterable
    of Mappings raised TypeError / ValueError from ``list()`` / ``dict()`` (``was``). A
    scope is now a Sequence (not a str or bytes) of capabilities; an iterator is not one."""
    with pytest.raises(ConstraintError):
        is_narrower(child, parent)


@pytest.mark.parametrize(
    "obj",
    [
        {"": [1], 0: [[1], [1]]},  # the exact input (cycles in its lists did not matter)
        {"action": "t.x", 1: None, "x": None},
        {"action": "t.x", None: 1, (1,): 2},
        {"action": "t.y", "args": {}, "limits": 1, None: 1},  # scripts/fuzz_atheris
    ],
)
def test_capability_with_unknown_members_of_mixed_types(obj: dict[Any, Any]) -> None:
    """Found by test_is_narrower_total (hypothesis): parse_capability sorted the unknown
    member names for its message, and names of unorderable types (``""`` and ``0``) made
    that raise TypeError instead of ConstraintError, from parse_capability and is_narrower."""
    with pytest.raises(ConstraintError) as info:
        parse_capability(obj)
    assert info.value.path == "" and "unknown members" in info.value.message
    with pytest.raises(ConstraintError):
        is_narrower({"action": "t.x"}, obj)


def test_is_narrower_still_takes_lists_tuples_and_capabilities() -> None:
    cap = parse_capability(CAP)
    wider = {"action": "t.*", "args": {"a": {"le": 10}}}
    assert is_narrower(CAP, wider)
    assert is_narrower([CAP], (wider,))
    assert is_narrower(CAP, [{"action": "t.y"}, wider])
    assert is_narrower(ListSub([cap]), [wider])
    assert is_narrower([], [wider])  # an empty scope allows nothing
    assert not is_narrower(wider, [])


# --- the atheris harness, without atheris ------------------------------------------------


HARNESS = load_script("fuzz_atheris")

# Inputs that broke the harness's own generators in the first campaigns (huge-int arithmetic
# while mutating a document or a bound); remit was not at fault. Pinned so the harness stays
# able to decode everything libFuzzer makes.
HARNESS_FINDINGS = {
    "token": ["BP////8AAAAS/wEibnVsbCID"],
    "narrowing": [
        "AgIC////O/////8ge8zMzFyioqKiogAAAAAAoqKioqKioqICAv///zv/////IHuioqICAv///zv/////IHvM"
        "zMxcoqLMzMxcoqKiBA=="
    ],
}
# Findings in remit: what the harness found when run on the pre-fix code (each fix undone
# in memory only), within 60 s each. All are pinned directly above too.
REMIT_FINDINGS = {
    "constraints": [
        # capability {"action": "a-b_c.d9", "args": {"a": {"prefix": ""}}}, args
        # {Hostile(): (1,)}: RuntimeError("compared") out of _check_args
        "Avb29vb29vYLAAAAAAAAAPb29vb29vb2dvYFBQUFBQUFBQUFBQUFBQUFBQX2IjFlOTk5Ivb29qICAgICAgIicHJl"
        "ZvJ4IgICAgICAgIC",
        # capability {"action": "t.y", "args": {}, "limits": 1, None: 1}: TypeError out of
        # parse_capability (sorting unknown member names)
        "AmxlYWNpdGltaXRzAgICAg==",
    ],
    "narrowing": [
        # the empty input: is_narrower(<not JSON>, <not JSON>) raised TypeError
        "",
        # both sides with unknown members None and "limits": TypeError from parse_capability
        "cGF5bW94UGVGS3hSemRxTDNmMm1pUwQA+P/////3cmdoImdsY20EBAQEBDMzeURhY2VudHMudHJhbgIC/vcC"
        "AgIC",
    ],
}


@pytest.mark.parametrize("target", sorted(HARNESS.TARGETS))
def test_harness_targets_run_without_atheris(target: str) -> None:
    run = HARNESS.TARGETS[target]
    inputs = list(HARNESS.seeds(target))
    inputs += [base64.b64decode(b) for b in HARNESS_FINDINGS.get(target, [])]
    inputs += [base64.b64decode(b) for b in REMIT_FINDINGS.get(target, [])]
    rng = random.Random(f"remit-fuzz-{target}")
    inputs += [rng.randbytes(rng.randrange(300)) for _ in range(150)]
    for data in inputs:
        HARNESS.run_one(run, data)


def test_harness_reader_is_total() -> None:
    r = HARNESS.Reader(b"")
    assert r.int(3, 9) == 3 and r.pick("abc") == "a" and r.rest() == b"" and r.text(5) == ""
    assert remit.Code  # the harness imports remit the same way tests do
