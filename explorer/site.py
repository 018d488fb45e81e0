"""`explore html`: write the interactive page, a folder that works from file:// with no network.

    site/index.html   the page, with page.css and page.js (plain JavaScript), from explorer/views/assets
    site/data.js      the records and one Graphviz SVG per block that has something inside
    site/run/         with --run: the latent previews of that generation

Everything is built in a temporary folder beside the target and moved into place at the end, so
a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from explorer.errors import ExplorerError
from explorer.record import Trace

PIPELINE_TARGETS = {"clip": "clip", "unet": "unet", "decode": "vae"}  # pipeline box -> component


def read_run(folder: Path) -> dict:
    """The generation record of an `explore generate` output folder, checked."""
    path = folder / "trace.json"
    if not folder.is_dir():
        raise ExplorerError(f"--run {folder} is not a folder: give the --out folder of an `explore generate` run.")
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ExplorerError(
            f"--run {folder} has no valid trace.json: give the --out folder of an `explore generate` run."
        ) from None
    if not isinstance(record, dict) or record.get("schema") != "sd-explorer/generation@1":
        raise ExplorerError(f"--run {folder}/trace.json is not a generation record (schema sd-explorer/generation@1).")
    return record


def _svg(dot: str) -> str:
    from explorer.diagrams import Diagram

    return Diagram("view", dot).render("svg").decode()


def build(
    folder: Path,
    traces: dict[str, Trace],
    run_folder: Path | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Path:
    """Write the page for `traces` (unet, vae, clip; with FLOPs) into `folder`."""
    from explorer.diagrams import check_writable
    from explorer.views.figures import pipeline_scene
    from explorer.views.graph import scene, to_dot
    from explorer.views.format import node_id
    from explorer.views.page import ASSETS, asset, page_data, tag_svg, to_script, viewable

    run = read_run(run_folder) if run_folder is not None else None
    check_writable(folder.parent if not folder.exists() else folder)
    if folder.exists() and not folder.is_dir():
        raise ExplorerError(f"{folder} is a file: give a folder for the page.")

    jobs = []  # (component, key, dot)
    for name, trace in traces.items():
        for node in viewable(trace):
            title = f"{node.type} · {node.path or name}"  # the page has its own header and key
            dot = to_dot(scene(trace, node.path or None, 1, title=title))
            jobs.append((name, node_id(node), dot))
    pipeline_dot = to_dot(pipeline_scene(traces["unet"], traces["vae"], traces["clip"]))

    done = 0
    views: dict[str, dict[str, str]] = {name: {} for name in traces}
    keys = {name: {node_id(n): n.path for n in trace.nodes} for name, trace in traces.items()}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:  # `dot` runs in its own processes
        for (name, key, _), svg in zip(jobs, pool.map(lambda job: _svg(job[2]), jobs)):
            views[name][key] = tag_svg(svg, keys[name])
            done += 1
            progress(done, len(jobs))
    pipeline = tag_svg(
        _svg(pipeline_dot), {}, {box: {"component": component, "path": ""} for box, component in PIPELINE_TARGETS.items()}
    )

    run_data = None
    parent = folder.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise ExplorerError(f"{folder} cannot be written ({exc.strerror}): choose another folder.") from None
    try:
        if run is not None:
            run_data = _copy_run(run, run_folder, staging / "run")
        (staging / "data.js").write_text(to_script(page_data(traces, views, pipeline, run_data)))
        for name in ASSETS:
            (staging / name).write_text(asset(name), encoding="utf-8")
        os.chmod(staging, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder / "index.html"


def _copy_run(run: dict, run_folder: Path, target: Path) -> dict:
    """The run's record for the page, and its latent previews copied beside it."""
    target.mkdir()
    previews = {}
    for step in run.get("steps", []):
        source = run_folder / "previews" / f"{step['index']:03d}.png"
        if source.is_file():
            shutil.copy(source, target / source.name)
            previews[step["index"]] = f"run/{source.name}"
    image = None
    if (run_folder / "image.png").is_file():
        shutil.copy(run_folder / "image.png", target / "image.png")
        image = "run/image.png"
    return {
        "image": image,
        "settings": run.get("settings", {}),
        "tokens": run.get("tokens", []),
        "steps": run.get("steps", []),
        "status": run.get("status", ""),
        "previews": previews,
    }
