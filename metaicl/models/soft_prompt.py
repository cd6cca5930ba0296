"""Prompt tuning's model (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning"): a frozen
causal LM behind trainable virtual-token embeddings, which the scorers call as they call the model itself.

    tuned = SoftPrompt(model, init_ids=torch.tensor([7, 3, 11]))   # 3 virtual tokens, from those tokens' embeddings
    score(tuned, requests)                                           # as the plain model with 7 3 11 before each prefix

Made by metaicl.models.adapters.with_adapter(model, "prompt_tuning", virtual_tokens=n) for finetune.method.
"""
from __future__ import annotations

import torch


class SoftPrompt(torch.nn.Module):
    """A frozen causal LM behind n trainable virtual-token embeddings, called like the model: a call without a cache
    starts a sequence, so the prompt goes in front of it (positions 0..n-1) and its outputs (logits, hidden states)
    are cut back to the caller's tokens; a call with a cache continues one whose prompt is already in the cache.
    Either way the caller's positions move up by n and its attention mask gains n leading ones: a scorer's prefix
    cache and position ids work unchanged. Initialised from the embeddings of `init_ids` (Lester et al. 2021: from
    vocabulary tokens), so a prompt that is not trained equals those tokens written in front of every sequence."""

    def __init__(self, model, init_ids: torch.Tensor):
        super().__init__()
        self.model = model.requires_grad_(False)
        self.prompt = torch.nn.Parameter(model.get_input_embeddings().weight[init_ids].detach().clone())

    @property
    def config(self):
        return self.model.config

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        from metaicl.models.lm import cache_kwarg

        n, (b, width) = self.prompt.shape[0], input_ids.shape
        name = cache_kwarg(self.model)
        cache = kwargs.pop("past_key_values", None)
        cache = kwargs.pop("cache", None) if cache is None else cache  # (an empty cache is falsy: no `or`)
        if cache is not None:
            kwargs[name] = cache
        if position_ids is None:  # after what the cache holds, less the prompt
            past = cache.get_seq_length() - n if cache is not None else 0
            position_ids = torch.arange(past, past + width, device=input_ids.device).expand(b, width)
        embeds = self.model.get_input_embeddings()(input_ids)
        position_ids = position_ids + n
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
        if cache is None:
            embeds = torch.cat([self.prompt.to(embeds.dtype).expand(b, -1, -1), embeds], dim=1)
            position_ids = torch.cat([torch.arange(n, device=input_ids.device).expand(b, n), position_ids], dim=1)
        out = self.model(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        if cache is None:
            if out.logits.shape[1] == n + width:  # every position's logits (not logits_to_keep)
                out.logits = out.logits[:, n:]
            if out.hidden_states is not None:
                out.hidden_states = tuple(h[:, n:] for h in out.hidden_states)
        return out

    def save_pretrained(self, path) -> None:
        """peft's format (adapter_config.json + adapter_model.safetensors of a PromptTuningConfig):
        `PeftModel.from_pretrained(model, path)` loads this prompt."""
        from peft import PromptTuningConfig, get_peft_model

        peft_model = get_peft_model(self.model, PromptTuningConfig(task_type="CAUSAL_LM",
                                                                   num_virtual_tokens=self.prompt.shape[0]))
        peft_model.prompt_encoder["default"].embedding.weight.data.copy_(self.prompt.detach())
        peft_model.save_pretrained(str(path))
