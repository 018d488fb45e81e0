"""Regenerate the micro model's pages from the shipped weights: the evaluation table, the grid of
every combination, the loss curve, and the README's figure.

    .venv/bin/python scripts/micro_docs.py          # after `python -m explorer.micro.train --out explorer/micro/model`

Takes about 15 minutes. Writes docs/micro-evaluation.md, docs/micro-grid.png, docs/micro-loss.png, docs/micro-circle.png, and
fills the numbers of docs/micro.md between its markers.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def evaluation() -> dict:
    from explorer.micro.evaluate import evaluate, generate, grid, load_pipeline, to_markdown
    from explorer.micro.data import Spec, all_combinations, prompt

    result = evaluate("micro", seeds=3)
    (DOCS / "micro-evaluation.md").write_text(to_markdown(result))
    specs = [Spec(*c) for c in all_combinations()]
    images = generate(load_pipeline("micro"), [prompt(s) for s in specs], [0] * len(specs), 7.5)
    grid(images, specs).save(DOCS / "micro-grid.png")
    return result.summary()


def maps_table(seeds: int = 2) -> str:
    """How much of the shape word's cross-attention map lies in the half the prompt names, per position."""
    from explorer.micro.evaluate import attention_mass

    rows = attention_mass("micro", seeds=seeds)
    lines = ["| position | prompts × seeds | mass in the named half (mean) | lowest |", "|---|---:|---:|---:|"]
    for position in dict.fromkeys(r["position"] for r in rows):
        masses = [r["mass"] for r in rows if r["position"] == position]
        lines.append(f"| {position} | {len(masses)} | {100 * sum(masses) / len(masses):.1f} % | {100 * min(masses):.1f} % |")
    masses = [r["mass"] for r in rows]
    lines.append(f"| **all** | {len(masses)} | **{100 * sum(masses) / len(masses):.1f} %** | {100 * min(masses):.1f} % |")
    return "\n".join(lines)


def circle_figure() -> None:
    """The README's figure: the image, the latent after every step, and the word's maps."""
    from PIL import Image

    import explorer
    from explorer.views.maps import figure

    run = explorer.generate("a red circle on the left", model="micro", seed=3, attention_maps=True,
                            out=tempfile.mkdtemp())
    sizes = sorted({layer["height"] for layer in run.map_layers}, reverse=True)
    maps = figure(run.image(), run.attention("circle"), {s: run.attention("circle", resolution=s) for s in sizes},
                  "circle", repr(run.prompt) + " · micro · seed 3")
    latents = Image.open(run.folder / "latents.png").convert("RGB")
    image = run.image().resize((192, 192), Image.NEAREST)
    width = max(maps.width, latents.width + image.width + 24)
    sheet = Image.new("RGB", (width, maps.height + max(image.height, latents.height) + 16), "white")
    sheet.paste(image, (8, 8))
    sheet.paste(latents, (image.width + 24, 8))
    sheet.paste(maps, (0, max(image.height, latents.height) + 16))
    sheet.save(DOCS / "micro-circle.png")


def generation_seconds(repeats: int = 5) -> float:
    """One micro generation, whole pipeline (text encoding, 20 steps with guidance, decoding): the median."""
    import statistics

    import torch

    from explorer.micro.evaluate import load_pipeline

    pipe = load_pipeline("micro")
    pipe("warm-up", num_inference_steps=2)
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        pipe("a red circle on the left", num_inference_steps=20, generator=torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fill(summary: dict, seconds: float, maps: str) -> None:
    """The numbers of docs/micro.md, read off the shipped model."""
    import explorer
    from explorer.loading import SHIPPED

    folder = SHIPPED["micro"]
    info = json.loads((folder / "micro.json").read_text())
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in ("loss.png", "evaluation.md"))
    values = {
        "MICRO_UNET": f"{explorer.trace('unet', 'micro').total_params:,}",
        "MICRO_VAE": f"{explorer.trace('vae', 'micro').total_params:,}",
        "MICRO_CLIP": f"{explorer.trace('clip', 'micro').total_params:,}",
        "MICRO_SCALE": f"{info['scaling_factor']}",
        "MICRO_MB": f"{size / 1e6:.1f}",
        "MICRO_MINUTES": f"{sum(info['seconds'].values()) / 60:.0f}",
        "MICRO_VAE_MIN": f"{info['seconds']['vae'] / 60:.0f}",
        "MICRO_UNET_MIN": f"{info['seconds']['unet'] / 60:.0f}",
        "MICRO_GROUND_MIN": f"{info['seconds'].get('ground', 0) / 60:.0f}",
        "MICRO_EVALUATION": (DOCS / "micro-evaluation.md").read_text().strip(),
        "MICRO_GEN_S": f"{seconds:.2f}",
        "MICRO_MAPS": maps,
    }
    page = DOCS / "micro.md"
    text = page.read_text()
    for key, value in values.items():
        text = re.sub(rf"<!-- {key} -->.*?<!-- /{key} -->|{key}\b", f"<!-- {key} -->{value}<!-- /{key} -->", text, flags=re.S)
    page.write_text(text)


def main() -> None:
    from explorer.loading import SHIPPED

    shutil.copy(SHIPPED["micro"] / "loss.png", DOCS / "micro-loss.png")
    summary = evaluation()
    circle_figure()
    seconds = generation_seconds()
    maps = maps_table()
    fill(summary, seconds, maps)
    print(json.dumps(summary["rows"], indent=1), f"\ngeneration: {seconds:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
