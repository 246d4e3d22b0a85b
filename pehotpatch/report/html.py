"""The review report as one HTML file: everything inline (style, SVG, rule pages), no
script, no external resource, readable in any browser and printable.  Deterministic: the
same model gives the same bytes."""

from __future__ import annotations

import re
from html import escape
from typing import TYPE_CHECKING

from pehotpatch.report.graph import plan_graph, render_svg
from pehotpatch.rules import RULES

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.plan.model import PatchPlan
    from pehotpatch.report.model import FunctionView, ReportModel

STYLE = """
:root { --err: #b03a2e; --warn: #b9770e; --note: #2e86c1; --ok: #1e8449; --muted: #5d6d7e; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1c2833;
       margin: 0 auto; max-width: 1400px; padding: 1.2em 2em 3em; }
h1 { font-size: 1.5em; margin: 0 0 .2em; } h2 { border-bottom: 2px solid #d5d8dc; padding-bottom: .2em;
margin-top: 2em; } h3 { margin: 1.4em 0 .4em; }
code, pre, .mono, table.listing td { font-family: ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace;
       font-size: 12.5px; }
code { overflow-wrap: anywhere; }
table.inputs td { overflow-wrap: anywhere; }
nav.toc { margin: .6em 0 1em; } nav.toc a { margin-right: 1.1em; }
a { color: #1f618d; }
.muted { color: var(--muted); }
.verdict { display: inline-block; font-weight: bold; font-size: 1.25em; padding: .25em .8em; border-radius: 4px;
       color: white; letter-spacing: .05em; }
.verdict.patchable { background: var(--ok); } .verdict.rejected { background: var(--err); }
table { border-collapse: collapse; margin: .4em 0 1em; }
th, td { border: 1px solid #d5d8dc; padding: .25em .55em; text-align: left; vertical-align: top; }
th { background: #f2f3f4; }
td.num { text-align: right; }
.sev { font-weight: bold; text-transform: uppercase; font-size: .85em; }
.sev.error { color: var(--err); } .sev.warning { color: var(--warn); } .sev.note { color: var(--note); }
tr.waived td { color: var(--muted); }
ul.explain { margin: .2em 0 0 1.1em; padding: 0; }
table.listing { width: 100%; table-layout: fixed; }
table.listing td { padding: 0 .5em; border: none; border-right: 1px solid #d5d8dc; white-space: pre-wrap;
       word-break: break-all; }
table.listing td.ln { width: 3.2em; color: var(--muted); text-align: right; user-select: none; }
table.listing tr.change td.l, table.listing tr.delete td.l { background: #fadbd8; }
table.listing tr.change td.r, table.listing tr.insert td.r { background: #d5f5e3; }
table.listing tr.delete td.r, table.listing tr.insert td.l { background: #f8f9f9; }
table.listing col.ln { width: 3.4em; }
.legend span { display: inline-block; padding: 0 .5em; margin-right: .6em; }
.del { background: #fadbd8; } .ins { background: #d5f5e3; }
.graph { overflow-x: auto; border: 1px solid #d5d8dc; padding: .6em; background: #fdfefe; }
.rule-page { border-left: 4px solid #d5d8dc; padding: 0 1em; margin: 1em 0 2em; }
.rule-page h1 { font-size: 1.25em; } .rule-page h2 { font-size: 1.05em; border: none; margin-top: 1em; }
.rule-page pre { background: #f4f6f6; padding: .6em; overflow-x: auto; }
.badge { display: inline-block; font-size: .8em; padding: 0 .4em; border-radius: 3px; background: #eaeded; }
.badge.patched { background: #d5f5e3; } .badge.unpatched { background: #fadbd8; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav.toc { display: none; }
  h2 { break-after: avoid; } table, .graph { break-inside: auto; }
  tr, .rule-page h1 { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
  .graph { overflow: visible; border: none; }
}
"""

_LINK = re.compile(r'<a href="([^"]*)">(.*?)</a>', re.S)


def _md(text: str, embedded: set[str]) -> str:
    """A rule page (Markdown) as HTML: rule links point into the report, other relative links become text."""
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def link(m: re.Match[str]) -> str:
        href, label = m.group(1), m.group(2)
        rule = re.fullmatch(r"(HP\d{3})\.md(#.*)?", href)
        if rule and rule.group(1) in embedded:
            return f'<a href="#rule-{rule.group(1)}">{label}</a>'
        if re.match(r"[a-z][a-z0-9+.-]*:", href) or href.startswith("#"):
            return m.group(0)
        return label

    return _LINK.sub(link, html)


def _rule_link(rid: str) -> str:
    return f'<a href="#rule-{escape(rid)}">{escape(rid)}</a>'


def _findings(m: ReportModel) -> str:
    if not m.findings:
        return '<p id="no-findings">No findings: nothing in this change is against a rule.</p>'
    rows = []
    for f in m.findings:
        rule = RULES.get(f.rule)
        explain = "".join(f"<li>{escape(e)}</li>" for e in f.explanation)
        waived = ""
        if f.waiver is not None:
            waived = (f'<div class="muted">waived: {escape(f.waiver.justification or "")}'
                      f'{" (expires " + f.waiver.expires.isoformat() + ")" if f.waiver.expires else ""}</div>')
        rows.append(
            f'<tr class="finding{" waived" if f.waiver is not None else ""}" data-rule="{escape(f.rule)}">'
            f'<td>{_rule_link(f.rule)}</td><td class="sev {escape(f.severity)}">{escape(f.severity)}</td>'
            f'<td>{escape(rule.title if rule else "")}</td>'
            f'<td>{escape(f.message)}{"<ul class=explain>" + explain + "</ul>" if explain else ""}{waived}</td>'
            f'<td class="mono">{escape(f.symbol or "")}</td></tr>')
    return ('<table class="findings"><thead><tr><th>rule</th><th>severity</th><th>title</th>'
            '<th>finding and explanation</th><th>symbol</th></tr></thead><tbody>'
            + "\n".join(rows) + "</tbody></table>")


def _function(v: FunctionView) -> str:
    badge = ('<span class="badge patched">in the hot-patch set</span>' if v.patched
             else '<span class="badge unpatched">not in the hot-patch set</span>')
    head = (f'<h3 id="{v.anchor}" class="function" data-name="{escape(v.name)}"><code>{escape(v.name)}</code> '
            f'{badge}</h3><p class="muted">{escape(v.status)} ({escape(v.reason or "-")}); paired by '
            f'{escape(v.pairing)}; base {v.base_rva:#x}'
            f'{" (" + escape(v.base_name) + ")" if v.base_name != v.name else ""}, intermediate {v.new_rva:#x}</p>')
    if v.data:
        head += "<p>Changed read-only data it reads: " + ", ".join(f"<code>{escape(d)}</code>" for d in v.data) + "</p>"
    if not v.listed:
        fd = v.first_difference
        return head + (f'<p class="muted">Listing left out (too many changed functions); first difference: '
                       f'<code>{escape(fd[0])}</code> &rarr; <code>{escape(fd[1])}</code></p>' if fd else "")
    rows = []
    li = ri = 0
    for r in v.rows:
        ln_l = ln_r = ""
        if r.left is not None:
            li += 1
            ln_l = str(li)
        if r.right is not None:
            ri += 1
            ln_r = str(ri)
        rows.append(f'<tr class="{r.kind}"><td class="ln">{ln_l}</td><td class="l">{escape(r.left or "")}</td>'
                    f'<td class="ln">{ln_r}</td><td class="r">{escape(r.right or "")}</td></tr>')
    more = f'<p class="muted">{v.truncated} more lines left out.</p>' if v.truncated else ""
    return (head + '<table class="listing"><colgroup><col class="ln"><col><col class="ln"><col></colgroup>'
            '<thead><tr><th colspan="2">base (references named as in the intermediate)</th>'
            '<th colspan="2">intermediate</th></tr></thead><tbody>'
            + "\n".join(rows) + "</tbody></table>" + more)


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    if not rows:
        return ""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "\n".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _plan(plan: PatchPlan | None, error: str | None) -> str:
    if plan is None:
        return f'<p class="muted">No plan: {escape(error or "the plan could not be built")}.</p>'
    parts = [f'<p>Sequence {plan.sequence}; {"applicable" if plan.applicable else "<b>not applicable</b>"}: '
             + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in plan.counts().items()) + ".</p>",
             f'<div class="graph">{render_svg(plan_graph(plan))}</div>']
    sections = [
        ("Patched functions (FUNCTION)", ["function", "base RVA", "patch RVA", "first bytes"],
         [[f.function, f"{f.base_rva:#x}", f"{f.patch_rva:#x}", f"{f.first_bytes:#010x}"] for f in plan.forward]),
        ("Unpatched callees redirected to the base (INVERSE FUNCTION)", ["function", "patch RVA", "base RVA", "called by"],
         [[b.function, f"{b.patch_rva:#x}", f"{b.base_rva:#x}", ", ".join(b.referenced_by)] for b in plan.backward]),
        ("__ref_ slots bound to base globals (INVERSE ABSOLUTE)", ["slot", "slot RVA", "target", "base RVA", "read by"],
         [[d.slot, f"{d.slot_rva:#x}", d.target, f"{d.base_rva:#x}", ", ".join(d.read_by)] for d in plan.data]),
        ("IAT copies (INVERSE INDIRECT)", ["import", "patch slot", "base slot", "used by"],
         [[i.name, f"{i.patch_slot_rva:#x}", f"{i.base_slot_rva:#x}", ", ".join(i.used_by)] for i in plan.imports]),
        ("Imports the base lacks (the patch image's own IAT)", ["import", "patch slot", "used by"],
         [[i.name, f"{i.patch_slot_rva:#x}", ", ".join(i.used_by)] for i in plan.own_imports]),
        ("CFG call targets (INVERSE CALL_TARGET)", ["function", "patch RVA", "base RVA"],
         [[c.function, f"{c.patch_rva:#x}", f"{c.base_rva:#x}"] for c in plan.call_targets]),
        ("New globals (stay in the patch image)", ["global", "patch RVA", "through slot"],
         [[g.name, f"{g.patch_rva:#x}", g.slot or ""] for g in plan.new_globals]),
        ("New functions (stay in the patch image)", ["function", "patch RVA", "reached by", "how"],
         [[f.name, f"{f.patch_rva:#x}", f.reached_by or "", f.reached_how or ""] for f in plan.new_functions]),
        ("References the table cannot express", ["reference", "target", "reason"],
         [[r.reference, r.target, r.reason] for r in plan.refusals]),
    ]
    for title, head, rows in sections:
        if rows:
            parts.append(f"<h3>{escape(title)}</h3>" + _table(head, rows, "plan"))
    parts += [f'<p class="muted">{escape(n)}</p>' for n in plan.notes]
    return "\n".join(parts)


def _image(m: ReportModel) -> str:
    parts = []
    if m.image_changes:
        parts.append(_table(["what", "changes"], [[w, "; ".join(items)] for w, items in m.image_changes], "image"))
    else:
        parts.append("<p>No change to the exports, imports, sections, entry point, TLS callbacks or resources.</p>")
    parts.append("<h3>Load configuration</h3>"
                 + _table(["field", "base", "intermediate"], [list(r) for r in m.load_config], "loadconfig"))
    return "\n".join(parts)


def render_html(m: ReportModel) -> str:
    verdict = escape(m.verdict)
    counts = ", ".join(f"{v} {k if v != 1 or k == 'waived' else k[:-1]}" for k, v in m.counts.items())
    embedded = set(m.rules)
    fn_index = ", ".join(f'<a href="#{v.anchor}"><code>{escape(v.name)}</code></a>' for v in m.functions)
    functions = ("\n".join(_function(v) for v in m.functions) if m.functions
                 else '<p id="no-functions">No function changed.</p>')
    pairing = _table(["method", "functions"], [[k, str(v)] for k, v in m.pairing.items()], "pairing")
    summary = _table(["", "count"], [[k, str(v)] for k, v in m.summary.items()], "summary")
    hpset = _table(["function", "named by"], [[k, ", ".join(v)] for k, v in m.hotpatch_set.items()], "hpset") \
        or '<p class="muted">The hot-patch set is empty.</p>'
    inputs = _table(["role", "path", "bytes", "SHA-256"], [[i.role, i.path, str(i.size), i.sha256] for i in m.inputs],
                    "inputs")
    rules = "\n".join(f'<section class="rule-page" id="rule-{escape(rid)}">{_md(page, embedded)}</section>'
                      for rid, page in m.rules.items()) or '<p class="muted">No rule was reported.</p>'
    notes = "".join(f'<li>{escape(n)}</li>' for n in m.notes)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pehp {escape(m.tool_version)}">
<link rel="icon" href="data:,">
<title>pehp review: {escape(m.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header id="verdict">
<h1>Hot-patch review: <code>{escape(m.title)}</code></h1>
<p><span class="verdict {verdict}">{verdict.upper()}</span> &nbsp; {escape(m.machine)}; {escape(counts)};
exit code of <code>pehp check</code>: {m.exit_code}.</p>
{"<ul class=notes>" + notes + "</ul>" if notes else ""}
<nav class="toc"><a href="#findings">Findings</a><a href="#functions">Changed functions</a>
<a href="#plan">Patch plan</a><a href="#image">Image changes</a><a href="#pairing">Pairing</a>
<a href="#inputs">Inputs</a><a href="#rules">Rules</a></nav>
</header>
<section id="findings">
<h2>Findings</h2>
{_findings(m)}
</section>
<section id="functions">
<h2>Changed functions ({len(m.functions)})</h2>
{"<p>" + fn_index + "</p>" if fn_index else ""}
<p class="legend"><span class="del">base only or changed</span><span class="ins">intermediate only or changed</span>
Listings are normalised as by <code>pehp diff -v</code>: references are shown by name, the base's by the names of
their intermediate counterparts.</p>
{functions}
<h3>The hot-patch set</h3>
{hpset}
</section>
<section id="plan">
<h2>Patch plan</h2>
{_plan(m.plan, m.plan_error)}
</section>
<section id="image">
<h2>Image changes</h2>
{_image(m)}
</section>
<section id="pairing">
<h2>Pairing</h2>
<p>How the functions of the two builds were paired, by method:</p>
{pairing}
{summary}
</section>
<section id="inputs">
<h2>Inputs</h2>
{inputs}
<p class="muted">Written by pehp {escape(m.tool_version)}.</p>
</section>
<section id="rules">
<h2>Rules reported</h2>
{rules}
</section>
</body>
</html>
"""
