"""The Bolt app factory, the processes and the job engine: the web server, RQ jobs, queue and
workers, embedded Redis, waiting for Slack and Redis at start, dying with the parent."""
