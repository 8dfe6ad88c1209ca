"""Model runtime, registry and training for StreamSense."""
