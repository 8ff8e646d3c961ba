"""Model/data loading, local training and the ``Learner`` interface the drivers use.

Submodules are light to import except ``hf_learner``/``models`` which pull in torch (and
``transformers`` lazily, on first model load).
"""

from swarm_tune.runtime.training.data import (
    SHIPPED_CORPUS,
    DataError,
    MissingHubDependencyError,
    TokenShard,
    load_dataset_shard,
    pack_documents,
    shard_bounds,
)
from swarm_tune.runtime.training.hf_learner import (
    HFLearner,
    LearnerConfig,
    LearnerStateError,
    ParamSpec,
    build_learner,
)
from swarm_tune.runtime.training.learner import Learner, LocalResult, TensorDict, UpdateKind
from swarm_tune.runtime.training.models import (
    TINY_MODELS,
    DeviceUnavailableError,
    ModelLoadError,
    load_model,
    resolve_device,
    resolve_dtype,
)
from swarm_tune.runtime.training.tokenizer import (
    LocalTokenizer,
    TextTokenizer,
    TokenizerError,
    load_tokenizer,
    train_bpe_tokenizer,
)

__all__ = [
    "SHIPPED_CORPUS",
    "TINY_MODELS",
    "DataError",
    "DeviceUnavailableError",
    "HFLearner",
    "Learner",
    "LearnerConfig",
    "LearnerStateError",
    "LocalResult",
    "LocalTokenizer",
    "MissingHubDependencyError",
    "ModelLoadError",
    "ParamSpec",
    "TensorDict",
    "TextTokenizer",
    "TokenShard",
    "TokenizerError",
    "UpdateKind",
    "build_learner",
    "load_dataset_shard",
    "load_model",
    "load_tokenizer",
    "pack_documents",
    "resolve_device",
    "resolve_dtype",
    "shard_bounds",
    "train_bpe_tokenizer",
]
