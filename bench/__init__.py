"""Benchmarks of the bot against the project's performance targets (`python -m bench.run`)."""
