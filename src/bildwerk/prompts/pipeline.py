"""The prompt pipeline: the user's words -> the model's prompt, every step recorded.

Order: wildcards -> language -> translate -> describe + merge -> lexicon enhancement ->
paraphrase -> keywords -> expand -> style. Every step is optional; each one that runs
(or is skipped for a reason worth knowing) leaves a ``PromptStep`` with its input,
output, backend and time. The use case (app/generate.py) runs it for every face.

Failures: a backend that fails raises ``PromptBackendError``, unless ``fallback`` is on
(the default), in which case the documented fallback runs and a warning is recorded:
LLM translation -> lexicon; remote description -> the offline describer; expansion and
paraphrase are left out. Nothing is replaced silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image

from bildwerk.core.errors import PromptBackendError
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
            multilingual_model: bool = False, image: Image.Image | None = None) -> PromptRecord:
        o = options or PromptOptions()
        rec = PromptRecord(original=text, original_negative=negative)
        prompt = text.strip()

        def step(name: str, inp: str, fn: Callable[[], tuple[str, str | None, dict]]) -> str:
            t0 = time.perf_counter()
            out, backend, details = fn()
            rec.steps.append(PromptStep(step=name, input=inp, output=out, backend=backend,
                                        seconds=round(time.perf_counter() - t0, 4), details=details))
            return out

        # 1. Wildcards and combinatorial syntax: resolved first, the template is kept.
        from bildwerk.prompts.wildcards import has_wildcards, resolve

        if o.wildcards and has_wildcards(prompt):
            rec.template = prompt
            prompt = step("wildcards", prompt,
                          lambda: (resolve(prompt, o.seed), "dynamicprompts", {"seed": o.seed}))

        # 2. Language.
        from bildwerk.prompts.language import detect_language

        def _detect():
            from bildwerk.core.weights import plain_text

            d = detect_language(plain_text(prompt), hint=o.language)
            return d.language or "", d.source, {"confidence": d.confidence, "scores": d.scores}

        if prompt:
            rec.language = step("language", prompt, _detect) or None

        # 3. Translation.
        prompt = self._translate(prompt, rec, o, multilingual_model, step)

        # 4. Describe the input image and merge it with the edit prompt.
        if (o.describe is not None or o.description) and image is not None:
            prompt = self._describe(prompt, image, rec, o, step)

        # 5. The museum's lexicon enhancement.
        if o.enhance and prompt:
            from bildwerk.prompts.lexicon import enhance

            def _enhance():
                out, terms = enhance(prompt)
                return out, "lexicon", {"terms": terms}

            prompt = step("lexicon", prompt, _enhance)

        # 6. Paraphrase (variants), 7. keywords over the prompt and its variants.
        if o.paraphrase and prompt:
            rec.variants = self._optional(rec, o, "paraphrase", prompt, step, lambda: self._paraphrase(prompt, o)) or []
        if o.keywords and prompt:
            prompt = step("keywords", prompt, lambda: self._keywords(prompt, rec, o))

        # 8. Expansion (appends detail, never rewrites).
        if o.expand and prompt:
            expanded = self._optional(rec, o, "expand", prompt, step, lambda: self._expand(prompt, o))
            prompt = expanded or prompt

        # 9. Style template and its negative prompt, last, so it wraps the final words.
        negative = negative.strip()
        if o.style:
            from bildwerk.prompts.styles import get_style

            style = get_style(o.style)
            styled, negative_styled = style.apply(prompt, negative)
            prompt = step("style", prompt, lambda: (styled, style.name,
                                                    {"negative_in": negative, "negative_out": negative_styled}))
            negative = negative_styled
        rec.prompt, rec.negative_prompt = prompt, negative
        return rec

    # -- steps with backends ----------------------------------------------------------------
    def _translate(self, prompt: str, rec: PromptRecord, o: PromptOptions, multilingual: bool, step) -> str:
        from bildwerk.prompts.translate import translate_lexicon, translate_llm

        lang = rec.language
        if not prompt or lang in (None, "en") or o.translate == "off":
            if o.translate == "off" and lang not in (None, "en") and not multilingual:
                rec.warnings.append(f"the prompt looks {lang!r} but the model reads English only and "
                                    "translation is off")
            return prompt
        if o.translate == "auto" and multilingual:
            rec.steps.append(PromptStep(step="translate", input=prompt, output=prompt, backend=None,
                                        details={"skipped": "the model reads this language itself"}))
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
                return r.text, r.backend, {}
            except PromptBackendError as exc:
                if not o.fallback:
                    raise
                rec.warnings.append(f"LLM translation failed ({exc}); used the lexicon instead")
                return _lexicon({"fallback": str(exc)})

        return step("translate", prompt, _llm if mode == "llm" else _lexicon)

    def _describe(self, prompt: str, image: Image.Image, rec: PromptRecord, o: PromptOptions, step) -> str:
        from bildwerk.prompts.describe import merge_description, merge_with_llm

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
                    return merge_description(description, prompt), "rules", {"fallback": str(exc)}
            return merge_description(description, prompt), "rules", {}

        return step("merge", f"{description} | {prompt}", _merge)

    def _paraphrase(self, prompt: str, o: PromptOptions):
        from bildwerk.prompts.expand import paraphrase

        llm = self.llm(o)
        variants = paraphrase(prompt, llm, o.paraphrase, seed=o.seed)
        return " | ".join(variants), llm.name, {"variants": variants}

    def _keywords(self, prompt: str, rec: PromptRecord, o: PromptOptions):
        from bildwerk.core.weights import plain_text
        from bildwerk.prompts.keywords import extract_keywords, keyword_prompt, weighted_keywords

        # Keywords come from the prompt's words (and the variants'): weights already there are kept out.
        texts = [plain_text(prompt), *rec.variants]
        english = rec.language == "en" or any(s.step == "translate" and s.backend for s in rec.steps)
        found = extract_keywords(texts, top_n=o.keyword_count, backend=o.keyword_backend,
                                 language="en" if english else rec.language)
        weighted = keyword_prompt(found)
        if not weighted:
            return prompt, f"keybert:{o.keyword_backend}", {"keywords": []}
        out = weighted if o.keyword_mode == "replace" else f"{prompt.rstrip(' ,.;')}, {weighted}"
        return out, f"keybert:{o.keyword_backend}", {"keywords": found, "weights": weighted_keywords(found)}

    def _expand(self, prompt: str, o: PromptOptions):
        from bildwerk.prompts.expand import expand

        llm = self.llm(o)
        out, added = expand(prompt, llm, seed=o.seed)
        return out, llm.name, {"added": added}

    def _optional(self, rec: PromptRecord, o: PromptOptions, name: str, prompt: str, step, fn):
        """Steps without a fallback backend: on failure, raise, or (fallback) leave them out."""
        try:
            out = step(name, prompt, fn)
        except PromptBackendError as exc:
            if not o.fallback:
                raise
            rec.warnings.append(f"{name} failed and was left out: {exc}")
            rec.steps.append(PromptStep(step=name, input=prompt, output=prompt, backend=None,
                                        details={"failed": str(exc)}))
            return None
        if name == "paraphrase":
            return rec.steps[-1].details["variants"]
        return out


def run_prompt_pipeline(text: str, negative: str = "", *, options: PromptOptions | None = None,
                        model: str | None = None, image: Image.Image | None = None,
                        pipeline: PromptPipeline | None = None) -> PromptRecord:
    """The one entry point the faces call: knows whether ``model`` reads every language."""
    from bildwerk.models.loader import model_is_multilingual

    return (pipeline or PromptPipeline()).run(text, negative, options=options,
                                              multilingual_model=model_is_multilingual(model), image=image)
