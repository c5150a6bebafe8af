"""LLM analysis: batching, prompts (fenced, redacted, within budget, with rated examples),
Ollama, fallback, the answer's structure and its grounding checks."""

from ._answer import Answer, Section, parse_answer
from ._batcher import Batch, Batcher
from ._fallback import MARK as FALLBACK_MARK
from ._fallback import fallback_summary
from ._grounding import Checked, check_answer, facts_of
from ._llm import (
    Breaker,
    Chunk,
    LLMError,
    LLMRejected,
    LLMSettings,
    LLMTimeout,
    LLMUnavailable,
    ModelMissing,
    OllamaClient,
    Retryable,
    StreamCut,
)
from ._prompt import FENCE_CLOSE, FENCE_OPEN, SYSTEM_PROMPT, Prompt, build_prompt
from ._redact import Redactor
from ._stage import AnalysisStage, llm_settings

__all__ = [
    "FALLBACK_MARK",
    "FENCE_CLOSE",
    "FENCE_OPEN",
    "SYSTEM_PROMPT",
    "AnalysisStage",
    "Answer",
    "Batch",
    "Batcher",
    "Breaker",
    "Checked",
    "Chunk",
    "LLMError",
    "LLMRejected",
    "LLMSettings",
    "LLMTimeout",
    "LLMUnavailable",
    "ModelMissing",
    "OllamaClient",
    "Prompt",
    "Redactor",
    "Retryable",
    "Section",
    "StreamCut",
    "build_prompt",
    "check_answer",
    "facts_of",
    "fallback_summary",
    "llm_settings",
    "parse_answer",
]
