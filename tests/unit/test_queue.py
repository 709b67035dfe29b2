"""The contract between listeners and workers: jobs named, not imported."""

from __future__ import annotations

import pickle

from rq.utils import import_attribute

from bot.runtime import jobs
from bot.runtime.queue import Job, StepExecution, UnfurlTarget


def test_every_job_a_listener_names_is_a_function_the_worker_runs() -> None:
    for job in Job:
        function = import_attribute(job.value)
        assert callable(function) and function is getattr(jobs, job.value.rsplit(".", 1)[-1])


def test_job_arguments_pickled_under_their_old_module_still_load() -> None:
    # Jobs in Redis from before the move name bot.runtime.jobs.StepExecution / UnfurlTarget.
    assert jobs.StepExecution is StepExecution and jobs.UnfurlTarget is UnfurlTarget
    old = pickle.dumps(StepExecution("Fx0", "xwfp"), protocol=0).replace(  # names as text
        b"bot.runtime.queue", b"bot.runtime.jobs")
    assert b"bot.runtime.jobs" in old
    assert pickle.loads(old) == StepExecution("Fx0", "xwfp")
