"""Language-model stages on one rank, no Ray: pretraining on a token mixture, MetaICL meta-training on episodes.

    LMStage("pretrain", "runs/data/pretrain-1a2b3c4d", LMConfig(), TrainConfig(),
            stream="runs/data/zipf-1a2b/manifest.json", vocab_size=4097).run()
    LMStage("metaicl", "runs/data/metatrain-metaicl-9f8e7d6c", LMConfig(), TrainConfig(),
            init="runs/data/pretrain-1a2b3c4d/model",
            episodes=EpisodeData("runs/data/tasks-9f8e", ["first_token_00", ...], EpisodeConfig(), k=4,
                                 tokenizer=TokenizerSpec("ids", vocab_size=4097), seed=0)).run()

Writes into out_dir: checkpoints/ (resume), progress.json (live), model/ (Hugging Face format, loadable with
`AutoModelForCausalLM.from_pretrained`) and last metrics.parquet, whose presence marks the stage complete.
`ray_train.fit_arms` runs `LMStage.run` exactly as it runs the spine's arms. Importing this module does not import
torch (the pipeline builds stages and checks `done` without it); running a stage does.

Batches depend on the step only (never on rank count or restarts): pretraining reads windows
[s*B, (s+1)*B) of the blended stream (cycling); meta-training draws episode i of step s with rng (seed, s, i):
a meta-training task, then k demonstrations and a query from its training pool (Min et al. 2022, Sec. 3).
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import pyarrow as pa

from metaicl.core.io import write_json, write_parquet
from metaicl.core.seeding import rng_for, seed_all
from metaicl.data.episodes import EpisodeConfig, pad, train_sequence
from metaicl.data.tasks import Example, Task
from metaicl.data.tokenizer import TokenizerSpec
from metaicl.eval.lm_icl import LMICLConfig
from metaicl.models.lm import LMConfig, build_lm, lm_loss, save_lm
from metaicl.train.config import CurriculumConfig, TaskCurriculumConfig, TrainConfig

if TYPE_CHECKING:
    import torch

DONE_FILE = "metrics.parquet"
EVAL_BATCH = 32
"""Meta-training: episodes in the fixed held-out batch whose loss is tracked during training."""
HELDOUT_WINDOWS = LMICLConfig().windows
"""Pretraining: the stream's held-out windows (its last ones), for the held-out loss and lm_icl's ICL score, the
same windows the after-training measurement reads (metaicl.eval.lm_icl.LMICLConfig.windows)."""


class StreamBatches:
    """Global batch s = windows [s*B, (s+1)*B) of a mixture's blended stream, modulo its length; rank r takes
    rows r, r+world, ... of it."""

    def __init__(self, manifest_path: str, batch_size: int, rank: int = 0, world: int = 1):
        from pretrain_data.manifest import Manifest
        from pretrain_data.token_reader import TokenStream

        self.stream = TokenStream(Manifest.read(Path(manifest_path).parent))
        self.batch_size, self.rank, self.world = batch_size, rank, world

    def windows(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        ids = torch.from_numpy(self.stream.windows(positions).astype(np.int64))
        return ids, torch.ones_like(ids)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from metaicl.data.fewshot import rank_rows

        return self.windows(rank_rows(step, self.batch_size, len(self.stream), self.rank, self.world))

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream's last windows: seen last in training, if at all (the stream has no validation split)."""
        n = len(self.stream)
        return self.windows(np.arange(max(0, n - HELDOUT_WINDOWS), n))


class PromptBatches:
    """Function-class prompts (Garg et al. 2022): global batch s = prompts [s*B, (s+1)*B) of the mixture's stream,
    modulo its length, each cut to the curriculum's length and dimension at step s; rank r takes rows r, r+world,
    ..."""

    def __init__(self, manifest_path: str, batch_size: int, rank: int = 0, world: int = 1,
                 curriculum: CurriculumConfig | None = None):
        from pretrain_data.manifest import Manifest
        from pretrain_data.token_reader import PromptStream

        self.stream = PromptStream(Manifest.read(Path(manifest_path).parent))
        self.batch_size, self.rank, self.world, self.curriculum = batch_size, rank, world, curriculum
        if curriculum is not None and curriculum.dims_start is not None and not self.stream.has_weights():
            from metaicl.core.errors import ConfigError

            raise ConfigError("train.curriculum.dims_start", f"{self.stream.manifest.root} was built before prompts "
                                                             f"kept their w: delete it and run again to rebuild it")

    def prompts(self, positions, points: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        xs, ys = self.stream.windows(positions)
        return torch.from_numpy(xs[:, :points]), torch.from_numpy(ys[:, :points])

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from metaicl.data.fewshot import rank_rows

        n, d = self.stream.n_points, self.stream.n_dims
        points = self.curriculum.points(step, n) if self.curriculum else n
        rows = rank_rows(step, self.batch_size, len(self.stream), self.rank, self.world)
        xs, ys = self.prompts(rows, points)
        dims = self.curriculum.dims(step, d) if self.curriculum else d
        if dims < d:  # Garg et al.'s truncation: x's last coordinates are 0, y loses their terms (noise kept)
            w = torch.from_numpy(self.stream.weights(rows)[:, dims:])
            ys = ys - torch.einsum("npd,nd->np", xs[..., dims:], w)
            xs = torch.cat([xs[..., :dims], torch.zeros_like(xs[..., dims:])], dim=-1)
        return xs, ys

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The stream's last prompts, whole."""
        n = len(self.stream)
        return self.prompts(np.arange(max(0, n - HELDOUT_WINDOWS), n), self.stream.n_points)


@dataclass
class EpisodeData:
    """Where meta-training episodes come from and how they look."""
    tasks_path: str
    task_names: list[str]
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    k: int = 16
    """Demonstrations per episode (MetaICL: k = 16; 0 = multi-task 0-shot training)."""
    tokenizer: TokenizerSpec = TokenizerSpec("ids", vocab_size=1)
    """What reads the tasks' text (a synthetic collection's families.json says)."""
    seed: int = 0
    loss_on: str = "query"
    """Which answers of an episode the loss is on (metatrain.loss_on)."""
    shuffle_labels: bool = False
    """A fresh mapping of the task's label words to its classes in every episode (metatrain.shuffle_labels)."""
    fresh_tasks: bool = False
    """A new task of a meta-training family in every episode (metatrain.fresh_tasks; synthetic collections)."""
    curriculum: TaskCurriculumConfig = field(default_factory=TaskCurriculumConfig)
    """metatrain.task_curriculum: fresh tasks of its shape before its `steps`."""


def relabel(example: Example, word: dict[str, str]) -> Example:
    """The example with its output word mapped (an output outside the options stays as it is)."""
    return dataclasses.replace(example, output=word.get(example.output, example.output))


class EpisodeBatches:
    """Episode i of global batch s: task, demonstrations and query drawn with rng (seed, "episode", s, i)."""

    def __init__(self, data: EpisodeData, batch_size: int, rank: int = 0, world: int = 1):
        from metaicl.data.tasks import load_collection
        from metaicl.data.tokenizer import load_tokenizer

        self.data, self.batch_size, self.rank, self.world = data, batch_size, rank, world
        self.tasks = load_collection(data.tasks_path, data.task_names)
        self.names = sorted(self.tasks)
        self.tok = load_tokenizer(data.tokenizer)
        if data.fresh_tasks:  # the collection's own rules and token range make the new tasks
            from metaicl.core.io import read_json
            from pretrain_data.task_families import TaskFamiliesConfig

            info = read_json(Path(data.tasks_path) / "families.json")
            self.families = TaskFamiliesConfig(**info["config"])
            self.token_range = tuple(info["token_range"])

    def episode(self, *key) -> tuple[list[int], list[int]]:
        rng = rng_for(self.data.seed, "episode", *key)
        simpler = isinstance(key[0], int) and key[0] < self.data.curriculum.steps  # held-out episodes: the tasks' shape
        task = (self.fresh_task(rng, simpler) if self.data.fresh_tasks else
                self.tasks[self.names[rng.integers(len(self.names))]])
        picked = rng.choice(len(task.train), size=self.data.k + 1, replace=False)
        demos, query = [task.train[i] for i in picked[:-1]], task.train[picked[-1]]
        if self.data.shuffle_labels and task.options:  # one mapping for the episode's demonstrations and query
            word = dict(zip(task.options, rng.permutation(task.options).tolist()))
            demos, query = [relabel(e, word) for e in demos], relabel(query, word)
        seq = train_sequence(demos, query, self.data.episodes, self.tok, self.data.loss_on)
        return seq.ids, seq.loss_mask

    def fresh_task(self, rng, simpler: bool = False) -> Task:
        """A task made for this episode: a meta-training family, an index past the collection's (keyed by the
        episode's rng, so by (seed, step, i) alone), its training pool as large as the collection's (the episode
        then draws from it as from any task: a pool of exactly k + 1 balanced examples would give the query's
        class away by counting). `simpler`: in the task curriculum's shape (input length, classes), of the families
        that can be written that short."""
        from pretrain_data.task_families import FAMILIES, fresh_examples

        rules, families = self.families, self.families.meta_train_families
        if simpler:
            simple = self.data.curriculum
            rules = dataclasses.replace(rules, input_length=simple.input_length, num_classes=simple.num_classes)
            families = [f for f in families if FAMILIES[f].min_length <= simple.input_length]
        family = families[int(rng.integers(len(families)))]
        index = self.families.tasks_per_family + int(rng.integers(1 << 40))
        pool = fresh_examples(rules, self.token_range, family, index, self.families.train_examples, wrap=Example)
        return Task(pool.task.name, pool, [], pool.options)

    def get(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.episode(step, i) for i in range(self.batch_size)[self.rank :: self.world]]
        return pad(*zip(*pairs))

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        return pad(*zip(*(self.episode("heldout", i) for i in range(EVAL_BATCH))))


@dataclass
class LMStage:
    arm: str
    """Stage name (pretrain, metaicl, channel_metaicl, multitask_zero_shot): the Ray Train run's name."""
    out_dir: str
    lm: LMConfig
    train: TrainConfig
    init: Optional[str] = None
    """Model directory to start from; None = a fresh model from `lm` (or lm.name_or_path)."""
    stream: Optional[str] = None
    """Pretraining: manifest.json of the token mixture."""
    episodes: Optional[EpisodeData] = None
    """Meta-training: the task collection and episode format."""
    vocab_size: int = 0
    prompts: bool = False
    """Pretraining on a function-class mixture: Garg et al.'s regression model (metaicl.models.regression) learns
    y from the prompt's real-valued (x, y) pairs, with the squared-error loss."""

    @property
    def done(self) -> bool:
        return (Path(self.out_dir) / DONE_FILE).exists()

    @property
    def model_dir(self) -> Path:
        return Path(self.out_dir) / "model"

    def batches(self, rank: int, world: int):
        if self.prompts:
            return PromptBatches(self.stream, self.train.batch_size, rank, world, self.train.curriculum)
        if self.stream is not None:
            return StreamBatches(self.stream, self.train.batch_size, rank, world)
        return EpisodeBatches(self.episodes, self.train.batch_size, rank, world)

    def data_state(self, batches) -> dict:
        """What a checkpoint must have been trained on to be resumed: content, not paths (a run directory may move
        from a laptop to a cluster)."""
        what = ({"stream": batches.stream.manifest.config_hash} if self.stream else
                {"tasks": self.episodes.task_names, "k": self.episodes.k, "method": self.episodes.episodes.method,
                 **({"fresh_tasks": True} if self.episodes.fresh_tasks else {}),
                 **({"curriculum": dataclasses.asdict(self.episodes.curriculum)} if self.episodes.curriculum.steps
                    else {})})
        return {**what, "batch_size": self.train.batch_size}

    def run(self, rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
            wrap: Callable = lambda m: m, report: Callable[[dict], None] = lambda m: None) -> list[dict]:
        import torch

        from metaicl.eval.lm_icl import lm_icl_rows
        from metaicl.train.checkpoint import Checkpointer
        from metaicl.train.loop import train_loop

        out = Path(self.out_dir)
        seed_all(self.train.seed)
        batches = self.batches(rank, world)
        if self.prompts:
            from metaicl.models.regression import (build_regressor, load_regressor, regression_loss,
                                                   save_regressor)

            model = (load_regressor(self.init) if self.init else
                     build_regressor(self.lm, batches.stream.n_dims, batches.stream.n_points)).to(device)
            loss_fn, save = regression_loss, save_regressor
            train_loss = functools.partial(regression_loss, underdetermined_weight=self.train.underdetermined_weight)
        else:
            model = build_lm(self.lm, self.vocab_size, init=self.init).to(device)
            loss_fn, save = lm_loss, save_lm
            train_loss = loss_fn
        heldout = batches.heldout() if rank == 0 else None

        @torch.no_grad()
        def evaluate() -> dict:
            was = model.training
            model.eval()
            metrics = {"heldout": {"loss": loss_fn(model, tuple(t.to(device) for t in heldout)).item()}}
            if self.stream is not None and not self.prompts:  # in-context ability over pretraining (its onset: Olsson et al. 2022)
                for row in lm_icl_rows(model, heldout[0].to(device)):
                    metrics.setdefault(f"lm_icl/{row['task']}", {})[row["metric"]] = row["value"]
            model.train(was)
            return metrics

        history = train_loop(self.train, wrap(model), batches, evaluate=evaluate, loss_fn=train_loss,
                             checkpointer=Checkpointer(out / "checkpoints"), is_chief=rank == 0, device=device,
                             report=report, progress=lambda p: write_json(out / "progress.json", p),
                             data_state=self.data_state(batches))
        if rank == 0:
            save(model, self.model_dir)
            write_parquet(out / DONE_FILE, pa.Table.from_pylist(history))
        return history
