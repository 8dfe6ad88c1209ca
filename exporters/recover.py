"""Shipped model directory -> trained directory: the PyTorch weights read back from the fp16 ONNX graph.

Git keeps only the exported ONNX variants, not the weights they came from. Reading them back lets a shipped
model be fine-tuned further (`train --init-from`) or averaged with another (`models soup`). The layout read
here is the one `optimize` writes for BERT: EmbedLayerNormalization; per layer an Attention with packed QKV
weights, three MatMuls (attention output, intermediate, output), their biases in BiasGelu and two
SkipLayerNormalizations; one Gemm per task head.
"""

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from streamsense.exporters.parity import check_parity
from streamsense.models.data import load_split
from streamsense.models.registry import text_options, verify
from streamsense.models.tasks import TASKS_BY_NAME
from streamsense.models.network import MultiTaskModel, save_trained

SOURCE_VARIANT = "fp16"  # the int8 variant lost too much to read back


class UnrecoverableGraphError(ValueError):
    pass


def _nodes(graph, op_type: str) -> list:
    return [n for n in graph.node if n.op_type == op_type]


def _attribute(node, name: str, default=None):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _head_gemms(graph) -> dict[str, object]:
    """Output name -> the Gemm computing it (through the fp16 graph's output Cast)."""
    producer = {out: node for node in graph.node for out in node.output}
    gemms = {}
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type == "Cast":
            node = producer.get(node.input[0])
        if node is not None and node.op_type == "Gemm":
            gemms[output.name] = node
    return gemms


def read_weights(onnx_path: Path, task_names: list[str]) -> tuple[BertConfig, dict[str, torch.Tensor]]:
    """The encoder config and the state dict of a MultiTaskModel, as float32, from an optimized BERT graph.

    Weights are found by their place in the graph, not by name: the exporter merges equal initializers.
    """
    graph = onnx.load(onnx_path).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).astype(np.float32)) for t in graph.initializer}
    embed, attention, matmul, skip_norm, gelu = (
        _nodes(graph, op)
        for op in ("EmbedLayerNormalization", "Attention", "MatMul", "SkipLayerNormalization", "BiasGelu")
    )
    layers = len(attention)
    if len(embed) != 1 or not layers or (len(matmul), len(skip_norm), len(gelu)) != (3 * layers, 2 * layers, layers):
        raise UnrecoverableGraphError(
            f"{onnx_path}: expected the fused BERT layout (1 EmbedLayerNormalization; per layer 1 Attention, "
            f"3 MatMul, 2 SkipLayerNormalization, 1 BiasGelu), found {len(embed)}, {layers}, {len(matmul)}, "
            f"{len(skip_norm)}, {len(gelu)}"
        )
    gemms = _head_gemms(graph)
    missing = [t for t in task_names if f"{t}_logits" not in gemms]
    if missing:
        raise UnrecoverableGraphError(f"{onnx_path}: no head output for {', '.join(missing)}")
    words, positions, types, norm_weight, norm_bias = (init[name] for name in embed[0].input[2:7])
    hidden = words.shape[1]
    config = BertConfig(
        vocab_size=words.shape[0], hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=_attribute(attention[0], "num_heads"), intermediate_size=init[matmul[1].input[1]].shape[1],
        max_position_embeddings=positions.shape[0], type_vocab_size=types.shape[0],
        layer_norm_eps=_attribute(embed[0], "epsilon", 1e-12),
    )
    state = {
        "encoder.embeddings.word_embeddings.weight": words,
        "encoder.embeddings.position_embeddings.weight": positions,
        "encoder.embeddings.token_type_embeddings.weight": types,
        "encoder.embeddings.LayerNorm.weight": norm_weight,
        "encoder.embeddings.LayerNorm.bias": norm_bias,
        # not in the graph (the heads read mean-pooled tokens): left at zero
        "encoder.pooler.dense.weight": torch.zeros(hidden, hidden),
        "encoder.pooler.dense.bias": torch.zeros(hidden),
    }
    for i, node in enumerate(attention):
        layer = f"encoder.encoder.layer.{i}."
        qkv_weight, qkv_bias = init[node.input[1]], init[node.input[2]]
        for j, name in enumerate(("query", "key", "value")):
            state[f"{layer}attention.self.{name}.weight"] = qkv_weight[:, j * hidden : (j + 1) * hidden].T.contiguous()
            state[f"{layer}attention.self.{name}.bias"] = qkv_bias[j * hidden : (j + 1) * hidden]
        names = ("attention.output", "intermediate", "output")
        for name, node_ in zip(names, matmul[3 * i : 3 * i + 3]):
            state[f"{layer}{name}.dense.weight"] = init[node_.input[1]].T.contiguous()
        state[f"{layer}intermediate.dense.bias"] = init[gelu[i].input[1]]
        for name, node_ in zip(("attention.output", "output"), skip_norm[2 * i : 2 * i + 2]):
            # SkipLayerNormalization inputs: x, skip, gamma, beta, bias
            gamma, beta, bias = (init[x] for x in node_.input[2:5])
            state |= {f"{layer}{name}.LayerNorm.weight": gamma, f"{layer}{name}.LayerNorm.bias": beta,
                      f"{layer}{name}.dense.bias": bias}
    for task in task_names:
        gemm = gemms[f"{task}_logits"]
        weight = init[gemm.input[1]]
        state[f"heads.{task}.weight"] = weight if _attribute(gemm, "transB", 0) else weight.T.contiguous()
        state[f"heads.{task}.bias"] = init[gemm.input[2]]
    return config, state


def recover(model_dir: Path, out_dir: Path, datasets_dir: Path, parity_limit: int = 100) -> dict:
    """Write a trained directory rebuilt from `model_dir`'s fp16 variant and return its training.json.

    The rebuilt PyTorch model is checked against the ONNX graph it came from with the export's fp16 parity
    check (ParityError beyond tolerance), on `parity_limit` validation texts per task.
    """
    model_dir = Path(model_dir)
    card = verify(model_dir)
    if SOURCE_VARIANT not in card["variants"]:
        raise UnrecoverableGraphError(f"{model_dir} has no {SOURCE_VARIANT} variant to read weights from")
    source = model_dir / card["variants"][SOURCE_VARIANT]["file"]
    tasks = [TASKS_BY_NAME[t["name"]] for t in card["tasks"]]
    config, state = read_weights(source, [t.name for t in tasks])
    model = MultiTaskModel(BertModel(config), tasks)
    model.load_state_dict(state)
    model.eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    emoji = text_options(card)["emoji"]
    samples = {t.name: load_split(datasets_dir, t, "validation", parity_limit, emoji=emoji) for t in tasks}
    parity = check_parity(model, tokenizer, tasks, samples, {SOURCE_VARIANT: (source, "cpu")}, card["max_length"])
    summary = {
        "base_model": card["base_model"],
        "torch": torch.__version__,
        **{key: card["training"][key] for key in ("device", "minutes", "steps", "train_examples")},
        "config": card["training"]["config"] | {"emoji": emoji},
        "validation": card["metrics"]["validation"],
        "history": [],
        "recovered_from": {
            "model": f"{card['name']}:{card['version']}",
            "file": source.name,
            "sha256": card["files"][source.name]["sha256"],
            "parity": parity["variants"][SOURCE_VARIANT],
        },
    }
    save_trained(Path(out_dir), model, tokenizer, summary)
    return summary
