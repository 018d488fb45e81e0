"""Cross-attention maps on disk, and how they add up to one map per word.

While a watched generation runs, every cross-attention layer's softmax weights (the conditional
half of the batch, averaged over heads) are kept for the prompt's real tokens, plus one row for all
padding tokens together, reshaped to the layer's feature map: an array (tokens, h, w) per layer.
A run keeps every step's maps in one file, `maps.bin`, each step's appended as it ends (one file a
run, not a file a step: creating a file costs more than a micro step's maps): each token's maximum
in each layer, then every layer's maps side by side as 8-bit values scaled to those maxima; deflated
when a step's maps are large (a 50-step SD1.5 run at 512 px with a 10-token prompt: about 12 MB).
The record says where each step's maps are. Runs recorded before (generation@1 to @3) hold one
`.npz` a step; both are read the same.

`aggregate` sums them the way DAAM (Tang et al., 2022) does: each layer's map upsampled to the
latent's size, summed over layers and steps (heads were averaged when recorded), normalized to sum
to 1. Words made of several tokens add their tokens' maps.

numpy and PIL only: reading a run needs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from explorer.errors import ExplorerError

START, END = "<|startoftext|>", "<|endoftext|>"


def quantize(maps) -> tuple[Any, Any]:
    """(tokens, h, w) floats -> 8-bit values scaled to each token's maximum, and those maxima."""
    import numpy as np

    maps = np.asarray(maps, dtype=np.float32)
    values, scales = quantize_columns(maps.reshape(len(maps), -1), [maps[0].size])
    return values.reshape(maps.shape), scales[:, 0]


def rounded_lists(values, places: int) -> list:
    """float32 numbers (maps, their scales) as nested lists for JSON, rounded in float64: 0.000103,
    not float32's 0.00010299999848939478."""
    import numpy as np

    return np.asarray(values, dtype=np.float64).round(places).tolist()


def quantize_columns(maps, widths: Sequence[int]) -> tuple[Any, Any]:
    """(tokens, Σ widths) floats, layers side by side -> 8-bit values scaled to each token's maximum
    in each layer, and those maxima (tokens, layers): a few numpy operations for every layer at once."""
    import numpy as np

    starts = np.cumsum([0, *widths[:-1]])
    scales = np.maximum.reduceat(maps, starts, axis=1).clip(min=1e-12)  # (tokens, layers)
    values = np.rint(maps * np.repeat(255 / scales, widths, axis=1)).clip(0, 255).astype(np.uint8)
    return values, scales.astype(np.float32)


def unquantize_columns(values, scales, shapes: Sequence[tuple[int, int, int]]) -> list[Any]:
    """`quantize_columns` undone: 8-bit values (tokens, Σ h·w) and their maxima (tokens, layers) ->
    one float32 array (t, h, w) per layer of `shapes` (its first t tokens)."""
    import numpy as np

    found, start = [], 0
    for k, (t, h, w) in enumerate(shapes):
        layer = values[:t, start : start + h * w].reshape(t, h, w)
        found.append(layer.astype(np.float32) / 255 * scales[:t, k, None, None])
        start += h * w
    return found


COMPRESS_FROM = 1 << 18  # bytes of 8-bit maps per step: smaller steps are stored as they are


def maps_chunk(layers: Sequence[Any]) -> tuple[bytes, bool]:
    """One step's maps, one array (tokens, h, w) per layer, as the bytes the run's maps file gets:
    `scales` (tokens, layers) float32, each token's maximum in each layer, then `values`
    (tokens, Σ h·w) uint8, the layers side by side. Deflated (zlib) from 256 kB of values a step
    (SD1.5 at 512 px), where it saves disk and its time is small beside the step's; a micro step's
    maps (a few kB) are stored as they are. Returns the bytes and whether they are deflated."""
    import zlib

    import numpy as np

    side_by_side = np.concatenate([np.asarray(m, dtype=np.float32).reshape(len(m), -1) for m in layers], axis=1)
    values, scales = quantize_columns(side_by_side, [m.shape[1] * m.shape[2] for m in layers])
    chunk = scales.astype("<f4").tobytes() + values.tobytes()
    if values.nbytes >= COMPRESS_FROM:
        return zlib.compress(chunk), True
    return chunk, False


def read_chunk(path: Path, where: Any, shapes: Sequence[tuple[int, int]], tokens: int) -> list[Any]:
    """One step's maps back from the run's maps file, as float32 arrays (tokens, h, w), one per
    layer of `shapes` ((h, w) each): `where` is the step's place in it as the record says
    ({"at": offset, "bytes": length, "zlib": deflated}). One sentence when it is not there."""
    import zlib

    import numpy as np

    try:
        widths = [h * w for h, w in shapes]
        size = tokens * len(shapes) * 4 + tokens * sum(widths)  # the scales, then the values
        at, length, deflated = where["at"], where["bytes"], where["zlib"]
        if not (isinstance(at, int) and isinstance(length, int) and 0 <= at and 0 < length <= 2 * size + 1024):
            raise ValueError("a place outside the file")
        with open(path, "rb") as f:
            f.seek(at)
            chunk = f.read(length)
        if deflated:
            chunk = zlib.decompressobj().decompress(chunk, size)
        if len(chunk) != size:
            raise ValueError(f"{len(chunk)} bytes where {size} were written")
        scales = np.frombuffer(chunk, "<f4", tokens * len(shapes)).reshape(tokens, len(shapes))
        values = np.frombuffer(chunk, np.uint8, offset=scales.nbytes).reshape(tokens, -1)
        return unquantize_columns(values, scales, [(tokens, h, w) for h, w in shapes])
    except (OSError, TypeError, KeyError, ValueError, zlib.error) as exc:
        raise ExplorerError(f"{path} is missing or damaged ({exc.__class__.__name__}): the run's maps cannot be read.") from None


def read_maps(path: Path, layers: int, tokens: int) -> list[Any]:
    """One step's maps of a run recorded before generation@4 (one `.npz` a step) back as float32
    arrays; one sentence when the file is missing or damaged. Reads both of its layouts:
    `values`/`scales`/`shapes`, and the earlier `L<k>`/`S<k>` per layer."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as data:
            if "values" in data:
                found = unquantize_columns(data["values"], data["scales"], data["shapes"][:layers].tolist())
            else:
                found = [data[f"L{k}"].astype(np.float32) / 255 * data[f"S{k}"][:, None, None] for k in range(layers)]
    except (OSError, KeyError, ValueError, IndexError) as exc:
        raise ExplorerError(f"{path} is missing or damaged ({exc.__class__.__name__}): the run's maps cannot be read.") from None
    if len(found) != layers or any(m.ndim != 3 or len(m) != tokens for m in found):
        raise ExplorerError(f"{path} does not hold one map per token of the prompt: the run's maps are damaged.")
    return found


def upsample(image, size: tuple[int, int]):
    """A float map (h, w) resized to `size` (H, W), bilinear."""
    import numpy as np
    from PIL import Image

    height, width = size
    if image.shape == (height, width):
        return image
    return np.asarray(Image.fromarray(image, mode="F").resize((width, height), Image.BILINEAR))


def aggregate(steps: Iterable[list[Any]], layers: list[int], rows: list[int], size: tuple[int, int]):
    """The sum over steps, layers and `rows` of the maps, each upsampled to `size`, normalized."""
    import numpy as np

    total = np.zeros(size, dtype=np.float64)
    for maps in steps:
        for k in layers:
            total += upsample(maps[k][rows].sum(axis=0).astype(np.float32), size)
    whole = total.sum()
    return (total / whole if whole > 0 else total).astype(np.float32)


# -- tokens and words ----------------------------------------------------------------------------------


def word_spans(tokens: Sequence[str]) -> list[tuple[str, list[int]]]:
    """The words the tokens spell, with their rows: BPE tokens end a word with `</w>`; special
    tokens and the padding row are words of their own."""
    spans: list[tuple[str, list[int]]] = []
    text, rows = "", []
    for i, token in enumerate(tokens):
        if token.startswith("<|") or token.startswith("<pad"):
            spans.append((token, [i]))
            continue
        text += token.replace("</w>", "")
        rows.append(i)
        if token.endswith("</w>"):
            spans.append((text, rows))
            text, rows = "", []
    if rows:
        spans.append((text, rows))
    return spans


def words_of(tokens: Sequence[str]) -> list[str]:
    """The prompt's words, without the start, end and padding rows."""
    return [word for word, _ in word_spans(tokens) if not word.startswith("<")]


def token_rows(tokens: Sequence[str], word: str) -> list[int]:
    """The rows of every occurrence of `word` (case-insensitive), or of a special token named as
    such (`<|startoftext|>`, `<|endoftext|>`, `<padding>`)."""
    wanted = word.strip().lower()
    return [row for text, rows in word_spans(tokens) if text.lower() == wanted for row in rows]
