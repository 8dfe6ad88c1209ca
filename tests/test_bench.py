"""Smoke run of `streamsense bench`: every figure produced, consistent, and nothing lost on the way."""

import pytest

from datetime import datetime, timedelta

from streamsense.bench import max_partition_wait, run_bench, run_load
from streamsense.settings import Settings
from streamsense.brokers import apache_kafka_missing

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
    assert result["broker"] == "tansu" and result["max_partition_wait_s"] >= 0


def _at(seconds: float) -> datetime:
    return datetime(2026, 11, 28) + timedelta(seconds=seconds)


def test_max_partition_wait_counts_only_gaps_in_which_another_partition_progressed():
    # partition 0 commits at 0, 1, 2 and then 9; partition 1 commits every second: 0 waited 7 s
    stored = [(0, _at(t)) for t in (0, 1, 2, 9)] + [(1, _at(t)) for t in range(10)]
    assert max_partition_wait(stored) == 7.0
    # partition 2 first commits 5 s after the run's first commit while others progress: a 5 s wait from the start
    assert max_partition_wait(stored + [(2, _at(5))]) == 7.0
    assert max_partition_wait([(0, _at(0)), (1, _at(0.5)), (2, _at(12))]) == 12.0
    # a pause of the whole pipeline is no partition's wait: nobody progressed in between
    assert max_partition_wait([(0, _at(0)), (1, _at(0)), (0, _at(30)), (1, _at(30))]) == 0.0
    assert max_partition_wait([(0, _at(0)), (0, _at(50))]) == 0.0


@pytest.mark.slow
def test_load_run_on_apache_kafka(tmp_path):
    """`bench --load --broker kafka`: the same end-to-end measurement on a real Apache Kafka broker."""
    reason = apache_kafka_missing()
    if reason:
        pytest.skip(reason)
    result = run_load(Settings(batch_size=32, topic_partitions=2), 400, tmp_path / "load.db", timeout=180,
                      broker="kafka")
    assert (result["broker"], result["messages"], result["lost"], result["duplicated"], result["offset_gaps"]) == (
        "kafka", 400, 0, 0, 0)
    assert result["msgs_per_s"] > 0
    # every message (and the warm-up one) accounted for by the per-partition offset check
    assert sum(p["handled"] for p in result["partitions"].values()) == 401


def test_load_run_with_a_declared_mapping_against_the_fixed_shape(tmp_path):
    """`bench --load --inputs both`: the built-in shape and Twitter v2 through a declared mapping, alternated, every
    message counted in both, the decode stage (decode + map) timed in each."""
    result = run_load(Settings(batch_size=32, topic_partitions=2, null_model=True), 300, tmp_path / "shapes.db",
                      timeout=180, shape="both")
    for shape in ("fixed", "twitter-v2"):
        runs = result[f"{shape}_runs"]
        assert len(runs) == 2
        for run in runs:
            assert (run["lost"], run["duplicated"], run["offset_gaps"]) == (0, 0, 0)
            assert run["msgs_per_s"] > 0 and run["stage_us_per_msg"]["decode"] > 0
    assert result["ratio_twitter_v2_to_fixed"] == pytest.approx(
        result["twitter-v2_msgs_per_s_mean"] / result["fixed_msgs_per_s_mean"], abs=1e-3)
