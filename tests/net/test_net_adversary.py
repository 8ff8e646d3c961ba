"""The real adversarial node crafts the update itself for group rounds (net/adversary.py):
its pieces are its contribution there, so a crafted Contribution alone would change nothing."""

from __future__ import annotations

import torch

from swarm_tune.runtime.net.adversary import Adversary
from swarm_tune.runtime.protocol.messages import Contribution


def test_craft_update_is_what_a_crafted_contribution_carries() -> None:
    update = {"w": torch.tensor([1.0, -2.0, 3.0])}
    flat_path = Adversary("sign_flip", 4.0).corrupt(Contribution(3, "grad", 10, update), 5)
    group_path = Adversary("sign_flip", 4.0).craft_update(3, "grad", update, 5)
    assert torch.equal(group_path["w"], torch.tensor([-4.0, 8.0, -12.0]))
    assert torch.equal(flat_path["w"], group_path["w"])
    assert torch.equal(update["w"], torch.tensor([1.0, -2.0, 3.0]))  # never modified
    honest = Adversary("none").craft_update(3, "grad", update, 5)
    assert honest is update
