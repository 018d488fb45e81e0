"""A cache of trace records, so that exploring again costs no torch import.

An entry is served only when everything that could change the record is the same: the component's
config, the weight files' sizes and modification times (when the model has weights), the inputs
(sizes, batch, prompts), the options, and the versions of torch, diffusers, transformers and
sd-explorer (read from the installed packages' metadata, without importing them). The key is the
SHA-256 of all that; a different anything is a different entry, so no entry is ever stale.

It lives in the user's cache directory (`$XDG_CACHE_HOME/sd-explorer`, `~/.cache/sd-explorer` by
default; `SD_EXPLORER_CACHE_DIR` overrides). A corrupt or unreadable entry is ignored and rewritten;
a cache that cannot be written is skipped. Only meta-device traces are cached: real tensors are
what a user asks for when they want the model to run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from explorer.files import parse_json, write_atomic
from explorer.record import Trace
from explorer.versions import package_versions

FORMAT = 3  # bump when what is stored changes (2: output names; 3: SDXL's two text encoders)


def cache_dir() -> Path:
    if os.environ.get("SD_EXPLORER_CACHE_DIR"):
        return Path(os.environ["SD_EXPLORER_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sd-explorer"


def source_fingerprint(source: Any, component: str, allow_pickle: bool) -> dict[str, Any]:
    """What identifies the architecture and, when there are weights, the files holding them."""
    from explorer.loading import component_config, weight_files

    from explorer.loading import has_second_text_encoder

    found: dict[str, Any] = {"kind": source.form, "label": source.label, "config": component_config(source, component)}
    if source.has_weights and not (component == "clip_2" and source.form == "file"):
        files = weight_files(source, component, allow_pickle, required=False)  # configs alone explore too
        found["files"] = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    if component == "clip" and has_second_text_encoder(source):  # SDXL: both encoders make the record
        found["second"] = source_fingerprint(source, "clip_2", allow_pickle)
    return found


def key(**parts: Any) -> str:
    """The entry's name: a hash of every part (and of the versions and the format)."""
    text = json.dumps({**parts, "versions": package_versions(), "format": FORMAT}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(name: str) -> tuple[Trace, list[str]] | None:
    path = cache_dir() / f"{name}.json"
    try:
        data = parse_json(path.read_text())  # a deep entry is corrupt, not a RecursionError
        return Trace.from_dict(data["trace"]), list(data["notes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or corrupt: traced again, and rewritten


def store(name: str, trace: Trace, notes: list[str]) -> None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"trace": trace.to_dict(), "notes": notes}, separators=(",", ":"), ensure_ascii=False)
        write_atomic(folder / f"{name}.json", text)
    except OSError:
        pass  # a cache we cannot write is no cache, not an error
