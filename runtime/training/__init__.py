"""Model/data loading, local training and the ``Learner`` interface the drivers use.

Submodules are light to import except ``hf_learner``/``models`` which pull in torch (and
``transformers`` lazily, on first model load).

The names load on first use (runtime/lazy_exports.py): the scenario schema reads the
DiLoCo config from here and must not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarm_tune.runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from swarm_tune.runtime.training.corpus import SHIPPED_CORPUS
    from swarm_tune.runtime.training.data import (
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

# exported name -> the submodule that defines it
__getattr__ = lazy_exports(
    __name__,
    {
        "SHIPPED_CORPUS": "corpus",
        "DataError": "data",
        "MissingHubDependencyError": "data",
        "TokenShard": "data",
        "load_dataset_shard": "data",
        "pack_documents": "data",
        "shard_bounds": "data",
        "HFLearner": "hf_learner",
        "LearnerConfig": "hf_learner",
        "LearnerStateError": "hf_learner",
        "ParamSpec": "hf_learner",
        "build_learner": "hf_learner",
        "Learner": "learner",
        "LocalResult": "learner",
        "TensorDict": "learner",
        "UpdateKind": "learner",
        "TINY_MODELS": "models",
        "DeviceUnavailableError": "models",
        "ModelLoadError": "models",
        "load_model": "models",
        "resolve_device": "models",
        "resolve_dtype": "models",
        "LocalTokenizer": "tokenizer",
        "TextTokenizer": "tokenizer",
        "TokenizerError": "tokenizer",
        "load_tokenizer": "tokenizer",
        "train_bpe_tokenizer": "tokenizer",
    },
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
