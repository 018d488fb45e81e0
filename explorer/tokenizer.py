"""CLIP tokenization, offline: the real `transformers.CLIPTokenizer` with the real SD1.5 vocabulary.

SD1.5's tokenizer is OpenAI CLIP's byte-level BPE. Its merges ship with the `openai-clip` package
(`clip/bpe_simple_vocab_16e6.txt.gz`, 1.3 MB, no torch requirement); the 49,408-entry vocabulary is
derived from the merges exactly as OpenAI's own `SimpleTokenizer` derives it: the 256 byte symbols,
the same with the end-of-word mark `</w>`, one entry per merge, then the start and end tokens.
A diffusers folder with its own `tokenizer/` uses that instead.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # OpenAI's SimpleTokenizer keeps the first 48,894 merges


def _merges_path() -> Path:
    # find_spec locates the package without importing it (importing `clip` needs torchvision).
    spec = importlib.util.find_spec("clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / MERGES_FILE
        if candidate.is_file():
            return candidate
    raise ExplorerError(
        "The CLIP vocabulary was not found: it ships with the openai-clip package; run `pip install openai-clip`."
    )


@lru_cache(maxsize=None)
def clip_tokenizer(folder: str | None = None, max_length: int = 77, pad_token: str = "<|endoftext|>"):
    """The SD1.5 CLIP tokenizer; from `folder` (a diffusers `tokenizer/` folder) when given. SD1.5
    pads with the end token; SD2.x (OpenCLIP) pads with "!" (id 0)."""
    from transformers import CLIPTokenizer

    if folder is not None:
        return CLIPTokenizer.from_pretrained(folder)
    lines = gzip.open(_merges_path()).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]  # line 0 is a version header
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())  # 256 printable stand-ins for the 256 bytes
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]  # ids 49406 and 49407
    return CLIPTokenizer(
        vocab={token: i for i, token in enumerate(vocab)},
        merges=merges,
        model_max_length=max_length,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token=pad_token,
        unk_token="<|endoftext|>",
    )


SECOND_PAD = "!"  # SDXL's second tokenizer (OpenCLIP's) pads with "!" (id 0)


def pad_token_of(source: Any, which: int = 1) -> str:
    """The token prompts are padded with: the preset's (SD2.x pads with "!"), else the end token;
    `which=2`: SDXL's second tokenizer's, from its folder when it has one."""
    if which == 2:
        folder = tokenizer_folder(source, 2)
        return _folder_pad_token(folder) if folder else SECOND_PAD
    preset = getattr(source, "preset", None)
    return preset.tokenizer.get("pad_token", "<|endoftext|>") if preset is not None else "<|endoftext|>"


def _folder_pad_token(folder: str) -> str:
    from explorer.files import read_json_object

    path = Path(folder) / "tokenizer_config.json"
    pad = read_json_object(path).get("pad_token", SECOND_PAD) if path.is_file() else SECOND_PAD
    return pad if isinstance(pad, str) else SECOND_PAD


def tokenizer_folder(source: Any, which: int = 1) -> str | None:
    """The `tokenizer/` folder (`tokenizer_2/` for which=2) of a diffusers folder source, if it has one."""
    path = getattr(source, "path", None)
    folder = Path(path) / ("tokenizer" if which == 1 else f"tokenizer_{which}") if path is not None else None
    if folder is not None and folder.is_dir() and any((folder / f).is_file() for f in ("vocab.json", "tokenizer.json")):
        return str(folder)
    return None


def tokenize(
    prompts: list[str], max_length: int = 77, folder: str | None = None, pad_token: str = "<|endoftext|>"
) -> tuple[list[list[int]], list[dict]]:
    """Token ids padded/truncated to `max_length`, and one plain record per prompt:

    `prompt`, `ids`, `tokens` (vocabulary entries; `</w>` ends a word), `length` (real tokens with
    the start and end tokens), `dropped` (what truncation cut off, as text) and `dropped_count`.
    """
    return tokenize_with(clip_tokenizer(folder, max_length, pad_token), prompts, max_length)


def tokenize_with(tok: Any, prompts: list[str], max_length: int = 77) -> tuple[list[list[int]], list[dict]]:
    """`tokenize` with a tokenizer object already made (a pipeline's own)."""
    batch = tok(prompts, padding="max_length", max_length=max_length, truncation=True)
    records = []
    for prompt, ids in zip(prompts, batch.input_ids):
        full = tok(prompt, truncation=False, verbose=False).input_ids  # [start, ..., end], no padding
        overflow = full[max_length - 1 : -1]  # what did not fit between start and end
        records.append(
            {
                "prompt": prompt,
                "ids": list(ids),
                "tokens": tok.convert_ids_to_tokens(ids),
                "length": min(len(full), max_length),
                "dropped": tok.decode(overflow) if overflow else "",
                "dropped_count": len(overflow),
            }
        )
    return [list(ids) for ids in batch.input_ids], records
