"""The answer's structure and the grounding checks, on plain text and incident dicts."""

from __future__ import annotations

import dataclasses

from spanwatch.analyze import FALLBACK_MARK, Redactor, check_answer, fallback_summary, parse_answer
from spanwatch.model import PathStep
from tests.events import incident

GOOD = """\
Root cause: payments · POST /charge
Evidence: the error rate of payments is 42% against a baseline of 1% (42x), seen at checkout \
POST /checkout.
Hypotheses: none
Next steps:
- read the payments errors from the start time
- check what changed in payments
Confidence: high
"""


def _inc(n: int = 1, **kwargs: object) -> dict[str, object]:
    return incident(n, **kwargs).to_dict()  # type: ignore[arg-type]


def test_a_grounded_answer_passes_every_check() -> None:
    """Known names, numbers from the evidence and the detector's root cause: passed."""
    checked = check_answer(GOOD, [_inc()])
    assert checked.grounding["passed"] is True, checked.grounding
    assert checked.grounding["root_cause"] == "agrees"
    (part,) = checked.parts
    assert part["root_cause"] == {"service": "payments", "operation": "POST /charge"}
    assert part["confidence"] == "high" and part["valid"] is True
    assert part["next_steps"] == [
        "read the payments errors from the start time",
        "check what changed in payments",
    ]
    assert part["incident_id"] == "inc-1"


def test_headings_written_in_markdown_still_parse() -> None:
    """**Root cause:**, ## Evidence and numbered headings are read as the same parts."""
    text = (
        "**Root cause:** payments - POST /charge\n## Evidence: 42% errors\n"
        "3. Hypotheses: none\n**Next steps**:\n* look at payments\nConfidence - Medium"
    )
    (section,) = parse_answer(text).sections
    assert section.valid and section.confidence == "medium"
    assert check_answer(text, [_inc()]).parts[0]["root_cause"]["service"] == "payments"


def test_free_text_is_marked_invalid_not_hidden() -> None:
    """An answer without the parts fails, and says which parts are missing."""
    checked = check_answer("The payments database ran out of connections.", [_inc()])
    assert checked.grounding["passed"] is False
    assert checked.grounding["structure_valid"] is False
    assert checked.grounding["root_cause"] == "missing"
    assert checked.parts[0]["missing"] == [
        "root_cause",
        "evidence",
        "hypotheses",
        "next_steps",
        "confidence",
    ]


def test_an_invented_service_operation_and_number_are_named() -> None:
    """A service, an operation and a number that the incident does not hold are each listed."""
    text = GOOD.replace("Hypotheses: none", "Hypotheses: the inventory service and orders-db") + (
        "Evidence: GET /stock failed 97% of the time\n"
    )
    g = check_answer(text, [_inc()]).grounding
    assert g["passed"] is False
    assert g["unknown_services"] == ["inventory", "orders-db"]
    assert g["unknown_operations"] == ["GET /stock"]
    assert g["unmatched_numbers"] == ["97%"]


def test_numbers_match_at_the_precision_written() -> None:
    """0.42 as 42%, a 1200 ms step as 1.2 s; timestamps, versions and small counts skipped."""
    inc = dataclasses.replace(
        incident(1), critical_path=(PathStep("payments", "POST /charge", "server", 1200.0),)
    ).to_dict()
    text = GOOD.replace(
        "(42x)",
        "(0.42 against 0.01; 1.2 s on the critical path; since 2025-11-24T16:00:00Z, v1.4.2)",
    )
    assert check_answer(text, [inc]).grounding["unmatched_numbers"] == []
    assert check_answer(text.replace("1.2 s", "2.5 s"), [inc]).grounding["unmatched_numbers"] == [
        "2.5s"
    ]


def test_a_different_root_cause_must_say_why() -> None:
    """Another known service as the root cause: explained passes, unexplained fails."""
    inc = _inc()  # services: checkout, payments; the detector blames payments
    bare = GOOD.replace("payments · POST /charge", "checkout · POST /checkout")
    explained = GOOD.replace(
        "payments · POST /charge",
        "checkout · POST /checkout, rather than payments: its own errors start first",
    )
    assert check_answer(bare, [inc]).grounding["root_cause"] == "differs_unexplained"
    assert check_answer(bare, [inc]).grounding["passed"] is False
    assert check_answer(explained, [inc]).grounding["root_cause"] == "differs_explained"
    assert check_answer(explained, [inc]).grounding["passed"] is True


def test_inconclusive_is_allowed() -> None:
    """'inconclusive' with what would settle it is a valid, grounded answer."""
    text = GOOD.replace(
        "payments · POST /charge", "inconclusive: the payments logs would settle it"
    ).replace("Confidence: high", "Confidence: inconclusive")
    g = check_answer(text, [_inc()]).grounding
    assert g["root_cause"] == "inconclusive" and g["passed"] is True


def test_sections_per_incident_are_checked_against_their_own_incident() -> None:
    """Incident N's root cause is compared with the Nth incident's."""
    first = _inc(1)
    second = dataclasses.replace(
        incident(2, service="search"), root_cause=dataclasses.replace(incident(2).root_cause)
    ).to_dict()
    second["root_cause"] = {"service": "search", "operation": "GET /q"}
    second["services"] = ["search"]
    text = f"Incident 1:\n{GOOD}\nIncident 2:\n" + GOOD.replace(
        "payments · POST /charge", "search · GET /q"
    ).replace("POST /checkout", "GET /q").replace("checkout", "search")
    checked = check_answer(text, [first, second])
    assert [p["incident_id"] for p in checked.parts] == ["inc-1", "inc-2"]
    assert checked.grounding["root_cause"] == "agrees", checked.grounding


def test_the_facts_only_summary_has_the_structure_and_passes() -> None:
    """The summary built without a model is itself a valid, grounded answer."""
    incidents = [_inc(1), _inc(2, severity=1)]
    text = fallback_summary(incidents, Redactor())
    assert text.endswith(FALLBACK_MARK)
    ordered = sorted(incidents, key=lambda i: (i["severity"], i["detected_at"]))  # type: ignore[operator]
    checked = check_answer(text, ordered)
    assert checked.grounding["passed"] is True, checked.grounding
    assert [p["incident_id"] for p in checked.parts] == ["inc-2", "inc-1"]


def test_status_codes_and_the_detection_delay_are_not_invented_numbers() -> None:
    """HTTP 503 is a code, not a measure; detected 30 s after the start is in the facts."""
    text = GOOD.replace("(42x)", "(HTTP 503, status 429; detected 30 s after it started)")
    assert check_answer(text, [_inc()]).grounding["unmatched_numbers"] == []
    assert check_answer(text.replace("30 s", "45 s"), [_inc()]).grounding["unmatched_numbers"] == [
        "45s"
    ]
