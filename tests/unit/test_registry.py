"""The job registry: every job by the name RQ stores, each resolving to a function the worker
runs, and no job named anywhere but in the registry."""

from __future__ import annotations

import ast
import pickle
from datetime import date

from rq.utils import import_attribute

from bot.engine.queue import Reply, StepExecution
from bot.engine.registry import JOBS_MODULE, ON_FAILURE, Job
from bot.runtime import jobs
from bot.runtime import queue as old_queue
from testkit.env import ROOT


def test_every_registered_job_resolves_to_a_function_of_the_job_module() -> None:
    for job in Job:
        function = import_attribute(job.value)
        assert callable(function) and function is getattr(jobs, job.short_name), job
    assert callable(import_attribute(ON_FAILURE))


def test_every_registered_job_says_what_it_did_in_one_line() -> None:
    """Each runs through execution.logged_job, which writes the job's one line."""
    for job in Job:
        function = import_attribute(job.value)
        assert function.__code__.co_qualname == "logged_job.<locals>.job", job


def test_no_module_names_a_job_but_the_registry() -> None:
    """A job named by a string elsewhere would escape the check above."""
    named = []
    for path in [*ROOT.glob("bot/**/*.py"), *ROOT.glob("handlers/*.py")]:
        if path.name == "registry.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value.startswith(JOBS_MODULE + ".")):
                named.append(f"{path.relative_to(ROOT)}: {node.value}")
    assert named == []


def test_job_arguments_pickled_under_the_old_module_still_load_until_its_date() -> None:
    old = pickle.dumps(StepExecution("Fx0", "xwfp"), protocol=0).replace(  # names as text
        b"bot.engine.queue", b"bot.runtime.queue")
    assert b"bot.runtime.queue" in old
    assert pickle.loads(old) == StepExecution("Fx0", "xwfp")
    assert old_queue.Reply is Reply
    assert date.today() <= old_queue.REMOVE_AFTER, (
        "no job pickled before bot.engine.queue can be left: delete bot/runtime/queue.py "
        "and this test")
