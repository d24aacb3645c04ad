"""The pure parts of replication: routing keys, the bounded-load choice, the warm LRU, the Ray
deployment options, the autoscaling policy and the serve.yaml builder (no Ray cluster needed)."""

import sys
import types
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from cluster_helpers import ROOT  # noqa: E402

from realtime_tts.config import ConfigError, Settings  # noqa: E402
from realtime_tts.server.affinity import WarmVoices, bounded_choice, routing_key  # noqa: E402
from realtime_tts.server.ray_autoscale import StreamLoadPolicy, desired_replicas  # noqa: E402


def scope(path, headers=(), query=b"", kind="http"):
    return {"type": kind, "path": path, "query_string": query,
            "headers": [(k.encode(), v.encode()) for k, v in headers]}


@pytest.mark.parametrize("request_scope, key", [
    (scope("/xiaozhi/v1/", [("device-id", "aa:bb"), ("x-voice-id", "alice")], kind="websocket"), "device:aa:bb"),
    (scope("/xiaozhi/v1/", query=b"device-id=cc%3Add&voice=bob", kind="websocket"), "device:cc:dd"),
    (scope("/v1/xiaozhi/devices/aa:bb/speak", [("x-voice-id", "alice")]), "device:aa:bb"),
    (scope("/v1/audio/speech", [("x-voice-id", "alice")], b"voice=bob"), "voice:alice"),
    (scope("/v1/tts/stream", query=b"voice=bob", kind="websocket"), "voice:bob"),
    (scope("/v1/audio/speech", [("device-id", "aa:bb")]), None),  # Device-Id keys only device routes
    (scope("/v1/audio/speech", [("x-voice-id", " ")], b"voice="), None),
    (scope("/xiaozhi/v1/", kind="websocket"), None),
])
def test_routing_key(request_scope, key):
    assert routing_key(request_scope) == key


def test_bounded_choice_spills_a_hot_voice_to_the_next_replica():
    ring = ["r1", "r2", "r3"]
    assert bounded_choice(ring, {}, 1.5) == ring  # idle: ring order
    assert bounded_choice(ring, {"r1": 3, "r2": 0, "r3": 0}, 1.5) == ["r2", "r3", "r1"]  # 3 >= ceil(1.5*4/3)=2
    assert bounded_choice(ring, {"r1": 1, "r2": 1, "r3": 1}, 1.5) == ring  # 1 < ceil(1.5*4/3)
    assert bounded_choice(ring, {"r1": 3, "r2": 0, "r3": 0}, 1.5, floor=4) == ring  # light load: affinity holds
    assert bounded_choice(ring, {"r1": 2, "r2": 9, "r3": 0}, 1.0) == ["r1", "r3", "r2"]
    assert bounded_choice([], {}, 1.5) == []


def test_warm_voices_is_an_lru():
    loaded = []
    warm = WarmVoices(2, load=lambda v: loaded.append(v) or v.upper())
    assert [warm.touch(v) for v in ("a", "b", "a", "c", "b", "a")] == [False, False, True, False, False, False]
    assert loaded == ["a", "b", "c", "b", "a"] and "a" in warm and "c" not in warm and len(warm) == 2
    assert warm.stats() == {"warm_voices": 2, "voice_hits": 1, "voice_misses": 5, "voice_evictions": 3}
    with pytest.raises(ValueError):
        WarmVoices(0)


def autoscaling_ctx(streams, capacity, queued=0.0, target=1, minimum=1):
    return types.SimpleNamespace(aggregated_metrics={"rtts_streams": streams, "rtts_capacity": capacity},
                                 total_queued_requests=queued, target_num_replicas=target,
                                 capacity_adjusted_min_replicas=minimum)


def test_stream_load_policy():
    # (streams in replicas + queued) / (capacity * target_load), rounded up
    assert desired_replicas(autoscaling_ctx({"a": 4}, {"a": 8}), 0.5) == 1
    assert desired_replicas(autoscaling_ctx({"a": 8}, {"a": 8}, queued=3), 0.5) == 3
    assert desired_replicas(autoscaling_ctx({"a": 6, "b": 7}, {"a": 8, "b": 8}), 0.7) == 3
    assert desired_replicas(autoscaling_ctx({"a": 0, "b": 0}, {"a": 8, "b": 8}, target=2, minimum=1), 0.7) == 1
    assert desired_replicas(autoscaling_ctx({}, {}, target=2), 0.7) == 2  # nothing reported yet: hold
    assert StreamLoadPolicy(0.5)(autoscaling_ctx({"a": 8}, {"a": 8}))[0] == 2
    with pytest.raises(ValueError):
        StreamLoadPolicy(0)


@pytest.fixture
def ray_serve():
    return pytest.importorskip("realtime_tts.server.ray_serve", reason="the cluster extra (ray[serve]) is missing")


def test_deployment_options_follow_the_settings(ray_serve):
    options = ray_serve.ClusterOptions(min_replicas=1, max_replicas=4, target_load=0.6)
    gpu = ray_serve.deployment_options(Settings(engine="indextts2", drain_timeout_s=20), options, cluster_gpus=4)
    assert gpu["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}  # one GPU per replica
    assert gpu["max_ongoing_requests"] == gpu["max_queued_requests"] == 64  # 8 batch slots x 8 streams
    assert gpu["graceful_shutdown_timeout_s"] == 30.0  # our drain, then a margin
    policy = gpu["autoscaling_config"]["policy"]
    assert policy == {"policy_function": "realtime_tts.server.ray_autoscale:StreamLoadPolicy",
                      "policy_kwargs": {"target_load": 0.6}}
    assert gpu["request_router_config"]["request_router_class"].endswith("ray_router:VoiceAffinityRouter")
    cpu = ray_serve.deployment_options(Settings(engine="espeak", max_streams=5),
                                       ray_serve.ClusterOptions(min_replicas=2, max_replicas=2, max_queued=0),
                                       cluster_gpus=0)
    assert cpu["ray_actor_options"] == {"num_cpus": 1.0} and cpu["num_replicas"] == 2
    assert (cpu["max_ongoing_requests"], cpu["max_queued_requests"]) == (5, 0) and "autoscaling_config" not in cpu
    with pytest.raises(ConfigError):
        ray_serve.deployment_options(Settings(), ray_serve.ClusterOptions(min_replicas=3, max_replicas=2),
                                     cluster_gpus=0)


def test_serve_yaml_builds_the_application(ray_serve):
    from realtime_tts.cli import ray_app

    config = yaml.safe_load((ROOT / "deploy/ray/serve.yaml").read_text())
    app_config = config["applications"][0]
    assert app_config["import_path"] == "realtime_tts.cli:ray_app" and app_config["route_prefix"] == "/"
    app = ray_app(app_config["args"])
    assert app._bound_deployment.name == "realtime-tts"
    assert app._bound_deployment._deployment_config.max_ongoing_requests == 64
    with pytest.raises(ConfigError, match="unknown keys"):
        ray_app({"settings": {}, "replicas": 3})
    with pytest.raises(ConfigError, match="args.cluster"):
        ray_app({"cluster": {"replicas": 3}})
