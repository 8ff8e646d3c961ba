"""Real learning for thousands of virtual nodes: stacked parameters, batched steps.

Why stacked: the simulator's promise is that every virtual node's update comes from real
training on real data, and 10,000 separate ``nn.Module``s with their own optimisers would spend
all their time in Python. Here every parameter of every node lives in ONE tensor of shape
``[capacity, ...]``; a node is a row. Work is batched in three places:

* ``request`` + ``flush`` — all pending local steps run as one forward/backward over the rows
  that asked (``learning_model``), chunked to bound memory;
* ``apply_average`` — averaged updates are queued and applied together (one vectorised SGD or
  Adam step over all rows that received one) the next time anything reads those rows;
* ``eval_losses`` / ``divergence`` — vectorised over rows.

Why batching is not a semantic change: a node's micro-batches are a pure function of
``(seed, node index, its data cursor)`` via a counter-based hash (no shared generator whose
state depends on who else asked), and rows never interact, so the result of ``flush`` for a
node is the same whether it is flushed alone, with three others, or with ten thousand
(tests check bit equality).

Semantics match ``runtime/training/hf_learner.py`` (the ``Learner`` protocol):
``"grad"`` -> mean gradient over ``local_steps`` micro-batches, parameters unchanged (with
``diloco``: H real sequential inner steps, each on ``local_steps`` micro-batches, and the
pseudo-gradient start - end; ``apply_average("grad", g)`` is then the outer Nesterov step);
``"params"`` -> the current parameters, no optimizer step (the batch is still drawn and its
loss measured, so data order and loss curves do not depend on the round kind);
``apply_average("grad", g)`` steps the node's optimizer with ``g``; ``apply_average("params",
p)`` and ``load_state(p)`` load ``p`` (optimizer moments kept); ``load_moments`` replaces a
row's Adam moments and step count (state sync carries them, runtime/protocol/moments.py).

What the protocol sees is ONE tensor per node, ``PARAMS`` (the flat row): the named layers
(``named``) are an internal layout of the forward pass. Why: the core checks, flattens, judges
and averages updates per named tensor, and for a model this small those per-tensor calls (not
arithmetic) were most of the simulator's cost at 10,000 nodes; one tensor makes every update a
single row from the learner's output to the averaged row it applies.

Layer shards (``layer_shards`` > 1, runtime/training/layer_shard.py): the layers are cut by
the runtime's own ``owned`` (on transformer-style names, ``learning_model.block_names``) and
laid out shard by shard, so shard k's parameters are one column range of the row. A node of
shard k shows the protocol only that range (its ``PARAMS`` is the slice: its own, smaller
``ModelSpec``), takes optimizer steps on it only, and keeps the other columns at the shared
initial weights, exactly as a runtime node freezes the blocks it does not own. The
parameter-average model (``mean_eval_loss``, ``divergence``) is the assembled one that
``checkpoint reconstruct`` builds: each shard's columns averaged over that shard's nodes.

``mode: real`` delegates to per-node Hugging Face learners (``learning_real``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import blake3
import numpy as np
import torch

from swarm_tune.runtime.adversary.attacks import flip_labels
from swarm_tune.runtime.protocol.moments import Moments
from swarm_tune.runtime.protocol.tensors import (
    ModelSpec,
    Sketch,
    TensorDict,
    UpdateKind,
    param_digest,
    sample_coordinates,
)
from swarm_tune.runtime.training.diloco import outer_delta
from swarm_tune.runtime.training.layer_shard import LayerShard, owned
from swarm_tune.runtime.training.learner import Learner, LocalResult
from swarm_tune.sim.learning_data import Batch, TaskData, mix32, mix_int
from swarm_tune.sim.learning_model import (
    batched_accuracies,
    batched_losses,
    block_names,
    init_params,
)
from swarm_tune.sim.learning_settings import LearningSettings

__all__ = [
    "PARAMS",
    "BatchedLearning",
    "LearningError",
    "LearningSettings",
    "NodeLearner",
    "centralized_baseline",
]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
# Rows per forward/backward: bounds activation memory; results do not depend on it.
_CHUNK = 2048
PARAMS = "params"  # the one tensor a surrogate node exposes (see module doc)


class LearningError(ValueError):
    """Bad use of the learning surrogate (unknown node, mismatched tensors, double request)."""


class NodeLearner:
    """One node's view of a ``BatchedLearning``: implements the ``Learner`` protocol."""

    __slots__ = ("_owner", "node_index")

    def __init__(self, owner: BatchedLearning, node_index: int) -> None:
        self._owner = owner
        self.node_index = node_index

    @property
    def dataset_size(self) -> int:
        return self._owner.dataset_size(self.node_index)

    def parameters(self) -> TensorDict:
        return self._owner.parameters(self.node_index)

    def compute_update(self, kind: UpdateKind) -> LocalResult:
        return self._owner.compute_update(self.node_index, kind)

    def apply_average(self, kind: UpdateKind, averaged: TensorDict) -> None:
        self._owner.apply_average(self.node_index, kind, averaged)

    def load_state(self, params: TensorDict) -> None:
        self._owner.load_state(self.node_index, params)

    def outer_state(self) -> TensorDict:
        return self._owner.outer_state(self.node_index)

    def load_outer_state(self, state: TensorDict) -> None:
        self._owner.load_outer_state(self.node_index, state)

    def moments(self) -> Moments | None:
        return self._owner.moments(self.node_index)

    def load_moments(self, moments: Moments) -> None:
        self._owner.load_moments(self.node_index, moments)

    def evaluate(self) -> float:
        return self._owner.eval_losses([self.node_index])[0]


def _check_kind(kind: str) -> UpdateKind:
    if kind == "grad":
        return "grad"
    if kind == "params":
        return "params"
    raise LearningError(f"unknown update kind {kind!r} (grad, params)")


class BatchedLearning:
    """All nodes' models, data shards and optimizers, in stacked tensors (see module doc)."""

    def __init__(
        self,
        settings: LearningSettings,
        capacity: int,
        seed: int,
        layer_shards: int = 1,
        held: Sequence[int] | None = None,
    ) -> None:
        """``capacity`` node indices (and data shards); rows only for ``held`` of them (all by
        default): a partition of a partitioned run (sim/pdes_world.py) holds its own nodes'
        rows only, so the stacked state is split across partitions, not copied into each."""
        if capacity < 1:
            raise LearningError(f"capacity must be >= 1, got {capacity}")
        self.settings = settings
        self.capacity = capacity
        self.seed = seed
        self.layer_shards = layer_shards
        if settings.mode == "real":
            from swarm_tune.sim.learning_real import RealLearning

            self._real: RealLearning | None = RealLearning(settings, capacity, seed, layer_shards)
            self.spec: ModelSpec = self._real.spec
            return
        self._real = None
        # Node index -> its row (None: row = node index, the single world).
        self._row_of: dict[int, int] | None = None
        rows = capacity
        if held is not None:
            self._row_of = {i: r for r, i in enumerate(sorted(held))}
            rows = len(self._row_of)
        self.data = TaskData(settings, capacity, seed)
        init = init_params(settings, self.data.vocab, self.data.num_outputs, mix_int(seed, 7))
        owner = _layer_owners(list(init), layer_shards)
        # One flat row per node; each named parameter is a fixed column range of it, so every
        # optimizer/averaging/divergence operation is ONE tensor op over all rows. Layer shard
        # by layer shard (one shard: plain name order), so each shard's slice is one range.
        self._layout: list[tuple[str, int, int, tuple[int, ...]]] = []
        self._cols: list[tuple[int, int]] = []  # layer shard -> its column range
        offset = 0
        for name in sorted(init, key=lambda n: (owner[n], n)):
            if owner[name] == len(self._cols):
                self._cols.append((offset, offset))
            k = init[name].numel()
            self._layout.append((name, offset, k, tuple(init[name].shape)))
            offset += k
            self._cols[-1] = (self._cols[-1][0], offset)
        self.numel = offset
        self._init_row = torch.cat([init[name].reshape(-1) for name, *_ in self._layout])
        self.spec = ModelSpec.from_tensors({PARAMS: self._init_row})
        self._sliced = layer_shards > 1
        self._specs = [ModelSpec.from_tensors({PARAMS: self._init_row[a:b]}) for a, b in self._cols]
        self._layer = torch.zeros(rows, dtype=torch.int64)  # each row's layer shard
        self._layer_of = [0] * capacity  # the same, for per-node Python lookups
        self._mask = torch.zeros(layer_shards, offset)  # layer shard -> 1 on its columns
        for k, (a, b) in enumerate(self._cols):
            self._mask[k, a:b] = 1.0
        self._flat = torch.zeros(rows, offset)
        self._adam = settings.optimizer == "adam"
        self._m = torch.zeros(rows, offset) if self._adam else torch.zeros(0)
        self._v = torch.zeros(rows, offset) if self._adam else torch.zeros(0)
        self._steps = torch.zeros(rows, dtype=torch.int64)  # optimizer steps per node
        # DiLoCo: the optimizer above is the inner one; the outer momentum buffer is per row.
        self._diloco = settings.diloco.to_config() if settings.diloco is not None else None
        momentum = self._diloco is not None and self._diloco.outer_momentum > 0
        self._outer_b = torch.zeros(rows, offset) if momentum else torch.zeros(0)
        self._cursor = torch.zeros(rows, dtype=torch.int64)  # samples drawn per node
        self._keys = torch.zeros(rows, dtype=torch.int64)  # per-node data-order key
        self._sizes = torch.zeros(rows, dtype=torch.int64)
        self._poisoned = torch.zeros(rows, dtype=torch.bool)  # label_flip attackers
        self._shard_rows = torch.zeros(rows, self.data.max_shard_size, dtype=torch.int32)
        per_step = settings.batch_size * settings.local_steps
        self._per_step = per_step
        self._last_batch = torch.zeros(rows, per_step, dtype=torch.int64)
        self._views: dict[int, NodeLearner] = {}
        self._shard_of: dict[int, int] = {}
        self._pending: dict[int, UpdateKind] = {}
        self._applies: dict[int, tuple[UpdateKind, Mapping[str, torch.Tensor]]] = {}
        self._real_bytes = sum(t.numel() * t.element_size() for t in init.values())
        # param_digest's header for the one exported tensor (name|dtype|shape|), per shard.
        self._digest_headers = [
            f"{PARAMS}|{self._flat.dtype}|{(b - a,)}|".encode() for a, b in self._cols
        ]
        self._sketch_cols: dict[tuple[int, int, int], torch.Tensor] = {}

    def _r(self, node_index: int) -> int:
        """The node's row in the stacked tensors."""
        return node_index if self._row_of is None else self._row_of[node_index]

    def _idx(self, nodes: Sequence[int]) -> torch.Tensor:
        """The nodes' rows, as an index tensor."""
        row_of = self._row_of
        rows = nodes if row_of is None else [row_of[i] for i in nodes]
        return torch.tensor(rows, dtype=torch.int64)

    def _split(self, rows: torch.Tensor) -> TensorDict:
        """Named views of flat rows [n, numel] -> {name: [n, *shape]}."""
        n = rows.shape[0]
        return {name: rows[:, o : o + k].view(n, *shape) for name, o, k, shape in self._layout}

    def named(self, row: torch.Tensor) -> TensorDict:
        """The model's named layers as views of one flat row [numel] (e.g. a ``PARAMS``)."""
        return {name: row[o : o + k].view(shape) for name, o, k, shape in self._layout}

    def _cols_of(self, node_index: int) -> tuple[int, int]:
        """The node's column range: its layer shard's slice (the whole row with one shard)."""
        return self._cols[self._layer_of[node_index]]

    def _export_rows(self, nodes: Sequence[int], rows: torch.Tensor) -> list[TensorDict]:
        """What the protocol sees of each node's row of [n, numel]: ``{PARAMS: its slice}``
        (views)."""
        if not self._sliced:
            return [{PARAMS: row} for row in rows.unbind(0)]
        out: list[TensorDict] = []
        for node, row in zip(nodes, rows.unbind(0), strict=True):
            a, b = self._cols_of(node)
            out.append({PARAMS: row[a:b]})
        return out

    def _import_rows(
        self, nodes: Sequence[int], tensors: Sequence[Mapping[str, torch.Tensor]], base: str
    ) -> torch.Tensor:
        """Spec-checked ``{PARAMS: slice}`` dicts as flat rows [n, numel]; columns outside a
        node's slice are its current parameters (``base="params"``) or zero (``"grad"``: the
        optimizer then leaves them exactly where they are)."""
        if not self._sliced:
            return torch.stack([t[PARAMS] for t in tensors])
        idx = self._idx(list(nodes))
        full = (
            self._flat.index_select(0, idx)
            if base == "params"
            else torch.zeros(len(idx), self.numel)
        )
        for j, (node, t) in enumerate(zip(nodes, tensors, strict=True)):
            a, b = self._cols_of(node)
            full[j, a:b] = t[PARAMS]
        return full

    def _frozen_zeroed(self, idx: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """``grads`` [n, numel] with every column outside its row's layer shard zeroed."""
        if self._sliced:
            grads.mul_(self._mask.index_select(0, self._layer[idx]))
        return grads

    # ------------------------------------------------------------------------ nodes
    def add_node(self, node_index: int, shard: int, layer: LayerShard | None = None) -> Learner:
        """Create node ``node_index`` holding data shard ``shard`` and training layer shard
        ``layer`` (default: the whole model); returns its Learner view."""
        layer = layer if layer is not None else LayerShard()
        if layer.total != self.layer_shards:
            raise LearningError(
                f"layer shard {layer.index} of {layer.total} in a run of {self.layer_shards}"
            )
        if self._real is not None:
            return self._real.add_node(node_index, shard, layer)
        if not 0 <= node_index < self.capacity:
            raise LearningError(f"node index {node_index} outside [0, {self.capacity})")
        if self._row_of is not None and node_index not in self._row_of:
            raise LearningError(f"node {node_index} is not held here (another partition's)")
        if node_index in self._views:
            if self._shard_of[node_index] != shard or self._layer_of[node_index] != layer.index:
                raise LearningError(
                    f"node {node_index} already holds shard {self._shard_of[node_index]}"
                )
            return self._views[node_index]
        size = self.data.shard_size(shard)
        rows = self.data.shard_indices(shard, size)
        r = self._r(node_index)
        self._shard_rows[r, :size] = rows.to(torch.int32)
        self._sizes[r] = size
        self._keys[r] = mix_int(self.seed, 5, node_index)
        self._flat[r] = self._init_row
        self._layer[r] = layer.index
        self._layer_of[node_index] = layer.index
        view = NodeLearner(self, node_index)
        self._views[node_index] = view
        self._shard_of[node_index] = shard
        return view

    def _known(self, node_index: int) -> None:
        if node_index not in self._views:
            raise LearningError(f"unknown node {node_index} (add_node first)")

    def dataset_size(self, node_index: int) -> int:
        if self._real is not None:
            return self._real.dataset_size(node_index)
        self._known(node_index)
        return int(self._sizes[self._r(node_index)])

    def parameters(self, node_index: int) -> TensorDict:
        """Views into the stacked rows (no copy; callers must not mutate)."""
        if self._real is not None:
            return self._real.learner(node_index).parameters()
        self._known(node_index)
        self._settle([node_index])
        a, b = self._cols_of(node_index)
        return {PARAMS: self._flat[self._r(node_index), a:b]}

    def payload_bytes(self) -> int:
        """Bytes the network model charges per contribution or state transfer."""
        virtual = self.settings.virtual_payload_bytes
        if self._real is not None:  # LoRA: only the adapters' share of the model travels
            if virtual is None:
                return self._real.real_bytes
            return max(1, math.ceil(virtual * self._real.real_bytes / self._real.full_bytes))
        return virtual if virtual is not None else self._real_bytes

    def param_digest(self, node_index: int) -> str:
        return param_digest(self.parameters(node_index))

    def param_digests(self, node_indices: Sequence[int]) -> list[str]:
        """``tensors.param_digest`` for many nodes: the same BLAKE3 over the same bytes.

        Why batched: per node, ``param_digest`` costs a dozen small torch calls (views,
        ``contiguous``, ``numpy``) that dwarf the hashing; here the rows are gathered once and
        each node's tensors are hashed straight from one numpy byte view.
        """
        if self._real is not None:
            return [param_digest(self.parameters(i)) for i in node_indices]
        nodes = self._rows(node_indices)
        if not nodes:
            return []
        rows = self._flat.index_select(0, self._idx(nodes)).numpy()
        out: list[str] = []
        for node, row in zip(nodes, rows, strict=True):
            k = self._layer_of[node]
            a, b = self._cols[k]
            h = blake3.blake3(self._digest_headers[k])
            h.update(row[a:b].view(np.uint8).data)
            out.append(h.hexdigest())
        return out

    def param_sketches(self, node_indices: Sequence[int], size: int, seed: int) -> list[Sketch]:
        """``tensors.param_sketch`` for many nodes (same coordinates, same values), one gather."""
        if self._real is not None:
            return [
                tuple(sample_coordinates(self.parameters(i), size, seed).tolist())
                for i in node_indices
            ]
        nodes = self._rows(node_indices)
        if not nodes:
            return []
        idx = self._idx(nodes)
        if not self._sliced:
            cols = self._sketch_columns(0, size, seed)
            picked = self._flat.index_select(0, idx).index_select(1, cols).to(torch.float64)
            return [tuple(row) for row in picked.tolist()]
        rows = self._flat.index_select(0, idx)
        return [
            tuple(row.index_select(0, self._sketch_columns(self._layer_of[i], size, seed)).tolist())
            for i, row in zip(nodes, rows.to(torch.float64).unbind(0), strict=True)
        ]

    def _sketch_columns(self, layer: int, size: int, seed: int) -> torch.Tensor:
        """Flat-row columns of ``sample_coordinates``'s seeded coordinates over a layer
        shard's slice (cached)."""
        key = (layer, size, seed)
        cols = self._sketch_cols.get(key)
        if cols is None:
            # Ask the core's own sampler which coordinates it picks: a probe whose entries are
            # their flat-row column numbers (exact in float64) returns exactly those columns.
            a, b = self._cols[layer]
            probe = {PARAMS: torch.arange(a, b, dtype=torch.float64)}
            cols = sample_coordinates(probe, size, seed).to(torch.int64)
            self._sketch_cols[key] = cols
        return cols

    # ------------------------------------------------------------------ local steps
    def request(self, node_index: int, kind: UpdateKind) -> None:
        """Queue a local step for ``flush`` (the batched fast path)."""
        kind = _check_kind(kind)
        if self._real is not None:
            self._real.request(node_index, kind)
            return
        self._known(node_index)
        if node_index in self._pending:
            raise LearningError(f"node {node_index} already has a pending request")
        self._pending[node_index] = kind

    def flush(self) -> dict[int, LocalResult]:
        """Compute ALL pending requests together; node -> its result."""
        if self._real is not None:
            return self._real.flush()
        pending, self._pending = self._pending, {}
        if not pending:
            return {}
        self._settle(None)
        return self._compute(sorted(pending.items()))

    def compute_update(self, node_index: int, kind: UpdateKind) -> LocalResult:
        """One node's local step right now (the ``Learner`` path, e.g. via LearnerBridge)."""
        kind = _check_kind(kind)
        if self._real is not None:
            return self._real.learner(node_index).compute_update(kind)
        self._known(node_index)
        if node_index in self._pending:
            raise LearningError(f"node {node_index} has a pending request; flush() it")
        self._settle([node_index])
        return self._compute([(node_index, kind)])[node_index]

    def _compute(self, work: list[tuple[int, UpdateKind]]) -> dict[int, LocalResult]:
        out: dict[int, LocalResult] = {}
        if self._diloco is not None:
            inner = [(i, k) for i, k in work if k == "grad"]
            work = [(i, k) for i, k in work if k != "grad"]
            for start in range(0, len(inner), _CHUNK):
                out.update(self._inner_steps([i for i, _ in inner[start : start + _CHUNK]]))
        for start in range(0, len(work), _CHUNK):
            out.update(self._compute_chunk(work[start : start + _CHUNK]))
        return out

    def _inner_steps(self, nodes: list[int]) -> dict[int, LocalResult]:
        """DiLoCo's local phase for distinct rows: H real sequential optimizer steps each on a
        fresh batch, then pseudo-gradient = start - end; the rows go back to their start
        parameters (the outer step, applied with the swarm's average, starts from there)."""
        assert self._diloco is not None
        h = self._diloco.inner_steps
        idx = self._idx(nodes)
        start = self._flat.index_select(0, idx)
        loss_sum = torch.zeros(len(nodes), dtype=torch.float64)
        for _ in range(h):
            batch = self._batch(idx)
            leaf = self._flat.index_select(0, idx).requires_grad_()
            with torch.enable_grad():
                losses = batched_losses(self._split(leaf), batch)
                (grads,) = torch.autograd.grad(losses.sum(), [leaf])
            loss_sum += losses.detach().to(torch.float64)
            self._step(idx, self._frozen_zeroed(idx, grads))
        with torch.no_grad():
            delta = start - self._flat.index_select(0, idx)
            self._flat.index_copy_(0, idx, start)
        rows = self._export_rows(nodes, delta)
        means = (loss_sum / h).tolist()
        samples = self._per_step * h
        return {
            node: LocalResult(update=rows[pos], loss=means[pos], samples=samples)
            for pos, node in enumerate(nodes)
        }

    def poison_labels(self, node_index: int) -> None:
        """From now on node ``node_index`` trains on flipped targets (attack ``label_flip``)."""
        if self._real is not None:
            self._real.learner(node_index).poison_labels(flip_labels)
            return
        self._known(node_index)
        self._poisoned[self._r(node_index)] = True

    def _batch(self, idx: torch.Tensor) -> Batch:
        """The next batch of rows ``idx``; poisoned rows get flipped targets."""
        batch = self.data.batch(self._draw(idx))
        bad = self._poisoned[idx]
        if not bool(bad.any()):
            return batch
        flipped = flip_labels(batch.targets, self.data.num_outputs)
        return Batch(batch.inputs, torch.where(bad[:, None], flipped, batch.targets))

    def _draw(self, idx: torch.Tensor) -> torch.Tensor:
        """Pool indices of each row's next ``batch_size * local_steps`` samples; advances."""
        counters = self._cursor[idx][:, None] + torch.arange(self._per_step)
        h = mix32(self._keys[idx][:, None] + mix32(counters))
        slots = h % self._sizes[idx][:, None]
        rows = self._shard_rows[idx]
        self._cursor[idx] += self._per_step
        picked = torch.gather(rows, 1, slots).to(torch.int64)
        self._last_batch[idx] = picked
        return picked

    def _compute_chunk(self, work: list[tuple[int, UpdateKind]]) -> dict[int, LocalResult]:
        idx = self._idx([i for i, _ in work])
        batch = self._batch(idx)
        leaf = self._flat.index_select(0, idx).requires_grad_()
        with torch.enable_grad():
            losses = batched_losses(self._split(leaf), batch)
            (grads,) = torch.autograd.grad(losses.sum(), [leaf])
        loss_list = losses.detach().tolist()
        own = [pos for pos, (_, kind) in enumerate(work) if kind == "params"]
        # Parameter rounds take no local step (see runtime/training/learner.py): the rows
        # are a fresh copy of the current parameters.
        new_rows = self._flat.index_select(0, idx) if own else grads
        samples = self._per_step
        out: dict[int, LocalResult] = {}
        # Views of freshly computed rows: nothing the learner later mutates aliases them.
        nodes = [i for i, _ in work]
        as_grad = self._export_rows(nodes, grads) if len(own) < len(work) else []
        as_params = self._export_rows(nodes, new_rows) if own else []
        for pos, (node, kind) in enumerate(work):
            src = as_grad if kind == "grad" else as_params
            out[node] = LocalResult(update=src[pos], loss=loss_list[pos], samples=samples)
        return out

    # ---------------------------------------------------------------- optimizer
    @staticmethod
    def _as_range(idx: torch.Tensor) -> slice | None:
        """``idx`` as a slice when it is a sorted contiguous run (in-place fast path)."""
        n = int(idx.numel())
        if n == 0:
            return None
        first, last = int(idx[0]), int(idx[-1])
        if last - first + 1 == n and (n == 1 or bool((idx[1:] > idx[:-1]).all())):
            return slice(first, last + 1)
        return None

    @torch.no_grad()
    def _step(self, idx: torch.Tensor, grads: torch.Tensor) -> None:
        """One optimizer step for distinct rows ``idx`` with flat gradients [n, numel]."""
        lr = self.settings.lr
        run = self._as_range(idx)
        if not self._adam:
            if run is not None:
                self._flat[run].add_(grads, alpha=-lr)
            else:
                self._flat.index_add_(0, idx, grads, alpha=-lr)
            return
        b1, b2 = _ADAM_BETAS
        t = self._steps[idx] + 1
        self._steps[idx] = t
        tf = t.to(torch.float64)
        bc1 = 1.0 - torch.pow(torch.tensor(b1, dtype=torch.float64), tf)
        bc2 = 1.0 - torch.pow(torch.tensor(b2, dtype=torch.float64), tf)
        step_size = (lr / bc1).to(torch.float32).unsqueeze(1)
        inv_bc2_sqrt = (1.0 / torch.sqrt(bc2)).to(torch.float32).unsqueeze(1)
        if run is not None:
            m, v = self._m[run], self._v[run]
        else:
            m, v = self._m.index_select(0, idx), self._v.index_select(0, idx)
        m.lerp_(grads, 1 - b1)
        v.mul_(b2).addcmul_(grads, grads, value=1 - b2)
        if run is None:
            self._m.index_copy_(0, idx, m)
            self._v.index_copy_(0, idx, v)
        denom = v.sqrt().mul_(inv_bc2_sqrt).add_(_ADAM_EPS)
        delta = torch.div(m, denom).mul_(step_size)
        if run is not None:
            self._flat[run].sub_(delta)
        else:
            self._flat.index_add_(0, idx, delta, alpha=-1.0)

    # ---------------------------------------------------------------- averages
    def _check_tensors(self, node_index: int, tensors: Mapping[str, torch.Tensor]) -> None:
        reason = self._specs[self._layer_of[node_index]].mismatch(tensors)
        if reason is not None:
            raise LearningError(f"tensors do not match the model spec ({reason})")

    def apply_average(self, node_index: int, kind: UpdateKind, averaged: TensorDict) -> None:
        """Queue an averaged update (applied, batched, before anything reads the row).

        The caller hands ``averaged`` over: it must not mutate it afterwards.
        """
        kind = _check_kind(kind)
        if self._real is not None:
            self._real.learner(node_index).apply_average(kind, averaged)
            return
        self._known(node_index)
        self._check_tensors(node_index, averaged)
        if node_index in self._applies:
            self._settle([node_index])
        self._applies[node_index] = (kind, averaged)

    def load_state(self, node_index: int, params: TensorDict) -> None:
        if self._real is not None:
            self._real.learner(node_index).load_state(params)
            return
        self._known(node_index)
        self._check_tensors(node_index, params)
        self._settle([node_index])
        a, b = self._cols_of(node_index)
        with torch.no_grad():
            self._flat[self._r(node_index), a:b].copy_(params[PARAMS])

    def outer_state(self, node_index: int) -> TensorDict:
        """The node's DiLoCo momentum row (a copy), or {} when the run keeps none."""
        if self._real is not None:
            return self._real.learner(node_index).outer_state()
        self._known(node_index)
        if not self._outer_b.numel():
            return {}
        self._settle([node_index])
        a, b = self._cols_of(node_index)
        return {PARAMS: self._outer_b[self._r(node_index), a:b].clone()}

    def load_outer_state(self, node_index: int, state: TensorDict) -> None:
        if self._real is not None:
            self._real.learner(node_index).load_outer_state(state)
            return
        self._known(node_index)
        if not state or not self._outer_b.numel():
            return
        self._check_tensors(node_index, state)
        self._settle([node_index])
        a, b = self._cols_of(node_index)
        self._outer_b[self._r(node_index), a:b].copy_(state[PARAMS])

    def moments(self, node_index: int) -> Moments | None:
        """The row's Adam moments and step count (copies); None with SGD or before the first
        step, like the real learner (hf_learner.py): there is nothing worth sending yet."""
        if self._real is not None:
            return self._real.learner(node_index).moments()
        self._known(node_index)
        if not self._adam:
            return None
        self._settle([node_index])
        r = self._r(node_index)
        if not int(self._steps[r]):
            return None
        a, b = self._cols_of(node_index)
        return Moments(
            {PARAMS: self._m[r, a:b].clone()},
            {PARAMS: self._v[r, a:b].clone()},
            int(self._steps[r]),
        )

    def load_moments(self, node_index: int, moments: Moments) -> None:
        if self._real is not None:
            self._real.learner(node_index).load_moments(moments)
            return
        self._known(node_index)
        if not self._adam:
            return
        self._check_tensors(node_index, moments.exp_avg)
        self._check_tensors(node_index, moments.exp_avg_sq)
        self._settle([node_index])
        a, b = self._cols_of(node_index)
        r = self._r(node_index)
        self._m[r, a:b].copy_(moments.exp_avg[PARAMS])
        self._v[r, a:b].copy_(moments.exp_avg_sq[PARAMS])
        self._steps[r] = moments.step

    def settle(self) -> None:
        """Apply every queued average now (reads do this implicitly)."""
        if self._real is None:
            self._settle(None)

    @torch.no_grad()
    def _settle(self, nodes: Sequence[int] | None) -> None:
        if not self._applies:
            return
        if nodes is None:
            todo, self._applies = self._applies, {}
        else:
            todo = {i: self._applies.pop(i) for i in nodes if i in self._applies}
            if not todo:
                return
        for kind in ("params", "grad"):
            group = sorted(i for i, (k, _) in todo.items() if k == kind)
            if not group:
                continue
            idx = self._idx(group)
            rows = self._import_rows(group, [todo[i][1] for i in group], kind)
            if kind == "params":
                self._flat.index_copy_(0, idx, rows)
            elif self._diloco is not None:
                self._outer_step(idx, rows)
            else:
                self._step(idx, rows)

    @torch.no_grad()
    def _outer_step(self, idx: torch.Tensor, pseudo: torch.Tensor) -> None:
        """DiLoCo's outer step for distinct rows with averaged pseudo-gradients [n, numel]."""
        assert self._diloco is not None
        buf = self._outer_b.index_select(0, idx) if self._outer_b.numel() else None
        delta = outer_delta(self._diloco, pseudo, buf)
        if buf is not None:
            self._outer_b.index_copy_(0, idx, buf)
        self._flat.index_add_(0, idx, delta, alpha=-1.0)

    # ---------------------------------------------------------------- measurement
    def _rows(self, node_indices: Sequence[int]) -> list[int]:
        nodes = list(node_indices)
        for i in nodes:
            self._known(i)
        self._settle(nodes)
        return nodes

    @torch.no_grad()
    def eval_losses(self, node_indices: Sequence[int]) -> list[float]:
        """Held-out loss of each node's own parameters."""
        if self._real is not None:
            return self._real.eval_losses(node_indices)
        nodes = self._rows(node_indices)
        out: list[float] = []
        chunk = max(1, _CHUNK * self.settings.batch_size // max(1, self.settings.eval_samples))
        for start in range(0, len(nodes), chunk):
            idx = self._idx(nodes[start : start + chunk])
            out.extend(batched_losses(self._split(self._flat[idx]), self.data.eval).tolist())
        return out

    @torch.no_grad()
    def mean_params(self, node_indices: Sequence[int]) -> TensorDict:
        """Unweighted parameter average of the given nodes (fresh float32 tensors)."""
        if self._real is not None:
            return self._real.mean_params(node_indices)
        return {PARAMS: self._mean_row(node_indices).to(torch.float32)}

    def _chunks(self, node_indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The nodes' flat rows (copies) and layer shards, ``_CHUNK`` rows at a time; kept as
        a list because ``divergence`` walks them twice (an evaluation sample: small)."""
        nodes = self._rows(node_indices)
        if not nodes:
            raise LearningError("no nodes given")
        out = []
        for start in range(0, len(nodes), _CHUNK):
            idx = self._idx(nodes[start : start + _CHUNK])
            out.append((self._flat[idx], self._layer[idx]))
        return out

    def _mean_of(self, chunks: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """float64 mean of flat rows (float64: identical replicas average exactly).

        With layer shards, the assembled model: each shard's columns averaged over that
        shard's nodes (a shard none of them trains keeps the initial weights)."""
        total = torch.zeros(self.numel, dtype=torch.float64)
        counts = torch.zeros(self.numel, dtype=torch.float64)
        n = 0
        for rows, layers in chunks:
            n += rows.shape[0]
            if not self._sliced:
                total += rows.sum(dim=0, dtype=torch.float64)
                continue
            mask = self._mask.index_select(0, layers).to(torch.float64)
            total += (rows.to(torch.float64) * mask).sum(dim=0)
            counts += mask.sum(dim=0)
        if not self._sliced:
            return total / n
        init = self._init_row.to(torch.float64)
        return torch.where(counts > 0, total / counts.clamp(min=1.0), init)

    def _mean_row(self, node_indices: Sequence[int]) -> torch.Tensor:
        return self._mean_of(self._chunks(node_indices))

    @torch.no_grad()
    def mean_eval_loss(self, node_indices: Sequence[int]) -> float:
        """Held-out loss of the parameter-average model of the given nodes."""
        if self._real is not None:
            return self._real.eval_params(self._real.mean_params(node_indices))
        return self._mean_loss(self._mean_row(node_indices))

    def _mean_loss(self, mean64: torch.Tensor) -> float:
        row = mean64.to(torch.float32)
        return float(batched_losses(self._split(row.unsqueeze(0)), self.data.eval)[0])

    @torch.no_grad()
    def mean_eval_accuracy(self, node_indices: Sequence[int]) -> float:
        """Held-out accuracy (arg-max = target) of the parameter-average model; NaN in real
        mode (a causal LM's next-token accuracy is not what its runs are judged by)."""
        if self._real is not None:
            return math.nan
        return self._mean_accuracy(self._mean_row(node_indices))

    def _mean_accuracy(self, mean64: torch.Tensor) -> float:
        row = mean64.to(torch.float32)
        return float(batched_accuracies(self._split(row.unsqueeze(0)), self.data.eval)[0])

    @torch.no_grad()
    def divergence(self, node_indices: Sequence[int]) -> float:
        """Mean over nodes of ||p_i - mean|| / ||mean|| (true replica divergence; 0 = equal)."""
        if self._real is not None:
            return self._real.divergence(node_indices)
        chunks = self._chunks(node_indices)
        return self._divergence(chunks, self._mean_of(chunks))

    def _divergence(
        self, chunks: Sequence[tuple[torch.Tensor, torch.Tensor]], mean64: torch.Tensor
    ) -> float:
        scale = float(mean64.norm())
        # Identical replicas have an exact float64 mean, so the float32 difference is exactly 0.
        mean = mean64.to(torch.float32)
        total, n = 0.0, 0
        for rows, layers in chunks:
            n += rows.shape[0]
            diff = rows - mean
            if self._sliced:  # each node against its own shard's columns of the assembled mean
                diff.mul_(self._mask.index_select(0, layers))
            total += float(diff.norm(dim=1, dtype=torch.float64).sum())
        dist = total / n
        if scale == 0.0:
            return 0.0 if dist == 0.0 else math.inf
        return dist / scale

    @torch.no_grad()
    def eval_rows(self, rows: torch.Tensor) -> tuple[float, float, float]:
        """``mean_eval_loss``, ``mean_eval_accuracy`` and ``divergence`` of whole-model flat
        rows [n, numel] handed in (a partitioned run's sample, gathered from the partitions
        that hold it: no one partition holds every row)."""
        if self._real is not None or self._sliced:
            raise LearningError("eval_rows takes whole-model rows of the batched surrogate")
        zeros = torch.zeros(_CHUNK, dtype=torch.int64)
        chunks = [
            (rows[start : start + _CHUNK], zeros[: rows[start : start + _CHUNK].shape[0]])
            for start in range(0, rows.shape[0], _CHUNK)
        ]
        mean64 = self._mean_of(chunks)
        return (
            self._mean_loss(mean64),
            self._mean_accuracy(mean64),
            self._divergence(chunks, mean64),
        )

    def shard_samples(self, node_index: int) -> torch.Tensor:
        """Pool indices of the node's data shard (a copy)."""
        self._known(node_index)
        r = self._r(node_index)
        return self._shard_rows[r, : int(self._sizes[r])].to(torch.int64)

    def state_bytes(self) -> int:
        """Bytes held by the stacked per-node state (params, optimizer moments, shards)."""
        if self._real is not None:
            return self._real.real_bytes * (1 + 2 * self._adam_real()) * len(self._real.nodes())
        tensors = [self._flat, self._m, self._v, self._outer_b, self._shard_rows, self._last_batch]
        return sum(t.numel() * t.element_size() for t in tensors)

    def _adam_real(self) -> int:
        return 1 if self.settings.optimizer == "adam" else 0

    def last_batch(self, node_index: int) -> torch.Tensor:
        """Pool indices of the samples behind the node's last local step (tests, replay)."""
        self._known(node_index)
        return self._last_batch[self._r(node_index)].clone()


def _layer_owners(names: list[str], layer_shards: int) -> dict[str, int]:
    """Which layer shard owns each surrogate parameter (``names`` in model order), decided by
    the runtime's own ``owned`` on transformer-style names (``learning_model.block_names``)."""
    if layer_shards == 1:
        return dict.fromkeys(names, 0)
    as_block = block_names(names)
    blocks = [as_block[n] for n in names]
    out: dict[str, int] = {}
    for k in range(layer_shards):
        mine = owned(blocks, LayerShard(k, layer_shards))
        out.update((n, k) for n in names if as_block[n] in mine)
    return out


def centralized_baseline(
    settings: LearningSettings,
    num_nodes: int,
    rounds: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Held-out loss per round of one model trained on the UNION of the swarm's shards.

    Same model, data, optimizer and initial weights as the swarm; each round takes one
    optimizer step on ``num_nodes * batch_size * local_steps`` samples drawn from the union —
    the sample budget of one round of a swarm where every node contributes.
    """
    if num_nodes < 1 or rounds < 0:
        raise LearningError("num_nodes must be >= 1 and rounds >= 0")
    if settings.mode == "real":
        raise LearningError("centralized_baseline supports mode: surrogate only")
    swarm = BatchedLearning(settings, num_nodes, seed)
    union = swarm.data.union_indices(num_nodes)
    central = settings.model_copy(
        update={
            "batch_size": settings.batch_size * num_nodes,
            "samples_per_node": int(union.numel()),
            "size_spread": 0.0,
        }
    )
    model = BatchedLearning(central, 1, seed)
    model.add_node(0, 0)
    # Replace its shard by the union (same pool, same held-out set: same TaskData seed).
    model._shard_rows = union.to(torch.int32)[None, :]
    model._sizes[0] = int(union.numel())
    losses: list[float] = []
    for done in range(1, rounds + 1):
        model.request(0, "grad")
        model.apply_average(0, "grad", model.flush()[0].update)  # one plain optimizer step
        losses.append(model.eval_losses([0])[0])
        if progress is not None:
            progress(done, rounds)
    return losses
