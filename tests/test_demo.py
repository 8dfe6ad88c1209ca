"""`streamsense demo` (what the README's first command runs): the bundled samples through the embedded broker,
a worker process and SQLite, with the shipped model."""

import sqlite3

from streamsense.demo import run_demo
from streamsense.settings import Settings


def test_demo_stores_every_sample_and_raises_the_staged_volume_alert(tmp_path):
    db = tmp_path / "demo.db"
    summary = run_demo(Settings(), db, timeout=240, log=lambda m: None)
    assert (summary["posts"]["produced"], summary["posts"]["stored"]) == (420, 420)
    assert (summary["tickets"]["produced"], summary["tickets"]["stored"]) == (150, 150)
    assert summary["dlq"] == 6
    assert sum(summary["posts"]["sentiment"].values()) == 420
    assert summary["model"].startswith("streamsense-minilm:")
    with sqlite3.connect(db) as conn:
        windowed = conn.execute("SELECT rule, key FROM alerts WHERE window_start IS NOT NULL").fetchall()
    # the samples put 62 northwind posts in one minute after ten quiet ones: a spike whatever the model says
    assert ("volume_spike", "post:northwind") in windowed
    assert summary["alerts"] > len(windowed)  # per-message alerts (critical risk, watched brands) too
