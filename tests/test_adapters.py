"""finetune.method (issue 16): LoRA and IA3 Fine-tune baselines through `peft` train their adapter alone, merge
back into a plain model for the scorers, save in peft's format, and report how many parameters trained."""
from __future__ import annotations

import copy
import re

import pytest
import torch

from metaicl.core.config import load_config
from metaicl.core.errors import ConfigError
from metaicl.data.episodes import EpisodeConfig
from metaicl.data.tasks import Example
from metaicl.data.tokenizer import IdTokenizer
from metaicl.eval.evaluate import finetuned
from metaicl.experiment import ExperimentConfig, FinetuneConfig
from metaicl.models.adapters import with_adapter
from metaicl.models.lm import LMConfig, build_lm
from tests.conftest import ROOT

DEMOS = [Example("t", f"{3 + i} {9 + i}", str(40 + i % 3), ["40", "41", "42"]) for i in range(6)]
EPISODES = EpisodeConfig(input_sep=" ", example_sep="\n", max_length=32)


def tiny(arch: str = "gpt2"):
    torch.manual_seed(0)
    return build_lm(LMConfig(arch=arch, preset="tiny", context_length=32), vocab_size=50)


def changed(before, after) -> set[str]:
    a, b = before.state_dict(), after.state_dict()
    return {name for name in a if not torch.equal(a[name], b[name])}


@pytest.mark.parametrize("arch, targets", [("gpt2", {"attn.c_attn.weight"}), ("llama", {"self_attn.q_proj.weight",
                                                                                       "self_attn.v_proj.weight"})])
def test_lora_trains_only_its_adapter_which_merges_into_the_attention_projections(arch, targets):
    """Merged after training, LoRA has moved the attention projections it targets and nothing else; 2 layers x
    rank 8 x (in + out) parameters trained (GPT-2's fused c_attn: 64 -> 192; Llama's q and v: 64 -> 64 each)."""
    model = tiny(arch)
    tuned, trained = finetuned(model, DEMOS, EPISODES, IdTokenizer(50), FinetuneConfig(steps=5, lr=1e-2,
                                                                                          method="lora"), "cpu")
    assert type(tuned) is type(model)  # a plain transformers model again, for the scorers
    moved = changed(model, tuned)
    assert moved and {re.sub(r"^.*?\.\d+\.", "", name) for name in moved} == targets  # the layer prefix dropped
    assert trained == (2 * 8 * (64 + 192) if arch == "gpt2" else 2 * 2 * 8 * (64 + 64))


def test_ia3_and_full_fine_tuning_train_what_they_say():
    model = tiny()
    _, ia3 = finetuned(model, DEMOS, EPISODES, IdTokenizer(50), FinetuneConfig(steps=3, method="ia3"), "cpu")
    full, every = finetuned(model, DEMOS, EPISODES, IdTokenizer(50), FinetuneConfig(steps=3), "cpu")
    assert every == sum(p.numel() for p in model.parameters()) and 0 < ia3 < 1000 < every
    assert "transformer.wte.weight" in changed(model, full)  # full fine-tuning moves the embeddings too


def test_an_adapter_saves_in_peft_format_and_loads_back_to_the_same_model(tmp_path):
    from peft import PeftModel

    model = tiny()
    adapted = with_adapter(copy.deepcopy(model), "lora", rank=4)
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a non-zero update, as after training
    adapted.save_pretrained(tmp_path / "adapter")
    assert {p.name for p in (tmp_path / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    loaded = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "adapter")
    ids = torch.randint(1, 50, (2, 12))
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, adapted(input_ids=ids).logits, atol=1e-6)
        assert not torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_an_unknown_method_is_one_config_error():
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "metaicl_synthetic.yaml", ["finetune.method=qlora"])
    assert err.value.key == "finetune.method"


def test_fine_tune_rows_say_how_many_parameters_trained(tmp_path):
    """Fine-tune through the evaluation with finetune.method full, lora and prompt_tuning, on a tiny model of sst2:
    the same metric rows, plus trained_params per (k, seed), far fewer for the adapters."""
    import pandas as pd

    from metaicl.data.tokenizer import TokenizerSpec
    from metaicl.eval.config import EvalConfig
    from metaicl.eval.evaluate import evaluate_variant
    from tests.test_demos import tiny_sst2_model

    model = tiny_sst2_model(tmp_path)
    trained = {}
    for method in ("full", "lora", "prompt_tuning"):
        rows = pd.DataFrame(evaluate_variant(
            "pretrained", model, ["finetune"], str(ROOT / "data" / "icl"), ["sst2"],
            EvalConfig(k=[2], seeds=[100, 13], max_test_examples=4, lm_icl=False), EpisodeConfig(max_length=256),
            FinetuneConfig(steps=2, method=method, save_adapters=method == "lora"), TokenizerSpec("local", path=model),
            adapters=str(tmp_path / "adapters")))
        assert {"accuracy", "macro_f1", "trained_params"} <= set(rows.metric)
        trained[method] = rows[rows.metric == "trained_params"].set_index("seed").value
    from peft import PeftModel

    from metaicl.models.lm import count_params, load_lm

    assert (trained["lora"] == 2 * 8 * (64 + 192)).all() and (trained["full"] == count_params(load_lm(model))).all()
    assert (trained["prompt_tuning"] == 8 * 64).all()  # 8 virtual tokens of width 64
    # finetune.save_adapters: one adapter per (task, k, seed) in peft's format, trained (its B is no longer 0)
    saved = sorted(p.relative_to(tmp_path / "adapters").as_posix() for p in (tmp_path / "adapters").glob("*/*/*"))
    assert saved == ["finetune/sst2/k2-seed100", "finetune/sst2/k2-seed13"]
    loaded = PeftModel.from_pretrained(load_lm(model), tmp_path / "adapters" / saved[0])
    assert any(p.abs().sum() > 0 for n, p in loaded.named_parameters() if "lora_B" in n)


def test_saving_adapters_of_full_fine_tuning_is_one_config_error():
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "metaicl_synthetic.yaml", ["finetune.save_adapters=true"])
    assert err.value.key == "finetune.save_adapters"


def test_an_untrained_soft_prompt_scores_as_its_tokens_written_in_front_of_every_prefix():
    """Prompt tuning (Lester et al. 2021) initialises its virtual tokens from vocabulary embeddings: untrained, the
    wrapped model must score every request exactly as the plain model with those tokens in front of its prefix —
    through the fast scorer's prefix cache and position ids, and the slow scorer's full sequences."""
    from metaicl.data.episodes import ScoreRequest
    from metaicl.eval.scoring import score_fast, score_slow
    from metaicl.models.soft_prompt import SoftPrompt

    for arch in ("gpt2", "llama"):
        model = tiny(arch).eval()
        init = torch.tensor([7, 3, 11])
        soft = SoftPrompt(copy.deepcopy(model), init)
        requests = [ScoreRequest([0, 5, 6, 9], [([4, 8], [40]), ([4, 8], [41, 42]), ([], [43])], 0),
                    ScoreRequest([0, 5, 6, 9], [([2], [40]), ([2], [41, 42])], 0),
                    ScoreRequest([0], [([12, 13], [44])], 0)]
        written = [ScoreRequest([*init.tolist(), *r.prefix], r.rows, 0) for r in requests]
        expected = score_slow(model, written)
        for scorer in (score_fast, score_slow):
            for got, want in zip(scorer(soft, requests), expected):
                assert got == pytest.approx(want, abs=1e-4), (arch, scorer.__name__)


def test_prompt_tuning_trains_only_its_virtual_tokens_and_saves_in_peft_format(tmp_path):
    from peft import PeftModel

    from metaicl.models.adapters import save_adapter
    from metaicl.models.soft_prompt import SoftPrompt

    model = tiny()
    tuned, trained = finetuned(model, DEMOS, EPISODES, IdTokenizer(50),
                               FinetuneConfig(steps=5, lr=1e-1, method="prompt_tuning", virtual_tokens=4), "cpu",
                               save_to=tmp_path / "adapter")
    assert isinstance(tuned, SoftPrompt) and trained == 4 * 64  # 4 virtual tokens of width 64, nothing else
    assert not changed(model, tuned.model)  # the model itself is untouched
    init = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:4]
    assert not torch.allclose(tuned.prompt, model.get_input_embeddings().weight[init])  # the prompt moved
    loaded = PeftModel.from_pretrained(copy.deepcopy(model), tmp_path / "adapter")
    assert torch.equal(loaded.get_prompt_embedding_to_save("default"), tuned.prompt.detach())
    save_adapter(tuned, tmp_path / "again")  # saving leaves the wrapper a plain frozen model behind its prompt
    assert not changed(model, tuned.model) and trained == sum(p.numel() for p in tuned.parameters() if p.requires_grad)


def test_dai_et_al_comparison_with_prompt_tuning_is_one_config_error():
    """Prompt tuning changes no weight: the attention of "fine-tuned weights" that eval.icl_vs_finetune compares
    with in-context learning does not exist."""
    with pytest.raises(ConfigError) as err:
        load_config(ExperimentConfig, ROOT / "configs" / "metaicl_synthetic.yaml",
                    ["finetune.method=prompt_tuning", "eval.icl_vs_finetune=true"])
    assert err.value.key == "eval.icl_vs_finetune"
