"""The generation record (schema `sd-explorer/generation@4`) while it is made: plain data, written
as trace.json after the run starts, at most once a second while it goes, and when it ends."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from explorer.files import write_atomic
from explorer.runs import MAPS, RECORD, SCHEMA, decoded_file, preview_file

@dataclass
class Step:
    """One scheduler step: one UNet call."""

    index: int
    timestep: float
    seconds: float
    shapes: dict[str, list[int]]
    latent_stats: dict[str, float]
    blocks: dict[str, dict[str, float]] = field(default_factory=dict)  # path -> mean, std, abs
    skips: dict[str, float] = field(default_factory=dict)  # skip tensor -> RMS
    maps: dict[str, Any] | None = None  # where in maps.bin its cross-attention maps are: at, bytes, zlib


@dataclass
class Recording:
    """The generation record (schema generation@4) as it grows: plain data, written as trace.json
    after every step. The static traces are serialized once (`components_json`)."""

    out: Path
    settings: dict[str, Any] = field(default_factory=dict)
    tokens: list[dict] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    total_steps: int = 0  # the scheduler's timesteps: PNDM runs one more than asked
    unet_calls: str = ""  # why the UNet ran more often than the steps asked, when it did
    steps: list[Step] = field(default_factory=list)
    status: str = "running"  # running, done, interrupted, failed
    error: str = ""
    blocks: list[str] = field(default_factory=list)  # the watched modules
    tiles: list[str] = field(default_factory=list)  # the previews in each step's file, left to right
    attention: dict | None = None  # the maps' layers and token rows, with --attention-maps
    warnings: list[str] = field(default_factory=list)
    maps_skipped: str = ""  # why the maps asked for were not taken
    compare: dict | None = None
    components_json: str = "{}"
    written: float = 0.0  # when trace.json was last written (perf_counter)

    WRITE_EVERY = 1.0  # seconds: a long run rewrites its growing trace.json at most this often

    def write_soon(self) -> None:
        """After a step: write unless the last write was under WRITE_EVERY seconds ago (a 1000-step
        run would otherwise rewrite a growing file a thousand times). The record is written when the
        run starts, and finish() always writes."""
        if time.perf_counter() - self.written >= self.WRITE_EVERY:
            self.write()

    def fields(self) -> dict[str, Any]:
        found = {
            "schema": SCHEMA,
            "status": self.status,
            "settings": self.settings,
            "tokens": self.tokens,
            "phases": self.phases,
            "total_steps": self.total_steps or self.settings.get("steps", 0),
            "steps": [asdict(s) for s in self.steps],
            "blocks": self.blocks,
            "attention": self.attention,
            "files": {
                "image": "image.png",
                "latents": "latents.png",
                "previews": preview_file(0).replace("000", "NNN"),
                "tiles": self.tiles,
                "guidance": None,  # generation@1 and @2 kept each preview in its own file
                "maps": MAPS if self.attention else None,
                "decoded": decoded_file(0).replace("000", "NNN") if self.settings.get("decode_every") else None,
            },
            "compare": self.compare,
        }
        for key in ("unet_calls", "error", "warnings", "maps_skipped"):
            if getattr(self, key):
                found[key] = getattr(self, key)
        return found

    def write(self) -> None:
        """trace.json, whole: every field as JSON, the static traces as serialized once."""
        parts = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self.fields().items()]
        parts.append(f' "components": {self.components_json}')
        write_atomic(self.out / RECORD, "{\n" + ",\n".join(parts) + "\n}\n")
        self.written = time.perf_counter()
