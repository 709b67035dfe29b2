"""Telemetry every layer uses: Prometheus metrics and the log format."""
