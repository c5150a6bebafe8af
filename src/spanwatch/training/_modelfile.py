"""Ollama Modelfiles: the adapter one (FROM base + ADAPTER) and the merged one (FROM ./model.gguf).

The merged model is imported from a GGUF file, so Ollama gets no template from a model it
already knows: the Modelfile carries one (TEMPLATE, in Go's template syntax), made from the
base model's own chat template by rendering it around marker strings and cutting out what
it puts around each role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REPEAT_PENALTY = 1.3
_MARK = {
    "system": "spanwatch-marker-system-1f7c",
    "user1": "spanwatch-marker-user-2b9d",
    "assistant": "spanwatch-marker-assistant-3e4a",
    "user2": "spanwatch-marker-user-4c5f",
}


@dataclass(frozen=True, slots=True)
class ChatFormat:
    """What a chat template writes around the system prompt and each message."""

    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation_prompt: str

    def go_template(self) -> str:
        """The same format as an Ollama TEMPLATE (on one line: no whitespace is trimmed)."""
        return (
            f"{{{{ if .System }}}}{self.system_prefix}{{{{ .System }}}}{self.system_suffix}"
            "{{ end }}{{ range .Messages }}"
            f'{{{{ if eq .Role "user" }}}}{self.user_prefix}{{{{ .Content }}}}{self.user_suffix}'
            f'{{{{ else if eq .Role "assistant" }}}}{self.assistant_prefix}{{{{ .Content }}}}'
            f"{self.assistant_suffix}{{{{ end }}}}{{{{ end }}}}{self.generation_prompt}"
        )

    def stops(self) -> list[str]:
        """Where an answer ends: the text the template closes an assistant message with."""
        end = self.assistant_suffix.strip()
        return [end] if end else []


def chat_format(tokenizer: Any) -> ChatFormat | None:
    """The tokenizer's chat template cut into its parts; None when it does not cut cleanly."""

    def render(roles: list[str], generation: bool) -> str:
        messages = [
            {"role": "system" if r == "system" else r.rstrip("12"), "content": _MARK[r]}
            for r in roles
        ]
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation
        )
        return str(text)

    try:
        full = render(["system", "user1", "assistant", "user2"], True)
        after_user = render(["system", "user1"], False)
        after_assistant = render(["system", "user1", "assistant"], False)
    except Exception:  # any template error: the Modelfile goes without a TEMPLATE
        return None
    cut = _Cutter(full)
    head = cut.before("system")
    if head is None:
        return None
    bos = getattr(tokenizer, "bos_token", None)
    if bos and head.startswith(bos):  # llama.cpp and Ollama add BOS themselves
        head = head[len(bos) :]
    system_to_user = cut.between("system", "user1")
    user_to_assistant = cut.between("user1", "assistant")
    assistant_to_user = cut.between("assistant", "user2")
    tail = cut.after("user2")
    user_suffix = _Cutter(after_user).after("user1")
    assistant_suffix = _Cutter(after_assistant).after("assistant")
    parts = (system_to_user, user_to_assistant, assistant_to_user, tail)
    if any(p is None for p in parts) or user_suffix is None or assistant_suffix is None:
        return None
    assert system_to_user is not None and user_to_assistant is not None
    assert assistant_to_user is not None and tail is not None
    if not (
        assistant_to_user.startswith(assistant_suffix)
        and user_to_assistant.startswith(user_suffix)
        and tail.startswith(user_suffix)
    ):
        return None
    user_prefix = assistant_to_user[len(assistant_suffix) :]
    if not system_to_user.endswith(user_prefix):
        return None
    found = ChatFormat(
        system_prefix=head,
        system_suffix=system_to_user[: len(system_to_user) - len(user_prefix)],
        user_prefix=user_prefix,
        user_suffix=user_suffix,
        assistant_prefix=user_to_assistant[len(user_suffix) :],
        assistant_suffix=assistant_suffix,
        generation_prompt=tail[len(user_suffix) :],
    )
    text = found.go_template()
    if '"""' in text or any(m in text for m in _MARK.values()):
        return None
    skeleton = ChatFormat("", "", "", "", "", "", "").go_template()
    if text.count("{{") != skeleton.count("{{") or text.count("}}") != skeleton.count("}}"):
        return None  # the model's own text holds template syntax
    return found


class _Cutter:
    def __init__(self, text: str) -> None:
        self.text = text

    def _span(self, mark: str) -> tuple[int, int] | None:
        at = self.text.find(_MARK[mark])
        return None if at < 0 else (at, at + len(_MARK[mark]))

    def before(self, mark: str) -> str | None:
        span = self._span(mark)
        return None if span is None else self.text[: span[0]]

    def after(self, mark: str) -> str | None:
        span = self._span(mark)
        return None if span is None else self.text[span[1] :]

    def between(self, first: str, second: str) -> str | None:
        a, b = self._span(first), self._span(second)
        if a is None or b is None or b[0] < a[1]:
            return None
        return self.text[a[1] : b[0]]


def _system(system: str) -> str:
    system = system.replace('"""', "'''")
    return f'SYSTEM """{system}"""\n' if system else ""


def modelfile(ollama_base: str, system: str, adapter: str = "./adapter.gguf") -> str:
    """FROM the base, ADAPTER, the daemon's repeat penalty and system prompt."""
    text = f"FROM {ollama_base}\nADAPTER {adapter}\nPARAMETER repeat_penalty {REPEAT_PENALTY}\n"
    return text + _system(system)


def merged_modelfile(fmt: ChatFormat | None, system: str, model: str = "./model.gguf") -> str:
    """FROM the merged GGUF, its TEMPLATE and stop, the repeat penalty and system prompt."""
    text = f"FROM {model}\n"
    if fmt is None:
        text += "# no TEMPLATE: Ollama takes the chat template stored in the GGUF\n"
    else:
        text += f'TEMPLATE """{fmt.go_template()}"""\n'
        text += "".join(f'PARAMETER stop "{s}"\n' for s in fmt.stops() if '"' not in s)
    text += f"PARAMETER repeat_penalty {REPEAT_PENALTY}\n"
    return text + _system(system)
