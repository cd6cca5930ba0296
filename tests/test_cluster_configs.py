"""cluster/configs: the launcher YAML validates against the schema shipped with Ray, the KubeRay manifests against
KubeRay's CRD schema (vendored, strict about unknown fields), the fields the setup relies on agree with each other
and with the Makefile, and every `metaicl ...` command written in these files parses and its config loads.

Offline and fast: nothing here starts Ray or talks to a cloud or a Kubernetes API.
"""
from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
from functools import lru_cache
from pathlib import Path

import jsonschema
import pytest
import yaml

from metaicl.cli import parser
from metaicl.core.config import load_config
from metaicl.experiment import ExperimentConfig
from tests.conftest import ROOT

CONFIGS = ROOT / "cluster" / "configs"
LAUNCHER = CONFIGS / "ray-cluster.yaml"
RAYCLUSTER = CONFIGS / "kuberay-raycluster.yaml"
RAYJOB = CONFIGS / "kuberay-rayjob.yaml"
PVC = CONFIGS / "kuberay-shared-pvc.yaml"
DOCKERFILE = CONFIGS / "Dockerfile"
README = CONFIGS / "README.md"
CRD_SCHEMA = CONFIGS / "schemas" / "kuberay-v1.7.0-rayjob.openapi.json.gz"
SHARED = "/shared"


def load(path: Path):
    (doc,) = list(yaml.safe_load_all(path.read_text()))
    return doc


def makefile_torch() -> str:
    (pin,) = set(re.findall(r"pip install[^\n]*\btorch==([\w.+]+)", (ROOT / "Makefile").read_text()))
    return pin


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)", DOCKERFILE.read_text(), re.M))


def dockerfile_workdir() -> str:
    (workdir,) = re.findall(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), re.M)
    return workdir


# --- every YAML parses ------------------------------------------------------------------------------------------

def test_every_yaml_here_parses_and_is_tested():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert set(files) == {LAUNCHER, RAYCLUSTER, RAYJOB, PVC}, "a new YAML in cluster/configs needs its checks here"
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path


# --- Ray cluster launcher ---------------------------------------------------------------------------------------

def ray_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def validate_like_ray_up(config: dict) -> dict:
    """jsonschema against ray/autoscaler/ray-schema.json, then what `ray up` does before any cloud call: fill the
    provider's defaults and validate again (raises on any problem)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, ray_schema())
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_launcher_validates_against_rays_schema():
    validate_like_ray_up(load(LAUNCHER))


def test_ray_schema_check_is_not_vacuous():
    bad = load(LAUNCHER)
    bad["available_node_types"]["gpu_a10g"]["min_worker"] = 0  # typo: the schema forbids unknown keys
    with pytest.raises(jsonschema.ValidationError):
        validate_like_ray_up(bad)


def test_gcp_block_of_the_readme_swaps_in_and_validates():
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)]
    (gcp,) = [b for b in blocks if b.get("provider", {}).get("type") == "gcp"]
    assert set(gcp) == {"provider", "auth", "available_node_types", "head_node_type", "head_setup_commands"}
    prepared = validate_like_ray_up({**load(LAUNCHER), **gcp})
    (gpu,) = [t for t in prepared["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu["min_workers"] * gpu["resources"]["GPU"] >= gpus_kept_up()["ray-cluster.yaml"]


def test_launcher_head_is_cpu_and_gpu_group_autoscales():
    cfg = load(LAUNCHER)
    types = cfg["available_node_types"]
    assert not types[cfg["head_node_type"]]["resources"].get("GPU")
    (gpu,) = [t for name, t in types.items() if t["resources"].get("GPU")]
    assert gpu["resources"]["GPU"] == 1 and 1 <= gpu["min_workers"] < gpu["max_workers"] == 4
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge"  # 1x A10G: resources must say what it has
    assert cfg["max_workers"] >= gpu["max_workers"]


def gpus_kept_up() -> dict[str, float]:
    """GPUs each cluster here has from the start and never scales below: metaicl's check_resources compares an
    arm's GPUs with what the cluster has when the run starts, so an arm must fit in these."""
    cfg = load(LAUNCHER)
    kept = {"ray-cluster.yaml": sum(t.get("min_workers", 0) * t["resources"].get("GPU", 0)
                                    for t in cfg["available_node_types"].values())}
    for path, spec in zip((RAYCLUSTER, RAYJOB), cluster_specs()):
        kept[path.name] = sum(min(g["minReplicas"], g["replicas"])
                              * g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)
                              for g in spec["workerGroupSpecs"])
    return kept


def test_launcher_installs_the_project_like_the_makefile():
    cfg = load(LAUNCHER)
    setup = cfg["setup_commands"]
    assert setup[0] == f"pip install --quiet torch=={makefile_torch()}"  # torch pinned, and first
    assert setup[1] == "pip install --quiet -e ~/metaicl"
    assert cfg["file_mounts"]["~/metaicl"] == "."  # the repository, synced without what git ignores
    assert ".gitignore" in cfg["rsync_filter"] and "**/.git" in cfg["rsync_exclude"]


def test_launcher_images_pin_one_ray_and_python_311():
    docker = load(LAUNCHER)["docker"]
    tags = {docker["head_image"], docker["worker_image"]}
    versions = {re.fullmatch(r"rayproject/ray:([\d.]+)-py311-(cpu|gpu)", t).group(1) for t in tags}
    assert versions == {dockerfile_args()["RAY_VERSION"]}
    assert docker["worker_image"].endswith("-gpu")


def test_launcher_starts_ray_without_usage_stats_and_with_token_auth_and_shared_storage():
    cfg = load(LAUNCHER)
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2 and all("--disable-usage-stats" in c for c in starts)
    assert "--head" in starts[0] and "--address=$RAY_HEAD_IP:6379" in starts[1]
    options = cfg["docker"]["run_options"]
    assert "-e RAY_AUTH_MODE=token" in options and f"-v {SHARED}:{SHARED}" in options
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("mount -t nfs4" in c and c.rstrip("; }").endswith(SHARED) for c in cfg["initialization_commands"])


# --- KubeRay ----------------------------------------------------------------------------------------------------

def strict(schema):
    """KubeRay's structural schema with unknown fields rejected (as `kubectl apply --validate=strict`): every
    object with `properties`, and neither `additionalProperties` nor x-kubernetes-preserve-unknown-fields, gets
    additionalProperties: false."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=1)
def crd_validators() -> dict:
    rayjob = strict(json.loads(gzip.decompress(CRD_SCHEMA.read_bytes()))["openAPIV3Schema"])
    cluster_spec = rayjob["properties"]["spec"]["properties"]["rayClusterSpec"]
    raycluster = {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
                  "properties": {"apiVersion": {"const": "ray.io/v1"}, "kind": {"const": "RayCluster"},
                                 "metadata": {"type": "object"}, "spec": cluster_spec},
                  "additionalProperties": False}
    return {"RayJob": jsonschema.Draft7Validator(rayjob), "RayCluster": jsonschema.Draft7Validator(raycluster)}


@pytest.mark.parametrize("path,kind", [(RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")])
def test_kuberay_manifests_validate_against_the_crd_schema(path, kind):
    doc = load(path)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validators()[kind].iter_errors(doc)]
    assert not errors, errors


def test_crd_check_is_not_vacuous():
    doc = load(RAYCLUSTER)
    doc["spec"]["workerGroupSpecs"][0]["rayStartParam"] = {}  # typo
    doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 4  # must be a string
    assert len(list(crd_validators()["RayCluster"].iter_errors(doc))) == 2


def cluster_specs() -> list[dict]:
    return [load(RAYCLUSTER)["spec"], load(RAYJOB)["spec"]["rayClusterSpec"]]


def test_rayjob_runs_on_the_raycluster_spec():
    raycluster, rayjob = cluster_specs()
    assert rayjob == raycluster


def test_kuberay_head_is_cpu_and_workers_have_one_gpu_each():
    for spec in cluster_specs():
        (head,) = spec["headGroupSpec"]["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in head["resources"]["limits"]
        assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
        (group,) = spec["workerGroupSpecs"]
        assert 1 <= group["minReplicas"] <= group["replicas"] < group["maxReplicas"] == 4
        (worker,) = group["template"]["spec"]["containers"]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert worker["resources"]["requests"]["nvidia.com/gpu"] == 1
        for params in (spec["headGroupSpec"]["rayStartParams"], group["rayStartParams"]):
            assert params["disable-usage-stats"] == "true"
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["authOptions"] == {"mode": "token"}


def pods(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]


def test_kuberay_uses_one_image_and_the_dockerfiles_ray():
    images = {c["image"] for spec in cluster_specs() for pod in pods(spec) for c in pod["spec"]["containers"]}
    assert len(images) == 1, images  # head, GPU workers and (by default) the RayJob submitter run the same image
    for spec in cluster_specs():
        assert spec["rayVersion"] == dockerfile_args()["RAY_VERSION"]


def test_every_ray_pod_mounts_the_shared_claim():
    pvc = load(PVC)
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for spec in cluster_specs():
        for pod in pods(spec):
            volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
            (container,) = pod["spec"]["containers"]
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SHARED]
            assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def test_rayjob_deletes_its_cluster_and_runs_in_the_images_repository():
    spec = load(RAYJOB)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"working_dir": dockerfile_workdir()}


# --- Dockerfile -------------------------------------------------------------------------------------------------

def test_dockerfile_installs_the_project_like_the_makefile():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11[-\w.]*$", text, re.M)
    assert dockerfile_args()["TORCH_VERSION"] == makefile_torch()
    runs = re.findall(r"^RUN (.*)$", text, re.M)
    torch = next(i for i, r in enumerate(runs) if '"torch==${TORCH_VERSION}"' in r)
    project = next(i for i, r in enumerate(runs) if r.startswith("pip install -e . "))
    assert torch < project  # torch pinned first, as in the Makefile
    assert '"ray[default,train,tune,data]==${RAY_VERSION}"' in runs[project]


def test_dockerfile_copies_what_the_package_and_its_configs_need():
    import tomllib

    copied = set()
    for sources in re.findall(r"^COPY (.*) \S+$", DOCKERFILE.read_text(), re.M):
        copied.update(sources.split())
    for source in copied:
        assert (ROOT / source).exists(), source
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", project["project"]["readme"], "configs", "data"} <= copied


# --- every `metaicl` command in these files ---------------------------------------------------------------------

STOP = {"|", "||", "&&", ";", ">", ">>", "&"}


def command_lines(path: Path) -> list[str]:
    """The `metaicl ...` commands written in a file: README code blocks; in YAML and the Dockerfile the example
    commands in comments (`#` then 2+ spaces); a line continued with `\\` is joined. A command starts a line or
    follows ` -- ` (`ray job submit ... -- metaicl ...`)."""
    text = path.read_text()
    if path.suffix == ".md":
        lines = "\n".join(re.findall(r"```[^\n]*\n(.*?)```", text, re.S)).splitlines()
    else:
        lines = re.findall(r"^\s*#\s{2,}(.*)$", text, re.M)
    joined, pending = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
        else:
            joined.append(pending + line)
            pending = ""
    found = []
    for line in joined:
        match = re.search(r"(?:^|\s--\s+)(metaicl\s.*)$", line.strip().removeprefix("$ "))
        if match:
            found.append(match.group(1))
    return found


def all_commands() -> list[tuple[str, str]]:
    found = [(path.name, cmd) for path in sorted(CONFIGS.iterdir()) if path.is_file() and path.suffix != ".gz"
             for cmd in command_lines(path)]
    found.append(("kuberay-rayjob.yaml: entrypoint", load(RAYJOB)["spec"]["entrypoint"]))
    return found


def test_commands_are_found_where_they_are_written():
    where = [w for w, _ in all_commands()]
    assert where.count("README.md") >= 4 and "ray-cluster.yaml" in where and "kuberay-raycluster.yaml" in where
    assert "kuberay-rayjob.yaml: entrypoint" in where


def subcommands() -> set[str]:
    import argparse

    (sub,) = [a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


@pytest.mark.parametrize("where,command", [pytest.param(w, c, id=f"{w}:{c.split()[1]}")
                                           for w, c in all_commands()])
def test_every_metaicl_command_here_parses_and_its_config_loads(where, command):
    tokens = shlex.split(command, comments=True)
    tokens = tokens[:next((i for i, t in enumerate(tokens) if t in STOP), len(tokens))]
    assert tokens[0] == "metaicl", command
    if tokens[1] not in subcommands():
        pytest.skip(f"`metaicl {tokens[1]}` is not in this CLI yet: {where}")
    try:
        args = parser().parse_args(tokens[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{command}` does not parse")
    if getattr(args, "config", None) is None:
        return
    # Relative to the repository root: the launcher ships it as the job's working dir, the image has it at /app.
    cfg, _ = load_config(ExperimentConfig, ROOT / args.config, args.overrides)
    if tokens[1] == "run":  # on a cluster: join it, keep runs and data on the shared volume
        assert cfg.cluster.address == "auto", command
    if tokens[1] in ("run", "submit"):
        assert cfg.runs_root.startswith(SHARED + "/") and cfg.data_root.startswith(SHARED + "/"), command
        assert cfg.train.use_gpu and cfg.train.precision == "auto", command  # auto: bf16 on GPU
        for name in cfg.arm_names():  # every arm passes metaicl's up-front GPU check on each cluster here
            t = cfg.arm(name).train
            need = t.num_workers * getattr(t, "gpus_per_worker", 1)
            assert all(need <= kept for kept in gpus_kept_up().values()), (command, name, need, gpus_kept_up())
