"""`explore`: the command line. Thin: parse, call the public API, render. Nothing else.

Heavy libraries (torch, diffusers, transformers) are imported only inside the commands that need
them, so `explore --help` answers at once.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from explorer.analysis import SORTS
from explorer.components import COMPONENTS
from explorer.edits import SYNTAX as EDIT_SYNTAX
from explorer.errors import ExplorerError, OptionError
from explorer.experiments import OVER
from explorer.generation import SCHEDULERS
from explorer.loading import WEIGHTS, check_seed
from explorer.views.format import plural

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _choices(name: str, values) -> type[Enum]:
    """A closed set of values as an Enum, so that --help lists them; the values live where they are used."""
    return Enum(name, {v: v for v in values}, type=str)


Weights = _choices("Weights", WEIGHTS)
Component = _choices("Component", COMPONENTS)
Sort = _choices("Sort", SORTS)
Scheduler = _choices("Scheduler", SCHEDULERS)
Lang = _choices("Lang", ("en", "zh"))


class _Commands(TyperGroup):
    """Answers an unknown component or command with one sentence naming the valid ones, and lists
    each command with the first paragraph of its help as one line (rich keeps a docstring's breaks)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for command in self.commands.values():
            if command.help:  # each paragraph one line, wrapped to the terminal by rich (it keeps a docstring's breaks)
                command.help = "\n\n".join(" ".join(paragraph.split()) for paragraph in command.help.split("\n\n"))
            if command.help and not command.short_help:
                command.short_help = command.help.split("\n\n")[0]

    def resolve_command(self, ctx, args):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.commands:
            others = [c for c in self.commands if c not in COMPONENTS]
            err.print(
                f"[bold red]Error:[/] unknown component or command {name!r}: the components are "
                f"{', '.join(COMPONENTS)}" + (f"; the other commands are {', '.join(others)}" if others else "")
                + " (see explore --help).",
                highlight=False,
            )
            raise typer.Exit(2)
        return super().resolve_command(ctx, args)


def _quiet_libraries() -> None:
    """Library chatter (a missing optional torchvision, deprecations) is not for our users' eyes."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


app = typer.Typer(
    name="explore",
    cls=_Commands,
    help=(
        "See what happens inside Stable Diffusion 1.5: every block of the real diffusers / transformers "
        "models, with the shapes that flow through it, read off a real forward pass.\n\n"
        "Try: explore unet --depth 3 · explore vae --depth 2 · explore clip --prompt 'a red fox' · explore diff sd15 sdxl"
    ),
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# -- options shared by the component commands ---------------------------------------------------------

Depth = Annotated[
    Optional[int],
    typer.Option(
        "--depth",
        "-d",
        help="How many levels below the component (or --block) to show: 1 = its blocks, 2 = their layers, ... "
        "[default: 2 for the tree, everything for --json]",
        show_default=False,
    ),
]
Block = Annotated[
    Optional[str],
    typer.Option("--block", "-b", help="Show only this module and what runs inside it, e.g. down_blocks.1."),
]
Model = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="A preset (sd15, sd21, sdxl, tiny, micro), a diffusers folder, a .safetensors checkpoint (diffusers or original SD "
        "layout) or a hub id.",
    ),
]
Config = Annotated[
    Optional[str],
    typer.Option(help="The architecture of a single-file checkpoint, as a preset name. [default: sd15]"),
]
WeightsOpt = Annotated[
    Weights,
    typer.Option(
        help="meta: exact shapes, no memory, nothing computed. random: real tensors with random values. "
        "pretrained: the weights of --model."
    ),
]
Height = Annotated[Optional[int], typer.Option(help="Image height in pixels, a multiple of 8. [default: the model's]")]
Width = Annotated[Optional[int], typer.Option(help="Image width in pixels, a multiple of 8. [default: the model's]")]
Batch = Annotated[
    Optional[int],
    typer.Option(help="Batch size. [default: 2 for unet and clip (classifier-free guidance), 1 for vae]"),
]
Json = Annotated[bool, typer.Option("--json", help="Print the record (schema sd-explorer/trace@1) as JSON.")]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Accept a pickle checkpoint (.ckpt/.bin/.pt). Only for files you trust."),
]
AllowDownload = Annotated[
    bool, typer.Option("--allow-download", help="Let a hub id be downloaded when it is not in the local cache.")
]
Seed = Annotated[int, typer.Option(help="Seed for random weights and inputs.")]
SchedulerOption = Annotated[
    Optional[Scheduler],
    typer.Option(help="pndm is SD1.5's own, ddim SD2.1's, euler SDXL's. [default: the model's own]", show_default=False),
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Trace again instead of reading a record traced before (see docs/performance.md).")
]


@contextmanager
def user_errors() -> Iterator[None]:
    """A wrong input becomes one sentence on stderr and exit status 2; a failed forward, status 1."""
    try:
        yield
    except ExplorerError as exc:
        message = exc.for_cli() if isinstance(exc, OptionError) else str(exc)
        err.print(f"[bold red]Error:[/] {message}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:
        from explorer.capture.hooks import TraceError  # only loaded once torch is

        if isinstance(exc, TraceError):
            err.print(f"[bold red]Error:[/] {exc}", highlight=False)
            raise typer.Exit(1) from None
        raise


class _Quiet:
    """A status that shows nothing: where stderr is not a terminal, a spinner only costs time."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def update(self, *args, **kwargs) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None: ...


def _status(text: str):
    return err.status(text, spinner="dots") if err.is_terminal else _Quiet()


def _request(component: str, *, model: str, config: str | None, weights, prompt: str | None = None, **options):
    """The TraceRequest the flags describe: checked here, before anything heavy is imported."""
    from explorer.explore import DEFAULT_PROMPT, TraceRequest

    weights = getattr(weights, "value", weights)
    return TraceRequest(component, model, weights, config=config, prompt=DEFAULT_PROMPT if prompt is None else prompt, **options)


def _trace(request, no_cache: bool = False):
    """Load and trace one component (or read it from the cache), with a spinner on stderr while it
    traces; notices go to stderr too."""
    from explorer.explore import trace_cached

    status = _status(f"Tracing the {request.component} of {request.model} ({request.weights} weights)…")
    try:
        record, notes = trace_cached(request, use_cache=not no_cache, on_miss=status.start)
    finally:
        status.stop()
    for note in notes:  # stderr: stdout holds only the tree or the JSON
        err.print(note, style="dim", highlight=False)
    return record


def _explore(component: str, *, depth: int | None, block: str | None, as_json: bool, no_cache: bool, **flags) -> None:
    with user_errors():
        from explorer.explore import check_depth, narrow
        from explorer.views.format import dropped_tokens

        check_depth(depth, component)  # a typo should not cost the torch import
        check_seed(flags["seed"])
        record = _trace(_request(component, **flags), no_cache)
        if as_json:
            shown = narrow(record, block, depth) if (block or depth is not None) else record
            for tokens in record.tokens:
                if dropped := dropped_tokens(tokens):
                    err.print(f"Warning: {dropped}", highlight=False)
            sys.stdout.write(shown.to_json() + "\n")
            return
        from explorer.views.tree import render

        shown = narrow(record, block, 2 if depth is None else depth)
        hidden = len(narrow(record, block).nodes) - len(shown.nodes)
        out.print(render(shown, hidden=hidden), highlight=False, crop=False)


@app.command()
def unet(
    depth: Depth = None,
    block: Block = None,
    model: Model = "sd15",
    config: Config = None,
    weights: WeightsOpt = Weights.meta,
    height: Height = None,
    width: Width = None,
    batch: Batch = None,
    as_json: Json = False,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    seed: Seed = 0,
    no_cache: NoCache = False,
) -> None:
    """The UNet: predicts the noise in a latent, given the timestep and the prompt embedding.

    Default inputs: latents [2, 4, 64, 64], timesteps [2], prompt embeddings [2, 77, 768]
    (batch 2 because classifier-free guidance runs the prompt and the negative prompt together).
    """
    _explore("unet", **locals())


@app.command()
def vae(
    depth: Depth = None,
    block: Block = None,
    model: Model = "sd15",
    config: Config = None,
    weights: WeightsOpt = Weights.meta,
    height: Height = None,
    width: Width = None,
    batch: Batch = None,
    as_json: Json = False,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    seed: Seed = 0,
    no_cache: NoCache = False,
) -> None:
    """The VAE: encodes a 512x512 image to a 64x64x4 latent and decodes it back.

    Runs encode -> split into mean and log-variance -> sample -> x 0.18215 -> / 0.18215 -> decode,
    on one [1, 3, 512, 512] image by default.
    """
    _explore("vae", **locals())


@app.command()
def clip(
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="The prompt to tokenize and encode.")] = None,
    negative_prompt: Annotated[str, typer.Option(help="The negative prompt (batch 2 and more).")] = "",
    depth: Depth = None,
    block: Block = None,
    model: Model = "sd15",
    config: Config = None,
    weights: WeightsOpt = Weights.meta,
    batch: Batch = None,
    as_json: Json = False,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    seed: Seed = 0,
    no_cache: NoCache = False,
) -> None:
    """The CLIP text encoder: turns the prompt into the [2, 77, 768] embedding every cross-attention reads.

    Shows the tokenization too: start and end tokens, padding to 77, and what is dropped when a
    prompt is longer than 75 tokens.
    """
    _explore("clip", **locals())


@app.command()
def diagram(
    component: Annotated[Component, typer.Argument(help="Which part to draw.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write it; the extension picks the format: .svg .png .pdf .dot.")
    ],
    block: Block = None,
    depth: Annotated[int, typer.Option("--depth", "-d", help="How many levels below the block to draw.")] = 1,
    model: Model = "sd15",
    config: Config = None,
    weights: WeightsOpt = Weights.meta,
    height: Height = None,
    width: Width = None,
    batch: Batch = None,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    no_cache: NoCache = False,
) -> None:
    """Draw the data flow of a component, or of one --block, as a diagram (Graphviz).

    Every arrow carries the shape of the tensor on it, read off a real forward pass.
    """
    with user_errors():
        from explorer.diagrams import check_writable, diagram as make_diagram, format_of, write
        from explorer.explore import check_depth

        format_of(output)
        check_writable(output.parent)
        check_depth(depth, component.value, minimum=1)
        request = _request(component.value, model=model, config=config, weights=weights, height=height, width=width,
                           batch=batch, allow_pickle=allow_pickle, allow_download=allow_download)
        write(make_diagram(_trace(request, no_cache), block, depth), output)
        err.print(f"Wrote {output}", style="dim", highlight=False)


@app.command()
def diagrams(
    folder: Annotated[Path, typer.Argument(help="Where to write the figures (created if needed).")],
    model: Model = "sd15",
    config: Config = None,
    lang: Annotated[Lang, typer.Option(help="en, or zh: titles, captions and the colour key in Chinese, as the article "
                                       "is written (module names and shapes as they are).")] = "en",
    no_cache: NoCache = False,
) -> None:
    """Draw every figure of the article (26, plus the pipeline overview): one .svg and one .dot each.

    The figures are named by the article's sections: unet-1.1-overall.svg ... clip-3.2-CLIPEncoderLayer.svg.
    Try: explore diagrams diagrams/ · explore diagrams diagrams/zh --lang zh
    """
    with user_errors():
        from rich.progress import Progress

        from explorer.diagrams import check_writable, figure_count, write_figures

        check_writable(folder)
        traces = {c: _trace(_request(c, model=model, config=config, weights="meta"), no_cache) for c in COMPONENTS}
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("Drawing", total=figure_count())
            written = write_figures(traces, folder, progress=lambda name: progress.update(task, advance=1, description=name),
                                    lang=getattr(lang, "value", lang))
        err.print(f"Wrote {plural(len(written), 'file')} to {folder}", style="dim", highlight=False)


@app.command()
def stats(
    component: Annotated[Component, typer.Argument(help="Which part to measure.")],
    depth: Annotated[int, typer.Option("--depth", "-d", help="How many levels below the component (or --block).")] = 1,
    block: Block = None,
    sort: Annotated[Sort, typer.Option(help="tree: in call order; flops / params / activation: biggest first.")] = Sort.tree,
    sizes: Annotated[
        Optional[str], typer.Option(help="Comma-separated image sizes, e.g. 256,512,768,1024: how the cost grows.")
    ] = None,
    plot: Annotated[Optional[Path], typer.Option(help="With --sizes: draw the growth to this .png (matplotlib).")] = None,
    model: Model = "sd15",
    config: Config = None,
    height: Height = None,
    width: Width = None,
    batch: Batch = None,
    as_json: Json = False,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    no_cache: NoCache = False,
) -> None:
    """Where the parameters, the FLOPs and the activations of a component are.

    FLOPs are counted by PyTorch's own FlopCounterMode (matmuls, convolutions, attention) on the meta
    device. --sizes shows how the cost grows with resolution: convolutions linearly in the number of
    latent positions, self-attention with its square.
    """
    with user_errors():
        from explorer.explore import check_depth, narrow

        check_depth(depth, component.value)
        request = _request(component.value, model=model, config=config, weights="meta", height=height, width=width,
                           batch=batch, allow_pickle=allow_pickle, allow_download=allow_download, flops=True)
        if plot is not None and not sizes:
            raise OptionError("plot", "draws the growth measured by --sizes: give --sizes too, e.g. --sizes 256,512,768.")
        if sizes:
            _stats_by_size(request, sizes, plot, as_json)
            return
        from explorer.views.stats import stats_json, stats_table

        whole = _trace(request, no_cache)
        shown = narrow(whole, block, depth)
        if as_json:
            sys.stdout.write(json.dumps(stats_json(shown, whole), indent=1, ensure_ascii=False) + "\n")
        else:
            _print_wide(stats_table(shown, whole, sort.value))


def _stats_by_size(request, sizes: str, plot: Optional[Path], as_json: bool) -> None:
    """explore stats --sizes: the FLOPs at each size, as a table or JSON, and with --plot a PNG."""
    from explorer.analysis import parse_sizes, scaling

    size_list = parse_sizes(sizes, request.component)
    if plot is not None:
        _check_plot(plot)
    with err.status(f"Counting the {request.component}'s FLOPs at {len(size_list)} sizes…", spinner="dots"):
        rows = scaling(request.component, size_list, model=request.model, config=request.config, batch=request.batch,
                       allow_pickle=request.allow_pickle, allow_download=request.allow_download)
    if as_json:
        data = [{"size": r.size, "tokens": r.tokens, "flops": r.flops, "total_flops": r.total} for r in rows]
        sys.stdout.write(json.dumps(data, indent=1) + "\n")
    else:
        from explorer.views.stats import scaling_table

        _print_wide(scaling_table(rows, request.component))
    if plot is not None:
        from explorer.files import write_file
        from explorer.views.stats import plot_scaling, png_bytes

        write_file(plot, png_bytes(plot_scaling(rows, request.component)))
        err.print(f"Wrote {plot}", style="dim", highlight=False)


def _check_plot(plot: Path) -> None:
    import importlib.util

    from explorer.files import check_writable

    if plot.suffix.lower() != ".png":
        raise OptionError("plot", f"writes a PNG image: give a file name ending in .png, not {plot.name!r}.")
    if importlib.util.find_spec("matplotlib") is None:
        raise OptionError("plot", "draws with matplotlib: `pip install matplotlib` (or sd-explorer[notebooks]).")
    check_writable(plot.parent, plot.name)


def _print_wide(renderable) -> None:
    """Tables at their natural width, even when stdout is a pipe (rich would squeeze them to 80)."""
    Console(file=out.file, width=max(out.width, 200), soft_wrap=True).print(renderable, highlight=False)


ShowExperiment = Annotated[Optional[Path], typer.Option(
    "--experiment", help="Also show an experiment: the --out folder of `explore experiment` (an Experiment tab; on the U, "
    "each block coloured by how much its output changed at the step the slider shows, both runs' x0 side by side).")]
ShowSweep = Annotated[Optional[Path], typer.Option(
    "--sweep", help="Also show a sweep: the --out folder of `explore sweep` (on the U, each block coloured by how much "
    "editing it changed the image; a click shows the two images).")]


@app.command()
def html(
    folder: Annotated[Path, typer.Argument(help="Where to write the page (created if needed); open FOLDER/index.html.")],
    run: Annotated[
        Optional[Path],
        typer.Option("--run", help="Also replay a generation: the --out folder of `explore generate` (its step "
                     "slider then drives the architecture: block activity, and with --attention-maps each word's map)."),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option("--model", "-m", help="The architecture to draw: a preset, micro, a folder, a file or a hub id. "
                     "[default: the run's model with --run, else sd15]"),
    ] = None,
    diff: Annotated[
        Optional[str],
        typer.Option("--diff", help="Add a Diff tab: what changed from this model to --model (as `explore diff DIFF MODEL` "
                     "says), on the coloured U, each block a click away."),
    ] = None,
    experiment: ShowExperiment = None,
    sweep: ShowSweep = None,
    lang: Annotated[Lang, typer.Option(help="The language of index.html: en, or zh (the page's words, the block "
                                       "explanations and the figures in Chinese; module names and shapes as they are). "
                                       "The other language's page is beside it, one click away.")] = "en",
    config: Config = None,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    no_cache: NoCache = False,
) -> None:
    """Write an interactive page: the pipeline and the U, and a click opens any block, down to the
    attention heads. Self-contained: open FOLDER/index.html in any browser, offline.

    Try: explore html site/ · explore html site/ --lang zh · explore html site/ --model sdxl --diff sd15 ·
    explore html site/ --run runs/circle · explore html site/ --experiment exp/ · explore html site/ --sweep sweep/
    """
    with user_errors():
        from rich.progress import Progress

        from explorer.site import build

        shown_experiment, shown_sweep, shown_model = _shown_records(run, experiment, sweep)  # checked before any work
        model = model or shown_model or "sd15"
        traces = {
            c: _trace(_request(c, model=model, config=config, weights="meta", allow_pickle=allow_pickle,
                               allow_download=allow_download, flops=True), no_cache)
            for c in COMPONENTS
        }
        compared = None
        if diff is not None:
            from explorer.compare import diff as compare_models

            with _status(f"Comparing {diff} with {model}…"):
                compared = compare_models(diff, model, use_cache=not no_cache)
        with Progress(console=err, transient=True) as progress:
            task = progress.add_task("Drawing every block", total=None)
            page = build(folder, traces, run, progress=lambda done, total: progress.update(task, completed=done, total=total),
                         diff=compared, experiment=shown_experiment, sweep=shown_sweep, lang=getattr(lang, "value", lang))
        err.print(f"Wrote {page}: open it in a browser.", style="dim", highlight=False)


def _shown_records(run: Path | None, experiment: Path | None, sweep: Path | None):
    """The experiment and the sweep a page shows, read (one sentence when one is not what it should
    be), and the model their runs used, when the explorer can load it by that name."""
    from explorer.experiments import load_experiment, load_sweep
    from explorer.site import read_run

    shown_experiment = load_experiment(experiment) if experiment is not None else None
    shown_sweep = load_sweep(sweep) if sweep is not None else None
    records = [read_run(run)] if run is not None else []
    records += [shown.baseline.record for shown in (shown_experiment, shown_sweep) if shown is not None]
    model = next((m for m in map(_run_model, records) if m), None)
    return shown_experiment, shown_sweep, model


@app.command()
def diff(
    a: Annotated[str, typer.Argument(help="The model to compare from: a preset (sd15, sd21, sdxl, tiny, micro), a folder, a file or a hub id.")],
    b: Annotated[str, typer.Argument(help="The model to compare to.")],
    component: Annotated[
        Optional[Component], typer.Option("--component", "-c", help="Compare this component only. [default: every one both have]")
    ] = None,
    depth: Annotated[
        int, typer.Option("--depth", "-d", help="How many levels below each component to show (and to draw with -o).")
    ] = 1,
    everything: Annotated[bool, typer.Option("--all", help="Show the places that did not change too.")] = False,
    size: Annotated[
        Optional[int], typer.Option(help="Trace both at this image side in pixels, a multiple of 8. [default: A's own size]")
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option("--output", "-o", help="Also draw B's figure of the component (the UNet by default) coloured by what "
                     "changed; the extension picks the format: .svg .png .pdf .dot."),
    ] = None,
    values: Annotated[
        bool,
        typer.Option("--values", help="Also compare the parameters' values, tensor by tensor, where the architectures "
                     "agree: what a fine-tune changed, and by how much (both models need weights)."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff (schema sd-explorer/diff@1) as JSON.")] = False,
    no_cache: NoCache = False,
) -> None:
    """What changed from model A to model B: every component aligned module by module, with a summary in words.

    Modules are matched by path (then by position where paths differ) and compared by type, parameters,
    input and output shapes, attention heads and context width. Both are traced on the meta device.

    Try: explore diff sd15 sdxl · explore diff sd15 sd21 --component unet --depth 3 · explore diff ./base ./finetune --values
    """
    with user_errors():
        from explorer.compare import diff as compare_models
        from explorer.diagrams import check_writable, format_of
        from explorer.explore import check_depth

        shown = component.value if component else None
        check_depth(depth, shown or "unet", minimum=1 if output is not None else 0)
        if output is not None:
            format_of(output)
            check_writable(output.parent)
        status = _status(f"Tracing {a} and {b}…")
        status.start()
        try:
            result = compare_models(a, b, [shown] if shown else None, size=size, values=values, use_cache=not no_cache,
                                    on_trace=lambda c, m: status.update(f"Tracing the {c} of {m}…"))
        finally:
            status.stop()
        if output is not None:
            _write_diff_figure(result, shown, depth, output)
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=1) + "\n")
            return
        from explorer.views.diff import render

        _print_wide(render(result, depth, everything))


def _write_diff_figure(result, shown: str | None, depth: int, output: Path) -> None:
    from explorer.diagrams import write

    names = [c.component for c in result.components]
    write(result.figure(shown or ("unet" if "unet" in names else names[0]), depth), output)
    err.print(f"Wrote {output}", style="dim", highlight=False)


def _stopped(exc: BaseException, debug: bool) -> None:
    """Ctrl-C before the first step: exit 130. A failed pipeline: its sentence, exit 1 (the traceback
    with --debug or SD_EXPLORER_DEBUG=1)."""
    if isinstance(exc, KeyboardInterrupt):
        err.print("Interrupted before the first step: nothing was generated.", style="yellow")
        raise typer.Exit(130) from None
    if debug or os.environ.get("SD_EXPLORER_DEBUG"):
        raise exc
    err.print(f"[bold red]Error:[/] {exc} The steps done are in its trace.json; --debug shows the traceback.",
              highlight=False)
    raise typer.Exit(1) from None


def _run_model(record: dict) -> str | None:
    """The model a run used, when the explorer can load it again by that name (a preset, micro, a folder)."""
    from explorer.loading import SHIPPED
    from explorer.specs import PRESETS

    name = str(record.get("settings", {}).get("model", ""))
    return name if name in PRESETS or name in SHIPPED or Path(name).is_dir() else None


@app.command()
def generate(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")],
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from (classifier-free guidance).")] = "",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale; 1 or less turns it off.")] = 7.5,
    height: Height = None,
    width: Width = None,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise (and of random weights).")] = 0,
    scheduler: SchedulerOption = None,
    model: Model = "sd15",
    config: Config = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Folder for image.png, latents.png and trace.json. [default: a new folder under runs/]"),
    ] = None,
    attention_maps: Annotated[
        bool, typer.Option("--attention-maps", help="Also keep every cross-attention layer's map of each prompt token, per step.")
    ] = False,
    watch_depth: Annotated[int, typer.Option(help="Block activity: watch the UNet's modules down to this depth.")] = 2,
    decode_every: Annotated[int, typer.Option(help="Decode the predicted clean image with the VAE every N steps (0: never).")] = 0,
    adds: Annotated[bool, typer.Option("--adds", help="Block activity also measures what each block adds to its input, "
                                       "‖output − input‖ / ‖input‖ (its output's std is mostly the stream it carries).")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="Check every module's shapes in the real run against the static trace.")] = False,
    allow_pickle: AllowPickle = False,
    allow_download: AllowDownload = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when the pipeline fails (or set SD_EXPLORER_DEBUG=1).")] = False,
) -> None:
    """Generate an image with the model's real diffusers pipeline, watching every step: the shapes at its
    seams, how active each block is, what guidance does, and (--attention-maps) where each word goes.

    StableDiffusionPipeline for SD1.x and SD2.x layouts, StableDiffusionXLPipeline for SDXL's. Presets
    (sd15, tiny, ...) run random weights (real shapes, an image of noise); micro (trained on coloured shapes,
    shipped), a diffusers folder, a .safetensors file or a hub id gives a real image.
    """
    with user_errors():
        from explorer.views.live import LiveDisplay, compare_view, summary
        from explorer.generation import GenerationError, Settings, default_out, generate as run_generation

        settings = Settings(prompt=prompt, negative_prompt=negative_prompt, steps=steps, guidance=guidance,
                            height=height, width=width, seed=seed, scheduler=getattr(scheduler, "value", scheduler),
                            model=model, config=config, allow_pickle=allow_pickle, allow_download=allow_download,
                            watch_depth=watch_depth, attention_maps=attention_maps, decode_every=decode_every,
                            adds=adds)
        display = LiveDisplay(err)
        try:
            display.status.start()
            result = run_generation(settings, out_dir or default_out(prompt), compare=compare, **display.callbacks())
        except BaseException as exc:  # every way out stops the spinner first: a sentence after it, and
            display.stop()  # on a terminal the cursor shown again
            if isinstance(exc, (KeyboardInterrupt, GenerationError)):
                _stopped(exc, debug)
            raise
        display.stop(result.watch)
        out.print(summary(result.watch, result.interrupted))
        if compare:
            out.print(compare_view(result.watch.recording.compare))
        if result.interrupted:
            raise typer.Exit(130)


OffOption = Annotated[list[str], typer.Option("--off", metavar="PATH", help="Switch a module off: " + EDIT_SYNTAX["off"] + ".")]
ScaleOption = Annotated[list[str], typer.Option("--scale", metavar="PATH=FACTOR", help="A module's contribution × a factor: " + EDIT_SYNTAX["scale"] + ".")]
SkipsOption = Annotated[list[str], typer.Option("--skips", metavar="LEVEL=FACTOR", help="The skip tensors arriving in an up block × a factor: " + EDIT_SYNTAX["skips"] + ".")]
FreeUOption = Annotated[bool, typer.Option("--freeu", help="FreeU, diffusers' own (b1 1.5, b2 1.6, s1 0.9, s2 0.2: the values published for SD1.5).")]
FreeUFactors = Annotated[Optional[str], typer.Option(help="FreeU with other factors: B1,B2,S1,S2 (implies --freeu).")]
PromptAtOption = Annotated[list[str], typer.Option("--prompt-at", metavar="PROMPT@LAYERS", help="Some cross-attention layers read another prompt (P+): " + EDIT_SYNTAX["prompt_at"] + ".")]
SwapOption = Annotated[list[str], typer.Option("--swap", metavar="WORD=NEW[@LAYERS]", help="prompt-to-prompt's replace: the prompt's attention, the new word's values: " + EDIT_SYNTAX["swap"] + ".")]
ReweightOption = Annotated[list[str], typer.Option("--reweight", metavar="WORD=FACTOR[@LAYERS]", help="A word's attention weights × a factor: " + EDIT_SYNTAX["reweight"] + ".")]
TimestepOption = Annotated[Optional[str], typer.Option("--timestep", metavar="SHIFT", help="Tell the UNet t + SHIFT while the scheduler keeps its own t, e.g. 300.")]
GuideOption = Annotated[Optional[str], typer.Option("--guide", metavar="SCALE", help="Classifier-free guidance at SCALE instead of --guidance, e.g. 1 (none) --during 0-4.")]
MicroFirst = Annotated[str, typer.Option(
    "--model", "-m", help="micro (trained on coloured shapes, shipped), a preset, a diffusers folder, a .safetensors file or a hub id.")]
ExperimentOut = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Folder for experiment.json, comparison.png and the two runs (baseline/, edited/). [default: a new folder under runs/]")]
DuringOption = Annotated[Optional[str], typer.Option("--during", metavar="STEPS", help="The steps the edits act at: 3, 0-5 (both ends included), 10- or all. [default: all]")]


@app.command()
def experiment(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")],
    off: OffOption = [],  # noqa: B006
    scale: ScaleOption = [],  # noqa: B006
    skips: SkipsOption = [],  # noqa: B006
    freeu: FreeUOption = False, freeu_factors: FreeUFactors = None,
    prompt_at: PromptAtOption = [],  # noqa: B006
    swap: SwapOption = [],  # noqa: B006
    reweight: ReweightOption = [],  # noqa: B006
    timestep: TimestepOption = None,
    guide: GuideOption = None,
    during: DuringOption = None,
    negative_prompt: Annotated[str, typer.Option(help="What to steer away from (classifier-free guidance).")] = "",
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale; 1 or less turns it off.")] = 7.5,
    height: Height = None, width: Width = None,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise (the same for both runs) and of random weights.")] = 0,
    scheduler: SchedulerOption = None,
    model: MicroFirst = "micro",
    out_dir: ExperimentOut = None,
    attention_maps: Annotated[bool, typer.Option("--attention-maps", help="Also keep every cross-attention map, in both runs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record (schema sd-explorer/experiment@1) as JSON.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when the pipeline fails.")] = False,
) -> None:
    """Change one part of the running model and see what it does: the same generation twice from the same noise, as it
    is and with the edits, both watched, and what changed (the image, x0 step by step, every block's output).

    Edits (any number, together): --off, --scale, --skips, --freeu, --prompt-at, --swap, --reweight, --timestep, --guide;
    --during limits them to some steps. Layers: all, a path or its prefix, a level (down.1, mid, up.2) or a feature-map
    size (8x8). See docs/experiments.md.

    Try: explore experiment -p "a red circle on the left" --off mid_block · explore experiment -p "a red circle on the left" --swap red=blue@8x8 --during 0-5 -o exp/
    """
    with user_errors():
        from explorer.edits import parse
        from explorer.experiments import experiment as run_experiment
        from explorer.generation import GenerationError
        from explorer.views.live import TwoRuns

        chosen = [parse(kind, text, during) for kind, texts in
                  (("off", off), ("scale", scale), ("skips", skips), ("prompt_at", prompt_at), ("swap", swap),
                   ("reweight", reweight), ("timestep", [timestep] if timestep else []), ("guidance", [guide] if guide else []))
                  for text in texts] + ([_freeu(freeu_factors)] if freeu or freeu_factors is not None else [])
        if not chosen:
            err.print("[bold yellow]Note:[/] no edit given: both runs are the same model, and nothing should change.", highlight=False)
        display = TwoRuns(err)
        try:  # every way out stops the display first: a sentence after it, and the cursor shown again
            display.status.start()
            result = run_experiment(prompt, edits=chosen, model=model, seed=seed, steps=steps, guidance=guidance,
                                    negative_prompt=negative_prompt, height=height, width=width,
                                    scheduler=getattr(scheduler, "value", scheduler), attention_maps=attention_maps,
                                    out=out_dir, on_phase=display.on_phase, on_run=display.callbacks)
        except BaseException as exc:
            display.stop()
            if isinstance(exc, (KeyboardInterrupt, GenerationError)):
                _stopped(exc, debug)
            raise
        display.stop()
        _show_experiment(result, as_json)


def _show_experiment(result, as_json: bool) -> None:
    """comparison.png beside the record, then the summary (or the record as JSON)."""
    from explorer.files import write_file
    from explorer.previews import png

    out_dir = result.folder
    write_file(out_dir / "comparison.png", png(result.figure()))
    if as_json:
        sys.stdout.write(json.dumps(result.record, indent=1, ensure_ascii=False) + "\n")
    else:
        out.print(result.summary(), highlight=False)
        err.print(f"Wrote {out_dir}: experiment.json, comparison.png, baseline/ and edited/ (on the page: "
                  f"explore html site/ --experiment {out_dir}).", style="dim", highlight=False)
    if result.status == "interrupted":
        raise typer.Exit(130)


def _freeu(factors: str | None):
    from explorer.edits import freeu

    if factors is None:
        return freeu()
    parts = factors.split(",")
    if len(parts) != 4:
        raise OptionError("freeu-factors", f"takes four numbers B1,B2,S1,S2 (e.g. 1.5,1.6,0.9,0.2), got {factors!r}.")
    try:
        return freeu(*(float(p) for p in parts))
    except ValueError:
        raise OptionError("freeu-factors", f"takes four numbers B1,B2,S1,S2 (e.g. 1.5,1.6,0.9,0.2), got {factors!r}.") from None


Over = _choices("Over", OVER)
EditKind = _choices("EditKind", ("off", "scale"))


@app.command()
def sweep(
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to draw.")],
    edit: Annotated[EditKind, typer.Option(help="What is done to each module in turn: off, or scale (with --factor).")] = "off",
    factor: Annotated[Optional[float], typer.Option(help="With --edit scale: each module's contribution × this.")] = None,
    over: Annotated[Optional[Over], typer.Option(help="Which modules: every layer of this kind. [default: cross-attention]", show_default=False)] = None,
    layers: Annotated[Optional[str], typer.Option(help="Only these cross-attention layers: a path or its prefix, a level (down.1, mid, up.2) or a size (8x8).")] = None,
    depth: Annotated[Optional[int], typer.Option("--depth", "-d", help="Instead of --over: every module at this depth where the edit means something (1: the blocks).")] = None,
    steps: Annotated[int, typer.Option(help="Denoising steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale.")] = 7.5,
    seed: Annotated[int, typer.Option(help="Seed of the starting noise, the same for every run.")] = 0,
    model: MicroFirst = "micro",
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Folder for sweep.json, sweep.svg (the U coloured by effect), images/ and the baseline run. [default: a new folder under runs/]"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record (schema sd-explorer/sweep@1) as JSON.")] = False,
) -> None:
    """One edit over every module of a kind, one run each from the same noise: which layer changes what.

    A table of how much each changed the image (on micro, what the judge saw change: colour, shape,
    position), and the U coloured by effect.

    Try: explore sweep -p "a red circle on the left" · explore sweep -p "a red circle on the left" --depth 2 -o sweep/
    """
    with user_errors():
        from rich.progress import Progress

        from explorer.diagrams import write
        from explorer.experiments import sweep as run_sweep
        from explorer.generation import default_out

        if layers is not None and over not in (None, Over("cross-attention")):
            raise OptionError("layers", "chooses among cross-attention layers: leave --over out, or give --over cross-attention.")
        out_dir = out_dir or default_out(prompt).with_name(default_out(prompt).name + "-sweep")
        status = _status(f"Building {model}…")
        status.start()
        try:
            with Progress(console=err, transient=True) as progress:
                task = progress.add_task("Sweeping", total=None, visible=False)

                def on_progress(done: int, total: int, path: str) -> None:
                    status.stop()
                    progress.update(task, completed=done, total=total, visible=True,
                                    description=f"Sweeping: {path}" if path else "Sweeping")

                result = run_sweep(prompt, edit=edit.value, factor=factor, over=layers or getattr(over, "value", over),
                                   depth=depth, model=model, seed=seed, steps=steps, guidance=guidance, out=out_dir,
                                   on_progress=on_progress)
        finally:
            status.stop()
        write(result.figure(), out_dir / "sweep.svg")
        if as_json:
            sys.stdout.write(json.dumps(result.record, indent=1, ensure_ascii=False) + "\n")
        else:
            _print_wide(result.table())
            err.print(f"Wrote {out_dir}: sweep.json, sweep.svg, images/ and baseline/ "
                      f"({result.record['seconds']['total']:.1f} s).", style="dim", highlight=False)


@app.command()
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="The model every generation on the page runs, chosen now: micro "
                                       "(shipped), a diffusers folder, a .safetensors file, a hub id or a preset.")] = "micro",
    port: Annotated[int, typer.Option(help="The port on 127.0.0.1 (or --host).")] = 8765,
    runs: Annotated[Path, typer.Option("--runs", help="Where each generation, experiment and sweep is kept (as "
                                       "`explore generate` keeps a run), and what the page lists.")] = Path("runs"),
    host: Annotated[str, typer.Option(help="The address to listen on. Only 127.0.0.1 (this machine) unless you mean "
                                      "others on your network to reach it.")] = "127.0.0.1",
    lang: Annotated[Lang, typer.Option(help="The page's language: en or zh.")] = "en",
    open_page: Annotated[bool, typer.Option("--open", help="Open the page in the browser once it is served.")] = False,
) -> None:
    """The page, live: type a prompt and watch the U work, step by step; click a block to switch it off,
    scale it or give it another prompt, and see both runs side by side.

    A local web server (uvicorn) on 127.0.0.1 with a token in the URL it prints, as Jupyter's; every run is a
    normal run folder under --runs. Ctrl-C stops it, keeping what was done.

    Try: explore serve · explore serve --open · explore serve --model ./stable-diffusion-v1-5 --lang zh
    """
    with user_errors():
        from explorer.server import check_port, serve_page

        check_port(host, port)
        try:  # Ctrl-C is how a server is stopped: uvicorn shuts down, then hands the signal back
            serve_page(model=model, port=port, runs=runs, host=host, lang=getattr(lang, "value", lang),
                       open_page=open_page, say=lambda text: err.print(text, highlight=False))
        except KeyboardInterrupt:
            pass
        err.print(f"Stopped: the page is no longer served; the runs are in {runs}.", style="dim", highlight=False)


@app.command()
def maps(
    run: Annotated[Path, typer.Argument(help="A run folder of `explore generate --attention-maps`.")],
    word: Annotated[str, typer.Option("--word", "-w", help="A word of the prompt (or <|startoftext|>, <|endoftext|>, <padding>).")],
    step: Annotated[Optional[int], typer.Option(help="Only this step. [default: every step]")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Only the layers working at this feature-map size, e.g. 16.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the figure here (.png): the map over the image, overall and per resolution.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the maps as numbers.")] = False,
) -> None:
    """Where one word's cross-attention goes: summed over layers, heads and steps the way DAAM does,
    upsampled to the latent's size; and per resolution, to see at which level the word is placed.

    Try: explore maps runs/circle --word circle · explore maps runs/circle -w circle --resolution 16 -o circle.png"""
    with user_errors():
        from explorer.maps import rounded_lists
        from explorer.runs import load_run
        from explorer.views.maps import halves

        if output is not None and output.suffix.lower() != ".png":
            raise OptionError("output", f"writes a PNG image: give a file name ending in .png, not {output.name!r}.")
        r = load_run(run)
        overall = r.attention(word, step, resolution)
        sizes = sorted({layer["height"] for layer in r.map_layers}, reverse=True)
        by_size = {size: r.attention(word, step, size) for size in sizes} if resolution is None else {}
        if as_json:
            data = {"word": word, "rows": r.rows_of(word), "step": step, "resolution": resolution,
                    "overall": rounded_lists(overall, 6), "mass": halves(overall),
                    "by_resolution": {str(k): rounded_lists(v, 6) for k, v in by_size.items()}}
            sys.stdout.write(json.dumps(data) + "\n")
        elif output is None:
            out.print(_map_text(r, word, overall, step), highlight=False)
        if output is not None:
            _write_map_figure(r, word, overall, by_size, step, output)


def _map_text(r, word: str, overall, step: Optional[int]):
    from rich.console import Group
    from rich.text import Text

    from explorer.views.live import SHADES
    from explorer.views.maps import halves

    scaled = overall / (overall.max() or 1.0)
    rows = ["".join(SHADES[int(v * (len(SHADES) - 1) + 0.5)] * 2 for v in row) for row in scaled]
    mass = halves(overall)
    where = f"step {step}" if step is not None else f"all {plural(len(r.steps), 'step')}"
    return Group(
        Text(f"{word!r} in {r.prompt!r} · {where} · latent {overall.shape[0]}x{overall.shape[1]}", style="bold"),
        *(Text(line, "cyan") for line in rows),
        Text(" · ".join(f"{k} {v:.0%}" for k, v in mass.items()) + "  (share of the map; -o FILE.png draws it over the image)", "dim"),
    )


def _write_map_figure(r, word: str, overall, by_size: dict, step: Optional[int], output: Path) -> None:
    from explorer.errors import ExplorerError
    from explorer.files import check_writable, write_file
    from explorer.previews import png
    from explorer.views.maps import figure

    check_writable(output.parent, output.name)
    try:
        image = r.x0(step) if step is not None else r.image()
    except ExplorerError:  # an interrupted run has no image: its last prediction stands in
        image = r.x0(len(r.steps) - 1)
    where = f"{r.prompt!r} · " + (f"step {step}" if step is not None else f"all {plural(len(r.steps), 'step')}")
    write_file(output, png(figure(image, overall, by_size, word, where)))
    err.print(f"Wrote {output}", style="dim", highlight=False)


@app.callback()
def _setup() -> None:
    _quiet_libraries()


def main() -> None:
    # A first command spends most of its time importing torch, diffusers and transformers: millions
    # of objects that live as long as the process. With Python's default thresholds the cyclic
    # garbage collector walks all of them again each time the heap has grown by a quarter, and once
    # more at exit: a third of `explore unet`'s first run. Collecting the young generation every
    # 10,000 allocations instead of 700 makes those walks rare (garbage cycles are still collected),
    # and freezing everything once the command is done spares the walk at exit.
    gc.set_threshold(10_000, 10, 10)
    try:
        app()
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
