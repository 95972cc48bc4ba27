"""``barcode-pipeline ingest`` as a real server (one and two processes on one port), real Kafka, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson
import pytest

from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings
from tests.drain_helpers import HeldRequest, Senders
from tests.ingest.conftest import TopicReader, free_port, scan

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).with_name("barcode-pipeline")
# Well above the server's produce timeout (5 s): a slow confirmation must come back as an answer
# (202, or the server's own 503), never as a client-side timeout.
CLIENT_TIMEOUT_S = 15


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base_url: str, port: int, log_path: Path) -> None:
        self.proc = proc
        self.base_url = base_url
        self.port = port
        self.log_path = log_path


@contextmanager
def running_server(
    settings: Settings, processes: int, log_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[Server]:
    """``barcode-pipeline ingest`` in its own session, ready (``/ready`` 200) when entered.

    ``free_port()`` can race with another process taking the port before the server binds it: a
    start that fails with "address already in use" is retried once on another port.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["BP_KAFKA_BOOTSTRAP"] = settings.kafka.bootstrap
    env["BP_DB_URL"] = settings.db.url  # where the scanner keys are
    env.update(extra_env or {})
    for attempt in range(2):
        port = free_port()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(CLI), "ingest", "--port", str(port), "--processes", str(processes)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base_url = f"http://127.0.0.1:{port}"
        try:
            if _wait_ready(proc, base_url, log_path, retry_bind=attempt == 0):
                yield Server(proc, base_url, port, log_path)
                return
        finally:
            _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log_path: Path, *, retry_bind: bool) -> bool:
    """True once ``/ready`` answers 200; False if the port was taken and a retry is allowed."""
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            output = log_path.read_text()
            if retry_bind and "address already in use" in output.lower():
                return False
            raise AssertionError(output)
        try:
            if httpx.get(f"{base_url}/ready", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server not ready in 30 s"
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
    with contextlib.suppress(ProcessLookupError):  # whatever is left of the session started above
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(params=[2, 1], ids=["2-processes", "1-process"])
def server(request: pytest.FixtureRequest, stack_settings: Settings, tmp_path: Path) -> Iterator[Server]:
    with running_server(stack_settings, request.param, tmp_path / "ingest.log") as running:
        yield running


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_real_server_serves_and_drains_on_sigterm(
    server: Server, stack_settings: Settings, ingest_key: str
) -> None:
    auth = client_headers(ingest_key)
    reader = TopicReader(stack_settings)
    reader.mark()
    sent: list[str] = []
    # Separate connections, so the kernel spreads them over both server processes.
    for _ in range(20):
        body = scan()
        response = httpx.post(
            f"{server.base_url}/ingest/barcode",
            content=orjson.dumps(body),
            timeout=CLIENT_TIMEOUT_S,
            headers=auth,
        )
        assert response.status_code == 202, response.text
        sent.append(body["scanId"])
    batch = [scan() for _ in range(10)]
    response = httpx.post(
        f"{server.base_url}/ingest/barcodes",
        content=orjson.dumps(batch),
        timeout=CLIENT_TIMEOUT_S,
        headers=auth,
    )
    assert response.json() == {"total": 10, "succeeded": 10, "failedIndices": []}
    sent += [item["scanId"] for item in batch]

    # Chunked oversize upload against the real HTTP stack.
    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b" " * 4096

    response = httpx.post(
        f"{server.base_url}/ingest/barcode", content=chunks(), timeout=CLIENT_TIMEOUT_S, headers=auth
    )
    assert response.status_code == 413
    # And an honest Content-Length over the limit is refused before the body is read.
    response = httpx.post(
        f"{server.base_url}/ingest/barcodes", content=b" " * (2 << 20), timeout=CLIENT_TIMEOUT_S, headers=auth
    )
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"

    # Metrics aggregate every process (multiprocess mode), whichever one answers the scrape.
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=CLIENT_TIMEOUT_S).text
    match = re.search(r"^bp_ingest_accepted_total (\S+)$", metrics, re.MULTILINE)
    assert match is not None, metrics
    assert float(match.group(1)) == 30

    assert set(sent) <= set(reader.read(want=set(sent)))
    reader.close()

    # SIGTERM with a request in flight (headers in, body half sent) and a client that keeps sending.
    reader = TopicReader(stack_settings)
    reader.mark()
    held = HeldRequest(server.port, scan(), headers=auth)
    senders = Senders(server.base_url, scan, headers=auth)
    senders.start()
    senders.wait_answers(1, timeout_s=30)  # SIGTERM only once the client is really sending
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 30
    while "Shutting down" not in server.log_path.read_text():  # the drain has begun
        assert time.monotonic() < deadline, "the server never started shutting down"
        time.sleep(0.05)
    reply = held.finish()  # the rest of the in-flight request, after the drain began
    assert reply.startswith(b"HTTP/1.1 202"), reply  # answered, not reset
    assert server.proc.wait(30) == 0
    senders.join(CLIENT_TIMEOUT_S + 5)
    assert senders.answered and {status for _, status in senders.answered} == {202}
    on_topic = set(reader.read())  # everything written since the mark, to the end of every partition
    reader.close()
    assert held.body["scanId"] in on_topic
    assert senders.acknowledged() <= on_topic
    # A request without an answer is acceptable only if the server never took it (it never reached
    # Kafka): one it accepted and then reset is an acknowledgement lost, the failure to catch here.
    assert not [f for f in senders.failed if f[0] in on_topic], senders.failed


def test_workers_stop_when_their_supervisor_is_killed(stack_settings: Settings, tmp_path: Path) -> None:
    """A SIGKILLed parent must not leave workers serving unsupervised and holding the port."""
    with running_server(stack_settings, 2, tmp_path / "ingest.log") as server:
        workers = [pid for pid in _children(server.proc.pid) if _running(pid)]
        assert len(workers) >= 2
        server.proc.kill()
        server.proc.wait(5)
        deadline = time.monotonic() + 15
        while any(_running(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)
        with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
            sock.connect(("127.0.0.1", server.port))
