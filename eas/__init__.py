"""eas: a self-hosted elastic model serving platform that speaks PAI-EAS."""

__version__ = "0.1.0"
