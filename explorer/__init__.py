"""sd-explorer: see what happens inside Stable Diffusion 1.5, with the real model classes.

    >>> import explorer
    >>> unet = explorer.trace("unet")                    # SD1.5 on the meta device: exact shapes, no memory
    >>> unet.find("down_blocks.0").outputs[0]
    (2, 320, 32, 32)
    >>> unet.upto(2)                                     # in Jupyter: the tree, two levels deep
    >>> print(explorer.tree(unet.subtree("mid_block").upto(1)))
    >>> explorer.diagram(unet, "down_blocks.1.resnets.0")  # in Jupyter: the figure, drawn by Graphviz

Values, not only shapes, on the micro model trained here (or your own SD1.5 weights):

    >>> run = explorer.generate("a red circle on the left", model="micro", attention_maps=True, out="runs/circle")
    >>> run = explorer.load_run("runs/circle")
    >>> run.attention("circle")                          # where the word goes: (H, W), sums to 1
    >>> with explorer.watch(pipe, "runs/mine", attention_maps=True) as run:   # your own pipeline
    ...     pipe("a lighthouse at dusk")

Experiments: change one part of the running model and see what it does (explorer.edits):

    >>> from explorer import edits
    >>> exp = explorer.experiment("a red circle on the left", edits=[edits.swap("red", "blue", layers="8x8")])
    >>> print(exp.summary())                             # what changed, and where it entered the U
    >>> explorer.sweep("a red circle on the left", over="cross-attention").table()

What changed between two models, module by module, with a summary in words:

    >>> print(explorer.diff("sd15", "sdxl").summary())

Importing this package is cheap: torch and diffusers load on the first trace.
"""

from explorer import edits
from explorer.compare import diff
from explorer.diagrams import Diagram, diagram
from explorer.errors import ExplorerError
from explorer.experiments import Experiment, Sweep, experiment, load_experiment, load_sweep, sweep
from explorer.explore import narrow, trace
from explorer.loading import load
from explorer.record import SCHEMA, Node, Trace
from explorer.runs import Run, load_run
from explorer.specs import PRESETS, SD15, TINY

__all__ = [
    "trace",
    "narrow",
    "load",
    "tree",
    "diagram",
    "Diagram",
    "tokenize",
    "Trace",
    "Node",
    "SCHEMA",
    "PRESETS",
    "SD15",
    "TINY",
    "ExplorerError",
    "generate",
    "watch",
    "load_run",
    "Run",
    "diff",
    "edits",
    "experiment",
    "sweep",
    "Experiment",
    "Sweep",
    "load_experiment",
    "load_sweep",
]


def tree(trace: Trace, width: int = 100) -> str:
    """The terminal tree of `trace` as plain text (what `explore unet` prints)."""
    from explorer.views.tree import to_text

    return to_text(trace, width=width)


def tokenize(prompt: str, max_length: int = 77) -> dict:
    """How SD1.5's CLIP tokenizer splits `prompt`: ids, tokens, length and what truncation drops."""
    from explorer.tokenizer import tokenize as _tokenize

    return _tokenize([prompt], max_length)[1][0]


def generate(prompt: str, *, out=None, compare: bool = False, **settings) -> Run:
    """Generate an image with the real diffusers pipeline, watching every step (see `explore generate`).

    `settings`: negative_prompt, steps, guidance, height, width, seed, scheduler, model, config,
    watch_depth, attention_maps, decode_every, adds. Returns the Run, read back from its folder.
    """
    from pathlib import Path

    from explorer.generation import Settings, default_out
    from explorer.generation import generate as run

    result = run(Settings(prompt=prompt, **settings), Path(out) if out else default_out(prompt), compare=compare)
    return load_run(result.out)


def watch(pipe, out, **options):
    """Watch every step of your own diffusers pipeline while you call it; see explorer.generation.watch.

        with explorer.watch(pipe, "runs/mine", attention_maps=True) as run:
            image = pipe("a lighthouse at dusk", num_inference_steps=20).images[0]
        run.attention("lighthouse")
    """
    from explorer.generation import watch as watching

    return watching(pipe, out, **options)
