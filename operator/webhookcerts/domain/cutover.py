"""The observed cut-over (``spec.cutover.policy: Observed``): do the reports prove the provider switched?

The provider holds a copy of the key and alone decides when it presents the next certificate. Under
``Observed`` the operator cuts over by itself once the endpoints' PresentationReports prove it
(``reports.observed_switch``); until then the ``CutoverReady`` condition says what it waits for. Both
read the one verdict computed here, so what the condition says is what the chain does.

It applies to any pending next:

- a planned next (stage Rotating): the cut-over takes trust from the current certificate, so it needs
  the next accepted ``minPresentations`` times and the current unseen for ``quietPeriod`` at every live
  reporter;
- an emergency replacement (stage Compromised) under ``KeepUntilCutover``: the same proof, since the
  compromised certificate is still trusted and the provider may still need it. Whoever holds the stolen
  key can keep it presented and so hold the cut-over off: the condition says so, and a cut-over by hand
  revokes it at once;
- an emergency replacement under ``RevokeImmediately``: containment already took the current
  certificate out of every trust form, so the cut-over drops no trust; the replacement accepted
  ``minPresentations`` times at live reporters is enough (no quiet period the thief could prevent).

Pure: no I/O.
"""

from __future__ import annotations

from webhookcerts.domain import models, reports
from webhookcerts.domain.observations import Observation

# The reports were not read (the operator lacks the rights, or has not listed them yet): CutoverReady is
# Unknown, never a guess.
UNKNOWN = "ReportsUnknown"


def applies(spec: models.WebhookCertificateSpec, status: models.WebhookCertificateStatus) -> bool:
    """Observed policy and a pending next beside a current certificate."""
    return spec.cutover.policy == "Observed" and status.current is not None and status.next is not None


def current_trusted(spec: models.WebhookCertificateSpec, status: models.WebhookCertificateStatus) -> bool:
    """Whether a cut-over would take trust from the current certificate (``trust.trusted_certificates``)."""
    current = status.current
    if current is None or current.fingerprint in status.revoked_fingerprints:
        return False
    return not (current.compromised_by and spec.emergency_policy == "RevokeImmediately")


def verdict(obs: Observation) -> reports.Verdict | None:
    """What the reports prove for ``obs``; None when the observed cut-over does not apply."""
    spec, status = obs.spec, obs.status
    if not applies(spec, status):
        return None
    if obs.presentations is None:
        return reports.Verdict(
            False,
            UNKNOWN,
            f"the PresentationReports of trust Secret {spec.trust.secret_name} could not be read; "
            "no cut-over without them",
        )
    trusted = current_trusted(spec, status)
    found = reports.observed_switch(
        obs.presentations,
        min_presentations=spec.cutover.observed.min_presentations,
        quiet_period=spec.cutover.observed.quiet_period_delta,
        now=obs.now,
        current_trusted=trusted,
    )
    current = status.current
    if found.reason == "CurrentStillPresented" and current is not None and current.compromised_by:
        pending = status.next.serial if status.next is not None else "-"
        found = reports.Verdict(
            found.ready,
            found.reason,
            f"{found.message}; it is compromised (incident {current.compromised_by}) and still trusted "
            "(KeepUntilCutover): either the provider has not switched everywhere or someone else holds its "
            f"key; to revoke it now: kubectl annotate --overwrite whc NAME webhookcerts.io/cutover={pending}",
            found.recheck_at,
        )
    return found
