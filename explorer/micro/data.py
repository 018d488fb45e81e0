"""The micro model's data: one coloured shape on a plain background, captioned in plain English.

Everything is generated, seeded, when it is needed; nothing is stored on disk. A sample is drawn
from its *spec* (colour, shape, position, size), and the caption is written from the same spec in
one of several wordings ("a red circle on the left", "red circle, left side", "on the left, a red
circle"...), so the model must learn the words, not one sentence.

Some colour × shape × position combinations are *held out*: training never sees them, in any
wording or size. Each of their words is seen in other combinations, so a model that draws them
has learned to compose words it learned separately (the evaluation reports them apart).

Images are drawn analytically with PyTorch, 4×4 supersampled for smooth edges: a batch of 64
images takes milliseconds, and the same seed gives the same pixels on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

IMAGE_SIZE = 64  # pixels per side

# Each colour is drawn around its RGB (± a little per channel) and judged by its hue (degrees).
COLOURS = {
    "red": (215, 40, 40),
    "orange": (245, 135, 25),
    "yellow": (240, 205, 30),
    "green": (45, 165, 65),
    "blue": (40, 80, 215),
    "purple": (135, 55, 180),
}
SHAPES = ("circle", "square", "triangle")
# Where the shape's centre goes, as fractions of the image side (x, y), y downwards.
POSITIONS = {
    "left": (0.25, 0.5),
    "right": (0.75, 0.5),
    "top": (0.5, 0.25),
    "bottom": (0.5, 0.75),
    "middle": (0.5, 0.5),
}
# Half the shape's extent (the circle's radius, half the square's side), as a fraction of the side.
SIZES = {"small": (0.11, 0.14), "large": (0.19, 0.22)}
ANY_SIZE = (0.11, 0.22)  # when the caption names no size
JITTER = 0.04  # the centre moves by up to this fraction of the side

# Never seen in training: every colour, shape and position is still seen elsewhere.
HELD_OUT = (
    ("red", "triangle", "right"),
    ("orange", "square", "top"),
    ("yellow", "triangle", "middle"),
    ("green", "circle", "top"),
    ("blue", "square", "bottom"),
    ("purple", "circle", "left"),
    ("red", "square", "middle"),
    ("green", "triangle", "bottom"),
    ("blue", "circle", "right"),
)

# How a position is said, in a full phrase and after a comma.
POSITION_PHRASES = {
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "middle": ("in the middle", "in the center"),
}
POSITION_SHORT = {"left": "left side", "right": "right side", "top": "top", "bottom": "bottom", "middle": "middle"}
TEMPLATES = (
    "{a} {size}{colour} {shape} {place}",  # a red circle on the left
    "{size}{colour} {shape} {place}",  # red circle on the left
    "{size}{colour} {shape}, {short}",  # red circle, left side
    "{place}, {a} {size}{colour} {shape}",  # on the left, a red circle
    "{a} {size}{shape} in {colour}, {place}",  # a circle in red, on the left
)


@dataclass(frozen=True)
class Spec:
    """What one image shows."""

    colour: str
    shape: str
    position: str
    size: str = ""  # "small", "large" or "" (any size, not said)

    @property
    def combination(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.position)


def caption(spec: Spec, template: int = 0, phrase: int = 0) -> str:
    """The caption of `spec` in wording number `template` (and position phrase number `phrase`)."""
    size = f"{spec.size} " if spec.size else ""
    if "{size}{colour}" in TEMPLATES[template]:
        after_article = size or spec.colour
    else:
        after_article = size or spec.shape
    article = "an" if after_article[0] in "aeiou" else "a"  # an orange circle
    return TEMPLATES[template].format(
        a=article,
        size=size,
        colour=spec.colour,
        shape=spec.shape,
        place=POSITION_PHRASES[spec.position][phrase],
        short=POSITION_SHORT[spec.position],
    )


def prompt(spec: Spec) -> str:
    """The plain wording: 'a red circle on the left' (what the evaluation asks for)."""
    return caption(spec, 0, 0)


def vocabulary() -> list[str]:
    """Every word the captions use, sorted: what the micro model has learned."""
    words: set[str] = set()
    for colour in COLOURS:
        for shape in SHAPES:
            for position in POSITIONS:
                for size in ("", *SIZES):
                    for t in range(len(TEMPLATES)):
                        for p in range(2):
                            text = caption(Spec(colour, shape, position, size), t, p)
                            words.update(text.replace(",", " ").split())
    return sorted(words)


def all_combinations() -> Iterator[tuple[str, str, str]]:
    for colour in COLOURS:
        for shape in SHAPES:
            for position in POSITIONS:
                yield (colour, shape, position)


def training_combinations() -> list[tuple[str, str, str]]:
    return [c for c in all_combinations() if c not in HELD_OUT]


def random_specs(count: int, generator) -> tuple[list[Spec], list[str]]:
    """`count` training specs and their captions, drawn with a torch Generator; held-out
    combinations never come up."""
    import torch

    combos = training_combinations()
    picks = torch.randint(len(combos), (count,), generator=generator).tolist()
    sizes = torch.randint(3, (count,), generator=generator).tolist()  # small, large, unsaid
    templates = torch.randint(len(TEMPLATES), (count,), generator=generator).tolist()
    phrases = torch.randint(2, (count,), generator=generator).tolist()
    specs, captions = [], []
    for k in range(count):
        colour, shape, position = combos[picks[k]]
        spec = Spec(colour, shape, position, ("small", "large", "")[sizes[k]])
        specs.append(spec)
        captions.append(caption(spec, templates[k], phrases[k]))
    return specs, captions


def draw(specs: list[Spec], generator, size: int = IMAGE_SIZE, supersample: int = 4):
    """The images of `specs`: a float tensor (N, 3, size, size) in [-1, 1], as the VAE sees them.

    Colour, exact size, exact centre and the background grey are drawn from `generator`.
    """
    return draw_with_coverage(specs, generator, size, supersample)[0]


def draw_with_coverage(specs: list[Spec], generator, size: int = IMAGE_SIZE, supersample: int = 4):
    """The images of `specs` and where their shape is: (N, 3, size, size) in [-1, 1], and each
    pixel's share covered by the shape, (N, 1, size, size) in [0, 1]. The same draws as `draw`."""
    import torch
    import torch.nn.functional as F

    n = len(specs)
    fine = size * supersample
    axis = (torch.arange(fine, dtype=torch.float32) + 0.5) / fine  # pixel centres in [0, 1]
    y, x = axis.view(1, fine, 1), axis.view(1, 1, fine)  # (1, S, 1), (1, 1, S)

    u = torch.rand(n, 7, generator=generator)  # per image: size, dx, dy, background, 3 colour jitters
    low = torch.tensor([SIZES[s.size][0] if s.size else ANY_SIZE[0] for s in specs])
    high = torch.tensor([SIZES[s.size][1] if s.size else ANY_SIZE[1] for s in specs])
    r = (low + (high - low) * u[:, 0]).view(n, 1, 1)  # (N, 1, 1) half-extent
    cx = torch.tensor([POSITIONS[s.position][0] for s in specs]) + JITTER * (2 * u[:, 1] - 1)
    cy = torch.tensor([POSITIONS[s.position][1] for s in specs]) + JITTER * (2 * u[:, 2] - 1)
    dx, dy = x - cx.view(n, 1, 1), y - cy.view(n, 1, 1)  # (N, S, S) offsets from the centre

    circle = dx**2 + dy**2 <= r**2
    square = (dx.abs() <= r) & (dy.abs() <= r)
    # An upright triangle: apex at the top, base at the bottom, as wide as it is tall.
    triangle = (dy <= r) & (dx.abs() <= (dy + r) / 2)
    kind = torch.tensor([SHAPES.index(s.shape) for s in specs]).view(n, 1, 1)
    inside = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle)).float()
    alpha = F.avg_pool2d(inside.unsqueeze(1), supersample)  # (N, 1, size, size) coverage: smooth edges

    base = torch.tensor([COLOURS[s.colour] for s in specs], dtype=torch.float32)  # (N, 3)
    colour = (base + 30 * (u[:, 4:7] - 0.5)).clamp(0, 255) / 127.5 - 1
    grey = (225 + 25 * u[:, 3]) / 127.5 - 1  # a plain light background, a little lighter or darker
    background = grey.view(n, 1, 1, 1).expand(n, 3, 1, 1)
    return background * (1 - alpha) + colour.view(n, 3, 1, 1) * alpha, alpha  # (N, 3, size, size), (N, 1, size, size)


def to_pil(images):
    """(N, 3, H, W) in [-1, 1] -> a list of PIL images."""
    from PIL import Image

    pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p, "RGB") for p in pixels]
