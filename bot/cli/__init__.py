"""The operator's commands: doctor, the jobs report, the audit export (python -m bot ...)."""
