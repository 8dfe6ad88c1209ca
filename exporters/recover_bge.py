"""A plain (unfused) torch-exported BERT ONNX graph -> HuggingFace `BertModel` weights.

For third-party encoders that ship only as ONNX, such as BAAI bge-small-zh-v1.5 in the langchain4j jar
(`deploy/zh/fetch-bge-zh.sh`; a `torch.onnx.export` of `BertModel` by transformers.js / optimum, output
`last_hidden_state`). Unlike `recover.py`, which reads the project's own *optimized* graphs (fused Attention,
SkipLayerNormalization, ...), this reads the layout `torch.onnx.export` writes for an eager `BertModel`:

- embeddings, LayerNorm parameters and biases keep their state-dict names as initializers;
- the dense weights are anonymous (`onnx::MatMul_541`) and stored transposed ([in, out]); each feeds one MatMul
  whose output goes to an Add with the named bias, so `<name>.bias` gives `<name>.weight` (= initializer.T);
- int8 graphs (onnxruntime `quantize_dynamic`: MatMulInteger with an int8 weight, its zero point and a scale
  applied by a following Mul; or QDQ: DequantizeLinear on an initializer) are dequantized here as
  scale * (q - zero_point), and `read_weights` reports that it did so.

The number of attention heads is not stored as a tensor: it is read from the attention score scaling
(Div by sqrt(head_dim), or Mul by 1/sqrt(head_dim)), or passed in.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from transformers import BertConfig, BertModel

_PREFIXES = ("bert.", "model.", "encoder_model.")
_LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
            "intermediate.dense", "output.dense")


_PARAM = re.compile(r"^(embeddings|encoder\.layer\.\d+|pooler)\..*\.(weight|bias)$")


class UnrecoverableGraphError(ValueError):
    pass


@dataclass
class Recovered:
    config: BertConfig
    state: dict[str, torch.Tensor]
    quantized: bool = False  # True when int8 weights were dequantized (the recovered model is then approximate)
    notes: list[str] = field(default_factory=list)

    def model(self) -> BertModel:
        model = BertModel(self.config, add_pooling_layer="pooler.dense.weight" in self.state)
        missing, unexpected = model.load_state_dict(self.state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise UnrecoverableGraphError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        return model.eval()


def _strip(name: str) -> str:
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _constant_values(graph) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            # the exporter keeps one copy of equal initializers (e.g. all-zero biases, all-one LayerNorm
            # weights) and names the others through Identity nodes
            values[node.output[0]] = values[node.input[0]]
    return values


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1) -> np.ndarray:
    zp = np.zeros_like(scale, dtype=np.float32) if zero_point is None else zero_point.astype(np.float32)
    if scale.ndim == 1 and scale.size > 1:  # per-channel
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return (scale.astype(np.float32) * (q.astype(np.float32) - zp)).astype(np.float32)


def read_weights(onnx_path: Path, num_heads: int | None = None) -> Recovered:
    """The BertModel config and state dict (float32) of a plain torch-exported BERT graph."""
    graph = onnx.load(str(onnx_path)).graph
    values = _constant_values(graph)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    named = {_strip(t.name): t.name for t in graph.initializer}
    named |= {_strip(n.output[0]): n.output[0] for n in graph.node
              if n.op_type == "Identity" and n.input[0] in values and "." in n.output[0]}
    quantized, notes = False, []

    def weight_of(node) -> np.ndarray | None:
        """The constant [in, out] weight of a MatMul / MatMulInteger node (dequantized), or None."""
        nonlocal quantized
        if node.op_type == "MatMul":
            src = node.input[1]
            if src in values:
                return values[src].astype(np.float32)
            dq = producer.get(src)
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in values:
                quantized = True
                zp = values.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
                axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
                return _dequantize(values[dq.input[0]], values[dq.input[1]], zp, axis)
            return None
        if node.op_type == "MatMulInteger" and node.input[1] in values:
            quantized = True
            zp = values.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
            # MatMulInteger -> Cast -> Mul(activation scale * weight scale) [-> Mul]: the weight scale is the
            # constant factor in that chain (quantize_dynamic folds both into one Mul by a runtime product).
            scale, out = None, node.output[0]
            for _ in range(4):
                nxt = consumers.get(out, [])
                if len(nxt) != 1:
                    break
                nxt = nxt[0]
                if nxt.op_type == "Mul":
                    for other in nxt.input:
                        if other == out:
                            continue
                        if other in values:
                            scale = values[other]
                        else:  # Mul(activation_scale, weight_scale) computed in the graph
                            p = producer.get(other)
                            if p is not None and p.op_type == "Mul":
                                consts = [values[i] for i in p.input if i in values]
                                if consts:
                                    scale = consts[0]
                    if scale is not None:
                        break
                out = nxt.output[0]
            if scale is None:
                raise UnrecoverableGraphError(f"no weight scale found after {node.name}")
            return _dequantize(values[node.input[1]], scale, zp)
        return None

    def output_of(node) -> str:
        """The tensor a MatMul-like node's float result ends up in (through Cast / scale Muls for int8)."""
        out = node.output[0]
        if node.op_type == "MatMul":
            return out
        for _ in range(4):
            nxt = consumers.get(out, [])
            if len(nxt) != 1 or nxt[0].op_type not in ("Cast", "Mul"):
                break
            out = nxt[0].output[0]
        return out

    state: dict[str, torch.Tensor] = {}
    for short, full in named.items():
        if _PARAM.match(short) and (short.endswith(".bias") or "LayerNorm" in short or "embeddings" in short):
            state[short] = torch.from_numpy(values[full].astype(np.float32).copy())
    # int8 graphs keep named tables quantized: DequantizeLinear on the initializer (QDQ), or, for embeddings
    # (quantize_dynamic), DequantizeLinear on the Gather of the quantized table.
    for node in graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        src, axis = node.input[0], next((a.i for a in node.attribute if a.name == "axis"), 1)
        gather = producer.get(src)
        if src not in values and gather is not None and gather.op_type == "Gather" and gather.input[0] in values:
            src, axis = gather.input[0], 0
        name = _strip(src).removesuffix("_quantized")
        if src in values and "." in name and not name.startswith("onnx::") and name not in state:
            quantized = True
            zp = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            state[name] = torch.from_numpy(_dequantize(values[src], values[node.input[1]], zp, axis))

    anonymous = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "MatMulInteger"):
            continue
        weight = weight_of(node)
        if weight is None:
            continue
        bias_name = None
        for add in consumers.get(output_of(node), []):
            if add.op_type == "Add":
                bias_name = next((_strip(i) for i in add.input if i in values and _strip(i).endswith(".bias")), None)
        if bias_name is None:
            anonymous.append(weight)
            continue
        state[bias_name[: -len(".bias")] + ".weight"] = torch.from_numpy(weight.T.copy())
    if anonymous:
        # Biases without names: fall back to graph order (query, key, value, attention out, intermediate, output).
        notes.append(f"{len(anonymous)} dense weights mapped by graph order")
        if len(anonymous) % len(_LINEARS):
            raise UnrecoverableGraphError(f"{len(anonymous)} unnamed dense weights: not 6 per layer")
        for k, weight in enumerate(anonymous):
            layer, j = divmod(k, len(_LINEARS))
            state[f"encoder.layer.{layer}.{_LINEARS[j]}.weight"] = torch.from_numpy(weight.T.copy())

    layer_ids = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layer\.(\d+)\.", k))}
    if "embeddings.word_embeddings.weight" not in state or not layer_ids:
        raise UnrecoverableGraphError(f"{onnx_path}: no BERT embeddings / encoder layers found")
    layers = max(layer_ids) + 1
    words = state["embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    for i in range(layers):
        for name in _LINEARS:
            if f"encoder.layer.{i}.{name}.weight" not in state:
                raise UnrecoverableGraphError(f"{onnx_path}: no weight for encoder.layer.{i}.{name}")
    if num_heads is None:
        num_heads = _num_heads(graph, values, producer, hidden)
    eps = _layer_norm_eps(graph, values, producer)
    if "embeddings.token_type_embeddings.weight" not in state:
        notes.append("no token type embeddings in the graph: zeros")
        state["embeddings.token_type_embeddings.weight"] = torch.zeros(2, hidden)
    config = BertConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=num_heads,
        intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        layer_norm_eps=eps, hidden_act="gelu", attn_implementation="eager",
    )
    if quantized:
        notes.append("int8 weights dequantized as scale * (q - zero_point): the recovered model is approximate")
    return Recovered(config, state, quantized, notes)


def _num_heads(graph, values, producer, hidden: int) -> int:
    """From the attention score scale: scores = (Q K^T) / sqrt(head_dim) (or * 1/sqrt(head_dim))."""
    for node in graph.node:
        if node.op_type not in ("Div", "Mul") or len(node.input) != 2:
            continue
        scores, scale = node.input if node.input[1] in values else node.input[::-1]
        p = producer.get(scores)
        if p is None or p.op_type != "MatMul" or p.input[1] in values:
            continue
        scale = values.get(scale)
        if scale is None or scale.size != 1:
            continue
        s = float(scale.ravel()[0])
        head_dim = s * s if node.op_type == "Div" else 1.0 / (s * s)
        if abs(head_dim - round(head_dim)) < 1e-3 and round(head_dim) and hidden % round(head_dim) == 0:
            return hidden // round(head_dim)
    # Scaled-dot-product exports scale Q and K each by head_dim ** -0.25.
    for node in graph.node:
        if node.op_type == "Mul":
            for i in node.input:
                v = values.get(i)
                if v is not None and v.size == 1 and 0 < float(v.ravel()[0]) < 1:
                    head_dim = float(v.ravel()[0]) ** -4
                    if abs(head_dim - round(head_dim)) < 1e-2 and hidden % round(head_dim) == 0:
                        return hidden // round(head_dim)
    raise UnrecoverableGraphError("number of attention heads not found in the graph: pass num_heads")


def _layer_norm_eps(graph, values, producer) -> float:
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            return next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        if node.op_type == "Sqrt":
            add = producer.get(node.input[0])
            if add is not None and add.op_type == "Add":
                for i in add.input:
                    if i in values and values[i].size == 1:
                        return float(values[i].ravel()[0])
    return 1e-12


def recover(onnx_path: Path, out_dir: Path | None = None, tokenizer_json: Path | None = None,
            num_heads: int | None = None) -> Recovered:
    """Read the weights and, with `out_dir`, save a HuggingFace model directory (config, safetensors and the
    tokenizer) that `AutoModel.from_pretrained` loads."""
    recovered = read_weights(onnx_path, num_heads)
    if out_dir is not None:
        model = recovered.model()
        out_dir = Path(out_dir)
        model.save_pretrained(out_dir)
        if tokenizer_json is not None:
            from transformers import PreTrainedTokenizerFast

            tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_json), unk_token="[UNK]", sep_token="[SEP]",
                                          pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
            tok.save_pretrained(out_dir)
    return recovered


def encoder_parity(model: BertModel, onnx_path: Path, batches: list[dict[str, np.ndarray]]) -> dict:
    """Compare `model` with the ONNX graph's first output (last_hidden_state) on tokenized batches
    (input_ids, attention_mask, token_type_ids as int64): max abs diff over real tokens, and CLS / mean-pooled
    cosine similarity (min and mean over texts)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    max_abs, cls_cos, mean_cos, n = 0.0, [], [], 0
    for batch in batches:
        onnx_out = session.run(None, {k: v for k, v in batch.items() if k in wanted})[0]
        with torch.no_grad():
            torch_out = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
        mask = batch["attention_mask"].astype(bool)
        max_abs = max(max_abs, float(np.abs(onnx_out - torch_out)[mask].max()))
        m = mask[..., None].astype(np.float32)
        for a, b, kind in ((onnx_out[:, 0], torch_out[:, 0], cls_cos),
                           ((onnx_out * m).sum(1) / m.sum(1), (torch_out * m).sum(1) / m.sum(1), mean_cos)):
            kind += list((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))
        n += len(mask)
    return {"texts": n, "max_abs_diff": max_abs, "cls_cosine_min": float(min(cls_cos)),
            "cls_cosine_mean": float(np.mean(cls_cos)), "mean_pool_cosine_min": float(min(mean_cos))}
