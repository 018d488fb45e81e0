"""Experiments and sweeps, shown: the summary in words, the side-by-side figure, the sweep's table
and the U coloured by each module's effect. Pure functions of the records (and the runs' images)."""

from __future__ import annotations

from typing import Any

from explorer.views.format import plural

# How much a module's edit changed the image (mean absolute pixel difference, 0 to 1): the bins the
# sweep's figure colours by, from "nothing" to "most of it".
EFFECT_BINS = ((0.0, "effect0"), (0.005, "effect1"), (0.02, "effect2"), (0.05, "effect3"), (0.12, "effect4"),
               (float("inf"), "effect5"))  # upper bounds; their words are the figure's legend (explorer.views.graph.LEGEND)
STRIP = ((0.0, (255, 255, 255)), (0.02, (255, 236, 179)), (0.1, (253, 174, 97)), (0.3, (227, 74, 51)), (1.0, (127, 0, 0)))


def effect_category(change: float) -> str:
    for upper, category in EFFECT_BINS:
        if change <= upper if upper == 0 else change < upper:
            return category
    return EFFECT_BINS[-1][1]


def _percent(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def summary(record: dict) -> str:
    """The experiment in a few sentences: what was edited, what changed in the image and where the
    change entered the U."""
    s = record.get("settings", {})
    lines = [f"{s.get('model', '')} · {s.get('prompt', '')!r} · seed {s.get('seed')} · {plural(record.get('calls', 0), 'step')}"]
    for edit in record.get("edits", []):
        lines.append(f"edit: {edit['text']}")
    if not record.get("edits"):
        lines.append("no edit: the two runs must be the same, bit for bit")
    image = record.get("image")
    if record.get("status") != "done":
        lines.append(f"status: {record.get('status')}" + (f" ({record['error']})" if record.get("error") else ""))
    if image:
        lines.append(f"image: {_percent(image['change'])} mean change, {_percent(image['changed_pixels'])} of the pixels "
                     "moved by more than 48/255")
    judge = record.get("judge")
    if judge:
        b, e = judge["baseline"], judge["edited"]
        said = lambda v: " ".join(x for x in (v["colour"], v["shape"], v["position"]) if x) or "nothing drawn"  # noqa: E731
        changed = ", ".join(judge["changed"]) or "nothing"
        lines.append(f"the judge: {said(b)} → {said(e)} (changed: {changed})")
    entered = record.get("entered")
    if entered:
        lines.append(f"the change entered at step {entered['step']}, in {entered['block']}")
    elif record.get("steps"):
        lines.append("no block's output changed at any step")
    steps = record.get("steps", [])
    if steps:
        lines.append("x0 change per step: " + " ".join(f"{100 * (s['x0'] or 0):.0f}" for s in steps) + " (%)")
    return "\n".join(lines)


def _heat(value: float) -> tuple[int, int, int]:
    v = max(0.0, min(1.0, value))
    for (p0, c0), (p1, c1) in zip(STRIP, STRIP[1:]):
        if v <= p1:
            f = (v - p0) / (p1 - p0) if p1 > p0 else 0.0
            return tuple(round(a + (b - a) * f) for a, b in zip(c0, c1))
    return STRIP[-1][1]


def u_blocks(blocks: list[str]) -> list[str]:
    """The blocks of the U (called depth 1: conv_in, the down blocks, the mid block, the up blocks,
    conv_out...) in the order the U runs them, from a record's list of watched modules."""
    return [b for b in blocks if "." not in b or b.count(".") == 1 and b.split(".")[0] in ("down_blocks", "up_blocks")]


def figure(experiment: Any):
    """Both images and their difference; x0 step by step for both runs; the change of every block of
    the U at every step, as a strip (rows: the blocks in the order the U runs them; columns: steps)."""
    import numpy as np
    from PIL import Image, ImageDraw

    record = experiment.record
    pad, text, panel = 8, 14, 160
    steps = record.get("steps", [])
    shown = _shown_steps(len(steps))
    thumb = 72
    blocks = u_blocks(record.get("blocks", []))
    cell_w = max(6, min(24, (3 * (panel + pad) - 140) // max(1, len(steps))))
    width = max(pad + 3 * (panel + pad), 80 + len(shown) * (thumb + 4) + pad, 140 + cell_w * len(steps) + pad)
    height = pad + 2 * text + 12 + panel + pad + 2 * (thumb + text) + pad + text + 12 * (len(blocks) + 1) + 3 * pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    s = record.get("settings", {})
    title = f"{s.get('prompt', '')!r}, seed {s.get('seed')}: " + ("; ".join(e["text"] for e in record.get("edits", [])) or "no edit")
    for k, line in enumerate(_lines(ascii_text(title), width // 6)[:2]):
        draw.text((pad, pad + k * 12), line, fill=(30, 30, 30))
    y = pad + 2 * text + 12
    images = []
    for run in (experiment.baseline, experiment.edited):
        try:
            images.append(run.image() if run is not None else None)
        except Exception:  # an interrupted run has no image
            images.append(None)
    if all(i is not None for i in images):
        a, b = (np.asarray(i.convert("RGB"), dtype=np.int16) for i in images)
        diff = Image.fromarray(np.clip(np.abs(a - b).max(axis=2) * 3, 0, 255).astype(np.uint8), "L").convert("RGB")
        images.append(diff)
    captions = ["baseline", "edited", "difference (x3)"]
    for k, image in enumerate(images):
        if image is None:
            continue
        x = pad + k * (panel + pad)
        sheet.paste(image.convert("RGB").resize((panel, panel), Image.NEAREST), (x, y))
        draw.text((x, y + panel + 1), captions[k], fill=(60, 60, 60))
    y += panel + text + pad
    for name, run in (("baseline", experiment.baseline), ("edited", experiment.edited)):
        draw.text((pad, y + thumb // 2 - 6), f"x0 {name}", fill=(60, 60, 60))
        for j, step in enumerate(shown):
            x = 80 + j * (thumb + 4)
            try:
                sheet.paste(run.x0(step).resize((thumb, thumb), Image.NEAREST), (x, y))
            except Exception:  # a step the run did not reach
                continue
            if name == "baseline":
                draw.text((x, y - 11), f"{step}", fill=(90, 90, 90))
        y += thumb + text
    draw.text((pad, y), "how much each block's output changed, |edited - baseline| / |baseline|, step by step (white: 0, dark red: 100 %):",
              fill=(30, 30, 30))
    _strip(draw, [*blocks, "x0"], steps, (pad, y + text), cell_w)
    return sheet


def _strip(draw, rows: list[str], steps: list[dict], at: tuple[int, int], cell_w: int) -> None:
    """One row per block (and x0), one cell per step, coloured by the change."""
    x0, y0 = at
    for row, path in enumerate(rows):
        y = y0 + row * 12
        draw.text((x0, y), path, fill=(60, 60, 60))
        for k, step in enumerate(steps):
            value = step["x0"] if path == "x0" else step["blocks"].get(path, 0.0)
            x = 140 + k * cell_w
            draw.rectangle((x, y, x + cell_w - 1, y + 10), fill=_heat(value or 0.0), outline=(235, 235, 235))


def ascii_text(text: str) -> str:
    """Text for PIL's built-in font, which draws ASCII only."""
    for wide, plain in (("→", "->"), ("×", "x"), ("−", "-"), ("–", "-"), ("‖", "|"), ("·", "-")):
        text = text.replace(wide, plain)
    return text.encode("ascii", "replace").decode()


def _lines(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _shown_steps(count: int, most: int = 8) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({round(k * (count - 1) / (most - 1)) for k in range(most)})


# -- sweeps -------------------------------------------------------------------------------------------


def judged(judge: dict | None) -> str:
    """What the judge saw change: "colour red → purple, shape circle → triangle", or "the same"."""
    if not judge:
        return ""
    if not judge["edited"]["colour"]:
        return "nothing drawn"
    changed = [f"{what} {judge['baseline'][what] or '?'} → {judge['edited'][what]}" for what in judge["changed"]]
    return ", ".join(changed) or "the same"


def sweep_table(record: dict) -> str:
    """One line per module: where it is, how much editing it changed the image, what the judge saw."""
    s = record.get("settings", {})
    edit = record.get("edit", "off") + (f" × {record.get('factor'):g}" if record.get("edit") == "scale" else "")
    lines = [f"{s.get('model', '')} · {s.get('prompt', '')!r} · seed {s.get('seed')} · {edit}, one module at a time"]
    rows = [("module", "level", "map", "image change", "pixels moved", "the judge")]
    for m in record.get("modules", []):
        rows.append((m["path"], m["level"], m["size"], _percent(m["change"]), _percent(m["changed_pixels"]), judged(m.get("judge"))))
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    for skipped in record.get("skipped", []):
        lines.append(f"skipped {skipped['path']}: {skipped['why']}")
    return "\n".join(lines)


def sweep_scene(record: dict, unet_trace: Any, depth: int = 2):
    """The U at `depth`, each box coloured by the largest image change of the modules swept inside
    it (or of itself), grey where nothing was swept."""
    from explorer.views.format import small
    from explorer.views.graph import scene

    effect: dict[str, float] = {}
    for m in record.get("modules", []):
        parts = m["path"].split(".")
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            effect[prefix] = max(effect.get(prefix, 0.0), m["change"])
    s = record.get("settings", {})
    result = scene(unet_trace, None, depth, title=f"{record.get('edit')}, one module at a time: how much the image of "
                   f"{s.get('prompt', '')!r} changed")
    for box in result.boxes:
        if box.id in effect:
            box.category = effect_category(effect[box.id])
            box.label += "<br/>" + small(f"image {_percent(effect[box.id])}", "#7a3b00")
        elif box.category != "io":
            box.category = "same"
    return result


def sweep_diagram(record: dict, unet_trace: Any, depth: int = 2):
    """`sweep_scene` as an explorer.Diagram (SVG in Jupyter, or written with explorer.diagrams.write)."""
    from explorer.diagrams import Diagram
    from explorer.views.graph import to_dot

    return Diagram("sweep", to_dot(sweep_scene(record, unet_trace, depth)))
