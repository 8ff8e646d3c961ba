"""Real checkpoints for the evaluation tests: tiny GPT-2 trained for a few steps on two shards.

Session-scoped because training is the expensive part (a few seconds on a CPU); every test that
writes creates its own output folder, and the bad-input tests hash the whole tree to prove
nothing here is touched.
"""

from __future__ import annotations

import pytest
import torch
from ops_eval_helpers import RUN, STEPS, Trained

from swarm_tune.runtime.ops.checkpoint import save_checkpoint
from swarm_tune.runtime.training import build_learner


def _cpu(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().cpu().clone() for n, t in params.items()}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("ops_eval")
    node_dirs = (root / "swarm" / "n0", root / "swarm" / "n1")
    finals: list[dict[str, torch.Tensor]] = []
    init: dict[str, torch.Tensor] = {}
    for i, d in enumerate(node_dirs):
        learner = build_learner("tiny-gpt2", num_shards=2, shard_index=i, seed=0, lr=3e-3)
        extra = {"node_id": f"{RUN}-n{i}", "dataset": "tinytales"}
        init = _cpu(learner.parameters())
        save_checkpoint(d, RUN, 0, init, "tiny-gpt2", extra, keep=None)
        for step in range(1, STEPS + 1):
            learner.apply_average("grad", learner.compute_update("grad").update)
            if i == 1 and step == 2:
                save_checkpoint(root / "blue", "cup-blue", 2, learner.parameters(), "tiny-gpt2")
        final = _cpu(learner.parameters())
        save_checkpoint(d, RUN, STEPS, final, "tiny-gpt2", extra, keep=None)
        if i == 0:
            save_checkpoint(root / "red", "cup-red", STEPS, final, "tiny-gpt2")
        finals.append(final)
    return Trained(root, node_dirs, init, (finals[0], finals[1]), root / "red", root / "blue")
