"""Record what flows through a real model: `record(module, inputs, run)` -> a frozen `Trace`.

`instrumented(module)` puts forward hooks on every module, switches attention to the recording
kind (`explorer.capture.attention`) and, with `dataflow=True`, watches the torch operations between
modules (`explorer.capture.recorder`). It always leaves the model exactly as it found it: hooks removed,
`training` flags, attention processors and attention implementation restored, also when the
forward fails; then the error names the module that was running.

No rich, graphviz or typer here: capture never knows how it will be shown.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch
from torch import nn

from explorer.capture import attention
from explorer.versions import package_versions
from explorer.capture.recorder import DataflowMode, Recorder, recording
from explorer.record import Trace


class TraceError(RuntimeError):
    """The model's forward failed while tracing; the message names the module that was running."""


@contextmanager
def instrumented(model: nn.Module, dataflow: bool = True) -> Iterator[Recorder]:
    """Hooks on every module, recording attention, eval mode, and (with `dataflow`) the torch
    operations between modules; all undone on exit, error or not."""
    training = {m: m.training for m in model.modules()}
    handles = []
    undo_attention: Callable[[], None] | None = None
    try:
        attention_modules, undo_attention = attention.install(model)
        recorder = Recorder(model, manual=attention_modules)
        model.eval()
        for name, m in model.named_modules():
            if name == "":  # the component itself is recorded by `record` (the VAE is not one forward)
                continue
            handles.append(m.register_forward_pre_hook(recorder.pre_hook, with_kwargs=True))
            handles.append(m.register_forward_hook(recorder.post_hook, with_kwargs=True))
        with recording(recorder), DataflowMode(recorder) if dataflow else nullcontext():
            yield recorder
    finally:
        for h in handles:
            h.remove()
        if undo_attention is not None:
            undo_attention()
        for m, was_training in training.items():
            m.training = was_training


def record(
    module: nn.Module,
    inputs: dict[str, torch.Tensor],
    run: Callable[[], Any],
    flops: bool = False,
    **trace_fields: Any,
) -> Trace:
    """Run `run()` on the instrumented `module` and return the frozen Trace.

    `inputs` are the tensors `run` gives the component, by name; `run` drives the model the way a
    pipeline would and returns its output. The component itself is the root node (path "", depth 0):
    its inputs are where the first edges start, and what produced its output is where the last end.
    With `flops`, every node also gets the floating-point operations it ran (see FlopsByNode).
    """
    with instrumented(module) as recorder:
        root = recorder.enter("", type(module).__name__, inputs, recorder.params_of(module), composite=True)
        for name, tensor in inputs.items():
            recorder.made_by(tensor, root["index"], name)
        from explorer.capture.flops import FlopsByNode

        counter = FlopsByNode(recorder) if flops else nullcontext()
        try:
            with torch.no_grad(), counter:
                output = run()
        except Exception as exc:
            # the module whose own code was running: the innermost one entered and not yet left
            # (the component itself when its own forward raised, not the last child that finished)
            running = recorder.stack[-1]
            where = f"in {running['path']} ({running['type']})" if running["path"] else f"in {type(module).__name__}'s own forward"
            hint = "" if running["path"] else _conditioning_hint(module)
            raise TraceError(f"The {type(module).__name__} forward failed {where}: {exc}{hint}") from exc
        recorder.leave(output)
        dtype = next((p.dtype for p in module.parameters()), torch.float32)
        trace = recorder.freeze(
            inputs=root["inputs"],
            total_params=root["params"],
            dtype=str(dtype).removeprefix("torch."),
            versions=package_versions(),
            **trace_fields,
        )
        return counter.with_flops(trace) if flops else trace


# Extra inputs a UNet's config asks for (diffusers' `UNet2DConditionModel.get_aug_embed`), by the
# value of its `addition_embed_type`.
CONDITIONING_INPUTS = {
    "text_time": ("text_embeds", "time_ids"),
    "text": (),
    "text_image": ("image_embeds", "text_embeds"),
    "image": ("image_embeds",),
    "image_hint": ("image_embeds", "hint"),
}


def _conditioning_hint(module: nn.Module) -> str:
    """When a failure in the component's own forward may come from a conditioning input it was not
    given: which config field asks for which inputs."""
    config = getattr(module, "config", None)  # diffusers: a dict; transformers: a config object, no such field
    kind = config.get("addition_embed_type") if isinstance(config, dict) else None
    wanted = CONDITIONING_INPUTS.get(kind) if isinstance(kind, str) else None
    if not wanted:
        return ""
    names = " and ".join(f"`{n}`" for n in wanted)
    return f'. Its config sets addition_embed_type = "{kind}", which needs {names} in `added_cond_kwargs`.'
