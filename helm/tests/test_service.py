"""The rendered configuration starts the real service.

For each value set, the settings ConfigMap becomes the environment and the
processors ConfigMap the processors file of a real `dsr-orchestrator`
process (on SQLite in a temporary directory), which must load them, answer
/readyz and stop cleanly on SIGTERM. This proves the service's own parsers
accept what the chart writes (durations, enums, numbers, the processors
file's shape and quoting). The compliance ConfigMap, where a value set has
one, becomes local files too: the policy, and the holidays files its
calendars point at.

The gRPC listener binds 0.0.0.0 (on a free port) as it does in the pod, so
the server applies its rules for a listener beyond loopback: it starts only
with principals from the auth file or with DSR_INSECURE_NO_AUTH, and only
with the keys file that seals personal data (it makes no development key
there). Every Secret the pod mounts becomes a local directory holding what
an operator would put in that Secret (an auth file, a keys file, certificates
and keys made here, a JWKS), and the settings and the processors file's paths into those
mounts are translated to the local directories; a setting that names a
file the Secret would not hold fails the test. With TLS on, a handshake
checks the gRPC port serves the Secret's certificate and, with client
certificates on, turns away a client without one.

Needs a built binary: DSR_BINARY names one; otherwise the newest of debug/
and release/ in cargo's target directory, which is CARGO_TARGET_DIR (relative
to the repository root) when set, else what `cargo metadata` says, else
./target. Skipped, saying where it looked, when there is none.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import FULLNAME, NAMESPACE, REPO, SCENARIOS, Rendered


NAME = "dsr-orchestrator"


def target_directories() -> tuple[list[Path], list[str]]:
    """Where cargo may have put its builds, most likely first, and notes on
    the places that could not be asked."""
    dirs: list[Path] = []
    notes: list[str] = []
    if os.environ.get("CARGO_TARGET_DIR"):
        # A relative one is taken from the repository root, where cargo is
        # run for this repository.
        dirs.append(REPO / os.environ["CARGO_TARGET_DIR"])
    if shutil.which("cargo"):
        # Knows build.target-dir from .cargo/config.toml as well.
        try:
            out = subprocess.run(
                ["cargo", "metadata", "--format-version", "1", "--no-deps"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
            dirs.append(Path(json.loads(out)["target_directory"]))
        except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
            notes.append(f"`cargo metadata` failed: {e}")
    else:
        notes.append("cargo is not on PATH, so its target directory was not asked")
    dirs.append(REPO / "target")
    unique: list[Path] = []
    for d in dirs:
        if d.resolve() not in (u.resolve() for u in unique):
            unique.append(d)
    return unique, notes


def find_binary() -> tuple[Path | None, str]:
    """The binary to start, or None and why there is none."""
    if os.environ.get("DSR_BINARY"):
        return Path(os.environ["DSR_BINARY"]), ""
    dirs, notes = target_directories()
    for d in dirs:
        found = [p for p in (d / profile / NAME for profile in ("debug", "release")) if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime), ""
    looked = ", ".join(f"{d}/{{debug,release}}/{NAME}" for d in dirs)
    return None, (
        f"no {NAME} binary: looked in {looked}"
        + "".join(f"; {n}" for n in notes)
        + ". Build it with `cargo build`, or set DSR_BINARY to the path of one."
    )


BINARY, NO_BINARY = find_binary()
needs_binary = pytest.mark.skipif(BINARY is None, reason=NO_BINARY)

ADMIN = re.compile(r'admin\W+(127\.0\.0\.1:\d+)')
GRPC_PORT = re.compile(r'addr\W+0\.0\.0\.0:(\d+)')

# The name the server's certificate is made out to: the Service's.
SERVICE_DNS = f"{FULLNAME}.{NAMESPACE}.svc"
# The static token the test's auth files list (by its SHA-256).
TOKEN = "chart-test-token"


# --- what the Secrets hold --------------------------------------------------


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    """A throwaway CA and the certificates it signs, as PEM."""

    def __init__(self) -> None:
        self.now = datetime.datetime.now(datetime.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsr chart tests CA")])
        self.name = name
        self.cert = (
            self._builder(name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: x509.Name, public_key) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(hours=1))
            .not_valid_after(self.now + datetime.timedelta(days=1))
        )

    def leaf(self, common_name: str, dns: list[str], client: bool) -> tuple[bytes, bytes]:
        """(certificate, key) for a server (client=False) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        if not client:
            sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


def jwks() -> bytes:
    """A JWKS of one ES256 public key (its private key is not needed: no
    JWT is presented, the server only has to load the set)."""
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes(32, "big")).rstrip(b"=").decode()

    key = {"kty": "EC", "crv": "P-256", "x": b64(numbers.x), "y": b64(numbers.y), "kid": "test", "alg": "ES256", "use": "sig"}
    return json.dumps({"keys": [key]}).encode()


def auth_file(jwks_file: Path | None = None, client_certificates: bool = False) -> bytes:
    """An auth file (docs/security.md) listing TOKEN."""
    doc: dict[str, Any] = {
        "tokens": [
            {"principal": "chart-tests", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "roles": ["admin", "auditor"]}
        ]
    }
    if jwks_file:
        doc["jwt"] = {"jwks_file": str(jwks_file), "issuer": "https://idp.example", "audience": "dsr-orchestrator"}
    if client_certificates:
        doc["client_certificates"] = [{"common_name": "ops-console", "principal": "ops-console", "roles": ["operator"]}]
    return yaml.safe_dump(doc).encode()


def keys_file(key_id: str = "chart-tests") -> bytes:
    """A keys file (src/seal.rs): one random AES-256 key, active, and a
    random HMAC secret, each base64 of 32 bytes."""
    doc = {
        "active": key_id,
        "keys": [{"id": key_id, "key": base64.b64encode(os.urandom(32)).decode()}],
        "hmac_secret": base64.b64encode(os.urandom(32)).decode(),
    }
    return yaml.safe_dump(doc).encode()


# What an operator would put in each Secret the value sets name, by Secret:
# key -> bytes. Paths inside the files (the JWKS) are the local ones.
SecretData = Callable[["Pod", Pki], dict[str, bytes]]


def server_tls(pod: "Pod", pki: Pki) -> dict[str, bytes]:
    cert, key = pki.leaf(SERVICE_DNS, [SERVICE_DNS, "localhost"], client=False)
    # cert-manager's layout: the CA beside the certificate.
    return {"tls.crt": cert, "tls.key": key, "ca.crt": pki.ca_pem}


def client_tls(pod: "Pod", pki: Pki) -> dict[str, bytes]:
    cert, key = pki.leaf("dsr-orchestrator", ["dsr-orchestrator.example"], client=True)
    return {"tls.crt": cert, "tls.key": key, "ca.crt": pki.ca_pem}


SECRETS: dict[str, SecretData] = {
    "dsr-auth": lambda pod, pki: {"auth.yaml": auth_file()},
    "dsr-principals": lambda pod, pki: {
        "principals.yaml": auth_file(pod.secret_dir("idp-jwks") / "jwks.json", client_certificates=True)
    },
    "idp-jwks": lambda pod, pki: {"jwks.json": jwks()},
    "dsr-keys": lambda pod, pki: {"keys.yaml": keys_file()},
    "dsr-seal-keys": lambda pod, pki: {"sealing.yaml": keys_file("seal-1")},
    "dsr-trial-keys": lambda pod, pki: {"keys.yaml": keys_file("trial")},
    "dsr-tls": server_tls,
    "dsr-scrape": lambda pod, pki: {"bearer": b"chart-test-scrape-token\n"},
    "vendor-tls": client_tls,
    # A federated orchestrator's: our bearer token there, and its CA.
    "group-emea-dsr": lambda pod, pki: {"token": b"chart-test-upstream-token\n", "ca.crt": pki.ca_pem},
}


class Pod:
    """The pod's Secret mounts, each a local directory laid out as the
    kubelet lays out a Secret volume: the keys are links through `..data`
    into a timestamped directory, and an update writes a new directory and
    swaps `..data` over in one rename. The rendered ConfigMaps it mounts
    (the compliance policy and its holidays files) are local directories
    too, each key a file, with the pod paths in their text made local."""

    def __init__(self, r: Rendered, root: Path):
        volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
        # pod path -> (Secret, local directory)
        self.mounts: dict[str, tuple[str, Path]] = {}
        for m in r.containers[0]["volumeMounts"]:
            secret = volumes[m["name"]].get("secret")
            if secret:
                self.mounts[m["mountPath"].rstrip("/")] = (secret["secretName"], root / m["name"])
        # pod path -> (the ConfigMap's data, local directory)
        self.configmaps: dict[str, tuple[dict[str, str], Path]] = {}
        names = {m["mountPath"].rstrip("/"): m["name"] for m in r.containers[0]["volumeMounts"]}
        for path, data in r.configmap_mounts().items():
            self.configmaps[path] = (data, root / names[path])

    def fill(self, pki: Pki) -> None:
        for secret, local in self.mounts.values():
            if secret not in SECRETS:
                pytest.fail(f"a value set mounts the Secret {secret}; say in SECRETS what it holds")
            local.mkdir(parents=True)
            self.update(secret, SECRETS[secret](self, pki))
        for data, local in self.configmaps.values():
            local.mkdir(parents=True)
            for key, text in data.items():
                (local / key).write_text(self.translate(text))

    def update(self, secret: str, data: dict[str, bytes]) -> None:
        """Writes the Secret's new contents as the kubelet does."""
        local = self.secret_dir(secret)
        version = local / f"..{time.time_ns()}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_bytes(value)
        (local / "..data_tmp").symlink_to(version.name)
        os.replace(local / "..data_tmp", local / "..data")
        for key in data:
            if not (local / key).is_symlink():
                (local / key).symlink_to(f"..data/{key}")

    def secret_dir(self, secret: str) -> Path:
        (local,) = [d for s, d in self.mounts.values() if s == secret]
        return local

    def _dirs(self) -> dict[str, Path]:
        """pod path -> local directory, of every mount laid out here."""
        return {mount: local for mount, (_, local) in {**self.mounts, **self.configmaps}.items()}

    def local(self, path: str) -> Path | None:
        """The local file for a pod path in a Secret or ConfigMap mount,
        else None."""
        for mount, local in self._dirs().items():
            if path.startswith(mount + "/"):
                return local / path[len(mount) + 1 :]
        return None

    def translate(self, text: str) -> str:
        """Pod paths into the mounts in `text` replaced by local ones, the
        rest of the text untouched."""
        for mount, local in self._dirs().items():
            text = text.replace(mount + "/", f"{local}/")
        return text


# --- starting the service ---------------------------------------------------


class Service:
    """A running dsr-orchestrator with the rendered configuration."""

    def __init__(
        self,
        r: Rendered,
        tmp: Path,
        pki: Pki,
        settings: dict[str, str] | None = None,
        edit: Callable[[Pod], None] | None = None,
        fails: bool = False,
    ):
        """`settings` override the rendered ones (None removes one); `edit`
        changes the laid-out mounts before the start; `fails`: the service
        is expected to stop at startup, not to serve."""
        self.tmp = tmp
        self.pod = Pod(r, tmp / "secrets")
        self.pod.fill(pki)
        if edit:
            edit(self.pod)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DSR_", "OTEL_", "RUST_LOG"))}
        for key, value in r.config.items():
            local = self.pod.local(value)
            if local is not None:
                assert local.is_file(), f"{key}={value}: the volume mounted there has no such key"
                value = str(local)
            env[key] = value
        processors = self.pod.translate(r.one("ConfigMap", f"{FULLNAME}-processors")["data"]["processors.yaml"])
        self.processors = yaml.safe_load(processors)["processors"]
        for p in self.processors:
            (push,) = p["adapter"].values()
            for key, path in push.get("tls", {}).items():
                assert Path(path).is_file(), f"processor {p['processor_id']}: {key} is in no mounted Secret"
            if "token_file" in push:
                assert Path(push["token_file"]).is_file(), f"processor {p['processor_id']}: token_file is in no mounted Secret"
        (tmp / "processors.yaml").write_text(processors)
        env.update(
            {
                # Every interface, as in the pod, on a free port; a local
                # SQLite file stands in for the volume or the PostgreSQL
                # Secret.
                "DSR_LISTEN_ADDR": "0.0.0.0:0",
                "DSR_ADMIN_LISTEN_ADDR": "127.0.0.1:0",
                "DSR_DATABASE_URL": f"sqlite://{tmp}/dsr.db",
                "DSR_PROCESSORS_FILE": str(tmp / "processors.yaml"),
            }
        )
        for key, value in (settings or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        # Nothing is exported from a test: no collector is reachable.
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        self.env = env
        self.log = tmp / "server.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(BINARY)], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.admin = self.grpc_port = None
        if fails:
            self.proc.wait(timeout=30)
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.proc.poll() is None:
            text = self.text()
            m, g = ADMIN.search(text), GRPC_PORT.search(text)
            if m and g:
                self.admin, self.grpc_port = m.group(1), int(g.group(1))
                break
            time.sleep(0.1)
        assert self.admin, f"the service did not start:\n{self.text()}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, bearer: str | None = "configured") -> tuple[int, bytes]:
        """`GET path` on the admin listener, over TLS (verified against the
        certificate's CA, as the Service's name) when the configuration
        says so, with the bearer token of DSR_METRICS_TOKEN_FILE unless
        `bearer` is another token or None."""
        if bearer == "configured":
            token = self.env.get("DSR_METRICS_TOKEN_FILE")
            bearer = Path(token).read_text().strip() if token else None
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if self.env.get("DSR_ADMIN_TLS") != "true":
            request = urllib.request.Request(f"http://{self.admin}{path}", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    return answer.status, answer.read()
            except urllib.error.HTTPError as refused:
                return refused.code, refused.read()
        context = ssl.create_default_context(cafile=str(Path(self.env["DSR_TLS_CERT"]).with_name("ca.crt")))
        # Offered as a browser would: the admin listener speaks HTTP/1.1 only.
        context.set_alpn_protocols(["h2", "http/1.1"])
        host, port = self.admin.rsplit(":", 1)
        lines = [f"GET {path} HTTP/1.0", f"Host: {SERVICE_DNS}"] + [f"{k}: {v}" for k, v in headers.items()]
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls:
                assert tls.selected_alpn_protocol() == "http/1.1"
                tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
                answer = b""
                while chunk := tls.recv(65536):
                    answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ")[1]), body

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start(tmp_path, pki):
    started: list[Service] = []

    def _start(r: Rendered, settings: dict[str, str] | None = None, **kw) -> Service:
        # A directory of its own for each start after the first.
        where = tmp_path / f"start-{len(started)}" if started else tmp_path
        where.mkdir(exist_ok=True)
        s = Service(r, where, pki, settings, **kw)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.kill()


def handshake(port: int, ca: Path, client: tuple[Path, Path] | None) -> tuple[str, bytes]:
    """A TLS handshake with the gRPC port as a gRPC client makes it; then
    the HTTP/2 preface, and the first bytes of the server's answer (its
    SETTINGS frame, or an alert for a missing client certificate, which
    TLS 1.3 sends only after the handshake). Returns the ALPN protocol and
    the server's certificate (DER)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client:
        context.load_cert_chain(str(client[0]), str(client[1]))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=SERVICE_DNS) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000"))
            first = tls.recv(9)
            if not first:
                raise ConnectionError("the server closed the connection")
            return tls.selected_alpn_protocol() or "", tls.getpeercert(binary_form=True)


# --- the tests --------------------------------------------------------------


@needs_binary
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_service_starts_with_the_rendered_configuration(rendered, scenario, start, pki, tmp_path):
    assert BINARY.is_file(), f"DSR_BINARY={BINARY} is not a file"
    r = rendered[scenario]
    service = start(r)
    try:
        status, body = service.get("/readyz")
        assert status == 200
        if r.config["DSR_INSECURE_NO_AUTH"] == "true":
            assert body.startswith(b"ready (insecure: callers are not authenticated"), body
            assert "--insecure-no-auth: callers are not authenticated" in service.text()
        else:
            assert body == b"ready\n"
        assert service.get("/metrics")[0] == 200
        if "DSR_METRICS_TOKEN_FILE" in r.config:
            # The probes need no token; the metrics do.
            assert service.get("/healthz", bearer=None)[0] == 200
            assert service.get("/metrics", bearer=None)[0] == 401
            assert service.get("/metrics", bearer="a-guess")[0] == 401
        # Sealed with the Secret's keys: no development key of its own.
        assert "development key" not in service.text(), service.text()
        assert not (service.tmp / "dsr.db.keys").exists()
        if service.processors:
            assert re.search(rf'processors loaded\W+count\W+{len(service.processors)}\b', service.text()), service.text()
        if "DSR_TLS_CERT" in r.config:
            ca = service.pod.local(r.config["DSR_TLS_CERT"]).with_name("ca.crt")
            if "DSR_TLS_CLIENT_CA" in r.config:
                # A client certificate from the Secret's CA is taken...
                cert, key = pki.leaf("ops-console", ["ops-console.example"], client=True)
                (tmp_path / "client.crt").write_bytes(cert)
                (tmp_path / "client.key").write_bytes(key)
                alpn, _ = handshake(service.grpc_port, ca, (tmp_path / "client.crt", tmp_path / "client.key"))
                assert alpn == "h2"
                # ...and a client without one is turned away.
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    handshake(service.grpc_port, ca, None)
            else:
                assert handshake(service.grpc_port, ca, None)[0] == "h2"
        assert service.stop() == 0, service.text()
    finally:
        service.kill()


@needs_binary
def test_secret_updates_reach_the_running_service(rendered, start, pki, tmp_path):
    """The Secrets are mounted as directories, so the kubelet's atomic
    updates reach the pod: a renewed certificate is served and a changed
    auth file read again, without a restart. (The reload interval is cut
    to a second here; the value set's is 30s.)"""
    r = rendered["tls-mtls-jwt"]
    service = start(r, {"DSR_RELOAD_INTERVAL": "1s"})
    try:
        ca = service.pod.local(r.config["DSR_TLS_CERT"]).with_name("ca.crt")
        cert, key = pki.leaf("ops-console", ["ops-console.example"], client=True)
        (tmp_path / "client.crt").write_bytes(cert)
        (tmp_path / "client.key").write_bytes(key)
        client = (tmp_path / "client.crt", tmp_path / "client.key")
        _, before = handshake(service.grpc_port, ca, client)

        renewed = server_tls(service.pod, pki)
        service.pod.update("dsr-tls", renewed)
        service.pod.update("dsr-principals", {"principals.yaml": auth_file(client_certificates=True)})
        served = x509.load_pem_x509_certificate(renewed["tls.crt"]).public_bytes(serialization.Encoding.DER)
        assert served != before
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if handshake(service.grpc_port, ca, client)[1] == served and "authentication settings read again" in service.text():
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the renewed Secrets were never picked up:\n{service.text()}")
        assert "cannot reload" not in service.text() and "cannot read" not in service.text()
        assert service.stop() == 0, service.text()
    finally:
        service.kill()


# The settings whose chart default is a choice of the chart's, not the
# server's: the pod listens beyond loopback, keeps SQLite on its volume and
# logs JSON for collectors.
CHART_CHOICES = {"DSR_LISTEN_ADDR", "DSR_ADMIN_LISTEN_ADDR", "DSR_DATABASE_URL", "DSR_LOG_FORMAT"}


@needs_binary
def test_the_charts_defaults_are_the_servers(rendered):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSR_")}
    help_text = subprocess.run([str(BINARY), "--help"], env=env, capture_output=True, text=True, check=True, timeout=30).stdout
    # A default with a space is shown quoted: [default: "24 months"].
    defaults = {k: v.strip('"') for k, v in re.findall(r"\[env: (DSR_\w+)=\]\s*\[default: ([^\]]+)\]", help_text)}
    assert "DSR_RATE_LIMIT" in defaults, help_text
    config = rendered["default"].config
    compared = {k: config[k] for k in defaults if k in config and k not in CHART_CHOICES}
    assert {
        "DSR_MAX_MESSAGE_SIZE",
        "DSR_MAX_CONCURRENT_STREAMS",
        "DSR_MAX_CALLS_IN_FLIGHT",
        "DSR_RATE_LIMIT",
        "DSR_RATE_BURST",
        "DSR_MAX_WATCHES",
        "DSR_MAX_WATCHES_PER_CALLER",
        "DSR_STALLED_READER_TIMEOUT",
        "DSR_RELOAD_INTERVAL",
        "DSR_DRAIN_TIMEOUT",
        "DSR_RECORD_RETENTION",
        "DSR_PURGE_INTERVAL",
        "DSR_REPORT_WINDOW",
        "DSR_ERASE_INTERVAL",
    } <= set(compared)
    assert compared == {k: defaults[k] for k in compared}


@needs_binary
def test_the_service_follows_the_rendered_compliance_policy_to_its_holidays(rendered, start):
    """The compliance policy the chart renders starts the server with the
    calendars' holidays files the chart wrote beside it, at the paths it
    put in the policy; and the server does read them: with one file's
    second date broken, startup stops and names that file and line."""
    r = rendered["compliance-retention"]
    service = start(r)
    try:
        policy_file = service.pod.local(r.config["DSR_COMPLIANCE_FILE"])
        policy = yaml.safe_load(policy_file.read_text())
        california = Path(policy["calendars"]["california"]["holidays_file"])
        # The rendered path, made local: the ConfigMap's file, in the same
        # directory as the policy.
        assert california == policy_file.with_name("holidays-california.txt")
        assert "2026-11-26" in california.read_text().split()
        assert service.get("/readyz") == (200, b"ready\n")
        assert service.stop() == 0, service.text()
    finally:
        service.kill()

    def break_a_date(pod: Pod) -> None:
        path = pod.local("/etc/dsr-compliance/holidays-california.txt")
        lines = path.read_text().splitlines()
        assert lines[2] == "2026-11-27", lines
        lines[2] = "2026-11-31"
        path.write_text("\n".join(lines) + "\n")

    broken = start(r, edit=break_a_date, fails=True)
    local = broken.pod.local("/etc/dsr-compliance/holidays-california.txt")
    assert broken.proc.returncode not in (0, None), broken.text()
    assert f"{local} line 3: expected a date as YYYY-MM-DD" in broken.text(), broken.text()


@needs_binary
def test_the_service_seals_with_the_rendered_keys_and_needs_them(rendered, start):
    """The keys file the chart mounts is what lets the server start beyond
    loopback: with it the server serves and makes no key of its own;
    without DSR_KEYS_FILE it refuses to start, which is why the chart
    refuses to render without encryption.existingSecret."""
    r = rendered["default"]
    service = start(r)
    try:
        keys = service.pod.local(r.config["DSR_KEYS_FILE"])
        assert keys == service.pod.secret_dir("dsr-keys") / "keys.yaml"
        assert yaml.safe_load(keys.read_text())["active"] == "chart-tests"
        assert service.get("/readyz") == (200, b"ready\n")
        assert "development key" not in service.text(), service.text()
        assert not (service.tmp / "dsr.db.keys").exists()
        assert service.stop() == 0, service.text()
    finally:
        service.kill()

    without = start(r, {"DSR_KEYS_FILE": None}, fails=True)
    assert without.proc.returncode not in (0, None), without.text()
    assert "no keys to seal personal data at rest" in without.text(), without.text()
    assert not (without.tmp / "dsr.db.keys").exists()


# Secret contents that are no keys file, and what the server says of each.
NOT_KEYS = {
    "an auth file": (auth_file(), "not a keys file"),
    "a short hmac secret": (
        yaml.safe_dump(
            {
                "active": "k1",
                "keys": [{"id": "k1", "key": base64.b64encode(os.urandom(32)).decode()}],
                "hmac_secret": base64.b64encode(os.urandom(16)).decode(),
            }
        ).encode(),
        "hmac_secret must be at least 32 bytes",
    ),
    "a 16-byte key": (
        yaml.safe_dump(
            {
                "active": "k1",
                "keys": [{"id": "k1", "key": base64.b64encode(os.urandom(16)).decode()}],
                "hmac_secret": base64.b64encode(os.urandom(32)).decode(),
            }
        ).encode(),
        "keys[0] (k1): the key must be 32 bytes",
    ),
}


@needs_binary
@pytest.mark.parametrize("content", NOT_KEYS)
def test_a_secret_that_holds_no_keys_file_stops_the_service_naming_the_file(rendered, start, content):
    r = rendered["tls-mtls-jwt"]
    text, reason = NOT_KEYS[content]

    def spoil(pod: Pod) -> None:
        pod.update("dsr-seal-keys", {"sealing.yaml": text})

    broken = start(r, edit=spoil, fails=True)
    local = broken.pod.local(r.config["DSR_KEYS_FILE"])
    assert local.name == "sealing.yaml"
    assert broken.proc.returncode not in (0, None), broken.text()
    assert f"keys file {local}: {reason}" in broken.text(), broken.text()
    # The error names the file, never a key.
    for line in text.decode().splitlines():
        if "key:" in line or "hmac_secret:" in line:
            assert line.split(":", 1)[1].strip() not in broken.text()
