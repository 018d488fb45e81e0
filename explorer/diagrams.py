"""Writing diagrams: DOT text from the views, drawn by Graphviz's `dot`, written atomically.

`diagram(trace, block, depth)` gives a `Diagram` (DOT text that draws itself in Jupyter);
`write(diagram, path)` picks the format from the extension; `write_figures(folder)` writes every
figure of the article, one `.svg` and one `.dot` each.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from explorer import files
from explorer.errors import ExplorerError
from explorer.files import write_file
from explorer.record import Trace

FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot"}
FIT_PT = 540  # a figure wider than this (720 px) takes the width of the notebook's cell
INSTALL = "install Graphviz: `apt install graphviz`, `brew install graphviz` or `conda install graphviz`"


class GraphvizMissing(ExplorerError):
    """Graphviz's `dot` program is not installed."""


@dataclass(frozen=True)
class Diagram:
    """A figure as DOT text. In Jupyter it displays as SVG, drawn by Graphviz."""

    name: str
    dot: str

    def render(self, fmt: str = "svg") -> bytes:
        if fmt == "dot":
            return self.dot.encode()
        import graphviz

        try:
            return graphviz.Source(self.dot).pipe(format=fmt)
        except graphviz.ExecutableNotFound as exc:
            raise GraphvizMissing(f"Graphviz's dot program is needed to draw {fmt.upper()}: {INSTALL}.") from exc

    def _repr_svg_(self) -> str:
        return fitted(self.render("svg").decode())


def fitted(svg: str) -> str:
    """An SVG from Graphviz, made for notebooks, where it may be shown inline (nbconvert's HTML with
    inline SVG, the classic notebook) or as an image (JupyterLab, nbconvert's default HTML, GitHub).

    A figure wider than FIT_PT loses its fixed size and takes the width it is given, at most its
    own; a narrower one keeps its size (it fits any notebook) and is scaled down if it must be.
    Inline, a link in its corner opens it at full size and back (CSS `:target`, no script); as an
    image the link is hidden (it could not be clicked) and the browser's "open image" gives the
    full size."""
    start = svg.index("<svg")
    open_end = svg.index(">", start)
    head = svg[start:open_end]
    size = re.search(r'width="([\d.]+)pt" height="([\d.]+)pt"', head)
    if size is None:
        return svg
    width = float(size.group(1))
    figure_id = "sdx-" + hashlib.sha1(svg.encode()).hexdigest()[:10]
    if width > FIT_PT:
        head = head.replace(size.group(0), f'width="100%" style="max-width:{width:g}pt;height:auto"', 1)
    else:
        head = head.replace(size.group(0), f'{size.group(0)} style="max-width:100%;height:auto"', 1)
    head = head.replace("<svg", f'<svg id="{figure_id}"', 1)
    style = (
        f"<style>#{figure_id}:target{{max-width:none!important;width:{width:g}pt}}"
        f"#{figure_id}:target .sdx-full,#{figure_id}:not(:target) .sdx-fit,svg:root .sdx-link{{display:none}}"
        ".sdx-link text{font:11px Helvetica,Arial,sans-serif;fill:#2f6db5;cursor:pointer}</style>"
    )
    x = f'x="{width - 4:g}" y="14" text-anchor="end"'
    links = (
        f'<a class="sdx-link sdx-full" href="#{figure_id}"><text {x}>full size ⤢</text></a>'
        f'<a class="sdx-link sdx-fit" href="#{figure_id}-fit"><text {x}>fit the width ⤡</text></a>'
    )
    end = svg.rindex("</svg>")
    return svg[:start] + head + svg[open_end:end] + style + links + svg[end:]


def diagram(trace: Trace, block: str | None = None, depth: int = 1, **options) -> Diagram:
    """The data-flow diagram of `block` (the whole component when None), `depth` levels deep."""
    from explorer.views.graph import scene, to_dot

    return Diagram(block or trace.component, to_dot(scene(trace, block, depth, **options)))


def format_of(path: Path) -> str:
    if path.suffix.lower() not in FORMATS:
        raise ExplorerError(
            f"{path.name}: the format comes from the extension, and {path.suffix or 'no extension'} is not one "
            f"of {', '.join(FORMATS)}."
        )
    return FORMATS[path.suffix.lower()]


def check_writable(folder: Path) -> None:
    files.check_writable(folder, "the diagrams")


def _make_folder(folder: Path) -> None:
    check_writable(folder)
    files.make_folder(folder)


def write(d: Diagram, path: Path) -> Path:
    """Write `d` to `path` in the format its extension names. Without Graphviz a `.dot` is written
    beside it anyway, then GraphvizMissing says how to install Graphviz."""
    fmt = format_of(path)
    _make_folder(path.parent)
    try:
        data = d.render(fmt)
    except GraphvizMissing:
        dot_path = path.with_suffix(".dot")
        write_file(dot_path, d.dot.encode())
        raise GraphvizMissing(
            f"Graphviz's dot program is needed to draw {path.name} (its DOT source is in {dot_path}): {INSTALL}."
        ) from None
    write_file(path, data)
    return path


def figure_diagrams(traces: dict[str, Trace], lang: str = "en") -> Iterable[Diagram]:
    """Every figure of the article, from the unet / vae / clip traces, then the pipeline overview;
    `lang` "zh": titled and captioned in Chinese (names and shapes as they are)."""
    from explorer.views.figures import FIGURES, figure_scene, pipeline_scene
    from explorer.views.graph import to_dot

    for figure in FIGURES:
        yield Diagram(figure.name, to_dot(figure_scene(figure, traces[figure.component]), lang=lang))
    yield Diagram("pipeline-overview", to_dot(pipeline_scene(traces["unet"], traces["vae"], traces["clip"]), lang=lang))


def figure_count() -> int:
    from explorer.views.figures import FIGURES

    return len(FIGURES) + 1


def write_figures(
    traces: dict[str, Trace],
    folder: Path,
    formats: tuple[str, ...] = ("svg", "dot"),
    progress: Callable[[str], None] = lambda name: None,
    lang: str = "en",
) -> list[Path]:
    """Write every figure into `folder`, one file per format. DOT files are written even without
    Graphviz; then GraphvizMissing is raised once they all are."""
    _make_folder(folder)
    written, missing = [], None
    for d in figure_diagrams(traces, lang):
        progress(d.name)
        for fmt in formats:
            path = folder / f"{d.name}.{fmt}"
            try:
                write_file(path, d.render(fmt))
                written.append(path)
            except GraphvizMissing as exc:
                missing = exc
    if missing is not None:
        raise GraphvizMissing(f"The .dot files are in {folder}, but Graphviz's dot program is needed to draw them: {INSTALL}.")
    return written
