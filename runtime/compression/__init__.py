"""Compressed updates: codecs named on the wire, error feedback, model-level helpers.

See ``codecs.py`` for the codec grammar and error bounds, ``feedback.py`` for why a residual,
``update.py`` for where compression sits between a learner and the protocol core (import it
from there: it depends on the protocol's tensor specs, and the core depends on this package,
so this ``__init__`` stays free of it to keep imports acyclic).
"""

from swarm_tune.runtime.compression.codecs import Codec, CompressionError, Encoded, parse_codec
from swarm_tune.runtime.compression.feedback import ErrorFeedback

__all__ = ["Codec", "CompressionError", "Encoded", "ErrorFeedback", "parse_codec"]
