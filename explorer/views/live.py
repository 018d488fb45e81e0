"""What `explore generate` shows: the live panel during the run, the summary after it.

Pure functions of the plain `Watch` record: they read it, never the pipeline.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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


def sparkline(values: list[float], width: int = 40) -> str:
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def header(watch: Any) -> Group:
    s = watch.settings
    lines = [Text.assemble(("prompt ", "dim"), (repr(s.prompt), "bold"))]
    if s.negative_prompt:
        lines.append(Text.assemble(("negative ", "dim"), repr(s.negative_prompt)))
    for record in watch.tokens:
        if dropped := dropped_tokens(record):
            lines.append(Text(f"⚠ {dropped}", "bold yellow"))
    model = Text.assemble((watch.model, "bold"), " · ")
    if watch.weights == "random":
        model.append("RANDOM WEIGHTS: the architecture is real, the image will be noise", "bold red")
    else:
        model.append("pretrained weights", "green")
    lines.append(model)
    lines.append(
        Text(
            f"{s.scheduler.upper()} · {plural(s.steps, 'step')} · guidance {s.guidance:g} · {s.width}×{s.height} px · seed {s.seed}",
            "dim",
        )
    )
    return Group(*lines)


def total_steps(watch: Any) -> int:
    return watch.total_steps or watch.settings.steps


def phases_line(watch: Any) -> Table:
    grid = Table.grid(padding=(0, 3))
    cells = []
    for key, name in PHASES:
        if key in watch.phases and (key != "denoise" or len(watch.steps) >= total_steps(watch)):
            cells.append(Text(f"✓ {name} {fmt_seconds(watch.phases[key])}", "green"))
        elif watch.phase == key or (key == "denoise" and watch.steps):
            cells.append(Text(f"… {name}", "bold yellow"))
        else:
            cells.append(Text(f"· {name}", "dim"))
    grid.add_row(*cells[:3])
    grid.add_row(*cells[3:])
    return grid


def live_panel(watch: Any) -> Panel:
    """The panel redrawn while the pipeline runs."""
    s = watch.settings
    done, total = len(watch.steps), total_steps(watch)
    parts: list[Any] = [header(watch), Text("")]
    per_step = sum(step.seconds for step in watch.steps) / done if done else 0.0
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=total, completed=done, width=40),
        Text(f"{done}/{total}", "bold"),
        Text(
            f"{fmt_seconds(per_step)}/step · ETA {fmt_seconds(per_step * (total - done))}" if done else "first step…",
            "dim",
        ),
    )
    parts.append(bar)
    last = watch.steps[-1] if watch.steps else None
    if last is not None:
        parts.append(Text.assemble(("step ", "dim"), (str(last.index), "bold"), ("  timestep ", "dim"), (f"{last.timestep:g}", "bold cyan")))
        seams = Table.grid(padding=(0, 2))
        for key, name, about in SEAMS:
            if key in last.shapes:
                note = about.format(g=f"{s.guidance:g}")
                if key == "latent_out":
                    note = f"mean {last.latent_stats['mean']:+.3f}  std {last.latent_stats['std']:.3f}"
                seams.add_row(Text(f"  {name}", "dim"), Text(shape_str(last.shapes[key]), "bold"), Text(note, "dim"))
        parts.append(seams)
        parts.append(Text.assemble(("  latent std  ", "dim"), (sparkline([st.latent_stats["std"] for st in watch.steps]), "cyan")))
    parts.extend([Text(""), phases_line(watch)])
    return Panel(Group(*parts), title="[bold]explore generate", border_style="blue", expand=False)


def summary(watch: Any, interrupted: bool = False) -> Group:
    """After the run: where the files are, and where the time went."""
    done = len(watch.steps)
    parts: list[Any] = []
    if interrupted:
        parts.append(Text(f"Interrupted after {done} of {total_steps(watch)} steps; trace.json has them.", "bold yellow"))
    else:
        wall, pipeline = watch.phases.get("wall", 0.0), watch.phases.get("total", 0.0)
        parts.append(
            Text.assemble(
                ("Done", "bold green"),
                f" in {fmt_seconds(wall)} ({fmt_seconds(pipeline)} in the pipeline itself) · ",
                (str(watch.out), "bold"),
            )
        )
    files = Table.grid(padding=(0, 2))
    if not interrupted:
        what = "the image" + (" (random weights: noise, but every shape is real)" if watch.weights == "random" else "")
        files.add_row("  image.png", Text(what, "dim"))
    if done:
        files.add_row("  latents.png", Text(f"{done} latent previews, one per step", "dim"))
    files.add_row("  trace.json", Text(f"sd-explorer/generation@1: settings, tokens, static traces, {done} steps", "dim"))
    parts.append(files)
    timed = [(name, watch.phases[key]) for key, name in PHASES[3:] if key in watch.phases]
    if timed:
        table = Table(title="where the time went", title_justify="left", box=None, padding=(0, 2), show_header=True)
        table.add_column("phase", style="dim")
        table.add_column("seconds", justify="right")
        table.add_column("share", justify="right")
        table.add_column("per step", justify="right", style="dim")
        whole = sum(seconds for _, seconds in timed) or 1.0
        for name, seconds in timed:
            per = f"{seconds / done:.3f}" if name == "denoise" and done else ""
            table.add_row(name, f"{seconds:.2f}", f"{100 * seconds / whole:.0f} %", per)
        parts.append(table)
    return Group(*parts)


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
        """The keyword arguments explorer.watching.generate takes to report its progress."""
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
        self.live.stop()


def start_warnings(watch: Any) -> list[str]:
    """Said once, before the first step: prompts too long for CLIP, random weights."""
    warnings = [f"[bold yellow]Warning:[/] {dropped}" for r in watch.tokens if (dropped := dropped_tokens(r))]
    if watch.weights == "random":
        warnings.append(
            f"[bold red]Random weights:[/] {watch.model} is a preset with no weights; the architecture is "
            "real and every shape is exact, but the image will be noise. Give --model a diffusers folder, "
            "a .safetensors file or a hub id for a real image."
        )
    return warnings
