"""The patch plan as a picture: an inline SVG graph, laid out here (no script, no library).

Four columns, left to right: the base's entries of the patched functions; the patched
functions in the patch image; what they reach in the patch image (unpatched callees,
``__ref_`` slots, IAT slots, new globals and functions); and what in the base those are
bound to.  Edges are coloured by the table record that binds them.  Deterministic: nodes
are sorted by name, coordinates are integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.plan.model import PatchPlan

COLUMNS = ("base: redirected entries", "patch image: patched functions", "patch image: what they reach",
           "base: bound targets")
#: edge kind -> (colour, legend)
EDGE_KINDS = {
    "forward": ("#c0392b", "FUNCTION: base entry redirected to the patched function"),
    "uses": ("#7f8c8d", "patched code refers to it"),
    "backward": ("#2471a3", "INVERSE FUNCTION: unpatched callee's copy redirected back to base"),
    "data": ("#1e8449", "INVERSE ABSOLUTE: __ref_ slot bound to the base's global"),
    "import": ("#8e44ad", "INVERSE INDIRECT: IAT copy filled from the base's IAT"),
}
NODE_KINDS = {
    "base-fn": "#fdecea", "patched": "#fadbd8", "callee": "#d6eaf8", "slot": "#d5f5e3",
    "iat": "#ebdef0", "own-import": "#f4ecf7", "new": "#fef9e7", "base-target": "#eaeded",
}
MAX_PER_COLUMN = 60
ROW_H, GAP, COL_GAP, CHAR_W, PAD = 22, 8, 90, 7, 10
TOP = 46


@dataclass
class Node:
    key: str
    label: str
    kind: str
    column: int
    tip: str = ""
    y: int = 0


@dataclass
class Graph:
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, kind)
    hidden: dict[int, int] = field(default_factory=dict)  # column -> nodes left out

    def node(self, key: str, label: str, kind: str, column: int, tip: str = "") -> str:
        if key not in self.nodes:
            self.nodes[key] = Node(key, label, kind, column, tip)
        return key

    def edge(self, a: str, b: str, kind: str) -> None:
        if (a, b, kind) not in self.edges:
            self.edges.append((a, b, kind))


def plan_graph(plan: PatchPlan) -> Graph:
    g = Graph()
    for f in plan.forward:
        b = g.node(f"b:{f.function}", f.function, "base-fn", 0, f"base {f.base_rva:#x}")
        p = g.node(f"p:{f.function}", f.function, "patched", 1, f"patch image {f.patch_rva:#x}")
        g.edge(b, p, "forward")

    def users(names: tuple[str, ...] | list[str], target: str) -> None:
        for u in names:
            key = f"p:{u}"
            if key not in g.nodes:  # a reference from a function the plan did not redirect
                g.node(key, u, "patched", 1)
            g.edge(key, target, "uses")

    for bw in plan.backward:
        c = g.node(f"c:{bw.function}", bw.function, "callee", 2, f"patch copy {bw.patch_rva:#x}")
        t = g.node(f"t:{bw.function}", bw.function, "base-target", 3, f"base {bw.base_rva:#x}")
        users(bw.referenced_by, c)
        g.edge(c, t, "backward")
    for d in plan.data:
        s = g.node(f"s:{d.slot}", d.slot, "slot", 2, f"slot {d.slot_rva:#x}")
        t = g.node(f"t:{d.target}", d.target, "base-target", 3, f"base {d.base_rva:#x}")
        users(d.read_by, s)
        g.edge(s, t, "data")
    for im in plan.imports:
        s = g.node(f"i:{im.name}", im.name, "iat", 2, f"IAT slot {im.patch_slot_rva:#x}")
        t = g.node(f"ti:{im.name}", im.name, "base-target", 3, f"base IAT slot {im.base_slot_rva:#x}")
        users(im.used_by, s)
        g.edge(s, t, "import")
    for oi in plan.own_imports:
        s = g.node(f"i:{oi.name}", f"{oi.name} (own IAT)", "own-import", 2, "resolved by the patch image")
        users(oi.used_by, s)
    for ng in plan.new_globals:
        g.node(f"n:{ng.name}", f"{ng.name} (new global)", "new", 2, f"stays in the patch image {ng.patch_rva:#x}")
        if ng.slot and f"s:{ng.slot}" in g.nodes:
            g.edge(f"s:{ng.slot}", f"n:{ng.name}", "uses")
    for nf in plan.new_functions:
        n = g.node(f"n:{nf.name}", f"{nf.name} (new function)", "new", 2,
                   f"stays in the patch image {nf.patch_rva:#x}")
        if nf.reached_by:
            users([nf.reached_by], n)
    _limit(g)
    return g


def _limit(g: Graph) -> None:
    """At most MAX_PER_COLUMN nodes a column (the tables list everything)."""
    for col in range(len(COLUMNS)):
        keys = sorted((k for k, n in g.nodes.items() if n.column == col), key=lambda k: (g.nodes[k].label, k))
        for k in keys[MAX_PER_COLUMN:]:
            del g.nodes[k]
        if len(keys) > MAX_PER_COLUMN:
            g.hidden[col] = len(keys) - MAX_PER_COLUMN
    g.edges = [e for e in g.edges if e[0] in g.nodes and e[1] in g.nodes]


def render_svg(g: Graph) -> str:
    """The graph as an ``<svg>`` element (with a legend), or a sentence when it is empty."""
    if not g.nodes:
        return '<p class="muted">The plan redirects nothing.</p>'
    cols: list[list[Node]] = [sorted((n for n in g.nodes.values() if n.column == c), key=lambda n: (n.label, n.key))
                              for c in range(len(COLUMNS))]
    widths = [max(max([len(n.label) for n in col] + [8]) * CHAR_W + 2 * PAD, len(COLUMNS[i]) * 7 + 4)
              for i, col in enumerate(cols)]
    xs = [0]
    for w in widths[:-1]:
        xs.append(xs[-1] + w + COL_GAP)
    rows = max(len(c) + (1 if g.hidden.get(i) else 0) for i, c in enumerate(cols))
    for col in cols:
        for i, n in enumerate(col):
            n.y = TOP + i * (ROW_H + GAP)
    legend_y = TOP + rows * (ROW_H + GAP) + 16
    width = xs[-1] + widths[-1] + 2
    height = legend_y + len(EDGE_KINDS) * 18 + 8
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plan-graph" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="patch plan graph" '
           f'font-family="ui-monospace, Menlo, Consolas, monospace" font-size="12">']
    out.append("<defs>")
    for kind, (colour, _) in EDGE_KINDS.items():
        out.append(f'<marker id="arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>')
    out.append("</defs>")
    for i, title in enumerate(COLUMNS):
        out.append(f'<text x="{xs[i]}" y="16" font-weight="bold" font-family="sans-serif">{escape(title)}</text>')
        if g.hidden.get(i):
            y = TOP + len(cols[i]) * (ROW_H + GAP) + 15
            out.append(f'<text x="{xs[i] + PAD}" y="{y}" fill="#555">+ {g.hidden[i]} more (see the tables)</text>')
    for a, b, kind in g.edges:
        na, nb = g.nodes[a], g.nodes[b]
        x1, y1 = xs[na.column] + widths[na.column], na.y + ROW_H // 2
        x2, y2 = xs[nb.column], nb.y + ROW_H // 2
        mid = (x1 + x2) // 2
        colour = EDGE_KINDS[kind][0]
        dash = ' stroke-dasharray="4 3"' if kind == "uses" else ""
        out.append(f'<path class="edge edge-{kind}" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" '
                   f'stroke="{colour}" stroke-width="1.5"{dash} marker-end="url(#arrow-{kind})"/>')
    for i, col in enumerate(cols):
        for n in col:
            tip = f"<title>{escape(n.label)}{': ' + escape(n.tip) if n.tip else ''}</title>"
            out.append(f'<g class="node node-{n.kind}">{tip}<rect x="{xs[i]}" y="{n.y}" width="{widths[i]}" '
                       f'height="{ROW_H}" rx="4" fill="{NODE_KINDS[n.kind]}" stroke="#566573"/>'
                       f'<text x="{xs[i] + PAD}" y="{n.y + 15}">{escape(n.label)}</text></g>')
    for j, (kind, (colour, text)) in enumerate(EDGE_KINDS.items()):
        y = legend_y + j * 18
        dash = ' stroke-dasharray="4 3"' if kind == "uses" else ""
        out.append(f'<line x1="0" y1="{y}" x2="40" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>'
                   f'<text x="50" y="{y + 4}" font-family="sans-serif">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out)
