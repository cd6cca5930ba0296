"""The evaluation door: score one model's methods on the target tasks -> tidy rows.

    rows = evaluate_variant("metaicl", "runs/data/metatrain-metaicl-9f8e7d6c/model", ["metaicl"],
                            "runs/data/tasks-1a2b", ["last_token_00"], EvalConfig(), EpisodeConfig(),
                            FinetuneConfig(), TokenizerSpec("ids", vocab_size=4097))
    # [{"method": "metaicl", "task": "last_token_00", "k": 16, "seed": 100, "scoring": "sum",
    #   "metric": "macro_f1", "value": 0.93}, ...]

MetaICL's protocol (Min et al. 2022, Sec. 4): for each seed, k training examples are sampled once and are the
demonstrations of every test query; the answer is the option with the highest score. Scores are summed option
log-probabilities (`scoring: sum`) and their per-token mean (`scoring: mean`), direct or channel, optionally minus
the score given a null input (PMI). Classification -> macro-F1 and accuracy. 0-shot methods do not depend on k or
the seed: they are scored once and reported with k = 0 for every seed, so means and worsts line up.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import rng_for
from metaicl.data.episodes import EpisodeConfig, max_demos, pad, score_request, train_sequence
from metaicl.data.tasks import Task, load_collection
from metaicl.data.tokenizer import TokenizerSpec, load_tokenizer
from metaicl.eval.config import MAX_K
from metaicl.eval.demos import abstract_task, with_labels
from metaicl.eval.embed import cached_embedder
from metaicl.eval.methods import METHODS, Method
from metaicl.eval.metrics import accuracy, macro_f1
from metaicl.eval.scoring import option_scores, pmi_scores, score
from metaicl.eval.select import SHARED, demos_per_query, entropy_order, lm_embedder, probes_for, shared_set
from metaicl.models.lm import lm_loss, load_lm

SCORINGS = {"sum": False, "mean": True}
"""scoring column -> length-normalise (per-token mean of the option's log-probs)."""


def scored_queries(task: Task, cfg) -> list:
    """The test queries scored: the first eval.max_test_examples (0 = all)."""
    return task.test[: cfg.max_test_examples or None]


def predict(model, task: Task, demos, method: Method, cfg, episodes: EpisodeConfig, tok, device,
            raw_out: list | None = None, per_query: bool = False) -> dict[str, np.ndarray]:
    """Predicted option index of every test example, per scoring (`raw_out` receives the raw option scores).
    `demos`: one list for every query, or (per_query) a list per query."""
    ep = dataclasses.replace(episodes, method=method.method)
    tests = scored_queries(task, cfg)
    sets = demos if per_query else [demos] * len(tests)
    requests = [score_request(shown, ex.input, task.options, ep, tok) for shown, ex in zip(sets, tests)]
    raw = score(model, requests, fast=cfg.fast, batch_size=cfg.batch_size, device=device)
    if raw_out is not None:
        raw_out.extend(raw)
    nulls = None
    if method.pmi:  # the content-free input after the same demonstrations (one request per distinct set)
        distinct = sets if per_query else sets[:1]
        scored = score(model, [score_request(shown, cfg.null_input, task.options, ep, tok) for shown in distinct],
                       fast=cfg.fast, batch_size=cfg.batch_size, device=device)
        nulls = scored if per_query else scored * len(tests)
    preds = {}
    for name, norm in SCORINGS.items():
        scores = [option_scores(r, norm) for r in raw]
        if nulls is not None:
            scores = [pmi_scores(s, option_scores(null, norm)) for s, null in zip(scores, nulls)]
        preds[name] = np.array([int(np.argmax(s)) for s in scores])
    return preds


def entropy_ordered(model, task: Task, demos: list, method: Method, cfg, episodes: EpisodeConfig, tok, device,
                    seed: int) -> list:
    """The shared set in Lu et al. 2022's GlobalE order for this method's model and scoring (summed log-probs;
    metaicl/eval/select.py: entropy_order), probed on unlabeled pool inputs the set does not show."""
    probing = dataclasses.replace(task, test=probes_for(task, demos, cfg.demos.probes, seed))
    whole = dataclasses.replace(cfg, max_test_examples=0)
    return entropy_order(demos, task, seed, cfg.demos.orders, lambda ordered: predict(
        model, probing, ordered, method, whole, episodes, tok, device)["sum"])


def finetuned(model, demos, episodes: EpisodeConfig, tok, finetune, device, save_to: str | Path | None = None):
    """A copy of `model` trained on the k examples as 0-shot sequences (loss on the output only), full batch, every
    weight or an adapter's (finetune.method, metaicl/models/adapters.py); (the tuned model, merged, and the number
    of parameters that trained). `save_to`: the adapter is kept there in peft's format first."""
    from metaicl.models.adapters import merged, save_adapter, trained_parameters, with_adapter

    tuned = with_adapter(copy.deepcopy(model), finetune.method, finetune.rank, finetune.virtual_tokens).train()
    seqs = [train_sequence([], ex, dataclasses.replace(episodes, method="direct"), tok) for ex in demos]
    batch = tuple(t.to(device) for t in pad([s.ids for s in seqs], [s.loss_mask for s in seqs]))
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=finetune.lr)
    for _ in range(finetune.steps):
        optimizer.zero_grad(set_to_none=True)
        lm_loss(tuned, batch).backward()
        optimizer.step()
    trained = trained_parameters(tuned)
    if save_to is not None:
        save_adapter(tuned, save_to)
    return merged(tuned).eval(), trained


def rows_for(method_name: str, task: Task, k: int, seed: int, preds: dict[str, np.ndarray], cfg) -> list[dict]:
    gold = np.array([task.options.index(ex.output) for ex in scored_queries(task, cfg)])
    labels = list(range(len(task.options)))
    out = []
    for scoring, pred in preds.items():
        for metric, value in (("macro_f1", macro_f1(pred, gold, labels)), ("accuracy", accuracy(pred, gold))):
            out.append({"method": method_name, "task": task.name, "k": k, "seed": seed, "scoring": scoring,
                        "metric": metric, "value": float(value)})
    return out


def label_space_rows(method_name: str, task: Task, k: int, seed: int, raw: list, demos) -> list[dict]:
    """Label-space mass at the answer slot (direct scoring): the model's total probability on the option strings
    after each query, and the share of it on options that are outputs of the demonstrations (a model stuck on
    the answer vocabulary's prior puts its mass on the options without reading which is right; one that copies
    puts it on what the context shows). Means over the queries; no share without demonstrations."""
    p = np.exp(np.array([np.asarray(r, np.float64)[:, 0] for r in raw]))  # (queries, options)
    mass = p.sum(1)
    rows = [{"method": method_name, "task": task.name, "k": k, "seed": seed, "metric": "label_mass",
             "value": float(mass.mean())}]
    if demos:  # one set for every query, or a set per query
        sets = demos if isinstance(demos[0], list) else [demos] * len(p)
        shown = np.array([[o in {d.output for d in s} for o in task.options] for s in sets])
        rows.append({"method": method_name, "task": task.name, "k": k, "seed": seed, "metric": "context_label_share",
                     "value": float(((p * shown).sum(1) / np.maximum(mass, 1e-300)).mean())})
    return rows


def oracle_rows(task: Task, cfg) -> list[dict]:
    """The label-coverage oracle of each (k, seed): a reader that knows every input's class but learns which label
    word a class has only from the k demonstrations (the synthetic families: the word-to-class mapping is random per
    task). A query whose word a demonstration shows is right; otherwise it guesses among the words no demonstration
    shows. Its mean accuracy is the ceiling of in-context learning at that k for such tasks (`oracle_accuracy`,
    method null; measured for synthetic collections only: for real tasks, whose label words mean something, 0-shot
    can beat it)."""
    gold = [ex.output for ex in scored_queries(task, cfg)]
    rows = []
    for k in cfg.k:
        for seed in cfg.seeds:
            shown = {d.output for d in shared_set(task, k, seed, cfg.demos.selection if cfg.demos.selection in
                                                  SHARED else "random")}  # retrieved sets: MetaICL's as the yardstick
            unseen = max(1, len(set(task.options) - shown))
            value = float(np.mean([1.0 if g in shown else 1.0 / unseen for g in gold]))
            rows.append({"method": None, "task": task.name, "k": k, "seed": seed, "metric": "oracle_accuracy",
                         "value": value})
    return rows


def order_spread_rows(model, name: str, task: Task, demos: list, preds: dict, cfg, episodes, tok, device, k: int,
                      seed: int) -> list[dict]:
    """Lu et al. 2022's spread over orders: the shared set scored in `eval.demos.permutations` orders (the drawn one
    first, the others random, keyed by (seed, task, k, i)); per scoring, the best minus the worst order's accuracy
    (`order_spread`) and their standard deviation (`order_sd`)."""
    method = METHODS[name]
    gold = np.array([task.options.index(ex.output) for ex in scored_queries(task, cfg)])
    scores = {scoring: [accuracy(pred, gold)] for scoring, pred in preds.items()}
    for i in range(1, cfg.demos.permutations):
        order = rng_for(seed, "order-spread", task.name, k, i).permutation(len(demos))
        for scoring, pred in predict(model, task, [demos[j] for j in order], method, cfg, episodes, tok, device,
                                     []).items():
            scores[scoring].append(accuracy(pred, gold))
    return [{"method": name, "task": task.name, "k": k, "seed": seed, "scoring": scoring, "metric": metric,
             "value": float(value)} for scoring, accs in scores.items()
            for metric, value in (("order_spread", np.ptp(accs)), ("order_sd", np.std(accs)))]


def evaluate_method(model, name: str, task: Task, cfg, episodes, finetune, tok, device,
                    similarities: dict | None = None, embed=None, adapters: str | None = None) -> list[dict]:
    """The rows of one method on one task; `similarities` caches each task's query-pool similarities (per model);
    `embed`: the cached sentence embedder (eval.demos.embedder minilm), else the scoring model embeds; `adapters`:
    where fine-tuning keeps its adapters (finetune.save_adapters)."""
    method = METHODS[name]
    direct = method.method == "direct" and not method.pmi and bool(task.options)  # the options' own probability
    raw: list = []
    if not method.demos and not method.finetune:  # one score, the same for every seed
        preds = predict(model, task, [], method, cfg, episodes, tok, device, raw)
        mass = label_space_rows(name, task, 0, 0, raw, []) if direct else []
        return [r for seed in cfg.seeds for r in [*rows_for(name, task, 0, seed, preds, cfg),
                                                   *({**m, "seed": seed} for m in mass)]]
    rows = []
    for k in cfg.k:
        for seed in cfg.seeds:
            demos = shared_set(task, k, seed, cfg.demos.selection)
            demos, raw = with_labels(demos, task, cfg.demos.labels, seed), []
            if cfg.demos.order == "entropy" and method.demos and not method.finetune:
                demos = entropy_ordered(model, task, demos, method, cfg, episodes, tok, device, seed)
            if method.finetune:
                keep = Path(adapters) / name / task.name / f"k{k}-seed{seed}" if adapters else None
                tuned, trained = finetuned(model, demos, episodes, tok, finetune, device, keep)
                preds = predict(tuned, task, [], method, cfg, episodes, tok, device, raw)
                rows.append({"method": name, "task": task.name, "k": k, "seed": seed, "metric": "trained_params",
                             "value": float(trained)})
                if cfg.icl_vs_finetune and name == "finetune":  # the same demonstrations in context, and tuned on
                    from metaicl.eval.icl_vs_ft import icl_vs_ft_rows

                    rows += icl_vs_ft_rows(model, tuned, task, demos, cfg, episodes, tok, device, k, seed)
            elif cfg.demos.per_query:  # retrieved and/or ordered for each query (metaicl/eval/select.py)
                demos = [with_labels(s, task, cfg.demos.labels, seed) for s in demos_per_query(
                    task, scored_queries(task, cfg), k, seed, cfg.demos, tok, embed or lm_embedder(model, tok, device),
                    similarities)]
                preds = predict(model, task, demos, method, cfg, episodes, tok, device, raw, per_query=True)
            else:
                preds = predict(model, task, demos, method, cfg, episodes, tok, device, raw)
                if cfg.demos.permutations > 1 and method.demos:
                    rows += order_spread_rows(model, name, task, demos, preds, cfg, episodes, tok, device, k, seed)
            rows += rows_for(name, task, k, seed, preds, cfg)
            if direct:
                rows += label_space_rows(name, task, k, seed, raw, [] if method.finetune else demos)
    return rows


def measure_variant(variant: str, model_dir: str, methods: list[str], tasks_path: str | None, task_names: list[str],
                    cfg, episodes: EpisodeConfig, finetune, tokenizer: TokenizerSpec | None, device: str = "cpu",
                    stream: str | None = None, embeddings: str | None = None, adapters: str | None = None,
                    threads: int | None = None) -> tuple[list[dict], list[dict]]:
    """Everything an LM run measures of one model, in one Ray task (one worker process, not two): its rows of
    MetaICL's table (`methods`, if any) and, with cfg.lm_icl, its own in-context ability (metaicl.eval.lm_icl;
    `stream`: the mixture's directory, for the ICL score; `embeddings`: the cached sentence embeddings'
    directory, metaicl.eval.embed)."""
    from metaicl.eval.lm_icl import LMICLConfig, measure_model

    table = evaluate_variant(variant, model_dir, methods, tasks_path, task_names, cfg, episodes, finetune, tokenizer,
                             device, threads=threads, embeddings=embeddings, adapters=adapters) if methods else []
    own = measure_model(variant, model_dir, stream, LMICLConfig(), device, threads) if cfg.lm_icl else []
    return table, own


def evaluate_variant(variant: str, model_dir: str, methods: list[str], tasks_path: str, task_names: list[str],
                     cfg, episodes: EpisodeConfig, finetune, tokenizer: TokenizerSpec, device: str = "cpu",
                     progress=None, threads: int | None = None, embeddings: str | None = None,
                     adapters: str | None = None) -> list[dict]:
    """Every row of `methods` (all scored by this variant's model) on every target task, on `threads` torch
    threads (a Ray task: the CPUs it reserved; its process may have run other tasks before); `embeddings`: the
    directory of the cached sentence embeddings when eval.demos.embedder is minilm; `adapters`: where
    finetune.save_adapters keeps them."""
    if threads:
        torch.set_num_threads(threads)
    model = load_lm(model_dir).to(device).eval()
    tok = load_tokenizer(tokenizer)
    tasks = load_collection(tasks_path, task_names)
    if cfg.demos.labels == "abstract":  # symbols for the options everywhere: demonstrations, queries, answers
        tasks = {name: abstract_task(task, cfg.demos.symbols) for name, task in tasks.items()}
    if MAX_K in cfg.k:  # many-shot: one number for every task, so the k-curve averages the same tasks at each k
        cfg = dataclasses.replace(cfg, k=many_shot_k(cfg.k, max_shots([tasks[t] for t in task_names], episodes, tok)))
    if cfg.demos.cached_embeddings and embeddings is None:
        raise ConfigError("eval.demos.embedder", "minilm: the embeddings step has not run (metaicl.eval.embed)")
    embed = cached_embedder(embeddings) if cfg.demos.cached_embeddings else None
    rows, similarities = [], {}
    for name in methods:
        for task_name in task_names:
            rows += evaluate_method(model, name, tasks[task_name], cfg, episodes, finetune, tok, device, similarities,
                                    embed, adapters if finetune.save_adapters else None)
            if progress:
                progress(variant, name, task_name)
    synthetic = getattr(tokenizer, "kind", None) == "ids"  # label words arbitrary per task: the oracle is a ceiling
    if variant == "pretrained" and synthetic and any(METHODS[m].demos for m in methods):
        rows += [r for t in task_names for r in oracle_rows(tasks[t], cfg)]  # once per run: the model plays no part
    if variant == "pretrained" and synthetic:
        rows += leakage_rows(tasks_path, task_names)
    return rows


def max_shots(tasks: list[Task], episodes: EpisodeConfig, tok) -> int:
    """eval.k's `max`: the most demonstrations every task's episodes hold (episodes.max_length, the pool's mean
    demonstration beside the task's longest query and option; metaicl.data.episodes.max_demos), at least 1."""
    fits = [max_demos(task.train, [(q.input, q.options or task.options) for q in task.test], episodes, tok)
            for task in tasks]
    return max(1, min(fits))


def many_shot_k(ks: list, top: int) -> list[int]:
    """eval.k with `max` replaced by `top`, each k once, in the given order."""
    return list(dict.fromkeys(top if k == MAX_K else k for k in ks))


def leakage_rows(tasks_path: str, task_names: list[str]) -> list[dict]:
    """A synthetic collection's leakage (families.json, pretrain_data.task_families.leakage): per held-out task,
    the share of its queries each meta-training family's rule answers right (`leakage/<family>`, method null)."""
    from metaicl.core.io import read_json

    leaks = read_json(Path(tasks_path) / "families.json").get("leakage", {})
    return [{"method": None, "task": t, "k": None, "seed": None, "metric": f"leakage/{family}", "value": share}
            for t in task_names for family, share in leaks.get(t, {}).items()]
