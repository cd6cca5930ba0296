"""Making a meta-training batch of fresh tasks (metatrain.fresh_tasks, issue 15) against the model step it feeds,
side by side: on 2 CPU cores the batch is made in the same process as the step, so its cost adds to every step.

    python bench/episode_batches.py [--steps 20] [--threads 2]

Shape: issue 15's recipe (a synthetic collection of first_token / middle_token / majority tasks, 3-token inputs, 3
classes, 64-example pools; episodes of k = 8, the loss on every output, 128 a step) and the Llama tiny preset with 1
head on the mixture's ~3,100-token vocabulary. Sides: a batch of fresh tasks (a new task per episode), a batch of
the collection's tasks (the pools read from disk once), and the model's forward + backward on such a batch. Goal:
fresh batch / model step <= 0.65. Measured 2026-12-03 on the 2-core box: 49 ms / 66 ms = 0.73 when every pool's 64
records were written as text, 36 ms / 64 ms = 0.57 (31 / 53 = 0.59 in a second run) with a record written only when
an episode reads it, 30 ms / 59 ms = 0.50 with each demonstration also encoded once (not twice) per episode.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from bench.timing import alternate, cpu_args
    from metaicl.data.episodes import EpisodeConfig
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.models.lm import LMConfig, build_lm, lm_loss
    from metaicl.train.lm import EpisodeBatches, EpisodeData
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    args = cpu_args(steps=20)
    vocab, batch = 3100, 128
    cfg = TaskFamiliesConfig(meta_train_families=["first_token", "middle_token", "majority"],
                             eval_families=["last_token"], tasks_per_family=200, input_length=3, keys_per_class=1,
                             label_words=16)
    with tempfile.TemporaryDirectory() as tmp:
        info = build_task_families(cfg, (1, 1025), Path(tmp) / "tasks")
        batches = {fresh: EpisodeBatches(EpisodeData(str(Path(tmp) / "tasks"), info["splits"]["meta_train"],
                                                     EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64),
                                                     k=8, tokenizer=TokenizerSpec(**info["tokenizer"]),
                                                     loss_on="all_outputs", fresh_tasks=fresh), batch)
                   for fresh in (True, False)}
        model = build_lm(LMConfig(arch="llama", preset="tiny", n_head=1, context_length=64), vocab_size=vocab)

        fixed = batches[True].get(0)

        def step(_: int) -> None:
            model.zero_grad()
            lm_loss(model, fixed).backward()

        best = alternate({"fresh": batches[True].get, "collection": batches[False].get, "step": step}, args.steps)
    print(f"meta-training batch of {batch} episodes ({args.threads} threads): fresh tasks {best['fresh'] * 1e3:.0f} ms, "
          f"the collection's tasks {best['collection'] * 1e3:.0f} ms, model forward + backward "
          f"{best['step'] * 1e3:.0f} ms; fresh / step {best['fresh'] / best['step']:.2f} (goal <= 0.65)")


if __name__ == "__main__":
    main()
