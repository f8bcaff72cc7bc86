// Small DOM helpers shared by the views. Text always goes in as text (never as HTML): prompts
// and records come from users.
import {t} from "./i18n.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

let uid = 0;
export const newId = (prefix = "f") => `${prefix}-${++uid}`;

// Text that follows the language: a span the app re-translates on a language switch.
export const tr = (key, tag = "span", attrs = {}) => h(tag, {...attrs, "data-i18n": key, text: t(key)});

// A labelled control: field("common.steps", h("input", {...}), hintKey?) -> div.field
// Labels and hints are i18n keys, so a language switch relabels the form without losing its values.
export function field(labelKey, control, hintKey) {
  if (!control.id) control.id = newId();
  const parts = [h("label", {for: control.id}, tr(labelKey)), control];
  if (hintKey) {
    const hid = newId("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(tr(hintKey, "span", {class: "hint", id: hid}));
  }
  return h("div", {class: "field"}, parts);
}

// A range with its value shown next to its label (and announced as the slider's value).
export function slider(labelKey, {min, max, step = 1, value, name, format = (v) => v}) {
  const input = h("input", {type: "range", min, max, step, value, name});
  const out = h("output", {text: format(value)});
  const sync = () => { out.textContent = format(input.value); input.setAttribute("aria-valuetext", format(input.value)); };
  input.addEventListener("input", sync);
  sync();
  const f = field(labelKey, input);
  f.querySelector("label").append(" ", out);
  return {el: f, input, sync};
}

export function select(options, value) {
  const el = h("select");
  for (const o of options) {
    const [v, label] = Array.isArray(o) ? o : [o, o];
    el.append(h("option", {value: v, text: label, selected: v === value}));
  }
  return el;
}

// The banner under the header: status("...") / status("...", "error") / status("").
export function status(message, kind = "info") {
  const el = document.getElementById("status");
  el.classList.toggle("error-state", kind === "error");
  el.textContent = message || "";
}

export function errorText(err) {
  if (!err) return "";
  if (err.code === "network") return t("common.error_network");
  return err.message || String(err);
}

// An image from a drop, a file picker or the clipboard: calls onImage(File) with one picture.
export function imagePicker({labelKey = "common.pick_image", onImage}) {
  const input = h("input", {type: "file", accept: "image/png,image/jpeg,image/webp", class: "sr-only",
                            tabindex: "-1", "aria-hidden": "true"});
  const button = h("button", {type: "button", onclick: () => input.click()}, tr(labelKey));
  const zone = h("div", {class: "dropzone"}, tr("common.drop_hint", "p", {class: "muted"}), button, input);
  input.addEventListener("change", () => { if (input.files[0]) onImage(input.files[0]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault(); zone.classList.remove("over");
    const f = [...(e.dataTransfer?.files || [])].find((x) => x.type.startsWith("image/"));
    if (f) onImage(f);
  });
  zone.addEventListener("paste", (e) => {
    const f = [...(e.clipboardData?.files || [])].find((x) => x.type.startsWith("image/"));
    if (f) onImage(f);
  });
  return {el: zone, input, button};
}
