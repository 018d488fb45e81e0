"""A run: the record of one watched generation (schema `sd-explorer/generation@4`), and the files
beside it, read back as plain data.

A run folder holds:

    trace.json              the record: settings, tokens, phases, every step, the static traces
    image.png               the image (when the run finished)
    latents.png             the latent after every step, side by side
    previews/NNN.png        step NNN's previews side by side, mapped to RGB one pixel per latent
                            position: the latent after the step, the unconditional, conditional
                            and guided noise predictions, and the predicted clean image x0 (the
                            record's files.tiles names them, left to right; `run.x0(5)` and the
                            others cut them out and show them 128 px wide)
    decoded/NNN.png         x0 decoded by the real VAE (every N steps, with --decode-every N)
    maps.bin                every step's cross-attention maps, one after the other (with
                            --attention-maps; each step's record says where its maps are)

Runs recorded before are read the same: generation@1 to @3 hold a step's maps in `maps/NNN.npz`, and
@1 and @2 each preview in its own file, `previews/NNN.png` the latent and `guidance/NNN-PART.png` the
others.

File names are made from step numbers here, never read from the record: a hostile trace.json
cannot point outside its folder. `load_run(folder)` reads it all back (generation@1 to @3 too)
and answers the questions a learner asks: `run.attention("circle")`, `run.blocks[path]["std"]`,
`run.x0(5)`, `run.noise("cond", 5)`.

Nothing heavy is imported here: numpy and PIL only when maps or images are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError, OptionError
from explorer.files import MAX_JSON_DEPTH, TooDeep, parse_json

SCHEMA = "sd-explorer/generation@4"
READABLE = ("sd-explorer/generation@1", "sd-explorer/generation@2", "sd-explorer/generation@3", SCHEMA)
RECORD = "trace.json"  # the record's file name in a run folder (kept from the first version)
GUIDANCE_PARTS = ("uncond", "cond", "guided", "x0")
TILES = ("latent", *GUIDANCE_PARTS)  # a step's previews, left to right (those recorded)
PADDING = "<padding>"  # the maps' last row: the attention of all padding tokens together


def preview_file(step: int) -> str:
    """Step `step`'s previews side by side (generation@1 and @2: the latent's alone)."""
    return f"previews/{step:03d}.png"


def guidance_file(step: int, part: str) -> str:
    """Where generation@1 and @2 runs kept each noise prediction's and x0's preview."""
    return f"guidance/{step:03d}-{part}.png"


def single_preview_file(step: int, part: str) -> str:
    """Where generation@1 and @2 runs kept the preview `part` (a TILES name) of step `step`, each in
    its own file: the latent in previews/, the others in guidance/."""
    return preview_file(step) if part == "latent" else guidance_file(step, part)


def preview_tiles(record: dict) -> list[str] | None:
    """The previews a generation@3 or later run laid side by side in each step's file, left to right (None
    for earlier runs, which kept each in its own file)."""
    files = record.get("files")
    tiles = files.get("tiles") if isinstance(files, dict) else None
    if not isinstance(tiles, list) or not tiles or not all(isinstance(t, str) for t in tiles):
        return None
    return tiles


def cut_tiles(strip, names: list[str]) -> dict:
    """A step's previews, side by side in one image, cut apart: name -> PIL image."""
    width = strip.width // len(names)
    if width == 0:
        raise ValueError(f"{strip.width} px cannot hold {len(names)} previews side by side")
    return {name: strip.crop((k * width, 0, (k + 1) * width, strip.height)) for k, name in enumerate(names)}


def decoded_file(step: int) -> str:
    return f"decoded/{step:03d}.png"


MAPS = "maps.bin"  # every step's cross-attention maps (generation@4)


def maps_file(step: int) -> str:
    """Where generation@1 to @3 runs kept step `step`'s cross-attention maps."""
    return f"maps/{step:03d}.npz"


def read_record(folder: Path) -> dict:
    """The record of a run folder, checked: one sentence when it is not one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExplorerError(f"{folder} is not a folder: give the --out folder of an `explore generate` run.")
    try:
        record = parse_json((folder / RECORD).read_text(encoding="utf-8"))
    except TooDeep:
        raise ExplorerError(
            f"{folder / RECORD} nests deeper than {MAX_JSON_DEPTH} levels, which no generation record does."
        ) from None
    except (OSError, ValueError):
        raise ExplorerError(f"{folder} has no valid {RECORD}: give the --out folder of an `explore generate` run.") from None
    if not isinstance(record, dict) or record.get("schema") not in READABLE:
        raise ExplorerError(f"{folder / RECORD} is not a generation record (schema {SCHEMA}).")
    if not isinstance(record.get("steps", []), list) or not isinstance(record.get("settings", {}), dict):
        raise ExplorerError(f"{folder / RECORD} is damaged: its steps or settings are not what a generation record holds.")
    return record


@dataclass
class Run:
    """A watched generation, read back from its folder."""

    folder: Path
    record: dict
    _maps: dict[int, Any] = field(default_factory=dict, repr=False)  # step -> its maps, once read

    # -- what was asked and what ran -------------------------------------------------------------------

    @property
    def settings(self) -> dict:
        return self.record.get("settings", {})

    @property
    def steps(self) -> list[dict]:
        return self.record.get("steps", [])

    @property
    def prompt(self) -> str:
        return self.settings.get("prompt", "")

    @property
    def blocks(self) -> dict[str, dict[str, list[float]]]:
        """Block activity: path -> statistic ("mean", "std", "abs"; "adds" where the run was watched with
        adds) -> one value per step."""
        found: dict[str, dict[str, list[float]]] = {}
        for step in self.steps:
            for path, stats in (step.get("blocks") or {}).items():
                for name, value in stats.items():
                    found.setdefault(path, {}).setdefault(name, []).append(value)
        return found

    @property
    def skips(self) -> dict[str, list[float]]:
        """Skip tensors handed from the down path to the up path: name -> RMS per step."""
        found: dict[str, list[float]] = {}
        for step in self.steps:
            for name, value in (step.get("skips") or {}).items():
                found.setdefault(name, []).append(value)
        return found

    # -- images ---------------------------------------------------------------------------------------

    def _image(self, relative: str, what: str):
        from PIL import Image

        path = self.folder / relative
        if not path.is_file():
            raise ExplorerError(f"{self.folder} has no {what} ({relative}).")
        with Image.open(path) as image:
            return image.convert("RGB")

    def _preview(self, step: int, part: str, what: str):
        """One of a step's latent previews (a TILES name), shown 128 px wide (runs record them at
        the latent's own size)."""
        from explorer.previews import upscaled

        tiles = preview_tiles(self.record)
        if tiles is None:  # generation@1 and @2: one file each
            return upscaled(self._image(single_preview_file(step, part), what))
        if part not in tiles:
            raise ExplorerError(f"{self.folder} has no {what}: this run recorded {', '.join(tiles)}.")
        try:
            return upscaled(cut_tiles(self._image(preview_file(step), what), tiles)[part])
        except ValueError as exc:
            raise ExplorerError(f"{self.folder / preview_file(step)} is damaged ({exc}).") from None

    def _step(self, step: int) -> int:
        if not self.steps:
            raise ExplorerError(f"{self.folder} recorded no step.")
        if not 0 <= step < len(self.steps):
            raise OptionError("step", f"must be between 0 and {len(self.steps) - 1} for this run, got {step}.")
        return step

    def image(self):
        return self._image("image.png", "image: the run did not finish")

    def latent(self, step: int):
        """The latent after `step`, mapped to RGB."""
        return self._preview(self._step(step), "latent", f"preview of step {step}")

    def x0(self, step: int):
        """The clean image the model predicts at `step` (latent mapped to RGB)."""
        return self._preview(self._step(step), "x0", f"x0 preview of step {step}")

    def noise(self, part: str, step: int):
        """The noise prediction at `step`: "uncond", "cond" or "guided"."""
        if part not in GUIDANCE_PARTS[:3]:
            raise OptionError("part", f"must be one of uncond, cond, guided, got {part!r}.")
        return self._preview(self._step(step), part, f"{part} preview of step {step}")

    def decoded(self, step: int):
        """x0 decoded by the VAE (runs made with --decode-every)."""
        return self._image(decoded_file(self._step(step)), f"decoded x0 of step {step} (use --decode-every)")

    # -- cross-attention maps ---------------------------------------------------------------------------

    @property
    def has_maps(self) -> bool:
        return bool(self.record.get("attention"))

    @property
    def map_tokens(self) -> list[str]:
        """The rows of every map: the prompt's tokens (start, words, end), then all padding together."""
        return list((self.record.get("attention") or {}).get("tokens", []))

    @property
    def map_layers(self) -> list[dict]:
        """Every cross-attention layer: its path and feature-map height and width."""
        return list((self.record.get("attention") or {}).get("layers", []))

    def words(self) -> list[str]:
        """The prompt's words, as its tokens spell them."""
        from explorer.maps import words_of

        return words_of(self.map_tokens)

    def maps(self, step: int) -> list[Any]:
        """Step `step`'s maps: one float array (tokens, h, w) per cross-attention layer."""
        from explorer.maps import read_chunk, read_maps

        self._needs_maps()
        step = self._step(step)
        if step not in self._maps:
            where, tokens = self.steps[step].get("maps"), len(self.map_tokens)
            if where is None:  # generation@1 to @3: one file a step
                self._maps[step] = read_maps(self.folder / maps_file(step), len(self.map_layers), tokens)
            else:
                shapes = [(layer.get("height"), layer.get("width")) for layer in self.map_layers]
                self._maps[step] = read_chunk(self.folder / MAPS, where, shapes, tokens)
        return self._maps[step]

    def _needs_maps(self) -> None:
        skipped = self.record.get("maps_skipped")
        if not self.has_maps and isinstance(skipped, str) and skipped:
            raise ExplorerError(f"{self.folder} has no cross-attention maps. {skipped}")
        if not self.has_maps:
            raise ExplorerError(
                f"{self.folder} was recorded without cross-attention maps: run `explore generate` again with "
                "--attention-maps."
            )

    def attention(self, word: str, step: int | None = None, resolution: int | None = None):
        """Where `word` goes: its cross-attention, aggregated the way DAAM does (each layer's map
        upsampled to the latent's size, summed over layers, heads and steps), a numpy array
        (H, W) at the latent's size that sums to 1. `step` keeps one step, `resolution` only the
        layers working at that feature-map size (e.g. 16 for 16x16)."""
        from explorer.maps import aggregate

        self._needs_maps()
        rows = self.rows_of(word)
        steps = [self._step(step)] if step is not None else range(len(self.steps))
        layers = [k for k, layer in enumerate(self.map_layers) if resolution in (None, layer["height"], layer["width"])]
        if not layers:
            sizes = sorted({layer["height"] for layer in self.map_layers})
            raise OptionError("resolution", f"must be one of {', '.join(map(str, sizes))} for this run, got {resolution}.")
        return aggregate([self.maps(s) for s in steps], layers, rows, self.latent_size)

    def rows_of(self, word: str) -> list[int]:
        """The map rows (token positions) spelling `word`; one sentence listing the words when absent."""
        from explorer.maps import token_rows

        self._needs_maps()
        rows = token_rows(self.map_tokens, word)
        if not rows:
            raise OptionError("word", f"{word!r} is not in the prompt: its words are {', '.join(self.words())}.")
        return rows

    @property
    def latent_size(self) -> tuple[int, int]:
        shape = (self.steps[0].get("shapes", {}).get("latent_in") if self.steps else None) or [1, 4, 8, 8]
        return int(shape[-2]), int(shape[-1])


def load_run(folder: str | Path) -> Run:
    """A run folder of `explore generate` (or `explorer.watch`), read back."""
    folder = Path(folder)
    return Run(folder, read_record(folder))
