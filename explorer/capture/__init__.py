"""Capture: what runs inside a real model, recorded as plain data (`explorer.record.Trace`).

- `hooks`: forward hooks on every module; `record()` runs a forward pass and freezes the record;
- `recorder`: collects nodes and data-flow edges, and the steps code records with `record_step`;
- `attention`: attention processors that record the head split, the score matrix and the merge;
- `flops`: floating-point operations per node, with PyTorch's own formulas;
- `drivers`: how each kind of component is run, the way Stable Diffusion runs it.

Nothing here imports rich, graphviz or typer: capture never knows how it will be shown.
"""
