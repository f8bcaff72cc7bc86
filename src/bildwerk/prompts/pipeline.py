"""The prompt pipeline: the user's words -> the model's prompt, every step recorded.

Order: LoRA tags out (``<lora:NAME:W>``, into ``rec.loras``; again after wildcards and after the
style, whose text may carry tags too) -> wildcards -> embedding names found (``embedding:NAME``
made the plain name; a name a later step loses is put back at the end) -> language -> translate
-> describe + merge -> lexicon enhancement -> paraphrase -> keywords -> expand -> style; with ``order="paraphrase-first"`` the rewordings
are made before translation, in the prompt's language, and each is translated. With an image
to describe and the rule-based merge, a prompt that is not English is not translated on its
own: the merge puts the edit into English. Every step is optional; each one that runs
(or is skipped for a reason worth knowing) leaves a ``PromptStep`` with its input,
output, backend and time. The use case (app/generate.py) runs it for every face.

Failures: a backend that fails, or an LLM answer that the checks reject (prompts/answer.py:
``PromptAnswerRejected``), raises ``PromptBackendError``, unless ``fallback`` is on
(the default), in which case the documented fallback runs and a warning is recorded:
LLM translation -> lexicon; remote description -> the offline describer; LLM merge -> rules;
expansion and paraphrase are left out. Nothing is replaced silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from bildwerk.core.errors import PromptAnswerRejected, PromptBackendError
from bildwerk.core.prompt import PromptOptions, PromptRecord, PromptStep


def _translating_llm(options: PromptOptions) -> bool:
    """An LLM good enough to translate is configured (the embedded SmolLM2 is not one)."""
    import os

    spec = (options.llm or os.environ.get("BILDWERK_LLM") or "").strip().lower()
    return bool(spec) and not spec.startswith(("local", "smollm2"))


class PromptPipeline:
    """Runs the steps. Backends are built lazily from the options, or injected (tests, servers)."""

    def __init__(self, *, llm: Any | None = None, describer: Any | None = None) -> None:
        self._llm = llm
        self._describer = describer

    # -- backends --------------------------------------------------------------------------
    def llm(self, options: PromptOptions):
        if self._llm is None:
            from bildwerk.prompts.llm import chat_backend

            self._llm = chat_backend(options.llm)
        return self._llm

    def describer(self, spec: str | None):
        if self._describer is not None:
            return self._describer
        from bildwerk.prompts.describe import describer

        return describer(spec)

    # -- before the job is queued ------------------------------------------------------------
    def check(self, text: str, options: PromptOptions) -> None:
        """What the steps need that can be checked without running them: the style and the
        wildcards exist, the LLM and describer names are known, and (unless ``fallback`` may
        stand in) their backends are configured. Raises the error the submitter should get."""
        from bildwerk.core.errors import NotConfiguredError

        if options.style:
            from bildwerk.prompts.styles import get_style

            get_style(options.style)
        if options.wildcards:
            from bildwerk.prompts.wildcards import check

            check(text)
        backends: list[Callable[[], Any]] = []
        if options.llm is not None and self._llm is None:
            from bildwerk.prompts.llm import chat_backend

            backends.append(lambda: chat_backend(options.llm))
        if options.describe is not None and self._describer is None:
            backends.append(lambda: self.describer(options.describe))
        for make in backends:
            try:
                make()  # unknown names raise InvalidRequestError; constructing asks no server
            except PromptBackendError as exc:
                if not options.fallback:
                    raise NotConfiguredError(f"{exc}; or leave fallback on") from exc

    # -- the run ---------------------------------------------------------------------------
    def run(self, text: str, negative: str = "", *, options: PromptOptions | None = None,
            model_languages: tuple[str, ...] | None = ("en",), image: Image.Image | None = None) -> PromptRecord:
        o = options or PromptOptions()
        rec = PromptRecord(original=text, original_negative=negative)
        prompt = text.strip()

        def step(name: str, inp: str, fn: Callable[[], tuple[str, str | None, dict]]) -> str:
            t0 = time.perf_counter()
            out, backend, details = fn()
            rec.steps.append(PromptStep(step=name, input=inp, output=out, backend=backend,
                                        seconds=round(time.perf_counter() - t0, 4), details=details))
            return out

        # 0. LoRA tags and embedding names: out of reach of every step that rewrites words.
        prompt = self._take_loras(prompt, rec, step, "prompt")
        negative = self._drop_negative_loras(negative, rec)

        # 1. Wildcards and combinatorial syntax: resolved first, the template is kept.
        from bildwerk.prompts.wildcards import has_wildcards, resolve

        if o.wildcards and has_wildcards(prompt):
            rec.template = prompt
            prompt = step("wildcards", prompt,
                          lambda: (resolve(prompt, o.seed), "dynamicprompts", {"seed": o.seed}))
            prompt = self._take_loras(prompt, rec, step, "wildcards")
        prompt, negative = self._find_embeddings(prompt, negative, rec, step)

        # 2. Language.
        from bildwerk.prompts.language import detect_language

        def _detect():
            from bildwerk.core.weights import plain_text

            d = detect_language(plain_text(prompt), hint=o.language)
            return d.language or "", d.source, {"confidence": d.confidence, "scores": d.scores}

        if prompt:
            rec.language = step("language", prompt, _detect) or None

        # 3. Paraphrase first (the Korean team's order): variants in the prompt's own language.
        paraphrase_first = o.order == "paraphrase-first"
        if paraphrase_first and o.paraphrase and prompt:
            rec.variants = self._variants(prompt, rec, o, step)

        # 4. Translation (of the variants too, when they came first). With an image to describe,
        # the edit is translated by the merge instead, which knows edit phrasing per language.
        describing = (o.describe is not None or o.description is not None) and image is not None
        edit = prompt
        if describing and o.merge == "rules" and rec.language not in (None, "en"):
            rec.steps.append(PromptStep(step="translate", input=prompt, output=prompt, backend=None,
                                        details={"skipped": "the edit is translated by the merge"}))
        else:
            prompt = self._translate(prompt, rec, o, model_languages, step)
            if paraphrase_first and rec.variants:
                rec.variants = self._translate_variants(rec, o, model_languages, step)

        # 5. Describe the input image and merge it with the edit prompt.
        if describing:
            prompt = self._describe(edit if o.merge == "rules" else prompt, image, rec, o, step, model_languages)

        # 6. The museum's lexicon enhancement.
        if o.enhance and prompt:
            prompt = step("lexicon", prompt, lambda: self._enhance(prompt, rec))

        # 7. Paraphrase after translation (the default), 8. keywords over the prompt and its variants.
        if not paraphrase_first and o.paraphrase and prompt:
            rec.variants = self._variants(prompt, rec, o, step)
        if o.keywords and prompt:
            prompt = step("keywords", prompt, lambda: self._keywords(prompt, rec, o))

        # 9. Expansion (appends detail, never rewrites).
        if o.expand and prompt:
            expanded = self._optional(rec, o, "expand", prompt, step, lambda: self._expand(prompt, rec, o))
            prompt = expanded or prompt

        # 10. Style template and its negative prompt, last, so it wraps the final words.
        negative = negative.strip()
        if o.style:
            from bildwerk.prompts.styles import get_style

            style = get_style(o.style)
            styled, negative_styled = style.apply(prompt, negative)
            prompt = step("style", prompt, lambda: (styled, style.name,
                                                    {"negative_in": negative, "negative_out": negative_styled}))
            negative = negative_styled
            prompt = self._take_loras(prompt, rec, step, "style")
            negative = self._drop_negative_loras(negative, rec)
        prompt = self._keep_embeddings(prompt, negative, rec)
        rec.prompt, rec.negative_prompt = prompt, negative
        return rec

    # -- LoRA tags and embeddings ------------------------------------------------------------
    @staticmethod
    def _take_loras(prompt: str, rec: PromptRecord, step, source: str) -> str:
        """``<lora:NAME:W>`` / ``<lyco:...>`` tags out of the prompt into ``rec.loras``."""
        from bildwerk.core.loras import extract_lora_tags, has_lora_tags

        if not has_lora_tags(prompt):
            return prompt
        stripped, tags = extract_lora_tags(prompt)
        rec.loras.extend(tags)
        return step("loras", prompt, lambda: (stripped, None, {
            "from": source, "loras": [t.model_dump() for t in tags]}))

    @staticmethod
    def _drop_negative_loras(negative: str, rec: PromptRecord) -> str:
        from bildwerk.core.loras import extract_lora_tags, has_lora_tags

        if not has_lora_tags(negative):
            return negative
        stripped, tags = extract_lora_tags(negative)
        rec.warnings.append("LoRA tags in the negative prompt are not applied (as in A1111): "
                            + ", ".join(t.tag() for t in tags))
        return stripped

    @staticmethod
    def _find_embeddings(prompt: str, negative: str, rec: PromptRecord, step) -> tuple[str, str]:
        """Embedding names in the prompts (A1111: the plain name; ComfyUI: ``embedding:NAME``, made
        the plain name here), kept in ``rec.embeddings`` so the later steps cannot lose them."""
        import re

        from bildwerk.models.assets import find_asset, list_assets

        syntax = re.compile(r"\bembedding:([\w.-]+)", re.IGNORECASE)
        explicit = syntax.findall(f"{prompt}\n{negative}")
        names = {a.name.lower(): a.name for a in list_assets("embedding")}
        for name in explicit:
            if name.lower() not in names:
                find_asset("embedding", name)  # raises the clear "no embedding named ..." error
        if explicit:
            def plain(text: str) -> str:
                return syntax.sub(lambda m: names[m[1].lower()], text)

            negative = plain(negative)
            prompt = step("embeddings", prompt, lambda: (plain(prompt), None, {
                "explicit": sorted({names[e.lower()] for e in explicit})}))
        text = f"{prompt}\n{negative}"
        for name in names.values():
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.IGNORECASE):
                rec.embeddings.append(name)
        return prompt, negative

    @staticmethod
    def _keep_embeddings(prompt: str, negative: str, rec: PromptRecord) -> str:
        """An embedding name a step (translation, a rewording) lost is put back, with a warning."""
        import re

        for name in rec.embeddings:
            if not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", f"{prompt}\n{negative}",
                             re.IGNORECASE):
                rec.warnings.append(f"the embedding {name!r} was lost by the prompt steps; it was added back at the end")
                prompt = f"{prompt}, {name}" if prompt else name
        return prompt

    # -- steps with backends ----------------------------------------------------------------
    def _translate(self, prompt: str, rec: PromptRecord, o: PromptOptions, languages: tuple[str, ...] | None,
                   step) -> str:
        """``languages``: those the model reads (``models.loader.model_languages``); None = any."""
        from bildwerk.prompts.translate import translate_lexicon, translate_llm

        lang = rec.language
        reads = languages is None or lang in languages
        if not prompt or lang in (None, "en") or o.translate == "off":
            if o.translate == "off" and lang not in (None, "en") and not reads:
                known = "English only" if languages == ("en",) else f"only {', '.join(languages or ())}"
                rec.warnings.append(f"the prompt looks {lang!r} but the model reads {known} and "
                                    "translation is off")
            return prompt
        if o.translate == "auto" and reads:
            # A multilingual model, or one trained on captions in this language: translating would lose it.
            details: dict[str, Any] = {"skipped": "the model reads this language itself"}
            if languages is not None:
                details["model_languages"] = list(languages)
            rec.steps.append(PromptStep(step="translate", input=prompt, output=prompt, backend=None,
                                        details=details))
            return prompt
        mode = o.translate
        if mode == "auto":
            injected = self._llm is not None and not str(getattr(self._llm, "name", "")).startswith("local")
            mode = "llm" if _translating_llm(o) or injected else "lexicon"

        def _lexicon(extra: dict | None = None):
            try:
                r = translate_lexicon(prompt, lang)
            except PromptBackendError as exc:
                if not o.fallback:
                    raise
                rec.warnings.append(f"{exc}; the prompt was left untranslated")
                return prompt, None, {"failed": str(exc), **(extra or {})}
            if r.untranslated:
                rec.warnings.append(f"the lexicon did not know: {', '.join(r.untranslated)} (kept as written)")
            return r.text, r.backend, {"untranslated": r.untranslated, "matched": r.matched, **(extra or {})}

        def _llm():
            try:
                r = translate_llm(prompt, lang, self.llm(o), seed=o.seed)
                return r.text, r.backend, {"checks": r.checks}
            except PromptAnswerRejected as exc:
                if not o.fallback:
                    raise
                rec.warnings.append(f"the LLM's translation was not used: {exc}; used the lexicon instead")
                return _lexicon({"fallback": str(exc), **exc.details()})
            except PromptBackendError as exc:
                if not o.fallback:
                    raise
                rec.warnings.append(f"LLM translation failed ({exc}); used the lexicon instead")
                return _lexicon({"fallback": str(exc)})

        return step("translate", prompt, _llm if mode == "llm" else _lexicon)

    def _variants(self, prompt: str, rec: PromptRecord, o: PromptOptions, step) -> list[str]:
        return self._optional(rec, o, "paraphrase", prompt, step, lambda: self._paraphrase(prompt, rec, o)) or []

    def _translate_variants(self, rec: PromptRecord, o: PromptOptions, languages: tuple[str, ...] | None,
                            step) -> list[str]:
        """Each rewording translated as the prompt was, when the prompt was (one step each)."""
        ran = rec.steps[-1] if rec.steps and rec.steps[-1].step == "translate" else None
        if ran is None or ran.details.get("skipped") or ran.backend is None:
            return rec.variants
        out = []
        for i, variant in enumerate(rec.variants):
            out.append(self._translate(variant, rec, o, languages, step))
            rec.steps[-1].details["variant"] = i
        return out

    def _enhance(self, prompt: str, rec: PromptRecord):
        """The enhancement lexicon is keyed in English; a prompt left in its own language (the
        default model reads it) is matched through that language's lexicon."""
        from bildwerk.prompts.lexicon import enhance

        language = self._text_language(rec)
        out, terms = enhance(prompt, language=language)
        if not terms:
            rec.warnings.append("the enhancement lexicon knows none of the prompt's terms: nothing was added")
        return out, "lexicon" if language in (None, "en") else f"lexicon:{language}", {"terms": terms}

    def _describe(self, prompt: str, image: Image.Image, rec: PromptRecord, o: PromptOptions, step,
                  languages: tuple[str, ...] | None = ("en",)) -> str:
        from bildwerk.prompts.describe import merge_with_llm

        def _run():
            if o.description:  # the user's own words for the picture: no describer asked
                return o.description.strip(), "user", {}
            try:
                d = self.describer(o.describe).describe(image)
            except PromptBackendError as exc:
                if not o.fallback or o.describe in (None, "local"):
                    raise
                rec.warnings.append(f"describing with {o.describe} failed ({exc}); used the offline describer")
                from bildwerk.prompts.describe import LocalDescriber

                d = LocalDescriber().describe(image)
            return d.text, d.backend, {"confidence": d.confidence, "labels": d.labels[:5]}

        description = step("describe", "", _run)

        def _merge():
            if o.merge == "llm":
                try:
                    return merge_with_llm(description, prompt, self.llm(o), seed=o.seed), self.llm(o).name, {}
                except PromptBackendError as exc:
                    if not o.fallback:
                        raise
                    rec.warnings.append(f"LLM merge failed ({exc}); merged by rules")
                    merged, details = self._merge_by_rules(description, prompt, rec, languages)
                    return merged, "rules", {"fallback": str(exc), **details}
            merged, details = self._merge_by_rules(description, prompt, rec, languages)
            return merged, "rules", details

        return step("merge", f"{description} | {prompt}", _merge)

    def _merge_by_rules(self, description: str, edit: str, rec: PromptRecord,
                        languages: tuple[str, ...] | None = ("en",)) -> tuple[str, dict]:
        """The rules read English: an edit in another language is put into English first. A
        description in another language (the user's own words) is translated only for a model
        that does not read it, like the translate step: word-by-word lexicon English ("a cat
        red on a fond blue") is worse than the user's French for a model that reads French."""
        from bildwerk.core.weights import plain_text
        from bildwerk.prompts.describe import merge_description
        from bildwerk.prompts.describe.merge import edit_in_english
        from bildwerk.prompts.language import detect_language
        from bildwerk.prompts.translate import translate_lexicon

        details: dict = {"language": "en"}
        language = self._text_language(rec)
        if edit and language not in (None, "en"):
            english = edit_in_english(edit, language)
            details["edit"] = {"language": language, "english": english.text, "phrases": english.phrases,
                               "untranslated": english.untranslated}
            if english.untranslated:
                rec.warnings.append(f"the merge did not know these words of the edit: "
                                    f"{', '.join(english.untranslated)} (kept as written)")
            edit = english.text
        described_in = detect_language(plain_text(description)).language if description else None
        if described_in not in (None, "en") and (languages is None or described_in in languages):
            # Kept as written: the picture's words lead the merged prompt, so they name its language.
            details["language"] = described_in
            details["description"] = {"language": described_in, "kept": "the model reads it"}
        elif described_in not in (None, "en"):
            try:
                t = translate_lexicon(description, described_in)
            except PromptBackendError as exc:
                rec.warnings.append(f"the description stays in {described_in!r} ({exc}): the merged prompt "
                                    "mixes languages")
            else:
                details["description"] = {"language": described_in, "english": t.text,
                                          "untranslated": t.untranslated}
                description = t.text
        return merge_description(description, edit), details

    def _paraphrase(self, prompt: str, rec: PromptRecord, o: PromptOptions):
        from bildwerk.prompts.expand import paraphrase

        llm = self.llm(o)
        rejected: list[PromptAnswerRejected] = []
        try:
            variants = paraphrase(prompt, llm, o.paraphrase, seed=o.seed, language=self._text_language(rec),
                                  rejected=rejected)
        except PromptBackendError:
            if rejected:  # every answer was thrown away: say why (the step records it)
                raise rejected[0] from None
            raise
        if rejected:
            if not o.fallback:
                raise rejected[0]
            rec.warnings.append(f"{len(rejected)} rewording(s) were left out: "
                                + "; ".join(str(e) for e in rejected))
        return " | ".join(variants), llm.name, {"variants": variants,
                                                "rejected": [e.details() for e in rejected]}

    @staticmethod
    def _text_language(rec: PromptRecord) -> str | None:
        """The language the prompt is in now: English once a translation ran, the merge's
        language once a merge ran (it may translate the edit)."""
        language = rec.language
        for s in rec.steps:
            if s.step == "translate" and s.backend and "variant" not in s.details:
                language = "en"
            elif s.step == "merge" and s.details.get("language"):
                language = s.details["language"]
        return language

    def _keywords(self, prompt: str, rec: PromptRecord, o: PromptOptions):
        from bildwerk.core.weights import plain_text
        from bildwerk.prompts.keywords import (
            extract_keywords,
            keyword_backend_name,
            keyword_prompt,
            weighted_keywords,
        )

        # Keywords come from the prompt's words (and the variants'): weights already there are kept out.
        texts = [plain_text(prompt), *rec.variants]
        language = self._text_language(rec)
        found = extract_keywords(texts, top_n=o.keyword_count, backend=o.keyword_backend, language=language)
        backend = keyword_backend_name(o.keyword_backend, language)
        weighted = keyword_prompt(found)
        if not weighted:
            return prompt, backend, {"keywords": []}
        out = weighted if o.keyword_mode == "replace" else f"{prompt.rstrip(' ,.;')}, {weighted}"
        return out, backend, {"keywords": found, "weights": weighted_keywords(found)}

    def _expand(self, prompt: str, rec: PromptRecord, o: PromptOptions):
        from bildwerk.prompts.expand import expand

        llm = self.llm(o)
        out, added = expand(prompt, llm, seed=o.seed, language=self._text_language(rec))
        return out, llm.name, {"added": added}

    def _optional(self, rec: PromptRecord, o: PromptOptions, name: str, prompt: str, step, fn):
        """Steps without a fallback backend: on failure, raise, or (fallback) leave them out."""
        try:
            out = step(name, prompt, fn)
        except PromptBackendError as exc:
            if not o.fallback:
                raise
            rec.warnings.append(f"{name} failed and was left out: {exc}")
            extra = exc.details() if isinstance(exc, PromptAnswerRejected) else {}
            rec.steps.append(PromptStep(step=name, input=prompt, output=prompt, backend=None,
                                        details={"failed": str(exc), **extra}))
            return None
        if name == "paraphrase":
            return rec.steps[-1].details["variants"]
        return out


def run_prompt_pipeline(text: str, negative: str = "", *, options: PromptOptions | None = None,
                        model: str | None = None, image: Image.Image | None = None,
                        pipeline: PromptPipeline | None = None) -> PromptRecord:
    """The one entry point the faces call: knows which languages ``model`` reads."""
    from bildwerk.models.loader import model_languages

    return (pipeline or PromptPipeline()).run(text, negative, options=options,
                                              model_languages=model_languages(model), image=image)
