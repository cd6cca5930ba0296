"""Run an experiment on a Ray cluster through the Ray Jobs API (the dashboard's HTTP server, port 8265).

    job_id = submit("configs/tiny.yaml", ["train.steps=500"], "http://127.0.0.1:8265")
    status(job_id, address)        # "PENDING" | "RUNNING" | "SUCCEEDED" | "FAILED" | "STOPPED"
    wait_for(job_id, address, 600) # polls until a terminal status, returns it
    print(logs(job_id, address)); stop(job_id, address)
    print(describe_package("."))  # what a submission ships (files and bytes)

What a submission does, in order:
1. Loads and validates CONFIG + overrides here (`load_config`): a bad config is a ConfigError and nothing is
   submitted. `cluster.address: local` (the default) becomes `auto` in the shipped config: the job's driver runs
   on a node of the cluster and must join it (Ray sets RAY_ADDRESS for it), not start a private Ray inside the
   job. `cluster` is not part of the run hash, so the run directory is the same `<name>-<hash8>` as a local run.
2. Ships the working dir (the repo root: the package code that runs is the code you submit) as Ray's
   `working_dir` package, minus DEFAULT_EXCLUDES + `excludes` and whatever `.gitignore`/`.rayignore` files
   exclude (Ray reads them unless RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1). Ray caps a package at 100 MiB (it is
   ~0.6 MiB, ~100 files here); `describe_package` lists it. Ray uploads a package only once per content hash.
3. Ships the resolved YAML in the job's runtime_env env var METAICL_SUBMITTED_CONFIG, not inside the package:
   the package stays content-addressed by code alone, so resubmitting other configs reuses the uploaded package
   and nothing is written into your tree. The entrypoint writes it to `.metaicl/submitted/<name>-<hash8>-<r6>.yaml`
   in the job's working dir and runs `python -m metaicl.cli <command> <that file>`, so the job runs exactly the
   config validated here (it is also kept by Ray in the job's runtime_env, and by the run as config.yaml).
   `python` is the one on the PATH of the cluster's nodes (as for any `ray job submit`): start the nodes with the
   project's environment active (its bin/ first on PATH).

One head per temp dir: Ray's job supervisor gives the driver RAY_ADDRESS from <temp-dir>/ray_current_cluster,
the head started *last* with that temp dir (default: Ray's own temp dir). On a machine running several heads (tests,
sessions side by side), a job would join whichever head started last; start each head with its own
`ray start --temp-dir=...` (tests/test_jobs.py does).

Addresses: the dashboard URL `http://host:8265` (use this), or `auto`/a GCS address `host:6379`, which Ray
resolves to the dashboard through the GCS; with token auth that gRPC call needs RAY_AUTH_MODE=token and the
token in this process's environment as well. An explicit `address` wins here; with address=None, Ray's
RAY_API_SERVER_ADDRESS, then RAY_ADDRESS, say where (Ray's own rule: those variables would otherwise override
an explicit address too).

Token auth (Ray 2.60, `RAY_AUTH_MODE=token` + RAY_AUTH_TOKEN on the head): the dashboard checks every HTTP
request (/api/version, /api/jobs/ and /api/packages/ included; only health checks, the login page and static
files are public: ray/dashboard/http_server_head.py, ray/_private/authentication/http_token_authentication.py)
for `Authorization: Bearer <token>` (or the `X-Ray-Authorization` header, or the `ray-authentication-token`
cookie): no token -> 401, a wrong one -> 403, which the SDK raises as ray.exceptions.AuthenticationError. The
SDK (JobSubmissionClient) adds that header by itself only when the *client* process is in token mode too
(RAY_AUTH_MODE=token in its environment when Ray's config was first read), taking the token from RAY_AUTH_TOKEN,
else the file RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, cached once per process. That depends on process
state (a local `ray.init()` in the same process switches it to token mode and reads ~/.ray/auth_token), so here
the header is explicit: `token=` or else the RAY_AUTH_TOKEN variable is sent as `Authorization: Bearer ...`, and
Ray does not add its own when one is given. Without either, Ray's own lookup applies. Both failures become a
ConfigError naming RAY_AUTH_TOKEN.

Proxies: the HTTP client is `requests`, which honours http(s)_proxy and no_proxy. The loopback environment
(metaicl.core.ray_local.LOOPBACK_ENV) points the proxies at a dead port and lists 127.0.0.1/localhost/::1 in
no_proxy, so requests to a loopback dashboard go direct (tests/test_jobs.py checks both).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import shlex
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from metaicl.core.errors import ConfigError

COMMANDS = ("run", "sweep", "train", "metatrain", "eval")
"""`metaicl <command>` a job may run; its config is validated before submitting (an experiment, or an LM experiment
when it has an `lm:` group; its `cluster.address` goes from local to auto). Config code is imported on submit only:
status/logs/stop stay light (no torch)."""

DEFAULT_EXCLUDES = [
    ".git/", ".venv/", "venv/", ".metaicl/",  # history, environments, local submission scratch
    "runs/", "ray_results/",  # run outputs and built data (data_root defaults to runs/data)
    "*.parquet", "*.pt", "*.ckpt", "*.safetensors",  # data shards and checkpoints wherever they are
    "__pycache__/", "*.pyc", ".pytest_cache/", ".mypy_cache/", ".ruff_cache/",
    "*.egg-info/", "build/", "dist/", ".whl/", "*.whl", ".site/",
]
"""gitignore-style patterns never shipped (Ray also applies .gitignore and .rayignore files)."""

CONFIG_ENV = "METAICL_SUBMITTED_CONFIG"
SUBMITTED_DIR = ".metaicl/submitted"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
_ADDRESS_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")


def submit(config_path: str, overrides: list[str], address: Optional[str], *, command: str = "run",
           working_dir: str = ".", excludes: list[str] | None = None, wait: bool = False,
           token: str | None = None, timeout_s: float | None = None) -> str:
    """Validate CONFIG + overrides, submit `metaicl <command>` on it as a Ray job; returns the job's id
    (`metaicl-<name>-<hash8>-<random6>`). wait=True returns only once the job is done (or after timeout_s:
    TimeoutError); ask status() how it ended."""
    if command not in COMMANDS:
        raise ConfigError("command", f"must be one of {', '.join(COMMANDS)}, got {command!r}")
    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise ConfigError("working_dir", f"not a directory: {root}")
    from omegaconf import OmegaConf

    from metaicl.core.config import load_config, to_yaml
    from metaicl.experiment import ExperimentConfig, run_hash

    cfg, resolved = load_config(ExperimentConfig, config_path, overrides)
    if command in ("train", "metatrain", "eval") and cfg.kind != "lm":
        raise ConfigError("lm", f"`metaicl {command}` runs a stage of a language-model experiment: the config needs "
                                f"an `lm:` group")
    if OmegaConf.select(resolved, "cluster.address") == "local":
        OmegaConf.update(resolved, "cluster.address", "auto")  # the driver runs on a cluster node: join it
    hash8 = run_hash(cfg)[:8]
    stem = f"{cfg.name}-{hash8}-{secrets.token_hex(3)}"
    shipped = f"{SUBMITTED_DIR}/{stem}.yaml"
    entrypoint = (f"mkdir -p {SUBMITTED_DIR} && printf '%s' \"${CONFIG_ENV}\" > {shlex.quote(shipped)} && "
                  f"exec python -m metaicl.cli {command} {shlex.quote(shipped)}")
    runtime_env = {"working_dir": str(root), "excludes": DEFAULT_EXCLUDES + list(excludes or []),
                   "env_vars": {CONFIG_ENV: to_yaml(resolved)}}
    client = _client(address, token)
    with _errors(address), _quiet_packaging():
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=f"metaicl-{stem}",
                                   metadata={"metaicl_command": command, "metaicl_config": str(config_path),
                                             "metaicl_overrides": " ".join(overrides), "metaicl_run": stem[:-7]})
    if wait:
        wait_for(job_id, address, timeout_s, token=token)
    return job_id


def status(job_id: str, address: Optional[str], *, token: str | None = None) -> str:
    """PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    client = _client(address, token)
    with _errors(address, job_id):
        return client.get_job_status(job_id).value


def logs(job_id: str, address: Optional[str], *, token: str | None = None) -> str:
    """Everything the job's entrypoint printed so far (stdout and stderr)."""
    client = _client(address, token)
    with _errors(address, job_id):
        return client.get_job_logs(job_id)


def stop(job_id: str, address: Optional[str], *, token: str | None = None) -> bool:
    """Ask Ray to stop the job (SIGTERM to its process group, SIGKILL a few seconds later); False if it had
    already finished."""
    client = _client(address, token)
    with _errors(address, job_id):
        # Ray answers stop_job with True while a finished job's supervisor is still being torn down (seen: a job
        # already STOPPED "stopped" again): ask for its status first, so a finished job is False as said above.
        if client.get_job_status(job_id).value in TERMINAL:
            return False
        return client.stop_job(job_id)


def wait_for(job_id: str, address: Optional[str], timeout_s: float | None, *, token: str | None = None,
             poll_s: float = 1.0) -> str:
    """Poll until the job reaches SUCCEEDED, FAILED or STOPPED and return that; TimeoutError after timeout_s
    (None: no limit)."""
    client = _client(address, token)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        with _errors(address, job_id):
            now = client.get_job_status(job_id).value
        if now in TERMINAL:
            return now
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id} is still {now} after {timeout_s:.0f}s")
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))


def list_jobs(address: Optional[str], *, token: str | None = None) -> list[str]:
    """Submission ids of every job the cluster knows (Ray keeps finished ones too)."""
    client = _client(address, token)
    with _errors(address):
        return [job.submission_id for job in client.list_jobs() if job.submission_id]


def shipped_files(working_dir: str = ".", excludes: list[str] | None = None) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file submit() would ship, found by Ray's own packaging walk (Ray's
    default excludes, ours, .gitignore and .rayignore files), sorted by path. Uses Ray-internal helpers
    (ray._private.runtime_env.packaging), so it may need a touch on a Ray upgrade."""
    from ray._private.ray_constants import RAY_RUNTIME_ENV_IGNORE_GITIGNORE, get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    root = Path(working_dir).resolve()
    files: list[tuple[str, int]] = []

    def handler(path: Path) -> None:
        if path.is_file():
            files.append((str(path.relative_to(root)), path.stat().st_size))

    patterns = get_runtime_env_default_excludes() + DEFAULT_EXCLUDES + list(excludes or [])
    with _quiet_packaging():
        _dir_travel(root, [_get_excludes(root, patterns)], handler,
                    include_gitignore=os.environ.get(RAY_RUNTIME_ENV_IGNORE_GITIGNORE, "0") != "1")
    return sorted(files)


def describe_package(working_dir: str = ".", excludes: list[str] | None = None, top: int = 10) -> str:
    """Human-readable summary of what a submission ships: file count, total size, the largest files."""
    files = shipped_files(working_dir, excludes)
    total = sum(size for _, size in files)
    lines = [f"{len(files)} files, {total / 2**20:.2f} MiB (Ray's limit: 100 MiB), largest:"]
    lines += [f"  {size / 1024:9.1f} KiB  {path}" for path, size in sorted(files, key=lambda f: -f[1])[:top]]
    return "\n".join(lines)


def _client(address: Optional[str], token: str | None):
    """A JobSubmissionClient for `address` (it checks the connection and Ray version on creation)."""
    from ray.job_submission import JobSubmissionClient

    if not address and not any(os.environ.get(key) for key in _ADDRESS_ENV):
        # Ray would look for a local cluster and wait ~40 s for it before failing with its own message
        raise ConfigError("--address", "which cluster? pass --address http://<head>:8265 or set RAY_ADDRESS")
    token = token if token is not None else os.environ.get("RAY_AUTH_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with _errors(address), _explicit(address):
        return JobSubmissionClient(address, headers=headers)


@contextmanager
def _explicit(address: Optional[str]) -> Iterator[None]:
    """Ray lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS override the address a client is given; an explicit
    address wins here (hidden only while the client resolves it)."""
    saved = {key: os.environ.pop(key) for key in _ADDRESS_ENV if address and key in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class _PackagingNoise(logging.Filter):
    """Drops Ray's per-directory "Ignoring upload ... .gitignore" lines and its notice that .git/.venv are now
    excluded by default (they are excluded here anyway); large-file and size warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        return not (msg.startswith("Ignoring upload to cluster") or "is now ignored by default" in msg)


@contextmanager
def _quiet_packaging() -> Iterator[None]:
    noise = _PackagingNoise()
    loggers = [logging.getLogger(name) for name in (
        "ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir")]
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


@contextmanager
def _errors(address: Optional[str], job_id: str | None = None) -> Iterator[None]:
    """Ray's connection, authentication and unknown-job errors as ConfigErrors (the CLI prints those)."""
    from ray.exceptions import AuthenticationError

    try:
        yield
    except AuthenticationError as err:
        first = str(err).splitlines()[0]
        raise ConfigError("RAY_AUTH_TOKEN", f"the cluster at {address} refused the request ({first}); pass "
                                            "the cluster's token (RAY_AUTH_TOKEN)") from None
    except ConnectionError as err:
        raise ConfigError("address", f"no Ray dashboard answers at {address} ({err}); give the dashboard URL "
                                     "http://<head>:8265 of a head started with --include-dashboard=true") from None
    except RuntimeError as err:
        if job_id is not None and re.search(r"status code 404\b", str(err)):
            raise ConfigError("job_id", f"no job {job_id!r} on the cluster at {address}") from None
        raise
