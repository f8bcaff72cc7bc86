// "Re-run with changes": the gallery leaves a job's request in sessionStorage under
// "bildwerk.rerun" and opens the view for its mode; that view takes it (once) on mount and
// fills its form. The value is JSON:
//   {"job": ID, "mode": "text-to-image"|"image-to-image"|"inpaint",
//    "fields": {...the POST /api/v1/jobs body, prompt_options included...},
//    "inputs": {"image": "/api/v1/images/SHA", "mask": "/api/v1/images/SHA"}}  (inputs: when the job had them)
// sessionStorage, not the URL: a request does not fit a hash route, and it stays in this tab.
import {localPath} from "./api.js";

export const RERUN_KEY = "bildwerk.rerun";
// The job the generate view last started in this tab (shown again on coming back); the
// gallery forgets it when it deletes that job, so no view asks for a job that is gone.
export const LAST_JOB_KEY = "bildwerk.generate.job";
const VIEW_OF_MODE = {"text-to-image": "#/generate", "image-to-image": "#/vary", "inpaint": "#/inpaint"};

// Stores the job's request and returns the route of the view that re-runs it.
export function saveRerun(job) {
  // The record's own parts (how the prompt came about, image hashes) are not request fields.
  const {prompt_record: _r, image_sha256: _i, mask_sha256: _m, ...fields} = job.request || {};
  if (job.options && Object.keys(job.options).length) fields.prompt_options = job.options;
  const inputs = Object.fromEntries(Object.entries(job.inputs || {}).map(([role, v]) => [role, localPath(v.url)]));
  const mode = job.mode || fields.mode || "text-to-image";
  sessionStorage.setItem(RERUN_KEY, JSON.stringify({job: job.id, mode, fields, inputs}));
  return VIEW_OF_MODE[mode] || "#/generate";
}

// The stored re-run (removed, so a later visit starts empty), or null.
export function takeRerun() {
  const text = sessionStorage.getItem(RERUN_KEY);
  sessionStorage.removeItem(RERUN_KEY);
  if (!text) return null;
  try {
    const value = JSON.parse(text);
    return value && typeof value.fields === "object" ? value : null;
  } catch {
    return null;
  }
}
