"""Local Ray stays on loopback, with usage stats and the dashboard off."""
from __future__ import annotations

import os


def test_local_ray_binds_to_loopback_only(ray_session):
    nodes = ray_session.nodes()
    assert [n["NodeManagerAddress"] for n in nodes] == ["127.0.0.1"]
    assert ray_session.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert ray_session.cluster_resources()["CPU"] == 2


def test_environment_blocks_metadata_probe_and_usage_stats(ray_session):
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert os.environ["http_proxy"].startswith("http://127.0.0.1")
    assert "127.0.0.1" in os.environ["no_proxy"]


def test_workers_inherit_the_loopback_environment(ray_session):
    @ray_session.remote(num_cpus=0)
    def env():
        return os.environ.get("GLOO_SOCKET_IFNAME"), os.environ.get("RAY_USAGE_STATS_ENABLED")

    assert ray_session.get(env.remote()) == ("lo", "0")
