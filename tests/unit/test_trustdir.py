"""The kubelet's atomic directory layout: how it is written, that readers never see a torn update, and
that the watcher notices swaps of the ``..data`` link (which a watch on the file itself would miss)."""

from __future__ import annotations

import os
import pathlib
import re
import threading
import time

import pytest

from webhookcerts.receiver import trustdir


def _poll(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return False


def test_layout_matches_the_kubelet(tmp_path: pathlib.Path) -> None:
    assert trustdir.write_atomic(tmp_path, {"ca.crt": b"one", "extra.pem": b"two"})

    data_target = os.readlink(tmp_path / "..data")
    # The kubelet names its data directories ..YYYY_MM_DD_HH_MM_SS.<random>, relative to the volume.
    assert re.fullmatch(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\w+", data_target)
    assert (tmp_path / data_target).is_dir()
    assert os.readlink(tmp_path / "ca.crt") == "..data/ca.crt"
    assert os.readlink(tmp_path / "extra.pem") == "..data/extra.pem"
    assert (tmp_path / "ca.crt").read_bytes() == b"one"
    assert oct((tmp_path / data_target / "ca.crt").stat().st_mode & 0o777) == oct(0o644)
    assert trustdir.read(tmp_path) == {"ca.crt": b"one", "extra.pem": b"two"}
    assert not (tmp_path / "..data_tmp").exists()


def test_unchanged_bytes_are_not_rewritten(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"ca.crt": b"same"})
    before = os.readlink(tmp_path / "..data")

    assert trustdir.write_atomic(tmp_path, {"ca.crt": b"same"}) is False
    assert os.readlink(tmp_path / "..data") == before


def test_update_swaps_the_link_and_cleans_up(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"ca.crt": b"old", "gone.pem": b"x"})
    old_dir = os.readlink(tmp_path / "..data")

    assert trustdir.write_atomic(tmp_path, {"ca.crt": b"new"})

    new_dir = os.readlink(tmp_path / "..data")
    assert new_dir != old_dir
    assert not (tmp_path / old_dir).exists()
    assert (tmp_path / "ca.crt").read_bytes() == b"new"
    assert not (tmp_path / "gone.pem").is_symlink()
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".."))
    assert hidden == sorted(["..data", new_dir])


def test_a_plain_file_is_replaced_by_the_layout(tmp_path: pathlib.Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"hand-written")

    trustdir.write_atomic(tmp_path, {"ca.crt": b"synced"})

    assert (tmp_path / "ca.crt").is_symlink()
    assert (tmp_path / "ca.crt").read_bytes() == b"synced"


@pytest.mark.parametrize("name", ["..data", "../escape", "a/b", "..", ".", "", "..hidden"])
def test_names_that_would_break_the_layout_are_refused(tmp_path: pathlib.Path, name: str) -> None:
    with pytest.raises(trustdir.TrustDirError):
        trustdir.write_atomic(tmp_path, {name: b"x"})
    assert not (tmp_path / "..data").exists()


def test_readers_never_see_a_mix_of_two_versions(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"a": b"0", "b": b"0"})
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            trustdir.write_atomic(tmp_path, {"a": str(n).encode(), "b": str(n).encode()})

    thread = threading.Thread(target=writer)
    thread.start()
    snapshots: list[dict[str, bytes]] = []
    try:
        # Read until the writer has really run in between, 20 versions' worth, however the threads are
        # scheduled (a fixed number of reads could all fall between two of its writes on a busy machine).
        versions: set[bytes] = set()
        while len(versions) < 20 and len(snapshots) < 1_000_000:
            snapshots.append(trustdir.read(tmp_path))
            versions.add(snapshots[-1]["a"])
    finally:
        stop.set()
        thread.join()
    assert len(versions) >= 20, f"the writer ran {len(versions)} times in {len(snapshots)} reads"
    assert all(s["a"] == s["b"] for s in snapshots)


def test_watcher_calls_back_on_a_link_swap_only(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"ca.crt": b"v1"})
    calls: list[bytes] = []
    watcher = trustdir.Watcher([tmp_path / "ca.crt"], lambda: calls.append((tmp_path / "ca.crt").read_bytes()))

    assert watcher.poll() is False
    trustdir.write_atomic(tmp_path, {"ca.crt": b"v2"})
    assert watcher.poll() is True
    assert watcher.poll() is False
    assert trustdir.write_atomic(tmp_path, {"ca.crt": b"v2"}) is False
    assert watcher.poll() is False
    assert calls == [b"v2"]


def test_watcher_notices_a_file_rewritten_in_place(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "ca.crt"
    target.write_bytes(b"first")
    calls: list[int] = []
    watcher = trustdir.Watcher([target], lambda: calls.append(1))

    target.write_bytes(b"second, longer")

    assert watcher.poll() is True
    assert calls == [1]


def test_watcher_thread_survives_a_failing_callback(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"ca.crt": b"v1"})
    seen: list[bytes] = []

    def callback() -> None:
        content = (tmp_path / "ca.crt").read_bytes()
        seen.append(content)
        if content == b"v2":
            raise RuntimeError("a bad update")

    watcher = trustdir.Watcher([tmp_path / "ca.crt"], callback, interval=0.02).start()
    try:
        trustdir.write_atomic(tmp_path, {"ca.crt": b"v2"})
        assert _poll(lambda: b"v2" in seen)
        trustdir.write_atomic(tmp_path, {"ca.crt": b"v3"})
        assert _poll(lambda: b"v3" in seen)
    finally:
        watcher.stop()


def test_leftovers_of_an_interrupted_write_are_tidied(tmp_path: pathlib.Path) -> None:
    trustdir.write_atomic(tmp_path, {"ca.crt": b"v1", "new.pem": b"n"})
    # As if a writer died after creating a data directory but before swapping the link, and someone
    # removed a user-visible link.
    (tmp_path / "..2020_01_01_00_00_00.orphan").mkdir()
    (tmp_path / "new.pem").unlink()

    assert trustdir.write_atomic(tmp_path, {"ca.crt": b"v1", "new.pem": b"n"}) is False

    assert not (tmp_path / "..2020_01_01_00_00_00.orphan").exists()
    assert os.readlink(tmp_path / "new.pem") == "..data/new.pem"
    assert trustdir.read(tmp_path) == {"ca.crt": b"v1", "new.pem": b"n"}
