"""What a cluster install turns on, through the real operator process: a mounted
certificate (MLJOB_TLS_CERT/KEY) replaced in place is served from the next connections on,
without a restart, and `--log-format=json` (the chart's `logFormat: json`) makes every line
the operator writes one JSON object with its severity and message."""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from devtools.controlplane import ControlPlane
from devtools.operatorproc import OperatorProcess
from mljob_operator.http.tls import self_signed
from tests.e2e.jobs import mljob, wait_state

DEADLINE_S = 30.0
NAMES = ("localhost", "127.0.0.1")


def install_pair(directory: Path, pair: tuple[bytes, bytes]) -> None:
    """Replace the pair the way a Secret volume does: new files renamed over the old."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in zip(("tls.crt", "tls.key"), pair, strict=True):
        staged = directory / f".{name}.new"
        staged.write_bytes(content)
        os.replace(staged, directory / name)


def served_certificate(port: int) -> bytes:
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as conn,
    ):
        cert = conn.getpeercert(binary_form=True)
    assert cert is not None
    return cert


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def log_records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(record, dict), line
        records.append(record)
    return records


@pytest.fixture
def operator(mljob_crd: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator serving the pair in <data dir>/tls (where OperatorProcess takes the CA
    from) as a mounted pair, logging JSON."""
    data = tmp_path / "data"
    install_pair(data / "tls", self_signed(NAMES))
    op = OperatorProcess(mljob_crd, data, tmp_path / "operator.log")
    try:
        yield op.start(
            namespace=namespace,
            args=("--log-format=json",),
            MLJOB_TLS_CERT=str(data / "tls" / "tls.crt"),
            MLJOB_TLS_KEY=str(data / "tls" / "tls.key"),
        )
    finally:
        op.stop()


def test_a_replaced_certificate_is_served_without_a_restart(
    operator: OperatorProcess, mljob_crd: ControlPlane, namespace: str
) -> None:
    first = operator.ca_file.read_bytes()
    assert served_certificate(operator.port) == der(first)
    pid = operator.proc.pid if operator.proc else None
    renewed = self_signed(NAMES)
    install_pair(operator.data_dir / "tls", renewed)
    deadline = time.monotonic() + DEADLINE_S
    while served_certificate(operator.port) != der(renewed[0]):
        assert time.monotonic() < deadline, "the renewed certificate was never served"
        time.sleep(0.2)
    status, document = operator.request("GET", "/openapi.json")  # verified against the new one
    assert status == 200
    assert "paths" in document
    assert operator.proc is not None
    assert operator.proc.pid == pid
    assert operator.proc.poll() is None


def test_json_logs_are_one_object_a_line(
    operator: OperatorProcess, mljob_crd: ControlPlane, namespace: str
) -> None:
    mljob_crd.kubectl("apply", "-n", namespace, "-f", "-", input=mljob("logged"))
    wait_state(mljob_crd, namespace, "logged", "opened")
    install_pair(operator.data_dir / "tls", self_signed(NAMES))
    deadline = time.monotonic() + DEADLINE_S
    while not any("reloaded" in r.get("message", "") for r in log_records(operator.log_path)):
        assert time.monotonic() < deadline, "no reload logged"
        served_certificate(operator.port)
        time.sleep(0.2)
    operator.stop()
    records = log_records(operator.log_path)
    assert len(records) >= 3
    for record in records:
        assert isinstance(record["message"], str), record
        assert record["severity"] in {"debug", "info", "warn", "error", "fatal"}, record
        assert "timestamp" in record, record
    about_the_job = [r for r in records if r.get("object", {}).get("name") == "logged"]
    assert about_the_job, "lines about a job carry it as `object`"
    assert about_the_job[0]["object"]["namespace"] == namespace
    reloads = [r for r in records if "reloaded" in r["message"]]
    assert reloads[0]["severity"] == "info"
