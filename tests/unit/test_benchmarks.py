"""The benchmarks' pure parts, so they cannot rot between the (slow, manual) benchmark runs.

The measurements themselves need a control plane and minutes of CPU and are run by ``make bench``;
here the statistics, the report writer, each benchmark's section rendering and the command line are
exercised with made-up numbers.
"""

from __future__ import annotations

import pathlib

import pytest
from benchmarks import (
    chaos,
    chaos_audit,
    chaos_rounds,
    controlplane,
    emergency,
    heapprofile,
    memory,
    opmetrics,
    pod_reload,
    receiver,
    report,
    run,
    scale,
    servers,
    stats,
)

MACHINE = {
    "cores": 2,
    "cpu": "Test CPU",
    "python": "3.11.0",
    "openssl": "OpenSSL 3.0.0",
    "date": "2026-01-02",
    "load_1min": 0.5,
}


def test_percentile_is_nearest_rank_and_never_interpolates() -> None:
    values = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.4, 0.8, 0.6, 1.0]

    assert stats.percentile(values, 0.5) == 0.5
    assert stats.percentile(values, 0.95) == 1.0  # with 10 samples, the slowest
    assert stats.percentile(values, 0.1) == 0.1
    assert stats.percentile([3.0], 0.95) == 3.0
    assert stats.percentile([*range(1, 101)], 0.95) == 95


def test_median_and_summary() -> None:
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert stats.summary([2.0, 1.0, 3.0]) == {"n": 3, "median": 2.0, "p95": 3.0, "min": 1.0, "max": 3.0}
    assert stats.summary([1.23456], digits=2)["median"] == 1.23


@pytest.mark.parametrize(("values", "q"), [([], 0.5), ([1.0], 0.0), ([1.0], 1.5)])
def test_percentile_refuses_nonsense(values: list[float], q: float) -> None:
    with pytest.raises(ValueError, match=r"no samples|q must be"):
        stats.percentile(values, q)


def test_replace_section_touches_only_its_own_section() -> None:
    text = (
        "# Title\n\nintro\n\n<!-- benchmark:a -->\nold a\n<!-- /benchmark:a -->\n\n"
        "middle\n\n<!-- benchmark:b -->\nold b\n<!-- /benchmark:b -->\n"
    )

    updated = report.replace_section(text, "a", "new a\nwith $1 and \\1 in it")

    assert "old a" not in updated
    assert "new a\nwith $1 and \\1 in it" in updated
    assert "old b" in updated and "intro" in updated and "middle" in updated
    assert report.replace_section(updated, "a", "new a\nwith $1 and \\1 in it") == updated


def test_replace_section_appends_a_missing_section() -> None:
    updated = report.replace_section("# Title\n", "c", "body")

    assert updated == "# Title\n\n<!-- benchmark:c -->\nbody\n<!-- /benchmark:c -->\n"


def test_write_section_keeps_the_rest_of_the_page(tmp_path: pathlib.Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nhand-written\n")

    report.write_section("controlplane", "## figures", doc)

    assert doc.read_text().startswith("# Benchmarks\n\nhand-written\n")
    assert "<!-- benchmark:controlplane -->\n## figures\n<!-- /benchmark:controlplane -->" in doc.read_text()


def test_machine_reports_what_the_page_needs() -> None:
    info = report.machine()

    assert isinstance(info["cores"], int) and info["cores"] >= 1
    assert set(info) == {"cores", "cpu", "python", "openssl", "date", "load_1min", "commit"}
    # The commit the figures were taken on, marked "+" when the code differed from it.
    assert report.footer("cmd", info).count(f" at commit {info['commit']} ") == 1


def test_the_real_page_has_a_section_for_every_benchmark() -> None:
    text = report.DOC.read_text()

    for name in run.NAMES:
        assert f"<!-- benchmark:{name} -->" in text and f"<!-- /benchmark:{name} -->" in text


def test_controlplane_section() -> None:
    result = {
        "start_to_ready_s": stats.summary([4.0, 5.0, 4.5, 4.2, 4.8], digits=2),
        "samples_s": [4.0, 5.0, 4.5, 4.2, 4.8],
        "target_s": controlplane.TARGET_S,
        "meets_target": True,
        "machine": MACHINE,
    }

    body = controlplane.section(result, "python benchmarks/run.py controlplane --write")

    assert "4.50 s" in body and "**meets**" in body
    assert "`python benchmarks/run.py controlplane --write`" in body and "2 cores" in body and "2026-01-02" in body
    assert "load average 0.5" in body


def test_emergency_section() -> None:
    def figures(refused: list[float], flapped: int) -> dict[str, object]:
        samples = [
            {"refused_s": r, "swap_s": r - 0.1, "refusal": "400", "accepted_after_first_refusal": 0} for r in refused
        ]
        return {
            "description": "a server",
            "annotation_to_refused_s": stats.summary(refused, digits=2),
            "annotation_to_swap_s": stats.summary([r - 0.1 for r in refused], digits=2),
            "refusals": ["400"],
            "runs_accepted_again": flapped,
            "reload_commands": {"exec": 40, "exec_failed": 0},
            "samples": samples,
        }

    fast = [0.2] * 19 + [0.9]
    result = {
        "others": 1000,
        "runs_per_server": 20,
        "servers": {"nginx": figures(fast, 3), "haproxy": figures([0.3] * 18 + [1.2, 1.4], 0)},
        "probe_interval_s": emergency.PROBE_INTERVAL,
        "target_p95_s": emergency.TARGET_P95_S,
        "meets_target": False,
        "machine": MACHINE,
    }

    body = emergency.section(result, "python benchmarks/run.py emergency --write")

    assert "| nginx: a server | 0.10 / 0.10 | 0.20 | 0.20 | 0.20 / 0.90 | `400` | 3/20 |" in body
    assert "| haproxy: a server | 0.20 / 1.10 | 0.30 | 1.20 | 0.30 / 1.40 | `400` | 0/20 |" in body
    assert "1,000 other WebhookCertificates" in " ".join(body.split())
    assert "p95 <= 1.0 s on every server: **misses** it" in body
    assert "nginx: 40 reload commands run, 0 failed" in body
    # The old design's prose (key generation before containment, a timer) is gone.
    assert "key generation" not in body.lower() and "timer" not in body


def test_the_command_line_refuses_to_record_an_emergency_among_fewer_objects(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run.main(["emergency", "--write", "--emergency-others", "10"]) == 2
    assert f"at least {emergency.DEFAULT_OTHERS} other objects" in capsys.readouterr().err


def test_the_keygen_bound_is_read_from_the_operators_histogram() -> None:
    exposition = "\n".join(
        [
            "# TYPE webhookcerts_key_generation_seconds histogram",
            'webhookcerts_key_generation_seconds_bucket{le="1.0"} 3.0',
            "webhookcerts_key_generation_seconds_count 5.0",
            "webhookcerts_key_generation_seconds_sum 7.25",
            'webhookcerts_certificate_stage{name="a",namespace="n",environment="live",stage="Active"} 1.0',
        ]
    )
    after = opmetrics.keygen_totals(exposition)
    assert after == opmetrics.KeygenTotals(count=5.0, seconds=7.25)
    assert after - opmetrics.KeygenTotals(count=2.0, seconds=1.25) == opmetrics.KeygenTotals(3.0, 6.0)
    with pytest.raises(ValueError, match="no webhookcerts_key_generation_seconds"):
        opmetrics.keygen_totals("process_cpu_seconds_total 1.0")


def test_issued_records_are_read_from_the_operators_log() -> None:
    log = "\n".join(
        [
            "2026-12-06 08:40:01,250 INFO webhookcerts.service.state: bench/c-0001: Issued: issued serial AB",
            "2026-12-06 08:40:02,000 INFO webhookcerts.service.state: bench/c-0001: TrustStoreUpdated: x",
            "2026-12-06 08:40:03,500 INFO webhookcerts.service.state: bench/c-0002: Issued: issued serial CD",
            "2026-12-06 08:40:04,000 INFO kopf.objects: Issued: not ours",
        ]
    )
    first, last = opmetrics.issued_times(log)
    assert last - first == pytest.approx(2.25)
    # 100 s waited for, a bound of 80 s, 1.5 s a key; the first Issued 5 s after the start, the last 97 s.
    over = scale.breakdown(100.0, 80.0, [1005.0, 1097.0], 1000.0, 1.5)
    assert over == {"before_first_key_s": 3.5, "after_last_issued_s": 3.0, "in_between_s": 13.5}


def test_the_cost_per_object_is_the_line_through_both_runs() -> None:
    line = memory.per_object({"n": 100, "peak_rss_kb": 100 * 1024}, 1000, 118 * 1024)
    assert line == {"kb_per_object": 20.5, "mb_at_zero": 98.0}
    # The restarted operator's peak has a line of its own, through the small run's restart.
    small = {"n": 100, "peak_rss_kb": 100 * 1024, "restart_peak_rss_kb": 90 * 1024}
    assert memory.per_object(small, 1000, 117 * 1024, "restart_peak_rss_kb") == {
        "kb_per_object": 30.7,
        "mb_at_zero": 87.0,
    }


def test_heap_groups_name_the_package_that_allocated() -> None:
    assert heapprofile.group("/venv/lib/python3.11/site-packages/kopf/_core/x.py") == "kopf"
    assert heapprofile.group("/src/project/operator/webhookcerts/service/view.py") == "webhookcerts/service/view.py"
    assert heapprofile.group(f"{heapprofile.STDLIB}/json/decoder.py") == "stdlib/json"
    assert heapprofile.group("<frozen importlib._bootstrap_external>") == "imports (code objects, module dicts)"


def scale_result() -> dict[str, object]:
    return {
        "n": 1000,
        "create_s": 4.2,
        "ready_s": 460.0,
        "keys_generated": 1000,
        "keygen_seconds": 840.0,
        "keygen_mean_s": 0.84,
        "keygen_slots": 2,
        "keygen_bound_s": 420.0,
        "ready_x_bound": 1.1,
        "over_bound": {"before_first_key_s": 3.0, "after_last_issued_s": 2.5, "in_between_s": 34.5},
        "peak_rss_mb": 118.0,
        "burst_peak_rss_mb": 118.0,
        "restart_peak_rss_mb": 117.0,
        "restarted_rss_mb": 101.0,
        "small": {
            "n": 100,
            "ready_s": 45.0,
            "peak_rss_kb": 100 * 1024,
            "settled_rss_kb": 98 * 1024,
            "restart_peak_rss_kb": 90 * 1024,
        },
        "per_object": {"kb_per_object": 20.5, "mb_at_zero": 98.0},
        "per_object_restart": {"kb_per_object": 30.7, "mb_at_zero": 87.0},
        "heap": {
            "traced_kb": 40 * 1024,
            "peak_traced_kb": 50 * 1024,
            "traced_process_rss_kb": 150 * 1024,
            "groups": [{"group": "kopf", "kb": 10 * 1024, "blocks": 12345}],
        },
        "malloc_env": {"MALLOC_ARENA_MAX": "2"},
        "idle_s": 300.0,
        "idle_cpu_percent": 0.01,
        "idle_requests_per_min": 2.0,
        "baseline_requests_per_min": 30.0,
        "containment_s": stats.summary([0.05] * 20),
        "replacement_s": stats.summary([0.6] * 20),
        "sigterm_to_exit_s": 0.9,
        "restart_to_idle_s": 40.0,
        "restart_keys_issued": 0,
        "restart_secrets_rewritten": 0,
        "machine": MACHINE,
        "meets": dict.fromkeys(scale.TARGETS, True),
    }


def test_scale_section_gives_the_bound_from_the_same_keys_and_where_the_memory_is() -> None:
    body = scale.section(scale_result(), "python benchmarks/run.py scale --write")

    assert "460.0 s = 1.10 x the key-generation bound (420.0 s: 1000 keys took 840.0 s of generation" in body
    assert "| <= 1.15 x | meets |" in body
    assert (
        "118 MB (burst: N=100: 100 MB, N=1000: 118 MB, 20 kB per object, 98 MB at none; "
        "restart: N=100: 90 MB, N=1000: 117 MB, 31 kB per object, 87 MB at none) | <= 120 MB | meets |"
    ) in body
    prose = " ".join(body.split())  # the paragraphs are wrapped
    assert "peaks at 90 MB with 100 and 117 MB with 1000 (31 kB per object, 87 MB at none)" in prose
    assert "it held 101 MB: the burst's peak above that is what the burst adds" in prose
    restart_higher = {**scale_result(), "burst_peak_rss_mb": 100.0}
    prose = " ".join(scale.section(restart_higher, "python benchmarks/run.py scale --write").split())
    assert "it held 101 MB: the start-up, not the burst, sets the peak." in prose
    assert "The rest, 40.0 s: 3.0 s from the first create" in prose
    assert "`MALLOC_ARENA_MAX=2`" in prose
    assert "| `kopf` | 10.0 | 25 % | 12,345 |" in body


def test_receiver_section() -> None:
    def variant(rate: float) -> dict[str, object]:
        return {
            "deliveries_per_s": rate,
            "runs_per_s": [rate - 1, rate + 1],
            "latency_ms_p95": 50.0,
            "failed": 0,
            "receiver_reloads": [10, 11],
        }

    modes = {
        "new_connection": {"steady": variant(100.0), "reload_every_1s": variant(90.0)},
        "keep_alive": {"steady": variant(1000.0), "reload_every_1s": variant(1000.0)},
    }
    result = {"concurrency": 32, "repeats": 2, "seconds": 10.0, "modes": modes, "machine": MACHINE}

    body = receiver.section(result, "python benchmarks/run.py receiver --write")

    assert "| new TLS connection per delivery | 100 | 90 | -10 % |" in body
    assert "| keep-alive | 1000 | 1000 | +0 % |" in body
    assert "new TLS connection per delivery: steady 99, 101; reloading 89, 91" in body


def test_the_command_line_refuses_unknown_benchmarks_and_short_recorded_runs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        run.main(["nonsense"])
    assert run.main(["emergency", "--write", "--emergency-runs", "3"]) == 2
    assert "at least" in capsys.readouterr().err


def test_pod_reload_section() -> None:
    hot, cold = [0.2, 0.3, 0.25], [31.0, 12.5, 58.0]
    samples = [{"nudge": True, "accepted_s": s, "volume_s": s - 0.1} for s in hot]
    samples += [{"nudge": False, "accepted_s": s, "volume_s": None} for s in cold]
    result = {
        "secret_to_accepted_s": {"nudge": stats.summary(hot, digits=2), "sync": stats.summary(cold, digits=2)},
        "secret_to_volume_s": {"nudge": stats.summary([s - 0.1 for s in hot], digits=2), "sync": None},
        "kubelet_sync_frequency": pod_reload.KUBELET_DEFAULT_SYNC,
        "target_s": pod_reload.TARGET_S,
        "meets_target": True,
        "p95_within_target": True,
        "samples": samples,
        "probe_interval_s": pod_reload.PROBE_INTERVAL,
        "machine": MACHINE,
    }

    body = pod_reload.section(result, "python benchmarks/run.py pod-reload --write")

    assert "| Secret -> pod accepts, with the Hot nudge | 0.25 | 0.30 |" in body
    assert "| Secret -> kubelet swaps the volume, with the Hot nudge | 0.15 | 0.20 |" in body
    assert "| Secret -> pod accepts, without (kubelet's periodic sync) | 31.00 | 58.00 |" in body
    assert "kubelet swaps the volume, without" not in body
    assert "`syncFrequency: 1m` (the kubelet's default)" in " ".join(body.split())
    assert "with the nudge: 0.20, 0.30, 0.25; without: 31.00, 12.50, 58.00." in body
    assert "**meets**" in body


def test_the_command_line_refuses_to_record_short_pod_reload_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["pod-reload", "--write", "--pod-reload-runs", "3"]) == 2
    assert f"at least {pod_reload.MIN_RUNS} pod reload runs" in capsys.readouterr().err


def _chaos_result(defect: bool = False) -> dict[str, object]:
    paths = {}
    for path in chaos_rounds.PATHS:
        figures = chaos_audit.Stats(path, interruptions=30, survived=30, mid_rotation=28, rotations_checked=180)
        figures.trust_samples, figures.converge_s = 4000, [3.0, 4.0, 9.5]
        paths[path] = figures
    components = {
        c: chaos_audit.Stats(c, interruptions=3, survived=3, rotations_checked=18) for c in chaos_rounds.COMPONENTS
    }
    components["etcd"].converge_s = [2.0, 3.0, 4.0]
    if defect:
        paths["emergency"].double_rotations = 1
        paths["emergency"].defects.append("emergency em chaos/em-o1: double rotation: revision 9\n  operator log:")
    audit = chaos_audit.Stats("final audit", rotations_checked=186)
    return chaos.summarize(paths, components, audit, seed=13, objects=6, relists=0, duration_s=900.0, machine=MACHINE)


def test_chaos_section() -> None:
    body = chaos.section(_chaos_result(), "python benchmarks/run.py chaos --write")

    assert "| planned | 30 (30) | 28 | 180 | 0 | 0 | 0 | 0 (4000) | 0 | 0 | 4.0 / 9.5 |" in body
    assert "| kube-apiserver | 3 (3) | 0 | 18 | 0 | 0 | 0 | 0 (0) | 0 | 0 | - |" in body
    assert "| etcd | 3 (3) | 0 | 18 | 0 | 0 | 0 | 0 (0) | 0 | 0 | 3.0 / 4.0 |" in body
    assert "90 of 90 kills and 6 of 6 control plane stops survived, 576 rotations checked" in " ".join(body.split())
    assert "**Clean**" in body and "seed 13" in body and "`python benchmarks/run.py chaos --write`" in body


def test_chaos_section_names_each_defect() -> None:
    result = _chaos_result(defect=True)

    body = chaos.section(result, "python benchmarks/run.py chaos --write")

    assert result["clean"] is False
    assert "**Defects found**" in body and "- emergency em chaos/em-o1: double rotation: revision 9" in body
    assert "operator log" not in body


def test_the_command_line_refuses_to_record_a_short_chaos_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["chaos", "--write", "--chaos-kills", "5"]) == 2
    assert f"at least {chaos.MIN_KILLS} kills per path" in capsys.readouterr().err


def test_servers_section() -> None:
    def figures(refused: list[float], flapped: int, reloads: dict[str, int] | None) -> dict[str, object]:
        samples = [{"refused_s": r, "swap_s": 0.02, "accepted_after_first_refusal": 0} for r in refused]
        return {
            "description": "a server",
            "secret_to_refused_s": stats.summary(refused, digits=2),
            "secret_to_swap_s": stats.summary([0.02] * len(refused), digits=2),
            "refusals": ["400"],
            "runs_accepted_again": flapped,
            "reload_commands": reloads,
            "samples": samples,
        }

    result = {
        "runs_per_server": 10,
        "servers": {
            "nginx": figures([0.1] * 9 + [0.5], 2, {"exec": 20, "exec_failed": 0}),
            "go": figures([0.08] * 10, 0, None),
        },
        "probe_interval_s": servers.PROBE_INTERVAL,
        "machine": MACHINE,
    }

    body = servers.section(result, "python benchmarks/run.py servers --write")

    assert "| nginx: a server | 0.02 | 0.10 | 0.10 | 0.50 | `400` | 2/10 |" in body
    assert "| go: a server | 0.02 | 0.08 | 0.08 | 0.08 | `400` | 0/10 |" in body
    assert "nginx: 20 reload commands run, 0 failed." in body and "go: " not in body.split("slowest run.")[1]


def test_the_command_line_refuses_to_record_short_server_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["servers", "--write", "--servers-runs", "3"]) == 2
    assert "at least 10 runs per server" in capsys.readouterr().err


def test_a_section_says_when_the_code_changed_after_it_ran() -> None:
    head = report.tree()["commit"].rstrip("+")
    first = report._git("rev-list", "--max-parents=0", "HEAD").splitlines()[0][:12]

    def page(footer: str) -> str:
        return f"# B\n\n<!-- benchmark:x -->\n## X\n\n{footer}\n<!-- /benchmark:x -->\n\nprose\n"

    at_head = page(f"Measured 2026-12-06 at commit {head} with `cmd` on 2 cores.")
    assert report.mark_stale(at_head, head) == at_head
    marked = report.mark_stale(page(f"Measured 2026-12-06 at commit {first} with `cmd` on 2 cores."), head)
    assert f"{report.STALE} **Not measured on today's code**: " in marked and f"({first})" in marked
    assert "uncommitted changes" in report.mark_stale(page(f"Measured 2026-12-06 at commit {head}+ with `cmd`."), head)
    assert "records no commit" in report.mark_stale(page("Measured 2000-01-01 with `cmd` on 2 cores."), head)
    # Marking again replaces the note rather than adding one, and leaves the prose outside alone.
    assert report.mark_stale(marked, head) == marked and marked.endswith("prose\n")
    assert report.mark_stale(marked.replace(first, head), head) == at_head
