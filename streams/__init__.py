"""Stream side of StreamSense: records, batching, the Faust app, sinks and alert rules."""
