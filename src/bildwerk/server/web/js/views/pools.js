// Pools: many pictures for one topic. #/pools lists them and plans a new one; #/pools/ID is
// one pool: review and edit its plan (a form, or the YAML), start it, follow it live,
// pause, resume or cancel it, browse its pictures by kind and location, read its report.
import {localPath} from "../api.js";
import {LANGUAGES, language} from "../i18n.js";

const KNOWN_KINDS = ["interiors", "exteriors", "items"];
const DEFAULT_MIX = [["interiors", 60], ["exteriors", 20], ["items", 20]];
// What the pool service allows in each status (pool/service.py).
const EDITABLE = ["draft", "paused", "short", "failed"];
const RESUMABLE = ["paused", "short", "failed"];
const CANCELLABLE = ["draft", "running", "paused", "short", "failed"];
const REPORTED = ["paused", "complete", "short", "failed", "cancelled"];  // a run has ended: report.json exists
const PAGE = 48;

export function mount(root, ctx) {
  return ctx.args[0] ? poolPage(root, ctx, ctx.args[0]) : listPage(root, ctx);
}

function kindLabel(t, kind) {
  const key = `pools.kind_${kind}`;
  const text = t(key);
  return text === key ? kind : text;
}

// Images per kind as the planner splits them (largest remainders get the spare ones).
function split(total, shares) {
  const sum = shares.reduce((a, b) => a + b, 0);
  if (!(total > 0) || !(sum > 0)) return shares.map(() => 0);
  const exact = shares.map((s) => (total * s) / sum);
  const counts = exact.map(Math.floor);
  let spare = total - counts.reduce((a, b) => a + b, 0);
  const order = exact.map((x, i) => [x - counts[i], i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, i] of order) { if (spare-- <= 0) break; counts[i] += 1; }
  return counts;
}

const optionalInt = (input) => (input.value === "" ? null : Math.round(Number(input.value)));

// -- the list and a new pool --------------------------------------------------------------
async function listPage(root, {api, t, ui, go}) {
  const h = ui.h;
  const kindsList = h("datalist", {id: ui.newId("kinds")},
    KNOWN_KINDS.map((k) => h("option", {value: k, label: kindLabel(t, k)})));
  const topic = h("input", {type: "text", name: "topic", required: true, maxlength: 200, autocomplete: "off"});
  const images = h("input", {type: "number", name: "images", min: 1, max: 1000000, step: 1, value: 600,
                             required: true, inputmode: "numeric"});
  const rows = [];
  const mixBox = h("div", {class: "pool-mix"});
  const addBtn = h("button", {type: "button", onclick: () => { addKind("", 20).name.focus(); }}, ui.tr("pools.add_kind"));
  const lang = ui.select([["", t("pools.language_auto")], ...Object.entries(LANGUAGES)], language());
  lang.options[0].dataset.i18n = "pools.language_auto";
  const offline = h("input", {type: "checkbox", name: "offline", checked: true});
  const steps = h("input", {type: "number", name: "steps", min: 1, max: 150, step: 1, inputmode: "numeric"});
  const width = h("input", {type: "number", name: "width", min: 64, max: 2048, step: 8, inputmode: "numeric"});
  const height = h("input", {type: "number", name: "height", min: 64, max: 2048, step: 8, inputmode: "numeric"});
  const createBtn = h("button", {type: "submit", class: "primary"}, ui.tr("pools.create"));
  const formError = h("p", {class: "error", role: "alert"});

  const form = h("form", {class: "panel pool-new", novalidate: true},
    h("h3", {}, ui.tr("pools.new")),
    ui.field("pools.topic", topic, "pools.topic_hint"),
    h("div", {class: "row"}, ui.field("pools.images", images), ui.field("pools.language", lang, "pools.language_hint")),
    h("fieldset", {class: "pool-mix-set"}, h("legend", {}, ui.tr("pools.mix")), kindsList, mixBox, addBtn),
    h("label", {class: "check"}, offline, ui.tr("pools.offline")),
    h("details", {class: "pool-more"}, h("summary", {}, ui.tr("pools.more")),
      h("div", {class: "row"}, ui.field("common.steps", steps, "pools.default_hint"),
        ui.field("pools.width", width, "pools.default_hint"), ui.field("pools.height", height, "pools.default_hint"))),
    h("div", {class: "row"}, createBtn), formError);

  const listBox = h("div", {class: "pool-list"}, ui.tr("common.loading", "p", {class: "muted"}));
  root.append(form, h("div", {class: "panel"}, h("h3", {}, ui.tr("pools.list")), listBox));

  function addKind(name, share) {
    const row = {
      name: h("input", {type: "text", value: name, list: kindsList.id, required: true, autocomplete: "off",
                        maxlength: 80}),
      share: h("input", {type: "number", value: share, min: 1, max: 1000, step: 1, inputmode: "numeric"}),
      out: h("output", {class: "pool-mix-images", "aria-live": "off"}),
    };
    row.remove = h("button", {type: "button", class: "danger", onclick: () => {
      rows.splice(rows.indexOf(row), 1);
      row.el.remove();
      update();
      (rows[0]?.name || addBtn).focus();
    }}, ui.tr("pools.remove_kind"));
    row.el = h("div", {class: "pool-mix-row"}, ui.field("pools.kind", row.name), ui.field("pools.share", row.share),
      row.out, row.remove);
    for (const el of [row.name, row.share]) el.addEventListener("input", update);
    rows.push(row);
    mixBox.append(row.el);
    update();
    return row;
  }

  function update() {
    const counts = split(Number(images.value), rows.map((r) => Math.max(0, Number(r.share.value) || 0)));
    rows.forEach((r, i) => {
      r.out.textContent = t("pools.kind_images", {n: counts[i]});
      r.remove.disabled = rows.length === 1;
      r.remove.setAttribute("aria-label", `${t("pools.remove_kind")}: ${r.name.value || i + 1}`);
    });
  }

  for (const [k, s] of DEFAULT_MIX) addKind(k, s);
  images.addEventListener("input", update);

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    formError.textContent = "";
    const names = rows.map((r) => r.name.value.trim());
    const shares = rows.map((r) => Number(r.share.value));
    let problem = null;
    if (!topic.value.trim()) problem = t("pools.need_topic");
    else if (!(Number(images.value) >= 1)) problem = t("pools.need_images");
    else if (names.some((n) => !n) || new Set(names).size !== names.length) problem = t("pools.need_kinds");
    else if (shares.some((s) => !(s > 0))) problem = t("pools.need_shares");
    if (problem) { formError.textContent = problem; return; }
    const body = {topic: topic.value.trim(), images: Math.round(Number(images.value)),
                  mix: Object.fromEntries(names.map((n, i) => [n, shares[i]])), offline: offline.checked};
    if (lang.value) body.language = lang.value;
    const settings = Object.fromEntries([["steps", steps], ["width", width], ["height", height]]
      .map(([k, el]) => [k, optionalInt(el)]).filter(([, v]) => v !== null));
    if (Object.keys(settings).length) body.settings = settings;
    createBtn.disabled = true;
    ui.status(t("pools.planning"));
    try {
      const pool = await api.post("/api/v1/pools", body);
      ui.status("");
      go(`#/pools/${encodeURIComponent(pool.id)}`);
    } catch (err) {
      ui.status("");
      formError.textContent = ui.errorText(err);
    } finally {
      createBtn.disabled = false;
    }
  });

  let list = [];
  const onLanguage = () => { update(); renderList(); };
  document.addEventListener("bildwerk:language", onLanguage);

  function renderList() {
    if (!list.length) { listBox.replaceChildren(ui.tr("pools.none", "p", {class: "muted"})); return; }
    const head = h("tr", {}, ["pools.topic", "pools.status", "pools.accepted_of", "pools.created"]
      .map((k) => h("th", {scope: "col"}, ui.tr(k))));
    const body = list.map((p) => h("tr", {dataset: {pool: p.id}},
      h("td", {}, h("a", {href: `#/pools/${encodeURIComponent(p.id)}`, text: p.topic})),
      h("td", {text: t(`pools.status_${p.status}`)}),
      h("td", {text: p.accepted === undefined ? `– / ${p.target}` : `${p.accepted} / ${p.target}`}),
      h("td", {text: new Date(p.created_at * 1000).toLocaleString(language())})));
    listBox.replaceChildren(h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
  }

  try {
    list = (await api.get("/api/v1/pools?limit=50")).pools;
    renderList();
    // The list has no counts; each pool's own view has them (a draft has made nothing yet).
    await Promise.all(list.map(async (p) => {
      if (p.status === "draft") { p.accepted = 0; return; }
      try { p.accepted = (await api.get(`/api/v1/pools/${encodeURIComponent(p.id)}`)).accepted; } catch { /* stays – */ }
    }));
    renderList();
  } catch (err) {
    listBox.replaceChildren(h("p", {class: "error", text: ui.errorText(err)}));
  }
  return {unmount() { document.removeEventListener("bildwerk:language", onLanguage); }};
}

// -- one pool -----------------------------------------------------------------------------
async function poolPage(root, {api, t, ui}, id) {
  const h = ui.h;
  const base = `/api/v1/pools/${encodeURIComponent(id)}`;
  let pool = null;     // the server's view: status, counts, plan
  let plan = null;     // the plan under review, edited in place
  let dirty = false;   // plan differs from the server's
  let busy = false;    // an action or a save is on its way
  let events = null;   // the EventSource while the pool works
  let report = null;
  let browseSeq = 0;
  let browseTimer = null;
  let shown = 0;
  const openKinds = new Map();  // kind -> open, kept across re-renders of the plan

  // header and actions
  const title = h("h3", {class: "pool-title"});
  const statusLine = h("p", {class: "pool-status", role: "status"});
  const errorLine = h("p", {class: "error", role: "alert"});
  const buttons = Object.fromEntries(["start", "pause", "resume", "cancel"].map((name) =>
    [name, h("button", {type: "button", class: name === "start" ? "primary" : name === "cancel" ? "danger" : null,
                        onclick: () => act(name)}, ui.tr(`pools.${name}`))]));

  // progress
  const summary = h("p", {id: ui.newId("pool-summary"), class: "pool-summary"});
  const bar = h("progress", {max: 1, value: 0, "aria-labelledby": summary.id});
  const kindsBox = h("div", {class: "pool-kinds"});

  // plan review
  const planBox = h("div", {class: "plan-form"});
  const saveBtn = h("button", {type: "button", class: "primary", onclick: () => savePlan()}, ui.tr("pools.save_plan"));
  const dirtyNote = h("span", {class: "muted", "aria-live": "polite"});
  const planError = h("p", {class: "error", role: "alert"});
  const yaml = h("textarea", {rows: 18, spellcheck: "false", wrap: "off", class: "pool-yaml", autocomplete: "off"});
  const yamlSave = h("button", {type: "button", onclick: () => saveYaml()}, ui.tr("pools.save_yaml"));
  const yamlNote = ui.tr("pools.yaml_unsaved", "p", {class: "muted", hidden: true});
  const yamlError = h("p", {class: "error pool-yaml-error", role: "alert"});
  const yamlBox = h("details", {class: "pool-yaml-box"}, h("summary", {}, ui.tr("pools.edit_yaml")),
    yamlNote, ui.field("pools.yaml", yaml, "pools.yaml_hint"), h("div", {class: "row"}, yamlSave), yamlError);
  yamlBox.addEventListener("toggle", () => { if (yamlBox.open) loadYaml(); });

  // pictures, sheet, report, export
  const kindSel = h("select", {name: "kind"});
  const locSel = h("select", {name: "location"});
  const statusSel = ui.select(["accepted", "rejected", "failed"].map((s) => [s, t(`pools.item_${s}`)]), "accepted");
  [...statusSel.options].forEach((o) => { o.dataset.i18n = `pools.item_${o.value}`; });
  const countLine = h("p", {class: "muted", "aria-live": "polite"});
  const thumbs = h("div", {class: "thumbs pool-thumbs"});
  const moreBtn = h("button", {type: "button", hidden: true, onclick: () => browse({more: true})}, ui.tr("pools.more_images"));
  const sheetBox = h("div", {class: "pool-sheet"});
  const reportBox = h("div", {class: "pool-report"});
  const exportLink = h("a", {class: "pool-button", download: `pool-${id}.zip`, href: `${base}/export`, hidden: true},
    ui.tr("pools.export"));
  kindSel.addEventListener("change", () => { fillLocations(); browse(); });
  locSel.addEventListener("change", () => browse());
  statusSel.addEventListener("change", () => browse());

  const resultsPanel = h("div", {class: "panel pool-results", hidden: true},
    h("h3", {}, ui.tr("pools.pictures")),
    h("div", {class: "row"}, ui.field("pools.kind", kindSel), ui.field("pools.location", locSel),
      ui.field("pools.item_status", statusSel)),
    countLine, thumbs, moreBtn,
    h("h4", {}, ui.tr("pools.sheet")), sheetBox,
    h("h4", {}, ui.tr("pools.report")), reportBox,
    h("div", {class: "row"}, exportLink));

  root.append(
    h("div", {class: "panel pool-head"},
      h("p", {}, h("a", {href: "#/pools"}, ui.tr("pools.back"))),
      title, statusLine, h("div", {class: "row"}, Object.values(buttons)), errorLine),
    h("div", {class: "panel"}, h("h3", {}, ui.tr("pools.progress")), summary, bar, kindsBox),
    h("div", {class: "panel pool-plan"}, h("h3", {}, ui.tr("pools.plan")), ui.tr("pools.plan_hint", "p", {class: "muted"}),
      planBox, h("div", {class: "row"}, saveBtn, dirtyNote), planError, yamlBox),
    resultsPanel);

  const editable = () => !!pool && EDITABLE.includes(pool.status);
  const onLanguage = () => { renderAll(); browse(); };
  document.addEventListener("bildwerk:language", onLanguage);
  await refresh();

  // ----------------------------------------------------------------------------------------

  async function refresh() {
    try {
      pool = await api.get(base);
    } catch (err) {
      errorLine.textContent = ui.errorText(err);
      return;
    }
    if (!dirty) plan = structuredClone(pool.plan);
    renderAll();
    if (pool.status === "running" || pool.active) listen();
    if (pool.status !== "draft") { await loadReport(); browse(); }
  }

  function renderAll() {
    if (!pool) return;
    renderStatus();
    renderProgress();
    renderPlan();
    renderFilters();
    renderReport();
  }

  function renderStatus() {
    title.textContent = pool.topic;
    let text = `${t("pools.status")}: ${t(`pools.status_${pool.status}`)}`;
    if (pool.status !== "running" && pool.active) text += ` (${t("pools.winding_down")})`;
    if (pool.error) text += ` – ${pool.error}`;
    statusLine.textContent = text;
    buttons.start.disabled = busy || pool.status !== "draft";
    buttons.pause.disabled = busy || pool.status !== "running";
    buttons.resume.disabled = busy || !RESUMABLE.includes(pool.status);
    buttons.cancel.disabled = busy || !CANCELLABLE.includes(pool.status);
    saveBtn.disabled = busy || !dirty || !editable();
    dirtyNote.textContent = dirty ? t("pools.unsaved") : "";
    yaml.readOnly = !editable();
    yamlSave.disabled = busy || !editable();
    yamlNote.hidden = !dirty;
    const fieldset = planBox.querySelector("fieldset.plan-edit");
    if (fieldset) fieldset.disabled = !editable();
    resultsPanel.hidden = pool.status === "draft";
    exportLink.hidden = !(pool.accepted > 0);
  }

  function renderProgress() {
    const kinds = pool.kinds || [];
    const target = pool.target || 0;
    const rejected = kinds.reduce((a, k) => a + (k.rejected || 0), 0);
    const failed = kinds.reduce((a, k) => a + (k.failed || 0), 0);
    bar.max = Math.max(1, target);
    bar.value = Math.min(pool.accepted || 0, target);
    summary.textContent = t("pools.summary", {accepted: pool.accepted || 0, target, rejected, failed});
    const head = h("tr", {}, ["pools.kind", "pools.accepted_of", "pools.rejected", "pools.failed"]
      .map((k) => h("th", {scope: "col"}, ui.tr(k))));
    kindsBox.replaceChildren(h("table", {}, h("thead", {}, head), h("tbody", {}, kinds.map((k) =>
      h("tr", {dataset: {kind: k.kind}},
        h("th", {scope: "row", text: kindLabel(t, k.kind)}),
        h("td", {class: "pool-kind-accepted", text: `${k.accepted || 0} / ${k.target}`}),
        h("td", {text: String(k.rejected || 0)}), h("td", {text: String(k.failed || 0)}))))));
  }

  // The plan as a form: each kind's target, its locations (drop one) and their prompts (reword
  // one), the gates and the shared settings. Edits change `plan` in place; Save sends it.
  function renderPlan() {
    if (!plan) return;
    const openByDefault = plan.kinds.reduce((a, x) => a + x.locations.length, 0) <= 24;  // a big plan opens kind by kind
    const kinds = plan.kinds.map((k, ki) => {
      const target = h("input", {type: "number", min: 0, step: 1, value: k.images, inputmode: "numeric",
                                 dataset: {kindTarget: k.kind}});
      const planned = h("span", {class: "muted"});
      const showPlanned = () => {
        planned.textContent = t("pools.kind_planned", {
          locations: k.locations.length, planned: k.locations.reduce((a, l) => a + l.prompts.reduce((b, p) => b + p.images, 0), 0)});
      };
      showPlanned();
      target.addEventListener("input", () => {
        const n = Number(target.value);
        if (!Number.isInteger(n) || n < 0) return;
        k.images = n;
        plan.images = plan.kinds.reduce((a, x) => a + x.images, 0);  // the pool's target follows its kinds
        changed();
      });
      const locations = k.locations.map((loc, li) => h("li", {class: "plan-location", dataset: {location: loc.name}},
        h("div", {class: "plan-location-head"},
          h("h5", {}, loc.name, loc.english && loc.english !== loc.name ? h("span", {class: "muted", text: ` · ${loc.english}`}) : null),
          h("button", {type: "button", class: "danger plan-drop", "aria-label": `${t("pools.drop_location")}: ${loc.name}`,
                       onclick: () => dropLocation(ki, li)}, ui.tr("pools.drop_location"))),
        loc.prompts.map((p, pi) => {
          const text = h("textarea", {rows: 2, id: ui.newId("prompt"), dataset: {prompt: `${ki}.${li}.${pi}`}});
          text.value = p.prompt;
          text.addEventListener("input", () => { p.prompt = text.value; changed(); });
          const hint = p.original && p.original !== p.prompt ? h("span", {class: "hint", id: ui.newId("hint"), text: p.original}) : null;
          if (hint) text.setAttribute("aria-describedby", hint.id);
          return h("div", {class: "field"},
            h("label", {for: text.id}, ui.tr("pools.prompt"), ` ${pi + 1}`, h("span", {class: "sr-only", text: ` – ${loc.name}`}),
              p.images !== 1 ? h("span", {class: "muted", text: ` (${t("pools.kind_images", {n: p.images})})`}) : null),
            text, hint);
        })));
      const box = h("details", {class: "plan-kind", open: openKinds.get(k.kind) ?? openByDefault, dataset: {kind: k.kind}},
        h("summary", {}, h("span", {class: "plan-kind-name", text: kindLabel(t, k.kind)}), " ", planned),
        ui.field("pools.kind_target", target),
        h("ul", {class: "plan-locations"}, locations));
      box.addEventListener("toggle", () => openKinds.set(k.kind, box.open));
      return box;
    });
    const gates = plan.gates;
    const gate = (key) => {
      const box = h("input", {type: "checkbox", name: `gate-${key}`, checked: !!gates[key]});
      box.addEventListener("change", () => { gates[key] = box.checked; changed(); });
      return h("label", {class: "check"}, box, ui.tr(`pools.gate_${key}`));
    };
    const setting = (key, labelKey, attrs) => {
      const input = h("input", {type: "number", step: 1, inputmode: "numeric", name: `setting-${key}`, ...attrs});
      if (plan.settings[key] !== null && plan.settings[key] !== undefined) input.value = plan.settings[key];
      input.addEventListener("input", () => { plan.settings[key] = optionalInt(input); changed(); });
      return ui.field(labelKey, input, "pools.default_hint");
    };
    planBox.replaceChildren(h("fieldset", {class: "plan-edit", disabled: !editable()},
      h("legend", {class: "sr-only"}, ui.tr("pools.plan")),
      kinds,
      h("fieldset", {class: "plan-gates"}, h("legend", {}, ui.tr("pools.gates")), gate("nsfw"), gate("dedupe"), gate("topup")),
      h("fieldset", {class: "plan-settings"}, h("legend", {}, ui.tr("pools.settings")),
        h("div", {class: "row"}, setting("steps", "common.steps", {min: 1, max: 150}),
          setting("width", "pools.width", {min: 64, max: 2048, step: 8}),
          setting("height", "pools.height", {min: 64, max: 2048, step: 8})))));
    renderStatus();
  }

  function changed() {
    dirty = true;
    renderStatus();
  }

  function dropLocation(ki, li) {
    const kind = plan.kinds[ki];
    kind.locations.splice(li, 1);
    changed();
    renderPlan();
    // Keep the keyboard where it was: the next location's button, or the kind's target.
    const box = planBox.querySelectorAll(".plan-kind")[ki];
    const drops = box.querySelectorAll(".plan-drop");
    (drops[Math.min(li, drops.length - 1)] || box.querySelector("input")).focus();
  }

  async function savePlan() {
    busy = true;
    renderStatus();
    planError.textContent = "";
    try {
      accept(await api.put(`${base}/plan`, plan));
      ui.status(t("pools.plan_saved"));
      return true;
    } catch (err) {
      planError.textContent = ui.errorText(err);
      return false;
    } finally {
      busy = false;
      renderStatus();
    }
  }

  function accept(view) {
    pool = view;
    plan = structuredClone(view.plan);
    dirty = false;
    renderAll();
    if (yamlBox.open) loadYaml();
  }

  async function loadYaml() {
    try {
      const text = await api.get(`${base}/plan?format=yaml`, {headers: {Accept: "application/yaml"}});
      yaml.value = typeof text === "string" ? text : await text.text();
      yamlError.textContent = "";
    } catch (err) {
      yamlError.textContent = ui.errorText(err);
    }
  }

  async function saveYaml() {
    busy = true;
    renderStatus();
    try {
      accept(await api.request("PUT", `${base}/plan`, {body: yaml.value, headers: {"Content-Type": "application/yaml"}}));
      yamlError.textContent = "";
      ui.status(t("pools.plan_saved"));
    } catch (err) {
      yamlError.textContent = ui.errorText(err);  // one line that names the field
    } finally {
      busy = false;
      renderStatus();
    }
  }

  async function act(name) {
    if (busy) return;
    if ((name === "start" || name === "resume") && dirty && !(await savePlan())) return;
    busy = true;
    errorLine.textContent = "";
    renderStatus();
    try {
      const view = await api.post(`${base}/${name}`, {});
      pool.status = view.status;
      pool.active = view.active;
      if (view.status === "running" || view.active) listen();
    } catch (err) {
      errorLine.textContent = ui.errorText(err);
    } finally {
      busy = false;
      renderStatus();
    }
    const next = {start: "pause", resume: "pause", pause: "resume"}[name];
    if (next && !buttons[next].disabled) buttons[next].focus();
  }

  // Live progress: EventSource (the cookie authenticates it); closed at "end", which the
  // server sends once the pool stopped, or EventSource would reconnect for ever.
  function listen() {
    if (events) return;
    events = new EventSource(`${base}/events`);
    events.addEventListener("status", (e) => {
      const d = JSON.parse(e.data);
      if (d.kinds) Object.assign(pool, {target: d.target, planned: d.planned, accepted: d.accepted, kinds: d.kinds});
      if (d.status) pool.status = d.status;
      if ("active" in d) pool.active = d.active;
      renderStatus();
      renderProgress();
    });
    events.addEventListener("progress", (e) => {
      const d = JSON.parse(e.data);
      for (const k of pool.kinds || []) Object.assign(k, d.counts?.[k.kind] || {});
      if (typeof d.accepted === "number") pool.accepted = d.accepted;
      renderProgress();
      exportLink.hidden = !(pool.accepted > 0);
      if (d.type === "image") {
        clearTimeout(browseTimer);
        browseTimer = setTimeout(() => browse(), 1500);
      }
    });
    events.addEventListener("end", () => { stopListening(); refresh(); });
    events.addEventListener("stopping", (e) => { stopListening(); errorLine.textContent = JSON.parse(e.data).message; });
    events.onerror = () => { if (events && events.readyState === EventSource.CLOSED) stopListening(); };
  }

  function stopListening() {
    events?.close();
    events = null;
  }

  function renderFilters() {
    const kind = kindSel.value;
    kindSel.replaceChildren(h("option", {value: "", text: t("pools.all_kinds")}),
      ...plan.kinds.map((k) => h("option", {value: k.kind, text: kindLabel(t, k.kind)})));
    kindSel.value = kind && plan.kinds.some((k) => k.kind === kind) ? kind : plan.kinds[0]?.kind || "";
    fillLocations();
  }

  function fillLocations() {
    const loc = locSel.value;
    const kinds = kindSel.value ? plan.kinds.filter((k) => k.kind === kindSel.value) : plan.kinds;
    const names = [...new Set(kinds.flatMap((k) => k.locations.map((l) => l.name)))];
    locSel.replaceChildren(h("option", {value: "", text: t("pools.all_locations")}),
      ...names.map((n) => h("option", {value: n, text: n})));
    locSel.value = names.includes(loc) ? loc : "";
  }

  async function browse({more = false} = {}) {
    if (!pool || pool.status === "draft") return;
    clearTimeout(browseTimer);
    const seq = ++browseSeq;
    const q = new URLSearchParams({status: statusSel.value, limit: PAGE, offset: more ? shown : 0});
    if (kindSel.value) q.set("kind", kindSel.value);
    if (locSel.value) q.set("location", locSel.value);
    try {
      const res = await api.get(`${base}/images?${q}`);
      if (seq !== browseSeq) return;
      const figures = res.images.map(thumb);
      if (more) thumbs.append(...figures); else thumbs.replaceChildren(...figures);
      shown = (more ? shown : 0) + res.images.length;
      countLine.textContent = t("pools.shown", {shown, total: res.total});
      moreBtn.hidden = shown >= res.total;
    } catch (err) {
      if (seq === browseSeq) countLine.textContent = ui.errorText(err);
    }
    renderSheet();
  }

  function thumb(item) {
    const seed = `${t("common.seed")} ${item.seed}`;
    const alt = `${kindLabel(t, item.kind)}: ${item.location} (${seed})`;
    const url = item.url && localPath(item.url);
    return h("figure", {class: "pool-thumb", dataset: {item: item.id}},
      url ? h("a", {href: url, target: "_blank", rel: "noopener"},
        h("img", {src: url, alt, title: item.original || item.prompt}))
        : h("div", {class: "pool-nofile", text: t("pools.no_file")}),
      h("figcaption", {text: [item.location, seed, item.reason].filter(Boolean).join(" · ")}));
  }

  async function loadReport() {
    const made = (pool.accepted || 0) + (pool.kinds || []).reduce((a, k) => a + (k.rejected || 0) + (k.failed || 0), 0);
    report = null;
    if (!pool.active && REPORTED.includes(pool.status) && made > 0) {
      try { report = await api.get(`${base}/report`); } catch { report = null; }
    }
    renderReport();
  }

  function renderSheet() {
    const kind = kindSel.value;
    if (!report || !kind || !report.sheets?.[kind]) {
      sheetBox.replaceChildren(ui.tr(kind ? "pools.no_sheet" : "pools.sheet_pick_kind", "p", {class: "muted"}));
      return;
    }
    const url = `${base}/sheets/${encodeURIComponent(kind)}.png?v=${encodeURIComponent(report.written || "")}`;
    sheetBox.replaceChildren(h("a", {href: url, target: "_blank", rel: "noopener"},
      h("img", {src: url, alt: t("pools.sheet_alt", {kind: kindLabel(t, kind)}), class: "pool-sheet-img"})));
  }

  function renderReport() {
    renderSheet();
    if (!report) { reportBox.replaceChildren(ui.tr("pools.no_report", "p", {class: "muted"})); return; }
    const cols = ["pools.kind", "pools.target", "pools.item_accepted", "pools.rejected", "pools.failed",
                  "pools.locations_covered", "pools.diversity"];
    const rows = Object.entries(report.kinds || {}).map(([kind, k]) => h("tr", {},
      h("th", {scope: "row", text: kindLabel(t, kind)}),
      ...[k.target, k.accepted, k.rejected, k.failed,
          k.locations ? `${k.locations.covered} / ${k.locations.planned}` : "",
          k.diversity?.vendi ?? ""].map((v) => h("td", {text: String(v)}))));
    const time = report.time || {};
    const reasons = {};
    for (const k of Object.values(report.kinds || {})) {
      for (const [r, n] of Object.entries({...k.rejected_by_reason, ...k.failed_by_reason})) reasons[r] = (reasons[r] || 0) + n;
    }
    const why = Object.entries(reasons).map(([r, n]) => `${r} ${n}`).join(", ");
    reportBox.replaceChildren(...[
      h("div", {class: "pool-scroll", tabindex: 0, role: "region", "aria-label": t("pools.report")},  // may scroll sideways
        h("table", {}, h("thead", {}, h("tr", {}, cols.map((c) => h("th", {scope: "col"}, ui.tr(c))))), h("tbody", {}, rows))),
      h("p", {text: t("pools.report_time", {seconds: Math.round(time.seconds || 0),
                                          per_hour: Math.round(time.accepted_per_hour || 0)})}),
      why ? h("p", {text: `${t("pools.reasons")}: ${why}`}) : null,
      report.diversity?.pool ? h("p", {text: t("pools.report_diversity", {vendi: report.diversity.pool.vendi})}) : null,
    ].filter(Boolean));
  }

  return {
    unmount() {
      stopListening();
      clearTimeout(browseTimer);
      browseSeq++;
      document.removeEventListener("bildwerk:language", onLanguage);
    },
  };
}
