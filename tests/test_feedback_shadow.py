"""Shadowing in the worker (streams/feedback/shadow.py): a challenger beside the champion on the same batches, its
results stored apart, never published, never alerting."""

import json

from sqlalchemy import select

from streamsense.models.registry import set_alias
from streamsense.streams.feedback.evidence import shadowed
from streamsense.streams.feedback.schema import shadow_predictions
from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.feedback.shadow import sampled, same_tokens, shadow_rows
from streamsense.streams.records import decode
from streamsense.streams.worker import load_classifier
from streamsense.streams.schema import alerts, predictions
from streamsense.streams.store import Store
from tests.helpers import as_lines, consume_all, produce, settings_for, wait_until, worker
from tests.test_feedback_registry import NAME, TEXTS, _reversed, _version


def test_the_sample_is_a_stable_share():
    ids = [f"m{i}" for i in range(4000)]
    half = {i for i in ids if sampled("post", i, 0.5)}
    assert 1850 < len(half) < 2150  # binomial(4000, 0.5): ±4.7 standard deviations
    assert half == {i for i in ids if sampled("post", i, 0.5)}  # the same messages every time (replays)
    assert {i for i in ids if sampled("post", i, 0.1)} <= half  # a smaller share is inside a larger one
    assert all(sampled("ticket", i, 1.0) for i in ids) and not any(sampled("post", i, 0.0) for i in ids)


def test_a_challenger_shadows_the_champion(broker, tmp_path, unique):
    root = tmp_path / "registry"
    _version(root, 3, link_onnx=True)
    _reversed(root, 4)  # calls negative what version 3 calls positive
    set_alias(root, NAME, "champion", 3, "promote")
    set_alias(root, NAME, "challenger", 4, "set")
    url = f"sqlite:///{tmp_path / 'shadow.db'}"
    settings = settings_for(broker.bootstrap_servers, url, unique, model_registry=root, model=f"{NAME}:champion",
                            language_models="", shadow_model=f"{NAME}:challenger", shadow_share=0.5)
    posts = [{"id": f"{ident}-{n}", "text": f"{text} ({n})", "channel": "acme"}
             for ident, (text, _) in TEXTS.items() for n in range(5)]
    store = Store(url, settings.app_id)
    store.migrate()
    with worker(settings, tmp_path):
        produce(settings, settings.topic_posts, as_lines(posts))
        wait_until(lambda: store.count(predictions) >= len(posts), 180, what="results stored")
        wait_until(lambda: store.count(shadow_predictions) > 0, 30, what="shadow rows")
    with store.engine.connect() as conn:
        champion = {r.message_id: r for r in conn.execute(select(predictions))}
        shadow = {r.message_id: r for r in conn.execute(select(shadow_predictions))}
        alert_versions = set(conn.execute(select(alerts.c.model_version)).scalars())
    assert set(shadow) == {p["id"] for p in posts if sampled("post", p["id"], 0.5)}  # the share, exactly
    assert {r.model_version for r in champion.values()} == {f"{NAME}:3"}
    assert {r.model_version for r in shadow.values()} == {f"{NAME}:4"}
    flipped = {"positive": "negative", "negative": "positive", "neutral": "neutral"}
    assert all(shadow[i].sentiment == flipped[champion[i].sentiment] for i in shadow)  # its own answers, stored apart
    assert all(shadow[i].risk_labels == champion[i].risk_labels for i in shadow)  # the same risk heads
    assert f"{NAME}:4" not in alert_versions  # it never alerts
    published = consume_all(settings, settings.topic_predictions, len(posts), timeout=30)
    assert len(published) == len(posts) and all(b'"model_version":"streamsense-minilm:3"' in m.value.replace(b" ", b"")
                                                for m in published)
    report = shadowed(store.engine, root / NAME / "3", root / NAME / "4")
    assert report["messages"] == len(shadow) and report["sentiment_agreement"] == 0.0  # TEXTS: none neutral
    assert report["risk_level_agreement"] == 1.0  # the same risk heads
    store.dispose()


def test_the_champions_tokens_serve_a_challenger_that_tokenizes_alike():
    model = load_classifier(Settings(device="cpu", language_models=""))
    assert same_tokens(model, model)
    records = [decode("post", json.dumps({"id": f"p{i}", "text": text, "channel": "acme"}).encode())
               for i, (text, _) in enumerate(TEXTS.values())]
    valid = [(None, r) for r in records]
    stored = {("post", r.id) for r in records}
    encoded = model.tokenize([r.model_text for r in records])
    rules = AlertRules.load()
    reused = shadow_rows(model, valid, stored, 0.6, rules, encoded, model)
    own = shadow_rows(model, valid, stored, 0.6, rules)
    assert [r["message_id"] for r in reused] == [r.id for r in records if sampled("post", r.id, 0.6)]
    assert [{k: v for k, v in r.items() if k != "stored_at"} for r in reused] == [
        {k: v for k, v in r.items() if k != "stored_at"} for r in own]


def test_a_routed_champions_tokens_and_signals_serve_the_challenger(monkeypatch):
    """With a routed champion (English + Chinese) the challenger takes the English route's tokens, the pattern
    signals the champion found (its risk rules have the same signals) and what its identity-blind second look found
    (which texts name a group, their counterfactuals' tokens), tokenizes only the Chinese messages itself, and stores
    exactly the rows it stores on its own tokens and rules: signals that fire, identity terms and Chinese text
    included."""
    from streamsense.streams.feedback.shadow import champion_tokens

    champion = load_classifier(Settings(device="cpu"))  # the default routes zh to the Chinese model
    challenger = load_classifier(Settings(device="cpu", language_models=""))
    assert hasattr(champion, "routes") and same_tokens(champion.routes[0], challenger)
    texts = [text for text, _ in TEXTS.values()] + [
        "@AcmeAir I will sue you for every penny if my bags aren't back by Friday",
        "You charged me twice for one order, this is fraud", "I'm a gay person and a loyal customer for ten years",
        "Gay people are trash and so is your airline", "我要起诉你们，法院见", "外卖太难吃了，再也不点了",
        "The old man at the gate was rude, cancelling my subscription"]
    records = [decode("post", json.dumps({"id": f"r{i}", "text": t, "channel": "acme"}).encode())
               for i, t in enumerate(texts)]
    valid = [(None, r) for r in records]
    stored = {("post", r.id) for r in records}
    model_texts = [r.model_text for r in records]
    langs = ["zh" if any("\u4e00" <= c <= "\u9fff" for c in t) else "en" for t in model_texts]
    encoded = champion.tokenize(model_texts, langs)
    decided = champion.decide(model_texts, encoded)
    assert decided.fired is not None and sum(bool(f) for f in decided.fired) >= 3
    assert [b.language for b in decided.blinded] == ["en"] and decided.blinded[0].named  # the gay person's texts
    rules = AlertRules.load()
    tokenized = []
    real = challenger.runtime.tokenize
    monkeypatch.setattr(challenger.runtime, "tokenize", lambda batch: tokenized.append(list(batch)) or real(batch))
    reused = shadow_rows(challenger, valid, stored, 1.0, rules, encoded, champion, decided.fired, decided.blinded)
    # the challenger tokenized the Chinese texts only: neither the English ones nor the blinded counterfactuals
    assert tokenized == [[t for t, lang in zip(model_texts, langs) if lang == "zh"]]
    monkeypatch.undo()
    own = shadow_rows(challenger, valid, stored, 1.0, rules)
    assert len(reused) == len(texts)
    assert [{k: v for k, v in r.items() if k != "stored_at"} for r in reused] == [
        {k: v for k, v in r.items() if k != "stored_at"} for r in own]
    tokens = champion_tokens(champion, challenger, encoded, list(range(len(texts))), model_texts)
    english = dict(zip(encoded.parts[0][1], encoded.parts[0][2].ids))
    for i, ids in enumerate(tokens.ids):
        assert (ids is english[i]) if langs[i] == "en" else (i not in english)  # reused, not copied
    assert tokens.ids == challenger.tokenize(model_texts).ids
