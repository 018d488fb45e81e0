"""`explore maps`: where one word's cross-attention goes, as a figure and as numbers.

Pure functions of a run's maps (numpy arrays) and its image: a heat colour scale, a map laid over
an image, and the figure of the word's overall map beside one map per feature-map resolution.
"""

from __future__ import annotations

from typing import Any

# A perceptual dark-to-bright scale (black, purple, red, orange, pale yellow), as (position, RGB).
HEAT = ((0.0, (0, 0, 4)), (0.3, (87, 16, 110)), (0.55, (188, 55, 84)), (0.8, (249, 142, 9)), (1.0, (252, 255, 164)))
PANEL = 192  # pixels per side of each panel


def heat(values) -> Any:
    """(H, W) floats -> (H, W, 3) uint8 colours, scaled to the map's own maximum."""
    import numpy as np

    v = np.asarray(values, dtype=np.float32)
    v = v / v.max() if v.max() > 0 else v
    positions = [p for p, _ in HEAT]
    channels = [np.interp(v, positions, [c[k] for _, c in HEAT]) for k in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def overlay(image, values, alpha: float = 0.6):
    """The map over the image (both resized to a PANEL-pixel square), the image in grey beneath."""
    from PIL import Image

    base = image.convert("L").convert("RGB").resize((PANEL, PANEL), Image.BILINEAR)
    hot = Image.fromarray(heat(values), "RGB").resize((PANEL, PANEL), Image.BILINEAR)
    return Image.blend(base, hot, alpha)


def figure(image, overall, by_resolution: dict[int, Any], word: str, where: str):
    """The word's map over the image, then one panel per resolution, each captioned."""
    from PIL import Image, ImageDraw

    panels = [(f"{word!r}: all layers", overall)] + [(f"{r}x{r} layers", m) for r, m in sorted(by_resolution.items(), reverse=True)]
    pad, text = 8, 16
    sheet = Image.new("RGB", (pad + len(panels) * (PANEL + pad), text + PANEL + text + 2 * pad), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad // 2), where, fill=(40, 40, 40))
    for k, (caption, values) in enumerate(panels):
        x = pad + k * (PANEL + pad)
        sheet.paste(overlay(image, values), (x, text + pad))
        draw.text((x, text + pad + PANEL + 2), caption, fill=(60, 60, 60))
    return sheet


def halves(values) -> dict[str, float]:
    """The map's mass in each half of the image, and in the middle quarter (sums to 1 per pair)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v / v.sum() if v.sum() > 0 else v
    h, w = v.shape
    return {
        "left": round(float(v[:, : w // 2].sum()), 4),
        "right": round(float(v[:, w - w // 2 :].sum()), 4),
        "top": round(float(v[: h // 2].sum()), 4),
        "bottom": round(float(v[h - h // 2 :].sum()), 4),
        "middle": round(float(v[h // 4 : h - h // 4, w // 4 : w - w // 4].sum()), 4),
    }
