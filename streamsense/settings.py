"""Settings from environment variables or `.env`, all prefixed `STREAMSENSE_`."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

import streamsense.models
import streamsense.streams

# The checkout in an editable install (site-packages in a wheel install): for what only a checkout holds,
# deploy/, .cache/ and datasets/. Package data is found through the package that ships it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The PostgreSQL server `make test` starts (deploy/test-deps.sh): where `bench --database postgresql` makes its database.
BENCH_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MODELS_DIR = Path(streamsense.models.__file__).resolve().parent
STREAMS_DIR = Path(streamsense.streams.__file__).resolve().parent
SHIPPED_MODELS = MODELS_DIR / "shipped"


#: The batch cap when STREAMSENSE_BATCH_SIZE is unset, by STREAMSENSE_DEVICE ("auto" counts as cpu: set the device on
#: a GPU box). CPU: measured on 2 cores (docs/benchmarks.md, "Batches that follow load"); CUDA: the size the GPU
#: runs used (runs of 256 by length inside it), not yet measured with load-following batches.
DEVICE_BATCH_SIZE = {"cpu": 512, "cuda": 1024}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMSENSE_", env_file=".env", extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    broker_port: int = 9092  # the embedded broker's port
    # idempotent producer for the output topics: auto = on where the cluster grants producer ids (Apache Kafka),
    # off where it does not (the embedded Tansu broker)
    kafka_idempotence: Literal["auto", "on", "off"] = "auto"

    # Topics
    app_id: str = "streamsense"
    topic_posts: str = "posts"
    topic_tickets: str = "tickets"
    topic_predictions: str = "predictions"
    topic_alerts: str = "alerts"
    topic_dead_letter: str = "dead-letter"
    # a TOML file declaring the input topics (streams/inputs/declare.py, docs/inputs.md): each topic's kind, format,
    # envelope and field mapping; unset: topic_posts and topic_tickets in the built-in JSON shape
    inputs: Path | None = None
    topic_partitions: int = 4
    topic_replication_factor: int = 1
    kafka_session_timeout: float = 10.0

    # Batching
    # A batch is handed to the model as soon as the model is free, with what is buffered; while the model is busy
    # it grows up to `batch_size` messages, for at most `batch_max_wait` seconds after its first message
    # (streams/consumer.py, docs/architecture.md "Batches that follow load"). Unset: by device (DEVICE_BATCH_SIZE).
    batch_size: int | None = Field(None, ge=1, description="the most messages in a batch")
    batch_max_wait: float = Field(0.5, gt=0, description="the longest a batch gathers while the model is busy")
    # the most bytes one fetch response holds per partition: partitions are served round-robin by fetch response,
    # so this bounds how long a partition with unread messages waits while others are served (docs/architecture.md)
    fetch_partition_bytes: int = Field(256 * 1024, ge=1024)
    # produce a message per result on the predictions topic; off for users who read results from SQL only
    publish_predictions: bool = True

    # Schema registry (Confluent-compatible API: streams/inputs/registry.py) for inputs in the avro, json_schema,
    # protobuf, confluent and auto formats and for output_format avro / json_schema. The URL is the API's root: Confluent and Karapace
    # http://host:8081, Apicurio Registry 3 http://host:8080/apis/ccompat/v7
    schema_registry_url: str | None = None
    schema_registry_user: str | None = None  # basic auth
    schema_registry_password: SecretStr | None = None
    schema_registry_cafile: Path | None = None  # https: the CA that signed the registry's certificate
    schema_registry_certfile: Path | None = None  # https: a client certificate (and its key) where mTLS is asked
    schema_registry_keyfile: Path | None = None
    schema_registry_timeout: float = Field(5.0, gt=0, description="seconds for one request to the registry")
    # the predictions and alerts topics' values: json (default), or avro / json_schema in the Confluent wire format,
    # their schemas registered under "<topic>-value" at start (streams/outputs.py)
    output_format: Literal["json", "avro", "json_schema"] = "json"

    # Storage
    database_url: str = "sqlite:///streamsense.db"
    store_text: Literal["full", "redacted", "hash"] = "full"

    # Models
    model_registry: Path = SHIPPED_MODELS
    model: str = "streamsense-minilm:latest"
    # further models by language, "lang=name[:version]" joined by commas (models/routing.py): each language's messages
    # in a batch go to its model; the rest to `model`. "" serves `model` alone (Chinese is then flagged unsupported).
    language_models: str = "zh=streamsense-bge-zh:latest"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    intra_op_threads: int = 0  # 0 = onnxruntime's default
    # onnxruntime's intra-op threads spin for work after each run (its default), taking the cores from whatever runs
    # next. "auto": they spin where one model serves, and sleep where language models are routed too (a Chinese
    # sub-batch's spinning threads slowed the English one after it: docs/benchmarks.md); "on" / "off": always
    intra_op_spinning: Literal["auto", "on", "off"] = "auto"
    length_group_size: int = Field(64, ge=1, description="a batch is sorted by length into runs of this many")
    tensorrt: bool = False  # try onnxruntime's TensorRT provider first on CUDA
    # benchmarks only: inference replaced by zero logits (everything else real), to measure the pipeline's own ceiling
    null_model: bool = False
    risk_rules: Path = MODELS_DIR / "risk_rules.toml"
    # a message in a language the model does not support (models/language.py; the model card's `languages`, else
    # English): "flag" classifies and stores it with the risk signal `unsupported_language`; "dead_letter" sends it
    # to the dead letters unclassified, reason "unsupported language: <code>"
    unsupported_language: Literal["flag", "dead_letter"] = "flag"
    # the labelled datasets training and evaluation read (README.md, "Datasets"); nothing else needs them
    datasets_dir: Path = PROJECT_ROOT / "datasets"

    # Alerts
    alert_rules: Path = STREAMS_DIR / "alert_rules.toml"

    # Drift monitoring (streams/drift/, docs/operations.md "Drift"): per model version, windows of the live stream by
    # Kafka timestamp, judged against the reference in the model's profile when the next window begins
    drift: Literal["on", "off"] = "on"
    drift_window_seconds: int = Field(3600, ge=60)
    drift_min_messages: int = Field(500, ge=50, description="a window with fewer is reported too small to judge")
    drift_by_topic: bool = False  # also a window per input topic (scope "topic:NAME"), beside the whole stream's

    log_format: Literal["text", "json"] = "text"
    # seconds between the worker's progress lines (results, rate, dead letters, lag per topic); 0 = none
    progress_interval: float = Field(30.0, ge=0)

    # --- feedback (streams/feedback/, docs/models.md "Adapting to your domain") ---
    # the topic other tools write verdicts to, one JSON object per message (`streamsense feedback consume` reads it)
    topic_feedback: str = "feedback"
    # the share of the review queue drawn at random (only random labels estimate quality without bias)
    feedback_random_share: float = Field(0.2, ge=0, le=1)
    # a challenger run beside the model on the same batches, its results stored apart, never published or alerting
    # (e.g. "streamsense-minilm:challenger"; "" = none), and the share of messages it sees (by a hash of kind and id)
    shadow_model: str = ""
    shadow_share: float = Field(1.0, ge=0, le=1)
    # --- end feedback ---

    # Worker HTTP endpoints /metrics, /health, /live (streams/web.py): off unless a port is set
    web_port: int | None = None
    web_host: str = "127.0.0.1"

    # `streamsense dashboard`: the token its pages and API require (HTTP bearer, or basic auth with it as the
    # password), at least 16 characters; it will not listen beyond loopback without one (docs/bi.md)
    dashboard_token: SecretStr | None = None

    @model_validator(mode="after")
    def _batch_size_by_device(self) -> "Settings":
        if self.batch_size is None:
            self.batch_size = DEVICE_BATCH_SIZE["cuda" if self.device == "cuda" else "cpu"]
        return self
