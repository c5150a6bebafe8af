"""LLM analysis: batching, prompts (fenced, redacted, within budget), Ollama, fallback."""

from ._batcher import Batch, Batcher
from ._fallback import MARK as FALLBACK_MARK
from ._fallback import fallback_summary
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
    "Batch",
    "Batcher",
    "Breaker",
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
    "StreamCut",
    "build_prompt",
    "fallback_summary",
    "llm_settings",
]
