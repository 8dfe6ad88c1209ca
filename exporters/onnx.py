"""Trained directory -> shipped model directory: int8 (CPU) and fp16 (CUDA) ONNX, tokenizer, model card."""

import json
import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime
import torch
import transformers

from streamsense.exporters.config import export_config_for
from streamsense.exporters.convert import optimize, to_fp16, to_int8, to_onnx
from streamsense.exporters.parity import TOLERANCES, Tolerance, check_parity
from streamsense.models.data import load_split
from streamsense.models.registry import CARD, FORMAT, file_entries, write_card
from streamsense.models.network import load_trained
from streamsense.models.tasks import task_entry

log = logging.getLogger(__name__)

VARIANTS = {
    "int8": {"file": "model.int8.onnx", "device": "cpu"},
    "fp16": {"file": "model.fp16.onnx", "device": "cuda"},
}
FP32 = "model.fp32.onnx"  # optimized fp32 graph: the source of both variants, checked for parity too
TOKENIZER = "tokenizer.json"
TRAINING_KEYS = ("device", "minutes", "steps", "train_examples", "config", "soup", "soup_search", "init")  # to the card


def export(
    trained_dir: Path,
    out_dir: Path,
    datasets_dir: Path,
    parity_limit: int = 200,
    require_fp16: bool = False,
    keep_fp32: bool = False,
    max_length: int | None = None,
    name: str | None = None,
    tolerances: dict[str, Tolerance] = TOLERANCES,
) -> dict:
    """Export, check parity on `parity_limit` validation texts per task, write the card and return it.

    `max_length` defaults to the length the model was trained and selected at, so serving truncates as training
    did. Raises ParityError (and writes no model.json) when a variant strays from the PyTorch model; the fp16
    variant may be skipped where onnxruntime cannot run it, unless `require_fp16`.
    """
    trained_dir, out_dir = Path(trained_dir), Path(out_dir)
    training = json.loads((trained_dir / "training.json").read_text())
    max_length = max_length or training["config"]["max_length"]
    model, tokenizer, tasks = load_trained(trained_dir)
    config = export_config_for(model.encoder.config, model.task_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CARD).unlink(missing_ok=True)  # the directory is a model again only once parity passes

    with tempfile.TemporaryDirectory() as tmp:
        log.info("exporting %s to ONNX (opset %d)", trained_dir, config.opset)
        to_onnx(model, config, Path(tmp) / "raw.onnx")
        log.info("optimizing the fp32 graph")
        optimized = optimize(Path(tmp) / "raw.onnx", config, out_dir / FP32)
    log.info("converting to fp16")
    to_fp16(optimized, out_dir / VARIANTS["fp16"]["file"])
    log.info("quantizing to int8")
    to_int8(out_dir / FP32, out_dir / VARIANTS["int8"]["file"])

    emoji = training["config"].get("emoji", "keep")  # trained before the option: emoji as they were
    samples = {t.name: load_split(datasets_dir, t, "validation", parity_limit, emoji=emoji) for t in tasks}
    variants = {"fp32": (out_dir / FP32, "cpu")} | {v: (out_dir / s["file"], s["device"]) for v, s in VARIANTS.items()}
    try:
        parity = check_parity(
            model, tokenizer, tasks, samples, variants, max_length, tolerances, () if require_fp16 else ("fp16",)
        )
    finally:
        if not keep_fp32:
            (out_dir / FP32).unlink()

    shutil.copy2(trained_dir / TOKENIZER, out_dir / TOKENIZER)
    card = {
        "format": FORMAT,
        "name": name or out_dir.name,
        "version": None,
        "base_model": training.get("base_model") or training["config"]["base_model"],
        "architecture": model.encoder.config.model_type,
        "pooling": model.pooling,
        "languages": training.get("languages", ["en"]),
        "max_length": max_length,
        "text": {"emoji": emoji},  # models/registry.py text_options: serving prepares text as training did
        "tasks": training.get("tasks") or [task_entry((t,)) for t in tasks],
        "inputs": list(config.input_names),
        "outputs": list(config.output_names),
        "variants": VARIANTS,
        "files": file_entries(out_dir, [s["file"] for s in VARIANTS.values()] + [TOKENIZER]),
        "parity": parity,
        "metrics": {"validation": training["validation"]},
        "training": {key: training[key] for key in TRAINING_KEYS if key in training},
        "tools": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_card(out_dir, card)
    log.info("exported %s: %s", out_dir, ", ".join(f"{f} {e['bytes'] / 1e6:.1f} MB" for f, e in card["files"].items()))
    return card
