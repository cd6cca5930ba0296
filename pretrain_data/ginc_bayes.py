"""The Bayes-optimal reader of GINC prompts (Xie et al. 2022): the forward algorithm with the true HMMs.

    y, p_y, concept_posterior = bayes_answer(cfg, prompts["tokens"], k, example_length)

It sees only `concepts(cfg)` (the matrices) and the tokens, never the sampler's internals, so tests use it to check
the sampler, and evaluation uses it as the ceiling of in-context accuracy on the same prompts: what a reader that
knows the mixture exactly can infer from k examples (the LM's k-shot curve is read against it).
"""
from __future__ import annotations

import numpy as np

from pretrain_data.ginc import GINCConfig, concepts


def forward(cfg: GINCConfig, tokens: np.ndarray, prior: np.ndarray):
    """Forward algorithm, batched over sequences n, concepts c and any latent q the caller adds.
    tokens (n, L); prior (n, C, Q, S) over the first hidden state. Returns log p(tokens | c, q) (n, C, Q) and the
    filtered distribution of the last hidden state (n, C, Q, S)."""
    cc = concepts(cfg)
    trans, emission = cc.transition, cc.emission  # (C, S, S), (S, V + 1)
    alpha, logp = prior, 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        for t in range(tokens.shape[1]):
            if t:
                alpha = alpha @ trans  # (n, C, Q, S) @ (C, S, S)
            alpha = alpha * emission[:, tokens[:, t]].T[:, None, None, :]
            z = alpha.sum(-1)
            logp = logp + np.log(z)
            alpha = np.nan_to_num(alpha / z[..., None])
    return logp, alpha


def classify_docs(cfg: GINCConfig, docs: np.ndarray) -> np.ndarray:
    """Bayes classifier: the concept whose HMM gives the document the highest likelihood."""
    prior = np.broadcast_to(concepts(cfg).start, (len(docs), cfg.num_concepts, 1, concepts(cfg).start.size))
    logp, _ = forward(cfg, docs, prior)
    return logp[:, :, 0].argmax(1)


def bayes_answer(cfg: GINCConfig, tokens: np.ndarray, k: int, example_length: int):
    """Bayes-optimal y for GINC prompts under the prompt distribution: latent concept c and start property q
    (uniform), examples independent given (c, q), each starting at (uniform entity, q).
    Returns the predicted y (n,), its predictive distribution p(y | prompt) (n, vocab_size + 1) and the posterior
    over the concept (n, C)."""
    n, E, P, C = len(tokens), cfg.num_entities, cfg.num_properties, cfg.num_concepts
    start = np.zeros((P - 1, E, P))
    start[np.arange(P - 1), :, np.arange(1, P)] = 1.0 / E  # q = start property - 1
    prior = np.broadcast_to(start.reshape(1, 1, P - 1, E * P), (n, C, P - 1, E * P))
    log_post = np.zeros((n, C, P - 1))
    for i in range(k):  # the k complete examples x_i y_i
        a = i * (example_length + 1)
        log_post += forward(cfg, tokens[:, a:a + example_length], prior)[0]
    x = tokens[:, k * (example_length + 1):]  # the test x (example_length - 1 tokens)
    logp_x, alpha = forward(cfg, x, prior) if x.shape[1] else (0.0, prior)
    log_post = log_post + logp_x
    post = np.exp(log_post - log_post.max((1, 2), keepdims=True))
    post /= post.sum((1, 2), keepdims=True)
    nxt = alpha @ concepts(cfg).transition if x.shape[1] else alpha
    p_y = np.einsum("ncq,ncqt,tv->nv", post, nxt, concepts(cfg).emission)
    return p_y.argmax(1), p_y, post.sum(2)
