"""The local cluster's node: containerd, a kubelet, kube-controller-manager and kube-scheduler.

A real node lets the project's image run as a Pod, so the operator and the receiver can be tested the
way they are deployed. Everything of one node lives in a directory of its own: containerd's
configuration, root, state, socket and runc root, the kubelet's root dir, configuration and pod logs.
Ports are free loopback ports. Two clusters on one machine therefore share nothing but the kernel (and
the kubelet's hard-coded device plugin directory, unused here).

That directory is ``<cache>/nodes/<hash of the cluster directory>`` (``<cluster dir>/whc-node`` links to
it), not inside the cluster directory: containerd and the kubelet listen on unix sockets below it, and a
socket's path holds at most 107 bytes, which a pytest temporary directory alone can exceed. It is also
the image cache's file system, so the node's containerd root can be hard-linked from a prepared one.

What the machine kind this runs on (a cgroup v1 VM, no Docker engine, no registry) needs, each one a
failure first (see the KubeletConfiguration and containerd configuration below for the why of each):

- images are built locally (tools/images/build.py) and imported into containerd, never pulled;
- no CNI plugin: Pods use the host's network (``hostNetwork: true``). A CNI configuration of the
  loopback plugin only makes the runtime report its network ready, so the node is Ready; a Pod that asks
  for a network of its own fails to start, which says plainly that nothing routes to Pod addresses;
- the kubelet refuses a loopback node IP and the API server a loopback advertise address, so the node
  is named ``localhost``, the kubelet serves on 127.0.0.1 and the API server reaches it by host name;
- Pods reach the API server on its loopback address: ``pod_api_env`` gives the environment that
  overrides the service address the kubelet injects (no kube-proxy runs).

Removing a node (``down``, and what a killed run left) is teardown.py's part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator

from webhookcerts.devcluster import base, pki

NODE_NAME = pki.NODE_NAME
NAMESPACE = "k8s.io"  # containerd's namespace for Kubernetes' containers
LINK_NAME = "whc-node"
# Stopped before the containers are removed, so that nothing starts them again.
STOP_FIRST = ("kubelet", "kube-controller-manager", "kube-scheduler")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr")
NODE_TIMEOUT = 120.0
# Mounted Secrets follow their Secret within seconds instead of the kubelet's default minute.
SYNC_FREQUENCY = "5s"
# sun_path holds 108 bytes; containerd also listens on "<socket>.ttrpc".
_MAX_SOCKET_PATH = 100
# The controllers that workloads, ServiceAccounts, namespaces and RBAC need, as in a real cluster. The
# others (quotas, autoscaling, volumes, ...) would cost seconds of start-up on two cores for nothing.
_CONTROLLERS = (
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "certificatesigningrequest-signing-controller",
    "certificatesigningrequest-approving-controller",
    "certificatesigningrequest-cleaner-controller",
)

Spawn = Callable[[str, list[str]], object]
Wait = Callable[[str, Callable[[], bool], float, str], None]
Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one node's files are. Derived from the cluster directory alone, so cleanup needs no state."""

    root: pathlib.Path

    @classmethod
    def of(cls, cluster_dir: pathlib.Path) -> Layout:
        return cls(nodes_dir() / hashlib.sha256(str(cluster_dir).encode()).hexdigest()[:12])

    @property
    def owner(self) -> pathlib.Path:
        """A file naming the cluster directory, so that a sweep can tell whether that cluster is gone."""
        return self.root / "owner"

    @property
    def containerd(self) -> pathlib.Path:
        return self.root / "containerd"

    @property
    def socket(self) -> pathlib.Path:
        return self.containerd / "containerd.sock"

    @property
    def containerd_config(self) -> pathlib.Path:
        return self.containerd / "config.toml"

    @property
    def containerd_root(self) -> pathlib.Path:
        return self.containerd / "root"

    @property
    def containerd_state(self) -> pathlib.Path:
        return self.containerd / "state"

    @property
    def runc_root(self) -> pathlib.Path:
        return self.containerd / "runc"

    @property
    def cni(self) -> pathlib.Path:
        return self.containerd / "cni"

    @property
    def kubelet(self) -> pathlib.Path:
        return self.root / "kubelet"

    @property
    def kubelet_root(self) -> pathlib.Path:
        return self.kubelet / "root"


# --- images --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Images:
    """What tools/images/build.py made: image references, their archives, a containerd root holding both."""

    refs: dict[str, str]
    archives: tuple[pathlib.Path, ...]
    containerd_root: pathlib.Path | None


def nodes_dir() -> pathlib.Path:
    return base.cache_dir() / "nodes"


def images_manifest() -> pathlib.Path:
    explicit = os.environ.get("WEBHOOKCERTS_IMAGES")
    return pathlib.Path(explicit) if explicit else base.cache_dir() / "images" / "images.json"


def load_images() -> Images:
    path = images_manifest()
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raise base.DevClusterError(f"the node's images are not built ({path} is missing): run `make setup`") from None
    archives = tuple(pathlib.Path(entry["archive"]) for entry in raw["images"].values())
    missing = [str(a) for a in archives if not a.exists()]
    if missing:
        raise base.DevClusterError(f"image archives are missing ({', '.join(missing)}): run `make setup`")
    seeded = raw.get("containerd_root")
    return Images(
        refs={name: entry["ref"] for name, entry in raw["images"].items()},
        archives=archives,
        containerd_root=pathlib.Path(seeded) if seeded else None,
    )


@contextlib.contextmanager
def _images_shared_lock() -> Iterator[None]:
    # tools/images/build.py holds this lock exclusively while it builds and prunes.
    try:
        lock = (images_manifest().parent / ".lock").open("a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield


# --- starting --------------------------------------------------------------------------------------


class Node:
    """Starts one node; stopping is the module's functions', which work from the paths alone."""

    def __init__(
        self,
        cluster_dir: pathlib.Path,
        certs: pathlib.Path,
        *,
        spawn: Spawn,
        wait: Wait,
        log: Log,
        timeout: float = NODE_TIMEOUT,
        sync_frequency: str = SYNC_FREQUENCY,
    ) -> None:
        self.cluster_dir = cluster_dir
        self.sync_frequency = sync_frequency
        self.layout = Layout.of(cluster_dir)
        self.certs = certs
        self._spawn = spawn
        self._wait = wait
        self._log = log
        self.images: Images | None = None
        self._seeded = False
        self.timeout = timeout

    def check(self) -> None:
        """Refuse early, before anything starts, with what to run."""
        missing = [tool for tool in HOST_TOOLS if shutil.which(tool) is None]
        if missing:
            raise base.DevClusterError(
                f"{', '.join(missing)} not found: the node needs containerd and runc (Debian packages); "
                "run `make setup`, or `webhookcerts devcluster up --no-node` for an API server alone"
            )
        for name in ("kubelet", "kube-controller-manager", "kube-scheduler"):
            base.binary(name)
        if len(str(self.layout.socket)) > _MAX_SOCKET_PATH:
            raise base.DevClusterError(
                f"the path {self.layout.socket} is too long for a unix socket: "
                "set WEBHOOKCERTS_CACHE to a shorter directory"
            )
        self.images = load_images()

    def start_runtime(self) -> None:
        """Start containerd with both images already in its store; runs while the API server starts."""
        assert self.images is not None
        for directory in (self.layout.containerd_root, self.layout.containerd_state, self.layout.runc_root):
            directory.mkdir(parents=True, exist_ok=True)
        self.layout.owner.write_text(str(self.cluster_dir))
        (self.cluster_dir / LINK_NAME).symlink_to(self.layout.root, target_is_directory=True)
        with _images_shared_lock():
            # A `make setup` may have replaced the images since `check`: take the ones there are now,
            # and keep it from pruning them while they are being linked.
            self.images = load_images()
            self._seeded = self._seed(self.images)
        self._write_cni()
        self.layout.containerd_config.write_text(self._containerd_config(self.images))
        self._spawn("containerd", ["containerd", f"--config={self.layout.containerd_config}"])

    def start_kubernetes(self, apiserver_url: str) -> None:
        """Start the controllers and the kubelet against a ready API server."""
        assert self.images is not None
        kubeconfigs = {}
        for user in ("kubelet", "kube-controller-manager", "kube-scheduler"):
            path = self.layout.root / f"{user}.kubeconfig"
            path.write_text(
                base.kubeconfig(
                    apiserver_url,
                    self.certs / "ca.crt",
                    self.certs / f"{user}.crt",
                    self.certs / f"{user}.key",
                    user,
                )
            )
            kubeconfigs[user] = path
        self._spawn("kube-controller-manager", self._controller_manager_argv(kubeconfigs["kube-controller-manager"]))
        self._spawn("kube-scheduler", self._scheduler_argv(kubeconfigs["kube-scheduler"]))
        self._wait("containerd", self._containerd_serves, self.timeout, "its socket")
        if not self._seeded:
            self._import(self.images)
        save_kernel_tunables()
        config = self.layout.kubelet / "config.json"
        self.layout.kubelet_root.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps(self._kubelet_config(), indent=2))
        self._spawn(
            "kubelet",
            [
                str(base.binary("kubelet")),
                f"--config={config}",
                f"--kubeconfig={kubeconfigs['kubelet']}",
                f"--root-dir={self.layout.kubelet_root}",
                f"--cert-dir={self.layout.kubelet / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                "--v=2",
            ],
        )

    def reconfigure_kubelet(self, sync_frequency: str) -> str:
        """Rewrite the stopped kubelet's configuration with another ``syncFrequency``, everything else
        (its ports among it) as it was; returns its healthz URL, to wait on once it runs again."""
        config = self.layout.kubelet / "config.json"
        settings = json.loads(config.read_text())
        settings["syncFrequency"] = self.sync_frequency = sync_frequency
        config.write_text(json.dumps(settings, indent=2))
        return f"http://127.0.0.1:{settings['healthzPort']}/healthz"

    def wait_ready(self, apiserver_url: str) -> None:
        context = base.admin_context(self.certs)

        def node_ready() -> bool:
            node = base.get_json(f"{apiserver_url}/api/v1/nodes/{NODE_NAME}", context)
            return bool(node) and _condition(node, "Ready") == "True"

        def default_account() -> bool:
            url = f"{apiserver_url}/api/v1/namespaces/default/serviceaccounts/default"
            return base.get_json(url, context) is not None

        self._wait("kubelet", node_ready, self.timeout, f"node {NODE_NAME} to register and be Ready")
        # ServiceAccount admission refuses Pods until the controller-manager made the account.
        self._wait("kube-controller-manager", default_account, self.timeout, "the default ServiceAccount")

    # containerd ----------------------------------------------------------------------------------

    def _seed(self, images: Images) -> bool:
        """Hard-link a containerd root that already holds the images: a second or so, where importing
        the archives takes 15 s. Blobs and unpacked layers are never written in place, so the links are
        safe; the bolt databases are copied, because they are."""
        template = images.containerd_root
        if template is None or not template.is_dir():
            return False
        target = self.layout.containerd_root
        done = subprocess.run(["cp", "-al", f"{template}/.", str(target)], capture_output=True, check=False)
        if done.returncode != 0:
            # Another file system than the cache's: import the archives instead.
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            return False
        for database in template.rglob("*.db"):
            copy = target / database.relative_to(template)
            copy.unlink()
            shutil.copy2(database, copy)
        return True

    def _import(self, images: Images) -> None:
        self._log("importing the images into containerd (no prepared root found; `make setup` makes one)")
        for archive in images.archives:
            done = subprocess.run(
                [
                    "ctr",
                    f"--address={self.layout.socket}",
                    f"--namespace={NAMESPACE}",
                    "images",
                    "import",
                    str(archive),
                ],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if done.returncode != 0:
                raise base.DevClusterError(f"importing {archive} into containerd failed: {done.stderr.strip()}")

    def _containerd_serves(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.layout.socket))
            except OSError:
                return False
        return True

    def _write_cni(self) -> None:
        conf_dir = self.layout.cni / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        (self.layout.cni / "bin").mkdir(exist_ok=True)
        # Only the loopback plugin: the runtime counts its network as configured, so the node turns
        # Ready, and no Pod gets an address of its own (Pods use hostNetwork).
        conflist = {"cniVersion": "0.4.0", "name": "host-network-only", "plugins": [{"type": "loopback"}]}
        (conf_dir / "10-host-network-only.conflist").write_text(json.dumps(conflist, indent=2))

    def _containerd_config(self, images: Images) -> str:
        layout = self.layout

        def q(value: object) -> str:
            # A JSON string is a valid TOML basic string.
            return json.dumps(str(value))

        cri = '[plugins."io.containerd.grpc.v1.cri"'
        return "\n".join(
            [
                "version = 2",
                f"root = {q(layout.containerd_root)}",
                f"state = {q(layout.containerd_state)}",
                # Snapshotters this node never uses; probing them only costs time and log lines.
                'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",'
                ' "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]',
                "[grpc]",
                f"address = {q(layout.socket)}",
                '[plugins."io.containerd.internal.v1.opt"]',
                f"path = {q(layout.containerd_root / 'opt')}",
                f"{cri}]",
                # Nothing can be pulled: the sandbox image is one of ours, already in the store.
                f"sandbox_image = {q(images.refs['pause'])}",
                # Without it every sandbox fails here ("can't get final child's PID from pipe: EOF"): the
                # runtime may not lower a container's OOM score below its own.
                "restrict_oom_score_adj = true",
                # Port 0: two nodes on one machine must not both want containerd's default 10010.
                'stream_server_address = "127.0.0.1"',
                'stream_server_port = "0"',
                "netns_mounts_under_state_dir = true",
                f"{cri}.cni]",
                f"bin_dir = {q(layout.cni / 'bin')}",
                f"conf_dir = {q(layout.cni / 'net.d')}",
                f"{cri}.containerd]",
                'snapshotter = "overlayfs"',
                'default_runtime_name = "runc"',
                f"{cri}.containerd.runtimes.runc]",
                'runtime_type = "io.containerd.runc.v2"',
                f"{cri}.containerd.runtimes.runc.options]",
                # A runc root of its own: this node's containers, and only they, are found there.
                f"Root = {q(layout.runc_root)}",
                "SystemdCgroup = false",
                "",
            ]
        )

    # the controllers and the kubelet ---------------------------------------------------------------

    def _controller_manager_argv(self, kubeconfig: pathlib.Path) -> list[str]:
        certs = self.certs
        return [
            str(base.binary("kube-controller-manager")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={base.free_port()}",
            "--leader-elect=false",
            f"--controllers={','.join(_CONTROLLERS)}",
            # The token controllers: ServiceAccounts, their projected tokens' signing key, kube-root-ca.crt.
            f"--service-account-private-key-file={certs / 'sa.key'}",
            f"--root-ca-file={certs / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--cluster-signing-cert-file={certs / 'ca.crt'}",
            f"--cluster-signing-key-file={certs / 'ca.key'}",
            # Its flex volume prober would otherwise create a directory under /usr/libexec.
            f"--flex-volume-plugin-dir={self.layout.root / 'controller-manager-volume-plugins'}",
            "--v=1",
        ]

    def _scheduler_argv(self, kubeconfig: pathlib.Path) -> list[str]:
        return [
            str(base.binary("kube-scheduler")),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={base.free_port()}",
            "--leader-elect=false",
            "--v=1",
        ]

    def _kubelet_config(self) -> dict[str, object]:
        layout, certs = self.layout, self.certs
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": base.free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": base.free_port(),
            "tlsCertFile": str(certs / "kubelet-serving.crt"),
            "tlsPrivateKeyFile": str(certs / "kubelet-serving.key"),
            # Only the API server (its kubelet-client certificate) talks to the kubelet.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(certs / "ca.crt")},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{layout.socket}",
            # cgroup v1 without systemd: v1.37 refuses cgroup v1 unless told, and QoS cgroups and node
            # allocatable enforcement need a cgroup hierarchy the kubelet owns.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupsPerQOS": False,
            "enforceNodeAllocatable": [],
            "failSwapOn": False,
            "resolvConf": "",
            # Everything the kubelet writes stays under the node's directory.
            "podLogsDir": str(layout.kubelet / "pod-logs"),
            "volumePluginDir": str(layout.kubelet / "volume-plugins"),
            # The images cannot be pulled again: never garbage-collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
            "syncFrequency": self.sync_frequency,
            "serializeImagePulls": False,
        }


def _condition(node: dict[str, object], kind: str) -> str | None:
    status = node.get("status")
    conditions = status.get("conditions", []) if isinstance(status, dict) else []
    for condition in conditions:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def describe(apiserver_url: str, certs: pathlib.Path) -> str:
    """The node's conditions in one line, for ``devcluster status``."""
    node = base.get_json(f"{apiserver_url}/api/v1/nodes/{NODE_NAME}", base.admin_context(certs))
    if not node:
        return "not registered"
    parts = []
    for condition in node.get("status", {}).get("conditions", []):
        reason = condition.get("reason")
        parts.append(f"{condition.get('type')}={condition.get('status')}" + (f" ({reason})" if reason else ""))
    return ", ".join(parts) or "no conditions yet"


def pod_api_env(apiserver_url: str) -> list[dict[str, str]]:
    """Container env that points in-cluster configuration at the API server's loopback address.

    The kubelet injects the ``kubernetes`` Service's cluster IP, which nothing serves here; a container's
    own env wins over the injected one."""
    port = apiserver_url.rsplit(":", 1)[1]
    return [
        {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        {"name": "KUBERNETES_SERVICE_PORT_HTTPS", "value": port},
    ]


# --- the host's kernel tunables ----------------------------------------------------------------


# The kubelet sets these on the host at start (there is no switch to leave them alone, and
# protectKernelDefaults makes it refuse to start instead). A development machine gets them back when
# its last node goes.
KERNEL_TUNABLES = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


def _tunables_file() -> pathlib.Path:
    return nodes_dir() / "host-kernel-tunables.json"


def save_kernel_tunables() -> None:
    saved = _tunables_file()
    if saved.exists():
        return  # another node already started a kubelet: what is on the host now is not the original
    values = {}
    for name in KERNEL_TUNABLES:
        with contextlib.suppress(OSError):
            values[name] = (pathlib.Path("/proc/sys") / name).read_text().strip()
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(values))


def restore_kernel_tunables() -> None:
    saved = _tunables_file()
    if not saved.exists():
        return
    for name, value in json.loads(saved.read_text()).items():
        with contextlib.suppress(OSError):
            (pathlib.Path("/proc/sys") / name).write_text(value)
    saved.unlink()
