// The inpaint view: pick an image (or open a job's result: #/inpaint/JOBID/INDEX), paint
// what should change, say what should appear there, and get the picture back with
// everything outside the mask untouched (the server crops with context and pastes back).
import {createMaskEditor} from "../maskeditor.js";
import {remoteModels, selectable} from "../models.js";
import {jobRecord} from "../record.js";
import {takeRerun} from "../rerun.js";

export async function mount(root, {api, t, ui, jobs, config, args}) {
  const {h, tr} = ui;
  let file = null, running = null, follower = null, lastProgress = null, beforeUrl = null;

  // --- 1. the image, 2. the mask ---------------------------------------------------------------
  const picker = ui.imagePicker({onImage: (f) => load(f)});
  const editor = createMaskEditor({onChange: () => updateSubmit()});
  const maskPanel = h("div", {class: "panel inp-mask", hidden: true}, tr("inpaint.step_mask", "h3"), editor.el);

  // --- 3. what should appear ---------------------------------------------------------------------
  const prompt = h("textarea", {name: "prompt", rows: 2, maxlength: 2000});
  // Remote models stay listed when the server has no OpenAI key, disabled, with a note why.
  const remote = remoteModels(config.models, "inpaint");
  const localGroup = h("optgroup", {"data-i18n-attr": "label:inpaint.models_local", label: t("inpaint.models_local")},
    h("option", {value: "", "data-i18n": "inpaint.model_default", text: t("inpaint.model_default")}),
    (config.models?.local || []).filter((m) => m !== config.models?.default).map((m) => h("option", {value: m, text: m})));
  const model = h("select", {name: "model"}, localGroup,
    remote.names.length ? h("optgroup", {"data-i18n-attr": "label:inpaint.models_remote", label: t("inpaint.models_remote")},
      remote.names.map((m) => h("option", {value: m, text: m, disabled: !remote.available}))) : null);
  const remoteOff = remote.names.length > 0 && !remote.available;
  const guidance = ui.slider("common.guidance", {min: 1, max: 20, step: 0.5, value: 7.5, name: "guidance"});
  const steps = h("input", {type: "number", name: "steps", min: 1, max: 150, value: 20, inputmode: "numeric"});
  const seed = h("input", {type: "number", name: "seed", min: 0, max: 4294967295, inputmode: "numeric"});
  const padding = ui.slider("inpaint.padding", {min: 0, max: 256, step: 8, value: 32, name: "only_masked_padding",
                                                format: (v) => `${v} px`});
  const submit = h("button", {type: "submit", class: "primary inp-submit", disabled: true}, tr("inpaint.submit"));
  const why = tr("inpaint.need_mask", "p", {class: "hint muted", id: ui.newId("hint")});
  submit.setAttribute("aria-describedby", why.id);
  const error = h("p", {class: "error", role: "alert"});
  const more = h("details", {class: "inp-more"}, h("summary", {}, tr("inpaint.more")),
    h("div", {class: "row"}, ui.field("common.steps", steps), ui.field("common.seed", seed, "inpaint.seed_hint")),
    h("div", {class: "row"}, padding.el), tr("inpaint.padding_hint", "p", {class: "hint muted"}));
  const form = h("form", {class: "panel inp-form", hidden: true},
    tr("inpaint.step_prompt", "h3"),
    ui.field("inpaint.prompt", prompt, "inpaint.prompt_hint"),
    h("div", {class: "row"}, ui.field("common.model", model, remoteOff ? "inpaint.remote_unavailable" : undefined), guidance.el),
    more,
    h("div", {class: "row inp-actions"}, submit, why),
    error);

  // --- progress and result -------------------------------------------------------------------------
  const bar = h("progress", {max: 1, value: 0, "aria-label": t("inpaint.progress"),
                             "data-i18n-attr": "aria-label:inpaint.progress"});
  const progressText = h("p", {role: "status", "aria-live": "polite"});
  const preview = h("img", {class: "inp-preview", hidden: true, alt: t("inpaint.preview"),
                            "data-i18n-attr": "alt:inpaint.preview"});
  const cancel = h("button", {type: "button", class: "danger"}, tr("common.cancel"));
  const progressPanel = h("div", {class: "panel inp-progress", hidden: true},
    tr("inpaint.progress", "h3"), bar, progressText, preview, h("div", {class: "row"}, cancel));

  const resultPanel = h("div", {class: "panel inp-result", hidden: true});

  const pickPanel = h("div", {class: "panel inp-pick"}, tr("inpaint.step_image", "h3"), picker.el);
  root.append(tr("inpaint.intro", "p", {class: "muted"}), pickPanel,
    maskPanel, form, progressPanel, resultPanel);

  function updateSubmit() {
    const ready = file && editor.countMasked() > 0;
    submit.disabled = !ready || !!running;
    why.hidden = !!ready;
  }

  async function load(f) {
    error.textContent = "";
    maskPanel.hidden = false;  // shown first: the editor fits the image to its stage's size
    try {
      await editor.setImage(f);
    } catch {
      maskPanel.hidden = !file;
      error.textContent = t("inpaint.bad_image");
      ui.status(t("inpaint.bad_image"), "error");
      return;
    }
    file = f;
    pickPanel.classList.add("compact");  // the picture is chosen: the stage gets the screen
    if (beforeUrl) URL.revokeObjectURL(beforeUrl);
    beforeUrl = URL.createObjectURL(f);
    form.hidden = false;
    ui.status("");
    updateSubmit();
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (submit.disabled) return;
    error.textContent = "";
    const fields = {mode: "inpaint", prompt: prompt.value.trim(), only_masked: true,
                    only_masked_padding: +padding.input.value, mask_blur: editor.feather(),
                    steps: Math.max(1, Math.min(150, Math.round(+steps.value || 20))), guidance: +guidance.input.value};
    if (seed.value !== "") fields.seed = Math.round(+seed.value);
    if (model.value) fields.model = model.value;
    running = {before: beforeUrl};
    updateSubmit();
    try {
      const mask = await editor.maskBlob();
      const job = await api.submitJob(fields, {image: file, mask});
      running.id = job.id;
      follow(job);
    } catch (err) {
      running = null;
      updateSubmit();
      error.textContent = ui.errorText(err);
    }
  });

  function follow(job) {
    resultPanel.hidden = true;
    progressPanel.hidden = false;
    preview.hidden = true;
    cancel.hidden = false;
    cancel.disabled = false;
    showProgress({status: job.status, fraction: 0});
    progressPanel.scrollIntoView({block: "nearest"});
    follower = jobs.followJob(job.id, {
      onProgress: showProgress,
      onPreview: (src) => { preview.src = src; preview.hidden = false; },
      onEnd: (done, err) => finish(done, err),
    });
  }

  function progressLine(p) {
    if (!p) return "";
    if (p.status === "queued") {
      return p.queue_position ? `${t("common.queued")} – ${t("common.queue_position", {n: p.queue_position})}` : t("common.queued");
    }
    if (p.status === "running" && p.total > 1) return `${t("common.running")} – ${t("inpaint.step_of", {step: p.step, total: p.total})}`;
    return t(`common.${p.status}`);
  }
  function showProgress(p) {
    lastProgress = p;
    bar.value = p.fraction ?? 0;
    progressText.textContent = progressLine(p);
  }

  cancel.addEventListener("click", async () => {
    if (!running?.id) return;
    cancel.disabled = true;
    try { await api.post(`/api/v1/jobs/${encodeURIComponent(running.id)}/cancel`, {}); } catch (err) { error.textContent = ui.errorText(err); }
  });

  function finish(job, err) {
    const before = running?.before;
    running = null;
    follower = null;
    updateSubmit();
    if (!job) { error.textContent = ui.errorText(err); return; }
    cancel.hidden = true;
    showProgress({status: job.status, fraction: job.status === "succeeded" ? 1 : bar.value});
    if (job.status === "succeeded" && job.results.length) {
      preview.hidden = true;
      showResult(job, 0, before);
      resultPanel.scrollIntoView({block: "start"});
    } else if (job.status === "failed") {
      error.textContent = job.error?.message || t("common.failed");
    }
  }

  // Before/after: the "after" image over the "before" one, clipped at the slider's value.
  function showResult(job, index, before) {
    const result = job.results[index];
    const url = jobs.imageUrl(result);
    const after = h("img", {class: "inp-after", src: url, alt: t("inpaint.after"), "data-i18n-attr": "alt:inpaint.after"});
    const beforeImg = h("img", {class: "inp-before", src: before || url, alt: t("inpaint.before"),
                                "data-i18n-attr": "alt:inpaint.before"});
    const handle = h("div", {class: "inp-handle", "aria-hidden": "true"});
    const compare = h("div", {class: "inp-compare"}, beforeImg, after, handle);
    const split = ui.slider("inpaint.compare", {min: 0, max: 100, value: 50, name: "compare", format: (v) => `${v} %`});
    const setSplit = () => {
      const v = +split.input.value;
      after.style.clipPath = `inset(0 ${100 - v}% 0 0)`;
      handle.style.left = `${v}%`;
      compare.dataset.split = String(v);
    };
    split.input.addEventListener("input", setSplit);
    setSplit();
    const again = h("button", {type: "button", onclick: () => continueWith(url)}, tr("inpaint.continue"));
    const record = jobRecord(job);
    resultPanel.replaceChildren(tr("inpaint.result", "h3"), compare, split.el,
      h("div", {class: "row"},
        h("a", {class: "button", href: url, download: `bildwerk-inpaint-${job.id}-${result.index}.png`}, tr("common.download")),
        again,
        h("a", {class: "button", href: `#/gallery/${encodeURIComponent(job.id)}`}, tr("inpaint.in_gallery"))),
      h("details", {class: "inp-record"}, h("summary", {}, tr("inpaint.record")), record));
    resultPanel.dataset.job = job.id;
    resultPanel.hidden = false;
  }

  async function continueWith(url) {
    try {
      const blob = await api.get(url);
      await load(new File([blob], "bildwerk-result.png", {type: blob.type || "image/png"}));
      maskPanel.scrollIntoView({block: "start"});
    } catch (err) {
      error.textContent = ui.errorText(err);
    }
  }

  // Paste anywhere in the view (not only on the drop zone), unless into a text field.
  const onPaste = (e) => {
    if (e.target.closest?.("textarea, input")) return;
    const f = [...(e.clipboardData?.files || [])].find((x) => x.type.startsWith("image/"));
    if (f && !picker.el.contains(e.target)) { e.preventDefault(); load(f); }
  };
  document.addEventListener("paste", onPaste);
  const relabel = () => { progressText.textContent = progressLine(lastProgress); };
  document.addEventListener("bildwerk:language", relabel);

  // A re-run from the gallery (rerun.js): the job's picture, its mask as the painted one, its
  // settings; otherwise #/inpaint/JOBID/INDEX: that job's result image as the picture to paint on.
  const rerun = takeRerun();
  if (rerun?.mode === "inpaint") await rerunJob(rerun);
  else if (args[0]) {
    ui.status(t("common.loading"));
    try {
      const job = await api.get(`/api/v1/jobs/${encodeURIComponent(args[0])}`);
      const result = job.results.find((r) => r.index === Number(args[1] || 0)) || job.results[0];
      if (!result) throw new Error(t("inpaint.no_result"));
      const blob = await api.get(jobs.imageUrl(result));
      await load(new File([blob], `bildwerk-${job.id}-${result.index}.png`, {type: blob.type || "image/png"}));
    } catch (err) {
      ui.status(ui.errorText(err), "error");
    }
  }

  async function rerunJob({job, fields: f = {}, inputs = {}}) {
    ui.status(t("common.loading"));
    try {
      if (inputs.image) {
        const blob = await api.get(inputs.image);
        await load(new File([blob], `bildwerk-${String(job).slice(0, 8)}-input.png`, {type: blob.type || "image/png"}));
      }
      if (file && inputs.mask) {
        // The mask as the job sent it, read the way the server read it (its convention, inverted
        // if it asked for that): what is painted now is what that job repainted.
        await editor.setMask(await api.get(inputs.mask), {invert: !!f.invert_mask, source: f.mask_source || "auto"});
      }
      fill(f);
      if (file) ui.status(t("inpaint.rerun_loaded"));
    } catch (err) {
      fill(f);  // the settings still help, with whatever picture there is
      ui.status(ui.errorText(err), "error");
    }
  }

  function fill(f) {
    const set = (v) => v !== undefined && v !== null;
    prompt.value = f.prompt || "";
    if (set(f.model) && f.model !== config.models?.default) {
      if (![...model.options].some((o) => o.value === f.model)) localGroup.append(h("option", {value: f.model, text: f.model}));
      if (selectable(model, f.model)) model.value = f.model;  // a remote one without a key: the default
    }
    if (set(f.guidance)) { guidance.input.value = f.guidance; guidance.sync(); }
    if (set(f.steps)) steps.value = f.steps;
    if (set(f.seed)) seed.value = f.seed;
    if (set(f.only_masked_padding)) { padding.input.value = f.only_masked_padding; padding.sync(); }
    if (set(f.mask_blur) && editor.hasImage()) editor.setFeather(f.mask_blur);
    if (set(f.seed) || set(f.steps) || set(f.only_masked_padding)) more.open = true;
    updateSubmit();
  }

  return {
    unmount() {
      follower?.close();
      editor.destroy();
      document.removeEventListener("paste", onPaste);
      document.removeEventListener("bildwerk:language", relabel);
      if (beforeUrl) URL.revokeObjectURL(beforeUrl);
    },
  };
}
