"""`ginc`: GINC, a mixture of HMMs over (entity, property) hidden states (Xie et al. 2022; issue: pretrain_data).

    cfg = GINCConfig(num_concepts=5, vocab_size=50, doc_length=256)
    docs, concept = sample_docs(cfg, rng_for(seed, "ginc", shard), n_docs=64)   # (64, 256) int32, (64,) int32
    prompts = few_shot_prompts(cfg, rng_for(seed, "ginc_eval"), n_prompts=100, k=8, example_length=3)
    prompts["tokens"], prompts["answer"], prompts["concept"]    # (100, 8*4 + 2), (100,), (100,)

- Hidden state (entity e, property p), index e * num_properties + p. The next entity (sticky transitions shared by
  all concepts) and the next property (the concept's own transitions) are drawn independently, so transition[c] =
  kron(entity_trans, property_trans[c]). Documents come from the mixture of these HMMs, concept drawn uniformly.
- Emission is deterministic and shared: (e, p) emits memory[e, p], a random "memory matrix" over tokens
  0..vocab_size-1, except property 0, which emits the delimiter id vocab_size (GINC's '/', also seen in documents).
- Transitions are mixtures of n random permutations weighted by softmax(u - 1/2, transition_temp), ~1/3 of them
  impossible unless transition_floor > 0. Sampling draws every step's permutation up front (alias method, exact).
- Prompts: one concept and one start property per prompt; each example starts afresh at (random entity, that
  property), runs example_length steps of the concept's HMM (its last token is y) and is followed by the delimiter.
  Such independent, delimited examples are unlike documents: in-context learning is inferring the shared concept.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from metaicl.core.errors import ConfigError
from metaicl.core.seeding import rng_for


@dataclass
class GINCConfig:
    num_concepts: int = 5
    """Number of concepts = HMMs in the mixture (GINC n_hmms; 5 in-distribution in its release). Diversity knob."""
    num_entities: int = 10
    """GINC n_values: entities. Entity transitions are shared by all concepts."""
    num_properties: int = 10
    """GINC n_slots: properties, property 0 (the delimiter) included. Each concept has its own transitions."""
    vocab_size: int = 50
    """GINC n_symbols: emitted token types 0..vocab_size-1; the delimiter is the extra id vocab_size."""
    doc_length: int = 256
    """Tokens per document."""
    transition_temp: float = 0.1
    """GINC transition_temp: softmax temperature of the permutation-mixture weights; low = sparse transitions."""
    start_temp: float = 10.0
    """GINC start_temp: softmax temperature of the start distribution over hidden states; high = near uniform."""
    entity_stickiness: float = 0.9
    """GINC value_identity_coeff: weight of the identity in the entity transitions (entities persist in a document)."""
    transition_floor: float = 0.0
    """Weight of the uniform in each permutation mixture, so every transition is possible (GINC: 0). With 0, most
    few-shot prompts (k=8) have probability 0 under every pretraining HMM: their delimiter jumps are impossible."""
    concept_seed: int = 0
    """Seed of the HMM parameters (transitions, memory matrix, start); documents use the rng passed in."""

    def validate(self, prefix: str) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{prefix}.{key}", msg)

        for key, low in (("num_concepts", 1), ("num_entities", 1), ("num_properties", 2), ("vocab_size", 1),
                         ("doc_length", 1), ("concept_seed", 0)):
            if getattr(self, key) < low:
                why = " (property 0 is the delimiter)" if key == "num_properties" else ""
                raise bad(key, f"must be >= {low}{why}, got {getattr(self, key)}")
        for key in ("transition_temp", "start_temp"):
            if not getattr(self, key) > 0:
                raise bad(key, f"must be > 0, got {getattr(self, key)}")
        for key in ("entity_stickiness", "transition_floor"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise bad(key, f"must be in [0, 1], got {getattr(self, key)}")


@dataclass(frozen=True)
class Concepts:
    """The mixture's parameters (read-only). A transition matrix is kept as a mixture of permutations (weights,
    perms): its row i puts weight weights[k] on perms[k, i]."""
    entity_weights: np.ndarray
    """(2E + 1,) entity mixture weights, shared by all concepts; the last component is the identity (stickiness)."""
    entity_perms: np.ndarray
    """(2E + 1, E) the entity permutations."""
    property_weights: np.ndarray
    """(C, 2P) mixture weights of each concept's property transitions."""
    property_perms: np.ndarray
    """(C, 2P, P) each concept's property permutations."""
    memory: np.ndarray
    """(E, P) int32 token emitted by state (e, p); column 0 is the delimiter."""
    start: np.ndarray
    """(S,) start distribution over hidden states, shared."""

    @property
    def entity_trans(self) -> np.ndarray:
        """(E, E) entity transition matrix."""
        return _matrix(self.entity_weights, self.entity_perms)

    @property
    def property_trans(self) -> np.ndarray:
        """(C, P, P) property transition matrix of each concept."""
        return np.stack([_matrix(w, perms) for w, perms in zip(self.property_weights, self.property_perms)])

    @property
    def transition(self) -> np.ndarray:
        """(C, S, S) hidden-state transition matrix of each concept."""
        return np.stack([np.kron(self.entity_trans, t) for t in self.property_trans])

    @property
    def emission(self) -> np.ndarray:
        """(S, vocab_size + 1) one-hot emission matrix, shared."""
        return np.eye(int(self.memory.max()) + 1)[self.memory.ravel()]  # the delimiter is the largest id


def vocab_size(cfg: GINCConfig) -> int:
    """Token ids used by documents and prompts: the emitted tokens and the delimiter (id cfg.vocab_size)."""
    return cfg.vocab_size + 1


def _softmax(x: np.ndarray, temp: float) -> np.ndarray:
    return (z := np.exp((x - x.max()) / temp)) / z.sum()


def _matrix(weights: np.ndarray, perms: np.ndarray) -> np.ndarray:
    out = np.zeros((perms.shape[1],) * 2)
    np.add.at(out, (np.broadcast_to(np.arange(perms.shape[1]), perms.shape), perms), weights[:, None])
    return out


def _permutation_mixture(rng: np.random.Generator, n: int, temp: float, floor: float):
    """n random permutations weighted by softmax(u - 1/2, temp) (GINC's generate_transmat_block), then the n cyclic
    shifts, whose equal-weight mixture is the uniform, with total weight floor."""
    weights = np.append((1 - floor) * _softmax(rng.random(n) - 0.5, temp), np.full(n, floor / n))
    perms = [rng.permutation(n) for _ in range(n)] + [np.roll(np.arange(n), s) for s in range(n)]
    return weights, np.stack(perms)


def concepts(cfg: GINCConfig) -> Concepts:
    """A pure function of cfg. Each concept is keyed by its index, so raising num_concepts keeps the others."""
    return _cached(dataclasses.astuple(cfg))[0]


@functools.lru_cache(maxsize=16)
def _cached(key: tuple):
    """(Concepts, sampling tables) of GINCConfig(*key)."""
    cfg = GINCConfig(*key)
    E, P, C, seed = cfg.num_entities, cfg.num_properties, cfg.num_concepts, cfg.concept_seed
    mixture = functools.partial(_permutation_mixture, temp=cfg.transition_temp, floor=cfg.transition_floor)
    e_weights, e_perms = mixture(rng_for(seed, "ginc", "entity"), E)
    e_weights = np.append((1 - cfg.entity_stickiness) * e_weights, cfg.entity_stickiness)
    p_weights, p_perms = zip(*(mixture(rng_for(seed, "ginc", "concept", c), P) for c in range(C)))
    memory = rng_for(seed, "ginc", "memory").integers(0, cfg.vocab_size, size=(E, P)).astype(np.int32)
    memory[:, 0] = cfg.vocab_size
    start = _softmax(rng_for(seed, "ginc", "start").random(E * P) - 0.5, cfg.start_temp)
    cc = Concepts(e_weights, np.vstack([e_perms, np.arange(E)]), np.stack(p_weights), np.stack(p_perms), memory, start)
    for array in dataclasses.astuple(cc):
        array.flags.writeable = False
    # Sampling tables: row 0 draws an entity permutation, row 1 + c a property permutation of concept c, as its
    # offset in the stacked table `perms`, so that perms[offset + state] is the next state.
    Ke, Kp, K = 2 * E + 1, 2 * P, max(2 * E + 1, 2 * P)  # mixture components
    weights, offset = np.zeros((1 + C, K)), np.zeros((1 + C, K), np.int64)
    weights[0, :Ke], weights[1:, :Kp] = cc.entity_weights, cc.property_weights
    offset[0, :Ke], offset[1:, :Kp] = np.arange(Ke) * E, Ke * E + np.arange(C * Kp).reshape(C, Kp) * P
    prob, alias = _alias(weights)
    perms = np.concatenate([cc.entity_perms.ravel(), cc.property_perms.ravel()])
    return cc, (perms, K, (np.arange(K) + prob).ravel(), offset.ravel(), np.take_along_axis(offset, alias, 1).ravel())


def _alias(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias tables of each row of (R, K) weights: j ~ U{0..K-1}, kept w.p. prob[j], else alias[j]."""
    R, K = weights.shape
    prob, alias = weights * (K / weights.sum(-1, keepdims=True)), np.tile(np.arange(K), (R, 1))
    for r in range(R):
        small, large = [j for j in range(K) if prob[r, j] < 1], [j for j in range(K) if prob[r, j] >= 1]
        while small and large:
            s, big = small.pop(), large.pop()
            alias[r, s], prob[r, big] = big, prob[r, big] + prob[r, s] - 1
            (small if prob[r, big] < 1 else large).append(big)
        prob[r, small + large] = 1.0  # left over only by rounding
    return prob, alias


def _walk(cfg: GINCConfig, concept: np.ndarray, entity: np.ndarray, prop: np.ndarray, length: int,
          rng: np.random.Generator) -> np.ndarray:
    """(n, length) int32 tokens of n hidden chains started at (entity, prop), each under its concept's HMM."""
    cc, (perms, K, threshold, keep, alias) = _cached(dataclasses.astuple(cfg))
    n, P = len(concept), cfg.num_properties
    x = rng.random((max(length - 1, 0), 2 * n))  # columns: n entity chains, then n property chains
    x *= K
    at = x.astype(np.int64)  # x < K, so a component j in 0..K-1; x - j is the alias method's second uniform
    at += np.concatenate([np.zeros(n, np.int64), 1 + np.asarray(concept, np.int64)]) * K
    buffer = threshold.take(at, mode="clip")  # few large temporaries: fresh pages cost as much as the arithmetic
    kept = x < buffer
    offsets = keep.take(at, mode="clip", out=x.view(np.int64))
    np.copyto(offsets, alias.take(at, mode="clip", out=buffer.view(np.int64)), where=~kept)
    state = np.empty((length, 2 * n), np.int64)  # time-major, so that each step writes one contiguous row
    state[0, :n], state[0, n:] = entity, prop
    for t in range(1, length):
        offsets[t - 1] += state[t - 1]
        np.take(perms, offsets[t - 1], mode="clip", out=state[t])
    state[:, :n] *= P
    state[:, :n] += state[:, n:]
    return np.ascontiguousarray(cc.memory.ravel().take(state[:, :n].T, mode="clip"))


def sample_docs(cfg: GINCConfig, rng: np.random.Generator, n_docs: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_docs, doc_length) int32 token ids and (n_docs,) int32 concept of each document (drawn uniformly)."""
    start = concepts(cfg).start
    concept = rng.integers(0, cfg.num_concepts, size=n_docs)
    entity, prop = np.divmod(rng.choice(start.size, size=n_docs, p=start), cfg.num_properties)
    return _walk(cfg, concept, entity, prop, cfg.doc_length, rng), concept.astype(np.int32)


def few_shot_prompts(cfg: GINCConfig, rng: np.random.Generator, n_prompts: int, k: int,
                     example_length: int) -> dict[str, np.ndarray]:
    """GINC prompts x_1 y_1 / ... / x_k y_k / x: k examples of example_length tokens (the last one is y), each
    followed by the delimiter, then the test x. Returns int32 "tokens" (n_prompts, (k + 1) * (example_length + 1)
    - 2), "answer" (n_prompts,) the test y, "concept" (n_prompts,)."""
    if k < 0 or example_length < 1:
        raise ValueError(f"need k >= 0 and example_length >= 1, got k={k}, example_length={example_length}")
    m = k + 1
    concept = rng.integers(0, cfg.num_concepts, size=n_prompts)
    start_prop = rng.integers(1, cfg.num_properties, size=n_prompts)  # one per prompt, as in GINC; never 0
    entity = rng.integers(0, cfg.num_entities, size=n_prompts * m)     # a fresh entity per example
    tokens = _walk(cfg, np.repeat(concept, m), entity, np.repeat(start_prop, m), example_length, rng)
    seq = np.pad(tokens, ((0, 0), (0, 1)), constant_values=cfg.vocab_size).reshape(n_prompts, m * (example_length + 1))
    return {"tokens": np.ascontiguousarray(seq[:, :-2]), "answer": seq[:, -2].copy(),
            "concept": concept.astype(np.int32)}
