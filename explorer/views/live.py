"""What `explore generate` shows: the live panel during the run, the summary after it.

Pure functions of the watcher's plain record (`explorer.generation.Recording`) and the phase running
now: they read it, never the pipeline.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from explorer.runs import SCHEMA
from explorer.views.format import dropped_tokens, fmt_seconds, plural, shape_str

PHASES = (
    ("build", "build"),
    ("tokenize", "tokenize"),
    ("static traces", "static traces"),
    ("encode_prompt", "encode prompt"),
    ("denoise", "denoise"),
    ("vae_decode", "VAE decode"),
)
SEAMS = (
    ("latent_in", "latent in", ""),
    ("unet_input", "UNet input", "the latent twice: negative prompt and prompt in one batch"),
    ("noise_pred", "noise prediction", "one prediction per prompt"),
    ("guided", "guided prediction", "uncond + {g} · (cond − uncond)"),
    ("latent_out", "latent out", ""),
)
SPARK = "▁▂▃▄▅▆▇█"
SHADES = " ░▒▓█"  # a map's weight, low to high
HEAT_ROWS = 12  # blocks shown in the activity strip


def sparkline(values: list[float], width: int = 40) -> str:
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def header(watch: Any) -> Group:
    rec = watch.recording
    s = rec.settings
    lines = [Text.assemble(("prompt ", "dim"), (repr(s.get("prompt", "")), "bold"))]
    if s.get("negative_prompt"):
        lines.append(Text.assemble(("negative ", "dim"), repr(s["negative_prompt"])))
    for record in rec.tokens:
        if dropped := dropped_tokens(record):
            lines.append(Text(f"⚠ {dropped}", "bold yellow"))
    for warning in rec.warnings:
        lines.append(Text(f"⚠ {warning}", "yellow"))
    model = Text.assemble((str(s.get("model", "")), "bold"), " · ")
    if s.get("weights") == "random":
        model.append("RANDOM WEIGHTS: the architecture is real, the image will be noise", "bold red")
    else:
        model.append("pretrained weights", "green")
    lines.append(model)
    size = f"{s.get('width')}×{s.get('height')} px · " if s.get("width") else ""
    lines.append(
        Text(
            f"{str(s.get('scheduler', '')).upper()} · {plural(int(s.get('steps', 0)), 'step')} · "
            f"guidance {s.get('guidance', 0):g} · {size}seed {s.get('seed', '?')}",
            "dim",
        )
    )
    return Group(*lines)


def total_steps(watch: Any) -> int:
    return watch.recording.total_steps or int(watch.recording.settings.get("steps", 0))


def phases_line(watch: Any) -> Table:
    rec = watch.recording
    grid = Table.grid(padding=(0, 3))
    cells = []
    for key, name in PHASES:
        if key in rec.phases and (key != "denoise" or len(rec.steps) >= total_steps(watch)):
            cells.append(Text(f"✓ {name} {fmt_seconds(rec.phases[key])}", "green"))
        elif watch.phase == key or (key == "denoise" and rec.steps):
            cells.append(Text(f"… {name}", "bold yellow"))
        else:
            cells.append(Text(f"· {name}", "dim"))
    grid.add_row(*cells[:3])
    grid.add_row(*cells[3:])
    return grid


def progress_row(watch: Any) -> Table:
    """The bar, steps done of all, time per step and what is left."""
    steps = watch.recording.steps
    done, total = len(steps), total_steps(watch)
    per_step = sum(step.seconds for step in steps) / done if done else 0.0
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(total, 1), completed=done, width=40),
        Text(f"{done}/{total}", "bold"),
        Text(f"{fmt_seconds(per_step)}/step · ETA {fmt_seconds(per_step * (total - done))}" if done else "first step…", "dim"),
    )
    return bar


def seams_table(watch: Any) -> Table:
    """The last step's seams: what crossed into and out of the UNet and the scheduler."""
    last = watch.recording.steps[-1]
    guidance = watch.recording.settings.get("guidance", 0)
    seams = Table.grid(padding=(0, 2))
    for key, name, about in SEAMS:
        if key in last.shapes:
            note = about.format(g=f"{guidance:g}")
            if key == "latent_out":
                note = f"mean {last.latent_stats['mean']:+.3f}  std {last.latent_stats['std']:.3f}"
            seams.add_row(Text(f"  {name}", "dim"), Text(shape_str(last.shapes[key]), "bold"), Text(note, "dim"))
    return seams


def heat_strip(watch: Any, width: int = 40) -> Table:
    """Block activity so far: one row per block (its output's std), one column per step, shaded
    against that block's own range."""
    steps = watch.recording.steps[-width:]
    paths = [p for p in watch.recording.blocks if p.count(".") <= 1 and any(p in s.blocks for s in steps)][:HEAT_ROWS]
    grid = Table.grid(padding=(0, 1))
    for path in paths:
        values = [s.blocks.get(path, {}).get("std", 0.0) for s in steps]
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        cells = "".join(SHADES[min(len(SHADES) - 1, int((v - low) / span * (len(SHADES) - 1) + 0.5))] for v in values)
        grid.add_row(Text(f"  {path}", "dim"), Text(cells, "magenta"), Text(f"std {values[-1]:.3f}", "dim"))
    return grid


def word_map(watch: Any, maps: list) -> Group | None:
    """The current step's map of the prompt word attended most, in block characters."""
    import numpy as np

    from explorer.maps import aggregate, word_spans

    attention = watch.recording.attention or {}
    tokens = attention.get("tokens", [])
    words = [(w, rows) for w, rows in word_spans(tokens) if not w.startswith("<")]
    if not maps or not words:
        return None
    size = (max(m.shape[1] for m in maps), max(m.shape[2] for m in maps))
    mass = {w: sum(float(m[rows].sum()) for m in maps) for w, rows in words}
    word = max(mass, key=mass.get)
    image = aggregate([maps], list(range(len(maps))), dict(words)[word], size)
    image = image / (image.max() or 1.0)
    lines = ["".join(SHADES[int(v * (len(SHADES) - 1) + 0.5)] * 2 for v in row) for row in np.asarray(image)]
    return Group(Text(f"  where {word!r} goes now (most attended word):", "dim"), *(Text("  " + line, "cyan") for line in lines))


def live_panel(watch: Any) -> Panel:
    """The panel redrawn while the pipeline runs."""
    rec = watch.recording
    parts: list[Any] = [header(watch), Text(""), progress_row(watch)]
    if rec.unet_calls:
        parts.append(Text(rec.unet_calls, "dim italic"))
    if rec.steps:
        last = rec.steps[-1]
        parts.append(Text.assemble(("step ", "dim"), (str(last.index), "bold"), ("  timestep ", "dim"), (f"{last.timestep:g}", "bold cyan")))
        parts.append(seams_table(watch))
        parts.append(Text.assemble(("  latent std  ", "dim"), (sparkline([st.latent_stats["std"] for st in rec.steps]), "cyan")))
        if any(s.blocks for s in rec.steps):
            parts += [Text("  block activity (output std per step)", "dim"), heat_strip(watch)]
        if (shown := word_map(watch, getattr(watch, "last_maps", []))) is not None:
            parts.append(shown)
    parts.extend([Text(""), phases_line(watch)])
    return Panel(Group(*parts), title="[bold]explore generate", border_style="blue", expand=False)


def summary(watch: Any, interrupted: bool = False) -> Group:
    """After the run: where the files are, and where the time went."""
    rec = watch.recording
    done = len(rec.steps)
    parts: list[Any] = []
    if interrupted:
        parts.append(Text(f"Interrupted after {done} of {plural(total_steps(watch), 'step')}; trace.json has them.", "bold yellow"))
    else:
        wall, pipeline = rec.phases.get("wall", 0.0), rec.phases.get("total", 0.0)
        parts.append(
            Text.assemble(
                ("Done", "bold green"),
                f" in {fmt_seconds(wall)} ({fmt_seconds(pipeline)} in the pipeline itself) · ",
                (str(watch.out), "bold"),
            )
        )
    parts.append(files_table(watch, interrupted))
    if (table := time_table(rec)) is not None:
        parts.append(table)
    return Group(*parts)


def files_table(watch: Any, interrupted: bool) -> Table:
    rec = watch.recording
    done = len(rec.steps)
    files = Table.grid(padding=(0, 2))
    if not interrupted:
        noise = " (random weights: noise, but every shape is real)" if rec.settings.get("weights") == "random" else ""
        files.add_row("  image.png", Text("the image" + noise, "dim"))
    if done:
        files.add_row("  latents.png", Text(f"{plural(done, 'latent preview')}, one per step", "dim"))
        files.add_row("  previews/", Text("per step: the latent, the unconditional, conditional and guided noise predictions, and x0", "dim"))
    if rec.attention:
        files.add_row("  maps.bin", Text("per step: every cross-attention layer's map of each prompt token", "dim"))
    files.add_row("  trace.json", Text(f"{SCHEMA}: settings, tokens, static traces, {plural(done, 'step')}", "dim"))
    return files


def time_table(rec: Any) -> Table | None:
    done = len(rec.steps)
    timed = [(name, rec.phases[key]) for key, name in PHASES[3:] if key in rec.phases]
    if not timed:
        return None
    table = Table(title="where the time went", title_justify="left", box=None, padding=(0, 2), show_header=True)
    table.add_column("phase", style="dim")
    table.add_column("seconds", justify="right")
    table.add_column("share", justify="right")
    table.add_column("per step", justify="right", style="dim")
    whole = sum(seconds for _, seconds in timed) or 1.0
    for name, seconds in timed:
        per = f"{seconds / done:.3f}" if name == "denoise" and done else ""
        table.add_row(name, f"{seconds:.2f}", f"{100 * seconds / whole:.0f} %", per)
    return table


def compare_view(result: dict | None) -> Group:
    """The live run's module shapes against the static trace: one verdict line, then any difference."""
    if not result:
        return Group(Text("--compare: nothing to compare (the run did not get that far).", "yellow"))
    diffs = result["differences"]
    if not diffs:
        return Group(
            Text.assemble(
                ("compare: ", "bold"),
                (f"all {result['checked']} modules match", "bold green"),
                (" — the shapes seen in the real run are those of the static trace.", "dim"),
            )
        )
    table = Table(box=None, padding=(0, 2))
    for column in ("component", "module", "real run", "static trace"):
        table.add_column(column)
    for d in diffs[:30]:
        table.add_row(d["component"], d["path"], str(d["live"]), str(d["static"]))
    return Group(Text(f"compare: {len(diffs)} of {result['checked']} modules differ", "bold red"), table)


class LiveDisplay:
    """What `explore generate` shows on stderr while it runs: a spinner while the pipeline is built
    and traced, warnings once it starts, then the live panel redrawn after every step."""

    MESSAGES = {"build": "Building the pipeline…", "static": "Tracing the components for the record…"}

    def __init__(self, console):
        from rich.live import Live

        self.console = console
        self.status = console.status(self.MESSAGES["build"], spinner="dots")
        self.live = Live(console=console, refresh_per_second=4, transient=False)

    def callbacks(self) -> dict:
        """The keyword arguments explorer.generation.generate takes to report its progress."""
        return {"on_start": self.on_start, "on_step": self.on_step, "on_phase": self.on_phase}

    def on_phase(self, name: str) -> None:
        self.status.update(self.MESSAGES.get(name, name))

    def on_start(self, watch: Any) -> None:
        self.status.stop()
        for warning in start_warnings(watch):
            self.console.print(warning, highlight=False)
        self.live.update(live_panel(watch))
        self.live.start()

    def on_step(self, watch: Any) -> None:
        self.live.update(live_panel(watch))

    def stop(self, watch: Any = None) -> None:
        self.status.stop()
        if watch is not None:
            self.live.update(live_panel(watch))
        drawn = self.live.is_started
        self.live.stop()
        if drawn and not self.console.is_terminal:  # rich ends the panel's last line on a terminal only:
            self.console.line()  # in a log (2>&1), what follows would start on the panel's bottom border


def start_warnings(watch: Any) -> list[str]:
    """Said once, before the first step: prompts too long for CLIP, words a micro model never
    learned, random weights."""
    rec = watch.recording
    warnings = [f"[bold yellow]Warning:[/] {dropped}" for r in rec.tokens if (dropped := dropped_tokens(r))]
    warnings += [f"[bold yellow]Warning:[/] {w}" for w in rec.warnings]
    if rec.settings.get("weights") == "random":
        warnings.append(
            f"[bold red]Random weights:[/] {rec.settings.get('model')} is a preset with no weights; the architecture is "
            "real and every shape is exact, but the image will be noise. Give --model a diffusers folder, "
            "a .safetensors file, a hub id or micro for a real image."
        )
    return warnings


class TwoRuns:
    """What `explore experiment` shows on stderr: the spinner while the pipeline is built, then each
    run's live panel under its name (baseline, then edited), the first one finished before the next
    starts."""

    def __init__(self, console):
        self.console = console
        self.first = LiveDisplay(console)
        self.shown: list[tuple[LiveDisplay, Any]] = []  # each run's display and its watcher

    @property
    def status(self):
        return self.first.status

    def on_phase(self, name: str) -> None:
        self.first.on_phase(name)

    def callbacks(self, name: str) -> dict:
        """The callbacks explorer.experiment takes for the run `name`."""
        display = self.first if not self.shown else LiveDisplay(self.console)

        def on_start(watch: Any) -> None:
            if self.shown:
                previous, watched = self.shown[-1]
                previous.stop(watched)
            self.shown.append((display, watch))
            display.status.stop()
            self.console.print(f"[bold]{name}[/]", highlight=False)
            display.on_start(watch)

        return {"on_start": on_start, "on_step": display.on_step}

    def stop(self) -> None:
        self.first.status.stop()
        for display, watch in self.shown:
            display.stop(watch)
