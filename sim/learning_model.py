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

import torch
import torch.nn.functional as F

from swarm_tune.sim.learning_data import Batch
from swarm_tune.sim.learning_settings import LearningSettings


def init_params(
    settings: LearningSettings, vocab: int, num_outputs: int, seed: int
) -> dict[str, torch.Tensor]:
    """One model's parameters (float32), identical for every node of a run."""
    gen = torch.Generator().manual_seed(seed)
    h = settings.hidden
    params: dict[str, torch.Tensor] = {}
    if settings.task == "char-lm":
        params["emb"] = torch.randn(vocab, settings.embed, generator=gen)
        fan_in = settings.context * settings.embed
    else:
        fan_in = settings.features
    params["w1"] = torch.randn(fan_in, h, generator=gen) / math.sqrt(fan_in)
    params["b1"] = torch.zeros(h)
    params["w2"] = torch.randn(h, num_outputs, generator=gen) / math.sqrt(h)
    params["b2"] = torch.zeros(num_outputs)
    return params


def batched_losses(params: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
    """Mean cross-entropy per node, shape [n]; every parameter has a leading node axis n.

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
    s = x.shape[1]
    hidden = torch.tanh(torch.baddbmm(params["b1"].unsqueeze(1), x, w1))
    logits = torch.baddbmm(params["b2"].unsqueeze(1), hidden, params["w2"])
    k = logits.shape[-1]
    targets = batch.targets.expand(n, s).reshape(-1)
    ce = F.cross_entropy(logits.reshape(n * s, k), targets, reduction="none")
    return ce.reshape(n, s).mean(dim=1)
