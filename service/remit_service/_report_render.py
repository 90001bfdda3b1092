"""Render an alignment report (``remit.alignment/v1``) as text, JSON or one HTML page.

The HTML page is self-contained (inline CSS, an inline SVG chart, no script, no
external asset) so it can be mailed to a user or filed by an auditor. Every value
from the report — action names, argument values, agent ids all come from the audit
stream, i.e. ultimately from agents — goes through :func:`html.escape`; nothing is
ever inserted unescaped. In the text form every line is passed through :func:`_safe`,
so no value can break a line, move the cursor or reorder text on a terminal.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from html import escape
from typing import Any

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "json", "html")
CHART_AGENTS = 8  # agents drawn in the chart (most attempts first); the table lists all
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, sort_keys=False)
    if fmt == "text":
        return _text(report)
    if fmt == "html":
        return _html(report)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


# Characters a terminal acts on or that reorder text: controls (Cc: LF, CR, ESC, C1's
# CSI...), format characters (Cf: bidi overrides and isolates, zero-width ones), line and
# paragraph separators (Zl, Zp) and lone surrogates (Cs). Not printable, by str.isprintable.
_UNSAFE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_NOT_PRINTABLE = re.compile(r"[^ -~]")  # candidates; unicodedata decides


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    if unicodedata.category(c) not in _UNSAFE:
        return c
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def _safe(line: str) -> str:
    """One line of the text report with every control, format, separator or surrogate
    character written as a visible escape (``\\x1b``, ``\\u202e``): values come from
    agents, and a raw newline or ANSI sequence in one could forge report lines."""
    return line if line.isprintable() else _NOT_PRINTABLE.sub(_escape_char, line)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def _j(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _used(used: dict[str, Any] | None, recorded: int, allowed: int) -> str:
    if used is None:
        return "never used" if recorded == allowed else "values not recorded"
    parts = []
    if "values" in used:
        parts.append("values " + _j(used["values"]))
    elif "min" in used:
        parts.append(f"{used['min']} .. {used['max']}")
    if "common_prefix" in used and "values" not in used:
        parts.append(f"prefix {_j(used['common_prefix'])}, max length {used['max_len']}")
    parts.append(f"in {used['calls']}/{allowed} allowed calls")
    if recorded < allowed:
        parts.append(f"values recorded for {recorded}")
    return "; ".join(parts)


# --- text --------------------------------------------------------------------------------


def _text(r: dict[str, Any]) -> str:
    out: list[str] = []
    s, t = r["stream"], r["totals"]
    out.append(f"remit action-alignment report ({r['schema']})")
    out.append(
        f"stream {s['key']}: {s['entries']} entries, {s['decisions']} decisions counted, "
        f"{s['skipped']} skipped {_j(s['skipped_by_reason'])}"
    )
    out.append(f"period: {_when(s['first_ts_ms'])} .. {_when(s['last_ts_ms'])}")
    if r["filters"]:
        out.append(f"filters: {_j(r['filters'])}")
    out.append(
        f"totals: {t['grants']} grants, {t['attempts']} attempts, {t['allowed']} allowed, "
        f"{t['denied']} denied, exceedance {_pct(t['exceedance_rate'])}, "
        f"least privilege {_pct(t['least_privilege'])}"
    )
    for g in r["grants"]:
        out.append("")
        out.append(f"grant {g['gid']}" + ("" if g["known"] else " (grant details not found)"))
        if g["known"]:
            out.append(
                f"  app {g['app']}, subject {g['subject']}, agent {g['agent']}, "
                f"audience {', '.join(g['audience'])}, purpose {_j(g['purpose'])}"
            )
        out.append(
            f"  {g['attempts']} attempts, {g['allowed']} allowed, {g['denied']} denied "
            f"(exceedance {_pct(g['exceedance_rate'])}); tokens minted {g['tokens_minted']}, "
            f"exchanged {g['tokens_exchanged']}; least privilege "
            f"{_pct(g['least_privilege']['score'])}"
        )
        for rv in g["revocations"]:
            out.append(f"  revoked {_when(rv['ts'])} by {rv['by']}: {rv['reason']}")
        out.append("  capabilities:")
        for c in g["capabilities"]:
            out.append(
                f"    [{c['index']}] {c['action']} {_j(c['args'], 120)}: {c['attempts']} attempts, "
                f"{c['allowed']} allowed, {c['denied']} denied"
                + ("" if c["allowed"] else "  <- never exercised")
            )
        for o in g["actions_outside_grant"]:
            out.append(f"    (not granted) {o['action']}: {o['attempts']} attempts")
        if g["over_reach"]:
            out.append("  over-reach (denied attempts by reason):")
            for o in g["over_reach"]:
                out.append(f"    {o['code']} ({o['label']}): {o['count']}")
                for ex in o["examples"]:
                    extra = f" arg {ex['arg']}" if "arg" in ex else ""
                    extra += f" args {ex['args']}" if "args" in ex else ""
                    out.append(f"      e.g. {_when(ex['ts'])} {ex['action']}{extra}")
        if g["unused"]["arguments"]:
            out.append("  arguments (granted vs used):")
            for a in g["unused"]["arguments"]:
                out.append(
                    f"    {a['action']}.{a['arg']}: granted {_j(a['granted'])}; used "
                    + _used(a["used"], a["recorded_calls"], a["allowed_calls"])
                )
        if g["suggested"] is not None:
            out.append("  narrowest grant covering every allowed call:")
            out.append("    " + json.dumps(g["suggested"], sort_keys=True))
    if r["unattributed"]["denied"]:
        out.append("")
        out.append(
            f"denials without a grant (token unreadable): {r['unattributed']['denied']} "
            f"{_j(r['unattributed']['by_code'])}"
        )
    if r["agents"]:
        out.append("")
        out.append(f"exceedance per agent (buckets of {r['bucket_seconds']} s):")
        for a in r["agents"]:
            out.append(
                f"  {a['agent']}: {a['attempts']} attempts, {a['denied']} denied "
                f"({_pct(a['exceedance_rate'])})"
            )
            for b in a["buckets"]:
                if b["denied"]:
                    out.append(
                        f"    {_when(b['start_ms'])}: {b['denied']}/{b['attempts']} "
                        f"({_pct(b['exceedance_rate'])})"
                    )
    return "\n".join(map(_safe, out)) + "\n"


# --- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;margin:.6em 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all}
.warn{color:#a40000}.ok{color:#1a7f37}.muted{color:#777}.box{background:#f8f8f8;padding:.6em}
"""


def _e(value: Any) -> str:
    return escape(value if isinstance(value, str) else str(value), quote=True)


def _code(value: Any, limit: int = 400) -> str:
    return f"<code>{_e(_j(value, limit))}</code>"


def _row(cells: list[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return (
        "<tr>"
        + "".join(c if c.startswith("<td") else f"<{tag}>{c}</{tag}>" for c in cells)
        + "</tr>"
    )


def _num(x: Any) -> str:
    return f'<td class="n">{_e(x)}</td>'


def _chart(r: dict[str, Any]) -> str:
    agents = sorted(r["agents"], key=lambda a: -a["attempts"])[:CHART_AGENTS]
    starts = sorted({b["start_ms"] for a in agents for b in a["buckets"]})
    if not starts:
        return '<p class="muted">No decisions in the period.</p>'
    width, height, pad = 900, 240, 40
    lo, hi = starts[0], starts[-1]
    span = max(hi - lo, 1)

    def x(ms: int) -> float:
        return pad + (width - 2 * pad) * ((ms - lo) / span if hi > lo else 0.5)

    def y(rate: float) -> float:
        return height - pad - (height - 2 * pad) * rate

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height + 20 * len(agents)}"'
        ' role="img" aria-label="exceedance rate per agent over time" width="100%">',
        f'<line x1="{pad}" y1="{y(0)}" x2="{width - pad}" y2="{y(0)}" stroke="#999"/>',
        f'<line x1="{pad}" y1="{y(0)}" x2="{pad}" y2="{y(1)}" stroke="#999"/>',
    ]
    for tick in (0, 0.5, 1):
        parts.append(
            f'<text x="{pad - 6}" y="{y(tick) + 4}" font-size="10" text-anchor="end">'
            f"{int(tick * 100)}%</text>"
        )
    parts.append(
        f'<text x="{pad}" y="{height - pad + 16}" font-size="10">{_e(_when(lo))}</text>'
        f'<text x="{width - pad}" y="{height - pad + 16}" font-size="10" text-anchor="end">'
        f"{_e(_when(hi))}</text>"
    )
    for i, a in enumerate(agents):
        color = COLORS[i % len(COLORS)]
        pts = [(x(b["start_ms"]), y(b["exceedance_rate"] or 0.0), b) for b in a["buckets"]]
        if len(pts) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in pts)
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>'
            )
        for px, py, b in pts:
            tip = f"{a['agent']} {_when(b['start_ms'])}: {b['denied']}/{b['attempts']} denied"
            parts.append(
                f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}">'
                f"<title>{_e(tip)}</title></circle>"
            )
        ly = height + 14 + 20 * i
        parts.append(
            f'<rect x="{pad}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{pad + 16}" y="{ly}" font-size="12">{_e(a["agent"])} '
            f"({_e(_pct(a['exceedance_rate']))} of {a['attempts']})</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _grant_html(g: dict[str, Any]) -> str:
    h: list[str] = [f"<h2>Grant <code>{_e(g['gid'])}</code></h2>"]
    if g["known"]:
        h.append(
            "<p>"
            f"App <b>{_e(g['app'])}</b> · subject <b>{_e(g['subject'])}</b> · agent "
            f"<b>{_e(g['agent'])}</b> · audience {_e(', '.join(g['audience']))}<br>"
            f"Purpose: {_e(g['purpose'])}</p>"
        )
    else:
        h.append(
            '<p class="warn">Grant details not found (created before the period, or expired).</p>'
        )
    lp = g["least_privilege"]["score"]
    h.append(
        f"<p>{g['attempts']} attempts · <span class=ok>{g['allowed']} allowed</span> · "
        f"<span class=warn>{g['denied']} denied</span> "
        f"(exceedance {_e(_pct(g['exceedance_rate']))})"
        f" · tokens minted {g['tokens_minted']}, exchanged {g['tokens_exchanged']}"
        f" · <b>least privilege {_e(_pct(lp))}</b></p>"
    )
    for rv in g["revocations"]:
        h.append(
            f"<p class=warn>Revoked {_e(_when(rv['ts']))} by {_e(rv['by'])}: {_e(rv['reason'])}</p>"
        )
    h.append("<h3>Granted capabilities</h3><table>")
    h.append(_row(["#", "action", "constraints", "attempts", "allowed", "denied", "used as"], True))
    for c in g["capabilities"]:
        used = ", ".join(c["actions_used"]) or '<span class="warn">never exercised</span>'
        if c["actions_used"]:
            used = _e(used)
        h.append(
            _row(
                [
                    _num(c["index"]),
                    f"<code>{_e(c['action'])}</code>",
                    _code(c["args"]),
                    _num(c["attempts"]),
                    _num(c["allowed"]),
                    _num(c["denied"]),
                    used,
                ]
            )
        )
    for o in g["actions_outside_grant"]:
        h.append(
            _row(
                [
                    "-",
                    f"<code>{_e(o['action'])}</code>",
                    '<span class="warn">not granted</span>',
                    _num(o["attempts"]),
                    _num(0),
                    _num(o["denied"]),
                    "",
                ]
            )
        )
    h.append("</table>")
    if g["over_reach"]:
        h.append("<h3>Over-reach: denied attempts by reason</h3><table>")
        h.append(_row(["reason", "count", "examples"], True))
        for o in g["over_reach"]:
            ex = "<br>".join(
                f"{_e(_when(x['ts']))} <code>{_e(x['action'])}</code>"
                + (f" arg <code>{_e(x['arg'])}</code>" if "arg" in x else "")
                + (f" args <code>{_e(x['args'])}</code>" if "args" in x else "")
                + (f" agent {_e(x['agent'])}" if x.get("agent") else "")
                for x in o["examples"]
            )
            h.append(_row([f"{_e(o['label'])} <code>{_e(o['code'])}</code>", _num(o["count"]), ex]))
        h.append("</table>")
    if g["unused"]["arguments"]:
        h.append("<h3>Arguments: granted vs used</h3><table>")
        h.append(_row(["action", "argument", "granted", "used"], True))
        for a in g["unused"]["arguments"]:
            h.append(
                _row(
                    [
                        f"<code>{_e(a['action'])}</code>",
                        f"<code>{_e(a['arg'])}</code>",
                        _code(a["granted"]),
                        _e(_used(a["used"], a["recorded_calls"], a["allowed_calls"])),
                    ]
                )
            )
        h.append("</table>")
    if g["suggested"] is not None:
        h.append(
            "<h3>Narrowest grant covering every allowed call</h3>"
            '<div class="box"><code>'
            f"{_e(json.dumps(g['suggested'], indent=1, sort_keys=True))}</code></div>"
        )
    return "".join(h)


def _html(r: dict[str, Any]) -> str:
    s, t = r["stream"], r["totals"]
    body = [
        "<h1>remit action-alignment report</h1>",
        f"<p>Period {_e(_when(s['first_ts_ms']))} to {_e(_when(s['last_ts_ms']))} · stream "
        f"<code>{_e(s['key'])}</code>: {s['entries']} entries, {s['decisions']} decisions, "
        f"{s['skipped']} skipped"
        + (f" {_code(s['skipped_by_reason'])}" if s["skipped"] else "")
        + (f" · filters {_code(r['filters'])}" if r["filters"] else "")
        + f" · generated {_e(_when(r['generated_at_ms']))}</p>",
        "<table>",
        _row(["grants", "attempts", "allowed", "denied", "exceedance", "least privilege"], True),
        _row(
            [
                _num(t["grants"]),
                _num(t["attempts"]),
                _num(t["allowed"]),
                _num(t["denied"]),
                _num(_pct(t["exceedance_rate"])),
                _num(_pct(t["least_privilege"])),
            ]
        ),
        "</table>",
        "<h2>Exceedance rate (denied / attempted) per agent, "
        f"buckets of {r['bucket_seconds']} s</h2>",
        _chart(r),
        "<table>",
        _row(["agent", "attempts", "denied", "exceedance"], True),
    ]
    for a in r["agents"]:
        body.append(
            _row(
                [
                    _e(a["agent"]),
                    _num(a["attempts"]),
                    _num(a["denied"]),
                    _num(_pct(a["exceedance_rate"])),
                ]
            )
        )
    body.append("</table>")
    body.extend(_grant_html(g) for g in r["grants"])
    if r["unattributed"]["denied"]:
        body.append(
            f"<h2>Denials without a grant</h2><p>{r['unattributed']['denied']} calls whose token "
            f"could not be read: {_code(r['unattributed']['by_code'])}</p>"
        )
    body.append(
        '<p class="muted">Least privilege: mean over granted capabilities of the share of '
        "their authority exercised (docs/audit.md). Argument values are known only for actions "
        "whose values the operator lets verifiers record.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # Defense in depth behind the escaping: this page never runs a script or loads a thing.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        "<title>remit action-alignment report</title>"
        f"<style>{_CSS}</style></head><body>" + "".join(body) + "</body></html>\n"
    )
