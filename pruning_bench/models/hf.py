"""Hugging Face causal language models (``transformers.AutoModelForCausalLM``) as harness models.

``hf:<model id or local directory>`` -> ``AutoModelForCausalLM.from_pretrained(id, dtype=float32)``: the
pretrained weights, from its local cache (``$HF_HOME``) or the hub (:mod:`pruning_bench.hub`); any failure
to load (no network, an unknown id, a gated model) is one BenchError line naming the model and what to do. With the ``[model]``
option ``config = { model_type = "opt", hidden_size = 32, ... }`` nothing is downloaded:
``AutoConfig.for_model(**config)`` + ``AutoModelForCausalLM.from_config`` (random init from the trial's
seed; the name after ``hf:`` is then only a label). ``vocab_size`` defaults to the data set's.

The model is wrapped in :class:`CausalLM`, whose ``forward(x)`` takes token ids (B, T) and returns the
logits (B, T, V), so the harness's loss, evaluation and FLOP counting see an ordinary LM.

Which weights are pruned: the ``nn.Linear`` layers of the decoder blocks (a qualified name containing
``.layers.<i>.``), as the SparseGPT and Wanda references (``find_layers(model.model.decoder.layers)``,
``model.model.layers``): never the embeddings, the LM head (tied to the token embedding in OPT) or OPT's
``project_in``/``project_out``. Every other ``nn.Linear`` is swapped for :class:`DenseLinear` (the same
parameters, not an ``nn.Linear``), so ``core/masks.py`` does not see it; its FLOPs count dense. GPT-2-style
models build their blocks from ``transformers.pytorch_utils.Conv1D``, which the masks do not treat as
prunable: they are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pruning_bench.errors import BenchError
from pruning_bench.hub import from_hub

HF_PREFIX = "hf:"
_BLOCK = re.compile(r"(^|\.)layers\.\d+\.")
_OPTIONS = ("config",)


class DenseLinear(nn.Module):
    """An ``nn.Linear``'s parameters (shared, so weight tying survives) outside the prunable types."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class CausalLM(nn.Module):
    """A ``transformers`` causal LM whose ``forward(ids)`` returns the logits tensor (B, T, V)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x, use_cache=False).logits


def _from_config(spec: str, config: Mapping[str, Any], num_classes: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = {"vocab_size": num_classes, **config}
    if "model_type" not in settings:
        raise BenchError(f"model '{spec}': option 'config' needs a model_type, e.g. config = {{ model_type = "
                         "\"opt\", hidden_size = 32, ... }")
    model_type = settings.pop("model_type")
    try:
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **settings))
    except (TypeError, ValueError, KeyError) as exc:
        raise BenchError(f"model '{spec}': cannot build from config {dict(config)}: "
                         f"{type(exc).__name__}: {exc}") from None


def _from_pretrained(model_id: str) -> nn.Module:
    from transformers import AutoModelForCausalLM

    return from_hub("Hugging Face model", model_id,
                    lambda **kw: AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32, **kw))


def _exclude_outside_blocks(model: nn.Module) -> None:
    """Swap every ``nn.Linear`` outside the decoder blocks for a :class:`DenseLinear`."""
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and not _BLOCK.search(name + "."):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, DenseLinear(module))


def _check(spec: str, model: nn.Module, num_classes: int, input_shape: tuple[int, ...]) -> None:
    from transformers.pytorch_utils import Conv1D

    if any(isinstance(m, Conv1D) for m in model.modules()):
        raise BenchError(f"model '{spec}' builds its layers from transformers' Conv1D (GPT-2 family), which the "
                         "harness's masks do not prune (nn.Linear / nn.Conv* only): use an OPT or LLaMA-family "
                         "model")
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise BenchError(f"model '{spec}' has no nn.Linear layer in decoder blocks ('.layers.<i>.'): nothing "
                         "to prune")
    config = model.config
    if config.vocab_size < num_classes:
        raise BenchError(f"model '{spec}' has vocab_size {config.vocab_size}, the data set {num_classes} token "
                         "ids: tokenise with the model's own tokenizer")
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and input_shape[0] > positions:
        raise BenchError(f"model '{spec}' takes at most {positions} positions; the data's windows have "
                         f"{input_shape[0]} tokens (lower the data set's seqlen)")


def build_hf(model_id: str, *, num_classes: int, input_shape: tuple[int, ...],
             options: Mapping[str, Any] | None = None) -> CausalLM:
    """A :class:`CausalLM` for token windows (T,); ``model_id`` is without the ``hf:`` prefix."""
    spec = HF_PREFIX + model_id
    options = dict(options or {})
    for key in options:
        if key not in _OPTIONS:
            raise BenchError(f"model '{spec}' has no option '{key}' (a [model] key); valid: {', '.join(_OPTIONS)}")
    if len(input_shape) != 1:
        raise BenchError(f"model '{spec}' takes token windows (T,), e.g. (2048,); got input_shape "
                         f"{tuple(input_shape)}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BenchError(f"model '{spec}' needs transformers: pip install 'pruning_bench[hf]'") from None
    if "config" in options:
        if not isinstance(options["config"], Mapping):
            raise BenchError(f"model '{spec}': option 'config' must be a table, e.g. {{ model_type = \"opt\" }}")
        model = _from_config(spec, options["config"], num_classes)
    elif not model_id:
        raise BenchError("model 'hf:' needs a model id or a local directory, e.g. 'hf:facebook/opt-125m'")
    else:
        model = _from_pretrained(model_id)
    _check(spec, model, num_classes, input_shape)
    _exclude_outside_blocks(model)
    return CausalLM(model)
