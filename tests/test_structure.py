"""The pieces every part of the project shares: the component registry, the TraceRequest, the
formatting of the views, the record's queries, the diagram scene's stages on small hand-made
records, and the rules of the code base itself (no private imports, short functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from explorer.components import COMPONENTS, component
from explorer.errors import ExplorerError, OptionError
from explorer.explore import TraceRequest
from explorer.record import Edge, Node, Trace
from explorer.specs import PRESETS
from explorer.views import format as fmt

PACKAGE = Path(__file__).resolve().parent.parent / "explorer"


# -- the registry ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_every_component_is_complete(name):
    """Its class and config class exist in its library, its converter in diffusers, and every
    preset has its config under its folder."""
    import importlib

    from diffusers.loaders import single_file_utils

    c = component(name)
    library = importlib.import_module(c.library)
    assert hasattr(library, c.class_name)
    assert not c.config_class or hasattr(library, c.config_class)
    assert hasattr(single_file_utils, c.ldm_converter)
    for preset in PRESETS.values():
        assert preset.config(name).get("_class_name", c.class_name) == c.class_name


def test_an_unknown_component_names_the_known_ones():
    with pytest.raises(ExplorerError, match="choose one of unet, vae, clip"):
        component("text_encoder_3")


# -- one request, checked once -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, option, words",
    [
        ({"height": 500}, "height", "must be a multiple of 8"),
        ({"width": 4096}, "width", "between 64 and 2048"),
        ({"batch": 0}, "batch", "must be between 1 and 64"),
        ({"weights": "fp16"}, "weights", "must be one of meta, random, pretrained"),
    ],
)
def test_a_request_speaks_of_the_option_and_the_cli_of_the_flag(options, option, words):
    with pytest.raises(OptionError) as caught:
        TraceRequest("unet", **options)
    error = caught.value
    assert str(error).startswith(f"{option} ") and words in str(error) and "--" not in str(error)
    assert error.for_cli().startswith(f"--{option} ")


def test_a_request_knows_what_changes_the_record():
    a = TraceRequest("unet", height=512)
    assert a.inputs() == TraceRequest("unet", height=512, allow_download=True).inputs()  # not a record input
    assert a.inputs() != TraceRequest("unet", height=768).inputs()


# -- formatting -----------------------------------------------------------------------------------------------


def test_shapes_numbers_and_times():
    assert fmt.shape_str((2, 320, 64, 64)) == "[2, 320, 64, 64]"
    assert fmt.shape_str(((1, 2), (3,)), compact=True) == "([1,2], [3])"
    assert fmt.fmt_shapes([(2, 8), (2, 8), (2, 4)]) == "[2,8]×2, [2,4]"
    assert fmt.fmt_shape(((2, 8), (2, 8), (2, 8))) == "([2,8]×3)"
    assert [fmt.fmt_params(n) for n in (640, 410_880, 859_520_964, 2_567_463_684)] == ["640", "410.9K", "859.5M", "2.6B"]
    assert fmt.fmt_flops(1_606_500_000_000) == "1,606.5 G" and fmt.fmt_flops(0) == "0"
    assert fmt.fmt_bytes(3 * 2**20) == "3.0 MiB" and fmt.fmt_bytes(12) == "12 B"
    assert fmt.share(1, 8) == "12.5 %" and fmt.share(1, 0) == ""
    assert [fmt.fmt_seconds(s) for s in (0.421, 12.34, 65)] == ["0.42 s", "12.3 s", "1:05"]
    assert fmt.plural(1, "step") == "1 step" and fmt.plural(21, "UNet call") == "21 UNet calls"


def test_node_names_ids_and_escaping():
    node = Node("down_blocks.0.resnets.1", "ResnetBlock2D", "module", 2, 1, {}, (), 0)
    assert fmt.node_id(node) == "down_blocks.0.resnets.1#1" and fmt.call_suffix(node) == " (call 2)"
    assert fmt.node_id(Node("", "UNet2DConditionModel", "module", 0, 0, {}, (), 0)) == "root"
    assert fmt.relative_name("down_blocks.0.resnets.1", "down_blocks.0") == "resnets.1"
    assert fmt.relative_name("down_blocks.10.x", "down_blocks.1") == "down_blocks.10.x"  # a prefix of the name only
    assert fmt.esc("a<b & c") == "a&lt;b &amp; c" and fmt.attr('say "<hi>"') == "say &quot;&lt;hi>&quot;"


def test_the_dropped_token_sentence():
    assert fmt.dropped_tokens({"dropped_count": 0}) == ""
    record = {"dropped_count": 3, "dropped": "on a hill", "ids": list(range(77))}
    assert fmt.dropped_tokens(record) == "this prompt is 3 tokens too long: CLIP keeps 75 and drops: 'on a hill'"


# -- a small record made by hand ----------------------------------------------------------------------------


def _node(path, type_, depth, inputs=None, outputs=((1, 4),), params=0, kind="module", call=0):
    return Node(path, type_, kind, depth, call, inputs or {"x": (1, 4)}, outputs, params)


def _edge(src, dst, port="x", shape=(1, 4), src_port="0", returned=False):
    return Edge(src, 0, src_port, dst, 0, port, shape, returned)


def chain(names: list[str], type_="Linear", side: list[str] = (), skips: list[tuple[str, str]] = ()) -> Trace:
    """A root running `names` one after the other (each a `type_`); `side` nodes also receive the
    root's input `t` as a second argument; `skips` add an edge from one node to a later one."""
    nodes = [_node("", "Root", 0, {"x": (1, 4), "t": (1, 4)})]
    edges = []
    previous = ("", "x")
    for name in names:
        inputs = {"x": (1, 4), **({"t": (1, 4)} if name in side else {})}
        nodes.append(_node(name, type_, 1, inputs, params=20))
        edges.append(_edge(previous[0], name, src_port=previous[1]))
        if name in side:
            edges.append(_edge("", name, port="t", src_port="t"))
        previous = (name, "0")
    for src, dst in skips:
        edges.append(_edge(src, dst, port="skip"))
    edges.append(_edge(names[-1], "", port="0", returned=True))
    return Trace("unet", "hand-made", "meta", {"x": (1, 4), "t": (1, 4)}, 80, tuple(nodes), tuple(edges))


def test_trace_queries_on_a_hand_made_record():
    t = chain(["a", "b", "c"])
    assert t.parents() == [None, 0, 0, 0] and t.children() == {0: [1, 2, 3]}
    assert t.locate("b") == 2
    with pytest.raises(OptionError, match="did you mean b"):
        t.locate("bb")
    kept = t.keep(n for n in t.nodes if n.path != "b")
    assert [n.path for n in kept.nodes] == ["", "a", "c"]
    assert all("b" not in (e.src, e.dst) for e in kept.edges)


def test_select_draws_the_frontier_and_lifts_edges():
    from explorer.views.graph import select

    t = chain(["a", "b"])
    sel = select(t, None, 1)
    assert sel.frontier == {1, 2} and not sel.expanded
    assert sel.lift(2) == 2 and sel.resolve(1, "0") == 1


def test_four_identical_layers_in_a_chain_are_drawn_once():
    from explorer.views.graph import scene

    s = scene(chain(["l0", "l1", "l2", "l3"]), title="t")
    layers = [b for b in s.boxes if b.category == "linear"]
    assert len(layers) == 1 and "Linear ×4" in layers[0].label
    assert len(scene(chain(["l0", "l1", "l2"]), title="t").boxes) > len(s.boxes)  # three stay three


def test_a_tensor_entering_three_nodes_from_the_side_becomes_a_bus():
    from explorer.views.graph import scene

    s = scene(chain(["a", "b", "c"], type_="Block", side=["a", "b", "c"]), title="t", repeat_min=99)
    into = next(b for b in s.boxes if b.id == "in/t")
    assert "into every Block (3)" in into.label
    assert all("+ t" in b.tags for b in s.boxes if b.id in ("a", "b", "c"))
    assert not any(a.src == "in/t" and a.dst in ("a", "b") for a in s.arrows)


def test_three_nested_skips_make_a_u():
    from explorer.views.graph import scene

    names = ["d0", "d1", "d2", "m", "u2", "u1", "u0"]
    s = scene(chain(names, type_="Block", skips=[("d0", "u0"), ("d1", "u1"), ("d2", "u2")]), title="t", repeat_min=99)
    assert sorted(map(tuple, s.same_rank)) == [("d0", "u0"), ("d1", "u1"), ("d2", "u2")]
    assert all(a.straight for a in s.arrows if (a.src, a.dst) in {("d0", "u0"), ("d1", "u1"), ("d2", "u2")})
    assert any(a.back for a in s.arrows if a.dst == "u1")  # the up path is drawn going up
    flat = scene(chain(names, type_="Block", skips=[("d0", "u0")]), title="t", repeat_min=99)
    assert not flat.same_rank  # one skip is no U


# -- the code base ----------------------------------------------------------------------------------------


def _python_files():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("explorer"):
                found += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not found


def test_no_function_is_longer_than_60_lines():
    """Except the attention processor, which mirrors diffusers' own operation for operation."""
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60 and not (path.name == "attention.py" and node.name == "__call__"):
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({length} lines)")
    assert not long
