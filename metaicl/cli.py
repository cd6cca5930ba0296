"""`metaicl` command line. New knobs go into config dataclasses, never into new flags.

    metaicl run configs/quickstart.yaml train.steps=500 out_dir=runs/try
    metaicl data build configs/quickstart.yaml data.zipf_alpha=1.0
    metaicl data stats runs/data/bursty_fewshot-1a2b3c4d
    metaicl data show runs/data/bursty_fewshot-1a2b3c4d --split icl_swap -n 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from metaicl.core.errors import ConfigError, RunFailed


def cmd_run(args: argparse.Namespace) -> int:
    """`run` chains every stage; `train`, `metatrain` and `eval` run one stage of an LM experiment."""
    from metaicl.core.config import load_config, to_yaml
    from metaicl.core.ray_local import prepare_env
    from metaicl.experiment import ExperimentConfig

    cfg, resolved = load_config(ExperimentConfig, args.config, args.overrides, base=Path.cwd())
    stages = {"run": ("pretrain", "metatrain", "eval"), "train": ("pretrain",), "metatrain": ("metatrain",),
              "eval": ("eval",)}[args.command]
    if args.command != "run" and cfg.kind != "lm":
        raise ConfigError("lm", f"`metaicl {args.command}` runs a stage of a language-model experiment: the "
                                f"config needs an `lm:` group (e.g. configs/metaicl_synthetic.yaml)")
    cfg.check_trainable()
    from cluster.pipeline import dry_run, run

    if args.dry_run:
        print(dry_run(cfg, stages))
        return 0
    prepare_env(local=cfg.cluster.address == "local")
    run(cfg, to_yaml(resolved), stages=stages, progress=None)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from metaicl.core.ray_local import prepare_env

    prepare_env()
    from cluster.sweep import run_sweep

    run_sweep(args.config, args.overrides, cwd=Path.cwd())
    return 0


def cmd_aggregate(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from cluster.aggregate import aggregate
    from metaicl.core.io import write_parquet

    table = aggregate(args.runs)
    out = args.out or f"{args.runs[0].rstrip('/')}/aggregate.parquet"
    write_parquet(out, pa.Table.from_pandas(table, preserve_index=False))
    print(f"{out}: {len(table)} rows, {table.run.nunique()} runs, {len(table.columns)} columns")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from cluster.aggregate import aggregate
    from cluster.sweep_report import write_sweep_report

    root = Path(args.runs)
    print(write_sweep_report(root, aggregate([root]), title=args.title or root.name))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit `metaicl run|sweep CONFIG` (validated and resolved here) as a Ray job."""
    from cluster import jobs

    relative = [o for o in args.overrides if o.split("=")[0] in ("runs_root", "data_root", "out_dir")
                and not o.split("=", 1)[1].startswith("/")]
    job_id = jobs.submit(args.config, args.overrides, args.address, command=args.command, wait=args.wait)
    print(f"submitted {job_id} to {args.address or '$RAY_ADDRESS'}")
    placed = any(o.split("=")[0] in ("runs_root", "out_dir") for o in args.overrides)
    if not placed or relative:
        print("note: relative output paths land in the job's working directory on the cluster; pass "
              "runs_root=/shared/... data_root=/shared/... (storage every node sees) to keep results")
    if args.wait:
        final = jobs.status(job_id, args.address)
        print(f"{job_id}: {final}")
        return 0 if final == "SUCCEEDED" else 1
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    from cluster import jobs

    if args.action == "status":
        print(jobs.status(args.job_id, args.address))
    elif args.action == "logs":
        print(jobs.logs(args.job_id, args.address), end="")
    else:
        print("stopped" if jobs.stop(args.job_id, args.address) else "already finished")
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    """Build (or reuse) the data of every arm of a config: its token mixture (`pretrain:`) if it has one, else the
    few-shot data (`data:`). Prints where and the statistics card. `out_dir=` is the data directory itself
    (`<out_dir>/<arm>` when there are several arms)."""
    from metaicl.core.config import load_config
    from metaicl.core.ray_local import init_ray
    from metaicl.experiment import ExperimentConfig
    from pretrain_data.build import IN_PROCESS_SHARDS, build, shard_count, target_dir
    from pretrain_data.show import format_card

    cfg, _ = load_config(ExperimentConfig, args.config, args.overrides, base=Path.cwd())
    names, mixture_cards = cfg.arm_names(), {}
    for name in names:
        arm = cfg.arm(name)
        spec = arm.data_spec
        if spec is None:
            raise ConfigError("pretrain", "this config names no data to build (no `pretrain:` or `data:` group)")
        where = ((Path(cfg.out_dir) / name if len(names) > 1 else Path(cfg.out_dir)) if cfg.out_dir
                 else target_dir(spec, arm.data_root))
        done = (where / "manifest.json").exists()
        if not done and (cfg.cluster.address != "local" or shard_count(spec) > IN_PROCESS_SHARDS):
            init_ray(cfg.cluster)
        manifest = build(spec, arm.data_root, progress=sys.stderr.isatty(), out_dir=where)
        print(f"data [{name}]: {'reused' if done else 'built'} {manifest.root}")
        card = _card(manifest.root, write=False)
        print(format_card(card))
        if manifest.kind == "mixture":
            mixture_cards[name] = card
    if mixture_cards:
        from cluster.report import write_data_report

        where = Path(cfg.out_dir) if cfg.out_dir else Path(cfg.runs_root) / f"{cfg.name}-data"
        print(f"report: {write_data_report(where, f'{cfg.name}: pretraining data', mixture_cards)}")
    return 0


def _card(root, write: bool = True) -> dict:
    """stats.json of a data directory, computed (in process) and written if missing."""
    from metaicl.core.io import read_json, write_json
    from pretrain_data.manifest import Manifest
    from pretrain_data.stats import stats

    if (root / "stats.json").exists():
        return read_json(root / "stats.json")
    manifest = Manifest.read(root)
    if manifest.kind == "mixture":
        from pretrain_data.mixture_config import MixtureStatsConfig
        from pretrain_data.mixture_stats import mixture_stats

        card = mixture_stats(manifest, MixtureStatsConfig(**manifest.config["stats"]), remote=False)
    else:
        card = stats(manifest, remote=False)
    if write:
        write_json(root / "stats.json", card)
    return card


def _data_dir(path: str):
    root = Path(path)
    if not (root / "manifest.json").is_file():
        raise ConfigError("DIR", f"{root} is not a complete data directory (no manifest.json)")
    return root


def cmd_data_stats(args: argparse.Namespace) -> int:
    from pretrain_data.show import format_card

    print(format_card(_card(_data_dir(args.dir))))
    return 0


def cmd_data_show(args: argparse.Namespace) -> int:
    from pretrain_data.manifest import Manifest
    from pretrain_data.show import show, show_mixture

    manifest = Manifest.read(_data_dir(args.dir))
    try:
        print(show_mixture(manifest, args.n) if manifest.kind == "mixture" else show(manifest, args.split, args.n))
    except ValueError as err:
        raise ConfigError("--split", str(err)) from None
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metaicl",
        description="How do the pretraining data distribution and meta-training shape in-context learning? "
                    "One config describes an experiment; Ray builds the data and trains the arms.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run an experiment end to end: data -> train every arm -> results + report",
                         description="Run CONFIG end to end. Overrides are dotted key=value pairs, e.g. "
                                     "train.steps=500 data.zipf_alpha=1.0 out_dir=runs/try cluster.num_cpus=2.")
    run.add_argument("config", help="experiment YAML, e.g. configs/quickstart.yaml")
    run.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    run.add_argument("--dry-run", action="store_true", help="print every step, its directory and whether it is "
                                                             "done; start nothing")
    run.set_defaults(fn=cmd_run)
    for name, what in (("train", "pretrain the language model on the config's mixture (LM experiments)"),
                       ("metatrain", "MetaICL meta-training of the pretrained model, or of lm.name_or_path=DIR"),
                       ("eval", "the MetaICL table of the config's models, or of lm.name_or_path=DIR")):
        stage = sub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}. One stage of `metaicl run`"
                                                            f"; its inputs must exist (earlier stages of the same run) "
                                                            f"or come from lm.name_or_path.")
        stage.add_argument("config", help="LM experiment YAML, e.g. configs/metaicl_synthetic.yaml")
        stage.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        stage.add_argument("--dry-run", action="store_true", help="print the steps; start nothing")
        stage.set_defaults(fn=cmd_run)

    sweep = sub.add_parser("sweep", help="run every trial of CONFIG's sweep: block with Ray Tune, then aggregate "
                                         "and report", description="Each trial is a full run in its own hashed run "
                           "directory under out_dir (default runs_root/<name>-sweep); finished trials are skipped.")
    sweep.add_argument("config", help="experiment YAML with a sweep: block, e.g. configs/sweeps/burstiness_zipf.yaml")
    sweep.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    sweep.set_defaults(fn=cmd_sweep)
    agg = sub.add_parser("aggregate", help="every run under RUNS_DIR... as one parquet table (config, card, results)")
    agg.add_argument("runs", nargs="+", metavar="RUNS_DIR")
    agg.add_argument("--out", help="output parquet (default: RUNS_DIR/aggregate.parquet)")
    agg.set_defaults(fn=cmd_aggregate)
    rep = sub.add_parser("report", help="report.md + report.html of the runs under RUNS_DIR (phase diagram, curves, "
                                        "attribution)")
    rep.add_argument("runs", metavar="RUNS_DIR")
    rep.add_argument("--title", help="report title (default: the directory name)")
    rep.set_defaults(fn=cmd_report)

    submit = sub.add_parser("submit", help="submit `metaicl run|sweep CONFIG` to a Ray cluster as a Ray job",
                            description="The config is validated and resolved here; the working directory is "
                                        "packaged (without .venv, runs, .git, data shards). Token auth: set "
                                        "RAY_AUTH_TOKEN to the cluster's token.")
    submit.add_argument("config", help="experiment YAML")
    submit.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    submit.add_argument("--address", help="the cluster's dashboard, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    submit.add_argument("--command", choices=("run", "sweep", "train", "metatrain", "eval"), default="run",
                        help="what the job runs (default: run)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish; exit 1 unless it succeeded")
    submit.set_defaults(fn=cmd_submit)
    jobs_cmd = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jobs_cmd.add_argument("action", choices=("status", "logs", "stop"))
    jobs_cmd.add_argument("job_id")
    jobs_cmd.add_argument("--address", help="the cluster's dashboard, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
    jobs_cmd.set_defaults(fn=cmd_jobs)

    data = sub.add_parser("data", help="build, measure and look at data directories")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    build = dsub.add_parser("build", help="build the data of every arm of CONFIG (no training)")
    build.add_argument("config", help="experiment YAML; its data group (and arms) say what to build")
    build.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    build.set_defaults(fn=cmd_data_build)
    stats = dsub.add_parser("stats", help="print the statistics card of a data directory (computed if missing)")
    stats.add_argument("dir", help="data directory, e.g. runs/data/bursty_fewshot-1a2b3c4d")
    stats.set_defaults(fn=cmd_data_stats)
    show = dsub.add_parser("show", help="print a few decoded sequences of a data directory")
    show.add_argument("dir", help="data directory")
    show.add_argument("--split", default="train",
                      help="few-shot data: train, icl_novel, icl_swap or iwl (default: train); mixtures: the stream")
    show.add_argument("-n", type=int, default=5, help="how many sequences (default: 5)")
    show.set_defaults(fn=cmd_data_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ConfigError, RunFailed) as err:
        print(f"metaicl: {message(err)}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except Exception as err:
        line = remote_failure(err)
        if line is None:  # raised here, in the driver: a bug, whose traceback is what a fix needs
            raise
        print(f"metaicl: {line}", file=sys.stderr)
        return 1


def remote_failure(err: BaseException) -> str | None:
    """One line for an error raised inside a Ray task or actor (a full disk, a library's error), or by Ray itself
    (a cluster that does not answer): its type and message, and a file that keeps the full traceback; None for an
    error raised by this project's code in this process."""
    import tempfile
    import traceback

    cause = getattr(err, "cause", None)
    remote = "RayTaskError" in type(err).__name__ or "RayActorError" in type(err).__name__
    if type(err).__module__.split(".")[0] != "ray" and not remote:
        return None
    with tempfile.NamedTemporaryFile("w", prefix="metaicl-error-", suffix=".log", delete=False) as log:
        log.write(str(err) if remote else "".join(traceback.format_exception(err)))
    what = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}" if cause else (
        str(err).splitlines()[0] if str(err) else type(err).__name__)
    return f"{what} ({'inside a Ray task' if remote else 'from Ray'}; its traceback: {log.name})"


def message(err: BaseException) -> str:
    """One line for the user. An error raised inside a Ray task reaches the driver as Ray's RayTaskError, which
    subclasses the error's own class and carries the remote traceback in its text: its `cause` is the error."""
    cause = getattr(err, "cause", None)
    return str(cause if isinstance(cause, (ConfigError, RunFailed)) else err)


if __name__ == "__main__":
    sys.exit(main())
