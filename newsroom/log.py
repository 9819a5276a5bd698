"""Logging for the site's processes."""

import logging

from celery.app import trace

# What Celery logs at INFO for each run of a task, by logger: the worker
# received it, it succeeded, beat sent it.
ROUTINE = {
    "celery.worker.strategy": trace.LOG_RECEIVED,
    "celery.app.trace": trace.LOG_SUCCESS,
    "celery.beat": "Scheduler: Sending due task %s (%s)",
}


class QuietRoutineTasks(logging.Filter):
    """Drops the lines Celery logs for each run of a routine task (received,
    succeeded, sent by beat): a sweep every three seconds would otherwise
    bury what the processes have to say. Its retries, failures and errors,
    and every line about other tasks, pass."""

    def __init__(self, tasks=()):
        super().__init__()
        self.tasks = frozenset(tasks)

    def filter(self, record):
        if record.msg != ROUTINE.get(record.name):
            return True
        # The worker's lines pass a dict holding the task's name; beat's
        # pass (entry name, task name).
        args = record.args
        name = args.get("name") if isinstance(args, dict) else args[-1]
        return name not in self.tasks
