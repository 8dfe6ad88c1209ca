"""StreamSense: real-time sentiment and risk classification on Kafka streams."""

__version__ = "0.1.0"
