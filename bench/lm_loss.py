"""Meta-training's loss where only the query's output is scored (issue 18): the full logits masked afterwards
against the output layer run at the targets alone (`metaicl.models.lm.lm_loss`), forward + backward, side by side.

    python bench/lm_loss.py [--steps 10] [--threads 2]

Shape: configs/metaicl_synthetic.yaml's meta-training (GPT-2 tiny preset, its ~3,100-token vocabulary, 32 episodes
of 256 tokens, two target tokens per episode at a random end). Goal: scored/full time per step <= 0.5; loss equal
within float32 rounding (relative 1e-6).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    import torch.nn.functional as F

    from bench.timing import alternate, cpu_args
    from metaicl.models.lm import LMConfig, build_lm, lm_loss

    args = cpu_args(steps=10)
    vocab, batch, length = 3100, 32, 256
    model = build_lm(LMConfig(preset="tiny", context_length=length), vocab_size=vocab)
    ids = torch.randint(1, vocab, (batch, length))
    mask = torch.zeros_like(ids)
    for row, end in enumerate(torch.randint(100, length, (batch,)).tolist()):
        mask[row, end - 2:end] = 1

    def full():
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1), reduction="none")
        weight = mask[:, 1:].reshape(-1).float()
        return (nll * weight).sum() / weight.sum()

    def scored():
        return lm_loss(model, (ids, mask))

    def backward(loss: Callable) -> Callable[[int], None]:
        def step(_: int) -> None:
            model.zero_grad()
            loss().backward()
        return step

    best = alternate({"full": backward(full), "scored": backward(scored)}, args.steps)
    with torch.no_grad():
        a, b = full().item(), scored().item()
        diff = abs(a - b) / abs(a)
    print(f"loss where only targets are scored ({args.threads} threads): full logits {best['full'] * 1e3:.0f} ms/step, "
          f"targets only {best['scored'] * 1e3:.0f} ms/step, ratio {best['scored'] / best['full']:.2f} "
          f"(goal <= 0.5); relative loss difference {diff:.1e} (goal <= 1e-6)")


if __name__ == "__main__":
    main()
