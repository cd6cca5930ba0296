"""Tokenizers and MetaICL episodes: exact separators, loss masks, truncation that never cuts the target."""
from __future__ import annotations

import pytest

from metaicl.core.errors import ConfigError
from metaicl.data.episodes import EpisodeConfig, score_request, train_sequence
from metaicl.data.tasks import Example, Task, read_jsonl, sample_demos
from metaicl.data.tokenizer import HFTokenizer, IdTokenizer, TokenizerSpec, load_tokenizer
from pretrain_data.text import EOT, train_tokenizer
from tests.conftest import ROOT

SST2 = ROOT / "data" / "icl" / "sst2"
TOK = IdTokenizer(100)


@pytest.fixture(scope="module")
def sst2() -> Task:
    train, test = read_jsonl(SST2 / "sst2_train.jsonl"), read_jsonl(SST2 / "sst2_test.jsonl")
    return Task("sst2", train, test, ["negative", "positive"])


@pytest.fixture(scope="module")
def bpe(sst2, tmp_path_factory) -> str:
    """A byte-level BPE trained offline on sst2 inputs, saved as tokenizer.json; returns its path."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer([e.input for e in sst2.train], vocab_size=400).save(str(path))
    return str(path)


def ids_ex(x: str, y: str) -> Example:
    return Example("syn", x, y, [y])


# --- tokenizers -------------------------------------------------------------------------------------------------

def test_id_tokenizer_reads_ids_newlines_are_token_0_and_spaces_make_nothing():
    assert TOK.encode("17 53\n22") == [17, 53, 0, 22]
    assert TOK.encode("  4   5 ") == [4, 5] and TOK.encode("\n\n") == [0, 0] and TOK.encode(" ") == []
    assert TOK.bos_id == 0 and TOK.vocab_size == 100
    ids = [3, 0, 0, 7, 8, 0]
    assert TOK.encode(TOK.decode(ids)) == ids


@pytest.mark.parametrize("word", ["abc", "100", "-3", "1.5"])
def test_id_tokenizer_names_a_bad_word(word):
    with pytest.raises(ValueError, match=repr(word)):
        TOK.encode(f"1 {word} 2")


def test_load_tokenizer_specs(bpe, tmp_path):
    ids = load_tokenizer(TokenizerSpec("ids", vocab_size=64))
    assert isinstance(ids, IdTokenizer) and ids.vocab_size == 64
    from_json = load_tokenizer(TokenizerSpec("local", path=bpe))
    assert isinstance(from_json, HFTokenizer) and from_json.bos_id == 0  # <|endoftext|> is id 0
    for bad in (TokenizerSpec("ids"), TokenizerSpec("local", path=str(tmp_path / "missing.json")),
                TokenizerSpec("local", path="gpt2"), TokenizerSpec("bpe", path=str(bpe))):
        with pytest.raises(ConfigError):
            load_tokenizer(bad)


def test_tokenizer_directory_gives_bos_and_encode_adds_no_special_tokens(bpe, tmp_path):
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(bpe)
    raw.post_processor = processors.TemplateProcessing(single=f"{EOT} $A", special_tokens=[(EOT, 0)])
    PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=EOT, eos_token=EOT).save_pretrained(tmp_path)
    tok = load_tokenizer(str(tmp_path))
    assert raw.encode("a fine film").ids[0] == 0  # the saved tokenizer would add bos on its own...
    assert tok.encode("a fine film") == raw.encode("a fine film", add_special_tokens=False).ids  # ...ours not
    assert tok.bos_id == 0 and tok.decode(tok.encode("a fine film")) == "a fine film"


# --- episode layout -----------------------------------------------------------------------------------------------

def test_direct_episode_ids_are_bos_demos_and_query_with_the_configured_separators():
    demos, query = [ids_ex("1 2", "3"), ids_ex("4", "5")], ids_ex("6 7", "8")
    seq = train_sequence(demos, query, EpisodeConfig(), TOK)
    assert seq.ids == [0, 1, 2, 0, 3, 0, 0, 0, 4, 0, 5, 0, 0, 0, 6, 7, 0, 8]
    assert seq.loss_mask == [0] * 17 + [1] and seq.dropped_demos == 0
    plain = train_sequence(demos, query, EpisodeConfig(input_sep=" ", example_sep=" "), TOK)
    assert plain.ids == [0, 1, 2, 3, 4, 5, 6, 7, 8]  # separators that encode to nothing just concatenate


def test_channel_swaps_roles_and_masks_exactly_the_query_input():
    demos, query = [ids_ex("1 2", "3")], ids_ex("6 7", "8")
    seq = train_sequence(demos, query, EpisodeConfig(method="channel"), TOK)
    assert seq.ids == [0, 3, 0, 1, 2, 0, 0, 0, 8, 0, 6, 7]
    assert [i for i, m in zip(seq.ids, seq.loss_mask) if m] == [6, 7] and sum(seq.loss_mask) == 2


@pytest.mark.parametrize("method", ["direct", "channel"])
def test_real_episode_decodes_to_the_text_with_exact_separators(sst2, bpe, method):
    tok = load_tokenizer(bpe)
    cfg = EpisodeConfig(method=method, input_sep=" => ", example_sep="\n##\n", max_length=4096)
    demos, query = sample_demos(sst2, 4, 100), sst2.test[0]
    seq = train_sequence(demos, query, cfg, tok)
    pair = (lambda e: e.input + " => " + e.output) if method == "direct" else (lambda e: e.output + " => " + e.input)
    assert tok.decode(seq.ids) == EOT + "".join(pair(d) + "\n##\n" for d in demos) + pair(query)
    target = query.output if method == "direct" else query.input
    assert tok.decode([i for i, m in zip(seq.ids, seq.loss_mask) if m]) == target
    n = len(tok.encode(target))
    assert seq.loss_mask == [0] * (len(seq.ids) - n) + [1] * n


# --- truncation ---------------------------------------------------------------------------------------------------

DEMOS = [ids_ex(" ".join(str(10 * d + i) for i in range(1, 6)), str(10 * d)) for d in (1, 2, 3, 4)]  # 7 tokens + sep


def test_drop_demos_drops_the_farthest_demonstrations_first_and_keeps_the_answer():
    query = ids_ex("91 92", "93")
    full = train_sequence(DEMOS, query, EpisodeConfig(), TOK)
    assert len(full.ids) == 1 + 4 * 10 + 4
    seq = train_sequence(DEMOS, query, EpisodeConfig(max_length=len(full.ids) - 15), TOK)
    assert seq.dropped_demos == 2 and len(seq.ids) <= len(full.ids) - 15
    assert seq.ids == [0] + full.ids[1 + 20:]  # the last two demonstrations, whole, then the query
    assert [i for i, m in zip(seq.ids, seq.loss_mask) if m] == [93]


def test_trim_left_cuts_the_demonstration_block_from_the_left():
    query = ids_ex("91 92", "93")
    full = train_sequence(DEMOS, query, EpisodeConfig(), TOK)
    cfg = EpisodeConfig(max_length=len(full.ids) - 15, truncation="trim_left")
    seq = train_sequence(DEMOS, query, cfg, TOK)
    assert seq.ids == [0] + full.ids[1 + 15:] and len(seq.ids) == cfg.max_length
    assert seq.dropped_demos == 2  # one demonstration gone, one cut in half: two not shown whole
    assert seq.ids[-1] == 93 and seq.loss_mask[-1] == 1


TINY_CASES = [  # (method, truncation, query input, answer, expected ids): bos + end of the condition + target
    ("direct", "drop_demos", "81 82 83 84 85 86", "87 88", [0, 85, 86, 0, 87, 88]),
    ("direct", "trim_left", "81 82 83 84 85 86", "87 88", [0, 85, 86, 0, 87, 88]),
    ("channel", "drop_demos", "81 82", "87 88 89 90", [0, 89, 90, 0, 81, 82]),  # the option is cut, not x
]


@pytest.mark.parametrize("method, truncation, x, y, expected", TINY_CASES, ids=[c[0] + "-" + c[1] for c in TINY_CASES])
def test_tiny_max_length_drops_every_demo_and_cuts_the_condition_from_the_left(method, truncation, x, y, expected):
    seq = train_sequence(DEMOS, ids_ex(x, y), EpisodeConfig(method=method, truncation=truncation, max_length=6), TOK)
    assert seq.dropped_demos == 4 and seq.ids == expected and seq.loss_mask == [0, 0, 0, 0, 1, 1]


def test_target_that_cannot_fit_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        train_sequence([], ids_ex("1", "2 3 4"), EpisodeConfig(max_length=3), TOK)
    assert err.value.key == "episodes.max_length"


def test_max_length_per_example_cuts_the_input_end_never_the_output():
    demo, query = ids_ex("1 2 3 4 5 6", "7 8"), ids_ex("11 12", "13")
    seq = train_sequence([demo], query, EpisodeConfig(max_length_per_example=5), TOK)
    assert seq.ids == [0, 1, 2, 0, 7, 8, 0, 0, 0, 11, 12, 0, 13]


# --- scoring ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["direct", "channel"])
def test_score_rows_rebuild_the_train_sequence_of_the_gold_option(sst2, bpe, method):
    tok, cfg = load_tokenizer(bpe), EpisodeConfig(method=method)
    demos = sample_demos(sst2, 8, 13)
    for query in sst2.test[:5]:
        request = score_request(demos, query.input, sst2.options, cfg, tok)
        gold = sst2.options.index(query.output)
        assert request.ids(gold) == train_sequence(demos, query, cfg, tok).ids
        conditions, targets = zip(*request.rows)
        shared = conditions if method == "direct" else targets  # the query input, the same for every option
        assert len(set(map(tuple, shared))) == 1
        assert [tok.decode(t if method == "direct" else c) for c, t in request.rows] == \
            [o if method == "direct" else o + "\n" for o in sst2.options]


def test_truncation_is_decided_once_for_the_longest_option():
    query = "91 92"
    options = ["1", "2 3 4 5 6"]
    cfg = EpisodeConfig(max_length=1 + 30 + 3 + 1)  # three demonstrations fit beside the short option only
    request = score_request(DEMOS, query, options, cfg, TOK)
    assert request.dropped_demos == 2 and all(len(request.ids(i)) <= cfg.max_length for i in range(2))
    short_alone = score_request(DEMOS, query, options[:1], cfg, TOK)
    assert short_alone.dropped_demos == 1  # alone the short option would have kept a third demonstration


def test_bad_episode_config_names_the_key():
    for field, value in [("method", "noisy"), ("truncation", "cut"), ("max_length", 1)]:
        with pytest.raises(ConfigError) as err:
            EpisodeConfig(**{field: value}).validate()
        assert err.value.key == f"episodes.{field}"


# --- the loss on every demonstration's answer (metatrain.loss_on, issue 15) ---------------------------------------

def marked(seq) -> list[int]:
    return [t for t, m in zip(seq.ids, seq.loss_mask) if m]


@pytest.mark.parametrize("method, targets", [("direct", [9, 19, 29, 39]), ("channel", [1, 2, 11, 12, 21, 22, 31, 32])])
def test_all_outputs_puts_the_loss_on_each_demonstrations_answer_too(method, targets):
    """Direct: every demonstration's output and the query's; channel: every demonstration's input and the
    query's. The episode's tokens are those of loss_on=query."""
    demos = [ids_ex("1 2", "9"), ids_ex("11 12", "19"), ids_ex("21 22", "29")]
    cfg = EpisodeConfig(method=method, input_sep=" 50 ", example_sep="\n")
    query_only = train_sequence(demos, ids_ex("31 32", "39"), cfg, TOK)
    every = train_sequence(demos, ids_ex("31 32", "39"), cfg, TOK, loss_on="all_outputs")
    assert every.ids == query_only.ids and marked(every) == targets
    assert marked(query_only) == targets[-1:] if method == "direct" else targets[-2:]


@pytest.mark.parametrize("truncation, kept, targets", [("drop_demos", [21, 22, 23, 29, 0], [29, 39]),
                                                         ("trim_left", [13, 19, 0, 21, 22, 23, 29, 0], [19, 29, 39])])
def test_all_outputs_marks_only_what_truncation_leaves_of_the_demonstrations(truncation, kept, targets):
    """An episode cut to max_length keeps a suffix of its demonstrations (13 tokens: bos, 8 of demonstrations, the
    query's 4): the mask follows the tokens. A dropped demonstration's answer is no target; the answer of one cut
    from the left is, while it is there."""
    demos = [ids_ex("1 2 3", "9"), ids_ex("11 12 13", "19"), ids_ex("21 22 23", "29")]
    cfg = EpisodeConfig(input_sep=" ", example_sep="\n", max_length=13, truncation=truncation)
    seq = train_sequence(demos, ids_ex("31 32 33", "39"), cfg, TOK, loss_on="all_outputs")
    assert seq.ids == [TOK.bos_id, *kept, 31, 32, 33, 39] and len(seq.loss_mask) == len(seq.ids)
    assert marked(seq) == targets


def test_loss_on_is_a_meta_training_knob_that_names_its_own_step():
    from cluster.lm_pipeline import metatrain_dir
    from metaicl.core.config import load_config
    from metaicl.experiment import ExperimentConfig

    synthetic = ROOT / "configs" / "metaicl_synthetic.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, synthetic, ["metatrain.loss_on=everything"])
    assert err.value.key == "metatrain.loss_on"
    dirs = {metatrain_dir(load_config(ExperimentConfig, synthetic, [f"metatrain.loss_on={on}"])[0], "metaicl",
                          "pretrain-00000000", "tasks-00000000") for on in ("query", "all_outputs")}
    assert len(dirs) == 2
