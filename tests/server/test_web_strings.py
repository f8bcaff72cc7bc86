"""The web interface's strings are data: every language has every key, and every key the
code names exists (a missing one would show as its raw key)."""

from __future__ import annotations

import json
import re

import pytest

from bildwerk.server.routes_web import WEB

LANGUAGES = ("de", "en", "fr", "ko", "ru")
NAMESPACES = sorted(p.stem for p in (WEB / "i18n" / "en").glob("*.json"))


def _table(lang: str, ns: str) -> dict[str, str]:
    return json.loads((WEB / "i18n" / lang / f"{ns}.json").read_text("utf-8"))


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_language_has_every_key_and_translates_it(lang):
    for ns in NAMESPACES:
        en, other = _table("en", ns), _table(lang, ns)
        assert set(other) == set(en), (lang, ns, set(en) ^ set(other))
        assert all(isinstance(v, str) and v.strip() for v in other.values()), (lang, ns)
        if lang != "en":  # translated, not copied (short technical words may be the same)
            same = [k for k, v in other.items() if v == en[k] and len(v) > 12]
            assert len(same) <= max(2, len(en) // 10), (lang, ns, same)
        for key, text in other.items():  # the same {placeholders} as English
            assert set(re.findall(r"\{(\w+)\}", text)) == set(re.findall(r"\{(\w+)\}", en[key])), (lang, ns, key)


def test_every_key_the_code_names_exists():
    en = {ns: _table("en", ns) for ns in NAMESPACES}
    code = "\n".join(p.read_text("utf-8") for p in (WEB / "js").rglob("*.js"))
    code += (WEB / "index.html").read_text("utf-8")
    quoted = "[\"'`]"
    named = set(re.findall(quoted + "((?:" + "|".join(NAMESPACES) + r")\.[a-z0-9_]+)" + quoted, code))
    assert len(named) > 100
    missing = sorted(k for k in named if k.split(".", 1)[1] not in en[k.split(".", 1)[0]])
    assert not missing, missing
