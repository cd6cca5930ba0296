"""The only place that starts or joins Ray.

    from metaicl.core.ray_local import ClusterConfig, init_ray
    init_ray(ClusterConfig())            # local Ray on 127.0.0.1, no dashboard, no usage stats

Locally, Ray 2.x would otherwise bind to the LAN address and probe cloud metadata (169.254.169.254). The variables
below must be in the environment before `import ray` (and are inherited by every Ray worker):
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps every port on 127.0.0.1; the dead proxy blocks the metadata probe.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from metaicl.core.errors import ConfigError, check_at_least

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every Ray port on 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
    "GLOO_SOCKET_IFNAME": "lo",  # torch.distributed (gloo) on loopback
    "http_proxy": "http://127.0.0.1:9",  # a dead proxy: Ray's cloud-metadata probe (169.254.169.254) goes nowhere
    "https_proxy": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "no_proxy": "localhost,127.0.0.1,::1",
    "NO_PROXY": "localhost,127.0.0.1,::1",
    # Watches for node drains (spot preemption): nothing to watch on one machine, and Ray 2.60 logs an error
    # line about its constructor arguments on every trainer start.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Ray >= 2.5x turns token authentication on for a new local cluster (a token in ~/.ray/auth_token) and says so
    # in a WARNING line on every start; asked for explicitly, it is the same protection without the line.
    "RAY_AUTH_MODE": "token",
    "HF_HUB_OFFLINE": "1",  # nothing local ever downloads
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' "Loading weights" / "Writing model shards" bars, per worker
}
LOCAL_ONLY = {"http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
              "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "RAY_AUTH_MODE"}
"""Left alone when joining a real cluster: it may need the user's proxies and the hub, its nodes can be
preempted, and its authentication is its own."""

RUNTIME_ENV = {
    "worker_process_setup_hook": "metaicl.core.ray_local.quiet_ray_logs",
    # Arms and sweep trials that do not fit at once wait for workers; Ray Train's default gives up after 60 s.
    # Requests the cluster can never meet are refused up front instead (metaicl.train.ray_train.check_resources).
    # Ray Train's controller polls its workers this often and only then sees that training has ended: at the
    # default 2 s a finished fit took 3-5 s to return (measured, no-op train function, 2 cores), at 0.25 s ~1 s.
    # A poll is one small actor call, so four a second cost nothing next to a training step.
    "env_vars": {"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "86400", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.25"},
}


@dataclass
class ClusterConfig:
    address: str = "local"
    """`local` starts a private Ray on 127.0.0.1; anything else (`auto`, `ray://host:10001`, `host:6379`) joins
    that cluster instead."""
    num_cpus: Optional[int] = None
    """CPUs of the local Ray (default: all cores). Ignored when joining a cluster."""
    num_gpus: Optional[int] = None
    """GPUs of the local Ray (default: whatever Ray detects)."""
    include_dashboard: bool = False
    """Start the dashboard (needed only for the Ray Jobs API)."""
    resource_wait_s: float = 0.0
    """How long a run waits for the cluster to have the GPUs / CPUs its stages ask for before it is refused (an
    autoscaling cluster starting nodes: it is asked for them with `ray.autoscaler.sdk.request_resources`, and the
    wait is said). 0: refused at once, with one config error: a request Ray can never meet would wait forever."""

    def validate(self, prefix: str = "cluster") -> None:
        if not self.address:
            raise ConfigError(f"{prefix}.address", "must be 'local' or a Ray address")
        for key, minimum in (("num_cpus", 1), ("num_gpus", 0), ("resource_wait_s", 0)):
            if getattr(self, key) is not None:
                check_at_least(self, prefix, (key,), minimum)


def prepare_env(local: bool = True) -> None:
    """Set the loopback/offline environment; call before `import ray`."""
    for key, value in LOOPBACK_ENV.items():
        if local or key not in LOCAL_ONLY:
            os.environ[key] = value
    for key, value in RUNTIME_ENV["env_vars"].items():  # the driver's trainers read them too
        os.environ.setdefault(key, value)


def quiet_ray_logs() -> None:
    """Runs in every Ray worker process (runtime_env worker_process_setup_hook). Ray Train's placement-group
    cleaner warns every few seconds that the State API is unavailable, which is expected: that API is served by
    the dashboard, which stays off locally. A one-worker stage runs in Ray Train's local mode, which logs at INFO
    that it does, every report and every model it moves to a device. And Ray Train logs every report at INFO
    through a logger named by its file path (so RunConfig's LoggingConfig, which filters `ray.train.*`, misses
    it); our own progress bars say the same. Warnings and errors of all of them still surface."""
    import logging

    import ray

    context_py = os.path.join(os.path.dirname(ray.__file__), "train", "v2", "_internal", "execution", "context.py")
    logging.getLogger(context_py).setLevel(logging.WARNING)
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)
    # A one-worker stage: Ray Train's local mode, outside the worker group that RunConfig's LoggingConfig quiets
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def init_ray(cfg: ClusterConfig):
    """Start (local) or join (address) Ray once per process; returns the `ray` module."""
    prepare_env(local=cfg.address == "local")
    import ray

    if ray.is_initialized():
        return ray
    if cfg.address == "local":
        runtime_env = {**RUNTIME_ENV, "env_vars": dict(RUNTIME_ENV["env_vars"])}
        if not cfg.include_dashboard:
            # Ray Train's placement-group cleaner polls the State API, which the dashboard serves. Without one it
            # looks for "the" local Ray and, when a second local Ray runs on the machine (two experiments at
            # once), crashes with "Found multiple active Ray instances". A dead loopback port instead makes it
            # fail the way it already expects (and we silence).
            runtime_env["env_vars"]["RAY_API_SERVER_ADDRESS"] = "http://127.0.0.1:9"
        ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(), num_gpus=cfg.num_gpus,
                 include_dashboard=cfg.include_dashboard, _node_ip_address="127.0.0.1",
                 dashboard_host="127.0.0.1", logging_level="WARNING", runtime_env=runtime_env)
    else:
        loopback = cfg.address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost")
        ray.init(address=cfg.address, logging_level="WARNING", runtime_env=RUNTIME_ENV,
                 **({"_node_ip_address": "127.0.0.1"} if loopback else {}))
    return ray
