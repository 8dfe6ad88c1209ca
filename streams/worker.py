"""Wires settings → model → processor → Faust app, and runs the worker."""

import asyncio
import logging
import signal

from streamsense.logs import logging_config, one_line_kafka_arguments
from streamsense.models.classifier import Classifier
from streamsense.models.routing import RoutedClassifier
from streamsense.models.registry import ModelNotFoundError, resolve
from streamsense.models.risk import RiskRules
from streamsense.models.runtime import ModelRuntime
from streamsense.settings import Settings
from streamsense.streams.alerting.rules import AlertRules
from streamsense.streams.kafka import ensure_topics, producer_idempotence, wait_for_kafka
from streamsense.streams.contracts import Topics
from streamsense.streams.inputs.declare import kinds_of, load_inputs
from streamsense.streams.pipeline import Processor
from streamsense.streams.outputs import output_format
from streamsense.streams.stages import Stages
from streamsense.streams.store import Store
from streamsense.streams.telemetry import Metrics, model_labels
from streamsense.streams.web import Health


def language_models(spec: str) -> dict[str, str]:
    """`STREAMSENSE_LANGUAGE_MODELS` ("zh=streamsense-bge-zh:latest,...") as {language: model reference}."""
    out = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        lang, sep, ref = (x.strip() for x in item.partition("="))
        if not sep or not lang or not ref:
            raise ValueError(f"STREAMSENSE_LANGUAGE_MODELS: {item!r} is not lang=model (e.g. zh=streamsense-bge-zh)")
        out[lang.lower()] = ref
    return out


def load_classifier(settings: Settings) -> Classifier | RoutedClassifier:
    """The model in `settings.model`, and a RoutedClassifier over it and `settings.language_models` where any is set."""
    rules = RiskRules.load(settings.risk_rules)
    loaded: dict[str, Classifier] = {}

    routes_wanted = language_models(settings.language_models)
    spinning = settings.intra_op_spinning == "on" or (settings.intra_op_spinning == "auto" and not routes_wanted
                                                      and not settings.shadow_model)  # one session per core's work

    def load(ref: str) -> Classifier:
        if ref not in loaded:
            runtime = ModelRuntime(resolve(settings.model_registry, ref), settings.device, settings.intra_op_threads,
                                   group_size=settings.length_group_size, tensorrt=settings.tensorrt,
                                   null_model=settings.null_model, spinning=spinning)
            loaded[ref] = Classifier(runtime, rules.for_model(runtime.name))
        return loaded[ref]

    primary = load(settings.model)
    routes = {}
    for lang, ref in routes_wanted.items():
        try:
            routes[lang] = load(ref)
        except ModelNotFoundError as exc:
            # the default names the shipped Chinese model, which a registry of one's own may lack: warn; a model
            # the setting was changed to name must be there (a worker's environment repeats every setting, so
            # "was it set" cannot tell them apart)
            if settings.language_models != Settings.model_fields["language_models"].default:
                raise ModelNotFoundError(f"{exc} (STREAMSENSE_LANGUAGE_MODELS routes {lang!r} text to it)") from None
            logging.getLogger(__name__).warning(
                "no %s model for '%s' text (%s): the primary model classifies it and flags it unsupported_language; "
                "set STREAMSENSE_LANGUAGE_MODELS to route it, or to \"\" to silence this", ref, lang, exc)
    return RoutedClassifier(primary, routes) if routes else primary


def build_topics(settings: Settings, inputs: dict | None = None) -> Topics:
    """The worker's topics: the declared inputs (streams/inputs/declare.py; checked here, InputsError on a bad
    declaration) and the outputs. A topic read in the built-in shape with on_error = dead_letter gets no reader:
    the pipeline's fast path reads it directly."""
    inputs = load_inputs(settings) if inputs is None else inputs
    return Topics(
        kinds=kinds_of(inputs),
        predictions=settings.topic_predictions,
        alerts=settings.topic_alerts,
        dead_letter=settings.topic_dead_letter,
        inputs={t: r for t, r in inputs.items() if not (r.fixed and r.on_error == "dead_letter")},
    )


def describe_inputs(topics: Topics) -> str:
    """posts (post), tweets (post: json, mapped, on_error skip): the worker's inputs, for its start-up line."""
    parts = []
    for topic, kind in topics.kinds.items():
        reader = topics.inputs.get(topic)
        spec = getattr(reader, "spec", None)
        if spec is None or spec.fixed:
            how = [] if reader is None else [f"on_error {reader.on_error}"]
        else:
            how = [spec.format + ("" if spec.envelope == "none" else f"+{spec.envelope}"),
                   "mapped" if spec.fields is not None else "default fields"]
            if spec.on_error != "dead_letter":
                how.append(f"on_error {spec.on_error}")
        parts.append(f"{topic} ({kind}{': ' + ', '.join(how) if how else ''})")
    return ", ".join(parts)


def build_processor(settings: Settings, alert_rules: AlertRules, stages: Stages | None = None,
                    topics: Topics | None = None, output=None) -> Processor:
    topics = topics or build_topics(settings)
    processor = Processor(load_classifier(settings), topics, alert_rules, settings.store_text, stages=stages,
                          publish_predictions=settings.publish_predictions,
                          unsupported_language=settings.unsupported_language, drift=drift_meter(settings),
                          output=output)
    processor.shadow, processor.shadow_share = load_shadow(settings), settings.shadow_share
    return processor


def drift_meter(settings: Settings):
    """The pipeline's drift half (None with STREAMSENSE_DRIFT=off)."""
    from streamsense.streams.drift.meter import DriftMeter
    return DriftMeter(settings.drift_window_seconds) if settings.drift == "on" else None


def drift_windows(settings: Settings):
    """The store's drift half (None with STREAMSENSE_DRIFT=off)."""
    from streamsense.streams.drift.reference import References
    from streamsense.streams.drift.windows import DriftWindows
    if settings.drift != "on":
        return None
    return DriftWindows(References(settings.model_registry), settings.drift_window_seconds,
                        settings.drift_min_messages, settings.drift_by_topic)


def startup_line(settings: Settings, classifier: Classifier | RoutedClassifier, idempotent: bool) -> str:
    """The worker's start-up line: the model, the models routed per language, the database (password hidden), the
    producer's idempotence and the batching."""
    from streamsense.errors import hide_password

    runtime = classifier.runtime
    routed = {lang: classifier.classifier_for(lang) for lang in classifier.languages} \
        if isinstance(classifier, RoutedClassifier) else {}
    languages = ", ".join(f"{lang} {c.model_version} ({c.runtime.variant_file})" for lang, c in routed.items()
                          if c is not classifier.primary) or "none"
    null = " NULL MODEL (zero logits: a benchmark of the pipeline, not a classifier)" if settings.null_model else ""
    return (f"model {classifier.model_version} on {runtime.device} ({runtime.variant_file}){null}; language models: "
            f"{languages}; database {hide_password(settings.database_url)}; producer idempotence "
            f"{'on' if idempotent else 'off'}; batches of up to {settings.batch_size} within "
            f"{settings.batch_max_wait:.2f} s")


def load_shadow(settings: Settings) -> Classifier | None:
    """The challenger STREAMSENSE_SHADOW_MODEL names, run beside the model on the same batches (streams/feedback/
    shadow.py), or None."""
    if not settings.shadow_model:
        return None
    return load_classifier(settings.model_copy(update={"model": settings.shadow_model, "language_models": ""}))


def run_worker(settings: Settings, migrate: bool = True, loglevel: str = "info") -> None:
    import faust

    from streamsense.streams.app import create_app

    topics = build_topics(settings)  # first: a bad declaration is one line before anything starts
    output = output_format(settings)  # avro / json_schema: the output schemas registered (waits for the registry)
    alert_rules = AlertRules.load(settings.alert_rules)
    store = Store(settings.database_url, settings.app_id, alert_rules, drift=drift_windows(settings))
    if migrate:
        store.migrate()
    stages = Stages()
    processor = build_processor(settings, alert_rules, stages, topics, output)
    log = logging.getLogger(__name__)
    wait_for_kafka(settings)
    ensure_topics(settings)
    idempotent = producer_idempotence(settings)
    metrics, health = Metrics(stages=stages), Health()
    metrics.instrument(processor.classifier.runtime)
    model = model_labels(processor.classifier.runtime)
    metrics.set_model(model)
    if store.drift is not None:
        metrics.watch_drift(store.drift)
    health.model_loaded(model)
    app = create_app(settings, processor, store, metrics, health, idempotent, stages)

    @app.task
    async def announce() -> None:
        """The start-up facts, once Faust's worker has configured logging (a line logged earlier is lost)."""
        log.info("%s", startup_line(settings, processor.classifier, idempotent))
        log.info("inputs: %s", describe_inputs(processor.topics))

    @app.task
    async def reload_on_sighup() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(
            None, reload_model, processor, metrics, health))

    one_line_kafka_arguments()  # no ASCII tables in the service log
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
    try:
        settings = Settings()
        shadow, share = load_shadow(settings), settings.shadow_share
    except Exception as exc:  # the challenger's failure keeps the shadow it had; the model still reloads
        log.error("shadow model reload failed, keeping %s: %s",
                  processor.shadow.model_version if processor.shadow else "none", exc)
        shadow, share = processor.shadow, processor.shadow_share
    metrics.instrument(classifier.runtime)
    processor.classifier = classifier
    processor.shadow, processor.shadow_share = shadow, share
    labels = model_labels(classifier.runtime)
    metrics.set_model(labels)
    health.model_loaded(labels)
    log.info("model reloaded: now %s%s", classifier.model_version,
             f" (shadow {shadow.model_version})" if shadow is not None else "")
    return True
