"""Build the local cluster's container images without a registry, and only when their inputs change.

The local node cannot pull anything, so every image it runs is built here and exported as an archive
that the node imports into its containerd when it starts:

- ``pause``: the sandbox image, a static Go binary from ``tools/images/pause``;
- ``webhookcerts``: ``operator/Dockerfile`` built with buildah on ``webhookcerts-base``, a Debian
  root file system made by mmdebstrap (the Dockerfile's default base, the official Python image, would
  need a registry). Its dependencies come from a wheelhouse downloaded here, because builds have no
  route to PyPI of their own.

Each artefact is named after a hash of its inputs, so a second run finds everything and takes well under
a second. The result is ``images.json`` in the images cache directory: image reference and archive path
per image, read by ``webhookcerts.devcluster``.

    python3 tools/images/build.py                  build what is missing, print the manifest's path
    python3 tools/images/build.py --print-manifest only print where the manifest is
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parents[2]
HERE = REPO / "tools" / "images"

# Debian bookworm's python3 is 3.11, the version the package supports first; python3-venv carries the
# pip that installs the package in the build stage.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Documentation, manuals and translations are a third of a Debian root file system and nobody reads them
# in a container.
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
# The interpreter and platform of the base, for which the wheelhouse is downloaded.
WHEEL_PYTHON = "3.11"
WHEEL_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
# Bump to rebuild everything when this script's way of building changes.
RECIPE_VERSION = "1"


def cache_dir() -> pathlib.Path:
    root = os.environ.get("WEBHOOKCERTS_CACHE") or str(pathlib.Path.home() / ".cache" / "webhookcerts")
    return pathlib.Path(root) / "images"


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()[:16]


def hash_files(paths: list[pathlib.Path]) -> str:
    return digest(*(item for p in sorted(paths) for item in (str(p.relative_to(REPO)), p.read_bytes())))


class Builder:
    def __init__(self, directory: pathlib.Path) -> None:
        self.dir = directory
        self.storage = directory / "storage"
        env = dict(os.environ)
        # chroot isolation and the vfs driver need neither user namespaces nor overlay mounts, which a
        # VM or a container may not allow.
        env["BUILDAH_ISOLATION"] = "chroot"
        self.env = env

    def _run(self, args: tuple[str, ...], stdout: int | None) -> subprocess.CompletedProcess[str]:
        argv = [
            "buildah",
            f"--root={self.storage / 'root'}",
            f"--runroot={self.storage / 'run'}",
            "--storage-driver=vfs",
            *args,
        ]
        return subprocess.run(argv, env=self.env, check=False, text=True, stdout=stdout, stderr=subprocess.PIPE)

    def buildah(self, *args: str, capture: bool = False) -> str:
        result = self._run(args, subprocess.PIPE if capture else sys.stderr.fileno())
        if result.returncode != 0:
            raise SystemExit(
                f"images: `buildah {' '.join(args)}` failed with code {result.returncode}:\n{result.stderr}"
            )
        return result.stdout.strip() if capture else ""

    def has_image(self, ref: str) -> bool:
        return self._run(("inspect", "--type=image", ref), subprocess.DEVNULL).returncode == 0

    def export(self, ref: str, archive: pathlib.Path) -> None:
        # A docker archive carries the image's name, so `ctr images import` restores it under that name.
        tmp = archive.with_name(f".{archive.name}.tmp")
        tmp.unlink(missing_ok=True)
        self.buildah("push", "--quiet", ref, f"docker-archive:{tmp}:{ref}")
        tmp.replace(archive)

    # the base --------------------------------------------------------------------------------------

    def base(self) -> str:
        key = digest(RECIPE_VERSION, BASE_SUITE, *BASE_PACKAGES, *BASE_EXCLUDES)
        ref = f"localhost/webhookcerts-base:{BASE_SUITE}-{key}"
        if self.has_image(ref):
            return ref
        log(f"making a Debian {BASE_SUITE} root file system with {', '.join(BASE_PACKAGES)} (about a minute) ...")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            rootfs = pathlib.Path(tmp) / "rootfs.tar"
            subprocess.run(
                [
                    "mmdebstrap",
                    "--quiet",
                    "--variant=minbase",
                    f"--include={','.join(BASE_PACKAGES)}",
                    *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_EXCLUDES),
                    BASE_SUITE,
                    str(rootfs),
                ],
                check=True,
            )
            container = self.buildah("from", "scratch", capture=True)
            self.buildah("add", "--quiet", container, str(rootfs), "/")
            self.buildah(
                "config",
                "--env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--env=LANG=C.UTF-8",
                '--cmd=["python3"]',
                container,
            )
            self.buildah("commit", "--quiet", "--rm", container, ref, capture=True)
        log(f"base image {ref} in {time.monotonic() - started:.0f} s")
        return ref

    # pause -----------------------------------------------------------------------------------------

    def pause(self) -> tuple[str, pathlib.Path]:
        source = HERE / "pause"
        go_version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout
        key = digest(RECIPE_VERSION, go_version.strip(), hash_files([source / "go.mod", source / "main.go"]))
        ref = f"localhost/webhookcerts-pause:{key}"
        archive = self.dir / f"pause-{key}.tar"
        if archive.exists():
            return ref, archive
        log("building the pause image ...")
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            binary = pathlib.Path(tmp) / "pause"
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath -buildvcs=false"}
            subprocess.run(["go", "build", "-ldflags=-s -w", "-o", str(binary), "."], cwd=source, env=env, check=True)
            container = self.buildah("from", "scratch", capture=True)
            self.buildah("copy", "--quiet", container, str(binary), "/pause")
            # 65535 is the user Kubernetes' own pause image runs as.
            self.buildah("config", '--entrypoint=["/pause"]', "--user=65535:65535", container)
            self.buildah("commit", "--quiet", "--rm", container, ref, capture=True)
        self.export(ref, archive)
        self.buildah("rmi", ref, capture=True)
        return ref, archive

    # the wheelhouse --------------------------------------------------------------------------------

    def wheels(self) -> pathlib.Path:
        project = tomllib.loads((REPO / "pyproject.toml").read_text())
        requirements = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
        key = digest(RECIPE_VERSION, WHEEL_PYTHON, *WHEEL_PLATFORMS, *requirements)
        wheelhouse = self.dir / f"wheels-{key}"
        if wheelhouse.is_dir():
            return wheelhouse
        log("downloading the dependencies' wheels ...")
        tmp = self.dir / f".wheels-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--dest",
                str(tmp),
                # Binary wheels for the base's interpreter, not for whatever runs this script.
                "--only-binary=:all:",
                f"--python-version={WHEEL_PYTHON}",
                "--implementation=cp",
                f"--abi=cp{WHEEL_PYTHON.replace('.', '')}",
                *(f"--platform={platform}" for platform in WHEEL_PLATFORMS),
                *requirements,
            ],
            check=True,
        )
        tmp.rename(wheelhouse)
        return wheelhouse

    # the project image -----------------------------------------------------------------------------

    def project(self, base: str, wheelhouse: pathlib.Path) -> tuple[str, pathlib.Path]:
        # The files the build context lets in (see .dockerignore), plus the recipe and what it builds on.
        package = [
            p
            for p in (REPO / "operator" / "webhookcerts").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
        inputs = [REPO / "operator" / "Dockerfile", REPO / ".dockerignore", REPO / "pyproject.toml", REPO / "README.md"]
        key = digest(RECIPE_VERSION, base, wheelhouse.name, hash_files(inputs + package))
        ref = f"localhost/webhookcerts:{key}"
        archive = self.dir / f"webhookcerts-{key}.tar"
        if archive.exists():
            return ref, archive
        log(f"building {ref} from operator/Dockerfile ...")
        started = time.monotonic()
        self.buildah(
            "bud",
            "--quiet",
            "--layers=false",
            "--file",
            str(REPO / "operator" / "Dockerfile"),
            f"--build-arg=BASE_IMAGE={base}",
            "--build-arg=PIP_INSTALL_OPTIONS=--no-index --find-links=/wheels",
            f"--volume={wheelhouse}:/wheels:ro",
            f"--tag={ref}",
            str(REPO),
            capture=True,
        )
        self.export(ref, archive)
        # vfs keeps a full copy per layer: keep the storage to the base, the only image reused.
        self.buildah("rmi", ref, capture=True)
        log(f"built {ref} in {time.monotonic() - started:.0f} s")
        return ref, archive

    # a containerd root holding both -------------------------------------------------------------

    def containerd_root(self, archives: list[pathlib.Path]) -> pathlib.Path:
        """Import the archives once into a containerd root of its own; every node starts from a
        hard-linked copy of it (a second) instead of importing again (15 s for the project image)."""
        version = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=True).stdout
        key = digest(RECIPE_VERSION, version.strip(), *(a.name for a in archives))
        target = self.dir / f"containerd-root-{key}"
        if target.is_dir():
            return target
        log("importing the images into a containerd root ...")
        tmp = self.dir / f".containerd-root-{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        # The socket's path must fit in 108 bytes, which a deep cache directory may not.
        with tempfile.TemporaryDirectory(prefix="whc-images-") as run:
            sock = pathlib.Path(run) / "containerd.sock"
            config = pathlib.Path(run) / "config.toml"
            config.write_text(
                "\n".join(
                    [
                        "version = 2",
                        f"root = {json.dumps(str(tmp))}",
                        f"state = {json.dumps(str(pathlib.Path(run) / 'state'))}",
                        # Only the image and content stores are needed; the node's containerd runs the CRI.
                        'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                        "[grpc]",
                        f"address = {json.dumps(str(sock))}",
                        '[plugins."io.containerd.internal.v1.opt"]',
                        f"path = {json.dumps(str(tmp / 'opt'))}",
                        "",
                    ]
                )
            )
            with (pathlib.Path(run) / "containerd.log").open("w") as out:
                daemon = subprocess.Popen(["containerd", f"--config={config}"], stdout=out, stderr=out)
            try:
                deadline = time.monotonic() + 30
                while not sock.exists():
                    if daemon.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(
                            f"images: containerd did not start:\n{(pathlib.Path(run) / 'containerd.log').read_text()}"
                        )
                    time.sleep(0.1)
                for archive in archives:
                    subprocess.run(
                        ["ctr", f"--address={sock}", "--namespace=k8s.io", "images", "import", str(archive)],
                        check=True,
                        stdout=subprocess.DEVNULL,
                    )
            finally:
                daemon.terminate()
                daemon.wait(timeout=30)
        tmp.rename(target)
        return target

    def prune(self, keep: set[pathlib.Path], base: str) -> None:
        for path in self.dir.iterdir():
            prefixes = ("pause-", "webhookcerts-", "wheels-", "containerd-root-", ".containerd-root-")
            if path.name.startswith(prefixes) and path not in keep:
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        for ref in self.buildah("images", "--format={{.Name}}:{{.Tag}}", capture=True).split():
            if ref.startswith("localhost/webhookcerts-base:") and ref != base:
                self.buildah("rmi", ref, capture=True)


@contextlib.contextmanager
def locked(directory: pathlib.Path) -> Iterator[None]:
    # Two `make setup` runs at once would race on the same archives and buildah storage.
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"images: {', '.join(missing)} not found: run `make setup` (it installs them from Debian packages)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print-manifest", action="store_true", help="only print the manifest's path")
    args = parser.parse_args()
    directory = cache_dir()
    manifest = directory / "images.json"
    if args.print_manifest:
        print(manifest)
        return 0
    require("buildah", "mmdebstrap", "go", "containerd", "ctr")
    directory.mkdir(parents=True, exist_ok=True)
    with locked(directory):
        builder = Builder(directory)
        base = builder.base()
        pause_ref, pause_archive = builder.pause()
        wheelhouse = builder.wheels()
        project_ref, project_archive = builder.project(base, wheelhouse)
        seeded = builder.containerd_root([pause_archive, project_archive])
        images = {
            "images": {
                "pause": {"ref": pause_ref, "archive": str(pause_archive)},
                "webhookcerts": {"ref": project_ref, "archive": str(project_archive)},
            },
            "containerd_root": str(seeded),
        }
        tmp = manifest.with_name(".images.json.tmp")
        tmp.write_text(json.dumps(images, indent=2) + "\n")
        tmp.replace(manifest)
        builder.prune({pause_archive, project_archive, wheelhouse, seeded}, base)
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
