"""The truth a fake root carries (``truth.json``): enough to rebuild its machine exactly."""

from __future__ import annotations

import json
import os
from typing import Tuple

from emulator.machine import Machine

TRUTH = "truth.json"


def load_truth(root: str) -> Tuple[Machine, dict]:
    """Rebuild the machine a root was written from (the truth) and return its record."""
    with open(os.path.join(root, TRUTH)) as handle:
        truth = json.load(handle)
    params = truth["emulator"]
    machine = Machine(seed=params["seed"], ram_size=params["ram_size"],
                      page_size=params["page_size"], release=params["release"])
    if [[r.start, r.end] for r in machine.ram] != truth["ram"]:
        raise ValueError(f"{root}: truth.json does not match the emulator's layout for its seed")
    return machine, truth
