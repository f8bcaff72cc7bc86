// The generate view: a prompt in any language, what the prompt steps make of it while typing
// (POST /api/v1/prompt), then one job followed live (progress, previews) to its images and
// record. Fields left alone stay unset, so the model's own defaults apply.
import {disableUnavailable, selectable} from "../models.js";
import {jobRecord, stepsList} from "../record.js";
import {LAST_JOB_KEY, takeRerun} from "../rerun.js";

const PREVIEW_DELAY_MS = 600;
const SIZES = [[512, 512], [768, 768], [1024, 1024], [768, 512], [512, 768], [1024, 576], [576, 1024]];
const MAX_SEED = 4294967295;

export async function mount(root, ctx) {
  const {api, t, ui, jobs, config} = ctx;
  const {h, tr, field} = ui;

  // -- the form -------------------------------------------------------------------------------
  const prompt = h("textarea", {id: "gen-prompt", name: "prompt", rows: 4, spellcheck: "true"});
  const negative = h("textarea", {id: "gen-negative", name: "negative_prompt", rows: 2});
  const style = h("select", {id: "gen-style", name: "style"},
    h("option", {value: "", "data-i18n": "generate.style_none", text: t("generate.style_none")}),
    (config.styles || []).map((s) => h("option", {value: s.name, text: s.name, title: s.prompt})));
  const models = [...new Set([config.models?.default, ...(config.models?.local || []), ...(config.models?.remote || [])]
    .filter(Boolean))];
  const model = ui.select(models.length ? models : ["default"], models[0]);
  model.id = "gen-model";
  const remoteOff = disableUnavailable(model, config.models);  // no OpenAI key here: listed, not choosable
  const count = ui.select([1, 2, 3, 4].map((n) => [String(n), String(n)]), "1");
  count.id = "gen-count";
  const seed = h("input", {id: "gen-seed", name: "seed", type: "number", min: 0, max: MAX_SEED, step: 1,
    inputmode: "numeric", placeholder: t("generate.seed_random_placeholder"),
    "data-i18n-attr": "placeholder:generate.seed_random_placeholder"});
  const seedButton = h("button", {type: "button", class: "gen-dice", onclick: () => {
    seed.value = String(crypto.getRandomValues(new Uint32Array(1))[0]);
  }}, tr("generate.seed_draw"));
  const steps = autoSlider("common.steps", "generate.steps_auto", {min: 1, max: 50, step: 1, value: 20});
  const guidance = autoSlider("common.guidance", "generate.guidance_auto", {min: 0, max: 20, step: 0.5, value: 7.5});
  const sampler = h("select", {id: "gen-sampler", name: "scheduler"},
    h("option", {value: "", "data-i18n": "generate.auto", text: t("generate.auto")}),
    (config.samplers || []).map((s) => h("option", {value: s.name, text: s.name})));
  const size = h("select", {id: "gen-size", name: "size"},
    h("option", {value: "", "data-i18n": "generate.size_auto", text: t("generate.size_auto")}),
    SIZES.map(([w, hh]) => h("option", {value: `${w}x${hh}`, text: `${w} × ${hh}`})),
    h("option", {value: "custom", "data-i18n": "generate.size_custom", text: t("generate.size_custom")}));
  const width = h("input", {id: "gen-width", type: "number", min: 64, max: 2048, step: 8, value: 512, inputmode: "numeric"});
  const height = h("input", {id: "gen-height", type: "number", min: 64, max: 2048, step: 8, value: 512, inputmode: "numeric"});
  const custom = h("div", {class: "row gen-custom", hidden: true},
    field("generate.width", width), field("generate.height", height));
  size.addEventListener("change", () => { custom.hidden = size.value !== "custom"; });

  const translate = h("select", {id: "gen-translate"},
    h("option", {value: "auto", "data-i18n": "generate.translate_auto", text: t("generate.translate_auto")}),
    h("option", {value: "off", "data-i18n": "generate.translate_off", text: t("generate.translate_off")}));
  const check = (key, hintKey) => {
    const input = h("input", {type: "checkbox"});
    const hid = ui.newId("hint");
    input.setAttribute("aria-describedby", hid);
    return {input, el: h("div", {class: "gen-check"}, h("label", {}, input, tr(key)),
      tr(hintKey, "span", {class: "hint", id: hid}))};
  };
  const keywords = check("generate.keywords", "generate.keywords_hint");
  const expand = check("generate.expand", "generate.expand_hint");
  const enhance = check("generate.enhance", "generate.enhance_hint");

  const generate = h("button", {type: "submit", class: "primary gen-go"}, tr("generate.go"));
  const cancel = h("button", {type: "button", class: "danger", hidden: true}, tr("common.cancel"));
  const error = h("p", {class: "error gen-error", "aria-live": "assertive"});

  const more = h("details", {class: "gen-more"}, h("summary", {}, tr("generate.more")),
    field("common.negative_prompt", negative, "generate.negative_hint"),
    h("div", {class: "row"}, field("common.scheduler", sampler), field("common.size", size)),
    custom,
    guidance.el);

  const form = h("form", {class: "panel gen-form", novalidate: true, "aria-labelledby": "generate-title"},
    field("generate.prompt", prompt, "generate.prompt_hint"),
    h("div", {class: "row"}, field("generate.style", style), field("common.model", model, remoteOff ? "generate.remote_unavailable" : undefined),
      field("generate.num_images", count)),
    h("div", {class: "row gen-seed"}, field("common.seed", seed, "generate.seed_hint"), seedButton),
    steps.el,
    more,
    h("div", {class: "row gen-actions"}, generate, cancel),
    error);

  // -- the prompt steps, previewed ------------------------------------------------------------
  const previewState = h("p", {class: "muted", role: "status"});
  const previewSteps = h("div", {class: "gen-steps"});
  const finalPrompt = h("p", {class: "gen-final gen-final-prompt"});
  const finalNegative = h("p", {class: "gen-final muted"});
  const preview = h("section", {class: "panel gen-preview", "aria-labelledby": "gen-preview-title"},
    tr("generate.preview_title", "h3", {id: "gen-preview-title"}),
    h("fieldset", {class: "gen-options"}, tr("generate.options", "legend"),
      field("generate.translate", translate), keywords.el, expand.el, enhance.el),
    previewState, previewSteps,
    tr("common.final_prompt", "h4"), finalPrompt,
    h("div", {class: "gen-final-neg", hidden: true}, tr("common.negative_prompt", "h4"), finalNegative));

  // -- the job --------------------------------------------------------------------------------
  const bar = h("progress", {max: 1, "aria-labelledby": "gen-phase"});
  const phase = h("p", {id: "gen-phase", class: "gen-phase", role: "status"});
  const previewImg = h("img", {class: "gen-live", hidden: true, alt: t("generate.preview_alt"),
    "data-i18n-attr": "alt:generate.preview_alt"});
  const progress = h("div", {class: "gen-progress", hidden: true}, bar, phase, previewImg);
  const results = h("div", {class: "gen-results images"});
  const record = h("div", {class: "gen-record"});
  const output = h("section", {class: "panel gen-output", hidden: true, "aria-labelledby": "gen-output-title"},
    tr("generate.output_title", "h3", {id: "gen-output-title"}), progress, results, record);

  // The result sits under the form (on a tablet, in one column: before the prompt steps).
  root.append(h("div", {class: "grid2 gen-grid"}, h("div", {class: "gen-main"}, form, output), preview));

  // -- prompt preview while typing ------------------------------------------------------------
  let timer = null, inflight = null, seq = 0;
  function promptOptions() {
    const o = {};
    if (style.value) o.style = style.value;
    if (translate.value !== "auto") o.translate = translate.value;
    if (keywords.input.checked) o.keywords = true;
    if (expand.input.checked) o.expand = true;
    if (enhance.input.checked) o.enhance = true;
    return o;
  }
  function schedulePreview(delay = PREVIEW_DELAY_MS) {
    clearTimeout(timer);
    timer = setTimeout(runPreview, delay);
  }
  async function runPreview() {
    inflight?.abort();
    const text = prompt.value.trim();
    if (!text) {
      previewState.replaceChildren(tr("generate.preview_empty"));
      previewSteps.replaceChildren();
      finalPrompt.textContent = "";
      finalNegative.parentElement.hidden = true;
      return;
    }
    const mine = ++seq;
    inflight = new AbortController();
    previewState.replaceChildren(tr("generate.preview_working"));
    const body = {prompt: text, model: model.value, mode: "text-to-image", prompt_options: promptOptions()};
    if (negative.value.trim()) body.negative_prompt = negative.value.trim();
    try {
      const r = await api.post("/api/v1/prompt", body, {signal: inflight.signal});
      if (mine !== seq) return;
      const rec = r.record || {};
      previewState.replaceChildren(tr("common.language"), `: ${rec.language || "?"}`);
      previewSteps.replaceChildren(stepsList(rec.steps));
      previewSteps.append(...(rec.warnings || []).map((w) => h("p", {class: "error", text: w})));
      finalPrompt.textContent = r.prompt;
      finalNegative.textContent = r.negative_prompt || "";
      finalNegative.parentElement.hidden = !r.negative_prompt;
    } catch (err) {
      if (err.name === "AbortError" || mine !== seq) return;
      previewState.textContent = ui.errorText(err);
    }
  }
  for (const el of [prompt, negative]) el.addEventListener("input", () => schedulePreview());
  for (const el of [style, model, translate, keywords.input, expand.input, enhance.input]) {
    el.addEventListener("change", () => schedulePreview(0));
  }

  // -- submitting and following ---------------------------------------------------------------
  let follower = null, current = null, lastProgress = null, alive = true;

  function jobFields() {
    const f = {prompt: prompt.value.trim(), mode: "text-to-image", model: model.value, num_images: Number(count.value)};
    if (negative.value.trim()) f.negative_prompt = negative.value.trim();
    if (seed.value.trim() !== "") f.seed = Number(seed.value);
    if (steps.value() !== null) f.steps = steps.value();
    if (guidance.value() !== null) f.guidance = guidance.value();
    if (sampler.value) f.scheduler = sampler.value;
    if (size.value === "custom") Object.assign(f, {width: Number(width.value), height: Number(height.value)});
    else if (size.value) { const [w, hh] = size.value.split("x").map(Number); Object.assign(f, {width: w, height: hh}); }
    const o = promptOptions();
    if (Object.keys(o).length) f.prompt_options = o;
    return f;
  }

  function showError(err) {
    if (!err) { error.textContent = ""; return; }
    const why = err.status === 429 ? t("generate.error_busy") : ui.errorText(err);
    error.textContent = `${t("generate.error_start")} ${why}`;
  }

  function running(on) {
    generate.disabled = on;
    cancel.hidden = !on;
    cancel.disabled = false;
  }

  async function submit() {
    if (generate.disabled) return;
    showError(null);
    if (!prompt.value.trim()) { error.textContent = t("generate.need_prompt"); prompt.focus(); return; }
    running(true);
    results.replaceChildren();
    record.replaceChildren();
    previewImg.hidden = true;
    previewImg.removeAttribute("src");
    let job;
    try {
      job = await api.submitJob(jobFields());
    } catch (err) {
      running(false);
      showError(err);
      return;
    }
    follow(job);
    output.scrollIntoView({block: "nearest"});
  }

  function follow(job) {
    current = job;
    sessionStorage.setItem(LAST_JOB_KEY, job.id);
    output.dataset.job = job.id;
    output.hidden = false;
    progress.hidden = false;
    running(true);
    showProgress({status: job.status, phase: job.status === "queued" ? "queued" : job.progress?.phase,
      queue_position: job.queue_position, ...(job.progress || {})});
    follower?.close();
    follower = jobs.followJob(job.id, {
      onProgress: showProgress,
      onPreview: (url) => { previewImg.src = url; previewImg.hidden = false; },
      onEnd: finished,
    });
  }

  function showProgress(p) {
    lastProgress = p;
    const ph = p.status === "queued" ? "queued" : (p.phase || p.status);
    const parts = [];
    if (ph === "queued" && p.queue_position) parts.push(t("common.queue_position", {n: p.queue_position}));
    else parts.push(phaseName(ph));
    if (ph === "denoise" && p.total) {
      bar.max = p.total;
      bar.value = p.step;
      parts.push(t("generate.step_of", {step: p.step, total: p.total}));
    } else if (["decode", "done", "succeeded"].includes(ph)) {
      bar.max = 1;
      bar.value = 1;
    } else {
      bar.removeAttribute("value");  // indeterminate: waiting, loading, prompt steps
    }
    phase.dataset.phase = ph;
    phase.textContent = parts.join(" · ");
  }

  function phaseName(ph) {
    const key = ["succeeded", "failed", "cancelled", "queued", "running"].includes(ph) ? `common.${ph}` : `generate.phase_${ph}`;
    return t(key) === key ? ph : t(key);
  }

  function finished(job, err) {
    follower = null;
    running(false);
    previewImg.hidden = true;
    if (!job) { progress.hidden = true; showError(err); return; }
    current = job;
    showProgress({status: job.status, phase: job.status});
    if (job.status === "failed" && job.error) error.textContent = `${t("common.failed")}: ${job.error.message}`;
    results.replaceChildren(...(job.results || []).map((r) => resultFigure(job, r)));
    record.replaceChildren(tr("generate.record", "h4"), jobRecord(job));
  }

  function resultFigure(job, r) {
    const url = jobs.imageUrl(r);
    const n = r.index + 1;
    const link = (key, href, extra = {}) => h("a", {href, class: "gen-btn", ...extra}, tr(key));
    return h("figure", {class: "gen-result", dataset: {index: r.index}},
      h("img", {src: url, class: "result", alt: `${t("generate.result_alt", {n})}: ${job.prompt}`}),
      h("figcaption", {},
        h("span", {class: "muted"}, tr("common.seed"), `: ${r.seed}`),
        h("span", {class: "gen-links"},
          link("common.download", url, {download: `bildwerk-${job.id}-${r.index}.png`}),
          link("generate.vary_this", `#/vary/${encodeURIComponent(job.id)}/${r.index}`),
          link("generate.inpaint_this", `#/inpaint/${encodeURIComponent(job.id)}/${r.index}`))));
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  form.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
  });
  cancel.addEventListener("click", async () => {
    if (!current) return;
    cancel.disabled = true;
    phase.textContent = t("generate.cancelling");
    try {
      const r = await api.post(`/api/v1/jobs/${encodeURIComponent(current.id)}/cancel`, {});
      if (r.status === "cancelled" && follower) phase.textContent = t("common.cancelled");
    } catch (err) {
      cancel.disabled = false;
      showError(err);
    }
  });

  // -- a re-run from the gallery (see rerun.js) -----------------------------------------------
  const rerun = takeRerun();
  if (rerun) fill(rerun.fields);
  else resume();

  // The job this tab last started, shown again after a visit to another view (followed on if
  // it still runs).
  async function resume() {
    const id = sessionStorage.getItem(LAST_JOB_KEY);
    if (!id) return;
    try {
      const job = await api.get(`/api/v1/jobs/${encodeURIComponent(id)}`);
      if (!alive || current) return;
      if (job.status === "queued" || job.status === "running") follow(job);
      else { output.dataset.job = job.id; output.hidden = false; progress.hidden = false; finished(job); }
    } catch {
      sessionStorage.removeItem(LAST_JOB_KEY);
    }
  }

  function fill(f) {
    const o = f.prompt_options || {};
    const set = (v) => v !== undefined && v !== null;
    prompt.value = f.prompt || "";
    negative.value = f.negative_prompt || "";
    if (negative.value) more.open = true;
    if (set(f.model)) { ensureOption(model, f.model); if (selectable(model, f.model)) model.value = f.model; }
    if (set(o.style)) { ensureOption(style, o.style); style.value = o.style; }
    if (set(f.seed)) seed.value = String(f.seed);
    if (set(f.steps)) steps.set(f.steps);
    if (set(f.guidance)) { guidance.set(f.guidance); more.open = true; }
    if (set(f.scheduler)) { ensureOption(sampler, f.scheduler); sampler.value = f.scheduler; more.open = true; }
    if (set(f.num_images)) { ensureOption(count, String(f.num_images)); count.value = String(f.num_images); }
    if (set(f.width) && set(f.height)) {
      const preset = `${f.width}x${f.height}`;
      size.value = [...size.options].some((x) => x.value === preset) ? preset : "custom";
      width.value = f.width; height.value = f.height;
      custom.hidden = size.value !== "custom";
      more.open = true;
    }
    translate.value = o.translate === "off" ? "off" : "auto";
    keywords.input.checked = !!o.keywords;
    expand.input.checked = !!o.expand;
    enhance.input.checked = !!o.enhance;
  }

  function ensureOption(sel, value) {
    if (![...sel.options].some((x) => x.value === value)) sel.append(h("option", {value, text: value}));
  }

  // A slider that stays unset ("auto": the model's default) until it is moved.
  function autoSlider(labelKey, resetKey, opts) {
    let auto = true;
    const s = ui.slider(labelKey, {...opts, format: (v) => (auto ? t("generate.auto") : v)});
    const reset = h("button", {type: "button", class: "gen-auto", "aria-label": t(resetKey),
      "data-i18n-attr": `aria-label:${resetKey}`, onclick: () => { auto = true; s.input.value = opts.value; s.sync(); }},
    tr("generate.auto"));
    s.input.addEventListener("input", () => { auto = false; s.sync(); });
    s.el.classList.add("gen-slider");
    s.el.append(reset);
    return {el: s.el, input: s.input, sync: s.sync,
      value: () => (auto ? null : Number(s.input.value)),
      set: (v) => { auto = false; s.input.value = v; s.sync(); }};
  }

  const relabel = () => {
    steps.sync();
    guidance.sync();
    if (lastProgress && !progress.hidden) showProgress(lastProgress);
  };
  document.addEventListener("bildwerk:language", relabel);
  runPreview();

  return {
    unmount() {
      alive = false;
      clearTimeout(timer);
      inflight?.abort();
      follower?.close();
      document.removeEventListener("bildwerk:language", relabel);
    },
  };
}
