"""Wires settings → model → processor → Faust app, and runs the worker."""

import asyncio
import logging
import signal

from streamsense.logs import logging_config
from streamsense.models.classifier import Classifier
from streamsense.models.registry import resolve
from streamsense.models.risk import RiskRules
from streamsense.models.runtime import ModelRuntime
from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.kafka import ensure_topics, producer_idempotence, wait_for_kafka
from streamsense.streams.contracts import Topics
from streamsense.streams.pipeline import Processor
from streamsense.streams.store import Store
from streamsense.streams.telemetry import Metrics, model_labels
from streamsense.streams.web import Health


def load_classifier(settings: Settings) -> Classifier:
    runtime = ModelRuntime(resolve(settings.model_registry, settings.model), settings.device, settings.intra_op_threads,
                           group_size=settings.length_group_size, tensorrt=settings.tensorrt)
    return Classifier(runtime, RiskRules.load(settings.risk_rules))


def build_processor(settings: Settings, alert_rules: AlertRules) -> Processor:
    topics = Topics(
        kinds={settings.topic_posts: "post", settings.topic_tickets: "ticket"},
        predictions=settings.topic_predictions,
        alerts=settings.topic_alerts,
        dead_letter=settings.topic_dead_letter,
    )
    return Processor(load_classifier(settings), topics, alert_rules, settings.store_text)


def run_worker(settings: Settings, migrate: bool = True, loglevel: str = "info") -> None:
    import faust

    from streamsense.streams.app import create_app

    alert_rules = AlertRules.load(settings.alert_rules)
    store = Store(settings.database_url, settings.app_id, alert_rules)
    if migrate:
        store.migrate()
    processor = build_processor(settings, alert_rules)
    log = logging.getLogger(__name__)
    wait_for_kafka(settings)
    ensure_topics(settings)
    idempotent = producer_idempotence(settings)
    metrics, health = Metrics(), Health()
    metrics.instrument(processor.classifier.runtime)
    model = model_labels(processor.classifier.runtime)
    metrics.set_model(model)
    health.model_loaded(model)
    app = create_app(settings, processor, store, metrics, health, idempotent)

    @app.task
    async def announce() -> None:
        """The start-up facts, once Faust's worker has configured logging (a line logged earlier is lost)."""
        log.info("model %s on %s (%s); producer idempotence %s", processor.classifier.model_version,
                 processor.classifier.runtime.device, processor.classifier.runtime.variant_file,
                 "on" if idempotent else "off")

    @app.task
    async def reload_on_sighup() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(
            None, reload_model, processor, metrics, health))

    faust.Worker(app, loglevel=loglevel,
                 logging_config=logging_config(settings.log_format, loglevel)).execute_from_commandline()


def reload_model(processor: Processor, metrics: Metrics, health: Health) -> bool:
    """Load the model that the settings name now (environment and .env read again) and swap it in.

    Batches already tokenized finish on the model that tokenized them; nothing is dropped. A model that fails to
    load or verify leaves the running one in place."""
    log = logging.getLogger(__name__)
    try:
        classifier = load_classifier(Settings())
    except Exception as exc:  # keep serving with the current model
        log.error("model reload failed, keeping %s: %s", processor.classifier.model_version, exc)
        return False
    metrics.instrument(classifier.runtime)
    processor.classifier = classifier
    labels = model_labels(classifier.runtime)
    metrics.set_model(labels)
    health.model_loaded(labels)
    log.info("model reloaded: now %s", classifier.model_version)
    return True
