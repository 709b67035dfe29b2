"""Stand-ins for Slack and process helpers shared by the tests and the benchmark (bench/).

Nothing here imports tests/ or bench/: both import this.
"""
