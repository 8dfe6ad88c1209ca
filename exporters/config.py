"""ONNX export configs, one per encoder architecture (after Hugging Face optimum's OnnxConfig)."""

from dataclasses import dataclass

import numpy as np


class UnsupportedArchitectureError(ValueError):
    pass


@dataclass(frozen=True)
class BertOnnxConfig:
    """BERT-family encoders (MiniLM is a BERT) under a multi-task head: ids + mask in, logits per task out."""

    num_heads: int
    hidden_size: int
    vocab_size: int
    task_names: tuple[str, ...]
    opset: int = 17
    optimizer_model_type: str = "bert"  # onnxruntime.transformers.optimizer's model_type
    # onnxruntime's attention fusion recognises the eager attention graph, not the SDPA one
    attn_implementation: str = "eager"
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    @classmethod
    def from_hf(cls, hf_config, task_names) -> "BertOnnxConfig":
        return cls(hf_config.num_attention_heads, hf_config.hidden_size, hf_config.vocab_size, tuple(task_names))

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(f"{name}_logits" for name in self.task_names)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {name: {0: "batch", 1: "sequence"} for name in self.input_names}
        return axes | {name: {0: "batch"} for name in self.output_names}

    def dummy_inputs(self, batch: int = 2, sequence: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """int64 ids and a right-padded mask: a padded row keeps the mask path in the traced graph."""
        ids = np.random.default_rng(0).integers(0, self.vocab_size, (batch, sequence), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[-1, sequence // 2 :] = 0
        return ids, mask


EXPORT_CONFIGS = {"bert": BertOnnxConfig}


def export_config_for(hf_config, task_names) -> BertOnnxConfig:
    """The export config for `hf_config.model_type`; unknown architectures fail with the supported list."""
    try:
        config_class = EXPORT_CONFIGS[hf_config.model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"no ONNX export config for model_type {hf_config.model_type!r}; supported: {sorted(EXPORT_CONFIGS)}"
        ) from None
    return config_class.from_hf(hf_config, task_names)
