"""Smoke run of `streamsense bench`: every figure produced, consistent, and nothing lost on the way."""

import pytest

from datetime import datetime, timedelta

from streamsense.bench import batch_sizes, curve_table, max_partition_wait, run_bench, run_curve, run_load
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


@pytest.mark.slow
def test_latency_curve_paces_each_row_and_reports_latency_batches_and_cpu(tmp_path):
    """`bench --load --curve 20,100`: a burst for the ceiling, then a paced run at each percent of it."""
    settings = Settings(null_model=True, topic_partitions=2, batch_size=32)  # a cap the 300-message burst fills
    result = run_curve(settings, 300, [20, 100], tmp_path / "curve.db", timeout=180, row_seconds=1, log=lambda m: None)
    burst, low, full = result["curve"]
    assert [r["percent"] for r in result["curve"]] == ["burst", 20, 100]
    assert result["ceiling_msgs_per_s"] == burst["msgs_per_s"] > 0
    assert low["rate"] == round(0.2 * burst["msgs_per_s"], 1) and full["rate"] == round(burst["msgs_per_s"], 1)
    for row in result["curve"]:
        assert (row["lost"], row["duplicated"], row["offset_gaps"]) == (0, 0, 0), row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        # every message in some batch, none over the cap
        assert 1 <= row["batch_size_p50"] <= row["batch_size_max"] <= settings.batch_size
        assert row["batches"] * row["batch_size_mean"] == pytest.approx(row["messages"], rel=0.01)
        assert row["worker_cpu_us_per_msg"] > 0
    assert low["messages"] >= 100  # a row is never shorter than that
    table = curve_table(result)
    assert table.count("\n") == 2 + len(result["curve"]) - 1 and "| 20 % |" in table


def test_batch_sizes_are_counted_per_commit_time():
    stored = [_at(0)] * 3 + [_at(1)] + [_at(2)] * 5
    assert sorted(batch_sizes(stored)) == [1, 3, 5]
