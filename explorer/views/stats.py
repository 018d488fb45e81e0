"""`explore stats`: where the parameters, the FLOPs and the activations are. Pure functions of records."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from explorer.analysis import WORK, Scaling, activation_bytes, flops_by_work, leaf_activation_bytes
from explorer.record import Trace
from explorer.views.format import call_suffix, fmt_bytes, fmt_flops, fmt_params, share
from explorer.views.tree import layout, type_style


def stats_rows(trace: Trace, whole: Trace) -> list[dict[str, Any]]:
    """One row per node of `trace` (already narrowed), shares taken against `whole`."""
    total_act = leaf_activation_bytes(whole)
    rows = []
    for row in layout(trace):
        n = row["node"]
        if n.is_step and not n.flops:
            continue  # a step moves data around: nothing to count
        act = activation_bytes(n)
        rows.append(
            {
                "guide": row["guide"],
                "name": row["name"] + call_suffix(n),
                "node": n,
                "params": n.params if not n.call else 0,
                "flops": n.flops,
                "activation_bytes": act,
                "params_share": share(n.params, whole.total_params) if not n.call else "",
                "flops_share": share(n.flops, whole.total_flops),
                "activation_share": share(act, total_act),
            }
        )
    return rows


def stats_table(trace: Trace, whole: Trace, sort: str = "tree") -> Group:
    rows = stats_rows(trace, whole)
    if sort != "tree":
        key = {"flops": "flops", "params": "params", "activation": "activation_bytes"}[sort]
        rows = sorted(rows, key=lambda r: -r[key])
        for r in rows:
            r["guide"], r["name"] = "", r["node"].path or whole.component
    table = Table(box=None, padding=(0, 1), header_style="bold dim", pad_edge=False)
    table.add_column("module", no_wrap=True)
    table.add_column("type", no_wrap=True)
    for title in ("params", "%", "FLOPs", "%", "output fp32", "fp16", "% act."):
        table.add_column(title, justify="right", no_wrap=True)
    for r in rows:
        n = r["node"]
        table.add_row(
            Text(r["guide"], "bright_black") + Text(r["name"], "bold" if not r["guide"] and sort == "tree" else ""),
            Text(n.label if n.is_step else n.type, type_style(n)),
            fmt_params(r["params"]) if r["params"] else "",
            Text(r["params_share"], "dim"),
            fmt_flops(r["flops"]),
            Text(r["flops_share"], "bold" if r["flops"] >= 0.1 * whole.total_flops else "dim"),
            fmt_bytes(r["activation_bytes"]),
            Text(fmt_bytes(r["activation_bytes"] // 2), "dim"),
            Text(r["activation_share"], "dim"),
        )
    head = Text.assemble(
        (whole.component, "bold"),
        (f" · {whole.model} · ", "dim"),
        "  ".join(f"{k} [{','.join(map(str, v))}]" for k, v in whole.inputs.items()),
        (f" · {whole.total_params:,} params · {whole.total_flops / 1e9:,.1f} GFLOPs per call", "dim"),
    )
    foot = Text(
        "FLOPs: PyTorch's FlopCounterMode (matmuls, convolutions, attention), counted on the meta device; "
        "a multiply-add is 2. % act.: share of what all the layers together write, in float32.",
        "dim",
    )
    return Group(head, Text(""), table, Text(""), foot)


def scaling_table(rows: list[Scaling], component: str) -> Group:
    base = next((r for r in rows if r.size == 512), rows[0])
    table = Table(box=None, padding=(0, 2), header_style="bold dim", title_justify="left")
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    for work in WORK:
        table.add_column(work, justify="right", no_wrap=True)
    table.add_column("total", justify="right", no_wrap=True)
    table.add_column(f"× {base.size} px", justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            f"{r.size} px",
            f"{r.tokens:,}",
            *(f"{r.flops[w] / 1e9:,.1f}" for w in WORK),
            Text(f"{r.total / 1e9:,.1f}", "bold"),
            Text(f"{r.total / base.total:.2f}×", "bold"),
        )
    growth = []
    for work in WORK:
        if base.flops[work] and rows[-1].flops[work]:
            growth.append(f"{work} ×{rows[-1].flops[work] / base.flops[work]:.1f}")
    pixels = (rows[-1].size / base.size) ** 2
    note = Text(
        f"From {base.size} to {rows[-1].size} px the latent has {pixels:.2f}× the positions: convolutions and "
        f"linear layers grow with it (×{pixels:.2f}), self-attention with its square (×{pixels**2:.2f}), "
        f"cross-attention linearly (77 prompt tokens don't change). Measured: " + ", ".join(growth) + ".",
        "dim",
    )
    title = Text.assemble((f"{component}: GFLOPs of one call at each size, by kind of work", "bold"))
    return Group(title, Text(""), table, Text(""), note)


def plot_scaling(rows: list[Scaling], component: str):
    """A matplotlib figure: GFLOPs by kind of work against the image size, stacked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r.size for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    bottom = [0.0] * len(rows)
    colors = {"convolution": "#4e9ac7", "self-attention": "#a05cc8", "cross-attention": "#d99bd9", "linear / other": "#e6b83c"}
    for work in WORK:
        values = [r.flops[work] / 1e9 for r in rows]
        ax.bar([str(s) for s in sizes], values, bottom=bottom, label=work, color=colors[work])
        bottom = [b + v for b, v in zip(bottom, values)]
    for x, top in enumerate(bottom):
        ax.text(x, top, f"{top:,.0f}", ha="center", va="bottom", fontsize=9)
    ax.set_xlabel("image size (pixels per side)")
    ax.set_ylabel("GFLOPs per call")
    ax.set_title(f"SD1.5 {component}: cost of one call, by kind of work")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def png_bytes(fig) -> bytes:
    """A matplotlib figure as PNG bytes (written atomically by the caller)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def stats_json(trace: Trace, whole: Trace) -> dict[str, Any]:
    """The record, with per-node flops, params and activation bytes (float32), and the totals."""
    data = trace.to_dict()
    data["total_flops"] = whole.total_flops
    data["total_params"] = whole.total_params
    data["flops_by_kind"] = flops_by_work(whole)  # the record's field keeps its name
    for node, out in zip(trace.nodes, data["nodes"]):
        out["flops"] = node.flops
        out["activation_bytes"] = activation_bytes(node)
    return data
