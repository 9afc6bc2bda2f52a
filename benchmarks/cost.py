"""What a model costs before it runs: file size, parameters, multiply-accumulates.

Parameters and multiply-accumulates (MACs) are read from the graph of each
format the same way: the weights and biases of the convolution and fully
connected operators, and for each such operator

    MACs = output elements x (weight elements / output channels)

which is H_out.W_out.C_out.k_h.k_w.C_in for a convolution, H_out.W_out.C.k_h.k_w
for a depthwise one and C_in.C_out for a fully connected layer at batch 1
(the count of Keras' ``count_macs`` and of most model zoos). Pooling,
activations and element-wise operators are left out (a few percent at most).
The exported files carry BatchNorm folded into the convolutions, so their
parameter count is lower than the Keras model's, which also counts
BatchNorm's four values per channel.
"""

from __future__ import annotations

import math
import os

import numpy as np

TFLITE_WEIGHTED = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
ONNX_WEIGHTED = ("Conv", "Gemm", "MatMul")


def file_size_mb(path: str | os.PathLike) -> float:
    """File size in MB (10^6 bytes)."""
    return os.path.getsize(path) / 1e6


def layer_macs(out_elements: int, weight_shape, out_channels: int) -> int:
    """MACs of one convolution or fully connected operator (formula above).

    Args:
        out_elements: elements of the output at batch 1.
        weight_shape: the weight tensor's shape, any layout.
        out_channels: the output channels, the weight axis that maps to the
            output's channel axis.
    """
    return int(out_elements) * (math.prod(int(d) for d in weight_shape) // int(out_channels))


def tflite_cost(interpreter) -> tuple[int | None, int | None]:
    """(parameters, MACs per image) of an allocated TFLite interpreter.

    Reads the operators through the interpreter's ``_get_ops_details``, which
    ai-edge-litert and tflite-runtime both have but do not document; where it
    is missing (or no interpreter is given) both are None (not available).
    """
    get_ops = getattr(interpreter, "_get_ops_details", None)
    if get_ops is None:
        return None, None
    try:
        ops = get_ops()
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    except Exception:  # an interpreter build without op details
        return None, None
    params = macs = 0
    counted = set()  # a weight shared by two operators (a model called twice) counts once
    for op in ops:
        axis = TFLITE_WEIGHTED.get(op["op_name"])
        if axis is None:
            continue
        inputs = [i for i in op["inputs"] if i >= 0]
        weight = tensors[inputs[1]]["shape"]
        out = tensors[op["outputs"][0]]["shape"]
        # TFLite weights: conv (C_out, k_h, k_w, C_in), depthwise
        # (1, k_h, k_w, C_out), fully connected (units, C_in).
        macs += layer_macs(np.prod(out[1:]), weight, weight[axis])
        params += sum(int(np.prod(tensors[i]["shape"])) for i in inputs[1:] if i not in counted)
        counted.update(inputs[1:])
    return params, macs


def onnx_cost(path: str | os.PathLike) -> tuple[int | None, int | None]:
    """(parameters, MACs per image) of an ONNX file, float or QDQ int8.

    Needs the ``onnx`` package (in the ``train`` extra) for the graph and its
    shape inference; without it both are None (not available). Quantized
    weights are followed through their ``DequantizeLinear``; a ``MatMul``'s
    bias is the constant of the ``Add`` that follows it.
    """
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None, None
    model = shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    consts = {t.name: tuple(numpy_helper.to_array(t).shape) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = tuple(a.t.dims)
    dequant = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    shapes = {}
    for v in (*graph.input, *graph.value_info, *graph.output):
        dims = v.type.tensor_type.shape.dim
        # A symbolic (batch) axis counts as 1: MACs are per image.
        shapes[v.name] = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def const_shape(name):
        return consts.get(name, consts.get(dequant.get(name, ""), None))

    params = macs = 0
    counted = set()  # a weight shared by two nodes (a model called twice) counts once
    for node in graph.node:
        if node.op_type not in ONNX_WEIGHTED:
            continue
        weight = const_shape(node.input[1])
        out = shapes.get(node.output[0])
        if weight is None or out is None:
            return None, None
        if node.op_type == "Conv":  # W: (C_out, C_in / group, k_h, k_w)
            out_channels = weight[0]
        else:  # (K, N), or (N, K) for a Gemm with transB
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            out_channels = weight[0] if trans_b else weight[-1]
        macs += layer_macs(math.prod(out), weight, out_channels)
        names = [dequant.get(n, n) for n in node.input[1:] if n]
        if node.op_type == "MatMul":
            for nxt in consumers.get(node.output[0], []):
                if nxt.op_type == "Add":
                    names += [dequant.get(n, n) for n in nxt.input if n != node.output[0]]
        shapes_of = [consts.get(n) for n in names if n not in counted]  # names already past DequantizeLinear
        params += sum(math.prod(b) for b in shapes_of if b is not None)
        counted.update(names)
    return params, macs


def keras_cost(model) -> tuple[int, int]:
    """(parameters, MACs per image) of a Keras model.

    Parameters are Keras' own ``count_params()`` (BatchNorm included); MACs
    are :func:`train.models.count_macs`, the formula above over Conv2D,
    DepthwiseConv2D, SeparableConv2D and Dense layers. Only called where
    TensorFlow is installed, which is where ``train`` runs too.
    """
    from happysad.train.models import count_macs

    return int(model.count_params()), count_macs(model)
