"""``HFLearner``: a Hugging Face causal LM, a data shard and an optimizer behind ``Learner``.

Why the learner owns the optimizer: in ``"grad"`` rounds the swarm averages gradients and the
*same* optimizer step is then applied on every node, so with identical starting weights and the
same averaged gradient every replica stays identical (that is synchronous data parallelism).
In ``"params"`` rounds the node steps on its own gradient and the swarm averages the results;
the optimizer's moments are kept, because throwing them away on every sync would reset Adam.
With ``config.diloco`` a ``"grad"`` round is DiLoCo's (runtime/training/diloco.py): H real
inner steps with this optimizer, the pseudo-gradient out, and the average applied by the
outer Nesterov step (``outer_momentum`` holds its buffer).

Why detached, contiguous CPU tensors out and device tensors in: updates leave the learner to be
serialised (safetensors buffers on the wire, checkpoints on disk), and they come back from an
averaging step that ran on the CPU. The learner alone knows its device and dtype, so it does
the moving, in both directions, for ``cpu`` and ``cuda`` alike.

Why the data order is seeded per shard: a node's batches are a pure function of
``(seed, shard index, step)``, so a run is reproducible and two nodes never walk their shards
in lock step by accident.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from swarm_tune.runtime.protocol.moments import Moments
from swarm_tune.runtime.training.corpus import SHIPPED_CORPUS
from swarm_tune.runtime.training.data import (
    DataError,
    TokenShard,
    load_dataset_shard,
)
from swarm_tune.runtime.training.diloco import DiLoCoConfig, outer_delta
from swarm_tune.runtime.training.layer_shard import LayerShard, apply_layer_shard
from swarm_tune.runtime.training.learner import LocalResult, TensorDict, UpdateKind
from swarm_tune.runtime.training.lora import LoraSpec, apply_lora
from swarm_tune.runtime.training.models import TINY_MODELS, load_model, resolve_device
from swarm_tune.runtime.training.tokenizer import TextTokenizer, load_tokenizer

OptimizerName = Literal["adamw", "sgd"]
ParamSpec = dict[str, tuple[tuple[int, ...], torch.dtype]]


class LearnerStateError(ValueError):
    """An update or state handed to the learner does not match its parameters."""


@dataclass(frozen=True, slots=True)
class LearnerConfig:
    batch_size: int = 8
    local_steps: int = 1
    lr: float = 1e-3
    optimizer: OptimizerName = "adamw"
    weight_decay: float = 0.0
    eval_batches: int = 8
    seed: int = 0
    # DiLoCo (the optimizer above is then the inner one); None = one step per round.
    diloco: DiLoCoConfig | None = None


def _make_optimizer(params: list[torch.nn.Parameter], cfg: LearnerConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adamw, sgd)")


LabelPoison = Callable[[torch.Tensor, int], torch.Tensor]  # (targets, classes) -> targets


class HFLearner:
    """Implements ``swarm_tune.runtime.training.learner.Learner`` for a causal LM."""

    def __init__(
        self,
        model: torch.nn.Module,
        train: TokenShard,
        config: LearnerConfig,
        *,
        eval_data: TokenShard | None = None,
        device: str | torch.device = "cpu",
        model_name: str = "",
    ) -> None:
        if config.batch_size < 1 or config.local_steps < 1:
            raise ValueError("batch_size and local_steps must be >= 1")
        if len(train) == 0:
            raise ValueError("empty training shard")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.model.train()
        self.config = config
        self.model_name = model_name
        self.train_data = train
        self.eval_data = eval_data
        # named_parameters() de-duplicates tied weights (GPT-2's lm_head is wte): each shared
        # tensor is exchanged once, under its first name.
        self._params: dict[str, torch.nn.Parameter] = {
            n: p for n, p in self.model.named_parameters() if p.requires_grad
        }
        self.optimizer = _make_optimizer(list(self._params.values()), config)
        # DiLoCo's outer momentum, one buffer per parameter (identical on every replica that
        # applied the same averages); created at the first outer step.
        self.outer_momentum: dict[str, torch.Tensor] = {}
        self._gen = torch.Generator().manual_seed(
            (config.seed * 1_000_003 + train.index * 7919) % (2**63)
        )
        self._order = torch.randperm(len(train), generator=self._gen)
        self._cursor = 0
        self.epoch = 0
        self.steps_taken = 0  # optimizer steps applied (own or averaged)
        # Row indices of the micro-batches of the last compute_update (for replay/debugging).
        self.last_batch_indices: list[torch.Tensor] = []
        # Attack label_flip (runtime/adversary): how training targets are poisoned, if at all.
        self._poison: LabelPoison | None = None

    def poison_labels(self, poison: LabelPoison) -> None:
        """From now on train on ``poison(targets, vocab size)`` instead of the true next
        tokens (the attack's meaning lives in runtime/adversary, which training may not
        import); evaluation keeps the true labels."""
        self._poison = poison

    # ----------------------------------------------------------------- Learner protocol
    @property
    def dataset_size(self) -> int:
        return len(self.train_data)

    def parameters(self) -> TensorDict:
        return dict(self._params)

    def compute_update(self, kind: UpdateKind) -> LocalResult:
        if kind == "grad" and self.config.diloco is not None:
            return self._inner_phase(self.config.diloco)
        loss = self._accumulate_grads()
        samples = self.config.batch_size * self.config.local_steps
        if kind == "grad":
            update = {
                n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().cpu().clone()
                for n, p in self._params.items()
            }
            return LocalResult(update=update, loss=loss, samples=samples)
        if kind == "params":
            # No local step: stepping here would feed this node's own gradient into its
            # optimizer state alone, and replicas that average identically would then
            # diverge through their differing optimizer moments (see learner.py).
            self.optimizer.zero_grad(set_to_none=True)
            return LocalResult(update=self._cpu_params(), loss=loss, samples=samples)
        raise ValueError(f"unknown update kind {kind!r}")

    def apply_average(self, kind: UpdateKind, averaged: TensorDict) -> None:
        self._check(averaged)
        if kind == "grad" and self.config.diloco is not None:
            self._outer_step(self.config.diloco, averaged)
        elif kind == "grad":
            for n, p in self._params.items():
                p.grad = averaged[n].to(device=self.device, dtype=p.dtype).clone()
            self._step()
        elif kind == "params":
            self._copy_in(averaged)
        else:
            raise ValueError(f"unknown update kind {kind!r}")

    def load_state(self, params: TensorDict) -> None:
        self._check(params)
        self._copy_in(params)
        self.optimizer.zero_grad(set_to_none=True)

    def outer_state(self) -> TensorDict:
        return {n: b.detach().cpu().clone() for n, b in self.outer_momentum.items()}

    def load_outer_state(self, state: TensorDict) -> None:
        if not state:
            return
        self._check(state)
        self.outer_momentum = {
            n: t.to(device=self.device, dtype=torch.float32).clone() for n, t in state.items()
        }

    def moments(self) -> Moments | None:
        """AdamW's ``exp_avg`` / ``exp_avg_sq`` by parameter name (CPU copies) and its step
        count; None with SGD or before the first step (nothing worth sending)."""
        if not isinstance(self.optimizer, torch.optim.Adam | torch.optim.AdamW):
            return None
        states = [self.optimizer.state.get(p) for p in self._params.values()]
        if not all(states):
            return None
        m: TensorDict = {}
        v: TensorDict = {}
        steps: list[int] = []
        for (n, _), st in zip(self._params.items(), states, strict=True):
            assert st is not None
            m[n] = st["exp_avg"].detach().cpu().clone()
            v[n] = st["exp_avg_sq"].detach().cpu().clone()
            steps.append(int(st["step"]))
        return Moments(m, v, max(steps))

    @torch.no_grad()
    def load_moments(self, moments: Moments) -> None:
        """Replace AdamW's moments and step count (no-op with SGD)."""
        if not isinstance(self.optimizer, torch.optim.Adam | torch.optim.AdamW):
            return
        self._check(moments.exp_avg)
        self._check(moments.exp_avg_sq)
        for n, p in self._params.items():
            self.optimizer.state[p] = {
                # As torch's own lazy init makes it (a CPU float scalar unless capturable).
                "step": torch.tensor(float(moments.step), dtype=torch.float32),
                "exp_avg": moments.exp_avg[n].to(device=p.device, dtype=p.dtype).clone(),
                "exp_avg_sq": moments.exp_avg_sq[n].to(device=p.device, dtype=p.dtype).clone(),
            }

    @torch.no_grad()
    def evaluate(self) -> float:
        data = self.eval_data if self.eval_data is not None else self.train_data
        bs = self.config.batch_size
        n = min(len(data), bs * self.config.eval_batches)
        self.model.eval()
        try:
            total = 0.0
            rows = 0
            for start in range(0, n, bs):
                batch = data.input_ids[start : min(start + bs, n)].to(self.device)
                out = self.model(input_ids=batch, labels=batch)
                total += float(out.loss) * batch.shape[0]
                rows += int(batch.shape[0])
        finally:
            self.model.train()
        return total / rows if rows else math.nan

    # ----------------------------------------------------------------- helpers
    def spec(self) -> ParamSpec:
        """Names, shapes and dtypes of the exchanged parameters (checkpoint/state checks)."""
        return {n: (tuple(p.shape), p.dtype) for n, p in self._params.items()}

    def _cpu_params(self) -> TensorDict:
        return {n: p.detach().cpu().clone().contiguous() for n, p in self._params.items()}

    def _next_batch(self) -> torch.Tensor:
        bs = min(self.config.batch_size, len(self.train_data))
        if self._cursor + bs > len(self._order):
            self._order = torch.randperm(len(self.train_data), generator=self._gen)
            self._cursor = 0
            self.epoch += 1
        idx = self._order[self._cursor : self._cursor + bs]
        self._cursor += bs
        self.last_batch_indices.append(idx.clone())
        return self.train_data.input_ids[idx].to(self.device)

    def _accumulate_grads(self) -> float:
        """Mean loss over ``local_steps`` micro-batches; ``param.grad`` = mean gradient."""
        self.optimizer.zero_grad(set_to_none=True)
        self.last_batch_indices = []
        k = self.config.local_steps
        total = 0.0
        for _ in range(k):
            batch = self._next_batch()
            out: Any = self.model(input_ids=batch, labels=self._labels(batch))
            (out.loss / k).backward()
            total += float(out.loss.detach())
        return total / k

    def _labels(self, batch: torch.Tensor) -> torch.Tensor:
        if self._poison is None:
            return batch
        vocab: Any = getattr(self.model, "config", None)
        return self._poison(batch, int(vocab.vocab_size))

    def _inner_phase(self, cfg: DiLoCoConfig) -> LocalResult:
        """H real optimizer steps; returns start - end and puts the start parameters back
        (the outer step applies the swarm's average from there)."""
        start = self._cpu_params()
        total = 0.0
        for _ in range(cfg.inner_steps):
            total += self._accumulate_grads()
            self._step()
        end = self._cpu_params()
        self._copy_in(start)
        pseudo = {n: start[n] - end[n] for n in start}
        samples = self.config.batch_size * self.config.local_steps * cfg.inner_steps
        return LocalResult(update=pseudo, loss=total / cfg.inner_steps, samples=samples)

    @torch.no_grad()
    def _outer_step(self, cfg: DiLoCoConfig, averaged: TensorDict) -> None:
        for n, p in self._params.items():
            g = averaged[n].to(device=self.device, dtype=torch.float32)
            buf = self.outer_momentum.get(n)
            if buf is None and cfg.outer_momentum > 0:
                buf = self.outer_momentum[n] = torch.zeros_like(g)
            delta = outer_delta(cfg, g, buf)
            p.sub_(delta.to(p.dtype))
        self.steps_taken += 1

    def _step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.steps_taken += 1

    @torch.no_grad()
    def _copy_in(self, params: Mapping[str, torch.Tensor]) -> None:
        for n, p in self._params.items():
            p.copy_(params[n].to(device=self.device, dtype=p.dtype))

    def _check(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if tensors.keys() != self._params.keys():
            missing = sorted(self._params.keys() - tensors.keys())[:3]
            extra = sorted(tensors.keys() - self._params.keys())[:3]
            raise LearnerStateError(f"parameter names differ: missing {missing}, extra {extra}")
        for n, p in self._params.items():
            t = tensors[n]
            if tuple(t.shape) != tuple(p.shape):
                raise LearnerStateError(f"{n}: shape {tuple(t.shape)} != {tuple(p.shape)}")
            if not (t.is_floating_point() and torch.isfinite(t).all()):
                raise LearnerStateError(f"{n}: non-float or non-finite values")


def build_learner(
    model_name: str = "tiny-gpt2",
    data_source: str | Path = SHIPPED_CORPUS,
    num_shards: int = 1,
    shard_index: int = 0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    batch_size: int = 8,
    seq_len: int = 64,
    lr: float = 1e-3,
    local_steps: int = 1,
    *,
    tokenizer: str | TextTokenizer | None = None,
    eval_source: str | Path | None = None,
    optimizer: OptimizerName = "adamw",
    weight_decay: float = 0.0,
    eval_batches: int = 8,
    dtype: str | torch.dtype | None = None,
    diloco: DiLoCoConfig | None = None,
    text_column: str = "text",
    lora: LoraSpec | None = None,
    layer_shard: LayerShard | None = None,
) -> HFLearner:
    """Everything a node needs to learn, from names.

    ``tokenizer``: default is the shipped tokenizer for tiny models and the model's own
    tokenizer for hub models. ``eval_source``: default is the shipped held-out split for the
    shipped corpus, the ``validation`` split for a hub dataset, and none (training loss) for a
    local file or a hub dataset without that split. The held-out set is not sharded: every
    node evaluates on the same sequences. ``seed`` fixes model initialisation (same on every
    node) and, with the shard index, the data order.
    """
    tok: TextTokenizer
    if tokenizer is None:
        tok = load_tokenizer(None if model_name in TINY_MODELS else model_name)
    elif isinstance(tokenizer, str):
        tok = load_tokenizer(tokenizer)
    else:
        tok = tokenizer
    # The model first: a bad LoRA target or layer shard is refused before the data is read.
    model = load_model(
        model_name,
        device,
        dtype,
        seed=seed,
        vocab_size=tok.vocab_size,
        eos_token_id=tok.eos_id,
        max_positions=max(seq_len, 128),
    )
    if lora is not None:  # base frozen: only the adapters train and travel (lora.py)
        model = apply_lora(model, lora, seed=seed)
    if layer_shard is not None:  # other shards' blocks frozen: only this slice travels
        model = apply_layer_shard(model, layer_shard)
    col = text_column
    train = load_dataset_shard(data_source, num_shards, shard_index, tok, seq_len, text_column=col)
    eval_data: TokenShard | None = None
    src = str(data_source)
    if eval_source is not None:
        eval_data = load_dataset_shard(
            eval_source, 1, 0, tok, seq_len, split="validation", text_column=col
        )
    elif src == SHIPPED_CORPUS:
        eval_data = load_dataset_shard(src, 1, 0, tok, seq_len, split="validation")
    elif not Path(src).exists():
        try:  # many hub datasets have no validation split: evaluate on training data then
            eval_data = load_dataset_shard(
                src, 1, 0, tok, seq_len, split="validation", text_column=col
            )
        except DataError:
            eval_data = None
    cfg = LearnerConfig(
        batch_size=batch_size,
        local_steps=local_steps,
        lr=lr,
        optimizer=optimizer,
        weight_decay=weight_decay,
        eval_batches=eval_batches,
        seed=seed,
        diloco=diloco,
    )
    return HFLearner(model, train, cfg, eval_data=eval_data, device=device, model_name=model_name)
