"""The chaos tests' name for the package's throwaway WAN (sim/netns_wan.py): sim-to-real
calibration (``swarm-tune sim calibrate``) builds the same one, so it lives in the package."""

from swarm_tune.sim.netns_wan import Wan, sh

__all__ = ["Wan", "sh"]
