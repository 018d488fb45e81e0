"""`explore html`: write the interactive page, a folder that works from file:// with no network.

    site/en.html, zh.html   the page in English and in Chinese, with page.css and page.js (plain
                      JavaScript), from explorer/views/assets; the switch in each leads to the other
    site/index.html   the page in the language asked for (--lang), as en.html or zh.html
    site/data.js      the records, and the page's words in both languages (explorer.views.strings)
    site/figures-en.js, figures-zh.js   one Graphviz SVG per block that has something inside, per language
    site/run/         with --run: the latent previews of that generation
    site/experiment/  with --experiment: the two runs' previews and images (baseline/, edited/)
    site/sweep/       with --sweep: the baseline's image and one image per module edited

Everything is built in a temporary folder beside the target and moved into place at the end, so
a failure leaves nothing half-written.
"""

from __future__ import annotations

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
    """The generation record of an `explore generate` output folder, checked (generation@1 to @4)."""
    from explorer.runs import read_record

    try:
        return read_record(folder)
    except ExplorerError as exc:
        raise ExplorerError(f"--run: {exc}") from None


def _svg(dot: str) -> str:
    from explorer.diagrams import Diagram

    return Diagram("view", dot).render("svg").decode()


def _dot(scene, lang: str) -> str:
    """The DOT text of a figure in `lang` (its legend, its title and the words it adds)."""
    from explorer.views.graph import to_dot

    return to_dot(scene, lang=lang)


def build(
    folder: Path,
    traces: dict[str, Trace],
    run_folder: Path | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    diff=None,
    experiment=None,
    sweep=None,
    lang: str = "en",
    live: dict | None = None,
) -> Path:
    """Write the page for `traces` (unet, vae, clip; with FLOPs) into `folder`; with `diff` (an
    explorer.compare.ModelDiff whose B is the page's model) a Diff tab too; with `experiment` (an
    explorer.Experiment) an Experiment tab and the U coloured by what changed at each step; with
    `sweep` (an explorer.Sweep) the U coloured by each module's effect. The page is written in each
    language (en.html, zh.html), each a click away from the other; index.html is the one in `lang`.
    `live`: the live page's part too, for `explore serve` (explorer.server serves the folder): what its
    settings offer, {"schedulers": names, "scheduler": the model's own}."""
    from explorer.diagrams import check_writable
    from explorer.views.format import node_id
    from explorer.views.page import (ASSETS, LIVE_ASSETS, asset, diff_data, figures_script, html_page, page_data,
                                     page_words, to_script)
    from explorer.views.strings import LANGS

    if lang not in LANGS:
        raise ExplorerError(f"The page speaks {' or '.join(LANGS)}, not {lang!r}.")
    run = read_run(run_folder) if run_folder is not None else None
    check_writable(folder.parent if not folder.exists() else folder)
    if folder.exists() and not folder.is_dir():
        raise ExplorerError(f"{folder} is a file: give a folder for the page.")

    keys = {name: {node_id(n): n.path for n in trace.nodes} for name, trace in traces.items()}
    figures = _figures(traces, keys, diff, progress)

    def write(staging: Path) -> None:
        run_data = _copy_run(run, run_folder, staging / "run") if run is not None else None
        with_view = {name: set(figures[lang]["views"][name]) for name in traces}
        data = page_data(traces, with_view, run_data, diff and diff_data(diff))
        data["experiment"] = _experiment_page(experiment, staging / "experiment") if experiment is not None else None
        data["sweep"] = _sweep_page(sweep, staging / "sweep") if sweep is not None else None
        data |= page_words(data, lang) | {"live": live or False}
        (staging / "data.js").write_text(to_script(data), encoding="utf-8")
        for language in LANGS:
            (staging / f"figures-{language}.js").write_text(figures_script(figures[language]), encoding="utf-8")
            (staging / f"{language}.html").write_text(html_page(language, data["model"], bool(live)), encoding="utf-8")
        (staging / "index.html").write_text(html_page(lang, data["model"], bool(live)), encoding="utf-8")
        for name in ASSETS + (LIVE_ASSETS if live else ()):
            (staging / name).write_text(asset(name), encoding="utf-8")

    _publish(folder, write)
    return folder / "index.html"


def _figures(traces: dict[str, Trace], keys: dict[str, dict[str, str]], diff, progress) -> dict[str, dict]:
    """Every figure of the page, in each language: the pipeline, one per block that has something
    inside, and with `diff` each component's figure coloured by what changed (B's boxes carry their
    keys, so a click opens the block in B's own tab). A DOT text is drawn once, whatever the
    languages that share it."""
    from explorer.views.diff import diff_scene
    from explorer.views.figures import pipeline_scene
    from explorer.views.format import node_id
    from explorer.views.graph import scene
    from explorer.views.page import tag_svg, viewable
    from explorer.views.strings import LANGS

    scenes = []  # (what, component, key, scene)
    for name, trace in traces.items():
        for node in viewable(trace):
            title = f"{node.type} · {node.path or name}"  # the page has its own header and key
            scenes.append(("views", name, node_id(node), scene(trace, node.path or None, 1, title=title)))
    scenes.append(("pipeline", "", "", pipeline_scene(traces["unet"], traces["vae"], traces["clip"])))
    for d in diff.components if diff is not None else ():
        scenes.append(("diff", d.component, "", diff_scene(d, diff.a, diff.b)))
    dots = {(lang, *job[:3]): _dot(job[3], lang) for lang in LANGS for job in scenes}
    svgs = _render(list(dict.fromkeys(dots.values())), progress)
    boxes = {box: {"component": component, "path": ""} for box, component in PIPELINE_TARGETS.items()}
    figures = {lang: {"pipeline": "", "views": {name: {} for name in traces}, "diff": {}} for lang in LANGS}
    for (lang, what, name, key), dot in dots.items():
        if what == "views":
            figures[lang]["views"][name][key] = tag_svg(svgs[dot], keys[name])
        elif what == "pipeline":
            figures[lang]["pipeline"] = tag_svg(svgs[dot], {}, boxes)
        else:
            figures[lang]["diff"][name] = tag_svg(svgs[dot], keys.get(name, {}))
    return figures


def _render(dots: list[str], progress: Callable[[int, int], None]) -> dict[str, str]:
    """DOT text -> SVG, for each of `dots`, Graphviz running in processes of its own side by side."""
    svgs = {}
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for dot, svg in zip(dots, pool.map(_svg, dots)):
            svgs[dot] = svg
            progress(len(svgs), len(dots))
    return svgs


def _publish(folder: Path, write: Callable[[Path], None]) -> None:
    """`write` fills a temporary folder beside `folder`, which then replaces it: a failure leaves nothing half-written."""
    parent = folder.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=parent))
    except OSError as exc:
        raise ExplorerError(f"{folder} cannot be written ({exc.strerror}): choose another folder.") from None
    try:
        write(staging)
        os.chmod(staging, 0o755)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


MAP_SIDE = 32  # maps larger than this are averaged down for the page (its data stays small)


def _experiment_page(experiment, target: Path) -> dict:
    """An experiment for the page: its record's summary, edits and per-step changes, and both runs
    (as --run gives one) with their images under experiment/baseline and experiment/edited."""
    from explorer.views.experiment import summary

    record = experiment.record
    target.mkdir()
    runs = {}
    for name, run in (("baseline", experiment.baseline), ("edited", experiment.edited)):
        if run is not None:
            runs[name] = _copy_run(run.record, run.folder, target / name, prefix=f"experiment/{name}")
    steps = [s for s in record.get("steps", []) if isinstance(s, dict)]
    blocks = [b for b in record.get("blocks", []) if isinstance(b, str)]
    return {
        "summary": summary(record),
        "settings": record.get("settings", {}),
        "edits": [{"text": e.get("text", ""), "kind": e.get("kind", "")} for e in record.get("edits", []) if isinstance(e, dict)],
        "image": record.get("image"),
        "judge": record.get("judge"),
        "entered": record.get("entered"),
        "x0": [s.get("x0") for s in steps],
        "change": {b: [(s.get("blocks") or {}).get(b, 0.0) for s in steps] for b in blocks},
        "runs": runs,
    }


def _sweep_page(sweep, target: Path) -> dict:
    """A sweep for the page: per module its place, its effect and its image (copied under sweep/),
    and the baseline's image. File names are made here from positions, never taken from the record."""
    from explorer.views.experiment import judged

    target.mkdir()
    baseline = "sweep/baseline.png" if _copy_to(sweep.baseline.folder / "image.png", target / "baseline.png") else None
    modules = []
    for k, m in enumerate(sweep.modules):
        image = f"sweep/{k:02d}.png" if _copy_to(sweep.folder / f"images/{k:02d}.png", target / f"{k:02d}.png") else None
        modules.append({key: m.get(key) for key in ("path", "type", "level", "size", "change", "changed_pixels")}
                       | {"text": (m.get("edit") or {}).get("text", ""), "image": image, "judged": judged(m.get("judge"))})
    s = sweep.record.get("settings", {})
    return {"settings": s, "edit": sweep.record.get("edit"), "factor": sweep.record.get("factor"), "baseline": baseline,
            "modules": modules, "skipped": sweep.record.get("skipped", [])}


def _copy_to(source: Path, target: Path) -> bool:
    """Copy one file, when it is a plain file and not a link."""
    if source.is_symlink() or not source.is_file():
        return False
    shutil.copy(source, target)
    return True


def _copy_run(run: dict, run_folder: Path, target: Path, prefix: str = "run") -> dict:
    """The run's record for the page, and its images copied beside it (a generation@3 or later
    step's previews cut apart, one file each, as earlier runs kept them); the page finds them under
    `prefix`. File names are made from step positions here, never taken from the record."""
    from explorer.runs import GUIDANCE_PARTS, TILES, preview_file, preview_tiles, single_preview_file

    target.mkdir(parents=True)
    steps = [s for s in run.get("steps", []) if isinstance(s, dict)]
    tiles = preview_tiles(run)
    previews, guidance = {}, {}
    for k in range(len(steps)):
        names = {part: single_preview_file(k, part) for part in TILES}  # on the page: one file each
        if tiles is None:
            copied = [part for part, relative in names.items() if _copy(run_folder, relative, target)]
        else:
            copied = _cut(run_folder, preview_file(k), tiles, {p: target / names[p] for p in names if p in tiles})
        if "latent" in copied:
            previews[k] = f"{prefix}/{names['latent']}"
        if parts := {p: f"{prefix}/{names[p]}" for p in GUIDANCE_PARTS if p in copied}:
            guidance[k] = parts
    return {
        "image": f"{prefix}/image.png" if _copy(run_folder, "image.png", target) else None,
        "settings": run.get("settings", {}),
        "tokens": run.get("tokens", []),
        "steps": [{key: s.get(key) for key in ("index", "timestep", "seconds", "shapes", "latent_stats")} for s in steps],
        "status": run.get("status", ""),
        "unet_calls": run.get("unet_calls", ""),
        "previews": previews,
        "guidance": guidance,
        "blocks": blocks_by_path(steps),
        "maps": page_maps(run, run_folder, len(steps)),
    }


def _inside(run_folder: Path, relative: str) -> Path | None:
    """One of the run's files; None for a link, or anything that is not a file inside the run folder
    (a run folder from elsewhere must not make the page carry other files)."""
    source = run_folder / relative
    if source.is_symlink() or not source.is_file() or not source.resolve().is_relative_to(run_folder.resolve()):
        return None
    return source


def _copy(run_folder: Path, relative: str, target: Path) -> bool:
    """Copy one of the run's files (`_inside`) to the same place under `target`."""
    source = _inside(run_folder, relative)
    if source is None:
        return False
    (target / relative).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target / relative)
    return True


def _cut(run_folder: Path, relative: str, tiles: list[str], paths: dict[str, Path]) -> list[str]:
    """A step's previews, side by side in one of the run's files (`_inside`), cut apart and saved
    at `paths` (tile name -> file); returns the names saved (none when the file is missing or not
    an image)."""
    from PIL import Image, UnidentifiedImageError

    from explorer.runs import cut_tiles

    source = _inside(run_folder, relative)
    if source is None:
        return []
    try:
        with Image.open(source) as strip:
            cut = cut_tiles(strip.convert("RGB"), tiles)
    except (OSError, UnidentifiedImageError, ValueError):
        return []
    for name, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        cut[name].save(path)
    return list(paths)


def blocks_by_path(steps: list[dict]) -> dict[str, dict[str, list]]:
    """Block activity for the page: path -> statistic -> one value per step (None where missing)."""
    paths = list(dict.fromkeys(p for s in steps for p in (s.get("blocks") or {})))
    return {
        path: {stat: [((s.get("blocks") or {}).get(path) or {}).get(stat) for s in steps] for stat in ("mean", "std", "abs")}
        for path in paths
    }


def page_maps(run: dict, run_folder: Path, steps: int) -> dict | None:
    """The cross-attention maps for the page: per step and layer, 8-bit values (base64) of at most
    MAP_SIDE x MAP_SIDE, and each token's scale."""
    import base64

    from explorer.maps import quantize, rounded_lists, word_spans
    from explorer.runs import Run

    r = Run(run_folder, run)
    if not r.has_maps or not steps:
        return None
    data = []
    for k in range(steps):
        per_layer = []
        for maps in r.maps(k):
            values, scales = quantize(_shrink(maps))
            per_layer.append({"b64": base64.b64encode(values.tobytes()).decode(), "scales": rounded_lists(scales, 8),
                              "height": int(values.shape[1]), "width": int(values.shape[2])})
        data.append(per_layer)
    return {"tokens": r.map_tokens, "layers": r.map_layers, "words": word_spans(r.map_tokens), "steps": data}


def _shrink(maps):
    """(tokens, h, w) averaged down so that no side exceeds MAP_SIDE."""
    factor = max(1, -(-max(maps.shape[1:]) // MAP_SIDE))
    if factor == 1:
        return maps
    t, h, w = maps.shape
    return maps[:, : h - h % factor, : w - w % factor].reshape(t, h // factor, factor, w // factor, factor).mean(axis=(2, 4))
