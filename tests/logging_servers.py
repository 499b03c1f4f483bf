"""nginx and HAProxy logging the client-certificate fields trust-sync reads, as docs/receivers/ says.

tests/servers.py starts the same servers with JSON delivery logs for the rotation tests; here they log
exactly the formats the receiver guides give (the constants below are checked to appear in them,
tests/unit/test_accesslog_servers.py), so that the lines the parser is tested on are the lines a user's
server writes. Presentations are made with curl, which reports the HTTP status or 0 for a handshake the
server aborted.
"""

from __future__ import annotations

import pathlib
import subprocess

from tests import processes
from tests import servers as launchers
from tests.unit import mtls_pki
from webhookcerts.domain import pki

REPO = pathlib.Path(__file__).resolve().parents[1]
RECEIVERS = REPO / "docs" / "receivers"

# nginx (docs/receivers/nginx.md): the fields last, the verify result quoted (its reason has spaces).
NGINX_LOG_FORMAT = (
    "log_format webhookcerts '$remote_addr [$time_iso8601] \"$request\" $status '\n"
    "                            'webhookcerts fp=$ssl_client_fingerprint verify=\"$ssl_client_verify\"';"
)
# HAProxy (docs/receivers/haproxy.md): the same fields for requests and for handshakes it refused.
HAPROXY_FIELDS = "webhookcerts fp=%[ssl_c_sha1,hex] verify=%[ssl_c_verify] err=%[ssl_c_err] ca_err=%[ssl_c_ca_err]"
HAPROXY_LOG_FORMAT = f"log-format '%ci:%cp [%tr] %ft %ST \"%r\" {HAPROXY_FIELDS}'"
HAPROXY_ERROR_LOG_FORMAT = f"error-log-format '%ci:%cp [%tr] %ft %[fc_err_str] {HAPROXY_FIELDS}'"


def start_nginx(
    ws: launchers.Workspace, trust_file: pathlib.Path, *, access_log: str | None = None, name: str = "nginx"
) -> launchers.Launched:
    """nginx verifying clients against ``trust_file``, logging the fields to ``access_log`` (an nginx
    ``access_log`` target: a path, or ``syslog:server=127.0.0.1:PORT,nohostname``; default a file)."""
    return launchers.start_nginx(
        ws, trust_file, name, log_format=("webhookcerts", NGINX_LOG_FORMAT), access_log=access_log
    )


def start_haproxy(
    ws: launchers.Workspace, trust_file: pathlib.Path, *, log_target: str = "stdout", name: str = "haproxy"
) -> launchers.Launched:
    """HAProxy (``verify required``) verifying clients against ``trust_file``, logging the fields of
    each request and of each refused handshake to ``log_target`` (``stdout``: its log file here)."""
    launchers.require("haproxy")
    work = ws.directory / name
    work.mkdir()
    port, pid_file, conf, log = launchers.free_port(), work / "haproxy.pid", work / "haproxy.cfg", ws.log(name)
    conf.write_text(
        f"""global
    log {log_target} format raw local0 info
    pidfile {pid_file}

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend webhooks
    bind 127.0.0.1:{port} ssl crt {ws.material.haproxy_pem} ca-file {trust_file} verify required
    {HAPROXY_LOG_FORMAT}
    {HAPROXY_ERROR_LOG_FORMAT}
    http-request return status 200 content-type text/plain string ok
"""
    )
    check = subprocess.run(["haproxy", "-c", "-f", str(conf)], capture_output=True, text=True, timeout=60)
    if check.returncode != 0:
        raise processes.ProcessExited(f"haproxy -c refused the configuration: {check.stdout}{check.stderr}")
    proc = ws.spawn(name, ["haproxy", "-W", "-db", "-f", str(conf)], log)
    processes.wait_for(lambda: launchers.listening(proc, log, port), timeout=30, what=f"{name} to listen")
    reload_command = f"""sh -c 'kill -USR2 "$(cat {pid_file})"'"""
    return launchers.Launched(
        name, port, ws.material.server_ca, log, launchers.HANDSHAKE, launchers.CLOSED, reload_command, proc.pid
    )


def present(server: launchers.Launched, client: mtls_pki.Pair | None) -> int:
    """One request presenting ``client`` (None: no certificate): the HTTP status, 0 when the handshake failed."""
    argv = [launchers.require("curl"), "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30"]
    argv += ["--cacert", str(server.server_ca)]
    if client is not None:
        argv += ["--cert", str(client.cert_path), "--key", str(client.key_path)]
    done = subprocess.run(
        [*argv, f"https://127.0.0.1:{server.port}/deliveries"], capture_output=True, text=True, timeout=60, check=False
    )
    return int(done.stdout or 0)


def sha1(pair: mtls_pki.Pair) -> str:
    """The SHA-1 both servers log (lower-case hex of the DER)."""
    return pki.sha1_fingerprint(pair.cert_pem.decode())
