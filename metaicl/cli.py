"""`metaicl` command line. New knobs go into config dataclasses, never into new flags.

    metaicl run configs/quickstart.yaml train.steps=500 out_dir=runs/try
"""
from __future__ import annotations

import argparse
import sys

from metaicl.core.errors import ConfigError


def cmd_run(args: argparse.Namespace) -> int:
    from metaicl.core.config import load_config, to_yaml
    from metaicl.core.ray_local import prepare_env

    from metaicl.experiment import ExperimentConfig

    cfg, resolved = load_config(ExperimentConfig, args.config, args.overrides)
    prepare_env(local=cfg.cluster.address == "local")
    from cluster.pipeline import run

    run(cfg, to_yaml(resolved), progress=None)
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
    run.set_defaults(fn=cmd_run)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except ConfigError as err:
        print(f"metaicl: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
