"""Scoring a model's write-ups on incidents with known truth (``spanwatch eval llm``).

A *case* is one prompt with its incidents and what is known about it: the root cause (a
simulated fault's label, or the one an operator's answer names) and, for rated analyses, the
operators' answer (their correction, or the text they rated good). Any *generator* (a callable
from a case to the answer's text) is scored the same way:

- ``structure_valid``: answers whose five parts all parse
- ``grounding_pass_rate``: answers that pass every grounding check against their incidents
- ``root_cause_accuracy``: answers whose root cause is the known one (service, and operation
  when the truth names one), over the cases that know it
- ``agreement_rouge_l``: mean ROUGE-L F1 (``rouge-score``, Google Research's implementation of
  Lin 2004, stemmed) between the answer and the operators' answer, over rated cases

Generators: the facts-only summary, an Ollama model (the daemon's own client), and a GGUF with
or without a LoRA adapter in llama.cpp (llama-cpp-python), all greedy (temperature 0).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spanwatch.errors import SpanwatchError

from ._answer import split_root
from ._fallback import fallback_summary
from ._grounding import check_answer, facts_of
from ._llm import LLMSettings, OllamaClient
from ._prompt import build_prompt
from ._redact import Redactor

MAX_TOKENS = 512
HEADER = "incident(s) were detected in the last batch window"


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    system: str
    user: str
    incidents: tuple[dict[str, Any], ...]
    # the known root cause: (service, operation); an empty operation means the service alone
    truth: tuple[str, str] | None = None
    reference: str = ""  # the operators' answer
    source: str = "sim"  # sim (a labelled simulated fault) or rated (an operator's rating)

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]


Generate = Callable[[Case], str]


def case_from_incidents(
    name: str,
    incidents: list[dict[str, Any]],
    truth: tuple[str, str] | None,
    budget_tokens: int = 3000,
) -> Case:
    """A case whose prompt is built as the daemon builds it (without examples)."""
    redactor = Redactor()
    prompt = build_prompt([redactor.redact_mapping(i) for i in incidents], budget_tokens, redactor)
    ordered = sorted(incidents, key=lambda i: (i.get("severity", 5), i.get("detected_at", "")))
    return Case(name, prompt.system, prompt.user, tuple(ordered), truth)


def case_from_record(record: dict[str, Any]) -> Case:
    """A case from one ``seed`` export record: its stored prompt, incidents and answer."""
    incidents = list(record.get("incidents") or [])
    reference = str(record.get("completion", ""))
    truth = None
    services = set(facts_of(incidents).services)
    answer_root = _first_root(reference, services)
    if answer_root is not None:
        # without the incidents, where the service's name ends is a guess: the service alone
        truth = answer_root if services else (answer_root[0], "")
    return Case(
        str(record.get("analysis_id", "")),
        str(record.get("system", "")),
        str(record.get("prompt", "")),
        tuple(incidents),
        truth,
        reference,
        "rated",
    )


def _first_root(text: str, services: set[str]) -> tuple[str, str] | None:
    from ._answer import parse_answer

    sections = parse_answer(text).sections
    if not sections or not sections[0].root_cause or sections[0].inconclusive:
        return None
    service, operation = split_root(sections[0].root_cause, services)
    return (service, operation) if service else None


def _root_ok(answer: tuple[str, str] | None, truth: tuple[str, str]) -> bool:
    if answer is None or answer[0].lower() != truth[0].lower():
        return False
    want, got = truth[1].lower(), answer[1].lower()
    return not want or (bool(got) and (want in got or got in want))


@dataclass
class _Tally:
    cases: int = 0
    errors: int = 0
    valid: int = 0
    grounded: int = 0
    root_cases: int = 0
    root_ok: int = 0
    agreement: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def share(n: int, d: int) -> float | None:
            return round(n / d, 4) if d else None

        return {
            "cases": self.cases,
            "errors": self.errors,
            "structure_valid": share(self.valid, self.cases),
            "grounding_pass_rate": share(self.grounded, self.cases),
            "root_cause_accuracy": share(self.root_ok, self.root_cases),
            "root_cause_cases": self.root_cases,
            "agreement_rouge_l": (
                round(statistics.fmean(self.agreement), 4) if self.agreement else None
            ),
            "agreement_cases": len(self.agreement),
            "mean_seconds": round(statistics.fmean(self.seconds), 3) if self.seconds else None,
        }


class EvalError(SpanwatchError):
    """The evaluation cannot run as asked (a missing measure library)."""


def _rouge() -> Callable[[str, str], float]:
    try:
        from rouge_score import rouge_scorer  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EvalError(
            "agreement with corrections needs rouge-score: pip install 'spanwatch[train]' "
            "(or rouge-score alone)"
        ) from exc

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return lambda reference, answer: float(scorer.score(reference, answer)["rougeL"].fmeasure)


def evaluate(cases: Iterable[Case], generate: Generate, model: str) -> dict[str, Any]:
    """Every case through ``generate``, scored; ``rows`` has one line per case."""
    rouge: Callable[[str, str], float] | None = None
    total = _Tally()
    by_source: dict[str, _Tally] = {}
    rows = []
    for case in cases:
        started = time.monotonic()
        error = ""
        try:
            text = generate(case)
        except Exception as exc:  # one failing case is scored as a failed answer
            text, error = "", f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        cut = case.user.find(HEADER)
        facts = case.user[max(0, case.user.rfind("\n", 0, cut)) :] if cut >= 0 else case.user
        checked = check_answer(text, list(case.incidents), facts)
        services = set(facts_of(list(case.incidents)).services)
        root = _first_root(text, services)
        row: dict[str, Any] = {
            "case": case.name,
            "source": case.source,
            "structure_valid": checked.answer.valid,
            "grounding_passed": checked.grounding["passed"],
            "problems": checked.grounding["problems"],
            "root_cause": list(root) if root else None,
            "truth": list(case.truth) if case.truth else None,
            "seconds": round(seconds, 3),
        }
        if error:
            row["error"] = error
        for tally in (total, by_source.setdefault(case.source, _Tally())):
            tally.cases += 1
            tally.errors += bool(error)
            tally.valid += checked.answer.valid
            tally.grounded += bool(checked.grounding["passed"])
            tally.seconds.append(seconds)
            if case.truth is not None:
                tally.root_cases += 1
                tally.root_ok += _root_ok(root, case.truth)
        if case.truth is not None:
            row["root_cause_ok"] = _root_ok(root, case.truth)
        if case.reference:
            rouge = rouge or _rouge()
            agreement = rouge(case.reference, text)
            row["agreement_rouge_l"] = round(agreement, 4)
            total.agreement.append(agreement)
            by_source[case.source].agreement.append(agreement)
        rows.append(row)
    return {
        "model": model,
        **total.summary(),
        "by_source": {name: t.summary() for name, t in sorted(by_source.items())},
        "rows": rows,
    }


# -- generators ----------------------------------------------------------------------------------


def facts_only() -> Generate:
    """The summary the daemon publishes without a model."""
    redactor = Redactor()
    return lambda case: fallback_summary(list(case.incidents), redactor)


def ollama(host: str, model: str, max_tokens: int = MAX_TOKENS, timeout: float = 300) -> Generate:
    """A model served by Ollama (or anything speaking its /api/chat), greedy."""
    settings = LLMSettings(
        host=host,
        model=model,
        options={"temperature": 0, "seed": 0, "num_predict": max_tokens, "num_ctx": 8192},
        keep_alive="5m",
        first_token_timeout=timeout,
        timeout=timeout,
    )

    async def answer(case: Case) -> str:
        client = OllamaClient(settings)
        try:
            return "".join([chunk.text async for chunk in client.stream(case.messages())])
        finally:
            await client.close()

    return lambda case: asyncio.run(answer(case))


class LlamaCpp:
    """A GGUF in llama.cpp (llama-cpp-python), with a LoRA adapter GGUF when given; greedy.

    The chat template is the model's own (its GGUF metadata), as Ollama would use it.
    """

    def __init__(
        self,
        model: Path,
        adapter: Path | None = None,
        max_tokens: int = MAX_TOKENS,
        n_ctx: int = 8192,
        threads: int = 2,
    ) -> None:
        from llama_cpp import Llama

        self.max_tokens = max_tokens
        self._llm = Llama(
            model_path=str(model),
            lora_path=str(adapter) if adapter is not None else None,
            n_ctx=n_ctx,
            n_threads=threads,
            seed=0,
            verbose=False,
        )

    def __call__(self, case: Case) -> str:
        out: Any = self._llm.create_chat_completion(
            messages=case.messages(),  # type: ignore[arg-type]
            max_tokens=self.max_tokens,
            temperature=0.0,
            repeat_penalty=1.3,
            seed=0,
        )
        return str(out["choices"][0]["message"]["content"] or "")

    def close(self) -> None:
        self._llm.close()


def table(results: list[dict[str, Any]]) -> str:
    """The scores of several models side by side, for people."""
    names = [
        ("structure valid", "structure_valid"),
        ("grounding passed", "grounding_pass_rate"),
        ("root cause right", "root_cause_accuracy"),
        ("ROUGE-L vs operators", "agreement_rouge_l"),
        ("cases", "cases"),
        ("errors", "errors"),
        ("seconds per answer", "mean_seconds"),
    ]
    width = max(14, *(len(r["model"]) for r in results))
    lines = [f"{'':22s}" + "".join(f"{r['model']:>{width + 2}s}" for r in results)]
    for label, key in names:
        cells = []
        for r in results:
            value = r.get(key)
            text = (
                "-"
                if value is None
                else (f"{value:.2f}" if isinstance(value, float) else str(value))
            )
            cells.append(f"{text:>{width + 2}s}")
        lines.append(f"{label:22s}" + "".join(cells))
    return "\n".join(lines)
