"""``mode: real`` — one Hugging Face learner per virtual node, behind the batched API.

Why keep the same API: the SimPy driver is written once against ``BatchedLearning``
(request/flush, eval, divergence). In real mode there is nothing to batch — each node is a full
causal LM from ``runtime.training.build_learner`` (a tiny config-built model on the shipped
corpus by default, a hub model when named) — so ``flush`` simply runs the pending nodes one
after another in node order. That is only affordable for a few dozen nodes, which is the point:
real mode checks that what the surrogate shows also holds for the real trainer.

Layer shards: each node's learner is built with its ``LayerShard``, as a runtime node's is
(``build_learner(layer_shard=...)`` freezes what the shard does not own), so it trains and
exchanges its slice only. The parameter-average model is the assembled one, each parameter
averaged over the nodes that train it (a parameter none of them trains keeps its initial
value), which is what ``checkpoint reconstruct`` builds from the shards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from swarm_tune.runtime.protocol.tensors import ModelSpec, TensorDict, UpdateKind
from swarm_tune.runtime.training.data import DataError
from swarm_tune.runtime.training.hf_learner import HFLearner, OptimizerName, build_learner
from swarm_tune.runtime.training.layer_shard import LayerShard, LayerShardError
from swarm_tune.runtime.training.learner import LocalResult
from swarm_tune.runtime.training.lora import LoraError
from swarm_tune.runtime.training.models import ModelLoadError
from swarm_tune.runtime.training.tokenizer import TokenizerError
from swarm_tune.sim.learning_settings import MAX_REAL_NODES, LearningSettings


class RealLearningError(ValueError):
    """Real mode asked for something it cannot do (too many nodes, unknown node)."""


# What bad real-mode input raises, before the run writes anything (the CLI: one line, exit 2).
LEARNER_ERRORS = (
    RealLearningError,
    ModelLoadError,
    TokenizerError,
    DataError,
    LoraError,
    LayerShardError,
)


class RealLearning:
    def __init__(
        self, settings: LearningSettings, capacity: int, seed: int, layer_shards: int = 1
    ) -> None:
        if capacity > MAX_REAL_NODES:
            raise RealLearningError(
                f"mode: real supports at most {MAX_REAL_NODES} nodes, got capacity {capacity}"
            )
        self.settings = settings
        self.capacity = capacity
        self.seed = seed
        self._optimizer: OptimizerName = "adamw" if settings.optimizer == "adam" else "sgd"
        # A scratch learner: defines the (whole-model) spec and evaluates averaged parameters.
        self._probe = self._build(0, None)
        params = self._probe.parameters()
        self._init = {n: t.detach().to("cpu", torch.float64).clone() for n, t in params.items()}
        self.spec = ModelSpec.from_tensors(params)
        self.real_bytes = sum(t.numel() * t.element_size() for t in params.values())
        # The base model without adapters: what full fine-tuning would ship.
        self.full_bytes = sum(
            p.numel() * p.element_size()
            for n, p in self._probe.model.named_parameters()
            if ".lora_" not in n
        )
        self._learners: dict[int, HFLearner] = {}
        self._pending: dict[int, UpdateKind] = {}

    def _build(self, shard: int, layer: LayerShard | None) -> HFLearner:
        s = self.settings
        return build_learner(
            model_name=s.model_name,
            data_source=s.data_source,
            text_column=s.text_column,
            num_shards=self.capacity,
            shard_index=shard,
            device=s.device,
            seed=self.seed,
            batch_size=s.batch_size,
            seq_len=s.seq_len,
            lr=s.lr,
            local_steps=s.local_steps,
            optimizer=self._optimizer,
            diloco=s.diloco.to_config() if s.diloco is not None else None,
            lora=s.lora.to_spec() if s.lora is not None else None,
            layer_shard=layer if layer is not None and layer.total > 1 else None,
        )

    def add_node(self, node_index: int, shard: int, layer: LayerShard | None = None) -> HFLearner:
        if not 0 <= node_index < self.capacity:
            raise RealLearningError(f"node index {node_index} outside [0, {self.capacity})")
        if node_index not in self._learners:
            self._learners[node_index] = self._build(shard, layer)
        return self._learners[node_index]

    def nodes(self) -> list[int]:
        return sorted(self._learners)

    def learner(self, node_index: int) -> HFLearner:
        try:
            return self._learners[node_index]
        except KeyError:
            raise RealLearningError(f"unknown node {node_index} (add_node first)") from None

    def dataset_size(self, node_index: int) -> int:
        return self.learner(node_index).dataset_size

    def request(self, node_index: int, kind: UpdateKind) -> None:
        self.learner(node_index)
        if node_index in self._pending:
            raise RealLearningError(f"node {node_index} already has a pending request")
        self._pending[node_index] = kind

    def flush(self) -> dict[int, LocalResult]:
        pending, self._pending = self._pending, {}
        return {i: self.learner(i).compute_update(k) for i, k in sorted(pending.items())}

    def eval_losses(self, node_indices: Sequence[int]) -> list[float]:
        return [self.learner(i).evaluate() for i in node_indices]

    @torch.no_grad()
    def mean_params(self, node_indices: Sequence[int]) -> TensorDict:
        """Each parameter averaged over the nodes that train it (see the module doc)."""
        nodes = list(node_indices)
        if not nodes:
            raise RealLearningError("no nodes given")
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for i in nodes:
            for name, t in self.learner(i).parameters().items():
                acc = sums.get(name)
                f = t.detach().to("cpu", torch.float64)
                sums[name] = f.clone() if acc is None else acc.add_(f)
                counts[name] = counts.get(name, 0) + 1
        dtypes = {name: spec.dtype for name, spec in self.spec.tensors}
        return {
            n: (sums[n] / counts[n] if n in sums else self._init[n]).to(dtypes[n])
            for n in self._init
        }

    def eval_params(self, params: TensorDict) -> float:
        self._probe.load_state(params)
        return self._probe.evaluate()

    @torch.no_grad()
    def divergence(self, node_indices: Sequence[int]) -> float:
        nodes = list(node_indices)
        mean = {n: t.double() for n, t in self.mean_params(nodes).items()}
        scale = math.sqrt(sum(float((t * t).sum()) for t in mean.values()))
        total = 0.0
        for i in nodes:  # each node on the parameters it trains
            sq = 0.0
            for name, t in self.learner(i).parameters().items():
                d = t.detach().to("cpu", torch.float64) - mean[name]
                sq += float((d * d).sum())
            total += math.sqrt(sq)
        dist = total / len(nodes)
        if scale == 0.0:
            return 0.0 if dist == 0.0 else math.inf
        return dist / scale
