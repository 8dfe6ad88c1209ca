"""Static checks of deploy/: what can be validated without Docker or a Kubernetes cluster.

Compose, Prometheus and Grafana files are parsed and cross-checked against the code (settings names,
metric names, HTTP routes). The Helm chart is linted and rendered with `helm` when it is installed
(deploy/helm/install-helm.sh); its `.Values` references are checked either way.
"""

import fnmatch
import json
import re
from types import SimpleNamespace
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from streamsense.brokers import KAFKA_VERSION

from streamsense.settings import Settings
from streamsense.streams.telemetry import Metrics
from streamsense.streams.web import Health, make_app

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "streamsense"
SETTINGS = set(Settings.model_fields)
SAMPLE_SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_count", "_sum", "_created"],
                   "gauge": [""], "info": ["_info"]}


def _is_setting(env_name: str) -> bool:
    return env_name.startswith("STREAMSENSE_") and env_name.removeprefix("STREAMSENSE_").lower() in SETTINGS


def _routes() -> set[str]:
    return {route.resource.canonical for route in make_app(Metrics(), Health()).router.routes()}


def _metric_samples() -> dict[str, str]:
    """Every sample name streams/telemetry.py can expose → its metric family (the drift gauges included: a worker
    with drift monitoring on registers them)."""
    metrics = Metrics()
    metrics.watch_drift(SimpleNamespace(latest={}))
    return {family.name + suffix: family.name
            for family in metrics.registry.collect() for suffix in SAMPLE_SUFFIXES[family.type]}


def _compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / name).read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_every_yaml_file_parses():
    files = [p for p in DEPLOY.rglob("*.y*ml") if "templates" not in p.parts]
    assert len(files) >= 6
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_compose_services_dependencies_and_health_checks():
    services = _compose()["services"]
    assert set(services) == {"kafka", "postgres", "migrate", "worker", "prometheus", "grafana"}
    for name in ("kafka", "postgres", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert "healthcheck" not in services["worker"]  # the image's HEALTHCHECK on /health applies

    kafka = services["kafka"]
    # the compose stack, the test suite's broker (streamsense/brokers.py) and its Maven pom name one Kafka version
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    pom = (DEPLOY / "kafka" / "pom.xml").read_text()
    assert f"<kafka.version>{KAFKA_VERSION}</kafka.version>" in pom
    assert f"Apache Kafka {KAFKA_VERSION}" in (DEPLOY / "helm" / "streamsense" / "values.yaml").read_text()
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}  # KRaft
    assert not any("zookeeper" in key.lower() for key in kafka["environment"])

    migrate, worker = services["migrate"], services["worker"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["command"] == ["worker", "--no-migrate"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"
    for service in (migrate, worker):
        assert (DEPLOY / service["build"]["context"] / service["build"]["dockerfile"]).is_file()


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.gpu.yml"])
def test_compose_settings_names_exist(file):
    for name, service in _compose(file)["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("STREAMSENSE_"):
                assert _is_setting(key), f"{name}: {key} is not a field of streamsense.settings.Settings"

def test_compose_worker_reachable_and_gpu_override():
    env = _compose()["services"]["worker"]["environment"]
    assert env["STREAMSENSE_WEB_HOST"] == "0.0.0.0"  # reachable by Prometheus and the health check
    assert env["STREAMSENSE_DATABASE_URL"].startswith("postgresql+psycopg://")
    gpu = _compose("docker-compose.gpu.yml")["services"]["worker"]
    assert (DEPLOY / gpu["build"]["context"] / gpu["build"]["dockerfile"]).name == "Dockerfile.gpu"
    assert gpu["environment"]["STREAMSENSE_DEVICE"] == "cuda"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_compose_mounts_exist_and_prometheus_scrapes_the_workers():
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = scrape
    assert job["metrics_path"] in _routes()
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["worker"]
    assert str(sd["port"]) == services["worker"]["environment"]["STREAMSENSE_WEB_PORT"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfile_runs_the_worker_as_non_root_with_a_health_check(name):
    steps = _dockerfile(name)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (health,) = [args for op, args in steps if op == "HEALTHCHECK"]
    assert re.search(r"127\.0\.0\.1:%s(/\w+)'", health).group(1) in _routes()
    assert json.loads([args for op, args in steps if op == "ENTRYPOINT"][-1]) == ["streamsense"]
    assert json.loads([args for op, args in steps if op == "CMD"][-1]) == ["worker"]
    for op, args in steps:
        if op == "ENV":
            for key in re.findall(r"(STREAMSENSE_\w+)=", args):
                assert _is_setting(key), key
        if op == "COPY" and "--from" not in args:
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), source
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "torch" not in runs and "[train" not in runs  # runtime dependencies only
    assert "[registry]" in runs  # the schema registry formats (Protobuf, JSON Schema validation) read in the image


def test_images_carry_the_files_the_default_settings_need():
    """The images `pip install .`: every default path under the project must be package data."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    package_data = setuptools["package-data"]
    for field in ("risk_rules", "alert_rules", "model_registry"):
        default = Settings.model_fields[field].default
        package, folder = next((package, ROOT / folder) for package, folder in setuptools["package-dir"].items()
                               if default.is_relative_to(ROOT / folder))
        rel = default.relative_to(folder).as_posix()
        if field == "model_registry":
            rel += "/streamsense-minilm/1/model.onnx"  # a file in a registry version directory
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in package_data.get(package, [])), \
            f"{package}/{rel} (default of {field}) is not package data in pyproject.toml"


def test_gpu_image_uses_cuda_13_and_onnxruntime_gpu():
    steps = _dockerfile("Dockerfile.gpu")
    args = dict(re.match(r"(\w+)=(\S+)", a).groups() for op, a in steps if op == "ARG" and "=" in a)
    final_base = [a for op, a in steps if op == "FROM"][-1].replace("${CUDA_IMAGE}", args["CUDA_IMAGE"])
    assert final_base.startswith("nvidia/cuda:13.") and "runtime" in final_base
    assert args["ONNXRUNTIME_GPU"].startswith("onnxruntime-gpu")
    assert "STREAMSENSE_DEVICE=cuda" in " ".join(a for op, a in steps if op == "ENV")


def test_grafana_dashboard_queries_only_metrics_the_worker_exposes():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "streamsense.json").read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    samples = _metric_samples()
    used = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bstreamsense_\w+", target["expr"]))
            assert names or re.search(r"\bup\b", target["expr"]), target["expr"]
            unknown = names - set(samples)
            assert not unknown, f"{panel['title']}: {unknown} not defined in streams/telemetry.py"
            used |= {samples[n] for n in names}
    assert used == set(samples.values())  # every metric is on the dashboard


def _values_paths(node, prefix: str = "") -> set[str]:
    paths = {prefix} if prefix else set()
    if isinstance(node, dict):
        for key, value in node.items():
            paths |= _values_paths(value, f"{prefix}.{key}" if prefix else key)
    return paths


def test_chart_values_references_and_settings_names():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    known = _values_paths(values)
    for template in (CHART / "templates").iterdir():
        text = template.read_text()
        for ref in re.findall(r"\.Values\.([A-Za-z0-9_.]+)", text):
            assert ref.rstrip(".") in known, f"{template.name}: .Values.{ref} is not in values.yaml"
        for env in re.findall(r"\bSTREAMSENSE_[A-Z0-9_]+", text):
            assert _is_setting(env), f"{template.name}: {env}"
    for key in values["config"]:
        assert key.lower() in SETTINGS, f"values.yaml config.{key} is not a setting"
    for probe in values["probes"].values():
        assert probe["path"] in _routes()
    assert yaml.safe_load((CHART / "Chart.yaml").read_text())["apiVersion"] == "v2"


def _helm() -> str:
    found = shutil.which("helm") or next((str(p) for p in [Path.home() / ".local" / "bin" / "helm"] if p.exists()),
                                         None)
    if not found:
        pytest.skip("helm not installed (bash deploy/helm/install-helm.sh): chart lint/render not run")
    return found


def _render(*sets: str) -> list[dict]:
    args = [_helm(), "template", "release", str(CHART)] + [a for s in sets for a in ("--set", s)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_helm_lint_strict():
    out = subprocess.run([_helm(), "lint", "--strict", str(CHART)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_helm_default_render():
    docs = {doc["kind"]: doc for doc in _render()}
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Job"}
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (worker,) = pod["containers"]
    assert worker["args"] == ["worker", "--no-migrate"] and docs["Job"]["spec"]["template"]["spec"][
        "containers"][0]["args"] == ["db", "upgrade"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {worker[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")} <= _routes()
    assert "nvidia.com/gpu" not in worker["resources"].get("limits", {})
    secret_env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in worker["env"] if "valueFrom" in e}
    assert secret_env == {"STREAMSENSE_DATABASE_URL": "database-url", "STREAMSENSE_KAFKA_SASL_PASSWORD":
                          "kafka-sasl-password"}
    config = docs["ConfigMap"]["data"]
    assert all(_is_setting(key) for key in config)
    assert config["STREAMSENSE_WEB_PORT"] == str(worker["ports"][0]["containerPort"])
    assert docs["Deployment"]["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_helm_render_with_gpu_keda_tls_and_service_monitor():
    docs = {doc["kind"]: doc for doc in _render("gpu.enabled=true", "keda.enabled=true", "serviceMonitor.enabled=true",
                                                "kafkaTls.caSecret=kafka-ca", "keda.authenticationRef=kafka-auth")}
    assert {"ScaledObject", "ServiceMonitor"} <= set(docs) and "HorizontalPodAutoscaler" not in docs
    deployment = docs["Deployment"]
    assert "replicas" not in deployment["spec"]  # KEDA owns the replica count
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["STREAMSENSE_DEVICE"] == "cuda" and env["STREAMSENSE_KAFKA_SSL_CAFILE"].endswith("/ca.crt")
    (trigger,) = docs["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "streamsense"
    assert trigger["authenticationRef"] == {"name": "kafka-auth"}
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_helm_refuses_keda_and_hpa_together():
    docs = {doc["kind"] for doc in _render("autoscaling.enabled=true")}
    assert "HorizontalPodAutoscaler" in docs
    out = subprocess.run([_helm(), "template", "r", str(CHART), "--set", "autoscaling.enabled=true",
                          "--set", "keda.enabled=true"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "either keda or autoscaling" in out.stderr


def test_kafka_pom_is_well_formed_xml():
    """Maven refuses a pom that is not XML (e.g. two hyphens inside a comment): the Kafka jars would not come."""
    import xml.dom.minidom

    root = xml.dom.minidom.parse(str(DEPLOY / "kafka" / "pom.xml")).documentElement
    versions = {e.parentNode.getElementsByTagName("artifactId")[0].firstChild.data: e.firstChild.data
                for e in root.getElementsByTagName("version") if e.parentNode.tagName == "dependency"}
    assert versions["kafka_2.13"] == versions["kafka-tools"] == "${kafka.version}"  # -Ptools: the console clients
