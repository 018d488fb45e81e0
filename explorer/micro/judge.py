"""The judge: what colour, shape and position an image shows, from simple pixel statistics.

No learned model is involved, so a reader can check every rule by hand:

- **background**: the median colour of the image's border (2 pixels wide);
- **foreground**: the pixels differing from it by more than `THRESHOLD` (0–255) in some channel.
  Fewer than `MIN_PIXELS` of them: nothing was drawn, and every answer is wrong;
- **colour**: the hue of the foreground's median colour, nearest among the six named colours' hues;
- **position**: the foreground's centroid, nearest among the five anchors (left, right, top,
  bottom, middle);
- **shape**: an upright triangle holds a quarter of its area in the upper half of its bounding box,
  a circle or a square half: upper share below 0.375 is a triangle; otherwise the share of the
  bounding box the shape fills tells the square (1.0) from the circle (π/4 ≈ 0.785): 0.89 or more
  is a square.

On the generated training images (`explorer.micro.data.draw`) this judge is right every time;
a test holds it to that.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

from explorer.micro.data import COLOURS, POSITIONS

THRESHOLD = 48  # a foreground pixel differs from the background by more than this in some channel
MIN_PIXELS = 12  # fewer foreground pixels than this: nothing was drawn
TRIANGLE_UPPER_SHARE = 0.375
SQUARE_FILL = 0.89

HUES = {name: colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class Verdict:
    colour: str  # "" when nothing was drawn
    shape: str
    position: str
    pixels: int  # foreground pixels
    fill: float  # share of the bounding box the foreground fills
    upper_share: float  # share of the foreground in the upper half of its bounding box
    centroid: tuple[float, float]  # (x, y) as fractions of the side


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def judge(image) -> Verdict:
    """The verdict on one image: a PIL image or an (H, W, 3) uint8 array."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16)[..., :3]  # (H, W, 3)
    h, w, _ = pixels.shape
    border = np.concatenate(
        [pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)]
    )
    background = np.median(border, axis=0)
    mask = np.abs(pixels - background).max(axis=2) > THRESHOLD  # (H, W)
    count = int(mask.sum())
    if count < MIN_PIXELS:
        return Verdict("", "", "", count, 0.0, 0.0, (0.5, 0.5))

    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - cx) ** 2 + (POSITIONS[p][1] - cy) ** 2)

    r, g, b = np.median(pixels[mask], axis=0) / 255
    hue = colorsys.rgb_to_hsv(r, g, b)[0]
    colour = min(HUES, key=lambda name: _hue_distance(HUES[name], hue))

    top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    fill = count / ((bottom - top) * (right - left))
    middle = (top + bottom) / 2
    upper = float((ys + 0.5 < middle).sum() + 0.5 * (ys + 0.5 == middle).sum()) / count
    if upper < TRIANGLE_UPPER_SHARE:
        shape = "triangle"
    else:
        shape = "square" if fill >= SQUARE_FILL else "circle"
    return Verdict(colour, shape, position, count, round(float(fill), 3), round(upper, 3), (round(float(cx), 3), round(float(cy), 3)))
