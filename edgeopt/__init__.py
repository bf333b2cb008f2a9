"""edgeopt: turn a trained model into the best edge-deployable variant."""

__version__ = "0.1.0"
