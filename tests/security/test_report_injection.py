"""The alignment report reads data that agents control (action names, argument values,
agent ids all travel from a call into the audit stream). Nothing in it may inject into
the HTML page, and no entry, however malformed, may crash the report."""

from __future__ import annotations

import re

import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from remit_service._alignment import Alignment, compute
from remit_service._report_render import render

from tests.audit_events import EventWriter

T0 = 1_700_000_000_000
EVIL = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)></code></table><svg onload=x>"
ALLOWED_TAGS = {
    "!DOCTYPE",
    "html",
    "head",
    "meta",
    "title",
    "style",
    "body",
    "h1",
    "h2",
    "h3",
    "p",
    "table",
    "tr",
    "th",
    "td",
    "code",
    "b",
    "br",
    "span",
    "div",
    "svg",
    "line",
    "text",
    "polyline",
    "circle",
    "rect",
}


def test_html_report_escapes_agent_controlled_values(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    w = EventWriter(redis_client, redis_prefix)
    w.grant(
        "g_1",
        [{"action": "payments.transfer", "args": {"amount": {"le": 100}}}],
        ts=T0,
        purpose=EVIL,
        sub=EVIL,
        agent=EVIL,
    )
    w.decision(ts=T0, gid="g_1", action="payments.transfer", args={"amount": 40}, agent=EVIL)
    w.decision(
        ts=T0 + 1,
        gid="g_1",
        action="payments.transfer",
        code="argument_denied",
        arg=EVIL,
        args={"amount": 1000, EVIL: EVIL},
        agent=EVIL,
    )
    w.decision(ts=T0 + 2, gid="g_1", action="x" + EVIL, code="action_not_granted", agent=EVIL)
    w.decision(ts=T0 + 3, gid="g_1", action="payments.transfer", args={EVIL: EVIL})
    page = render(compute(redis_client, w.key), "html")
    assert (
        EVIL[:20] not in page
        and "<img" not in page
        and "onload=" not in page.replace("onload=x&gt;", "")
    )
    # every tag in the page is one the renderer writes itself
    assert set(re.findall(r"<\s*([a-zA-Z0-9!]+)", page)) <= ALLOWED_TAGS
    assert page.count("&lt;script&gt;") >= 5  # the payload is there, as text
    assert "Content-Security-Policy" in page  # and no script would run even if it were not


_field = st.one_of(st.binary(max_size=40), st.text(max_size=40))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from([b"v", b"w", b"n", b"h", b"ev", b"x"]), _field, max_size=6),
        max_size=8,
    ),
    st.lists(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
            max_leaves=10,
        ),
        max_size=4,
    ),
)
def test_any_entry_is_counted_or_skipped_never_a_crash(
    entries: list[dict[bytes, object]], events: list[object]
) -> None:
    import json

    acc = Alignment()
    for i, fields in enumerate(entries):
        acc.feed(f"{i}-0".encode(), fields)
    for i, ev in enumerate(events):  # well-formed entries around arbitrary JSON events
        acc.feed(
            b"1-1",
            {
                b"v": b"1",
                b"w": b"w",
                b"n": str(i).encode(),
                b"h": b"0",
                b"ev": json.dumps(ev).encode(),
            },
        )
    report = acc.report()
    assert report["stream"]["entries"] == len(entries) + len(events)
    render(report, "html")
    render(report, "text")
