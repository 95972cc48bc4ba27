"""Direct TLS on the ingest port (``BP_INGEST_TLS_CERT`` / ``BP_INGEST_TLS_KEY``), as a real server."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from barcode_pipeline.auth.keys import client_headers
from barcode_pipeline.config import Settings, load_settings
from barcode_pipeline.errors import ConfigError
from tests.ingest.conftest import TopicReader, free_port, scan
from tests.ingest.test_server import _stop
from tests.tls_helpers import make_pki

CLI = Path(sys.executable).with_name("barcode-pipeline")


def test_tls_settings_come_in_pairs_of_existing_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = make_pki(tmp_path)
    monkeypatch.setenv("BP_INGEST_TLS_CERT", str(pki.server_cert))
    with pytest.raises(ConfigError, match="set both or neither"):
        load_settings()
    monkeypatch.setenv("BP_INGEST_TLS_KEY", str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()
    monkeypatch.setenv("BP_INGEST_TLS_KEY", str(pki.server_key))
    assert load_settings().ingest.tls_key == pki.server_key


@pytest.mark.integration
def test_ingest_serves_https_only(stack_settings: Settings, ingest_key: str, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BP_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env |= {
        "BP_KAFKA_BOOTSTRAP": stack_settings.kafka.bootstrap,
        "BP_DB_URL": stack_settings.db.url,
        "BP_INGEST_TLS_CERT": str(pki.server_cert),
        "BP_INGEST_TLS_KEY": str(pki.server_key),
    }
    log_path = tmp_path / "ingest.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(CLI), "ingest", "--port", str(port), "--processes", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(pki.ca_cert))
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/ready", verify=trusted, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        reader = TopicReader(stack_settings)
        reader.mark()
        body = scan()
        with httpx.Client(
            base_url=base, verify=trusted, headers=client_headers(ingest_key), timeout=15
        ) as client:
            response = client.post("/ingest/barcode", content=orjson.dumps(body))
            assert response.status_code == 202, response.text
            assert client.post("/ingest/barcodes", content=orjson.dumps([scan(), scan()])).status_code == 200
        assert body["scanId"] in reader.read(want={body["scanId"]})
        reader.close()
        # Plain HTTP on the TLS port gets no answer, and a client that does not trust the CA refuses it.
        with pytest.raises(httpx.TransportError):
            httpx.post(f"http://127.0.0.1:{port}/ingest/barcode", content=orjson.dumps(scan()), timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/health", timeout=5)
        assert f"listening on https://127.0.0.1:{port}" in log_path.read_text()
    finally:
        _stop(proc)
