"""The SD1.5 CLIP text encoder on the meta device, and the tokenizer: SEED_GUIDE.md part 3."""

from __future__ import annotations

import pytest
from conftest import first

import explorer
from explorer.tokenizer import tokenize

PROMPT = "a photo of an astronaut riding a horse"


def test_parameter_count_is_the_published_one(clip_trace):
    assert clip_trace.total_params == 123_060_480


def test_3_overall(clip_trace):
    assert clip_trace.inputs == {"input_ids": (2, 77)}
    assert clip_trace.nodes[0].outputs[0] == (2, 77, 768)
    layers = [n for n in clip_trace.nodes if n.type == "CLIPEncoderLayer"]
    assert len(layers) == 12
    assert all(n.inputs["hidden_states"] == (2, 77, 768) and n.outputs[0] == (2, 77, 768) for n in layers)
    norm = [n for n in clip_trace.nodes if n.type == "LayerNorm"][-1]
    assert norm.depth == 1 and norm.outputs[0] == (2, 77, 768)


def test_3_1_embeddings(clip_trace):
    emb = first(clip_trace, lambda n: n.type == "CLIPTextEmbeddings")
    assert emb.inputs["input_ids"] == (2, 77) and emb.outputs[0] == (2, 77, 768)
    token, position = [n for n in clip_trace.subtree(emb.path).nodes if n.type == "Embedding"]
    assert token.params == 49408 * 768 and token.outputs[0] == (2, 77, 768)
    assert position.params == 77 * 768
    assert position.inputs["input"] == (1, 77) and position.outputs[0] == (1, 77, 768)  # broadcast over the batch


def test_3_2_encoder_layer(clip_trace):
    layer = first(clip_trace, lambda n: n.type == "CLIPEncoderLayer")
    kids = [n.type for n in clip_trace.subtree(layer.path).nodes if n.depth == layer.depth + 1]
    assert kids == ["LayerNorm", "CLIPAttention", "Add", "LayerNorm", "CLIPMLP", "Add"]  # pre-norm, residuals
    attn = first(clip_trace.subtree(layer.path), lambda n: n.type == "CLIPAttention")
    steps = {n.name: n for n in clip_trace.subtree(attn.path).nodes if n.kind == "step"}
    assert steps["split_heads"].outputs == ((2, 12, 77, 64),) * 3  # 12 heads of 64
    assert steps["scores"].outputs == ((2, 12, 77, 77),)
    assert "causal" in steps["scores"].note
    assert steps["merge_heads"].outputs == ((2, 77, 768),)
    mlp = first(clip_trace.subtree(layer.path), lambda n: n.type == "CLIPMLP")
    fc1, act, fc2 = [n for n in clip_trace.subtree(mlp.path).nodes if n.depth == mlp.depth + 1]
    assert fc1.outputs[0] == (2, 77, 3072)
    assert act.type == "QuickGELUActivation"
    assert fc2.outputs[0] == (2, 77, 768)


def test_tokens_are_recorded_negative_prompt_first(clip_trace):
    prompts = [t["prompt"] for t in clip_trace.tokens]
    assert prompts == ["", PROMPT]


def test_tokenizer_matches_an_independent_clip_implementation():
    """instant-clip-tokenizer is a separate (Rust) implementation carrying its own copy of the vocabulary."""
    instant = pytest.importorskip("instant_clip_tokenizer")
    reference = instant.Tokenizer()
    for text in [PROMPT, "Hello, WORLD!! émoji 🤖 don't", "a cyberpunk city at night, neon, 8k, trending on artstation"]:
        record = explorer.tokenize(text)
        n = record["length"]
        assert record["ids"][1 : n - 1] == list(reference.encode(text))


def test_start_end_and_padding_to_77():
    record = explorer.tokenize(PROMPT)
    assert record["ids"][:10] == [49406, 320, 1125, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert record["tokens"][0] == "<|startoftext|>" and record["tokens"][9] == "<|endoftext|>"
    assert record["tokens"][5] == "astronaut</w>"
    assert record["length"] == 10
    assert len(record["ids"]) == 77 and record["ids"][10:] == [49407] * 67  # SD1.5 pads with the end token
    assert record["dropped_count"] == 0


def test_long_prompt_is_truncated_and_says_what_was_dropped():
    prompt = "a red apple, " * 30 + "and a purple elephant"  # 4 tokens x 30 + 4: far over 75
    record = explorer.tokenize(prompt)
    ids, _ = tokenize([prompt])
    assert len(ids[0]) == 77 and ids[0][-1] == 49407
    assert record["length"] == 77
    assert record["dropped_count"] == 4 * 30 + 4 - 75
    assert record["dropped"].endswith("and a purple elephant")
