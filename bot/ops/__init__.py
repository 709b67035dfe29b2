"""The operator's tools: doctor, metrics, logs and the jobs report."""
