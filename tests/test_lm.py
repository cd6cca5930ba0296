"""Language models: presets, Hugging Face round trip, the LM loss, gradient accumulation, and resume of an LM stage
(pretraining on a mixture's stream, MetaICL meta-training on episodes) — all without Ray."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from metaicl.core.errors import ConfigError
from metaicl.data.episodes import EpisodeConfig
from metaicl.data.tokenizer import TokenizerSpec
from metaicl.models.lm import LMConfig, build_lm, count_params, save_lm
from metaicl.train.config import TrainConfig
from metaicl.models.lm import lm_loss
from metaicl.train.lm import EpisodeData, LMStage
from pretrain_data.mixture_config import MixtureConfig, SourceConfig
from pretrain_data.zipf_lm import ZipfLMConfig


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_saved_model_reloads_with_from_pretrained_and_gives_the_same_logits(arch, tmp_path):
    from transformers import AutoModelForCausalLM

    model = build_lm(LMConfig(arch=arch, preset="tiny", context_length=32), vocab_size=50).eval()
    save_lm(model, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").exists()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    ids = torch.randint(0, 50, (2, 16))
    assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)


def test_presets_set_the_size_and_explicit_fields_override_them():
    assert LMConfig(preset="124m").size() == {"n_layer": 12, "n_head": 12, "d_model": 768}
    assert LMConfig(preset="tiny", n_layer=3).size()["n_layer"] == 3
    gpt2_small = build_lm(LMConfig(preset="124m", context_length=1024), vocab_size=50257)
    assert 123e6 < count_params(gpt2_small) < 125e6  # GPT-2 small: 124M (tied embeddings)
    with pytest.raises(ConfigError, match="lm.preset"):
        LMConfig(preset="huge").validate()
    with pytest.raises(ConfigError, match="lm.n_head"):
        LMConfig(d_model=64, n_head=3).validate()


def test_the_lm_loss_counts_only_masked_targets():
    model = build_lm(LMConfig(context_length=16), vocab_size=20).eval()
    ids = torch.randint(1, 20, (1, 8))
    full = lm_loss(model, (ids, torch.ones_like(ids)))
    mask = torch.zeros_like(ids)
    mask[0, 5] = 1
    logp = torch.log_softmax(model(input_ids=ids).logits[0, 4].float(), -1)
    assert torch.allclose(lm_loss(model, (ids, mask)), -logp[ids[0, 5]], atol=1e-6)
    assert not torch.allclose(full, lm_loss(model, (ids, mask)))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_scoring_only_the_targets_gives_the_full_logits_loss_and_gradients(arch):
    """Issue 18: with some positions scored (episodes), the loss projects only their hidden states onto the
    vocabulary; loss and every gradient equal those of the full logits masked afterwards (the old way), for both
    architectures (their final norm is inside the hidden states the loss reads)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = build_lm(LMConfig(arch=arch, context_length=32), vocab_size=50)
    ids = torch.randint(1, 50, (3, 24))
    mask = torch.zeros_like(ids)
    mask[0, 20:22], mask[1, 5], mask[2, 10:24] = 1, 1, 1  # queries of different lengths, as padded episodes are

    def full_logits_loss():
        logits = model(input_ids=ids).logits[:, :-1].float()
        nll = F.cross_entropy(logits.reshape(-1, 50), ids[:, 1:].reshape(-1), reduction="none")
        w = mask[:, 1:].reshape(-1).float()
        return (nll * w).sum() / w.sum()

    grads = []
    for loss_fn in (full_logits_loss, lambda: lm_loss(model, (ids, mask))):
        model.zero_grad()
        loss = loss_fn()
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (a, ga), (b, gb) = grads
    assert abs(a - b) < 1e-6
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_attention_kernel_is_a_speed_choice_not_a_result(arch):
    """Issue 18: lm.attn_implementation reaches the model and changes its outputs only by float rounding; an
    unknown kernel is one config error naming the key."""
    torch.manual_seed(0)
    ids = torch.randint(1, 50, (2, 20))
    logits = {}
    for kernel in ("eager", "sdpa"):
        torch.manual_seed(1)
        model = build_lm(LMConfig(arch=arch, context_length=32, attn_implementation=kernel), vocab_size=50).eval()
        assert model.config._attn_implementation == kernel
        with torch.no_grad():
            logits[kernel] = model(input_ids=ids).logits
    torch.testing.assert_close(logits["eager"], logits["sdpa"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="lm.attn_implementation: unknown kernel 'fast'"):
        LMConfig(attn_implementation="fast").validate()


@pytest.fixture(scope="module")
def mixture(ray_session, tmp_path_factory):
    from pretrain_data.build import build

    cfg = MixtureConfig(name="lm-test", token_budget=64 * 32, context_length=32, windows_per_shard=32,
                        sources={"zipf": SourceConfig(kind="zipf_lm", zipf_lm=ZipfLMConfig(vocab_size=64,
                                                                                              doc_length=32))})
    return build(cfg, tmp_path_factory.mktemp("data"), max_in_flight=1)


def pretrain_stage(mixture, out, **train):
    kw = dict(steps=8, batch_size=4, lr=1e-2, warmup_steps=2, eval_every=2, ckpt_every=4, log_every=2) | train
    return LMStage("pretrain", str(out), LMConfig(context_length=32), TrainConfig(**kw),
                   stream=str(mixture.root / "manifest.json"), vocab_size=mixture.vocab_size)


def test_resume_continues_the_step_count_and_the_loss_curve_also_compiled(mixture, tmp_path, monkeypatch):
    """A stage stopped after a checkpoint resumes to the uninterrupted stage's history and weights, no step twice;
    here with issue 18's train.compile on: the loop trains the torch.compile'd model, while checkpoints and the
    saved model hold the plain module (no `_orig_mod.` keys), so a resumed compiled stage ends as a plain one.
    (Plain resumption end to end: tests/test_twins_and_kills.py.)
    Traced with dynamo's "eager" backend (the compiled path without Inductor's code generation, which takes
    minutes on a CPU); on CPU the config refuses compile=true, so the loop is called directly."""
    from safetensors.torch import load_file

    import metaicl.train.loop

    monkeypatch.setattr(metaicl.train.loop, "COMPILE_BACKEND", "eager")
    compiles, real = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: compiles.append(kw) or real(model, **kw))
    torch.manual_seed(0)
    plain = pd.DataFrame(pretrain_stage(mixture, tmp_path / "plain").run())
    assert compiles == []  # on a CPU, compile unset: the plain model
    compiled = pretrain_stage(mixture, tmp_path / "compiled", compile=True)
    compiled.run()
    shutil.rmtree(tmp_path / "compiled" / "checkpoints" / "step_0000008")  # as if stopped after step 4
    (tmp_path / "compiled" / "metrics.parquet").unlink()
    resumed = pd.DataFrame(compiled.run())
    assert compiles == [{"backend": "eager"}] * 2  # both compiled runs trained the compiled model
    assert resumed.step.max() == 8 and resumed.groupby(["step", "eval", "metric"]).size().max() == 1  # none twice
    pd.testing.assert_frame_equal(resumed, plain)
    a, b = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("plain", "compiled"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [k for k in load_file(tmp_path / "compiled" / "checkpoints" / "step_0000004" / "model.safetensors")
                if "_orig_mod" in k]
    with pytest.raises(ConfigError, match="train.compile: torch.compile is for GPU stages"):
        TrainConfig(compile=True).validate()


def test_gradient_accumulation_gives_the_same_gradient_and_loss(mixture):
    from metaicl.train.lm import StreamBatches
    from metaicl.train.loop import _step_loss

    batch = StreamBatches(str(mixture.root / "manifest.json"), batch_size=8).get(0)
    grads, losses = [], []
    for accum in (1, 2, 4):
        torch.manual_seed(0)
        model = build_lm(LMConfig(context_length=32), vocab_size=mixture.vocab_size)
        losses.append(_step_loss(TrainConfig(batch_size=8, grad_accum=accum), model, batch, lm_loss,
                                 torch.device("cpu")))
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    for g, loss in zip(grads[1:], losses[1:]):
        assert torch.allclose(g, grads[0], atol=1e-6) and abs(loss - losses[0]) < 1e-5


def test_metatraining_starts_from_the_given_model_and_lowers_the_episode_loss(mixture, tmp_path):
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    families = build_task_families(TaskFamiliesConfig(meta_train_families=["first_token"], eval_families=["keyword"],
                                                       tasks_per_family=2, eval_tasks_per_family=1,
                                                       train_examples=16, test_examples=4),
                                   (1, mixture.vocab_size), tmp_path / "tasks")
    base = pretrain_stage(mixture, tmp_path / "pre", steps=2)
    base.run()
    data = EpisodeData(str(tmp_path / "tasks"), families["splits"]["meta_train"],
                       EpisodeConfig(input_sep=" ", example_sep="\n", max_length=32), k=2,
                       tokenizer=TokenizerSpec(**families["tokenizer"]))  # the collection says how to read it
    stage = LMStage("metaicl", str(tmp_path / "meta"), LMConfig(context_length=32),
                    TrainConfig(steps=20, batch_size=8, lr=1e-2, warmup_steps=2, eval_every=10, ckpt_every=20),
                    init=str(base.model_dir), episodes=data)
    history = pd.DataFrame(stage.run())
    heldout = history[history["eval"] == "heldout"].set_index("step")["value"]
    assert heldout[20] < heldout[0]
    assert stage.done


def _ddp_rank(rank: int, world: int, port: int, stage: LMStage) -> None:
    """One rank of a torch.distributed (gloo, loopback) pretraining stage: what a Ray Train worker runs, minus Ray."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        stage.run(rank=rank, world=world, wrap=DistributedDataParallel)
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_and_thread_counts_pretrain_the_same_model(mixture, tmp_path):
    """Issue 20: how many workers and threads train a stage is a resource choice, not a result; two DDP ranks (each
    half of every batch, gradients averaged) and one process on one or two threads train the same weights, up to
    float summation order."""
    import socket

    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    def weights(name: str) -> dict:
        return load_file(tmp_path / name / "model" / "model.safetensors")

    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            pretrain_stage(mixture, tmp_path / f"threads{n}", steps=4).run()
    finally:
        torch.set_num_threads(threads)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(2, port, pretrain_stage(mixture, tmp_path / "ddp", steps=4)), nprocs=2)
    one = weights("threads1")
    for other in ("threads2", "ddp"):
        diff = max((weights(other)[k] - v).abs().max().item() for k, v in one.items())
        assert diff < 1e-4, (other, diff)


def test_shuffled_labels_map_words_afresh_per_episode_and_the_same_within_it(tmp_path):
    """metatrain.shuffle_labels (issue 15): each episode maps the task's label words to its classes by its own
    permutation, the same for every demonstration and the query (the mapping is readable from the demonstrations),
    another in other episodes (nothing to memorise); inputs and the episode's layout do not change."""
    from metaicl.data.tasks import load_collection
    from metaicl.train.lm import EpisodeBatches
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    families = build_task_families(TaskFamiliesConfig(meta_train_families=["first_token"], eval_families=["keyword"],
                                                       tasks_per_family=1, eval_tasks_per_family=1, input_length=2,
                                                       train_examples=30, test_examples=3, keys_per_class=1),
                                   (1, 200), tmp_path / "tasks")
    [name] = families["splits"]["meta_train"]
    task = load_collection(str(tmp_path / "tasks"), [name])[name]
    gold = {e.input.split()[0]: e.output for e in task.train}  # first_token: the key -> the task's own word
    episodes = EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64)

    def batches(shuffle: bool) -> EpisodeBatches:
        return EpisodeBatches(EpisodeData(str(tmp_path / "tasks"), [name], episodes, k=6,
                                          tokenizer=TokenizerSpec(**families["tokenizer"]), shuffle_labels=shuffle), 4)

    mappings = []
    for step in range(6):
        plain, shuffled = batches(False).episode(step, 0)[0], batches(True).episode(step, 0)[0]
        assert len(plain) == len(shuffled)
        pairs = {(str(plain[i]), str(shuffled[i])) for i in range(3, len(plain), 4)}  # (task's word, episode's)
        assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})  # one permutation
        assert all(plain[i] == shuffled[i] for i in range(len(plain)) if i % 4 != 3)  # only the words change
        assert {a for a, _ in pairs} <= set(gold.values())
        mappings.append(frozenset(pairs))
    assert len(set(mappings)) > 1  # the mapping differs between episodes
    assert batches(True).episode(3, 0) == batches(True).episode(3, 0)  # keyed by (seed, step, i): reproducible


def test_fresh_tasks_make_a_new_task_of_a_meta_training_family_for_every_episode(tmp_path):
    """metatrain.fresh_tasks (issue 15): each episode's demonstrations and query come from a task made for it (its
    own keys and label words, none of the collection's), which follows its family's rule (the family's reader
    answers every example right from the task's keys); the same (seed, step, i) gives the same episode."""
    import numpy as np

    from metaicl.core.seeding import rng_for
    from metaicl.train.lm import EpisodeBatches
    from pretrain_data.task_families import READERS, TaskFamiliesConfig, build_task_families, make_task

    cfg = TaskFamiliesConfig(meta_train_families=["first_token", "majority"], eval_families=["last_token"],
                             tasks_per_family=2, eval_tasks_per_family=1, input_length=3, train_examples=40,
                             test_examples=3, keys_per_class=2, label_words=8)
    families = build_task_families(cfg, (1, 300), tmp_path / "tasks")
    batches = EpisodeBatches(EpisodeData(str(tmp_path / "tasks"), families["splits"]["meta_train"],
                                         EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64), k=5,
                                         tokenizer=TokenizerSpec(**families["tokenizer"]), fresh_tasks=True), 4)
    collection = {tuple(make_task(cfg, (1, 300), f, i).keys.ravel()) for f in cfg.meta_train_families for i in (0, 1)}
    seen, families_seen = set(), set()
    for step in range(8):
        task = batches.fresh_task(rng_for(0, "episode", step, 0))
        family, index = task.name.rsplit("_", 1)
        made = make_task(cfg, (1, 300), family, int(index))
        assert int(index) >= cfg.tasks_per_family and tuple(made.keys.ravel()) not in collection
        inputs = np.array([[int(t) for t in e.input.split()] for e in task.train])
        classes = np.array([task.options.index(e.output) for e in task.train])
        assert (READERS[family](made, inputs) == classes).all()  # the family's rule holds
        seen.add(tuple(made.keys.ravel()))
        families_seen.add(family)
    assert len(seen) == 8 and families_seen == {"first_token", "majority"}  # a new task every episode
    assert batches.episode(3, 1) == batches.episode(3, 1) and batches.episode(3, 1) != batches.episode(4, 1)


def test_the_task_curriculum_starts_on_one_token_two_class_tasks_then_the_collections_shape(tmp_path):
    """metatrain.task_curriculum (issue 15): before its `steps`, every episode is a fresh task with one-token inputs
    and two label words (the input is the key: the same copy in every family); from then on, and in the held-out
    episodes that track the loss, the collection's three-token, three-class shape. Decoded episodes show it."""
    from metaicl.core.seeding import rng_for
    from metaicl.data.tokenizer import load_tokenizer
    from metaicl.train.config import TaskCurriculumConfig
    from metaicl.train.lm import EpisodeBatches
    from pretrain_data.task_families import TaskFamiliesConfig, build_task_families

    cfg = TaskFamiliesConfig(meta_train_families=["first_token", "middle_token"], eval_families=["last_token"],
                             tasks_per_family=2, eval_tasks_per_family=1, input_length=3, train_examples=40,
                             test_examples=3, keys_per_class=1, label_words=8)
    families = build_task_families(cfg, (1, 300), tmp_path / "tasks")
    spec = TokenizerSpec(**families["tokenizer"])
    batches = EpisodeBatches(EpisodeData(str(tmp_path / "tasks"), families["splits"]["meta_train"],
                                         EpisodeConfig(input_sep=" ", example_sep="\n", max_length=64), k=5,
                                         tokenizer=spec, fresh_tasks=True,
                                         curriculum=TaskCurriculumConfig(steps=10)), 4)
    tok = load_tokenizer(spec)

    def shape(*key):
        ids, _ = batches.episode(*key)
        lines = [line.split() for line in tok.decode(ids[1:]).split("\n")]  # each example: input tokens, then its word
        return {len(line) - 1 for line in lines}, len({line[-1] for line in lines})

    simpler = [shape(step, i) for step in (0, 9) for i in range(4)]
    assert all(lengths == {1} and words <= 2 for lengths, words in simpler) and max(w for _, w in simpler) == 2
    whole = [shape(*key) for key in ((10, 0), (11, 2), (12, 1), ("heldout", 0), ("heldout", 1))]
    assert all(lengths == {3} for lengths, _ in whole) and max(w for _, w in whole) == 3
    # only middle_token cannot be written in one token: the simpler tasks are first_token's
    assert {batches.fresh_task(rng_for(0, "episode", s, 0), True).name.rsplit("_", 1)[0] for s in range(6)} == {
        "first_token"}
