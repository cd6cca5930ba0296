"""eval.demos.labels (issue 16): each label mode on a planted task whose answer is known, the episodes it makes, the
config errors, and every mode through the evaluation on a tiny model of real tasks."""
from __future__ import annotations

import math
from collections import Counter

import pytest

from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.data.episodes import EpisodeConfig, score_request
from metaicl.data.tasks import Example, Task, sample_demos
from metaicl.data.tokenizer import IdTokenizer
from metaicl.eval.demos import LABEL_MODES, abstract_task, with_labels
from metaicl.experiment import ExperimentConfig
from tests.conftest import ROOT

OPTIONS = ["10", "20", "30"]
TASK = Task("planted", [Example("planted", str(100 + i), OPTIONS[i % 3], OPTIONS) for i in range(30)],
            [Example("planted", "199", "20", OPTIONS)], OPTIONS)


def demos(k: int = 9, seed: int = 100):
    return sample_demos(TASK, k, seed)


def test_gold_keeps_the_labels_and_permuted_keeps_their_multiset_but_breaks_the_mapping():
    gold = demos()
    assert with_labels(gold, TASK, "gold", 100) == gold
    permuted = with_labels(gold, TASK, "permuted", 100)
    assert [d.input for d in permuted] == [d.input for d in gold]  # inputs and order unchanged
    assert Counter(d.output for d in permuted) == Counter(d.output for d in gold)
    assert [d.output for d in permuted] != [d.output for d in gold]
    assert with_labels(gold, TASK, "permuted", 100) == permuted  # keyed by (seed, task, k)
    assert with_labels(gold, TASK, "permuted", 13) != permuted


def test_random_labels_are_drawn_from_the_options_and_ignore_the_gold_label():
    draws = [d.output for seed in range(40) for d in with_labels(demos(seed=100), TASK, "random", seed)]
    assert set(draws) == set(OPTIONS)
    counts = Counter(draws)
    assert all(abs(n / len(draws) - 1 / 3) < 0.08 for n in counts.values())  # uniform over the 3 options
    agree = sum(a.output == b.output for seed in range(40)
                for a, b in zip(demos(), with_labels(demos(), TASK, "random", seed)))
    assert abs(agree / (40 * 9) - 1 / 3) < 0.08  # as often right as chance: no mapping left


def test_none_drops_the_labels_from_the_prompt():
    """Min et al. 2022's control: the demonstrations' inputs only, each followed by the example separator."""
    tok = IdTokenizer(300)
    cfg = EpisodeConfig(input_sep=" 7 ", example_sep="\n")
    shown = with_labels(demos(3), TASK, "none", 100)
    request = score_request(shown, "199", OPTIONS, cfg, tok)
    assert request.prefix == [0] + [t for d in demos(3) for t in (int(d.input), 0)]  # no 7, no label word
    assert request.rows[1] == ([199, 7], [20])  # the query still has its separator and options
    gold = score_request(demos(3), "199", OPTIONS, cfg, tok)
    assert gold.prefix == [0] + [t for d in demos(3) for t in (int(d.input), 7, int(d.output), 0)]


def test_abstract_replaces_each_option_by_its_symbol_everywhere():
    """Wei et al. 2023's semantically unrelated labels: the i-th option becomes symbols[i] in the demonstrations,
    the queries and the options, so the mapping is the task's, under other names."""
    task = abstract_task(TASK, ["foo", "bar", "baz", "qux"])
    assert task.options == ["foo", "bar", "baz"] and task.test[0].output == "bar"
    assert [(e.input, e.output) for e in task.train] == [(e.input, {"10": "foo", "20": "bar", "30": "baz"}[e.output])
                                                         for e in TASK.train]
    assert all(e.options == ["foo", "bar", "baz"] for e in task.train + task.test)
    with pytest.raises(ConfigError, match="eval.demos.symbols: 2 symbols for the 3 options"):
        abstract_task(TASK, ["foo", "bar"])


def tiny_sst2_model(tmp_path) -> str:
    """A tiny random GPT-2 with a BPE trained here on sst2's inputs (and the symbols A, B): its directory."""
    from transformers import PreTrainedTokenizerFast

    from metaicl.data.tasks import load_collection
    from metaicl.models.lm import LMConfig, build_lm, save_lm
    from pretrain_data.text import train_tokenizer

    task = load_collection(ROOT / "data" / "icl", ["sst2"])["sst2"]
    tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer([e.input for e in task.train[:200]] + ["A B"], 300),
                                  eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    save_lm(build_lm(LMConfig(preset="tiny", context_length=256), vocab_size=len(tok)), tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    return str(tmp_path / "m")


SYNTHETIC = ROOT / "configs" / "metaicl_synthetic.yaml"


@pytest.mark.parametrize("overrides, message", [
    (["eval.demos.labels=wrong"], "eval.demos.labels: must be one of"),
    (["eval.demos.labels=abstract"], "eval.demos.labels: abstract symbols are for real tasks"),
    (["eval.demos.labels=none"], "eval.demos.labels: none leaves fine-tuning nothing to learn"),
    (["eval.demos.symbols=[A,A]"], "eval.demos.symbols: must be distinct"),
])
def test_a_label_mode_that_cannot_apply_is_one_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ExperimentConfig, SYNTHETIC, overrides)


def test_each_label_mode_runs_through_the_evaluation_and_only_abstract_changes_the_answers(tmp_path):
    """Every mode through evaluate_variant on a tiny random GPT-2 of real tasks (sst2): the same rows for every
    mode; 0-shot is the same as with gold labels except under abstract (its options are symbols)."""
    import pandas as pd

    from metaicl.data.tasks import load_collection
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.experiment import FinetuneConfig

    model = tiny_sst2_model(tmp_path)
    task = load_collection(ROOT / "data" / "icl", ["sst2"])["sst2"]
    tables = {}
    for mode in LABEL_MODES:
        cfg = EvalConfig(k=[4], seeds=[100], max_test_examples=6, lm_icl=False)
        cfg.demos.labels = mode
        rows = evaluate_variant("pretrained", model, ["zero_shot", "in_context"], str(ROOT / "data" / "icl"),
                                ["sst2"], cfg, EpisodeConfig(max_length=256), FinetuneConfig(),
                                TokenizerSpec("local", path=model))
        tables[mode] = pd.DataFrame(rows).set_index(["method", "k", "seed", "scoring", "metric"]).value
    assert all(t.index.equals(tables["gold"].index) for t in tables.values())
    gold_demos = sample_demos(task, 4, 100)  # this draw's permutation does move a label (else nothing to see)
    assert with_labels(gold_demos, task, "permuted", 100) != gold_demos
    zero, shown = tables["gold"].xs("zero_shot"), tables["gold"].xs("in_context")
    for mode in ("random", "permuted", "none"):  # the demonstrations change, the 0-shot queries do not
        assert tables[mode].xs("zero_shot").equals(zero) and not tables[mode].xs("in_context").equals(shown), mode
    assert not tables["abstract"].xs("zero_shot").equals(zero)  # options are symbols now


# --- selection and order (eval.demos.selection / order) ------------------------------------------------------------

def test_bm25_matches_its_formula_and_prefers_rare_shared_terms():
    from metaicl.eval.select import bm25

    docs = [[1, 2], [1, 3, 3], [4]]
    [scores] = bm25([[3, 1]], docs, k1=1.5, b=0.75)
    avgdl = 2.0
    idf1, idf3 = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5)), math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    expect = [idf1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 2 / avgdl)),
              idf1 * 2.5 / (1 + 1.5 * (0.25 + 0.75 * 3 / avgdl))
              + idf3 * 2 * 2.5 / (2 + 1.5 * (0.25 + 0.75 * 3 / avgdl)),
              0.0]
    assert scores == pytest.approx(expect)
    assert scores.argmax() == 1  # the document with the rare term, twice


def planted_pool():
    """12 training examples; those whose input holds token 77 are the planted neighbours of the query."""
    train = [Example("p", f"{i} {i + 1}", OPTIONS[i % 3], OPTIONS) for i in range(10, 40, 3)]
    train[2] = Example("p", "77 12", "10", OPTIONS)
    train[5] = Example("p", "77 77 5", "20", OPTIONS)
    train[7] = Example("p", "31 77", "30", OPTIONS)
    return Task("p", train, [Example("p", "77 99", "20", OPTIONS)], OPTIONS)


def test_bm25_selection_picks_the_planted_neighbours_and_order_places_the_nearest():
    from metaicl.eval.demos import DemosConfig
    from metaicl.eval.select import demos_per_query

    task, tok = planted_pool(), IdTokenizer(300)
    [picked] = demos_per_query(task, task.test, 3, 100, DemosConfig(selection="bm25", order="similar_last"), tok)
    assert [d.input for d in picked] == ["77 12", "31 77", "77 77 5"]  # ascending (a tie in pool order): the
    # example with two 77s, the most similar, last
    [first] = demos_per_query(task, task.test, 3, 100, DemosConfig(selection="bm25", order="similar_first"), tok)
    assert [d.input for d in first] == ["77 77 5", "77 12", "31 77"]  # descending, the tie still in pool order
    [shuffled] = demos_per_query(task, task.test, 3, 100, DemosConfig(selection="bm25"), tok)
    assert sorted(d.input for d in shuffled) == sorted(d.input for d in picked)
    [fixed] = demos_per_query(task, task.test, 3, 100, DemosConfig(order="similar_last"), tok)
    assert sorted(d.input for d in fixed) == sorted(d.input for d in sample_demos(task, 3, 100))  # MetaICL's set
    assert [d.input for d in fixed] == sorted((d.input for d in fixed), key=lambda x: x.split().count("77"))


def test_knn_selection_picks_the_nearest_embeddings():
    """A planted embedder: each text's vector is its first token's row of a fixed table; the query's nearest
    neighbours are the examples whose first token's vector is closest."""
    import numpy as np

    from metaicl.eval.demos import DemosConfig
    from metaicl.eval.select import demos_per_query

    task = planted_pool()
    table = {t: np.array([1.0, 0.0]) if t == 77 else np.array([0.0, 1.0]) for t in range(300)}
    table[31] = np.array([0.9, 0.1])

    def embed(texts):
        vectors = np.array([table[int(t.split()[0])] for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    [picked] = demos_per_query(task, task.test, 3, 100, DemosConfig(selection="knn", order="similar_last"),
                               IdTokenizer(300), embed)
    assert [d.input for d in picked] == ["31 77", "77 12", "77 77 5"]  # 31's vector is a little off; ties: pool order


def test_retrieval_runs_through_the_evaluation_with_a_set_per_query(tmp_path):
    """bm25, knn, mmr and dpp through evaluate_variant on the tiny model: every row still there; in-context scores move,
    0-shot ones do not (they have no demonstrations)."""
    import pandas as pd

    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.experiment import FinetuneConfig

    model = tiny_sst2_model(tmp_path)
    tables = {}
    for selection in ("random", "balanced", "bm25", "knn", "mmr", "dpp"):
        cfg = EvalConfig(k=[4], seeds=[100], max_test_examples=6, lm_icl=False)
        cfg.demos.selection, cfg.demos.order = selection, "similar_last"
        rows = evaluate_variant("pretrained", model, ["zero_shot", "in_context", "pmi_in_context"],
                                str(ROOT / "data" / "icl"), ["sst2"], cfg, EpisodeConfig(max_length=256),
                                FinetuneConfig(), TokenizerSpec("local", path=model))
        tables[selection] = pd.DataFrame(rows).set_index(["method", "k", "seed", "scoring", "metric"]).value
    for selection in ("balanced", "bm25", "knn", "mmr", "dpp"):
        assert tables[selection].index.equals(tables["random"].index)
        assert tables[selection].xs("zero_shot").equals(tables["random"].xs("zero_shot"))
        assert not tables[selection].xs("in_context").equals(tables["random"].xs("in_context"))


def test_mmr_trades_relevance_for_diversity_and_is_knn_at_lambda_one():
    import numpy as np

    from metaicl.eval.select import mmr

    relevance = np.array([0.9, 0.89, 0.5, 0.1])
    pairwise = np.eye(4)
    pairwise[0, 1] = pairwise[1, 0] = 1.0  # 0 and 1 are the same example twice
    assert mmr(relevance, pairwise, 2, 1.0) == [0, 1]  # relevance alone: knn's top 2
    assert mmr(relevance, pairwise, 2, 0.5) == [0, 2]  # 0.5*0.5 - 0 beats 0.5*0.89 - 0.5*1: the duplicate is skipped


def test_dpp_picks_one_of_each_cluster_and_a_larger_log_det_than_random_sets():
    """Three tight clusters of four near-duplicates (unit vectors): the greedy MAP set of 3 takes one per cluster,
    and log det of its kernel beats every one of 200 random 3-sets of the same pool."""
    import numpy as np

    from metaicl.eval.select import dpp_greedy

    rng = np.random.default_rng(0)
    centres = np.eye(3)
    vectors = np.repeat(centres, 4, axis=0) + 0.05 * rng.standard_normal((12, 3))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    quality = rng.uniform(0.5, 1.0, 12)
    kernel = quality[:, None] * (vectors @ vectors.T) * quality[None, :]
    chosen = dpp_greedy(kernel, 3)
    assert sorted(i // 4 for i in chosen) == [0, 1, 2]
    logdet = np.linalg.slogdet(kernel[np.ix_(chosen, chosen)])[1]
    sets = (rng.choice(12, 3, replace=False) for _ in range(200))
    others = [np.linalg.slogdet(kernel[np.ix_(s, s)])[1] for s in sets]
    assert logdet >= max(others) - 1e-9


def test_mmr_and_dpp_choose_relevant_and_different_demonstrations_for_a_query():
    """On the planted pool with a planted embedder: knn takes the two duplicates of the query's nearest input,
    mmr and dpp take one of them and then something else."""
    import numpy as np

    from metaicl.eval.demos import DemosConfig
    from metaicl.eval.select import demos_per_query

    train = [Example("p", s, "10", OPTIONS) for s in ("1", "1", "2", "3")]
    task = Task("p", train, [Example("p", "0", "10", OPTIONS)], OPTIONS)
    table = {"0": [1.0, 0.0, 0.0], "1": [0.9, 0.44, 0.0], "2": [0.6, 0.0, 0.8], "3": [0.0, 0.0, 1.0]}

    def embed(texts):
        v = np.array([table[t] for t in texts])
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def inputs(selection):
        [shown] = demos_per_query(task, task.test, 2, 100, DemosConfig(selection=selection, order="similar_first"),
                                  IdTokenizer(300), embed)
        return [d.input for d in shown]

    assert inputs("knn") == ["1", "1"]
    assert inputs("mmr") == ["1", "2"] and inputs("dpp") == ["1", "2"]


def test_balanced_sets_show_every_label_as_evenly_as_the_pool_allows():
    """selection=balanced (issue 15's 'demonstrations that contain each class'): one set per seed, each of the 3
    labels floor(k/3) or ceil(k/3) times; random sets at k = 4 miss a label in about half the seeds."""
    from metaicl.eval.select import balanced_demos

    for k in (3, 4, 5, 9):
        for seed in range(30):
            counts = Counter(d.output for d in balanced_demos(TASK, k, seed))
            assert set(counts) == set(OPTIONS) and max(counts.values()) - min(counts.values()) <= 1, (k, seed)
    assert balanced_demos(TASK, 4, 7) == balanced_demos(TASK, 4, 7) != balanced_demos(TASK, 4, 8)
    missing = sum(len({d.output for d in sample_demos(TASK, 4, seed)}) < 3 for seed in range(300))
    assert 120 < missing < 180  # drawn with replacement: 3 (2/3)^4 - 3 (1/3)^4 = 0.56; from 10 per label a bit less
    short = Task("s", [Example("s", str(i), o, OPTIONS) for i, o in enumerate(["10"] * 6 + ["20"])], [], OPTIONS)
    assert Counter(d.output for d in balanced_demos(short, 5, 0)) == {"10": 4, "20": 1}  # the pool runs out


def test_minilm_embeddings_are_cached_once_per_task_texts_and_retrieve_the_planted_neighbours(tmp_path):
    """eval.demos.embedder=minilm: all-MiniLM-L6-v2 from its PyPI package (offline), the embeddings built once into a
    directory named by the tasks' texts; kNN on them puts the two sentences about the query's topic next to it."""
    import numpy as np

    from metaicl.eval.demos import DemosConfig
    from metaicl.eval.embed import MARKER, build_embeddings, cached_embedder, embeddings_dir
    from metaicl.eval.select import demos_per_query

    pool = ["the stock market fell sharply today", "a kitten slept on the warm rug", "interest rates rose again",
            "the football match ended in a draw", "my cat naps on the sofa all afternoon", "the bank raised its fees"]
    task = Task("topics", [Example("topics", s, "a", ["a", "b"]) for s in pool],
                [Example("topics", "the dog lay on the carpet and slept", "a", ["a", "b"])], ["a", "b"])
    where = embeddings_dir(tmp_path, {"topics": task})
    assert where.name.startswith("embeddings-minilm-") and where == embeddings_dir(tmp_path, {"topics": task})
    other = Task("topics", task.train[:-1], task.test, task.options)
    assert embeddings_dir(tmp_path, {"topics": other}) != where  # named by the texts
    build_embeddings({"topics": task}, where, tmp_path)
    assert (where / MARKER).exists() and not list(tmp_path.glob(".embeddings-*"))  # written whole
    embed = cached_embedder(where)
    vectors = embed(pool)
    assert vectors.shape == (6, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    [shown] = demos_per_query(task, task.test, 2, 100, DemosConfig(selection="knn", embedder="minilm",
                                                                   order="similar_last"), None, embed)
    assert {d.input for d in shown} == {pool[1], pool[4]}  # the two sentences about a pet sleeping
    with pytest.raises(KeyError, match="no embedding of 'unseen text'"):
        embed(["unseen text"])


# --- many-shot (eval.k: max) --------------------------------------------------------------------------------------

def test_max_demos_fills_the_context_beside_the_longest_query():
    """IdTokenizer: a demonstration "x 7 y" + the example separator (bos id 0) is 4 tokens, the longest row "199 7"
    + "20" is 3: max_length 32 holds bos + 3 + 7 x 4 = 32 -> 7; max_length 31 -> 6; a pool of 5 caps it at 5."""
    from metaicl.data.episodes import max_demos

    tok, cfg = IdTokenizer(300), EpisodeConfig(input_sep=" 7 ", example_sep="\n", max_length=32)
    query = [("199", OPTIONS)]
    assert max_demos(TASK.train, query, cfg, tok) == 7
    request = score_request(TASK.train[:7], "199", OPTIONS, cfg, tok)
    assert request.dropped_demos == 0 and len(request.ids(0)) == 32  # exactly full
    assert max_demos(TASK.train, query, EpisodeConfig(input_sep=" 7 ", example_sep="\n", max_length=31), tok) == 6
    assert max_demos(TASK.train[:5], query, cfg, tok) == 5


@pytest.mark.parametrize("k", ["[0]", "[many]", "[4,true]"])
def test_eval_k_is_a_list_of_positive_counts_or_max(k):
    with pytest.raises(ConfigError, match="eval.k: must be a non-empty list of k >= 1 or 'max'"):
        load_config(ExperimentConfig, SYNTHETIC, [f"eval.k={k}"])


def test_many_shot_runs_every_task_at_the_k_the_context_holds_and_the_report_draws_the_curve(tmp_path):
    """eval.k=[1, 2, max] on the tiny sst2 model: rows at 1, 2 and at max_shots (> 2: 256 tokens hold several
    reviews cut to 40), the same k for every method; the report's k-shot table has the three points and
    kshot_curves.png is drawn."""
    import pandas as pd

    from metaicl.data.tasks import load_collection
    from metaicl.data.tokenizer import TokenizerSpec, load_tokenizer
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant, max_shots
    from metaicl.experiment import FinetuneConfig
    from cluster.lm_report import write_lm_report
    from cluster.results import METAICL, tidy

    model = tiny_sst2_model(tmp_path)
    episodes = EpisodeConfig(max_length=256, max_length_per_example=40)
    task = load_collection(ROOT / "data" / "icl", ["sst2"])["sst2"]
    top = max_shots([task], episodes, load_tokenizer(TokenizerSpec("local", path=model)))
    assert top > 2
    cfg = EvalConfig(k=[1, 2, "max"], seeds=[100, 13], max_test_examples=4, lm_icl=False)
    rows = evaluate_variant("pretrained", model, ["zero_shot", "in_context"], str(ROOT / "data" / "icl"), ["sst2"],
                            cfg, episodes, FinetuneConfig(), TokenizerSpec("local", path=model))
    frame = pd.DataFrame(rows)
    assert sorted(frame[frame.method == "in_context"].k.unique()) == [1, 2, top]
    results = tidy(frame, suite=METAICL).assign(run="r", arm="main", stage="eval")
    write_lm_report(tmp_path, "many-shot", results)
    report = (tmp_path / "report.md").read_text()
    assert f"k={top}" in report and "(kshot_curves.png)" in report and (tmp_path / "kshot_curves.png").exists()


# --- Lu et al. 2022's entropy order (eval.demos.order: entropy) -------------------------------------------------

def test_global_entropy_and_the_candidate_orders():
    import numpy as np

    from metaicl.eval.select import candidate_orders, global_entropy

    assert global_entropy(np.array([0, 1, 0, 1]), 2) == pytest.approx(math.log(2))
    assert global_entropy(np.array([2, 2, 2]), 3) == 0.0
    assert sorted(map(tuple, candidate_orders(3, 24, np.random.default_rng(0)))) == sorted(
        {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)})  # 3! <= 24: every order
    many = candidate_orders(6, 24, np.random.default_rng(0))
    assert len(many) == 24 and len(set(map(tuple, many))) == 24 and many[0] == list(range(6))


def test_entropy_order_moves_away_from_an_order_that_sends_every_probe_to_one_label():
    """A planted reader with recency bias: it answers each probe with one of the last two demonstrations' labels,
    in turn. Shown [20, 10, 10] it says 10 to every probe (GlobalE 0); the entropy order puts a 20 among the last
    two (GlobalE ln 2). An order that is already best is kept (the drawn order is the first candidate)."""
    from metaicl.eval.select import entropy_order

    def reader(ordered):
        last_two = [OPTIONS.index(d.output) for d in ordered[-2:]]
        return [last_two[i % 2] for i in range(8)]

    by_label = {o: [e for e in TASK.train if e.output == o] for o in OPTIONS}
    drawn = [by_label["20"][0], by_label["10"][0], by_label["10"][1]]
    chosen = entropy_order(drawn, TASK, 100, 24, reader)
    assert sorted(d.input for d in chosen) == sorted(d.input for d in drawn)  # the same set, reordered
    assert {d.output for d in chosen[-2:]} == {"10", "20"}
    good = [by_label["10"][0], by_label["10"][1], by_label["20"][0]]
    assert entropy_order(good, TASK, 100, 24, reader) == good


def test_entropy_probes_are_unshown_pool_inputs_and_the_order_runs_through_the_evaluation(tmp_path):
    """The probes never include a shown demonstration or a test input; order=entropy on the tiny sst2 model gives
    the rows random order gives (same index), and is one config error with a retrieved selection."""
    import pandas as pd

    from metaicl.data.tasks import load_collection
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.eval.select import probes_for
    from metaicl.experiment import FinetuneConfig

    task = load_collection(ROOT / "data" / "icl", ["sst2"])["sst2"]
    shown = sample_demos(task, 4, 100)
    probes = probes_for(task, shown, 16, 100)
    assert len(probes) == 16 and not {p.input for p in probes} & {d.input for d in shown}
    relabelled = with_labels(shown, task, "permuted", 100)  # copies with other outputs: the same inputs are shown
    assert not {p.input for p in probes_for(task, relabelled, 16, 100)} & {d.input for d in shown}
    assert not {p.input for p in probes} & {t.input for t in task.test}
    model = tiny_sst2_model(tmp_path)
    tables = {}
    for order in ("random", "entropy"):
        cfg = EvalConfig(k=[3], seeds=[100], max_test_examples=4, lm_icl=False)
        cfg.demos.order, cfg.demos.probes = order, 6
        rows = evaluate_variant("pretrained", model, ["in_context", "channel_in_context"], str(ROOT / "data" / "icl"),
                                ["sst2"], cfg, EpisodeConfig(max_length=256, max_length_per_example=40),
                                FinetuneConfig(), TokenizerSpec("local", path=model))
        tables[order] = pd.DataFrame(rows).set_index(["method", "k", "seed", "scoring", "metric"]).value
    assert tables["entropy"].index.equals(tables["random"].index)
    with pytest.raises(ConfigError, match="eval.demos.order: entropy orders one shared set"):
        load_config(ExperimentConfig, SYNTHETIC, ["eval.demos.order=entropy", "eval.demos.selection=knn"])


# --- the spread over orders (eval.demos.permutations; Lu et al. 2022) ----------------------------------------------

def test_order_spread_is_best_minus_worst_order_for_a_recency_reader_and_zero_for_an_order_blind_one(monkeypatch):
    """A planted reader that answers with the last demonstration's label: shown 10, 20, 30 in six orders, the query
    (gold 20) is right exactly in the orders that end with 20 - spread 1. A reader that answers the first option
    whatever the order: spread 0. The drawn order is the first one scored."""
    import numpy as np

    from metaicl.eval import evaluate
    from metaicl.eval.config import EvalConfig

    shown = [next(e for e in TASK.train if e.output == o) for o in OPTIONS]
    seen = []

    def recency(model, task, demos, *args, **kwargs):
        seen.append([d.output for d in demos])
        return {"sum": np.array([task.options.index(demos[-1].output)] * len(task.test))}

    cfg = EvalConfig(k=[3], seeds=[100], lm_icl=False)
    cfg.demos.permutations = 12
    monkeypatch.setattr(evaluate, "predict", recency)
    first = recency(None, TASK, shown)  # the drawn order's predictions, as evaluate_method passes them
    rows = evaluate.order_spread_rows(None, "in_context", TASK, shown, first, cfg, None, None, "cpu", 3, 100)
    got = {r["metric"]: r["value"] for r in rows}
    right = [float(s[-1] == "20") for s in seen]  # seen[0]: the drawn order (the call above), then 11 others
    assert got["order_spread"] == 1.0 and got["order_sd"] == pytest.approx(np.std(right))
    assert len(seen) == 12 and seen[0] == OPTIONS and {tuple(s) for s in seen} - {tuple(OPTIONS)}
    assert all(sorted(s) == OPTIONS for s in seen)  # the same set, reordered
    monkeypatch.setattr(evaluate, "predict", lambda model, task, demos, *a, **k: {"sum": np.zeros(1, int)})
    rows = evaluate.order_spread_rows(None, "in_context", TASK, shown, {"sum": np.zeros(1, int)}, cfg, None, None,
                                      "cpu", 3, 100)
    assert {r["metric"]: r["value"] for r in rows} == {"order_spread": 0.0, "order_sd": 0.0}


def test_permutations_need_one_shared_set_in_random_order():
    for overrides in (["eval.demos.permutations=4", "eval.demos.selection=bm25"],
                      ["eval.demos.permutations=4", "eval.demos.order=entropy"]):
        with pytest.raises(ConfigError, match="eval.demos.permutations: permutes one shared set"):
            load_config(ExperimentConfig, ROOT / "configs" / "metaicl_synthetic.yaml", overrides)
    with pytest.raises(ConfigError, match="eval.demos.permutations"):
        load_config(ExperimentConfig, ROOT / "configs" / "metaicl_synthetic.yaml", ["eval.demos.permutations=0"])


def test_order_spread_rows_come_through_the_evaluation_and_the_report(tmp_path):
    """permutations=3 on the tiny sst2 model: order_spread and order_sd rows for the method with demonstrations
    (both scorings), none for 0-shot; the accuracy rows are those of the drawn order (permutations=1's); the run
    report's section shows them."""
    import pandas as pd

    from cluster.lm_report import write_lm_report
    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant
    from metaicl.experiment import FinetuneConfig

    model = tiny_sst2_model(tmp_path)
    tables = {}
    for n in (1, 3):
        cfg = EvalConfig(k=[3], seeds=[100, 13], max_test_examples=6, lm_icl=False)
        cfg.demos.permutations = n
        tables[n] = pd.DataFrame(evaluate_variant(
            "pretrained", model, ["zero_shot", "in_context"], str(ROOT / "data" / "icl"), ["sst2"], cfg,
            EpisodeConfig(max_length=256, max_length_per_example=40), FinetuneConfig(), TokenizerSpec("local", path=model)))
    spread = tables[3][tables[3].metric.isin(["order_spread", "order_sd"])]
    assert set(spread.method) == {"in_context"} and len(spread) == 2 * 2 * 2  # 2 seeds x 2 scorings x 2 metrics
    assert spread.value.between(0, 1).all()
    assert tables[3][~tables[3].metric.isin(["order_spread", "order_sd"])].reset_index(drop=True).equals(tables[1])
    results = tables[3].assign(suite="metaicl", run="r", arm="main", stage="eval", step=None)
    write_lm_report(tmp_path, "t", results)
    assert "## Spread over orders (Lu et al. 2022" in (tmp_path / "report.md").read_text()
