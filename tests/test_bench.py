"""Smoke run of `streamsense bench`: every figure produced, consistent, and nothing lost on the way."""

import pytest

from streamsense.bench import run_bench
from streamsense.settings import Settings

KEYS = {"model_only_msgs_per_s", "tokenize_infer_msgs_per_s", "e2e_msgs_per_s", "e2e_p50_ms", "e2e_p99_ms",
        "baseline_pipeline_msgs_per_s", "baseline_pipeline_batched_msgs_per_s", "ratio_e2e_to_model_only",
        "ratio_e2e_to_baseline_batched", "messages", "lost", "duplicated", "offset_gaps", "device"}


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    """Two workers in one group and two producer processes, as on a GPU box, counted end to end."""
    result = run_bench(Settings(batch_size=32), messages=300, model_messages=128, baseline_messages=64,
                       db_path=tmp_path / "bench.db", timeout=180, workers=2, producers=2, log=lambda m: None)
    assert KEYS <= set(result)
    assert (result["messages"], result["lost"], result["duplicated"], result["offset_gaps"], result["device"]) == (
        300, 0, 0, 0, "cpu")
    assert (result["workers"], result["producers"]) == (2, 2)
    for key in ("model_only_msgs_per_s", "tokenize_infer_msgs_per_s", "e2e_msgs_per_s", "produce_msgs_per_s",
                "baseline_pipeline_msgs_per_s", "baseline_pipeline_batched_msgs_per_s"):
        assert result[key] > 0, key
    assert result["e2e_p50_ms"] <= result["e2e_p95_ms"] <= result["e2e_p99_ms"]
    assert result["ratio_e2e_to_model_only"] == pytest.approx(
        result["e2e_msgs_per_s"] / result["model_only_msgs_per_s"], abs=1e-3)
    assert result["ratio_e2e_to_baseline_batched"] == pytest.approx(
        result["e2e_msgs_per_s"] / result["baseline_pipeline_batched_msgs_per_s"], abs=1e-2)
