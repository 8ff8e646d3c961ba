"""The surrogate model, written once for a whole stack of nodes.

Why hand-batched tensors (``bmm`` over a leading node axis) instead of ``vmap(grad(
functional_call(module)))``: the model is tiny (an embedding MLP), so what costs time is not
arithmetic but per-call overhead, and a plain batched forward is the least overhead there is.
Per-node gradients come from ONE backward pass of the SUM of per-node mean losses: no
parameter row is shared between nodes, so d(sum)/d(row i) is exactly node i's own gradient —
the same result ``vmap(grad(...))`` gives, with one autograd graph and no batching rules.

Every node starts from the same initial weights (as ``runtime.training`` nodes do: the seed
fixes the model), so a swarm whose averages reach everyone stays one model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import pairwise

import torch
import torch.nn.functional as F

from swarm_tune.sim.learning_data import Batch
from swarm_tune.sim.learning_settings import LearningSettings


def init_params(
    settings: LearningSettings, vocab: int, num_outputs: int, seed: int
) -> dict[str, torch.Tensor]:
    """One model's parameters (float32), identical for every node of a run.

    Layers ``w1/b1 .. wL/bL`` (L = ``hidden_layers`` + 1), drawn in that order: with one
    hidden layer the draws are exactly the historical model's, so seeded runs are unchanged.
    """
    gen = torch.Generator().manual_seed(seed)
    params: dict[str, torch.Tensor] = {}
    if settings.task == "char-lm":
        params["emb"] = torch.randn(vocab, settings.embed, generator=gen)
        fan_in = settings.context * settings.embed
    else:
        fan_in = settings.features
    widths = [fan_in] + [settings.hidden] * settings.hidden_layers + [num_outputs]
    for layer, (w_in, w_out) in enumerate(pairwise(widths), start=1):
        params[f"w{layer}"] = torch.randn(w_in, w_out, generator=gen) / math.sqrt(w_in)
        params[f"b{layer}"] = torch.zeros(w_out)
    return params


def block_names(names: list[str]) -> dict[str, str]:
    """Each surrogate parameter's name as a transformer would write it, for layer shards.

    Why: ``runtime.training.layer_shard.owned`` decides who owns what from a model's parameter
    names (``...h.3.`` / ``...layers.3.`` are blocks; what comes before the first block goes to
    the first shard, the rest to the last). Naming layer ``l``'s ``w``/``b`` block ``l - 1``
    lets the sim slice its model with that very function: the embedding goes with the first
    block, and a model with L layers splits into at most L shards.
    """
    out = {}
    for name in names:
        if name[0] in "wb" and name[1:].isdigit():
            out[name] = f"blocks.{int(name[1:]) - 1}.{name[0]}"
        else:
            out[name] = name
    return out


def batched_logits(params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """Logits per node and sample, shape [n, S, K]; every parameter has a leading node axis n.

    ``batch.inputs`` may have a leading axis of 1 (a shared held-out set): it is broadcast.
    """
    w1 = params["w1"]
    n = w1.shape[0]
    inputs = batch.inputs
    if "emb" in params:
        emb = params["emb"]
        vocab, width = emb.shape[1], emb.shape[2]
        tokens = inputs.expand(n, *inputs.shape[1:])
        s, c = tokens.shape[1], tokens.shape[2]
        # Offset each node's tokens into its own rows of the flattened embedding stack.
        flat = (tokens + (torch.arange(n) * vocab).view(n, 1, 1)).reshape(-1)
        x = emb.reshape(n * vocab, width).index_select(0, flat).reshape(n, s, c * width)
    else:
        x = inputs.expand(n, *inputs.shape[1:])
    layers = sum(1 for name in params if name.startswith("w"))
    for layer in range(1, layers + 1):
        x = torch.baddbmm(params[f"b{layer}"].unsqueeze(1), x, params[f"w{layer}"])
        if layer < layers:
            x = torch.tanh(x)
    return x


def batched_losses(params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """Mean cross-entropy per node, shape [n] (see ``batched_logits``)."""
    logits = batched_logits(params, batch)
    n, s, k = logits.shape
    targets = batch.targets.expand(n, s).reshape(-1)
    ce = F.cross_entropy(logits.reshape(n * s, k), targets, reduction="none")
    return ce.reshape(n, s).mean(dim=1)


def batched_accuracies(params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """Share of samples whose arg-max logit is the target, per node, shape [n]."""
    logits = batched_logits(params, batch)
    n, s, _ = logits.shape
    hits = logits.argmax(dim=-1) == batch.targets.expand(n, s)
    return hits.to(torch.float64).mean(dim=1)
