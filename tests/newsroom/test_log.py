"""The worker's and beat's log: a routine task's every run is not logged,
what matters is."""

import logging
from types import SimpleNamespace

import pytest
from celery import beat
from celery.app import trace

from newsroom.celery import app


def run(task, runtime=0.01):
    """What Celery's worker logs for one run of `task`, as it logs it."""
    context = {"id": "a1", "name": task, "args": "()", "kwargs": "{}", "eta": None}
    logging.getLogger("celery.worker.strategy").info(trace.LOG_RECEIVED, context)
    trace.info(trace.LOG_SUCCESS, {**context, "runtime": runtime, "return_value": None})


def sent_by_beat(task):
    scheduler = beat.Scheduler(app, lazy=True)
    scheduler.apply_async = lambda entry, **kwargs: SimpleNamespace(id="a1")
    scheduler.apply_entry(beat.ScheduleEntry(name="entry", task=task, app=app))


@pytest.fixture
def logged(caplog):
    caplog.set_level(logging.INFO, logger="celery")
    return caplog


def test_each_run_of_the_sweep_leaves_no_line(logged):
    run("subscriptions.tasks.sweep")
    sent_by_beat("subscriptions.tasks.sweep")
    run("newsroom.tasks.publish_due_articles")
    assert logged.messages == []


def test_a_mailing_s_tasks_are_logged_as_celery_logs_them(logged):
    run("subscriptions.tasks.send_mailing_batch")
    sent_by_beat("subscriptions.tasks.make_digests")
    assert logged.messages == [
        "Task subscriptions.tasks.send_mailing_batch[a1] received",
        "Task subscriptions.tasks.send_mailing_batch[a1] succeeded in 0.01s: None",
        "Scheduler: Sending due task entry (subscriptions.tasks.make_digests)",
    ]


def test_a_sweep_that_fails_is_logged(logged):
    trace.logger.error(
        trace.LOG_FAILURE,
        {"id": "a1", "name": "subscriptions.tasks.sweep", "description": "raised", "exc": "boom"},
    )
    assert logged.messages == ["Task subscriptions.tasks.sweep[a1] raised: boom"]
