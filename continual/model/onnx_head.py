"""A new head in an exported round's ONNX graphs, when only the head changed.

A round whose encoder is the previous round's (``ridge``, ``ncm``, the frozen rounds of ``adapt``) gives the
same graphs up to the head's weight and bias. Instead of exporting and quantizing the encoder again (tens of
seconds for MiniLM), the previous round's fp32 and int8 graphs are copied with the head's initializers
replaced. That is exact because the int8 graph keeps the head in fp32 (``export.quantize_int8`` excludes the
node that produces the logits), and safe because the previous graphs are reused only when their report
records the same encoder fingerprint (every weight the head reads through, ``encoder_fingerprint``).
"""
from __future__ import annotations

import hashlib

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

LOGITS = "logits"
HEAD_WEIGHT, HEAD_BIAS = "continual.head.weight", "continual.head.bias"


def encoder_fingerprint(model) -> str:
    """sha256 over every tensor that shapes the head's input: the encoder's weights and buffers, the projection."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        if name.startswith("head."):
            continue
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    if getattr(model, "projection", None) is not None:
        digest.update(model.projection.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def logits_node(graph: onnx.GraphProto) -> onnx.NodeProto:
    return next(node for node in graph.node if LOGITS in node.output)


def head_node_names(graph: onnx.GraphProto) -> list[str]:
    """The exported head (one Gemm) under the names onnxruntime's quantizer gives it once it splits a Gemm into
    MatMul + Add: what ``quantize_dynamic`` is told to leave in fp32."""
    name = logits_node(graph).name
    return [name, f"{name}_MatMul", f"{name}_Add"]


def features_input(graph: onnx.GraphProto) -> str:
    """The tensor the head reads (the pooled embedding, or its projection), from the fp32 graph's Gemm."""
    node = logits_node(graph)
    if node.op_type != "Gemm":
        raise ValueError(f"the logits come from a {node.op_type} node, not the exported head's Gemm")
    return node.input[0]


def replace_head(source, target, features: str, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Copy the graph at ``source`` to ``target`` with logits = Gemm(``features``, weight, bias): every node between
    the features and the logits (a Gemm, or the MatMul + Add the quantizer made of it) is replaced."""
    model = onnx.load(str(source))
    graph = model.graph
    producer = {output: node for node in graph.node for output in node.output}
    head, stack = [], [LOGITS]
    while stack:
        tensor = stack.pop()
        node = producer.get(tensor)
        if tensor == features or node is None or any(node is n for n in head):
            continue
        head.append(node)
        stack.extend(node.input)
    if not any(features in node.input for node in head):
        raise ValueError(f"{source}: no path from {features!r} to the logits")
    dropped = {name for node in head for name in node.input} - {features}
    kept_nodes = [node for node in graph.node if not any(node is n for n in head)]
    used = {name for node in kept_nodes for name in node.input} | {o.name for o in graph.output}
    kept_inits = [init for init in graph.initializer if init.name not in dropped or init.name in used]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    graph.node.append(helper.make_node("Gemm", [features, HEAD_WEIGHT, HEAD_BIAS], [LOGITS], name="continual_head",
                                       transB=1, alpha=1.0, beta=1.0))
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    graph.initializer.extend([
        numpy_helper.from_array(weight.detach().cpu().float().numpy().astype(np.float32), HEAD_WEIGHT),
        numpy_helper.from_array(bias.detach().cpu().float().numpy().astype(np.float32), HEAD_BIAS)])
    output = next(o for o in graph.output if o.name == LOGITS)
    output.type.tensor_type.shape.dim[1].dim_value = int(weight.shape[0])  # a grown head has more classes
    onnx.save(model, str(target))
