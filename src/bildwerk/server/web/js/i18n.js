// Strings are data: i18n/<lang>/<namespace>.json, one file per view, flat keys.
// t("generate.prompt") looks up key "prompt" of namespace "generate" in the chosen
// language, then in English, then shows the key itself (a missing string is visible, not fatal).
export const LANGUAGES = {de: "Deutsch", en: "English", fr: "Français", ko: "한국어", ru: "Русский"};
export const NAMESPACES = ["common", "generate", "vary", "inpaint", "gallery", "pools"];
const STORE_KEY = "bildwerk.lang";

let current = "en";
const tables = {};  // lang -> namespace -> {key: text}

export function chooseLanguage() {
  const saved = localStorage.getItem(STORE_KEY);
  if (saved && saved in LANGUAGES) return saved;
  for (const tag of navigator.languages || [navigator.language || "en"]) {
    const base = String(tag).toLowerCase().split("-")[0];
    if (base in LANGUAGES) return base;
  }
  return "en";
}

async function loadTable(lang) {
  if (tables[lang]) return tables[lang];
  const entries = await Promise.all(NAMESPACES.map(async (ns) => {
    const r = await fetch(`/ui/i18n/${lang}/${ns}.json`, {credentials: "same-origin"});
    return [ns, r.ok ? await r.json() : {}];
  }));
  tables[lang] = Object.fromEntries(entries);
  return tables[lang];
}

export async function setLanguage(lang, {remember = false} = {}) {
  if (!(lang in LANGUAGES)) lang = "en";
  await Promise.all([loadTable("en"), loadTable(lang)]);
  current = lang;
  document.documentElement.lang = lang;
  if (remember) localStorage.setItem(STORE_KEY, lang);
  translateTree(document);
  document.dispatchEvent(new CustomEvent("bildwerk:language", {detail: {lang}}));
}

export function language() { return current; }

export function t(key, vars = {}) {
  const dot = key.indexOf(".");
  const ns = key.slice(0, dot), name = key.slice(dot + 1);
  const text = tables[current]?.[ns]?.[name] ?? tables.en?.[ns]?.[name] ?? key;
  return text.replace(/\{(\w+)\}/g, (m, v) => (v in vars ? String(vars[v]) : m));
}

// Elements written in HTML carry data-i18n="ns.key" (text) and
// data-i18n-attr="attr:ns.key;attr2:ns.key2" (attributes); views built in JS call t() and
// re-render on the "bildwerk:language" event, or use these attributes too.
export function translateTree(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-attr]")) {
    for (const pair of el.dataset.i18nAttr.split(";")) {
      const [attr, key] = pair.split(":");
      if (attr && key) el.setAttribute(attr.trim(), t(key.trim()));
    }
  }
}
