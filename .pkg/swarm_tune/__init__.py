"""Swarm-Tune: decentralised fine-tuning over libp2p, proven first in simulation.

The repository's top-level folders (runtime/, sim/, analysis/) are mapped into this
namespace by symlinks in .pkg/swarm_tune so that nothing installs a bare top-level
``runtime``/``sim``/``analysis`` package into site-packages.
"""

__version__ = "0.1.0"
