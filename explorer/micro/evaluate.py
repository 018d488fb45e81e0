"""Measure what a micro model draws: `python -m explorer.micro.evaluate [--model micro]`.

For every colour × shape × position (90 combinations, 9 of them held out of training) and several
seeds, the real diffusers pipeline generates "a <colour> <shape> <position>" at 20 steps, and the
judge (`explorer.micro.judge`: pixel statistics, no learned model) says which colour, shape and
position the image shows. Reported: the share right, per guidance scale, over all combinations, the
ones seen in training and the held-out ones. Guidance 1.0 (no classifier-free guidance) is reported
beside 7.5, to show what guidance buys.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from explorer.micro.data import HELD_OUT, Spec, all_combinations, prompt
from explorer.micro.judge import Verdict, judge

GUIDANCES = (7.5, 1.0)
STEPS = 20


@dataclass(frozen=True)
class Sample:
    spec: Spec
    seed: int
    guidance: float
    verdict: Verdict

    @property
    def held_out(self) -> bool:
        return self.spec.combination in HELD_OUT

    def right(self, what: str) -> bool:
        return getattr(self.verdict, what) == getattr(self.spec, what)


@dataclass(frozen=True)
class Evaluation:
    model: str
    steps: int
    seeds: int
    samples: tuple[Sample, ...]
    seconds: float

    def rows(self) -> list[dict]:
        """Accuracy (%) per guidance scale and group of combinations."""
        rows = []
        for guidance in dict.fromkeys(s.guidance for s in self.samples):
            at = [s for s in self.samples if s.guidance == guidance]
            for group, members in (
                ("all", at),
                ("seen in training", [s for s in at if not s.held_out]),
                ("held out", [s for s in at if s.held_out]),
            ):
                if not members:
                    continue
                row = {"guidance": guidance, "group": group, "images": len(members)}
                for what in ("colour", "position", "shape"):
                    row[what] = round(100 * sum(s.right(what) for s in members) / len(members), 1)
                all_three = sum(s.right("colour") and s.right("position") and s.right("shape") for s in members)
                row["all three"] = round(100 * all_three / len(members), 1)
                rows.append(row)
        return rows

    def summary(self) -> dict:
        return {"model": self.model, "steps": self.steps, "seeds": self.seeds, "seconds": self.seconds, "rows": self.rows()}


def load_pipeline(model: str, device: str = "cpu"):
    """The model's StableDiffusionPipeline, loaded the way `explore generate` loads it."""
    from explorer.generation import Settings, build_pipeline

    return build_pipeline(Settings(prompt="", model=model)).pipe.to(device)


def generate(pipe, prompts: list[str], seeds: list[int], guidance: float, steps: int = STEPS, batch: int = 96) -> list:
    """One PIL image per prompt, each from its own seed (so batching changes nothing)."""
    import torch

    images = []
    for start in range(0, len(prompts), batch):
        generators = [torch.Generator().manual_seed(s) for s in seeds[start : start + batch]]
        with torch.no_grad():
            images += pipe(
                prompt=prompts[start : start + batch],
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generators,
            ).images
    return images


def evaluate(
    model: str = "micro",
    *,
    seeds: int = 3,
    guidances: tuple[float, ...] = GUIDANCES,
    steps: int = STEPS,
    device: str = "cpu",
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Evaluation:
    """Generate and judge every combination at every seed and guidance scale."""
    started = time.perf_counter()
    pipe = load_pipeline(model, device)
    specs = [Spec(*c) for c in all_combinations()]
    samples: list[Sample] = []
    total, done = len(guidances) * seeds, 0
    for guidance in guidances:
        for seed in range(seeds):
            images = generate(pipe, [prompt(s) for s in specs], [seed] * len(specs), guidance, steps)
            samples += [Sample(spec, seed, guidance, judge(image)) for spec, image in zip(specs, images)]
            done += 1
            progress(done, total)
    return Evaluation(model, steps, seeds, tuple(samples), round(time.perf_counter() - started, 1))


HALVES = {"left": "left", "right": "right", "top": "top", "bottom": "bottom"}  # "in the middle" names no half


def attention_mass(model: str = "micro", seeds: int = 2, specs: list[Spec] | None = None, steps: int = STEPS) -> list[dict]:
    """For each prompt "a <colour> <shape> <position>" (every combination whose position names a
    half, by default) and seed: the share of the shape word's aggregated cross-attention map that
    lies in the half the prompt asks for. Generated watched, with --attention-maps."""
    import tempfile

    from explorer.runs import load_run
    from explorer.views.maps import halves
    from explorer.generation import Settings, generate as watched

    specs = specs or [Spec(*c) for c in all_combinations() if c[2] in HALVES]
    rows = []
    for spec in specs:
        for seed in range(seeds):
            out = Path(tempfile.mkdtemp(prefix="micro-maps-"))
            watched(Settings(prompt=prompt(spec), model=model, seed=seed, steps=steps, attention_maps=True,
                             watch_depth=0), out)
            mass = halves(load_run(out).attention(spec.shape))[HALVES[spec.position]]
            rows.append({"prompt": prompt(spec), "seed": seed, "position": spec.position, "mass": mass})
    return rows


def to_markdown(result: Evaluation) -> str:
    """The evaluation table, in Markdown."""
    lines = [
        f"Model `{result.model}`, {result.steps} PNDM steps, {result.seeds} seed{'s' if result.seeds > 1 else ''} "
        f"per combination, judged by `explorer.micro.judge` ({result.seconds:.0f} s).",
        "",
        "| guidance | combinations | images | colour | position | shape | all three |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows():
        lines.append(
            f"| {r['guidance']:g} | {r['group']} | {r['images']} | {r['colour']:.1f} % | {r['position']:.1f} % "
            f"| {r['shape']:.1f} % | {r['all three']:.1f} % |"
        )
    return "\n".join(lines) + "\n"


def grid(result_images: list, specs: list[Spec], scale: int = 2):
    """A contact sheet: one row per colour, one column per shape and position; held-out
    combinations framed in black."""
    from PIL import Image, ImageDraw

    from explorer.micro.data import COLOURS

    size = result_images[0].width * scale
    columns = len(specs) // len(COLOURS)
    pad = 4
    sheet = Image.new("RGB", (columns * (size + pad) + pad, len(COLOURS) * (size + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, spec) in enumerate(zip(result_images, specs)):
        x, y = pad + (k % columns) * (size + pad), pad + (k // columns) * (size + pad)
        sheet.paste(image.resize((size, size), Image.NEAREST), (x, y))
        if spec.combination in HELD_OUT:
            draw.rectangle((x - 2, y - 2, x + size + 1, y + size + 1), outline="black", width=2)
    return sheet


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    from rich.console import Console

    from explorer.errors import ExplorerError

    parser = argparse.ArgumentParser(
        prog="python -m explorer.micro.evaluate",
        description="Generate every colour x shape x position with a micro model and judge the images.",
    )
    parser.add_argument("--model", default="micro", help="micro (the shipped model) or a folder made by explorer.micro.train")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per combination [3]")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"denoising steps [{STEPS}]")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--grid", type=Path, help="also write seed 0's images at guidance 7.5 as a PNG contact sheet")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args(argv)
    err = Console(stderr=True, highlight=False)
    try:
        if args.seeds < 1 or args.steps < 1:
            raise ExplorerError("--seeds and --steps must be 1 or more.")
        result = _evaluate_with_progress(args, err)
    except ExplorerError as exc:
        err.print(f"[bold red]Error:[/] {exc}")
        raise SystemExit(2) from None
    text = to_markdown(result)
    print(json.dumps(result.summary(), indent=1) if args.json else text)
    if args.out:
        args.out.write_text(text)
    if args.grid:
        specs = [Spec(*c) for c in all_combinations()]
        images = generate(load_pipeline(args.model), [prompt(s) for s in specs], [0] * len(specs), 7.5, args.steps)
        grid(images, specs).save(args.grid)


def _evaluate_with_progress(args, err) -> Evaluation:
    from rich.progress import Progress

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Generating and judging", total=None)
        return evaluate(args.model, seeds=args.seeds, steps=args.steps,
                        progress=lambda done, total: bar.update(task, completed=done, total=total))


if __name__ == "__main__":
    main()
