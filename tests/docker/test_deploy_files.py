"""The deployment files agree with the service they deploy, so that neither can drift: the port,
the health paths, the graceful-shutdown time against the stop grace periods, the engine cache, the
non-root user, the metric the autoscaler reads and the metrics the dashboard plots, and every
VFNET_* variable they set is a valid `vfnet serve` setting. Offline, no containers (the images are
built and run by test_cpu_image.py, under `make docker-smoke`)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from vfnet.server.app.metrics import Metrics
from vfnet.server.app.routes import detection, operations
from vfnet.server.app.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {name: ROOT / "docker" / f"Dockerfile.{name}" for name in ("cpu", "gpu")}
SETTINGS = ServeSettings()
HEALTHCHECK = ["vfnet-entrypoint", "healthcheck"]
USER_ID = 10001
ENGINE_CACHE = "/var/cache/vfnet"
NOT_SERVE_SETTINGS = {"VFNET_PLUGIN_DIR"}  # read by vfnet.trt_plugins, not by `vfnet serve`


def instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [tuple(f"{line.strip()} ".split(" ", 1)) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def dockerfile_env(path: Path) -> dict[str, str]:
    return dict(pair.split("=", 1) for keyword, args in final_stage(path) if keyword == "ENV" for pair in shlex.split(args))


def yaml_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
K8S = {doc["kind"]: doc for path in sorted((ROOT / "docker" / "k8s").glob("*.yaml")) if path.name != "kustomization.yaml" for doc in yaml_documents(path)}
DEPLOYMENT = K8S["Deployment"]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINER = POD["containers"][0]
INFERENCE_SERVICE = yaml_documents(ROOT / "docker" / "k8s" / "kserve" / "inferenceservice.yaml")[0]
SERVICES = {name: COMPOSE["services"][name] for name in ("vfnet", "vfnet-cpu")}


def seconds(duration: str) -> float:
    """A compose duration ("40s", "1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration: {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def routes() -> set[str]:
    return {route.path for router in (operations.router, detection.router) for route in router.routes}


def test_everything_listens_on_the_services_ports():
    port, grpc_port = SETTINGS.port, ServeSettings.model_fields["grpc_port"].default  # the field's: the tests' environment turns gRPC off
    for name, path in DOCKERFILES.items():
        assert (dockerfile_env(path)["VFNET_PORT"], dockerfile_env(path)["VFNET_GRPC_PORT"]) == (str(port), str(grpc_port)), name
        assert [args.strip() for keyword, args in final_stage(path) if keyword == "EXPOSE"] == [f"{port} {grpc_port}"], name
    for name, service in SERVICES.items():
        assert [mapping.rsplit(":", 1)[1] for mapping in service["ports"]] == [str(port), str(grpc_port)], name
    assert CONTAINER["ports"] == [{"name": "http", "containerPort": port}, {"name": "grpc", "containerPort": grpc_port}]
    assert {"name": "VFNET_GRPC_PORT", "value": str(grpc_port)} in CONTAINER["env"]
    assert [(p["name"], p["targetPort"]) for p in K8S["Service"]["spec"]["ports"]] == [("http", "http"), ("grpc", "grpc")]
    assert INFERENCE_SERVICE["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] == port
    prometheus = yaml.safe_load((ROOT / "docker" / "monitoring" / "prometheus.yml").read_text())
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == [f"{name}:{port}" for name in SERVICES]


def test_every_probe_asks_a_health_route_the_service_has():
    assert {"/readyz", "/healthz", "/metrics"} <= routes()
    assert 'url = f"http://{host}:{port}/readyz"' in (ROOT / "docker" / "entrypoint.sh").read_text()
    for name, path in DOCKERFILES.items():
        healthchecks = [args for keyword, args in final_stage(path) if keyword == "HEALTHCHECK"]
        assert len(healthchecks) == 1 and json.loads(healthchecks[0].split(" CMD ", 1)[1]) == HEALTHCHECK, name
        assert ("ENTRYPOINT", '["vfnet-entrypoint"] ') in final_stage(path), name
        assert ("COPY", "docker/entrypoint.sh /usr/local/bin/vfnet-entrypoint ") in final_stage(path), name
    for name, service in SERVICES.items():
        assert service["healthcheck"]["test"] == ["CMD", *HEALTHCHECK], name
    assert CONTAINER["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert CONTAINER["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert CONTAINER["livenessProbe"]["httpGet"]["path"] == "/healthz"
    kserve = INFERENCE_SERVICE["spec"]["predictor"]["containers"][0]
    assert (kserve["readinessProbe"]["httpGet"]["path"], kserve["livenessProbe"]["httpGet"]["path"]) == ("/readyz", "/healthz")


def test_the_first_engine_build_has_the_same_time_to_get_ready_everywhere():
    gpu_healthcheck = next(args for keyword, args in final_stage(DOCKERFILES["gpu"]) if keyword == "HEALTHCHECK")
    start_period = seconds(re.search(r"--start-period=(\S+)", gpu_healthcheck)[1])
    assert start_period >= 600  # an engine build takes minutes
    assert seconds(SERVICES["vfnet"]["healthcheck"]["start_period"]) == start_period
    startup = CONTAINER["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == start_period


def stop_budget(env: dict[str, str]) -> float:
    return float(env.get("VFNET_GRACEFUL_SHUTDOWN_S", SETTINGS.graceful_shutdown_s))


def test_every_stop_grace_period_outlasts_the_graceful_shutdown():
    for name, service in SERVICES.items():
        assert seconds(service["stop_grace_period"]) > stop_budget(service["environment"]) + 5, name
    env = {item["name"]: item["value"] for item in CONTAINER["env"]}
    pre_stop = CONTAINER["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert POD["terminationGracePeriodSeconds"] > float(pre_stop[1]) + stop_budget(env) + 5


def compose_default(value: str) -> str:
    """A compose value with each ${NAME:-default} replaced by its default (the value without .env)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def every_environment() -> dict[str, dict[str, str]]:
    found = {f"Dockerfile.{name}": dockerfile_env(path) for name, path in DOCKERFILES.items()}
    found |= {f"compose {name}": {k: compose_default(str(v)) for k, v in service["environment"].items()} for name, service in SERVICES.items()}
    found["k8s Deployment"] = {item["name"]: item["value"] for item in CONTAINER["env"]}
    found["KServe"] = {item["name"]: item["value"] for item in INFERENCE_SERVICE["spec"]["predictor"]["containers"][0]["env"]}
    return found


@pytest.mark.parametrize("where", list(every_environment()))
def test_every_vfnet_variable_is_a_valid_serve_setting(where):
    env = {key: value for key, value in every_environment()[where].items() if key.startswith("VFNET_") and key not in NOT_SERVE_SETTINGS}
    unknown = [key for key in env if key.removeprefix("VFNET_").lower() not in ServeSettings.model_fields]
    assert unknown == [], f"{where} sets variables `vfnet serve` does not read: {unknown}"
    ServeSettings(**{key.removeprefix("VFNET_").lower(): value for key, value in env.items()})  # raises on a bad value


def test_the_engine_cache_is_one_folder_on_a_volume_everywhere():
    assert dockerfile_env(DOCKERFILES["gpu"])["VFNET_ENGINE_CACHE"] == ENGINE_CACHE
    assert ("VOLUME", f'["{ENGINE_CACHE}"] ') in final_stage(DOCKERFILES["gpu"])
    assert f"engine-cache:{ENGINE_CACHE}" in SERVICES["vfnet"]["volumes"] and "engine-cache" in COMPOSE["volumes"]
    assert {"name": "engine-cache", "mountPath": ENGINE_CACHE} in CONTAINER["volumeMounts"]
    assert {"name": "VFNET_ENGINE_CACHE", "value": ENGINE_CACHE} in CONTAINER["env"]
    claim = next(v for v in POD["volumes"] if v["name"] == "engine-cache")["persistentVolumeClaim"]["claimName"]
    assert claim == K8S["PersistentVolumeClaim"]["metadata"]["name"]


def test_both_images_and_the_pods_run_as_the_same_non_root_user():
    for name, path in DOCKERFILES.items():
        assert [args.strip() for keyword, args in final_stage(path) if keyword == "USER"] == [str(USER_ID)], name
        assert any(keyword == "RUN" and f"useradd --uid {USER_ID}" in args for keyword, args in final_stage(path)), name
    assert POD["securityContext"]["runAsNonRoot"] is True and POD["securityContext"]["runAsUser"] == USER_ID


def exported_metric_names() -> set[str]:
    """Every sample name the service's /metrics can show (counters' _total, histograms' _bucket...)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    return {family.name + suffix for family in Metrics().registry.collect() for suffix in suffixes.get(family.type, ("",))}


def test_the_autoscaler_reads_the_queue_gauge_the_service_exports():
    hpa_metric = K8S["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert hpa_metric == "vfnet_queue_depth"
    assert next(f for f in Metrics().registry.collect() if f.name == hpa_metric).type == "gauge"
    rule = yaml.safe_load((ROOT / "docker" / "k8s" / "prometheus-adapter" / "values.yaml").read_text())["rules"]["custom"][0]
    assert rule["seriesQuery"].startswith(hpa_metric + "{") and rule["name"]["as"] == hpa_metric
    assert re.fullmatch(rule["name"]["matches"], hpa_metric)
    assert K8S["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == DEPLOYMENT["metadata"]["name"]


def test_the_dashboard_plots_only_metrics_the_service_exports():
    dashboard = json.loads((ROOT / "docker" / "monitoring" / "grafana" / "dashboards" / "vfnet.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"] for name in re.findall(r"vfnet_[a-z_]+", target["expr"])}
    assert "vfnet_queue_depth" in used
    assert used - exported_metric_names() == set()
