"""Merging an image description and an edit instruction into one generation prompt:
by rule (:func:`merge_description`) or by asking a chat model (:func:`merge_with_llm`).

The rules read English instructions. An edit in another language is first put into English
(:func:`edit_in_english`): its edit phrasing through the language's phrase table
(``data/merge/<lang>.tsv``: "mets" -> "put", "en aquarelle" -> "as a watercolor", "füge *
hinzu" -> "add *"), every other word through the language's lexicon. So the merged prompt
reads in one language, English, which every model reads.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Protocol

from bildwerk.core.errors import BildwerkError, PromptBackendError
from bildwerk.prompts.answer import check_answer, clean_answer
from bildwerk.prompts.describe.text import _clip, _one_line

# Verbs that start an edit instruction; "X and VERB ..." splits into two edits.
_VERBS = (
    r"make|turn|convert|transform|change|render|draw|paint|redraw|recreate|reimagine|"
    r"restyle|style|show|put|place|move|set|position|add|include|insert|give|remove|"
    r"delete|erase|get\s+rid\s+of|take\s+(?:out|away)|replace|swap"
)
# A separator (",", ";", ". ", "and", "then") only splits when a verb follows it, so
# "add salt and pepper" stays one instruction.
_SPLIT = re.compile(
    rf"(?:\s*(?:[,;]|\.(?=\s))\s*(?:and\s+)?(?:then\s+)?|\s+(?:and\s+then|and|then)\s+)"
    rf"(?=(?:{_VERBS})\b)",
    re.IGNORECASE,
)
_POLITE_START = re.compile(
    r"^(?:(?:please|kindly|can\s+you|could\s+you|would\s+you|i\s+want\s+you\s+to|"
    r"i'?d\s+like\s+you\s+to|now)[\s,]+)+",
    re.IGNORECASE,
)
_POLITE_END = re.compile(r"(?:[\s,]+please)?[\s.!?]*$", re.IGNORECASE)
# What "it" can be in an instruction about the whole picture.
_OBJ = (
    r"(?:it|this|that|them|everything|all|"
    r"(?:the|this|that|my)\s+(?:image|picture|photo|photograph|pic|scene|drawing|painting|"
    r"illustration|artwork|whole\s+thing))"
)
_REL = (
    r"(?:on\s+top\s+of|in\s+front\s+of|next\s+to|close\s+to|on|in|at|under|underneath|"
    r"beneath|below|above|over|behind|beside|near|inside|into|onto|against|among|by|"
    r"along|across|through|around)"
)
_STYLE_START = re.compile(r"^(?:as|in\s+the\s+style\s+of|looking\s+like)\b", re.IGNORECASE)
# Generic "this is a picture" openings that contradict a new medium ("as a watercolor").
_MEDIUM = re.compile(
    r"^(?:an?\s+)?(?:(?:close-up|closeup|color|colour|digital|stock)\s+)?"
    r"(?:photo|photograph|picture|image|snapshot)\s+of\s+",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:a|an|the|some)\s+", re.IGNORECASE)


# Templates that restyle the whole picture (a new medium or style).
_RESTYLE = frozenset({"as {x}", "{x} ", "looking like {x}"})


def _rules() -> list[tuple[re.Pattern[str], str]]:
    """(pattern, template) pairs, first match wins; templates use the named groups.

    "{x} " (trailing space, stripped on use) marks a restyling "{x}" ("draw it in ink").
    """
    r: list[tuple[str, str]] = [
        # background changes, before the generic make/change/set rules
        (r"(?:change|replace|swap|set|turn|make)\s+the\s+background\s+(?:in)?(?:to|with|into|for)\s+"
         r"(?P<x>.+)", "{background}"),
        (r"make\s+the\s+background\s+(?P<x>.+)", "{background}"),
        # whole-picture restyling
        (rf"(?:turn|convert|transform|change|make)\s+{_OBJ}\s+(?:in)?to\s+(?P<x>.+)", "as {x}"),
        (rf"(?:render|draw|paint|redraw|recreate|reimagine|restyle|style|show|make)\s+{_OBJ}\s+"
         r"(?P<x>(?:as|in|like)\b.+)", "{x} "),
        (rf"make\s+{_OBJ}\s+look\s+like\s+(?P<x>.+)", "looking like {x}"),
        (rf"make\s+{_OBJ}\s+look\s+(?P<x>.+)", "{x}"),
        (rf"make\s+{_OBJ}\s+(?P<x>(?:a|an)\s+.+)", "as {x}"),
        (rf"make\s+{_OBJ}\s+(?P<x>.+)", "{x}"),
        # placing things
        (rf"(?:put|place|move|set|position|show)\s+(?P<thing>.+?)\s+(?P<rel>{_REL}\s+.+)",
         "{placed}"),
        # adding and giving
        (r"(?:add|include|insert)\s+(?P<x>.+?)\s+(?<!next\s)(?<!close\s)(?:to|into|onto)\s+"
         r"(?P<target>.+)", "{added}"),
        (r"(?:add|include|insert)\s+(?P<x>.+)", "with {x}"),
        (rf"give\s+{_OBJ}\s+(?P<x>.+)", "with {x}"),
        (r"give\s+(?:the\s+)?\S+\s+(?P<x>(?:a|an|some)\s+.+)", "with {x}"),
        # removing and replacing
        (r"(?:remove|delete|erase|get\s+rid\s+of|take\s+(?:out|away))\s+(?P<x>.+?)"
         r"(?:\s+from\s+.+)?", "without {x}"),
        (r"(?:replace|swap)\s+(?P<old>.+?)\s+(?:with|for)\s+(?P<new>.+)",
         "with {new} instead of {old}"),
        (r"(?:turn|change|transform|convert)\s+(?P<old>.+?)\s+(?:in)?to\s+(?P<new>.+)",
         "with {new} instead of {old}"),
        # "make the sky purple": the verb is noise to an image generator
        (r"make\s+(?P<x>.+)", "{x}"),
    ]
    return [(re.compile(rf"^{p}$", re.IGNORECASE | re.DOTALL), t) for p, t in r]


_RULES = _rules()


def _words(text: str) -> set[str]:
    # A crude singular ("cats" ~ "cat") is enough to tell whether a thing was described.
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", text.lower())
            if w not in {"a", "an", "the", "some", "my", "this", "that"}}


def _is_whole_picture(thing: str) -> bool:
    return re.fullmatch(_OBJ, thing.strip(), re.IGNORECASE) is not None


def _edit_fragment(clause: str, description: str) -> tuple[str, bool]:
    """One edit clause as a prompt fragment ("make it a watercolor" -> "as a watercolor").

    The flag says whether the fragment restyles the whole picture.
    """
    for pattern, template in _RULES:
        m = pattern.match(clause)
        if not m:
            continue
        g = {k: v.strip() for k, v in m.groupdict().items() if v}
        if template == "{background}":
            x = g["x"]
            # "to a beach" names a thing; "to white" is a colour or material.
            if _ARTICLE.match(x):
                return f"with {x} in the background", False
            return f"with a {x} background", False
        if template == "{placed}":
            thing, rel = g["thing"], g["rel"]
            # Placing the described subject (or "it") keeps only where it goes.
            if _is_whole_picture(thing) or _words(thing) <= _words(description):
                return rel, False
            return f"with {thing} {rel}", False
        if template == "{added}":
            target = g["target"]
            if _is_whole_picture(target):
                return f"with {g['x']}", False
            return f"with {g['x']} on {target}", False
        return template.format(**g).strip(), template in _RESTYLE
    # Not an instruction we know ("on a beach", "in the style of Monet"): keep as written.
    return clause, _STYLE_START.match(clause) is not None


def _clean_edit(edit: str) -> list[str]:
    text = _one_line(edit)
    clauses = []
    for part in _SPLIT.split(text):
        part = _POLITE_END.sub("", _POLITE_START.sub("", part.strip(" ,;")))
        if part:
            clauses.append(part)
    return clauses


def merge_description(description: str, edit: str) -> str:
    """Merge an image description and an edit instruction into one generation prompt, by rule.

    Each instruction in the edit (split at ",", ";", "and", "then" before a known verb)
    becomes a fragment appended to the description, comma-separated and in order:

    * "make it a watercolor" / "turn it into a watercolor" -> "as a watercolor";
      "make it darker" -> "darker"; "draw it in the style of Monet" -> "in the style of Monet"
    * "put the cat on a beach" -> "on a beach" (the subject comes from the description);
      "put a hat on the dog" -> "with a hat on the dog" (a new thing is kept)
    * "add a hat" -> "with a hat"; "add snow to the mountains" -> "with snow on the mountains"
    * "remove the car" -> "without the car"; "replace the car with a bike" ->
      "with a bike instead of the car"
    * "change the background to a beach" -> "with a beach in the background"
    * anything else is kept as written ("in winter", "at night").

    When a fragment restyles the whole picture ("as ...", "in the style of ...", "looking
    like ..."), a generic leading "a photo of" / "an image of" is dropped from the
    description, since it would contradict the new medium.

    Limits: the edit is read in English (:func:`edit_in_english` turns French, German, Russian
    and Korean phrasing into it first); the result is a concatenation, so nothing in the description is
    replaced or removed ("a cat on a sofa" + "put the cat on a beach" keeps both places;
    "without X" and "instead of X" still mention X, which diffusion models tend to draw).
    For those, use :func:`merge_with_llm`.
    """
    desc = _one_line(description).rstrip(" .")
    if not _one_line(edit):
        return desc
    if not desc:
        return _one_line(edit)
    fragments: list[str] = []
    restyled = False
    for clause in _clean_edit(edit):
        fragment, style = _edit_fragment(clause, desc)
        restyled |= style
        if fragment and fragment.lower() not in (f.lower() for f in fragments):
            fragments.append(fragment)
    if not fragments:
        return desc
    if restyled:
        desc = _MEDIUM.sub("", desc, count=1) or desc
    return ", ".join([desc, *fragments])


@dataclass
class EnglishEdit:
    text: str
    phrases: list[tuple[str, str]] = field(default_factory=list)  # (as written, English instruction)
    untranslated: list[str] = field(default_factory=list)


_phrase_cache: dict[str, list[tuple[re.Pattern[str], str]]] = {}
_phrase_lock = threading.Lock()


def _phrase_rules(language: str) -> list[tuple[re.Pattern[str], str]]:
    """The language's edit phrasing as (pattern, English template); ``*`` is a gap."""
    from bildwerk.core.paths import data_files

    with _phrase_lock:
        if language in _phrase_cache:
            return _phrase_cache[language]
        rules: list[tuple[re.Pattern[str], str]] = []
        for path in data_files("merge", f"{language}.tsv"):  # the user's file after the package's
            lines = path.read_text("utf-8").splitlines()
            entries = [ln.split("\t", 1) for ln in lines if "\t" in ln and not ln.lstrip().startswith("#")]
            mine = []
            for phrase, english in entries:
                alts = []
                for alt in phrase.strip().lower().split("|"):
                    parts = [r"(.+?)" if w == "*" else re.escape(w) for w in alt.split()]
                    if parts and parts[-1] == r"(.+?)":
                        parts[-1] = r"([^,;.]+)"  # a gap at the end runs to the clause's end
                    alts.append(r"\s+".join(parts))
                pattern = rf"(?<![\w'-])(?:{'|'.join(alts)})(?![\w'-])"
                mine.append((re.compile(pattern, re.IGNORECASE), english.strip()))
            rules = mine + rules  # the user's entries are tried first
        _phrase_cache[language] = rules
        return rules


def edit_in_english(edit: str, language: str) -> EnglishEdit:
    """An edit instruction in ``language`` as the English instruction the rules read:
    "mets le chat sur une plage" -> "put the cat on a beach". Words neither the phrase table
    nor the lexicon knows are kept as written and reported."""
    from bildwerk.prompts.lexicon import load_lexicon

    lex = load_lexicon(language)
    result = EnglishEdit("")

    def words_in_english(text: str) -> str:
        if lex is None or not text.strip():
            return text.strip()
        t = lex.translate(text)
        result.untranslated.extend(t.untranslated)
        return t.text

    # Pieces: (English, True) for phrases already put into English, (source text, False) else.
    pieces: list[tuple[str, bool]] = [(_one_line(edit), False)]
    for pattern, english in _phrase_rules(language):
        out: list[tuple[str, bool]] = []
        for text, done in pieces:
            if done:
                out.append((text, done))
                continue
            pos = 0
            for m in pattern.finditer(text):
                gaps = iter(g for g in m.groups() if g is not None)
                instruction = re.sub(r"\*", lambda _, g=gaps: words_in_english(next(g, "")), english)
                result.phrases.append((m.group(0), instruction))
                out += [(text[pos:m.start()], False), (instruction, True)]
                pos = m.end()
            out.append((text[pos:], False))
        pieces = [(t, d) for t, d in out if t.strip()]
    # Separators (",", ";") survive the lexicon's word split only if kept apart from the words.
    parts = []
    for text, done in pieces:
        if done:
            parts.append(text)
            continue
        for chunk in re.split(r"([,;])", text):
            parts.append(chunk if chunk in (",", ";") else words_in_english(chunk))
    result.text = re.sub(r"\s+([,;])", r"\1", " ".join(p for p in parts if p.strip())).strip()
    return result


class _ChatLike(Protocol):
    def complete(self, system: str, user: str, *, seed: int | None = ..., max_tokens: int = ...,
                 temperature: float = ...) -> str: ...


MERGE_SYSTEM = (
    "You write prompts for an image generator. You get a description of an existing image "
    "and an edit instruction. Write one prompt that describes the edited image: keep the "
    "subject and the details the edit does not change, apply the edit, and leave out "
    "whatever the edit replaces or removes. Answer with the prompt only: one line, no "
    "quotes, no explanation."
)


def merge_with_llm(description: str, edit: str, backend: _ChatLike,
                   seed: int | None = None) -> str:
    """Ask a chat model (anything with ``complete(system, user, ...)``) for the merged prompt.

    An empty edit returns the description and an empty description the edit, without
    asking. The answer is cleaned to one line; an empty answer is a
    :class:`~bildwerk.core.errors.PromptBackendError`, one that lost the subject a
    :class:`~bildwerk.core.errors.PromptAnswerRejected` (there is no silent fallback: call
    :func:`merge_description` yourself if you want one).
    """
    desc, instruction = _one_line(description), _one_line(edit)
    if not instruction:
        return desc
    if not desc:
        return instruction
    user = f"Image description: {desc}\nEdit instruction: {instruction}\nPrompt:"
    try:
        answer = backend.complete(MERGE_SYSTEM, user, seed=seed, max_tokens=120, temperature=0.3)
    except BildwerkError:
        raise
    except Exception as exc:  # a backend outside bildwerk may raise anything
        raise PromptBackendError(f"the merge model failed: {_clip(str(exc))}") from exc
    merged = clean_answer(answer or "")
    if not merged:
        name = getattr(backend, "name", type(backend).__name__)
        raise PromptBackendError(f"the merge model {name} answered with an empty prompt")
    # The same check as every model answer: a merge that lost the picture's subject is not used.
    check_answer(f"{desc}, {instruction}", merged, kind="merge",
                 backend=str(getattr(backend, "name", type(backend).__name__)))
    return merged
