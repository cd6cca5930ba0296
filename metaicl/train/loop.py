"""The training loop: plain torch, no Ray (STYLE principle 5).

    history = train_loop(cfg, model, batches, evaluate, checkpointer, loss_fn=query_label_loss, is_chief=True)

`loss_fn(model, batch)` says what is learnt: `query_label_loss` for the spine's in-context classifier (the query's
label only; Chan et al. 2022; Reddy 2023: the context labels are inputs, not targets), `metaicl.train.lm.lm_loss`
for language models. Each step's batch is split into `cfg.grad_accum` micro-batches whose gradients add up (DDP
syncs on the last one only). Resumes from the checkpointer's latest checkpoint, so a restart or a retried worker
continues where it stopped; the data a step sees depends only on the step (see GlobalBatches).
"""
from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from typing import Callable

import torch
import torch.nn.functional as F

from metaicl.train.checkpoint import Checkpointer
from metaicl.train.config import TrainConfig


COMPILE_BACKEND = "inductor"
"""torch.compile's backend for `train.compile` (tests trace with "eager": the compiled path without code generation)."""


def lr_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    """Linear warm-up to the peak, then cosine decay to min_lr_ratio x peak at the last step."""
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def autocast(cfg: TrainConfig, device: torch.device):
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def query_label_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Cross-entropy of the query's label given the sequence (items, labels)."""
    items, labels = batch
    return F.cross_entropy(model(items, labels).float(), labels[:, -1])


def _step_loss(cfg: TrainConfig, model, batch, loss_fn, device: torch.device) -> float:
    """Forward and backward of one step's batch in cfg.grad_accum micro-batches; returns the mean loss."""
    chunks = list(zip(*(t.chunk(cfg.grad_accum) for t in batch)))
    total = 0.0
    for i, micro in enumerate(chunks):
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(cfg, device):
                loss = loss_fn(model, micro)
            (loss / len(chunks)).backward()
        total += loss.item() / len(chunks)
    return total


def train_loop(cfg: TrainConfig, model: torch.nn.Module, batches, evaluate: Callable[[], dict],
               checkpointer: Checkpointer, *, loss_fn: Callable = query_label_loss, is_chief: bool = True,
               device: torch.device | str = "cpu",
               data_state: dict | None = None, report: Callable[[dict], None] = lambda m: None,
               progress: Callable[[dict], None] = lambda p: None) -> list[dict]:
    """Train for cfg.steps; returns the history rows {step, eval, metric, value}.
    `batches.get(step)` gives this rank's share of global batch `step` (a tuple of tensors); `evaluate()` measures the unwrapped model;
    `report(metrics)` is called on every rank at each evaluation (Ray Train's hook); `progress(state)` on the
    chief for live display (its `resumed_from`: the step this process started at); `data_state` is stored in
    checkpoints and must match on resume."""
    device = torch.device(device)
    data_state = data_state or {}
    raw = getattr(model, "module", model)  # DDP wraps the model; checkpoints hold the plain module
    cuda = device.type == "cuda"
    # On a GPU: AdamW's fused kernel (one launch for every parameter) and batches copied from pinned memory, so the
    # copy overlaps compute (issue 18). Neither exists on the CPU, whose results stay as they were.
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  **({"fused": True} if cuda else {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    if cfg.compile or (cfg.compile is None and cuda):
        model = torch.compile(model, backend=COMPILE_BACKEND)  # checkpoints and evaluation keep the plain `raw`
    history, step, window = [], 0, []
    latest, state = checkpointer.restore_latest(raw, optimizer, scheduler)
    if latest is not None:
        if state.get("data_state") != data_state:
            raise RuntimeError(f"checkpoint {latest} was made on other data ({state.get('data_state')}) than "
                               f"this run ({data_state}); remove it or change out_dir")
        # the losses since the last evaluation too: a checkpoint between two evaluations resumes the train-loss
        # row it was averaging, so a resumed run's history equals an uninterrupted one's
        step, history, window = state["step"], state["history"], state.get("window", [])
    resumed_from = step

    def measure() -> dict:
        metrics = evaluate() if is_chief else {}
        history.extend({"step": step, "eval": name, "metric": metric, "value": value}
                       for name, values in metrics.items() for metric, value in values.items())
        report({"step": step, **{f"{n}/{m}": v for n, vals in metrics.items() for m, v in vals.items()}})
        return metrics

    last_eval = measure() if step == 0 else {}
    recent, done_here, started = deque(maxlen=cfg.log_every), 0, time.perf_counter()
    ticks = deque([started], maxlen=cfg.log_every + 1)  # when each of the last log_every steps ended
    model.train()
    while step < cfg.steps:
        batch = tuple((t.pin_memory() if cuda else t).to(device, non_blocking=True) for t in batches.get(step))
        optimizer.zero_grad(set_to_none=True)
        loss = _step_loss(cfg, model, batch, loss_fn, device)
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        step, done_here = step + 1, done_here + 1
        ticks.append(time.perf_counter())  # before any evaluation or checkpoint: the steps' own rate
        window.append(loss)
        recent.append(window[-1])
        if step % cfg.eval_every == 0 or step == cfg.steps:
            history.append({"step": step, "eval": "train", "metric": "loss", "value": sum(window) / len(window)})
            window = []
            last_eval = measure()
        if is_chief and (step % cfg.log_every == 0 or step == cfg.steps):
            progress({"step": step, "steps": cfg.steps, "resumed_from": resumed_from,
                      "loss": sum(recent) / len(recent), "steps_per_s": done_here / (time.perf_counter() - started),
                      # the last log_every steps alone: after torch.compile's first steps, without evaluations
                      # and checkpoints (bench/gpu_throughput.py reads it)
                      "recent_steps_per_s": (len(ticks) - 1) / (ticks[-1] - ticks[0]),
                      "threads": torch.get_num_threads(),
                      "accuracy": {k: v["accuracy"] for k, v in last_eval.items() if "accuracy" in v}})
        if is_chief and (step % cfg.ckpt_every == 0 or step == cfg.steps):
            checkpointer.save(step, raw, optimizer, scheduler,
                              {"history": history, "window": window, "data_state": data_state})
    return history
