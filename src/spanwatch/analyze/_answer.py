"""The answer's fixed structure: headings the model writes, and the parser that reads them.

An answer is plain text in five parts, each opened by its heading at the start of a line::

    Root cause: payments · POST /charge
    Evidence: error_rate 0.42 against a baseline of 0.01 ...
    Hypotheses: what is suspected but not shown ("none")
    Next steps:
    - ...
    Confidence: high | medium | low | inconclusive

With several incidents in a batch, each one's parts follow a line ``Incident N:``. Headings
rather than Ollama's JSON ``format``: the tokens stream to the page as readable text, the text
operators correct and training teaches is the same text, and the same parser reads a model's
answer, a correction and the facts-only summary, on Ollama and llama.cpp alike. What a grammar
would have guaranteed is checked instead: an answer whose parts do not parse is marked invalid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

PARTS = ("root_cause", "evidence", "hypotheses", "next_steps", "confidence")
HEADINGS = {
    "root cause": "root_cause",
    "root-cause": "root_cause",
    "evidence": "evidence",
    "facts": "evidence",
    "hypotheses": "hypotheses",
    "hypothesis": "hypotheses",
    "next steps": "next_steps",
    "next step": "next_steps",
    "next": "next_steps",
    "confidence": "confidence",
}
CONFIDENCE = ("high", "medium", "low", "inconclusive")
INCONCLUSIVE = ("inconclusive", "unknown", "not settled", "cannot tell", "undetermined")

# "## Root cause:", "**Root cause**:", "1. Root cause -", "ROOT CAUSE:" ...
_HEADING = re.compile(
    r"^[\s#>*_\-\d.)]*(?P<name>root[ -]cause|evidence|facts|hypothes[ie]s|next steps?|next|"
    r"confidence)[*_\s]*[:\-–—][*_]*\s*(?P<rest>.*)$",
    re.IGNORECASE,
)
_INCIDENT = re.compile(r"^[\s#>*_]*incident\s+(?P<n>\d+)\b[^\n]*$", re.IGNORECASE)
# where the name ends and the reasoning starts on a root-cause line
_REASON = re.compile(
    r"[.;]\s|\s\(|,\s*(?=rather|not|because|since|as|which|due|instead)|"
    r"\s(?:because|since|as|due to|rather than|instead of|—|–)\s",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"\s+(?:·|\||—|–|-|/)\s+|\s*[·|]\s*|,\s+")


@dataclass(frozen=True, slots=True)
class Section:
    """One incident's parts (or the whole batch's, when the answer names no incident)."""

    incident: int  # 1-based position in the prompt; 0 when the answer has no Incident lines
    root_cause: str = ""
    evidence: str = ""
    hypotheses: str = ""
    next_steps: tuple[str, ...] = ()
    confidence: str = ""
    missing: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return not self.missing

    @property
    def inconclusive(self) -> bool:
        text = self.root_cause.lower()
        return self.confidence == "inconclusive" or any(w in text for w in INCONCLUSIVE)


@dataclass(frozen=True, slots=True)
class Answer:
    sections: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def valid(self) -> bool:
        return bool(self.sections) and all(s.valid for s in self.sections)


def parse_answer(text: str) -> Answer:
    """The parts of an answer; a part not found is listed in its section's ``missing``."""
    blocks: list[tuple[int, list[str]]] = [(0, [])]
    for line in text.splitlines():
        match = _INCIDENT.match(line)
        if match and not _HEADING.match(line):
            if blocks[-1][0] == 0 and not any(_HEADING.match(x) for x in blocks[-1][1]):
                blocks.pop()  # a preamble without parts is not a section of its own
            blocks.append((int(match.group("n")), []))
            continue
        blocks[-1][1].append(line)
    return Answer(tuple(_section(n, lines) for n, lines in blocks))


def _section(number: int, lines: list[str]) -> Section:
    found: dict[str, list[str]] = {}
    current: str | None = None
    for line in lines:
        match = _HEADING.match(line)
        if match:
            current = HEADINGS[_normal(match.group("name"))]
            found.setdefault(current, [])
            if match.group("rest").strip():
                found[current].append(match.group("rest").strip())
        elif current is not None and line.strip():
            found[current].append(line.strip())
    steps = tuple(
        s
        for s in (re.sub(r"^[-*•\d.)\s]+", "", x).strip() for x in found.get("next_steps", []))
        if s
    )
    confidence_text = " ".join(found.get("confidence", [])).lower()
    confidence = next((c for c in CONFIDENCE if c in confidence_text), "")
    missing = [p for p in PARTS if not found.get(p)]
    if "confidence" in found and found["confidence"] and not confidence:
        missing.append("confidence")  # written, but not one of the four words
    return Section(
        incident=number,
        root_cause=" ".join(found.get("root_cause", [])),
        evidence=" ".join(found.get("evidence", [])),
        hypotheses=" ".join(found.get("hypotheses", [])),
        next_steps=steps,
        confidence=confidence,
        missing=tuple(dict.fromkeys(missing)),
    )


def _normal(name: str) -> str:
    name = " ".join(name.lower().split())
    return "hypotheses" if name.startswith("hypothes") else name


def split_root(line: str, services: set[str]) -> tuple[str, str]:
    """(service, operation) named on a root-cause line: a known service when one is there."""
    head = _REASON.split(line, maxsplit=1)[0].strip(" .*`")
    lowered = head.lower()
    for service in sorted(services, key=len, reverse=True):
        at = lowered.find(service.lower())
        if service and at >= 0 and _bounded(lowered, at, len(service)):
            rest = head[at + len(service) :]
            return service, _SEPARATORS.sub(" ", rest, count=1).strip(" ·|,:-").strip()
    parts = [p for p in _SEPARATORS.split(head, maxsplit=1) if p.strip()]
    if len(parts) == 2:
        return parts[0].strip(" `"), parts[1].strip(" `")
    words = head.split(maxsplit=1)
    return (words[0], words[1] if len(words) > 1 else "") if words else ("", "")


def _bounded(text: str, at: int, length: int) -> bool:
    before = text[at - 1] if at > 0 else " "
    after = text[at + length] if at + length < len(text) else " "
    return not (before.isalnum() or before in "-_") and not (after.isalnum() or after in "-_")


def section_dict(
    section: Section, incident_id: str, service: str, operation: str
) -> dict[str, Any]:
    """A section as ``analysis.completed`` carries it (proto ``AnswerPart``)."""
    return {
        "incident_id": incident_id,
        "valid": section.valid,
        "missing": list(section.missing),
        "root_cause": {"service": service, "operation": operation},
        "root_cause_text": section.root_cause,
        "inconclusive": section.inconclusive,
        "evidence": section.evidence,
        "hypotheses": section.hypotheses,
        "next_steps": list(section.next_steps),
        "confidence": section.confidence,
    }
