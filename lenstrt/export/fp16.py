"""fp32 ONNX -> mixed-precision fp16 ONNX (fp16 compute, fp32 inputs and outputs).

TensorRT 11 has no FP16 builder flag: the precision must be in the graph, built strongly typed.
We use onnxruntime's maintained converter (`onnxruntime.transformers.float16`) with keep_io_types and
keep in fp32: the in-graph preprocessing (it sees raw fluxes of ~1e5 e-, beyond fp16's 65504),
LayerNorm, Softmax, reductions, Pow, Erf, TopK, and every op the architecture's ExportSpec lists.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from lenstrt.errors import ExportError

FP32_OPS = ("LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Pow", "Sqrt", "Erf", "TopK", "Asinh",
            "Sigmoid")


def _scopes(node) -> list[str]:
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(s) for s in ast.literal_eval(p.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def preprocessing_nodes(model) -> list[str]:
    """Names of nodes that come from a `preprocess` module (torch exporter name scopes), falling back to
    every ancestor of the first Asinh when the metadata is missing."""
    names = [n.name for n in model.graph.node if any(s == "preprocess" or s.endswith(".preprocess")
                                                   for s in _scopes(n))]
    if names:
        return names
    producers = {o: n for n in model.graph.node for o in n.output}
    asinh = next((n for n in model.graph.node if n.op_type == "Asinh"), None)
    if asinh is None:
        return []
    seen, stack = set(), [asinh]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(producers[i] for i in n.input if i in producers)
    return sorted(seen)


def fp16_from_onnx(src: str | Path, dst: str | Path, extra_fp32_ops: tuple[str, ...] = ()) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    ops = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS) | set(extra_fp32_ops))
    try:
        fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=ops,
                                        node_block_list=preprocessing_nodes(model))
    except Exception as exc:
        raise ExportError(f"{src}: fp16 conversion failed ({type(exc).__name__}: {exc})") from exc
    _drop_repeated_casts(fp16.graph, src)
    _collapse_cast_round_trips(fp16.graph)
    _toposort(fp16.graph)
    # The converter leaves stale fp16 type hints on tensors it kept in fp32; value_info is optional,
    # so drop it and let shape inference recompute it consistently.
    del fp16.graph.value_info[:]
    onnx.save(fp16, str(dst))
    from lenstrt.export.onnx import check_onnx

    check_onnx(dst)
    return Path(dst)


def precision_summary(path: str | Path) -> dict[str, int]:
    """How many nodes compute in fp16 vs fp32 (by their first float output type, from shape inference)."""
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    types = {v.name: v.type.tensor_type.elem_type for v in list(m.graph.value_info) + list(m.graph.output)}
    out = {"fp16": 0, "fp32": 0}
    for n in m.graph.node:
        t = next((types[o] for o in n.output if o in types), None)
        if t == onnx.TensorProto.FLOAT16:
            out["fp16"] += 1
        elif t == onnx.TensorProto.FLOAT:
            out["fp32"] += 1
    return out


def _drop_repeated_casts(graph, src) -> None:
    """onnxruntime's converter before 1.31 adds one Cast(fp16 -> fp32) per consumer when a value feeds
    several fp32-kept nodes, each writing the same output name: invalid ONNX (not SSA), seen on the first
    GPU machine (onnxruntime 1.30). Those casts are identical, so keep the first of each; any other
    repeated output is a converter bug we cannot repair."""
    seen: dict[str, Any] = {}
    keep = []
    for n in graph.node:
        dup = [o for o in n.output if o in seen]
        if not dup:
            seen.update((o, n) for o in n.output)
            keep.append(n)
            continue
        first = seen[dup[0]]
        same = (n.op_type == "Cast" and first.op_type == "Cast" and list(n.input) == list(first.input)
                and list(n.output) == list(first.output) and n.attribute == first.attribute)
        if not same:
            raise ExportError(f"{src}: fp16 conversion wrote {dup[0]!r} twice from different nodes; "
                              "upgrade onnxruntime (pip install -U onnxruntime) and export again")
    if len(keep) < len(graph.node):
        del graph.node[:]
        graph.node.extend(keep)


def _toposort(graph) -> None:
    """The converter appends its input casts at the end of the node list when the first nodes are kept in
    fp32; ONNX requires producers before consumers, so re-order (stable Kahn's algorithm)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    nodes = list(graph.node)
    ordered, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ExportError("fp16 graph has a cycle or an undefined input; cannot order it")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def _collapse_cast_round_trips(graph) -> None:
    """With keep_io_types the converter casts the fp32 input to fp16 and then back to fp32 for the
    blocked preprocessing nodes: raw fluxes above 65504 overflow to inf on the way. Wire every
    Cast(fp16 -> fp32) of a Cast(fp32 -> fp16) straight to the original fp32 tensor (the source graph is
    all fp32, so that tensor is fp32), then drop casts nobody reads."""
    import onnx

    def cast_to(n) -> int | None:
        if n.op_type != "Cast":
            return None
        return next((a.i for a in n.attribute if a.name == "to"), None)

    producer = {o: n for n in graph.node for o in n.output}
    rename: dict[str, str] = {}
    for n in graph.node:
        if cast_to(n) == onnx.TensorProto.FLOAT:
            a = producer.get(n.input[0])
            if a is not None and cast_to(a) == onnx.TensorProto.FLOAT16:
                rename[n.output[0]] = a.input[0]
    if not rename:
        return
    outputs = {o.name for o in graph.output}
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    for o in graph.output:
        if o.name in rename:  # never rename a graph output
            rename.pop(o.name)
    while True:  # remove nodes whose outputs are unused
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
