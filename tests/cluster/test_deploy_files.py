"""Static checks of the multi-replica deployment files: compose's replicas profile, the KubeRay
RayService and the Dockerfile's cluster extra (no Docker or Kubernetes needed)."""

import dataclasses
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import ROOT  # noqa: E402

from realtime_tts.config import Settings  # noqa: E402


def ray_pin() -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(re.match(r"ray\[serve\]==(\S+)", d).group(1) for d in extras["cluster"] if d.startswith("ray"))


def test_compose_replicas_profile_one_gpu_each_behind_haproxy():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    replicas = {name: svc for name, svc in services.items() if name.startswith("tts-gpu-")}
    assert len(replicas) >= 2
    gpus = set()
    for name, svc in replicas.items():
        assert svc["profiles"] == ["replicas"] and "ports" not in svc  # reached through HAProxy only
        device = svc["deploy"]["resources"]["reservations"]["devices"][0]
        gpus.add(tuple(device["device_ids"]))
        env = svc["environment"]
        assert env["REALTIME_TTS_REPLICA_ID"] == name.removeprefix("tts-")
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace > float(env["REALTIME_TTS_DRAIN_TIMEOUT_S"])  # SIGTERM drains before SIGKILL
    assert len(gpus) == len(replicas)  # a GPU each
    haproxy = services["haproxy"]
    assert "./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in haproxy["volumes"]
    cfg = (ROOT / "deploy/haproxy/haproxy.cfg").read_text()
    for name in replicas:  # the file's default server addresses are the compose service names
        assert f"{name}:8000" in cfg
    assert set(haproxy["depends_on"]) == set(replicas)


def test_rayservice_matches_the_project():
    pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
    from realtime_tts.server.ray_serve import ClusterOptions

    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    assert service["kind"] == "RayService" and service["apiVersion"] == "ray.io/v1"
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == ray_pin()
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    local = yaml.safe_load((ROOT / "deploy/ray/serve.yaml").read_text())
    app, local_app = serve_config["applications"][0], local["applications"][0]
    assert app["import_path"] == local_app["import_path"] == "realtime_tts.cli:ray_app"
    settings_names = {f.name for f in dataclasses.fields(Settings)}
    cluster_names = {f.name for f in dataclasses.fields(ClusterOptions)}
    for args in (app["args"], local_app["args"]):
        assert set(args["settings"]) <= settings_names and set(args["cluster"]) <= cluster_names
    worker = cluster["workerGroupSpecs"][0]
    container = worker["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1 == app["args"]["cluster"]["gpus_per_replica"]
    assert worker["maxReplicas"] == app["args"]["cluster"]["max_replicas"]
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] > app["args"]["settings"]["drain_timeout_s"]
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_rayservice_args_build_the_application():
    pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")
    from realtime_tts.cli import ray_app

    service = yaml.safe_load((ROOT / "deploy/kuberay/rayservice.yaml").read_text())
    app = ray_app(yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"])
    config = app._bound_deployment._deployment_config
    assert config.max_ongoing_requests == 64 and config.autoscaling_config.max_replicas == 8


def test_dockerfile_installs_the_cluster_extra_on_request():
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG PIP_EXTRAS=" in text and 'pip install ".${PIP_EXTRAS}"' in text
