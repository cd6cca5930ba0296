"""Train one arm of an experiment on one rank: data + model + loop + outputs, no Ray.

    run_arm(ArmSpec("bursty", "runs/data/.../manifest.json", "runs/x/arms/bursty", ModelConfig(), TrainConfig(),
                    EvalConfig()))

Writes into the arm directory: checkpoints/, progress.json (live), model/ (final weights, safetensors), and last
metrics.parquet (step, eval, metric, value), whose presence marks the arm complete. Importing this module does
not import torch (the pipeline builds specs and checks `done` without it); running an arm does.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import pyarrow as pa

from metaicl.core.io import atomic_dir, write_json, write_parquet
from metaicl.core.seeding import seed_all
from metaicl.eval.config import EvalConfig
from metaicl.models.config import ModelConfig
from metaicl.train.config import TrainConfig
from pretrain_data.manifest import Manifest
from pretrain_data.reader import FewShotReader

if TYPE_CHECKING:
    import torch

    from metaicl.models.icl_transformer import ICLTransformer

DONE_FILE = "metrics.parquet"


@dataclass
class ArmSpec:
    arm: str
    manifest_path: str
    out_dir: str
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig

    @property
    def done(self) -> bool:
        return (Path(self.out_dir) / DONE_FILE).exists()

    def run(self, **kwargs) -> list[dict]:
        return run_arm(self, **kwargs)


def build_model(spec: ArmSpec, manifest: Manifest) -> ICLTransformer:
    from metaicl.models.icl_transformer import ICLTransformer

    data = manifest.config
    return ICLTransformer(spec.model, data["item_dim"], data["num_labels"], data["context_pairs"])


def run_arm(spec: ArmSpec, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
            wrap: Callable[[torch.nn.Module], torch.nn.Module] = lambda m: m,
            report: Callable[[dict], None] = lambda m: None) -> list[dict]:
    from safetensors.torch import save_model

    from metaicl.data.fewshot import GlobalBatches
    from metaicl.eval.icl import ICLEvaluator
    from metaicl.train.checkpoint import Checkpointer
    from metaicl.train.loop import train_loop

    out = Path(spec.out_dir)
    manifest = Manifest.read(spec.manifest_path)
    reader = FewShotReader(manifest)
    seed_all(spec.train.seed)
    model = build_model(spec, manifest).to(device)
    evaluator = ICLEvaluator(reader, spec.eval, device) if rank == 0 else None
    history = train_loop(
        spec.train, wrap(model), GlobalBatches(reader, spec.train.batch_size, rank, world),
        evaluate=lambda: evaluator(model), checkpointer=Checkpointer(out / "checkpoints"), is_chief=rank == 0,
        device=device, report=report, progress=lambda p: write_json(out / "progress.json", p),
        data_state={"config_hash": manifest.config_hash, "batch_size": spec.train.batch_size})
    if rank == 0:
        with atomic_dir(out / "model") as tmp:
            save_model(model, str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps({"model": asdict(spec.model), "data": manifest.config}))
        write_parquet(out / DONE_FILE, pa.Table.from_pylist(history))
    return history
