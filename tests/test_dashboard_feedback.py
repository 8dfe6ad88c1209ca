"""The dashboard's feedback panel (streams/feedback/panel.py, /api/feedback): labels collected, precision per alert
rule and head with its interval, a shadowed challenger's agreement; and the page drawing it in headless Chromium."""

import json
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import create_engine

from streamsense.streams.bi import run_report
from streamsense.streams.feedback.quality import wilson
from streamsense.streams.feedback.verdicts import Verdict, record
from tests.bi_rows import alert
from tests.test_dashboard import browser, get, serving  # noqa: F401  (browser: the module's Chromium fixture)
from tests.test_feedback import T0, _alert_id, _preds
from tests.test_feedback_challenger import CHALLENGER, CHAMPION, fill, shadow_row

DAY1, DAY2 = T0 + timedelta(days=1), T0 + timedelta(days=3, hours=5)


def _filled(url: str):
    """Six posts by the champion (a real alert on p0), shadowed by the challenger (would-be alerts on p1 and p2, a
    different sentiment on p5); returns the engine."""
    preds = _preds(6)
    fill(url, preds, [alert("high_risk_message", "high", [preds[0]], T0)],
         [shadow_row(p, CHALLENGER, ["high_risk_message"] if p["message_id"] in ("p1", "p2") else [],
                     "positive" if p["message_id"] == "p5" else None) for p in preds])
    return create_engine(url)


def _verdicts(engine) -> list[Verdict]:
    alert_id = _alert_id(engine)
    return [Verdict("post", "p0", "sentiment", "ann", verdict="right", created_at=DAY1, sample="random"),
            Verdict("post", "p1", "sentiment", "ann", label="positive", created_at=DAY1, sample="uncertain"),
            Verdict("post", "p3", "sentiment", "bob", verdict="right", created_at=DAY1, sample="random"),
            Verdict("post", "p0", "complaint", "bob", verdict="wrong", created_at=DAY1),
            Verdict("alert", alert_id, "alert", "cy", verdict="wrong", created_at=DAY2, sample="alert"),
            Verdict("would_alert", "post:p1", "high_risk_message", "ann", verdict="right", created_at=DAY2,
                    sample="would_alert"),
            Verdict("would_alert", "post:p2", "high_risk_message", "cy", verdict="right", created_at=DAY2)]


def test_the_feedback_api_counts_labels_precision_and_shadowing(database_url):
    engine = _filled(database_url)
    with serving(database_url) as base:
        status, _, body = get(f"{base}/api/feedback")
        empty = json.loads(body)
        assert status == 200 and empty["verdicts"] == 0 and empty["labels"] == empty["precision"] == []
        assert "no verdicts yet" in empty["hint"] and "streamsense feedback add post:ID" in empty["hint"]
        assert [s["messages"] for s in empty["shadow"]] == [6]  # shadowing shows before anyone judged
        verdicts = _verdicts(engine)
        assert record(engine, verdicts).added == len(verdicts)
        data = json.loads(get(f"{base}/api/feedback")[2])
    assert data["hint"] is None and (data["verdicts"], data["people"]) == (len(verdicts), 3)
    per_head = Counter((v.kind, v.head) for v in verdicts)
    random = Counter((v.kind, v.head) for v in verdicts if v.sample == "random")
    queue = Counter((v.kind, v.head) for v in verdicts if v.sample not in (None, "random"))
    assert {(r["kind"], r["head"]): (r["n"], r["random"], r["queue"], r["outside"]) for r in data["labels"]} == {
        key: (n, random[key], queue[key], n - random[key] - queue[key]) for key, n in per_head.items()}
    days = Counter(v.created_at.date().isoformat() for v in verdicts)
    assert [(d["bucket_start"][:10], d["n"], d["random"]) for d in data["per_day"]] == [
        (DAY1.date().isoformat(), days[DAY1.date().isoformat()], 2), (DAY2.date().isoformat(), 3, 0)]
    # the precision lines are the BI report's, alert rules first, then the challenger's would-be alerts, then heads
    report = run_report(engine, "feedback-precision").records()
    assert sorted(map(json.dumps, data["precision"])) == sorted(map(json.dumps, report))
    assert [r["scope"] for r in data["precision"]] == ["alert rule", "would-be alert rule"] + ["head"] * 3
    negative = next(r for r in data["precision"] if (r["name"], r["predicted"]) == ("sentiment", "negative"))
    low, high = wilson(2, 2)  # the model said negative on p0 and p3, both judged right (and neutral on p1: wrong)
    assert (negative["n"], negative["right"], negative["low"], negative["high"]) == (2, 2, round(low, 4),
                                                                                    round(high, 4))
    assert (negative["n_random"], negative["precision_random"]) == (2, 1.0)
    [shadow] = data["shadow"]
    low, high = wilson(2, 2)
    assert (shadow["champion"], shadow["challenger"], shadow["messages"], shadow["sentiment_agreement"],
            shadow["challenger_alerts"], shadow["judged"], shadow["precision"], shadow["low"]) == (
        CHAMPION, CHALLENGER, 6, round(5 / 6, 4), 2, 2, 1.0, round(low, 4))
    engine.dispose()


def test_the_feedback_panel_in_chromium(tmp_path, browser, artifacts):  # noqa: F811
    from selenium.webdriver.support.ui import WebDriverWait

    url = f"sqlite:///{tmp_path / 'f.db'}"
    engine = _filled(url)
    browser.get("about:blank")
    browser.get_log("browser")

    def count(css: str) -> int:
        return browser.execute_script(f"return document.querySelectorAll({css!r}).length")

    with serving(url) as base:
        browser.get(base)
        WebDriverWait(browser, 30).until(lambda b: b.execute_script("return document.body.dataset.ready === '1'"))
        summary = browser.find_element("id", "feedback-summary")
        assert summary.text.startswith("no verdicts yet") and "streamsense feedback queue" in summary.text
        assert count("#feedback-precision-chart g.precision-row") == 0
        assert count("#feedback-shadow-table tbody tr") == 1  # shadowing shows before anyone judged
        verdicts = _verdicts(engine)
        record(engine, verdicts)
        browser.refresh()
        WebDriverWait(browser, 30).until(lambda b: count("#feedback-precision-chart g.precision-row") > 0)
        data = json.loads(get(f"{base}/api/feedback")[2])
        text = browser.find_element("id", "feedback-summary").text
        assert text.startswith(f"{len(verdicts)} verdicts from 3 people: 2 on the review queue's random share")
        rows = browser.execute_script("""return [...document.querySelectorAll(
            '#feedback-precision-chart g.precision-row')].map(g => { const line = g.querySelector('line.interval'),
            dot = g.querySelector('circle.estimate');
            return [g.dataset.scope, g.dataset.name, Number(line.getAttribute('x1')), Number(line.getAttribute('x2')),
                    Number(dot.getAttribute('cx')), g.querySelectorAll('circle.random-estimate').length]; })""")
        assert [(r[0], r[1]) for r in rows] == [(p["scope"], p["name"]) for p in data["precision"]]
        for (_, _, x1, x2, cx, ring), p in zip(rows, data["precision"]):
            assert x1 <= cx <= x2 and (x2 > x1) == (p["high"] > p["low"])  # the interval around the estimate
            if p["high"] > p["low"]:  # drawn to scale: the dot sits where the precision lies in its interval
                assert (cx - x1) / (x2 - x1) == pytest.approx((p["precision"] - p["low"]) / (p["high"] - p["low"]),
                                                              abs=0.01)
            assert ring == (p["n_random"] > 0)
        assert count("#feedback-labels-table tbody tr") == len(data["labels"]) == 4
        assert count("#feedback-days-chart svg rect.bar") == 3  # day 1: random and other; day 2: other
        cells = browser.execute_script("return [...document.querySelectorAll('#feedback-shadow-table tbody td')]"
                                       ".map(td => td.textContent)")
        assert cells[:8] == [CHAMPION, CHALLENGER, "6", "83%", "100%", "2", "2", "100% [34%–100%]"]
        panel = browser.find_element("id", "feedback")
        browser.execute_script("arguments[0].scrollIntoView()", panel)
        assert panel.screenshot(str(artifacts / "dashboard-feedback.png"))
        from PIL import Image  # docs/images/dashboard-feedback.png is this one, 900 px wide in 128 colours

        shot = Image.open(artifacts / "dashboard-feedback.png").convert("RGB")
        shot.resize((900, round(shot.height * 900 / shot.width)), Image.LANCZOS).quantize(128).save(
            artifacts / "dashboard-feedback-docs.png", optimize=True)
        assert (artifacts / "dashboard-feedback-docs.png").stat().st_size < 150_000
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        browser.get("about:blank")
    assert errors == []
    engine.dispose()
