// A job's record as people read it: the user's own words, every prompt step with what it did,
// then the parameters the engine really used (record.*, filled in where the request left them
// unset), seeds, timings and input pictures. The prompt record of a job lives at
// record.request.prompt_record; POST /api/v1/prompt answers the same shape as "record".
// Labels are data-i18n nodes, so a language switch relabels a record already shown.
import {localPath} from "./api.js";
import {t} from "./i18n.js";
import {h, tr} from "./ui.js";

// A translated label where the key exists, the raw name otherwise (a step or mode added later).
function label(key, fallback, tag = "span", attrs = {}) {
  return t(key) === key ? h(tag, {...attrs, text: fallback}) : tr(key, tag, attrs);
}

function stepText(s) {
  const d = s.details || {};
  if (s.step === "language" && typeof d.confidence === "number") return `${s.output} (${Math.round(d.confidence * 100)} %)`;
  if (s.step === "expand" && d.added) return `+ ${d.added}`;
  return s.output ?? "";
}

export function stepsList(steps) {
  if (!steps?.length) return tr("common.no_steps", "p", {class: "muted"});
  return h("ol", {class: "steps", "aria-label": t("common.prompt_steps"), "data-i18n-attr": "aria-label:common.prompt_steps"},
    steps.map((s) => {
      const skipped = s.details?.skipped;
      return h("li", {dataset: {step: s.step}, class: skipped ? "skipped" : null},
        label(`common.step_${s.step}`, s.step, "span", {class: "step-name"}),
        s.backend ? h("span", {class: "muted", text: ` (${s.backend})`}) : null,
        skipped
          ? h("div", {class: "step-out muted"}, tr("generate.rec_skipped"), `: ${skipped}`)
          : h("div", {class: "step-out", text: stepText(s)}));
    }));
}

const seconds = (v) => `${Number(v).toFixed(2)} s`;

export function jobRecord(job) {
  const rec = job.record || {};
  const req = rec.request || job.request || {};
  const asked = job.request || {};
  const pr = req.prompt_record || {};
  const done = rec.request !== undefined;  // an ended job: what the engine used, not only what was asked
  const seeds = rec.seeds || (job.results?.length ? job.results.map((r) => r.seed) : [asked.seed ?? job.seed]);
  const model = rec.model ? [rec.model.name, rec.model.ref && rec.model.ref !== rec.model.name ? `(${rec.model.ref})` : ""].join(" ").trim()
    : (job.model || asked.model);
  const width = done ? rec.width : asked.width, height = done ? rec.height : asked.height;
  const options = Object.entries(job.options || {}).map(([k, v]) => (v === true ? k : `${k}: ${v}`)).join(", ");
  // What the client itself chose (the museum's text fidelity, A1111's cfg_scale...), beside what it became.
  const sent = Object.entries(req.origin_inputs || asked.origin_inputs || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
  const timings = Object.entries(rec.timings || {}).map(([k, v]) => `${k} ${seconds(v)}`).join(" · ");
  const rows = [
    ["common.original_prompt", pr.original ?? asked.prompt],
    ["common.language", pr.language],
    ["common.final_prompt", pr.prompt ?? job.prompt],
    ["common.negative_prompt", pr.negative_prompt || req.negative_prompt],
    ["generate.rec_status", label(`common.${job.status}`, job.status)],
    ["common.mode", label(`generate.mode_${job.mode}`, job.mode)],
    ["common.model", model],
    ["common.seed", seeds.filter((s) => s !== undefined && s !== null).join(", ")],
    ["common.steps", req.steps],
    ["common.guidance", rec.guidance ?? req.guidance],
    ["common.scheduler", rec.scheduler ?? req.scheduler],
    ["common.size", width && height ? `${width}×${height}` : null],
    ["generate.num_images", req.num_images],
    ["generate.rec_strength", job.mode && job.mode !== "text-to-image" ? req.strength : null],
    ["generate.rec_options", options],
    ["generate.rec_sent", sent],
    ["generate.rec_timings", timings],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  const dl = h("dl", {}, rows.flatMap(([k, v]) => [tr(k, "dt"), h("dd", {}, v instanceof Node ? v : String(v))]));
  const inputs = Object.entries(job.inputs || {}).map(([role, img]) => h("figure", {class: "rec-input"},
    h("img", {src: localPath(img.url), alt: t(`generate.rec_input_${role}`), "data-i18n-attr": `alt:generate.rec_input_${role}`}),
    label(`generate.rec_input_${role}`, role, "figcaption")));
  const notes = [...new Set([...(job.warnings || []), ...(req.warnings || []), ...(pr.warnings || []), ...(rec.notes || [])])];
  return h("div", {class: "record"},
    job.error ? h("p", {class: "error", text: `${job.error.code}: ${job.error.message}`}) : null,
    dl,
    tr("common.prompt_steps", "h4"),
    stepsList(pr.steps),
    inputs.length ? h("div", {class: "rec-inputs"}, inputs) : null,
    notes.map((w) => h("p", {class: "muted", text: w})));
}
