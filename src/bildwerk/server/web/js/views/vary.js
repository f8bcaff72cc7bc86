// Vary: a picture and an edit prompt in any language ("en aquarelle"). The server describes
// the picture, merges the description with the edit and makes N variations (image-to-image).
// The description is shown before anything is generated, so a person can correct it.
import {localPath} from "../api.js";
import {disableUnavailable, remoteModels, selectable} from "../models.js";
import {jobRecord, stepsList} from "../record.js";
import {takeRerun} from "../rerun.js";

const PREVIEW_DELAY_MS = 450;
const PREVIEW_MAX_PX = 512;  // the describer looks at a small picture; a preview need not send the photo

export async function mount(root, ctx) {
  const {api, t, ui, jobs, config, args} = ctx;
  const h = ui.h;
  let file = null;        // the picture to vary (File or Blob)
  let fileUrl = null;     // its blob: URL, for the preview next to the form
  let dataUrl = null;     // the same picture (at most 512 px) as a data: URL, for POST /api/v1/prompt
  let previewSeq = 0;     // answers of an older preview are dropped
  let previewTimer = null;
  let follow = null;
  let job = null;         // the running or last job
  let lastDone = null;    // the last finished job, re-rendered on a language switch

  // -- the picture -------------------------------------------------------------------------
  const picker = ui.imagePicker({onImage: setImage});
  const original = h("img", {class: "vary-input", alt: t("vary.original"), "data-i18n-attr": "alt:vary.original",
                             hidden: true});
  const fileName = h("p", {class: "muted vary-file"});

  // -- the edit and its description --------------------------------------------------------
  const edit = h("textarea", {rows: 2, name: "edit", spellcheck: "true"});
  const describeBtn = h("button", {type: "button", disabled: true, onclick: () => preview({describe: true})},
    ui.tr("vary.describe"));
  const description = h("textarea", {rows: 3, name: "description"});
  const merged = h("output", {class: "vary-merged", "aria-live": "polite"});
  const previewNote = h("p", {class: "muted", role: "status"});
  const stepsBox = h("div", {class: "vary-steps"});

  // -- settings ----------------------------------------------------------------------------
  const strength = ui.slider("vary.strength", {min: 0.05, max: 1, step: 0.05, value: 0.6, name: "strength",
                                               format: (v) => Number(v).toFixed(2)});
  const count = h("input", {type: "number", min: 1, max: 4, step: 1, value: 4, name: "num_images", inputmode: "numeric"});
  const seed = h("input", {type: "number", min: 0, step: 1, name: "seed", inputmode: "numeric"});
  const steps = h("input", {type: "number", min: 1, max: 150, step: 1, name: "steps", inputmode: "numeric"});
  const style = ui.select([["", t("vary.no_style")], ...(config.styles || []).map((s) => s.name)], "");
  const models = [...(config.models?.local || []), ...remoteModels(config.models, "image-to-image").names];
  const model = ui.select([["", t("vary.default_model")], ...models], "");
  for (const sel of [style, model]) sel.options[0].dataset.i18n = sel === style ? "vary.no_style" : "vary.default_model";
  const remoteOff = disableUnavailable(model, config.models);  // no OpenAI key here: listed, not choosable

  // -- running and results -----------------------------------------------------------------
  const submitBtn = h("button", {type: "submit", class: "primary", disabled: true}, ui.tr("vary.submit"));
  const cancelBtn = h("button", {type: "button", class: "danger", hidden: true, onclick: cancel}, ui.tr("common.cancel"));
  const progressText = h("p", {id: ui.newId("vary-progress"), role: "status"});
  const bar = h("progress", {max: 1, value: 0, hidden: true, "aria-labelledby": progressText.id});
  const previewImg = h("img", {class: "vary-live", alt: t("vary.live_preview"), "data-i18n-attr": "alt:vary.live_preview",
                               hidden: true});
  const grid = h("div", {class: "vary-grid", "aria-live": "polite"});
  const record = h("div", {class: "vary-record"});

  const form = h("form", {class: "vary-form", novalidate: true},
    h("div", {class: "grid2"},
      h("div", {class: "panel"},
        h("h3", {}, ui.tr("vary.picture")), picker.el, fileName, original),
      h("div", {class: "panel"},
        h("h3", {}, ui.tr("vary.edit_title")),
        ui.field("vary.edit", edit, "vary.edit_hint"),
        h("div", {class: "row"}, describeBtn),
        ui.field("vary.description", description, "vary.description_hint"),
        ui.field("vary.merged", merged),
        previewNote,
        h("details", {class: "vary-steps-box"}, h("summary", {}, ui.tr("common.prompt_steps")), stepsBox))),
    h("div", {class: "panel"},
      h("div", {class: "row vary-settings"},
        h("div", {class: "vary-strength"}, strength.el),
        ui.field("vary.count", count),
        ui.field("common.seed", seed, "vary.seed_hint"),
        ui.field("common.steps", steps, "vary.steps_hint"),
        ui.field("vary.style", style),
        ui.field("common.model", model, remoteOff ? "vary.remote_unavailable" : undefined)),
      h("div", {class: "row"}, submitBtn, cancelBtn),
      progressText, bar, previewImg));
  const results = h("div", {class: "panel vary-results", hidden: true}, h("h3", {}, ui.tr("vary.results")), grid, record);
  root.append(form, results);

  form.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  for (const el of [description, edit]) el.addEventListener("input", schedulePreview);
  for (const el of [style, model]) el.addEventListener("change", schedulePreview);

  // A picture pasted anywhere on the page (the picker only hears pastes inside itself).
  const onPaste = (e) => {
    if (picker.el.contains(e.target)) return;
    const f = [...(e.clipboardData?.files || [])].find((x) => x.type.startsWith("image/"));
    if (f) { e.preventDefault(); setImage(f); }
  };
  document.addEventListener("paste", onPaste);
  const onLanguage = () => { if (lastDone) showResults(lastDone); showProgress(job?.progress || {}); };
  document.addEventListener("bildwerk:language", onLanguage);

  // A re-run from the gallery (rerun.js) fills the form with that job; #/vary/JOBID/INDEX
  // opens a job's result as the picture.
  const rerun = takeRerun();
  if (rerun?.mode === "image-to-image") rerunJob(rerun);
  else if (args[0]) loadResult(args[0], Number(args[1] || 0));

  // ----------------------------------------------------------------------------------------
  function setImage(f) {
    file = f;
    dataUrl = null;
    description.value = "";
    merged.value = "";
    previewNote.textContent = "";
    stepsBox.replaceChildren();
    if (fileUrl) URL.revokeObjectURL(fileUrl);
    fileUrl = URL.createObjectURL(f);
    original.src = fileUrl;
    original.hidden = false;
    fileName.textContent = f.name || "";
    describeBtn.disabled = false;
    submitBtn.disabled = false;
  }

  async function loadResult(id, index) {
    try {
      const src = await api.get(`/api/v1/jobs/${encodeURIComponent(id)}`);
      const r = src.results?.[index];
      if (!r) throw new Error(t("vary.no_result", {index}));
      const blob = await api.get(localPath(r.url));
      setImage(new File([blob], `${id.slice(0, 8)}-${index}.png`, {type: blob.type || "image/png"}));
    } catch (err) {
      ui.status(ui.errorText(err), "error");
    }
  }

  // The job's input picture as if picked, its settings in the form, its corrected description
  // (prompt_options.description) in the description box, and then the preview as after an edit.
  async function rerunJob({job: id, fields: f = {}, inputs = {}}) {
    try {
      if (inputs.image) {
        const blob = await api.get(inputs.image);
        setImage(new File([blob], `${String(id).slice(0, 8)}-input.png`, {type: blob.type || "image/png"}));
      }
    } catch (err) {
      ui.status(ui.errorText(err), "error");
    }
    const o = f.prompt_options || {};
    const set = (v) => v !== undefined && v !== null && v !== "";
    const choose = (sel, v) => {
      if (![...sel.options].some((x) => x.value === v)) sel.append(h("option", {value: v, text: v}));
      if (selectable(sel, v)) sel.value = v;  // a remote model without a key: the default
    };
    edit.value = f.prompt || "";
    if (set(f.strength)) { strength.input.value = f.strength; strength.sync(); }
    if (set(f.num_images)) count.value = Math.min(4, Math.max(1, Number(f.num_images)));
    if (set(f.seed)) seed.value = f.seed;
    if (set(f.steps)) steps.value = f.steps;
    if (set(o.style)) choose(style, o.style);
    if (set(f.model) && f.model !== config.models?.default) choose(model, f.model);
    if (set(o.description)) description.value = o.description;
    if (!file) return;
    ui.status(t("vary.rerun_loaded"));
    if (description.value.trim()) preview();
  }

  async function previewDataUrl(blob) {
    const bitmap = await createImageBitmap(blob);
    const scale = Math.min(1, PREVIEW_MAX_PX / Math.max(bitmap.width, bitmap.height));
    if (scale === 1) { bitmap.close(); return readDataUrl(blob); }
    const canvas = h("canvas", {width: Math.round(bitmap.width * scale), height: Math.round(bitmap.height * scale)});
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL(blob.type === "image/png" ? "image/png" : "image/jpeg", 0.92);
  }

  function readDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  function promptOptions({withDescription = true} = {}) {
    const options = {describe: "local"};
    const text = description.value.trim();
    if (withDescription && text) options.description = text;
    if (style.value) options.style = style.value;
    return options;
  }

  function schedulePreview() {
    if (!file || (!merged.value && !description.value.trim())) return;  // nothing described yet
    clearTimeout(previewTimer);
    previewTimer = setTimeout(() => preview(), PREVIEW_DELAY_MS);
  }

  // describe: run the describer (the button); otherwise use the description as written.
  async function preview({describe = false} = {}) {
    if (!file) return;
    clearTimeout(previewTimer);
    const seq = ++previewSeq;
    describeBtn.setAttribute("aria-busy", "true");
    previewNote.textContent = t(describe ? "vary.describing" : "vary.merging");
    try {
      dataUrl ??= await previewDataUrl(file);
      const body = {prompt: edit.value.trim(), mode: "image-to-image", image: dataUrl,
                    prompt_options: promptOptions({withDescription: !describe})};
      if (model.value) body.model = model.value;
      const res = await api.post("/api/v1/prompt", body);
      if (seq !== previewSeq) return;
      const steps = res.record?.steps || [];
      if (describe) description.value = steps.find((s) => s.step === "describe")?.output ?? "";
      merged.value = res.prompt;
      stepsBox.replaceChildren(stepsList(steps));
      previewNote.textContent = (res.record?.warnings || []).join(" ");
    } catch (err) {
      if (seq === previewSeq) previewNote.textContent = ui.errorText(err);
    } finally {
      if (seq === previewSeq) describeBtn.removeAttribute("aria-busy");
    }
  }

  async function submit() {
    if (!file) { ui.status(t("vary.need_image"), "error"); return; }
    const n = Math.min(4, Math.max(1, Math.round(Number(count.value) || 1)));
    count.value = n;
    const fields = {prompt: edit.value.trim(), mode: "image-to-image", num_images: n,
                    strength: Number(strength.input.value), prompt_options: promptOptions()};
    if (seed.value !== "") fields.seed = Number(seed.value);
    if (steps.value !== "") fields.steps = Number(steps.value);
    if (model.value) fields.model = model.value;
    submitBtn.disabled = true;
    try {
      job = await api.submitJob(fields, {image: file});
    } catch (err) {
      submitBtn.disabled = false;
      ui.status(ui.errorText(err), "error");
      return;
    }
    ui.status("");
    cancelBtn.hidden = false;
    cancelBtn.disabled = false;
    bar.hidden = false;
    bar.value = 0;
    previewImg.hidden = true;
    showProgress({status: job.status, queue_position: job.queue_position});
    follow = jobs.followJob(job.id, {
      onProgress: (p) => { job.progress = p; showProgress(p); },
      onPreview: (src) => { previewImg.src = src; previewImg.hidden = false; },
      onEnd: (done, err) => finished(done, err),
    });
  }

  function showProgress(p) {
    if (!job) return;
    const status = p.status || job.status;
    let text = t(`common.${status}`);
    if (status === "queued" && p.queue_position) text += ` · ${t("common.queue_position", {n: p.queue_position})}`;
    if (status === "running" && p.phase === "denoise" && p.total) text += ` · ${t("vary.step_of", {step: p.step, total: p.total})}`;
    progressText.textContent = text;
    if (typeof p.fraction === "number" && (p.phase === "denoise" || p.phase === "done")) bar.value = p.fraction;
  }

  function finished(done, err) {
    follow = null;
    submitBtn.disabled = !file;
    cancelBtn.hidden = true;
    bar.hidden = true;
    previewImg.hidden = true;
    if (!done) { progressText.textContent = ui.errorText(err); return; }
    job = done;
    showProgress({status: done.status});
    if (done.status === "failed") progressText.textContent += `: ${done.error?.message || done.error || ""}`;
    if (done.status === "succeeded") showResults(done);
  }

  async function cancel() {
    if (!job) return;
    cancelBtn.disabled = true;
    try {
      await api.post(`/api/v1/jobs/${encodeURIComponent(job.id)}/cancel`, {});
    } catch (err) {
      ui.status(ui.errorText(err), "error");
      cancelBtn.disabled = false;
    }
  }

  function showResults(done) {
    lastDone = done;
    const figures = [];
    const input = done.inputs?.image?.url;
    if (input) {
      figures.push(h("figure", {class: "vary-item vary-item-original"},
        h("img", {src: localPath(input), alt: t("vary.original")}),
        h("figcaption", {}, h("strong", {text: t("vary.original")}))));
    }
    for (const r of done.results || []) {
      const label = t("vary.variation", {n: r.index + 1});
      const url = localPath(r.url);
      figures.push(h("figure", {class: "vary-item", dataset: {seed: r.seed}},
        h("img", {src: url, alt: `${label} (${t("common.seed")} ${r.seed})`}),
        h("figcaption", {},
          h("strong", {text: label}), " ", h("span", {class: "muted", text: `${t("common.seed")} ${r.seed}`}),
          h("span", {class: "vary-actions"},
            h("a", {href: url, download: `vary-${done.id.slice(0, 8)}-${r.index}.png`, class: "vary-link",
                    text: t("common.download")}),
            h("a", {href: `#/vary/${encodeURIComponent(done.id)}/${r.index}`, class: "vary-link",
                    text: t("vary.vary_again")})))));
    }
    grid.replaceChildren(...figures);
    results.hidden = false;
    record.replaceChildren(h("details", {open: true}, h("summary", {text: t("vary.record")}), jobRecord(done)));
  }

  return {
    unmount() {
      clearTimeout(previewTimer);
      previewSeq++;
      follow?.close();
      if (fileUrl) URL.revokeObjectURL(fileUrl);
      document.removeEventListener("paste", onPaste);
      document.removeEventListener("bildwerk:language", onLanguage);
    },
  };
}
