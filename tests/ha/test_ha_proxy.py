"""Behind the ha profile's HAProxy: a trusted network is the client's, never the balancer's or a header's.

An ingest on app host 1, firewalled as the app hosts are (its port answers the balancer only), trusts
the host namespace's address (the scanners' network) and believes X-Forwarded-For from the balancer.
A keyless scan from the trusted network through HAProxy is admitted; a client elsewhere (a broker's
namespace) that names the trusted address in its own X-Forwarded-For is not believed; nobody reaches
the app host around the balancer (the connection attempt is dropped, though the ingest listens).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from barcode_harness.settings import HarnessSettings
from barcode_harness.stack.ha import HaStackManager
from barcode_harness.stack.haproxy import HaProxy
from barcode_harness.stack.netns import NetNode, admit_only
from barcode_harness.stack.topology import Topology
from barcode_pipeline import names
from barcode_pipeline.config import settings_env
from barcode_pipeline.db import migrate
from tests.ingest.conftest import scan

pytestmark = pytest.mark.integration

# Run in a namespace: POST one scan, print the status; "dropped" when the connection attempt times
# out (a firewall's DROP), "refused" when nothing listens.
_POST = """
import sys, urllib.request, urllib.error
url, body, spoof = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
headers = {"Content-Type": "application/json", **({"X-Forwarded-For": spoof} if spoof else {})}
try:
    print(urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=3).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
except urllib.error.URLError as exc:
    print("dropped" if isinstance(exc.reason, TimeoutError) else "refused")
except TimeoutError:
    print("dropped")
"""


def _post_from(node: NetNode | None, url: str, body: dict[str, object], spoof: str = "") -> str:
    """The status of one keyless POST sent from ``node``'s namespace (None: the host's)."""
    argv = [sys.executable, "-c", _POST, url, orjson.dumps(body).decode(), spoof]
    prefix = node.exec_prefix() if node is not None else []
    done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_trusted_network_admits_its_scanner_through_haproxy_and_a_spoofed_header_is_not_believed(
    ha_stack: HaStackManager, ha_settings: HarnessSettings, tmp_path: Path
) -> None:
    topo = Topology(ha_settings.ha_subnet)
    app, balancer, elsewhere = topo.node("app", 1), topo.node("lb"), topo.node("k", 1)
    scanners = topo.host_ip  # where the scanners (and this test) are
    tag = f"PROXY{uuid.uuid4().hex[:6].upper()}"
    settings = ha_settings.updated(
        {
            "ingest_host": app.ip,
            "ingest_processes": 1,
            "ingest_proxies": balancer.ip,
            "ingest_trusted_networks": f"{scanners}/32={tag}-*",
        }
    )
    migrate.upgrade(settings.db.url)  # the key table: the guard loads it even with no key in use
    admit_only(app, settings.ingest.port, balancer.ip)
    log = (tmp_path / "ingest.log").open("w")
    env = {**os.environ, **settings_env(settings)}
    argv = [*app.exec_prefix(), sys.executable, "-m", "barcode_pipeline", "ingest"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lb = ha_stack.components["haproxy"]
    assert isinstance(lb, HaProxy)
    try:
        deadline = time.monotonic() + 60
        while lb.server_states().get(app.name) != "UP":
            assert proc.poll() is None, (tmp_path / "ingest.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"HAProxy never saw {app.name} UP: {lb.server_states()}"
            time.sleep(0.5)
        via_lb = f"http://{balancer.ip}:{settings.ingest.port}{names.ROUTE_SCAN}"
        direct = f"http://{app.ip}:{settings.ingest.port}{names.ROUTE_SCAN}"
        body = scan(deviceId=f"{tag}-PC-1")
        assert _post_from(None, via_lb, body) == "202"  # the balancer named the scanner's address
        # from a broker's address, claiming the scanners': HAProxy drops the header and names the sender
        assert _post_from(elsewhere, via_lb, body, spoof=scanners) == "401"
        assert _post_from(elsewhere, direct, body, spoof=scanners) == "dropped"  # not around it
        assert _post_from(None, direct, body) == "dropped"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
