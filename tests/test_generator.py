"""The bursty/Zipfian generator produces the distributions Chan et al. 2022 and Reddy 2023 describe."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from metaicl.core.seeding import rng_for
from pretrain_data.build import shard_table
from pretrain_data.bursty import class_table, materialise, sample_eval, sample_train
from pretrain_data.config import BurstyDataConfig
from pretrain_data.reader import fixed_list


@pytest.mark.parametrize("alpha", [0.0, 0.8, 1.2])
def test_class_rank_frequency_slope_is_minus_alpha(alpha):
    cfg = BurstyDataConfig(num_classes=1000, zipf_alpha=alpha, burstiness=0)
    classes, _, _ = sample_train(cfg, class_table(cfg), rng_for(1, "zipf"), 120_000)
    counts = np.sort(np.bincount(classes.ravel(), minlength=cfg.num_classes))[::-1]
    ranks = np.arange(1, len(counts) + 1)
    keep = counts >= 50  # log of small counts is dominated by sampling noise
    slope = np.polyfit(np.log(ranks[keep]), np.log(counts[keep]), 1)[0]
    assert slope == pytest.approx(-alpha, abs=0.06)


@pytest.mark.parametrize("burstiness", [1, 2, 4])
def test_bursty_context_holds_n_over_b_classes_b_times_each(burstiness):
    cfg = BurstyDataConfig(num_classes=50, context_pairs=8, burstiness=burstiness, zipf_alpha=1.0)
    classes, labels, bursty = sample_train(cfg, class_table(cfg), rng_for(0, "b"), 2000)
    assert bursty.all()
    for row in classes:
        values, counts = np.unique(row[:-1], return_counts=True)
        assert len(values) == 8 // burstiness and (counts == burstiness).all()
        assert row[-1] in values  # the query's class is one of the bursts


def test_p_bursty_sets_the_fraction_of_bursty_sequences():
    cfg = BurstyDataConfig(p_bursty=0.3)
    _, _, bursty = sample_train(cfg, class_table(cfg), rng_for(0, "p"), 20_000)
    assert bursty.mean() == pytest.approx(0.3, abs=0.02)


def test_non_bursty_context_is_iid():
    cfg = BurstyDataConfig(num_classes=2048, burstiness=0)
    classes, _, bursty = sample_train(cfg, class_table(cfg), rng_for(0, "iid"), 5000)
    assert not bursty.any()
    query_in_context = (classes[:, :-1] == classes[:, -1:]).any(axis=1).mean()
    assert query_in_context < 0.02  # 8 iid draws out of 2048 classes rarely hit the query's


def test_labels_follow_the_fixed_class_label_map():
    cfg = BurstyDataConfig()
    table = class_table(cfg)
    classes, labels, _ = sample_train(cfg, table, rng_for(0, "l"), 500)
    assert (labels == table.labels[classes]).all()


def test_novel_classes_never_appear_in_training_shards(tiny_data):
    for index in range(4):
        classes = fixed_list(shard_table(tiny_data, "train", index, 256).column("classes"))
        assert classes.max() < tiny_data.num_classes
    novel = fixed_list(shard_table(tiny_data, "icl_novel", 0, 128).column("classes"))
    assert (novel >= tiny_data.num_classes).all()


def test_icl_novel_has_two_classes_with_distinct_random_labels():
    cfg = BurstyDataConfig()
    classes, labels = sample_eval(cfg, class_table(cfg), "icl_novel", rng_for(0, "n"), 1000)
    for c, l in zip(classes, labels):
        assert len(set(c[:-1])) == 2 and len(set(l[:-1])) == 2
        assert c[-1] in c[:-1] and l[-1] == l[:-1][c[:-1] == c[-1]][0]  # target = its in-context label
    assert len(np.unique(labels[:, -1])) == cfg.num_labels  # labels drawn at random, not fixed per class


def test_icl_swap_labels_differ_from_training_labels():
    cfg = BurstyDataConfig()
    table = class_table(cfg)
    classes, labels = sample_eval(cfg, table, "icl_swap", rng_for(0, "s"), 2000)
    assert (classes < cfg.num_classes).all()
    assert (labels != table.labels[classes]).all()
    assert (labels[:, -1] == labels[:, :-1][classes[:, :-1] == classes[:, -1:]].reshape(2000, -1)[:, 0]).all()


def test_iwl_query_class_is_absent_from_context():
    cfg = BurstyDataConfig(zipf_alpha=1.5)
    table = class_table(cfg)
    classes, labels = sample_eval(cfg, table, "iwl", rng_for(0, "i"), 2000)
    assert not (classes[:, :-1] == classes[:, -1:]).any()
    assert (labels == table.labels[classes]).all()


def test_eval_sets_do_not_depend_on_burstiness():
    a = BurstyDataConfig(burstiness=4)
    b = dataclasses.replace(a, burstiness=0, p_bursty=0.5)
    for split in ("icl_novel", "icl_swap", "iwl"):
        assert shard_table(a, split, 0, 64).equals(shard_table(b, split, 0, 64))


def test_items_scatter_around_their_class_mean_by_epsilon():
    cfg = BurstyDataConfig(item_dim=64, within_class_noise=0.5)
    table = class_table(cfg)
    classes = np.zeros((4000, 1), np.int32)
    items = materialise(table.means, classes, cfg.within_class_noise, rng_for(0, "m"))[:, 0]
    scale = np.sqrt(1 + 0.25)
    assert np.allclose(items.mean(0) * scale, table.means[0], atol=0.02)
    assert (items * scale - table.means[0]).std() * np.sqrt(64) == pytest.approx(0.5, rel=0.05)
