"""Graph steps: torch -> ONNX fp32 -> onnxruntime transformer optimizations -> fp16 and int8 variants."""

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from streamsense.exporters.config import BertOnnxConfig


def to_onnx(model: torch.nn.Module, config: BertOnnxConfig, path: Path) -> None:
    """fp32 ONNX with dynamic batch and sequence axes (switches `model` to the config's attention).

    The TorchScript exporter is used: onnxruntime's optimizer fuses its BERT graph into Attention,
    EmbedLayerNormalization and SkipLayerNormalization ops, and fuses none of the dynamo exporter's graph.
    """
    model.encoder.set_attn_implementation(config.attn_implementation)
    model.eval()
    inputs = tuple(torch.from_numpy(x) for x in config.dummy_inputs())
    with warnings.catch_warnings(), torch.no_grad():
        # the deprecation notice, tracer notes on shape checks and the negative-index caveat (the mask is
        # indexed with aranges) are noise here: parity over many batch and sequence shapes covers them
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            model,
            inputs,
            str(path),
            input_names=list(config.input_names),
            output_names=list(config.output_names),
            dynamic_axes=config.dynamic_axes,
            opset_version=config.opset,
            dynamo=False,
        )


def optimize(path: Path, config: BertOnnxConfig, out: Path):
    """Fuse the fp32 graph with onnxruntime's transformer optimizer; returns the optimized OnnxModel."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(config.optimizer_model_type)
    # attention reads the 2D mask itself: by default it keeps only a count of ones per row,
    # which is wrong for anything but right padding
    options.use_raw_attention_mask(True)
    optimized = optimize_model(
        str(path),
        model_type=config.optimizer_model_type,
        num_heads=config.num_heads,
        hidden_size=config.hidden_size,
        optimization_options=options,
    )
    optimized.save_model_to_file(str(out))
    return optimized


def to_fp16(optimized, out: Path) -> None:
    """fp16 weights and compute; int64 inputs and float32 logits stay as they are."""
    optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(out))


def to_int8(path: Path, out: Path) -> None:
    """Dynamic int8 quantization for CPU: int8 weights (per channel), activations quantized at run time per row.

    onnxruntime's dynamic quantizer scales each activation over the whole tensor, i.e. over the batch, so a
    message's scores moved with the other messages in its batch (v2: labels agreed on 96-99 % of posts, largest
    probability shift 0.22). `quantize_rows` rescales every token's activations on their own: results no longer
    depend on the batch, agreement with fp32 rises, and the size stays 23 MB, for 6-16 % fewer messages per
    second (docs/models.md). Tried and worse: per-tensor weights (0.86-0.93 agreement), QUInt8 or reduce_range
    (no gain), leaving one op group in fp32, weight-only 8-bit MatMulNBits and static QDQ int8 (slower than fp32
    on AVX2).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(path),
        str(out),
        per_channel=True,
        weight_type=QuantType.QInt8,
        # shape inference cannot type the outputs of the fused com.microsoft ops; they are all float
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )
    model = onnx.load(str(out))
    quantize_rows(model.graph)
    onnx.save(model, str(out))


ROW_ZERO_POINT = "row_quant_zero_point"


def quantize_rows(graph: onnx.GraphProto) -> None:
    """Rewrite a dynamically quantized graph so each activation row (one token's features) has its own scale.

    Every DynamicQuantizeLinear (one scale and zero point per tensor) becomes a symmetric per-row quantizer:
    scale = max|x| / 127 over the last axis, x / scale + 128 as uint8, zero point 128 (MatMulInteger takes only a
    scalar zero point). The MatMulInteger -> Cast -> Mul(scale * weight scale) chain behind it broadcasts the
    [..., 1] scales unchanged. QAttention takes only a scalar input scale, so it becomes that chain for the QKV
    projection followed by MultiHeadAttention with the same bias, mask and heads.
    """
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    graph.initializer.extend([
        numpy_helper.from_array(np.array(128, np.uint8), ROW_ZERO_POINT),
        numpy_helper.from_array(np.array(1e-8, np.float32), "row_quant_eps"),
        numpy_helper.from_array(np.array(127, np.float32), "row_quant_max"),
        numpy_helper.from_array(np.array(1, np.float32), "row_quant_one"),
    ])
    nodes = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            nodes += _row_quantizer(node, users)
        elif node.op_type == "QAttention":
            nodes += _row_attention(node)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # shape hints only, and the scales' shapes changed; onnxruntime infers them again


def _row_quantizer(node: onnx.NodeProto, users: dict[str, list[onnx.NodeProto]]) -> list[onnx.NodeProto]:
    x, (quantized, scale, zero_point) = node.input[0], node.output
    readers = {user.op_type for name in node.output for user in users.get(name, [])}
    if not readers <= {"MatMulInteger", "Mul", "QAttention"}:
        raise ValueError(f"{node.name}: per-row quantization cannot feed {sorted(readers)}")
    for user in users.get(zero_point, []):
        user.input[:] = [ROW_ZERO_POINT if name == zero_point else name for name in user.input]
    p = node.name or quantized
    return [
        helper.make_node("Abs", [x], [p + "_abs"]),
        helper.make_node("ReduceMax", [p + "_abs"], [p + "_absmax"], axes=[-1], keepdims=1),
        helper.make_node("Max", [p + "_absmax", "row_quant_eps"], [p + "_range"]),
        helper.make_node("Div", [p + "_range", "row_quant_max"], [scale]),
        helper.make_node("Div", ["row_quant_max", p + "_range"], [p + "_inverse"]),
        helper.make_node("Mul", [x, p + "_inverse"], [p + "_scaled"]),
        helper.make_node("QuantizeLinear", [p + "_scaled", "row_quant_one", ROW_ZERO_POINT], [quantized]),
    ]


def _row_attention(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    inputs = list(node.input) + [""] * (9 - len(node.input))
    x, weight, bias, x_scale, weight_scale, mask, _, weight_zero_point, past = inputs
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if past or set(attributes) != {"num_heads"} or len(node.output) != 1:
        raise ValueError(f"{node.name}: only encoder attention (num_heads, no past state) can be rewritten")
    p = node.name
    return [
        helper.make_node("MatMulInteger", [x, weight, ROW_ZERO_POINT, weight_zero_point], [p + "_int"]),
        helper.make_node("Cast", [p + "_int"], [p + "_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [x_scale, weight_scale], [p + "_scales"]),
        helper.make_node("Mul", [p + "_float", p + "_scales"], [p + "_qkv"]),
        helper.make_node("Split", [p + "_qkv"], [p + "_q", p + "_k", p + "_v"], axis=-1),
        helper.make_node("MultiHeadAttention", [p + "_q", p + "_k", p + "_v", bias, mask], list(node.output),
                         name=p + "_rows", domain="com.microsoft", num_heads=attributes["num_heads"]),
    ]
