"""How the views write things: shapes, counts, sizes, times, node names and ids, escaping, and the
sentence about a prompt too long for CLIP. Written once here, used by every view (and the CLI).

Pure functions of plain values; nothing heavy is imported.
"""

from __future__ import annotations

import html
from typing import Any

# -- numbers -------------------------------------------------------------------------------------------


def shape_str(shape, compact: bool = False) -> str:
    """`[2, 320, 64, 64]` as the article writes it; `compact` drops the spaces. A tuple of shapes
    is written in parentheses."""
    if shape and isinstance(shape[0], tuple):  # a tuple of shapes
        return "(" + ", ".join(shape_str(s, compact) for s in shape) + ")"
    sep = "," if compact else ", "
    return "[" + sep.join(str(d) for d in shape) + "]"


def fmt_shape(shape) -> str:
    """[2,320,64,64]; a tuple of shapes with repeats folded: ([2,1280,8,8]×3)."""
    if shape and isinstance(shape[0], tuple):
        return "(" + fmt_shapes(shape) + ")"
    return shape_str(shape, compact=True)


def fmt_shapes(shapes) -> str:
    """Several shapes, equal neighbours folded: [2,320,64,64]×2, [2,320,32,32]."""
    runs: list[list] = []
    for s in shapes:
        if runs and runs[-1][0] == s:
            runs[-1][1] += 1
        else:
            runs.append([s, 1])
    return ", ".join(shape_str(s, compact=True) + (f"×{n}" if n > 1 else "") for s, n in runs)


def fmt_named_outputs(names, shapes) -> str:
    """'last_hidden_state [2,77,768] · hidden_states[0–12] [2,77,768]×13': outputs with their names,
    the items of one tuple folded while their shapes agree."""
    runs: list[list] = []  # [base name, first index, last index, shape, count]
    for name, shape in zip(names, shapes):
        base, _, index = name.partition("[")
        if runs and index and runs[-1][0] == base and runs[-1][3] == shape and runs[-1][2] is not None:
            runs[-1][2] = index.rstrip("]")
            runs[-1][4] += 1
            continue
        runs.append([base if index else name, index.rstrip("]") if index else None, index.rstrip("]") if index else None, shape, 1])
    parts = []
    for base, first, last, shape, count in runs:
        name = base if first is None else (f"{base}[{first}]" if count == 1 else f"{base}[{first}–{last}]")
        parts.append(f"{name} {fmt_shape(shape)}".strip() + (f"×{count}" if count > 1 else ""))
    return " · ".join(parts)


def fmt_params(n: int) -> str:
    """859520964 -> '859.5M', 410880 -> '410.9K', 640 -> '640'."""
    for size, unit in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def fmt_flops(n: int) -> str:
    """1606.5e9 -> '1,606.5 G'."""
    if n >= 1e9:
        return f"{n / 1e9:,.1f} G"
    if n >= 1e6:
        return f"{n / 1e6:,.1f} M"
    return f"{n / 1e3:,.1f} K" if n else "0"


def fmt_bytes(n: int) -> str:
    for size, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def share(part: int, whole: int) -> str:
    """'12.5 %', or '' when there is no whole."""
    return f"{100 * part / whole:.1f} %" if whole else ""


def fmt_seconds(s: float) -> str:
    """0.42 s, 12.3 s, 1:05."""
    if s >= 60:
        return f"{int(s // 60)}:{int(s % 60):02d}"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 step', '2 steps'."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


# -- nodes -----------------------------------------------------------------------------------------------


def call_suffix(node: Any) -> str:
    """' (call 2)' for a node's second call, '' for its first."""
    return f" (call {node.call + 1})" if node.call else ""


def node_id(node: Any) -> str:
    """A node's id in the diagrams and the page: its path ('root' for the component), '#N' after
    the first call."""
    return (node.path or "root") + (f"#{node.call}" if node.call else "")


def relative_name(path: str, scope: str) -> str:
    """`path` below `scope`: 'resnets.0' inside 'down_blocks.0'; the whole path outside it."""
    if scope and path.startswith(scope + "."):
        return path[len(scope) + 1 :]
    return path


# -- escaping -------------------------------------------------------------------------------------------


def esc(text: str) -> str:
    """Text for a Graphviz HTML-like label."""
    return html.escape(text, quote=False)


def small(text: str, color: str = "#555555") -> str:
    """A smaller, grey line in a Graphviz HTML-like label."""
    return f'<font point-size="10" color="{color}">{esc(text)}</font>'


def attr(value: str) -> str:
    """Text for an HTML attribute value in double quotes."""
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


# -- prompts -------------------------------------------------------------------------------------------


def dropped_tokens(record: dict) -> str:
    """The sentence for a prompt longer than CLIP's window ('' when it fits), from a record of
    explorer.tokenizer.tokenize."""
    if not record.get("dropped_count"):
        return ""
    kept = len(record["ids"]) - 2
    return (
        f"this prompt is {record['dropped_count']} tokens too long: CLIP keeps {kept} and drops: {record['dropped']!r}"
    )
