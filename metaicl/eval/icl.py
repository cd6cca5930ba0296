"""ICL vs in-weights evaluation on the fixed eval sets of a data directory (Chan et al. 2022 Sec. 3.3).

    evaluator = ICLEvaluator(reader, EvalConfig(), device)
    evaluator(model)   # {"icl_novel": {"accuracy": 0.98, "loss": 0.05}, ...}

Accuracy is the argmax over all L labels. Chance levels differ by set: on icl_novel and icl_swap a model that
knows the answer is one of the two labels in its context but not which scores 1/2; on iwl chance is 1/L
(`metaicl.eval.config.chance_level`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from metaicl.eval.config import EvalConfig
from pretrain_data.reader import FewShotReader


class ICLEvaluator:
    def __init__(self, reader: FewShotReader, cfg: EvalConfig, device: torch.device | str = "cpu"):
        self.cfg, self.device, self.batch = cfg, torch.device(device), cfg.sequences_per_pass()
        self.data = {}
        for name in cfg.sets:
            items, labels = reader.split(name)
            self.data[name] = (torch.from_numpy(items), torch.from_numpy(labels))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module) -> dict[str, dict[str, float]]:
        was_training = model.training
        model.eval()
        out = {}
        for name, (items, labels) in self.data.items():
            correct, loss = 0, 0.0
            for start in range(0, len(items), self.batch):
                x = items[start : start + self.batch].to(self.device)
                y = labels[start : start + self.batch].to(self.device)
                logits = model(x, y).float()
                loss += F.cross_entropy(logits, y[:, -1], reduction="sum").item()
                correct += (logits.argmax(-1) == y[:, -1]).sum().item()
            out[name] = {"accuracy": correct / len(items), "loss": loss / len(items)}
        model.train(was_training)
        return out
