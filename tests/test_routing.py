"""models/routing.py: one batch, several models. Each language's messages go to the model that reads it (the Chinese
model for `zh`, the primary for the rest), results come back in input order with the model that made each one, and a
Chinese row stores p_neutral NULL (the Chinese sentiment head has no neutral label; migration 0005)."""

import json

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text

from streamsense.models.bias import identity_lexicon
from streamsense.models.classifier import Classifier
from streamsense.models.language import identify
from streamsense.models.risk import RiskRules
from streamsense.models.routing import RoutedClassifier
from streamsense.models.tasks import Task
from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.contracts import Batch, Incoming
from streamsense.streams.pipeline import Processor
from streamsense.streams.schema import predictions
from streamsense.streams.store import Store, migrate
from streamsense.streams.worker import language_models
from tests.conftest import FIXTURE_DATASETS
from tests.test_language import _alembic, foreign_messages
from tests.test_pipeline import TOPICS, FakeRuntime, _plain, assert_same, reference_process, sample_messages

ZH_POSTS = ["这家店的外卖太慢了，等了两个小时才送到", "客服态度很好，问题很快就解决了", "你们再不退款我就去法院起诉",
            "味道不错，分量也足，下次还点", "我被重复扣款了两次，这是诈骗吧", "送来的菜都凉了，差评"]


class FakeZhRuntime(FakeRuntime):
    """A Chinese stand-in: two-class sentiment and an offensive head, its card says zh."""

    label = "fake-zh:1"
    card = {"languages": ["zh"]}

    def __init__(self, poison: str | None = None):
        super().__init__(poison, seed=1)
        self.tasks = [Task("sentiment", ("negative", "positive"), "", "accuracy"),
                      Task("offensive", ("not_offensive", "offensive"), "", "macro_f1", "offensive")]


def routed(en=None, zh=None) -> RoutedClassifier:
    rules = RiskRules.load()
    return RoutedClassifier(Classifier(en or FakeRuntime(), rules), {"zh": Classifier(zh or FakeZhRuntime(), rules)})


def mixed_messages() -> list[Incoming]:
    """English and malformed samples, the foreign set (zh, es, en, und) and Chinese posts, interleaved."""
    out = sample_messages(40, 20) + foreign_messages()
    zh = [Incoming("posts", 7, 5000 + i, None, json.dumps({"id": f"zh-{i}", "text": t, "channel": "waimai"},
                                                          ensure_ascii=False).encode(), 1_700_007_000.0 + i)
          for i, t in enumerate(ZH_POSTS * 3)]
    merged = []
    for i, msg in enumerate(out):
        merged.append(msg)
        if i % 4 == 0 and zh:
            merged.append(zh.pop())
    return merged + zh


@pytest.mark.parametrize("mode", ["flag", "dead_letter"])
def test_mixed_batches_match_each_message_classified_alone_by_its_model(mode):
    processor = Processor(routed(), TOPICS, AlertRules.load(), unsupported_language=mode)
    messages = mixed_messages()
    for i in range(0, len(messages), 32):
        part = messages[i: i + 32]
        assert_same(_plain(processor.process(part)), reference_process(processor, part))


def test_rows_keep_input_order_and_name_their_model():
    en, zh = FakeRuntime(), FakeZhRuntime()
    processor = Processor(routed(en, zh), TOPICS, AlertRules.load())
    messages = mixed_messages()
    batch = processor.process(messages).batch
    valid, _ = processor.decode(messages)
    assert [r["message_id"] for r in batch.predictions] == [record.id for _, record in valid]  # input order
    by_model = {}
    for row in batch.predictions:
        by_model.setdefault(row["model_version"], set()).add(row["lang"])
    assert by_model["fake-zh:1"] == {"zh"} and "zh" not in by_model["fake:1"]
    for row in batch.predictions:
        if row["lang"] == "zh":  # read by the Chinese model: supported, two-class sentiment, no neutral
            assert row["supported"] and row["p_neutral"] is None and row["sentiment"] in ("negative", "positive")
            assert row["p_negative"] + row["p_positive"] == pytest.approx(1, abs=2e-4)
        else:
            assert row["p_neutral"] is not None
    flagged = [r for r in batch.predictions if not r["supported"]]
    assert {r["lang"] for r in flagged} == {"es"}
    assert "the model reads en, zh only" in flagged[0]["risk_explanation"]
    # one inference per model per batch, each on its own messages only; the English model's identity-blind heads
    # (models/bias.py) take one more look at its texts that name a group of people and reach medium, and only those
    n_zh = sum(r["lang"] == "zh" for r in batch.predictions)
    assert zh.infer_calls == [n_zh] and en.infer_calls[0] == len(batch.predictions) - n_zh
    named = sum(bool(identity_lexicon("en").search(m["text"])) for m in batch.predictions if m["lang"] != "zh")
    assert len(en.infer_calls) <= 2 and sum(en.infer_calls[1:]) <= named


def test_a_batch_of_one_language_never_touches_the_other_model():
    en, zh = FakeRuntime(), FakeZhRuntime()
    processor = Processor(routed(en, zh), TOPICS, AlertRules.load())
    processor.process(sample_messages(30, 10))
    assert zh.infer_calls == [] and 1 <= len(en.infer_calls) <= 2  # (2: the identity-blind second look)


def test_a_model_failure_in_one_route_costs_one_message():
    poison = ZH_POSTS[1]
    processor = Processor(routed(zh=FakeZhRuntime(poison=poison[:8])), TOPICS, AlertRules.load())
    processed = processor.process(mixed_messages()[:40])
    dead = [d for d in processed.batch.dead_letters if d["error"].startswith("model error")]
    assert len(dead) >= 1 and all(poison.encode() in d["payload"] for d in dead)
    assert not any(r["text"] == poison for r in processed.batch.predictions)
    assert any(r["lang"] == "zh" for r in processed.batch.predictions)


def test_a_model_routed_a_language_it_does_not_read_is_refused():
    rules = RiskRules.load()
    with pytest.raises(ValueError, match="routed 'zh' text but reads en only"):
        RoutedClassifier(Classifier(FakeRuntime(), rules), {"zh": Classifier(FakeRuntime(), rules)})


def test_language_models_setting():
    assert language_models("") == {}
    assert language_models(" zh = streamsense-bge-zh:1 , JA=x ") == {"zh": "streamsense-bge-zh:1", "ja": "x"}
    with pytest.raises(ValueError, match="not lang=model"):
        language_models("streamsense-bge-zh")
    assert Settings().language_models.startswith("zh=")


def test_the_shipped_models_route_chinese(classifier):
    """The worker's classifier: Chinese text to the Chinese model, the same results alone or in a mixed batch."""
    assert isinstance(classifier, RoutedClassifier) and classifier.languages[:2] == ("en", "zh")
    zh = classifier.classifier_for("zh")
    assert zh.model_version.startswith("streamsense-bge-zh:") and zh.sentiment_labels == ("negative", "positive")
    texts = [ZH_POSTS[0], "The flight was delayed three hours and nobody told us", ZH_POSTS[1], ZH_POSTS[2], "ok"]
    langs = ["zh", "en", "zh", "zh", "und"]
    result = classifier.decide(texts, classifier.tokenize(texts, langs))
    assert result.versions == [zh.model_version, classifier.model_version, zh.model_version, zh.model_version,
                               classifier.model_version]
    assert result.labels[0] == "negative" and result.labels[2] == "positive"
    assert (result.risks[3].level, result.risks[3].signals) == ("critical", ["legal_threat"])
    alone = zh.classify([ZH_POSTS[0], ZH_POSTS[1], ZH_POSTS[2]])
    assert [p.to_dict() for p in alone] == [result.prediction(i).to_dict() for i in (0, 2, 3)]


# --- migration 0005: p_neutral may be NULL ----------------------------------------------------------------------------

def test_migration_lets_p_neutral_be_null_and_keeps_rows_and_views(database_url):
    command.upgrade(_alembic(database_url), "0004")
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert not {c["name"]: c for c in inspect(conn).get_columns("predictions")}["p_neutral"]["nullable"]
    processor = Processor(routed(), TOPICS, AlertRules.load())
    rows = processor.process(mixed_messages()[:40]).batch.predictions
    english = [r for r in rows if r["p_neutral"] is not None]
    chinese = [r for r in rows if r["p_neutral"] is None]
    assert english and chinese
    store = Store(database_url, "g")
    store.write(Batch(english, [], [], {}))  # stored before the upgrade
    migrate(database_url)
    with engine.connect() as conn:
        assert {c["name"]: c for c in inspect(conn).get_columns("predictions")}["p_neutral"]["nullable"]
    store.write(Batch(chinese, [], [], {}))
    with engine.connect() as conn:
        got = dict(conn.execute(select(predictions.c.message_id, predictions.c.p_neutral)).all())
        assert len(got) == len(rows) and all(got[r["message_id"]] is None for r in chinese)
        assert all(got[r["message_id"]] == pytest.approx(r["p_neutral"]) for r in english)
        # the BI views survived the table copy (SQLite) and read the new rows
        assert conn.execute(text("SELECT SUM(n) FROM sentiment_by_group_hour")).scalar_one() == len(rows)
    command.downgrade(_alembic(database_url), "0004")  # NOT NULL again: the unknown ones become 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM predictions WHERE p_neutral = 0")).scalar_one() >= len(chinese)
        assert conn.execute(text("SELECT SUM(n) FROM sentiment_by_group_hour")).scalar_one() == len(rows)
    store.dispose()
    engine.dispose()


def test_bench_mixes_chinese_traffic_evenly():
    from streamsense.bench import bench_texts

    settings = Settings(datasets_dir=FIXTURE_DATASETS)  # 60 real tweets, 3 x 60 real Chinese texts
    texts = bench_texts(settings, 1000, zh_share=0.3)
    chinese = [i for i, t in enumerate(texts) if identify([t])[0] == "zh"]
    assert len(texts) == 1000 and 290 <= len(chinese) <= 310  # a tweet in Chinese would count too; none is
    assert max(b - a for a, b in zip(chinese, chinese[1:])) <= 4  # spread, not in one block
    assert len({texts[i] for i in chinese}) == 180  # every Chinese text of the three sets, in turn
    assert bench_texts(settings, 50) == bench_texts(settings, 50, 0.0)


def test_bench_without_the_chinese_sets_names_them(tmp_path):
    from streamsense.bench import bench_texts
    from streamsense.models.data import DatasetsMissingError

    with pytest.raises(DatasetsMissingError, match="cold .*COLDataset") as missing:
        bench_texts(Settings(datasets_dir=tmp_path), 10, zh_share=0.3)
    assert set(missing.value.missing) == {"waimai_10k", "online_shopping_10_cats", "cold"}
    assert len(bench_texts(Settings(datasets_dir=tmp_path), 10)) == 10  # English alone: the bundled samples


def test_a_registry_without_the_chinese_model(tmp_path, caplog, monkeypatch):
    """The default route names the shipped Chinese model: a registry of one's own without it serves the primary alone
    (Chinese then flagged unsupported) and says so; asked for by name, a missing model stops the worker."""
    from streamsense.models.registry import ModelNotFoundError, publish, resolve
    from streamsense.settings import SHIPPED_MODELS
    from streamsense.streams.worker import load_classifier

    publish(resolve(SHIPPED_MODELS, "streamsense-minilm:latest"), tmp_path, "mine")
    with caplog.at_level("WARNING"):
        alone = load_classifier(Settings(model_registry=tmp_path, model="mine", device="cpu"))
    assert isinstance(alone, Classifier) and alone.languages == ("en",)
    assert "no streamsense-bge-zh:latest model for 'zh' text" in caplog.text
    with pytest.raises(ModelNotFoundError, match="STREAMSENSE_LANGUAGE_MODELS routes 'zh' text to it"):
        load_classifier(Settings(model_registry=tmp_path, model="mine", device="cpu",
                                 language_models="zh=streamsense-bge-zh:2"))
    # a worker process gets every setting in its environment: the default value still only warns
    monkeypatch.setenv("STREAMSENSE_LANGUAGE_MODELS", Settings().language_models)
    assert isinstance(load_classifier(Settings(model_registry=tmp_path, model="mine")), Classifier)
    assert isinstance(load_classifier(Settings(model_registry=tmp_path, model="mine", language_models="")), Classifier)


def test_the_start_up_line_names_the_models_and_the_database(classifier):
    from streamsense.streams.worker import startup_line

    settings = Settings(device="cpu", database_url="postgresql+psycopg://ss:hunter2-secret@db:5432/ss")
    line = startup_line(settings, classifier, True)
    assert line.startswith(f"model {classifier.model_version} on cpu (model.int8.onnx); language models: zh "
                           f"{classifier.classifier_for('zh').model_version} (model.int8.onnx); database "
                           "postgresql+psycopg://ss:***@db:5432/ss; producer idempotence on;"), line
    assert "hunter2" not in line
    alone = startup_line(settings.model_copy(update={"database_url": "sqlite:///x.db"}), classifier.primary, False)
    assert "; language models: none; database sqlite:///x.db; producer idempotence off;" in alone, alone


def _spins(runtime) -> bool:
    try:
        return runtime.session.get_session_options().get_session_config_entry(
            "session.intra_op.allow_spinning") != "0"
    except Exception:  # not set: onnxruntime's default, spinning
        return True


@pytest.mark.parametrize("setting, language_models, spin", [
    ("auto", None, False),  # routed (the default): every session's threads sleep between runs
    ("auto", "", True),  # one model: onnxruntime's default
    ("on", None, True),
    ("off", "", False),
])
def test_intra_op_spinning(setting, language_models, spin):
    from streamsense.streams.worker import load_classifier

    extra = {} if language_models is None else {"language_models": language_models}
    loaded = load_classifier(Settings(device="cpu", intra_op_spinning=setting, **extra))
    runtimes = [c.runtime for c in getattr(loaded, "routes", [loaded])]
    assert len(runtimes) == (1 if language_models == "" else 2)
    assert all(_spins(r) is spin for r in runtimes)
