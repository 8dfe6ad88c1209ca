"""exporters/recover_bge.py: BertModel weights read back from a plain torch.onnx.export graph (the layout of the
bge-small-zh-v1.5 ONNX file in the langchain4j jar), fp32 exactly and int8 (quantize_dynamic) approximately."""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
from transformers import BertConfig, BertModel  # noqa: E402

from streamsense.exporters.recover_bge import UnrecoverableGraphError, encoder_parity, read_weights  # noqa: E402


def _tiny_bert() -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=40, layer_norm_eps=1e-12,
                        attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():  # random biases, so that the dense weights are found by their named biases
        for name, param in model.named_parameters():
            if name.endswith("dense.bias") or ".self." in name and name.endswith(".bias"):
                param.normal_(0, 0.02)
    # LayerNorm weights stay all ones and the exporter keeps one copy of them (Identity for the others)
    return model


class _HiddenOnly(torch.nn.Module):
    """Graph output `last_hidden_state` only, inputs input_ids / attention_mask / token_type_ids (as in the jar)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def _export(model: BertModel, path) -> None:
    ids = torch.randint(1, 99, (2, 7))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_HiddenOnly(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path),
                          input_names=names, output_names=["last_hidden_state"],
                          dynamic_axes=axes | {"last_hidden_state": {0: "batch_size", 1: "sequence_length"}},
                          opset_version=14, dynamo=False)


def _batches():
    rng = np.random.default_rng(1)
    ids = rng.integers(1, 99, (3, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return [{"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = _tiny_bert()
    path = tmp_path_factory.mktemp("bge") / "model.onnx"
    _export(model, path)
    return model, path


def test_fp32_graph_recovers_the_exact_weights(exported):
    original, path = exported
    recovered = read_weights(path)
    assert not recovered.quantized
    cfg = recovered.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.max_position_embeddings) == (32, 2, 4, 64, 99, 40)
    assert cfg.layer_norm_eps == pytest.approx(1e-12)
    expected = {k: v for k, v in original.state_dict().items() if not k.endswith("position_ids")}
    assert set(recovered.state) == set(expected)
    for name, value in expected.items():
        assert torch.equal(recovered.state[name], value), name
    parity = encoder_parity(recovered.model(), path, _batches())
    assert parity["max_abs_diff"] < 1e-5
    assert parity["cls_cosine_min"] > 0.99999


def test_int8_dynamic_graph_is_dequantized(exported, tmp_path):
    quantization = pytest.importorskip("onnxruntime.quantization")
    original, path = exported
    q_path = tmp_path / "model_int8.onnx"
    quantization.quantize_dynamic(str(path), str(q_path), weight_type=quantization.QuantType.QInt8)
    recovered = read_weights(q_path)
    assert recovered.config.num_attention_heads == 4
    assert recovered.quantized
    for name, value in original.state_dict().items():
        if name.endswith("dense.weight") or ".self." in name and name.endswith(".weight"):
            # per-tensor int8: every weight within one quantization step of the original
            step = float(value.abs().max()) / 127
            assert (recovered.state[name] - value).abs().max() <= step, name
    parity = encoder_parity(recovered.model(), path, _batches())
    assert parity["cls_cosine_min"] > 0.99


def test_a_graph_without_bert_layers_is_refused(tmp_path):
    lin = torch.nn.Linear(4, 3)
    path = tmp_path / "linear.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lin, (torch.zeros(1, 4),), str(path), dynamo=False)
    with pytest.raises(UnrecoverableGraphError):
        read_weights(path)
