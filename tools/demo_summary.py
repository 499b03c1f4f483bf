"""The demo's closing report: the timeline, deliveries per step, what the receiver accepted (its log),
the signatures it verified, and how long containment took. With ``DEMO_LOGS=DIR`` the receiver's and
the operator's logs are kept there (they go with the cluster otherwise)."""

from __future__ import annotations

import collections
import os
import pathlib

from demo_console import NAMESPACE, Timeline, Tools
from demo_provider import Provider, accepted_by_receiver, receiver_log, unauthorized

RELEASE_NAMESPACE = "webhookcerts"


def summary(
    tools: Tools,
    timeline: Timeline,
    providers: dict[str, Provider],
    serials: dict[str, str],
    pod: str,
    contained: float,
) -> list[str]:
    keep = os.environ.get("DEMO_LOGS")
    if keep:
        # The pods' logs outlive the cluster only where asked: DEMO_LOGS=DIR make demo.
        directory = pathlib.Path(keep)
        directory.mkdir(parents=True, exist_ok=True)
        pod_log = tools.kubectl("logs", "--timestamps", "-n", NAMESPACE, pod, show=False, check=False)
        (directory / "receiver.log").write_text(pod_log)
        operator_log = tools.kubectl(
            "logs", "--timestamps", "-n", RELEASE_NAMESPACE, "deployment/webhookcerts", show=False, check=False
        )
        (directory / "operator.log").write_text(operator_log)
    lines = ["", "Timeline", "--------"]
    lines += [f"  {timeline.stamp(at)}  {message}" for at, message in timeline.events]
    lines += ["", "Deliveries (provider simulator, per step)", "------------------------------------------"]
    for env, provider in providers.items():
        for step, counts in provider.counts.items():
            refused = ", ".join(f"{reason} x{n}" for reason, n in provider.reasons[step].most_common())
            why = f"   (failed attempts: {refused})" if refused else ""
            lines.append(
                f"  {env:<8} {step:<17} delivered {counts['delivered']:>4}   failed {counts['failed']:>3}{why}"
            )
    lines += ["", "Accepted by the receiver (kubectl logs --timestamps, by client certificate)", "-" * 75]
    records = receiver_log(tools, pod)
    accepted = accepted_by_receiver(records, timeline)
    for fingerprint, seen in sorted(accepted.items(), key=lambda i: i[1].first):
        label = serials.get(fingerprint, fingerprint[:16])
        window = f"{timeline.stamp(seen.first)} to {timeline.stamp(seen.last)}"
        lines.append(f"  {label:<34} {seen.count:>5} deliveries, {window}")
    verified: collections.Counter[str] = sum((seen.verified for seen in accepted.values()), collections.Counter())
    total = sum(seen.count for seen in accepted.values())
    lines += ["", "Signatures (the receiver's log: the provider's v6 signature verified on each delivery)", "-" * 85]
    lines.append(f"  verified on {sum(verified.values())} of the {total} deliveries the receiver accepted")
    lines += [f"    keyid {signer:<42} {n:>5}" for signer, n in verified.most_common()]
    for reason, n in unauthorized(records).most_common():
        lines.append(f"  refused 401 after the handshake: {n} x {reason}")
    lines += [
        "",
        f"Containment: {contained:.1f} s from the emergency annotation to the receiver refusing the compromised",
        "certificate. Failed deliveries in the emergency step are the compromised certificate being refused.",
    ]
    return lines
