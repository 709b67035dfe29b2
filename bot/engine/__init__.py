"""The job engine's contract: every job by name, and the queue listeners put work on."""
