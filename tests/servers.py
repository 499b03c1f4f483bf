"""The servers users put in front of their webhooks, started on the loopback for tests and benchmarks.

nginx, HAProxy (Debian packages), a Java server (tests/e2e/servers/HttpsServer.java, the JDK's own
HttpsServer) and a Go server (tests/e2e/servers/goserver, net/http), each as its own process in a
session of its own, tied to the parent, on a free port, reading a trust file the caller keeps up to
date (trust-sync in the tests and the benchmark). tests/e2e/test_servers.py proves them through a
rotation and an emergency; benchmarks/servers.py times how fast each refuses a revoked certificate.
Both start them here, so what is measured is what is tested.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests import processes
from tests.unit import mtls_pki
from webhookcerts.devcluster import base as devbase
from webhookcerts.devcluster import cluster as devcluster
from webhookcerts.domain import truststores

SERVERS_SOURCE = pathlib.Path(__file__).resolve().parent / "e2e" / "servers"
TRUSTSTORE_PASSWORD = "e2e-truststore-5b1d"  # ASCII: the JDK opens a PKCS#12 only with an ASCII password
KEYSTORE_PASSWORD = "e2e-keystore-9c2e"
# What each server answers a client it does not trust: a TLS alert during the handshake, or (nginx) a
# completed handshake and then HTTP 400 ("No required SSL certificate was sent", "The SSL certificate
# error"): nginx's ssl_verify_client never aborts a handshake.
HANDSHAKE, HTTP_400 = "handshake", "http-400"
# What becomes of a keep-alive connection opened with a certificate that is then revoked, at its next
# request: answered 421 and closed (the Java and Go servers check the certificate against the newest
# trust on every request), or closed by the server without an answer (a reload retires the worker that
# holds it: nginx closes idle keep-alive connections at once, HAProxy's old worker too).
MISDIRECTED, CLOSED = "421", "closed"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise FileNotFoundError(f"{tool} is not installed: `make setup` (tools/images/host-packages.sh) installs it")
    return path


def free_port() -> int:
    """A free loopback port, for servers that take their port from a configuration file."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# --- the servers' material: serving certificates, the Java and Go servers built ---------------------


@dataclasses.dataclass(frozen=True)
class Material:
    """What every server is started with: its serving certificate (as each one wants it) and the test's CA."""

    pki: mtls_pki.Pki
    haproxy_pem: pathlib.Path  # certificate and key in one file
    keystore: pathlib.Path  # PKCS#12 with the serving key, for the JVM
    keystore_password: pathlib.Path
    truststore_password: pathlib.Path

    @property
    def server_ca(self) -> pathlib.Path:
        return self.pki.server_ca.cert_path


def make_material(directory: pathlib.Path) -> Material:
    """Throw-away serving PKI in ``directory``, in the shape each server wants it."""
    made = mtls_pki.make(directory)
    server = made.server
    haproxy_pem = directory / "haproxy-server.pem"
    haproxy_pem.write_bytes(server.cert_pem + server.key_path.read_bytes())
    haproxy_pem.chmod(0o600)
    keystore = directory / "server.p12"
    keystore.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"server", server.key, server.cert, None, serialization.BestAvailableEncryption(KEYSTORE_PASSWORD.encode())
        )
    )
    keystore_password = directory / "keystore-password"
    keystore_password.write_text(KEYSTORE_PASSWORD + "\n")
    truststore_password = directory / "truststore-password"
    truststore_password.write_text(TRUSTSTORE_PASSWORD + "\n")
    return Material(made, haproxy_pem, keystore, keystore_password, truststore_password)


class BuildFailed(RuntimeError):
    """A server's source did not build; the message carries the compiler's output."""


def _build(argv: list[str], cwd: pathlib.Path, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BuildFailed(f"{pathlib.Path(argv[0]).name} failed: {done.stderr}")


def compile_java(out: pathlib.Path) -> pathlib.Path:
    """tests/e2e/servers/HttpsServer.java compiled with the machine's JDK into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    _build([require("javac"), "-d", str(out), str(SERVERS_SOURCE / "HttpsServer.java")], SERVERS_SOURCE)
    return out


def build_go(directory: pathlib.Path) -> pathlib.Path:
    """tests/e2e/servers/goserver built with the machine's Go (the standard library only), in ``directory``."""
    out = directory / "goserver"
    env = {**os.environ, "GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    _build([require("go"), "build", "-o", str(out), "."], SERVERS_SOURCE / "goserver", env)
    return out


@dataclasses.dataclass
class Workspace:
    """Starts processes for one test and stops every one of them, by its own process group, afterwards."""

    directory: pathlib.Path
    material: Material
    procs: list[subprocess.Popen[bytes]] = dataclasses.field(default_factory=list)
    logs: dict[str, pathlib.Path] = dataclasses.field(default_factory=dict)

    def log(self, name: str) -> pathlib.Path:
        path = self.directory / f"{name}.log"
        self.logs[name] = path
        return path

    def spawn(
        self, name: str, argv: list[str], log: pathlib.Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (log or self.log(name)).open("ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env=env,
                start_new_session=True,
                preexec_fn=devcluster.die_with_parent,
            )
        self.procs.append(proc)
        return proc

    def track(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            # Each was started in a session of its own: its group holds it and what it started
            # (nginx's and HAProxy's workers, a reload command).
            devcluster.stop_pid(proc.pid, grace=10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, 9)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        self.procs.clear()

    def dump(self) -> None:
        for name, path in self.logs.items():
            if path.exists():
                print(f"--- {name} log ---\n{path.read_text(errors='replace')[-8000:]}")


_ADDRESS = re.compile(r'"address":\s*"127\.0\.0\.1:(\d+)"')


def logged_port(proc: subprocess.Popen[bytes], log: pathlib.Path) -> int | None:
    """The port the Java or Go server logged, None while it starts; raises once it has exited."""
    text = log.read_text(errors="replace") if log.exists() else ""
    if proc.poll() is not None:
        raise processes.ProcessExited(f"the server exited ({proc.returncode}): {text[-2000:]}")
    match = _ADDRESS.search(text)
    return int(match.group(1)) if match else None


def listening(proc: subprocess.Popen[bytes], log: pathlib.Path, port: int) -> bool:
    if proc.poll() is not None:
        raise processes.ProcessExited(f"the server exited ({proc.returncode}): {log.read_text(errors='replace')}")
    return accepting(port)


def workers_of(master_pid: int) -> frozenset[int]:
    """The master's children: nginx's and HAProxy's workers (old ones still finishing included)."""
    return frozenset(pid for pid, parent in devbase.parents().items() if parent == master_pid)


def last_trust_loaded(log: pathlib.Path) -> frozenset[str] | None:
    """The fingerprints of the newest trust generation the Java or Go server logged (None: none yet)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    found = None
    for line in text.splitlines():
        if line.startswith('{"') and '"trust_loaded"' in line:
            found = frozenset(json.loads(line)["fingerprints"])
    return found


@dataclasses.dataclass(frozen=True)
class TrustFile:
    """The trust store a server reads, and how to read it (format as truststores.certificates_of takes it)."""

    path: pathlib.Path
    format: str = "pem"
    password: str = ""

    def fingerprints(self) -> frozenset[str] | None:
        """The certificates it lists now; None while it is missing or unreadable (a swap under way)."""
        try:
            ders = truststores.certificates_of(self.path.read_bytes(), self.format, self.password)
        except (OSError, ValueError):
            return None
        return frozenset(hashlib.sha256(der).hexdigest() for der in ders)


@dataclasses.dataclass(frozen=True)
class Launched:
    """A running server: where it listens, its log of deliveries, how it refuses a client it does not
    trust (HANDSHAKE or HTTP_400) and what becomes of a kept connection (MISDIRECTED or CLOSED), and
    the command that makes it reload its trust (none: it reloads by itself)."""

    name: str
    port: int
    server_ca: pathlib.Path
    log: pathlib.Path
    refusal: str
    kept: str
    reload_command: str | None = None
    # nginx and HAProxy (master-worker): the master, and the worker it ran at launch. After a reload the
    # old worker goes on serving its kept connections (nginx even new ones, for a moment) until it has
    # handled the stop; see ``reloaded``.
    master_pid: int | None = None
    launch_workers: frozenset[int] = frozenset()
    # The Java and Go servers: the trust store they watch and swap in place.
    trust: TrustFile | None = None

    def reloaded(self) -> bool:
        """Whether the server has finished taking the trust store as it is now, by a positive signal:

        - nginx, HAProxy: a reload has happened since launch and is complete: the master runs exactly
          one worker, and not the one it ran at launch (every older worker, which held the connections
          opened under the old trust, has exited);
        - Java, Go: the newest trust generation the server logged (``trust_loaded``, printed after the
          swap) lists exactly the certificates the trust store holds now.
        """
        if self.master_pid is not None:
            workers = workers_of(self.master_pid)
            return len(workers) == 1 and not workers & self.launch_workers
        if self.trust is None:
            raise ValueError(f"{self.name}: no way to tell whether it reloaded")
        held = self.trust.fingerprints()
        return held is not None and last_trust_loaded(self.log) == held


# The JSON line per delivery the rotation tests read (``Launched.log``).
DELIVERY_LOG_FORMAT = (
    'log_format delivery escape=json \'{"event": "delivery", "status": $status, "method": "$request_method", \'\n'
    '        \'"path": "$uri", "verify": "$ssl_client_verify", "client_cert": "$ssl_client_escaped_cert"}\';'
)


def start_nginx(
    ws: Workspace,
    trust_file: pathlib.Path,
    name: str = "nginx",
    *,
    log_format: tuple[str, str] = ("delivery", DELIVERY_LOG_FORMAT),
    access_log: str | None = None,
) -> Launched:
    """nginx verifying clients against ``trust_file``; its access log in ``log_format`` (the format's name
    and its ``log_format`` directive) goes to ``access_log`` (an nginx target: a path, or
    ``syslog:server=...``), by default to ``access.log`` in its directory, which ``Launched.log`` names."""
    require("nginx")
    work = ws.directory / name
    work.mkdir()
    port, server = free_port(), ws.material.pki.server
    log_file, error_log, conf = work / "access.log", work / "error.log", work / "nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {work / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"""daemon off;
worker_processes 1;
pid {work / "nginx.pid"};
error_log {error_log} info;
events {{ worker_connections 512; }}
http {{
{temp}
    {log_format[1]}
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate     {server.cert_path};
        ssl_certificate_key {server.key_path};
        ssl_protocols       TLSv1.2 TLSv1.3;
        ssl_verify_client      on;
        ssl_client_certificate {trust_file};
        ssl_verify_depth       1;
        access_log {access_log or log_file} {log_format[0]};
        location / {{
            default_type application/json;
            return 200 '{{"status": 200}}\\n';
        }}
    }}
}}
"""
    )
    proc = ws.spawn(name, ["nginx", "-c", str(conf), "-e", str(error_log)])
    ws.logs[f"{name} error"] = error_log
    processes.wait_for(lambda: listening(proc, error_log, port), timeout=30, what=f"{name} to listen")
    reload_command = f"nginx -c {conf} -e {error_log} -s reload"
    workers = processes.wait_for(lambda: workers_of(proc.pid), timeout=30, what=f"{name}'s worker")
    return Launched(name, port, ws.material.server_ca, log_file, HTTP_400, CLOSED, reload_command, proc.pid, workers)


def start_haproxy(ws: Workspace, trust_file: pathlib.Path, name: str = "haproxy") -> Launched:
    require("haproxy")
    work = ws.directory / name
    work.mkdir()
    port, pid_file, conf, log = free_port(), work / "haproxy.pid", work / "haproxy.cfg", ws.log(name)
    fields = (
        '"event": "delivery", "status": %ST, "method": "%HM", "path": "%HPO", '
        '"client_fingerprint": "%[ssl_c_der,sha2(256),hex,lower]", "verify": %[ssl_c_verify]'
    )
    conf.write_text(
        f"""global
    log stdout format raw local0 info
    pidfile {pid_file}
    ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 60s

frontend webhooks
    bind 127.0.0.1:{port} ssl crt {ws.material.haproxy_pem} ca-file {trust_file} verify required
    log-format '{{{fields}}}'
    http-request return status 200 content-type application/json string '{{"status": 200}}' if {{ method POST }}
    http-request return status 405 content-type application/json string '{{"status": 405}}'
"""
    )
    check = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise processes.ProcessExited(f"haproxy -c refused the configuration: {check.stdout}{check.stderr}")
    # -W: master-worker (SIGUSR2 to the master reloads: a new worker with the new files, the old one
    # finishes its connections); -db: stay in the foreground, the master is the process started here.
    proc = ws.spawn(name, ["haproxy", "-W", "-db", "-f", str(conf)], log)
    processes.wait_for(lambda: listening(proc, log, port), timeout=30, what=f"{name} to listen")
    reload_command = f"""sh -c 'kill -USR2 "$(cat {pid_file})"'"""
    workers = processes.wait_for(lambda: workers_of(proc.pid), timeout=30, what=f"{name}'s worker")
    return Launched(name, port, ws.material.server_ca, log, HANDSHAKE, CLOSED, reload_command, proc.pid, workers)


def start_java(
    ws: Workspace,
    classes: pathlib.Path,
    truststore: pathlib.Path,
    store_type: str,
    name: str,
    *,
    check_validity: bool = True,
) -> Launched:
    require("java")
    log = ws.log(name)
    argv = ["java", "-cp", str(classes), "HttpsServer", "--port", "0"]
    argv += ["--keystore", str(ws.material.keystore), "--keystore-password-file", str(ws.material.keystore_password)]
    argv += ["--truststore", str(truststore), "--truststore-type", store_type]
    argv += ["--truststore-password-file", str(ws.material.truststore_password)]
    argv += ["--check-validity", str(check_validity).lower()]
    proc = ws.spawn(name, argv, log)
    port = processes.wait_for(lambda: logged_port(proc, log), timeout=60, what=f"{name} to listen")
    trust = TrustFile(truststore, store_type.lower(), ws.material.truststore_password.read_text().strip())
    return Launched(name, port, ws.material.server_ca, log, HANDSHAKE, MISDIRECTED, trust=trust)


def start_go(ws: Workspace, binary: pathlib.Path, trust_file: pathlib.Path, name: str = "go") -> Launched:
    log = ws.log(name)
    server = ws.material.pki.server
    argv = [str(binary), "-listen", "127.0.0.1:0", "-cert", str(server.cert_path), "-key", str(server.key_path)]
    proc = ws.spawn(name, [*argv, "-trust", str(trust_file)], log)
    port = processes.wait_for(lambda: logged_port(proc, log), timeout=30, what=f"{name} to listen")
    return Launched(name, port, ws.material.server_ca, log, HANDSHAKE, MISDIRECTED, trust=TrustFile(trust_file))
