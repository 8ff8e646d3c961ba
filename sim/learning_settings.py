"""What a scenario says about learning: the ``learning:`` block of the scenario YAML.

Why a separate, pydantic-validated block: the learning surrogate is the part of a scenario that
decides whether a run is *believable* (does the loss fall, do non-IID shards hurt, what does the
wire cost), so its knobs are spelled out and checked once, with a clear error naming the field,
before thousands of nodes are built. ``extra="forbid"`` turns a typo into an error instead of a
silently ignored knob.

Two modes share the block:

* ``surrogate`` — a small model (an embedding MLP) whose parameters for *all* nodes live in
  stacked tensors, trained for real on real data (the shipped TinyTales text for ``char-lm``, a
  teacher network's labels for ``classification``), batched across nodes.
* ``real`` — one Hugging Face causal LM per node through ``runtime.training.build_learner``
  (``model_name``: a built-in, a local ``save_pretrained`` folder or a hub name;
  ``data_source``/``text_column``/``seq_len``; ``lora`` for adapters only), for a few dozen
  nodes at most.

``virtual_payload_bytes`` lets a tiny model cost the wire time of a big one: the network model
charges that many bytes per contribution/state transfer instead of the real tensor bytes (times
the share of the model a node ships: its LoRA adapters, in real mode).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from swarm_tune.runtime.training.diloco import MAX_INNER_STEPS, DiLoCoConfig
from swarm_tune.runtime.training.lora import LoraSettings

LearningMode = Literal["surrogate", "real"]
LearningTask = Literal["char-lm", "classification"]
# classification inputs/labels: a teacher network's labels on N(0, I) inputs, or a Gaussian
# mixture (one isotropic cluster per class: the standard federated toy task, Flower's own).
DataGenerator = Literal["teacher", "gaussian-mixture"]
MAX_HIDDEN_LAYERS = 8
OptimizerKind = Literal["sgd", "adam"]

# Bytes of GPT-2 124M in fp16: the default "big model" a scenario pretends to ship.
GPT2_124M_FP16_BYTES = 248_000_000
MAX_REAL_NODES = 64


class DiLoCoSettings(BaseModel):
    """``learning.diloco``: H real sequential inner steps per round, then an outer Nesterov
    step on the averaged pseudo-gradient (runtime/training/diloco.py). Absent = per-step."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inner_steps: int = Field(default=1, ge=1, le=MAX_INNER_STEPS, description="H")
    outer_lr: float = Field(default=0.7, gt=0.0, le=10.0)
    outer_momentum: float = Field(default=0.9, ge=0.0, lt=1.0)

    def to_config(self) -> DiLoCoConfig:
        return DiLoCoConfig(self.inner_steps, self.outer_lr, self.outer_momentum)


class LearningSettings(BaseModel):
    """Validated learning configuration (embedded in the scenario YAML under ``learning:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: LearningMode = "surrogate"
    task: LearningTask = "char-lm"

    # Model (surrogate) ------------------------------------------------------------------
    # tanh hidden layers of width ``hidden``; 0 = a linear model (logistic regression).
    hidden_layers: int = Field(default=1, ge=0, le=MAX_HIDDEN_LAYERS)
    hidden: int = Field(default=32, ge=1, le=4096)
    embed: int = Field(default=8, ge=1, le=1024, description="char-lm: embedding width")
    context: int = Field(default=6, ge=1, le=64, description="char-lm: characters of context")
    features: int = Field(default=16, ge=1, le=4096, description="classification: input dims")
    classes: int = Field(default=8, ge=2, le=1024, description="classification: label count")
    generator: DataGenerator = "teacher"
    # gaussian-mixture: class means ~ N(0, separation^2 I), each sample mean + N(0, I).
    separation: float = Field(default=1.0, gt=0.0, le=100.0)

    # Optimisation -------------------------------------------------------------------------
    lr: float = Field(default=0.01, gt=0.0, le=100.0)
    batch_size: int = Field(default=16, ge=1, le=65_536)
    local_steps: int = Field(default=1, ge=1, le=1024)
    optimizer: OptimizerKind = "adam"
    # DiLoCo (the optimizer above is then the inner one); absent = one step per round.
    diloco: DiLoCoSettings | None = None
    # FedAvg with E local epochs: sugar for diloco {inner_steps: E * ceil(samples_per_node /
    # (batch_size * local_steps)), outer_lr: 1, outer_momentum: 0} (see _fedavg_epochs).
    local_epochs: int | None = Field(default=None, ge=1, le=1000)

    # Data -----------------------------------------------------------------------------------
    samples_per_node: int = Field(default=256, ge=1, le=1_000_000)
    # Lognormal sigma of per-node dataset sizes (0 = every node holds samples_per_node).
    size_spread: float = Field(default=0.0, ge=0.0, le=3.0)
    # Share of a node's samples drawn from its own "home" region (0 = IID, 1 = fully skewed):
    # a contiguous block of stories (char-lm) or two home classes (classification).
    non_iid: float = Field(default=0.0, ge=0.0, le=1.0)
    eval_samples: int = Field(default=512, ge=1, le=1_000_000)
    # classification: size of the shared sample pool shards index into.
    pool_size: int = Field(default=50_000, ge=16, le=10_000_000)

    # Wire -----------------------------------------------------------------------------------
    virtual_payload_bytes: int | None = Field(default=None, ge=1)

    # Real mode (runtime.training.build_learner) ---------------------------------------------
    model_name: str = "tiny-gpt2"
    data_source: str = "tinytales"
    # The text column of a table-shaped data_source (csv, json/jsonl, parquet, hub), as
    # SWARM_DATASET_TEXT_FIELD is for a node.
    text_column: str = Field(default="text", min_length=1)
    seq_len: int = Field(default=32, ge=2, le=8192)
    device: str = "cpu"
    lora: LoraSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _fedavg_epochs(cls, data: Any) -> Any:
        """``local_epochs`` -> the DiLoCo block of plain FedAvg (H local SGD steps, then the
        average applied as is: outer lr 1, no momentum). Why resolved here: every consumer
        (the batched learner, the round-timeout check, the recorder) reads ``diloco`` only."""
        if not isinstance(data, dict) or data.get("local_epochs") is None:
            return data
        epochs = data["local_epochs"]
        fields = cls.model_fields
        samples = data.get("samples_per_node", fields["samples_per_node"].default)
        batch = data.get("batch_size", fields["batch_size"].default)
        per_step = batch * data.get("local_steps", fields["local_steps"].default)
        ok = all(isinstance(v, int) and v >= 1 for v in (epochs, samples, per_step))
        if not ok:
            return data  # the field checks below name the bad one
        steps = epochs * -(-samples // per_step)
        fedavg = {"inner_steps": steps, "outer_lr": 1.0, "outer_momentum": 0.0}
        given = data.get("diloco")
        if given is not None:  # a resolved scenario carries both: they must agree
            if isinstance(given, DiLoCoSettings):
                given = given.model_dump()
            if not isinstance(given, dict) or {**fedavg, **given} != fedavg:
                raise ValueError(
                    f"local_epochs={epochs} means diloco {fedavg}; give one of the two"
                )
        return {**data, "diloco": fedavg}

    @model_validator(mode="after")
    def _coherent(self) -> LearningSettings:
        if self.lora is not None and self.mode != "real":
            raise ValueError("lora needs mode: real (the surrogate has no modules to adapt)")
        if self.samples_per_node < self.batch_size and self.mode == "surrogate":
            # Sampling is with replacement, so this works, but it is almost always a mistake.
            raise ValueError(
                f"samples_per_node ({self.samples_per_node}) < batch_size ({self.batch_size})"
            )
        return self
