"""Writing files whole or not at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename it into place: a reader (or a crash,
    or Ctrl-C) never sees half a file. Raises OSError when the folder cannot be written.

    The temporary file is named after this process and thread, so two writers never share one; it
    is created as any file is (permissions from the umask)."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        data = content if isinstance(content, bytes) else content.encode("utf-8")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_file(path: Path, content: str | bytes) -> None:
    """`write_atomic`, or one sentence (ExplorerError) saying why `path` cannot be written."""
    from explorer.errors import ExplorerError

    try:
        write_atomic(path, content)
    except OSError as exc:
        raise ExplorerError(f"{path} cannot be written ({exc.strerror}): choose another place.") from None


def check_writable(folder: Path, what: str) -> None:
    """Fail early, before any work, when `folder` cannot become a folder we can write `what` in."""
    from explorer.errors import ExplorerError

    if folder.exists() and not folder.is_dir():
        raise ExplorerError(f"{folder} is a file, not a folder: choose where {what} should go.")
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ExplorerError(f"{folder} cannot be written (no permission): choose another folder for {what}.")


def make_folder(folder: Path) -> None:
    """Create `folder` (and its parents), or say in one sentence why it cannot be."""
    from explorer.errors import ExplorerError

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExplorerError(f"{folder} cannot be created ({exc.strerror}): choose another folder.") from None


MAX_JSON_DEPTH = 256  # nesting levels; a real config or record has fewer than ten


class TooDeep(ValueError):
    """A JSON value nested deeper than the reader allows."""


def nesting(value) -> int:
    """How deeply lists and objects nest in a JSON value (a number or a string: 0), counted
    without recursion, so that no value is too deep to measure."""
    deepest, stack = 0, [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def parse_json(text: str, max_depth: int = MAX_JSON_DEPTH):
    """`json.loads`, refusing (ValueError) a value nested deeper than `max_depth` levels: the code
    that walks a record or a config must never run out of stack on one."""
    import json

    try:
        value = json.loads(text)
    except RecursionError:  # deeper than Python's own stack allows
        raise TooDeep(f"nested deeper than {max_depth} levels") from None
    if nesting(value) > max_depth:
        raise TooDeep(f"nested deeper than {max_depth} levels")
    return value


def read_json_object(path: Path, what: str = "JSON config") -> dict:
    """A JSON file that must hold an object (a config, an index): its dict, or one sentence saying
    what is wrong with it. Deeply nested values are refused like any other broken file."""
    from explorer.errors import ExplorerError

    try:
        value = parse_json(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, TooDeep):
            reason = str(exc)
        else:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ExplorerError(f"{path} is not a readable {what} ({reason}).") from None
    if not isinstance(value, dict):
        raise ExplorerError(f"{path} is not a {what}: it holds a JSON {type(value).__name__}, not an object.")
    return value
