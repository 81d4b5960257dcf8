"""Broker security for real: mosquitto with TLS on certificates made here (verification on,
client certificates required) and with a mosquitto_passwd password file.

Secrets come from files; a refused password never shows up in a log line.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from conftest import need
from gearshift.observe.fleet import FleetModel
from gearshift.observe.mqtt import MqttFactSource
from gearshift.settings import MqttSettings, TlsSettings
from gearshift.sim.broker import start_mosquitto
from gearshift.wire.mqtt import client_for
from rigs import facts_payload, running, wait_until

PASSWORD = "s3cret-Pa55word!"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


class Ca:
    """A throw-away certificate authority."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .add_extension(x509.KeyUsage(
                         digital_signature=True, key_cert_sign=True, crl_sign=True,
                         content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, encipher_only=False,
                         decipher_only=False), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.pem = _write_cert(self.cert, directory / f"{name}.pem")

    def issue(self, name: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (x509.CertificateBuilder().subject_name(_name(name))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage(
                       [ExtendedKeyUsageOID.SERVER_AUTH if server
                        else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return (_write_cert(cert, self.directory / f"{name}.pem"),
                _write_key(key, self.directory / f"{name}.key"))


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A directory the broker can read: mosquitto started as root drops to its own user,
    which cannot enter pytest's private tmp_path. Test keys only; removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="gearshift-mqtt-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _share(*paths: Path) -> None:
    for path in paths:
        path.chmod(0o644)


def _mosquitto(directory: Path, extra: str) -> Iterator[int]:
    need("mosquitto")
    process, port = start_mosquitto(directory, extra_config=extra)
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def tls_broker(tmp_path: Path, readable_dir: Path) -> Iterator[tuple[int, Ca, Path]]:
    ca = Ca(readable_dir, "test-ca")
    cert, key = ca.issue("broker", server=True)
    _share(ca.pem, cert, key)
    extra = (f"cafile {ca.pem}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\n"
             f"tls_version tlsv1.2\n")
    for port in _mosquitto(tmp_path, extra):
        yield port, ca, tmp_path


async def _round_trip(settings: MqttSettings) -> FleetModel:
    fleet = FleetModel(stale_after=600)
    source = MqttFactSource(settings, fleet)
    async with running(source), client_for(settings) as publisher:
        await publisher.publish(f"{settings.prefix}/nodes/n1/facts",
                                facts_payload("n1", active=7, ts=time.time()), qos=1)
        await wait_until(lambda: len(fleet) == 1, what="facts over the secured broker")
    return fleet


async def _refused(settings: MqttSettings) -> list[dict[str, object]]:
    """Run a source that cannot get in; return what it logged."""
    source = MqttFactSource(settings, FleetModel(stale_after=600))
    with capture_logs() as logs:
        stop = asyncio.Event()
        task = asyncio.create_task(source.run(stop))
        await wait_until(lambda: len(source.delays) >= 2, what="two refused attempts")
        assert not source.connected.is_set() and not source.fleet.source_up
        stop.set()
        await asyncio.wait_for(task, 10)
    return [dict(entry) for entry in logs]


async def test_tls_with_client_certificates_and_verification(
        tls_broker: tuple[int, Ca, Path]) -> None:
    port, ca, _ = tls_broker
    cert, key = ca.issue("gearshift-daemon", server=False)
    settings = MqttSettings(host="127.0.0.1", port=port, prefix="gs/tls",
                            tls=TlsSettings(ca_file=ca.pem, cert_file=cert, key_file=key))
    assert settings.tls is not None and not settings.tls.insecure
    fleet = await _round_trip(settings)
    assert fleet.facts("n1").gears.active == 7  # type: ignore[union-attr]


async def test_tls_refuses_a_broker_signed_by_another_ca(tls_broker: tuple[int, Ca, Path]
                                                        ) -> None:
    port, ca, directory = tls_broker
    other = Ca(directory, "other-ca")
    cert, key = ca.issue("gearshift-daemon", server=False)
    settings = MqttSettings(host="127.0.0.1", port=port, prefix="gs/tls",
                            reconnect_min=0.1, reconnect_max=0.2, timeout=2,
                            tls=TlsSettings(ca_file=other.pem, cert_file=cert, key_file=key))
    logs = await _refused(settings)
    assert any("certificate verify failed" in str(e.get("error", "")) for e in logs)


@pytest.mark.slow  # ~4 s: waits out the refused TLS handshake
async def test_tls_broker_refuses_a_client_without_a_certificate(
        tls_broker: tuple[int, Ca, Path]) -> None:
    port, ca, _ = tls_broker
    settings = MqttSettings(host="127.0.0.1", port=port, prefix="gs/tls",
                            reconnect_min=0.1, reconnect_max=0.2, timeout=2, tls=TlsSettings(ca_file=ca.pem))
    await _refused(settings)


@pytest.fixture
def password_broker(tmp_path: Path, readable_dir: Path) -> Iterator[tuple[int, Path]]:
    passwd = need("mosquitto_passwd")
    users = readable_dir / "users"
    subprocess.run([passwd, "-b", "-c", str(users), "gearshift", PASSWORD], check=True,
                   capture_output=True)
    _share(users)
    assert PASSWORD not in users.read_text()  # hashed
    secret = tmp_path / "mqtt.password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    for port in _mosquitto(tmp_path, f"allow_anonymous false\npassword_file {users}\n"):
        yield port, secret


async def test_password_file_authenticates(password_broker: tuple[int, Path]) -> None:
    port, secret = password_broker
    settings = MqttSettings(host="127.0.0.1", port=port, prefix="gs/auth", username="gearshift",
                            password_file=secret)
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.model_dump_json()
    fleet = await _round_trip(settings)
    assert len(fleet) == 1


async def test_a_wrong_password_is_refused_and_never_logged(
        password_broker: tuple[int, Path], tmp_path: Path) -> None:
    port, _ = password_broker
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-" + PASSWORD)
    for settings in (
            MqttSettings(host="127.0.0.1", port=port, prefix="gs/auth", username="gearshift",
                         password_file=wrong, reconnect_min=0.1, reconnect_max=0.2, timeout=2),
            MqttSettings(host="127.0.0.1", port=port, prefix="gs/auth",  # anonymous
                         reconnect_min=0.1, reconnect_max=0.2, timeout=2, protocol="3.1.1")):
        logs = await _refused(settings)
        text = json.dumps(logs, default=str)
        assert PASSWORD not in text
        assert any("authoriz" in str(e.get("error", "")).lower()
                   or "password" in str(e.get("error", "")).lower() for e in logs), text
