"""Parameter-efficient fine-tuning (issue 16): the Fine-tune baselines with `peft` adapters instead of every weight.

    tuned = with_adapter(copy.deepcopy(model), "lora", rank=8)   # only the adapter's parameters train
    ... train ...
    trained_parameters(tuned); tuned.save_pretrained(dir)          # peft's format: adapter_config.json + safetensors
    plain = merged(tuned)                                          # the base class again, for the scorers

  full  every weight (MetaICL's Fine-tune).
  lora  low-rank updates of the attention projections (Hu et al. 2022; peft's default targets per architecture:
        GPT-2's fused c_attn, Llama's q_proj and v_proj), rank `finetune.rank`, alpha = 2 x rank.
  ia3   learned rescaling of keys, values and the MLP's activations (Liu et al. 2022, "Few-Shot
        Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning").
  prompt_tuning  `virtual_tokens` trained input embeddings in front of every sequence, the model frozen (Lester et
        al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning").
LoRA and IA3 merge into the weights after training, so the scorers (KV cache, hidden states) see a plain model.
Virtual tokens cannot be merged: `SoftPrompt` (metaicl/models/soft_prompt.py) is the frozen model behind them,
called as the model itself is (the scorers' token ids, masks, positions and caches), so every scorer reads it
unchanged; it saves in peft's format.
"""
from __future__ import annotations

ADAPTERS = ("full", "lora", "ia3", "prompt_tuning")


def with_adapter(model, method: str, rank: int = 8, virtual_tokens: int = 8):
    """`model` wrapped with a fresh adapter (its base weights frozen), or `model` itself for `full`."""
    if method == "full":
        return model
    if method == "prompt_tuning":
        import torch

        from metaicl.models.soft_prompt import SoftPrompt

        vocab = model.get_input_embeddings().weight.shape[0]
        init = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[:virtual_tokens]
        return SoftPrompt(model, init.to(model.get_input_embeddings().weight.device))
    from peft import IA3Config, LoraConfig, get_peft_model

    conv1d = getattr(model.config, "model_type", "") == "gpt2"  # GPT-2's projections are Conv1D (weights transposed)
    if method == "lora":
        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, fan_in_fan_out=conv1d,
                            task_type="CAUSAL_LM")
    elif method == "ia3":
        config = IA3Config(fan_in_fan_out=conv1d, task_type="CAUSAL_LM")
    else:
        raise ValueError(f"unknown adapter {method!r} (known: {', '.join(ADAPTERS)})")
    return get_peft_model(model, config)


def trained_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def save_adapter(model, path) -> None:
    """The adapter alone in peft's format (adapter_config.json + adapter_model.safetensors), atomically."""
    from metaicl.core.io import atomic_dir

    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))


def merged(model):
    """The adapter folded into the base weights (a plain `transformers` model); a model without one as it is."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
