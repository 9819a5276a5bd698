"""Shared fixtures: the real services the suite runs against.

- `redis_server` (session, automatic): a private redis-server; Django's cache
  (so django-ratelimit) and the Celery broker point at it. The cache is
  emptied before each test.
- `smtp_server`: a real SMTP server (aiosmtpd) collecting what it receives,
  with Django's EMAIL_* settings pointing at it.
- `celery_worker`: a real `celery -A newsroom worker` process on the same
  Redis, the same SMTP server and the same test database. Tests using it need
  `transactional_db`, so their rows are committed where the worker can see
  them; on SQLite the test database is therefore a file.

Nothing here sleeps for a fixed time: every wait polls a condition until a
deadline.
"""

import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support import free_port, start_redis, stop_group, wait_until

ROOT = Path(__file__).resolve().parent.parent


# Database


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """On SQLite, a test database in a file, not in memory, so a Celery worker
    process can open the same database."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        db.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")


def database_url(settings_dict):
    """A DATABASE_URL for the (test) database Django is connected to."""
    name = settings_dict["NAME"]
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{name}"
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if user else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{credentials}{host}{port}/{quote(name, safe='')}"


# Redis


class RedisURL(str):
    """The server's URL; .restart() kills and restarts the server."""


@pytest.fixture(scope="session", autouse=True)
def redis_server(tmp_path_factory):
    """A private redis-server for the whole run; yields its URL."""
    from celery import current_app
    from django.conf import settings
    from django.test import override_settings

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    url = RedisURL(f"redis://127.0.0.1:{port}")

    def start():
        url.process = start_redis(port, workdir)

    def restart():
        """Kill the server (losing every queued task, as a crash does) and
        start a new one on the same port."""
        url.process.kill()
        url.process.wait(timeout=10)
        start()

    start()
    url.restart = restart

    broker_url = f"{url}/0"
    # override_settings also resets Django's cache connections.
    overridden = override_settings(
        REDIS_URL=url,
        CACHES={
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"{url}/1",
                # As in the workers, which share this cache (the send journal).
                "KEY_PREFIX": settings.CACHES["default"].get("KEY_PREFIX", ""),
            }
        },
        CELERY_BROKER_URL=broker_url,
        CELERY_RESULT_BACKEND=f"{url}/2",
    )
    overridden.enable()
    old_broker, old_backend = current_app.conf.broker_url, current_app.conf.result_backend
    current_app.conf.broker_url = broker_url
    current_app.conf.result_backend = f"{url}/2"
    try:
        yield url
    finally:
        current_app.conf.broker_url, current_app.conf.result_backend = old_broker, old_backend
        overridden.disable()
        stop_group(url.process)


@pytest.fixture(autouse=True)
def _send_at_once(settings):
    """Posts are mailed as soon as they are announced. The production
    default waits a minute (the undo window); the tests of delivery, digests
    and the newsroom's publish path are about what is sent, and a worker
    process cannot be time-travelled, so only the tests of the window itself
    (tests/subscriptions/test_undo.py, the e2e journeys) set a delay."""
    settings.SUBSCRIPTIONS_SEND_DELAY = 0


@pytest.fixture(autouse=True)
def _empty_cache(redis_server):
    # Rate-limit counters must not leak from one test into the next.
    from django.core.cache import cache

    cache.clear()


# SMTP


class SMTPSink:
    """An aiosmtpd handler keeping every message it receives, parsed, and
    its bytes as they came (`message.raw`); `message.chunked` says whether
    they came by BDAT.

    `refuse` maps an address to [code, times]: its RCPT TO is answered with
    that code (e.g. 451 or 550) the next `times` times (None: always)."""

    def __init__(self):
        self.messages = []
        self.refuse = {}
        self.refused = []  # (address, code), in order
        self.refuse_data = {}  # address: code answered to its message's end of DATA
        self.delay = 0  # seconds before answering DATA: a slow server
        # aiosmtpd reads pipelined commands in order but does not say so in
        # EHLO; we do (RFC 2920), unless told not to. CHUNKING (RFC 3030,
        # BDAT) is ChunkingSMTP's, offered unless told not to.
        self.pipelining = True
        self.chunking = True
        self.ahead = []  # per MAIL FROM: whether its RCPT TO had arrived before the answer
        self.peers = set()  # the client connections seen
        self.sessions = set()  # the aiosmtpd sessions open (hang_up)
        self.noops = 0
        self.loop = None  # the server's event loop (set when it starts)
        self._changed = threading.Condition()

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.sessions.add(server)
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        if self.chunking:
            responses.insert(-1, "250-CHUNKING")
        return responses

    async def handle_NOOP(self, server, session, envelope, arg):
        self.noops += 1
        return "250 OK"

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        # What the client sent after MAIL FROM without waiting for its answer.
        buffered = bytes(getattr(server._reader, "_buffer", b"")).upper()
        self.ahead.append(b"RCPT TO" in buffered)
        self.peers.add(session.peer)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        rule = self.refuse.get(address)
        if rule and (rule[1] is None or rule[1] > 0):
            if rule[1] is not None:
                rule[1] -= 1
            self.refused.append((address, rule[0]))
            # Real servers echo the recipient in their refusals.
            text = "Try again later" if rule[0] < 500 else "No such mailbox"
            return f"{rule[0]} <{address}>: {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        for address in envelope.rcpt_tos:
            if address in self.refuse_data:
                return f"{self.refuse_data[address]} Message refused for now"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        message.raw = envelope.content
        message.chunked = getattr(envelope, "chunked", False)
        message.envelope_recipients = list(envelope.rcpt_tos)
        message.received_at = time.time()
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()
        return "250 Message accepted"

    def hang_up(self):
        """Close every session open, as a server does with idle ones: a
        client that kept a connection for later finds it gone (and opens
        one that hears what the server offers now)."""

        async def close():
            sessions, self.sessions = list(self.sessions), set()
            for server in sessions:
                if server.transport is not None:
                    server.transport.close()
            # Closed once aiosmtpd has seen the connection lost.
            deadline = time.monotonic() + 5
            while any(s.transport is not None for s in sessions) and time.monotonic() < deadline:
                await asyncio.sleep(0.001)

        if self.loop is not None:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)

    def clear(self):
        self.hang_up()
        with self._changed:
            self.messages.clear()
            self.refuse.clear()
            self.refused.clear()
            self.refuse_data.clear()
            self.delay = 0
            self.pipelining = True
            self.chunking = True
            self.noops = 0
            self.ahead.clear()
            self.peers.clear()

    def wait_for(self, count, timeout=30):
        """The messages, once at least `count` have arrived."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.messages) >= count, timeout):
                raise AssertionError(
                    f"Expected {count} messages within {timeout}s, got {len(self.messages)}."
                )
            return list(self.messages)

    def to(self, address):
        with self._changed:
            return [m for m in self.messages if address in m.envelope_recipients]


def chunking_controller(handler, **kwargs):
    """An aiosmtpd Controller whose server also speaks CHUNKING (RFC 3030),
    when `handler.chunking` says so: BDAT <size> [LAST] and then exactly
    <size> bytes, read whatever the answer (so none is ever read as a
    command). A BDAT that fails leaves the transaction as it was (the
    envelope kept), as a server may: only RSET clears it."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class ChunkingSMTP(SMTP):
        async def smtp_BDAT(self, arg):
            if not self.event_handler.chunking:
                await self.push('500 Error: command "BDAT" not recognized')
                return
            size, _, last = (arg or "").partition(" ")
            if not size.isdigit() or last.upper() not in ("", "LAST"):
                await self.push("501 Syntax: BDAT <size> [LAST]")
                return
            data = await self._reader.readexactly(int(size))
            if await self.check_helo_needed("EHLO"):
                return
            if not self.envelope.mail_from:
                await self.push("503 5.5.1 Error: need MAIL command")
                return
            if not self.envelope.rcpt_tos:
                await self.push("554 5.5.1 Error: no valid recipients")
                return
            chunks = getattr(self.envelope, "chunks", [])
            self.envelope.chunks = [*chunks, data]
            if not last:
                await self.push(f"250 2.0.0 {len(data)} bytes received")
                return
            self.envelope.content = self.envelope.original_content = b"".join(self.envelope.chunks)
            self.envelope.chunked = True
            status = await self._call_handler_hook("DATA")
            if status.startswith("250"):
                self._set_post_data_state()
            else:
                self.envelope.chunks = []
            await self.push(status)

    class ChunkingController(Controller):
        def factory(self):
            return ChunkingSMTP(self.handler, **self.SMTP_kwargs)

    return ChunkingController(handler, **kwargs)


@pytest.fixture(scope="session")
def _smtp_sink():
    import logging

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # One line per SMTP command.

    sink = SMTPSink()
    controller = chunking_controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.host, sink.port, sink.loop = controller.hostname, controller.port, controller.loop
    try:
        yield sink
    finally:
        controller.stop()


@pytest.fixture
def smtp_server(_smtp_sink, settings):
    """The SMTP server, emptied, with this process's Django sending to it;
    no connection an earlier test kept open (theirs or a worker's) is used
    again."""
    from subscriptions import transports

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = _smtp_sink.host
    settings.EMAIL_PORT = _smtp_sink.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    transports._kept.clear()  # connections an earlier test's batches kept open
    _smtp_sink.clear()
    return _smtp_sink


# Celery


class CeleryWorker:
    def __init__(self, name, log_path, command, env):
        self.name = name
        self.log_path = log_path
        self.command, self.env = command, env
        self.process = None

    def start(self):
        """Start the process; return once it has run a task."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self.drain(timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self):
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self, sig=signal.SIGTERM):
        """Stop the worker's process group: SIGTERM waits for it to finish
        its task; SIGKILL is a crash."""
        stop_group(self.process, sig, timeout=15)

    def drain(self, timeout=60):
        """Return once every task queued before this call has run.

        The worker runs one task at a time, in queue order, so when a marker
        task queued now has run, everything queued before it has too.
        """
        from celery import current_app

        assert self.process.poll() is None, f"The Celery worker died:\n{self.log()}"
        marker = current_app.send_task(
            "celery.accumulate",
            args=("drained",),
            kwargs={"index": 0},
            ignore_result=False,
            # Behind the tasks queued before it (beat's sweeps go first).
            priority=current_app.conf.task_default_priority,
        )

        # Poll the stored result rather than marker.get(): get() listens on a
        # Redis pub/sub connection that does not survive a Redis restart.
        def answered():
            return current_app.backend.get_task_meta(marker.id).get("status") == "SUCCESS"

        try:
            wait_until(answered, timeout=timeout, message="the marker task", interval=0.05)
        except TimeoutError as e:
            raise AssertionError(f"The Celery worker did not answer ({e!r}):\n{self.log()}") from e
        finally:
            marker.forget()


# What the workers of the suite use instead of the production defaults:
# retries after a fraction of a second, small batches.
WORKER_SETTINGS = {
    "SUBSCRIPTIONS_RETRY_BACKOFF": "0.2",
    "SUBSCRIPTIONS_BATCH_SIZE": "100",
    # As in this process (_send_at_once): a publication in the worker (beat's
    # publish_due_articles) is mailed at once.
    "SUBSCRIPTIONS_SEND_DELAY": "0",
}


def start_worker(name, log_dir, redis_url, smtp_sink, **extra_env):
    """A `celery -A newsroom worker` process on this Redis, this SMTP server
    and the test database; returns a CeleryWorker once it has run a task."""
    from django.conf import settings
    from django.db import connection

    log_path = log_dir / f"{name}.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "newsroom.settings",
        "SECRET_KEY": settings.SECRET_KEY,  # Links signed by the worker verify here.
        "DEBUG": os.environ.get("DEBUG", "false"),
        "REDIS_URL": redis_url,
        "EMAIL_URL": f"smtp://{smtp_sink.host}:{smtp_sink.port}",
        "DATABASE_URL": database_url(connection.settings_dict),
        "SITE_URL": settings.SITE_URL,
        "SITE_NAME": settings.SITE_NAME,
        "DEFAULT_FROM_EMAIL": settings.DEFAULT_FROM_EMAIL,
        **WORKER_SETTINGS,
        **extra_env,
    }
    command = [
        sys.executable, "-m", "celery", "-A", "newsroom", "--result-backend", f"{redis_url}/2",
        "worker", "--pool=solo", "--without-mingle", "--without-gossip", "--without-heartbeat",
        "--loglevel=INFO", "-n", f"{name}@localhost",
    ]  # fmt: skip
    return CeleryWorker(name, log_path, command, env).start()


@pytest.fixture(scope="session")
def _celery_worker_process(redis_server, _smtp_sink, django_db_setup, tmp_path_factory):
    worker = start_worker(
        f"pytest-{os.getpid()}", tmp_path_factory.mktemp("celery"), redis_server, _smtp_sink
    )
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def celery_worker(
    _celery_worker_process, smtp_server, django_db_serialized_rollback, transactional_db
):
    """A running Celery worker, with no task left over from earlier tests and
    an empty SMTP server. Call `celery_worker.drain()` before asserting that
    something was *not* sent.

    The flush after the test keeps what migrations created (serialized
    rollback): later tests rely on those rows."""
    from celery import current_app

    current_app.control.purge()
    _celery_worker_process.drain()
    smtp_server.clear()
    yield _celery_worker_process
    _celery_worker_process.drain()


@pytest.fixture
def start_worker_process(redis_server, _smtp_sink, celery_worker, tmp_path):
    """start_worker_process(name, **env): another Celery worker process beside
    `celery_worker`, stopped at the end of the test."""
    started = []

    def start(name, **env):
        worker = start_worker(name, tmp_path, redis_server, _smtp_sink, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
