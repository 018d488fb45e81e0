"""The experiments of docs/experiments.md, measured on micro by its judge.

Every study edits the same generations: the 90 plain prompts of the evaluation ("a red circle on the
left": 6 colours × 3 shapes × 5 positions), each at two seeds (0 and 1, the two images of one
pipeline call), 20 PNDM steps, guidance 7.5. A study is one kind of edit; for each edited image the
judge (`explorer.micro.judge`) says its colour, shape and position, compared with what the prompt
asked and what the unedited image showed, and the image's mean absolute change is measured.

    .venv/bin/python -m explorer.micro.studies --out docs/experiments-results.json   # about 20 minutes on 2 cores

`scripts/experiment_docs.py` turns the results into the tables of docs/experiments.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from explorer.micro.data import COLOURS, POSITIONS, SHAPES, Spec, all_combinations, prompt

SEEDS = (0, 1)
STEPS = 20
GUIDANCE = 7.5
RESOLUTIONS = ("16x16", "8x8", "4x4", "2x2")  # micro's cross-attention layers work at these feature maps


def other(spec: Spec) -> Spec:
    """The prompt P+ mixes in: another colour, another shape and another position than `spec`."""
    colours, positions = list(COLOURS), list(POSITIONS)
    return Spec(colours[(colours.index(spec.colour) + 1) % len(colours)], SHAPES[(SHAPES.index(spec.shape) + 1) % len(SHAPES)],
                positions[(positions.index(spec.position) + 2) % len(positions)])


def swapped(colour: str) -> str:
    """The colour a swap puts in: blue for red (the test's claim), the next colour for the others."""
    colours = list(COLOURS)
    return "blue" if colour == "red" else colours[(colours.index(colour) + 1) % len(colours)]


def studies(cross_attention: list[str]) -> dict[str, tuple[str, Callable[[Spec], list]]]:
    """Study name -> (what it asks, the edits it makes for a prompt); `cross_attention`: the paths of
    the UNet's cross-attention layers."""
    from explorer import edits

    found = {
        "swap colour": ("swap the colour word for another (red for blue, each other for the next), at every layer and "
                        "step (prompt-to-prompt's replace)", lambda s: [edits.swap(s.colour, swapped(s.colour))]),
        "swap colour, steps 0–4": ("the same swap in the first 5 of the 21 UNet calls only",
                                   lambda s: [edits.swap(s.colour, swapped(s.colour), steps="0-4")]),
        "swap colour, steps 5–20": ("the same swap in the 16 calls after them",
                                    lambda s: [edits.swap(s.colour, swapped(s.colour), steps="5-")]),
    }
    for size in RESOLUTIONS:
        found[f"P+ {size}"] = (f"the {size} cross-attention layers read another prompt (other colour, shape and position)",
                               lambda s, size=size: [edits.prompt_at(prompt(other(s)), size)])
    found.update({
        "mid block off": ("the mid block passes its input through", lambda s: [edits.off("mid_block")]),
        "cross-attention off": ("every cross-attention layer's output is zero: no word reaches the image",
                                lambda s: [edits.off(p) for p in cross_attention]),
        "FreeU": ("FreeU with the values published for SD1.5 (b1 1.5, b2 1.6, s1 0.9, s2 0.2)", lambda s: [edits.freeu()]),
        "finest skips off": ("the skip tensors into up_blocks.3 (16x16, the finest) are zero", lambda s: [edits.skips("up.3", 0)]),
        "coarse skips off": ("the skip tensors into up_blocks.1 (4x4) are zero", lambda s: [edits.skips("up.1", 0)]),
        "t + 300": ("the UNet is told t + 300: more noise than there is", lambda s: [edits.timestep(300)]),
        "t − 300": ("the UNet is told t − 300: less noise than there is", lambda s: [edits.timestep(-300)]),
        "no guidance, steps 0–4": ("no classifier-free guidance (scale 1) in the first 5 of 21 steps", lambda s: [edits.guidance(1, "0-4")]),
        "no guidance, steps 5–20": ("no classifier-free guidance (scale 1) after the first 5 steps", lambda s: [edits.guidance(1, "5-")]),
    })
    return found


def measure(seeds: tuple[int, ...] = SEEDS, only: list[str] | None = None, limit: int | None = None,
            progress: Callable[[int, int, str], None] = lambda done, total, what: None) -> dict:
    """Every study on every prompt: per edited image, what the judge saw and how much it changed."""
    import numpy as np
    import torch

    from explorer import edits
    from explorer.generation import Settings, build_pipeline
    from explorer.micro.judge import judge

    pipe = build_pipeline(Settings(prompt="", model="micro")).pipe
    layers = [p for p, m in pipe.unet.named_modules() if p.endswith(".attn2")]
    chosen = {name: study for name, study in studies(layers).items() if only is None or name in only}
    specs = [Spec(*c) for c in all_combinations()][:limit]
    started, rows = time.perf_counter(), []
    total, done = len(specs) * (1 + len(chosen)), 0

    def images(text: str):
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        with torch.no_grad():
            return pipe(text, num_inference_steps=STEPS, guidance_scale=GUIDANCE, generator=generators,
                        num_images_per_prompt=len(seeds)).images

    for spec in specs:
        text = prompt(spec)
        baselines = images(text)
        done += 1
        progress(done, total, text)
        verdicts = [judge(b) for b in baselines]
        for seed, b, v in zip(seeds, baselines, verdicts):
            rows.append(_row("baseline", spec, seed, v, 0.0))
        for name, (_, make) in chosen.items():
            with edits.applied(pipe, make(spec), prompt=text, steps=STEPS):
                edited = images(text)
            for seed, b, e in zip(seeds, baselines, edited):
                change = float(np.abs(np.asarray(b, np.float32) - np.asarray(e, np.float32)).mean() / 255)
                rows.append(_row(name, spec, seed, judge(e), change, judge(b)))
            done += 1
            progress(done, total, f"{text}: {name}")
    return {"schema": "sd-explorer/micro-studies@1", "seeds": list(seeds), "steps": STEPS, "guidance": GUIDANCE,
            "studies": {name: what for name, (what, _) in chosen.items()}, "rows": rows,
            "seconds": round(time.perf_counter() - started, 1)}


def _row(study: str, spec: Spec, seed: int, verdict, change: float, before=None) -> dict:
    row = {"study": study, "colour": spec.colour, "shape": spec.shape, "position": spec.position, "seed": seed,
           "seen": [verdict.colour, verdict.shape, verdict.position], "change": round(change, 5)}
    if before is not None:
        row["before"] = [before.colour, before.shape, before.position]
    return row


def summary(results: dict) -> dict[str, dict]:
    """Per study: how often the judge saw what the prompt asked (colour, shape, position), what the
    unedited image showed, what the mixed-in prompt (P+) or the swapped word asked, and the mean change."""
    found = {}
    for name in ["baseline", *results["studies"]]:
        rows = [r for r in results["rows"] if r["study"] == name]
        if not rows:
            continue
        n = len(rows)
        asked = lambda r: [r["colour"], r["shape"], r["position"]]  # noqa: E731
        share = lambda test: round(sum(map(test, rows)) / n, 4)  # noqa: E731
        entry = {"images": n, "change": round(sum(r["change"] for r in rows) / n, 4)}
        for k, what in enumerate(("colour", "shape", "position")):
            entry[f"{what} as asked"] = share(lambda r, k=k: r["seen"][k] == asked(r)[k])
            if name != "baseline":
                entry[f"{what} kept"] = share(lambda r, k=k: r["seen"][k] == r["before"][k])
            if name.startswith("P+"):
                entry[f"{what} from the other prompt"] = share(
                    lambda r, k=k: r["seen"][k] == list(other(Spec(r["colour"], r["shape"], r["position"])).combination)[k])
        entry["nothing drawn"] = share(lambda r: not r["seen"][0])
        if name.startswith("swap colour"):
            entry["colour swapped"] = share(lambda r: r["seen"][0] == swapped(r["colour"]))
            red = [r for r in rows if r["colour"] == "red"]
            entry["red → blue"] = round(sum(r["seen"][0] == "blue" and r["seen"][2] == r["before"][2] for r in red) / max(1, len(red)), 4)
        found[name] = entry
    return found


def to_json(results: dict) -> str:
    """The results, one row a line: small enough to keep beside the docs, readable in a diff."""
    head = {k: v for k, v in results.items() if k != "rows"}
    rows = ",\n".join(" " + json.dumps(r, ensure_ascii=False) for r in results["rows"])
    return json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "rows": [\n' + rows + "\n ]\n}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m explorer.micro.studies", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the results (JSON)")
    parser.add_argument("--only", nargs="*", help="some studies only (their names as in docs/experiments.md)")
    parser.add_argument("--limit", type=int, help="the first N prompts only (a quick look)")
    parser.add_argument("--into", action="store_true", help="replace these studies' rows in --out, keep the others")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def progress(done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - started
        print(f"\r{done}/{total} {elapsed:.0f} s · {what[:70]:<70}", end="", file=sys.stderr, flush=True)

    results = measure(only=args.only, limit=args.limit, progress=progress)
    if args.into:  # the other studies as they were measured before
        before = json.loads(args.out.read_text())
        redone = set(results["studies"])
        results["rows"] = [r for r in before["rows"] if r["study"] not in redone] + [r for r in results["rows"] if r["study"] != "baseline"]
        results["studies"] = {**before["studies"], **results["studies"]}
        results["seconds"] = round(before["seconds"] + results["seconds"], 1)  # what a whole run of them takes, about
    results["summary"] = summary(results)
    args.out.write_text(to_json(results))
    print(f"\nWrote {args.out} ({results['seconds']:.0f} s).", file=sys.stderr)


if __name__ == "__main__":
    main()


EXAMPLE = "a red circle on the left"


def example_figures(folder: Path) -> dict[str, Path]:
    """The two figures docs/experiments.md shows, made again into `folder`: one experiment's comparison
    (swap red for blue in the 8x8 layers during the first six calls) and one sweep's U (each
    cross-attention layer off in turn), both on micro at seed 0."""
    import tempfile

    from explorer import edits
    from explorer.diagrams import write
    from explorer.experiments import experiment, sweep
    from explorer.previews import png

    runs = Path(tempfile.mkdtemp())
    shown = experiment(EXAMPLE, edits=[edits.swap("red", "blue", "8x8", steps="0-5")], seed=0, out=runs / "swap")
    (folder / "experiments-swap.png").write_bytes(png(shown.figure()))
    swept = sweep(EXAMPLE, over="cross-attention", seed=0, out=runs / "sweep")
    write(swept.figure(), folder / "experiments-sweep.svg")
    return {"swap": folder / "experiments-swap.png", "sweep": folder / "experiments-sweep.svg"}
