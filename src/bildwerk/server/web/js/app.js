// The shell: language, login, tabs and a hash router. Each view is a module in views/ with
//   export async function mount(root, ctx)   -> optional {unmount()}
// ctx: {api, t, ui, jobs, config, go(path)}. A view builds its own DOM inside root.
import * as api from "./api.js";
import * as jobs from "./jobs.js";
import * as ui from "./ui.js";
import {LANGUAGES, chooseLanguage, setLanguage, t, translateTree} from "./i18n.js";

const VIEWS = ["generate", "vary", "inpaint", "gallery", "pools"];
let mounted = null;
let config = {};
let routing = 0;  // counts navigations: a route() overtaken by a newer one while it awaited stops

function buildTabs() {
  const tabs = document.getElementById("tabs");
  tabs.replaceChildren(...VIEWS.map((v) => ui.h("li", {},
    ui.h("a", {href: `#/${v}`, id: `tab-${v}`, "data-i18n": `common.tab_${v}`, text: t(`common.tab_${v}`)}))));
}

function currentRoute() {
  const [, name = "generate", ...rest] = location.hash.replace(/^#/, "").split("/");
  return {name: VIEWS.includes(name) ? name : "generate", args: rest.map(decodeURIComponent)};
}

async function route() {
  const {name, args} = currentRoute();
  for (const v of VIEWS) {
    const a = document.getElementById(`tab-${v}`);
    if (v === name) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (mounted?.unmount) mounted.unmount();
  mounted = null;  // unmounted once, even when this route is overtaken before it mounts
  const main = document.getElementById("main");
  main.replaceChildren();
  ui.status("");
  const mine = ++routing;
  const mod = await import(`./views/${name}.js`);
  if (mine !== routing) return;  // two quick hash changes: only the last one's view is built
  const root = ui.h("section", {"aria-labelledby": `${name}-title`, class: `view view-${name}`},
    ui.h("h2", {id: `${name}-title`, "data-i18n": `common.tab_${name}`, text: t(`common.tab_${name}`)}));
  main.append(root);
  document.title = `${t(`common.tab_${name}`)} – bildwerk`;
  const view = await mod.mount(root, {api, t, ui, jobs, config, args, go: (path) => { location.hash = path; }});
  if (mine !== routing) {  // overtaken while mounting: the newer route cleared main; stop this view
    if (view?.unmount) view.unmount();
    return;
  }
  mounted = view;
}

async function session() {
  const s = await api.get("/api/v1/session");
  document.getElementById("logout").hidden = !(s.auth_required && s.authenticated);
  return s;
}

function askForKey() {
  const dlg = document.getElementById("login");
  if (dlg.open) return;
  document.getElementById("login-error").textContent = "";
  dlg.showModal();
  document.getElementById("login-key").focus();
}

function setUpLogin() {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = document.getElementById("login-key");
    try {
      await api.post("/api/v1/session", {key: input.value});
      input.value = "";
      document.getElementById("login").close();
      await session();
      await loadConfig();
      route();
    } catch (err) {
      document.getElementById("login-error").textContent =
        err.status === 401 ? t("common.login_wrong") : ui.errorText(err);
    }
  });
  document.getElementById("logout").addEventListener("click", async () => {
    await api.del("/api/v1/session").catch(() => {});
    document.getElementById("logout").hidden = true;
    askForKey();
  });
  api.onUnauthorized(askForKey);
}

async function loadConfig() {
  try {
    const [models, styles, samplers] = await Promise.all([
      api.get("/api/v1/models"), api.get("/api/v1/styles"), api.get("/api/v1/samplers")]);
    Object.assign(config, {models, styles: styles.styles, samplers: samplers.samplers});
  } catch (err) {
    if (err.status !== 401) ui.status(ui.errorText(err), "error");
  }
}

async function boot() {
  const select = document.getElementById("lang");
  for (const [code, name] of Object.entries(LANGUAGES)) select.append(ui.h("option", {value: code, lang: code, text: name}));
  const lang = chooseLanguage();
  await setLanguage(lang);
  select.value = lang;
  select.addEventListener("change", () => setLanguage(select.value, {remember: true}));
  document.addEventListener("bildwerk:language", () => {
    translateTree(document);
    const {name} = currentRoute();
    document.title = `${t(`common.tab_${name}`)} – bildwerk`;
  });
  buildTabs();
  setUpLogin();
  const s = await session().catch(() => ({auth_required: false, authenticated: true}));
  window.addEventListener("hashchange", route);
  if (s.auth_required && !s.authenticated) {
    askForKey();
    return;
  }
  await loadConfig();
  await route();
}

boot();
