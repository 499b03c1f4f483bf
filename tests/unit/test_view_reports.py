"""The view's PresentationReports: newer versions win, and a report that moves to another trust Secret
says which one it left (the objects naming either are looked at again)."""

from __future__ import annotations

from tests.unit.test_reporters import report
from webhookcerts.domain import reporters
from webhookcerts.service import view

RUNNING = reporters.PodFacts(exists=True, uid="u-1", phase="Running", secrets=frozenset({"webhook-trust"}))


def parsed(version: str, trust: str = "webhook-trust", facts: reporters.PodFacts = RUNNING) -> reporters.Report:
    body = report(trust=trust)
    body["metadata"]["resourceVersion"] = version
    return reporters.Report.parse(body, facts)


def test_a_report_is_kept_by_trust_secret_and_an_older_version_does_not_overwrite_it() -> None:
    seen = view.View()
    assert seen.put_report(parsed("7")) == ""
    assert seen.put_report(parsed("7")) is None  # the same version and pod: nothing changed
    assert seen.put_report(parsed("5", trust="other")) is None  # a late event of an older version
    assert [r.pod for r in seen.reports_for("ns", "webhook-trust")] == ["recv-0"]
    assert seen.reports_for("ns", "other") == [] and seen.reports_for("elsewhere", "webhook-trust") == []


def test_a_pod_read_again_with_other_facts_changes_the_view() -> None:
    seen = view.View()
    seen.put_report(parsed("7"))
    stopped = reporters.PodFacts(exists=True, uid="u-1", phase="Failed")
    assert seen.put_report(parsed("7", facts=stopped)) == ""
    held = seen.report("ns", "recv-0")
    assert held is not None and held.facts == stopped


def test_a_report_moved_to_another_trust_secret_names_the_one_it_left() -> None:
    seen = view.View()
    seen.put_report(parsed("7"))
    assert seen.put_report(parsed("8", trust="other")) == "webhook-trust"
    assert seen.reports_for("ns", "webhook-trust") == []
    dropped = seen.drop_report("ns", "recv-0")
    assert dropped is not None and dropped.spec.trust_secret_name == "other"
    assert seen.reports_for("ns", "other") == []
