// The gallery: every job of the history as thumbnails, newest first, searched by the words of
// its prompt and filtered; a job's detail (images, full record) with re-run, downloads, the
// training zip and delete; several jobs exported for training at once.
// Routes: #/gallery, #/gallery/JOBID (that job opened), either followed by /QUERY where QUERY
// is the encoded search ("q=apfel&status=succeeded"): an arg with "=" is the query, one
// without is a job id (the router splits on "/" and decodes each part).
import {jobRecord} from "../record.js";
import {LAST_JOB_KEY, saveRerun} from "../rerun.js";

const PAGE = 24;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const MODES = ["text-to-image", "image-to-image", "inpaint"];
const SEARCH_DELAY_MS = 400;
const ACTIVE_POLL_MS = 2000;

export async function mount(root, ctx) {
  const {api, t, ui, jobs, config, args, go} = ctx;
  const {h, tr, field} = ui;
  const initial = new URLSearchParams(args.find((a) => a.includes("=")) || "");
  let openId = args.find((a) => a && !a.includes("=")) || null;

  // -- search and filters ---------------------------------------------------------------------
  const q = h("input", {type: "search", id: "gal-q", name: "q", value: initial.get("q") || "", autocomplete: "off"});
  const filter = (id, allKey, values, labelOf) => {
    const sel = h("select", {id}, h("option", {value: "", "data-i18n": allKey, text: t(allKey)}),
      values.map((v) => labelOf(v)));
    return sel;
  };
  const statusSel = filter("gal-status", "gallery.all_statuses", STATUSES,
    (v) => h("option", {value: v, "data-i18n": `common.${v}`, text: t(`common.${v}`)}));
  const modeSel = filter("gal-mode", "gallery.all_modes", MODES,
    (v) => h("option", {value: v, "data-i18n": `generate.mode_${v}`, text: t(`generate.mode_${v}`)}));
  const models = [...new Set([config.models?.default, ...(config.models?.local || []), ...(config.models?.remote || [])]
    .filter(Boolean))];
  const modelSel = filter("gal-model", "gallery.all_models", models, (v) => h("option", {value: v, text: v}));
  for (const [sel, key] of [[statusSel, "status"], [modeSel, "mode"], [modelSel, "model"]]) {
    const v = initial.get(key);
    if (v && [...sel.options].some((o) => o.value === v)) sel.value = v;
  }
  const searchForm = h("form", {class: "panel row gal-search", role: "search", "aria-label": t("gallery.search_label"),
    "data-i18n-attr": "aria-label:gallery.search_label"},
  field("gallery.search", q, "gallery.search_hint"), field("gallery.status", statusSel),
  field("common.mode", modeSel), field("common.model", modelSel),
  h("button", {type: "submit", class: "primary"}, tr("gallery.search_go")));

  // -- selection for export -------------------------------------------------------------------
  const selected = new Set();
  const selCount = h("span", {class: "muted", "aria-live": "polite"});
  const exportBtn = h("button", {type: "button", disabled: true}, tr("gallery.export_selected"));
  const clearBtn = h("button", {type: "button", disabled: true}, tr("gallery.clear_selection"));
  const toolbar = h("div", {class: "row gal-toolbar"}, exportBtn, clearBtn, selCount);

  const listState = h("p", {class: "muted", role: "status"});
  const grid = h("ul", {class: "gal-grid", "aria-label": t("gallery.jobs_label"), "data-i18n-attr": "aria-label:gallery.jobs_label"});
  const more = h("button", {type: "button", class: "gal-more", hidden: true}, tr("gallery.load_more"));
  root.append(searchForm, toolbar, listState, grid, more);

  // -- the detail -----------------------------------------------------------------------------
  const dlgTitle = ui.newId("gal-title");
  const dlgBody = h("div", {class: "gal-detail-body"});
  const dlgError = h("p", {class: "error", "aria-live": "assertive"});
  const closeBtn = h("button", {type: "button", class: "gal-close", "aria-label": t("gallery.close"),
    "data-i18n-attr": "aria-label:gallery.close", onclick: () => dialog.close()}, "×");
  const dialog = h("dialog", {class: "gal-detail", "aria-labelledby": dlgTitle},
    h("div", {class: "gal-detail-head"}, tr("gallery.detail_title", "h3", {id: dlgTitle}), closeBtn),
    dlgBody, dlgError);
  root.append(dialog);
  let returnFocus = null, alive = true;
  let follower = null, lastProgress = null;  // the open job's events while it is queued or running
  const stopFollowing = () => { follower?.close(); follower = null; };
  dialog.addEventListener("close", () => {
    stopFollowing();
    if (!alive) return;  // closed by unmount: the address is already another view's
    openId = null;
    dlgBody.replaceChildren();
    writeHash();
    returnFocus?.focus();
  });

  let loaded = [], offset = 0, seq = 0, timer = null;

  function query() {
    const p = new URLSearchParams();
    if (q.value.trim()) p.set("q", q.value.trim());
    if (statusSel.value) p.set("status", statusSel.value);
    if (modeSel.value) p.set("mode", modeSel.value);
    if (modelSel.value) p.set("model", modelSel.value);
    return p;
  }

  // The address keeps the query and the opened job without a new route (replaceState fires no
  // hashchange, so the view is not mounted again while someone types).
  function writeHash() {
    const parts = ["#/gallery"];
    if (openId) parts.push(encodeURIComponent(openId));
    const qs = query().toString();
    if (qs) parts.push(encodeURIComponent(qs));
    history.replaceState(null, "", parts.join("/"));
  }

  async function load(append = false) {
    const mine = ++seq;
    if (!append) offset = 0;
    const p = query();
    p.set("limit", String(PAGE));
    p.set("offset", String(offset));
    listState.replaceChildren(tr("common.loading"));
    more.disabled = true;
    try {
      const r = await api.get(`/api/v1/jobs?${p}`);
      if (mine !== seq) return;
      // Jobs made since the first page shift the pages: a job already shown is not shown twice.
      const have = new Set(loaded.map((j) => j.id));
      loaded = append ? [...loaded, ...r.jobs.filter((j) => !have.has(j.id))] : r.jobs;
      offset += r.jobs.length;
      more.hidden = r.jobs.length < PAGE;
      render();
    } catch (err) {
      if (mine === seq) listState.textContent = ui.errorText(err);
    } finally {
      more.disabled = false;
    }
  }

  function render() {
    grid.replaceChildren(...loaded.map(card));
    listState.textContent = loaded.length ? t("gallery.shown", {n: loaded.length}) : t("gallery.none");
    updateSelection();
    watchActive();
  }

  // Queued and running jobs are looked at again until they end; only their cards change.
  let watch = null;
  const isActive = (j) => j.status === "queued" || j.status === "running";
  function watchActive() {
    clearTimeout(watch);
    if (alive && loaded.some(isActive)) watch = setTimeout(refreshActive, ACTIVE_POLL_MS);
  }
  async function refreshActive() {
    for (const old of loaded.filter(isActive)) {
      let job;
      try { job = await api.get(`/api/v1/jobs/${encodeURIComponent(old.id)}`); } catch { continue; }
      const i = loaded.findIndex((j) => j.id === old.id);
      if (!alive || i < 0 || job.status === old.status) continue;
      replaceCard(job);
    }
    watchActive();
  }
  function replaceCard(job) {
    const i = loaded.findIndex((j) => j.id === job.id);
    if (i < 0) return;
    loaded[i] = job;
    const el = grid.querySelector(`li[data-job="${CSS.escape(job.id)}"]`);
    if (!el) return;
    const had = el.contains(document.activeElement) ? (document.activeElement.matches("input") ? "input" : ".gal-open") : null;
    const fresh = card(job);
    el.replaceWith(fresh);
    if (had) fresh.querySelector(had).focus();
  }

  function card(job) {
    const first = job.results?.[0];
    const pid = ui.newId("gal-prompt");
    const box = h("input", {type: "checkbox", checked: selected.has(job.id), "aria-describedby": pid});
    box.addEventListener("change", () => {
      if (box.checked) selected.add(job.id); else selected.delete(job.id);
      updateSelection();
    });
    const when = new Date(job.created_at * 1000).toLocaleString(document.documentElement.lang);
    const open = h("button", {type: "button", class: "gal-open", "aria-haspopup": "dialog", dataset: {job: job.id},
      onclick: (e) => openJob(job.id, e.currentTarget)},
    first ? h("img", {src: jobs.imageUrl(first), alt: "", loading: "lazy"}) : h("span", {class: "gal-noimg", "aria-hidden": "true"}, "–"),
    h("span", {class: "gal-prompt", id: pid, text: job.prompt || "—"}),
    h("span", {class: `gal-status gal-${job.status}`}, tr(`common.${job.status}`)),
    h("span", {class: "muted gal-when", text: when}));
    return h("li", {class: "gal-card", dataset: {job: job.id, status: job.status}},
      h("label", {class: "gal-pick"}, box, tr("gallery.select", "span", {class: "sr-only"})), open);
  }

  function updateSelection() {
    selCount.textContent = selected.size ? t("gallery.selected", {n: selected.size}) : "";
    exportBtn.disabled = clearBtn.disabled = selected.size === 0;
  }

  function download(href, name) {
    const a = h("a", {href, download: name, hidden: true});
    document.body.append(a);
    a.click();
    a.remove();
  }

  exportBtn.addEventListener("click", () => {
    const ids = [...selected].join(",");
    download(`/api/v1/export?ids=${encodeURIComponent(ids)}`, "bildwerk-export.zip");
  });
  clearBtn.addEventListener("click", () => { selected.clear(); render(); });

  async function openJob(id, from = null) {
    stopFollowing();
    lastProgress = null;
    returnFocus = from;
    openId = id;
    writeHash();
    dlgError.textContent = "";
    dlgBody.replaceChildren(tr("common.loading", "p", {class: "muted"}));
    if (!dialog.open) dialog.showModal();
    try {
      const job = await api.get(`/api/v1/jobs/${encodeURIComponent(id)}`);
      if (openId !== id) return;
      showDetail(job);
      if (isActive(job)) follow(job);
    } catch (err) {
      dlgBody.replaceChildren();
      dlgError.textContent = err.status === 404 ? t("gallery.gone") : ui.errorText(err);
    }
  }

  // A queued or running job's detail follows it: its progress line moves, and when it ends
  // the detail (images, record, actions) and its card show the finished job.
  function follow(job) {
    const id = job.id;
    follower = jobs.followJob(id, {
      onProgress: (p) => { if (openId === id) showProgress(p); },
      onEnd: (done, err) => {
        follower = null;
        if (!alive || openId !== id || !dialog.open) return;
        if (!done) { dlgError.textContent = ui.errorText(err); return; }
        const hadFocus = dlgBody.contains(document.activeElement);
        showDetail(done);
        replaceCard(done);
        // The buttons were made anew (the cancel button is gone): focus stays in the dialog.
        if (hadFocus) dlgBody.querySelector(".gal-actions button")?.focus();
      },
    });
  }

  function showProgress(p) {
    lastProgress = p;
    const line = dlgBody.querySelector(".gal-progress");
    if (!line) return;
    const status = p.status || "running";
    let text = t(`common.${status}`);
    if (status === "queued" && p.queue_position) text += ` · ${t("common.queue_position", {n: p.queue_position})}`;
    if (status === "running" && p.phase === "denoise" && p.total) text += ` · ${p.step}/${p.total}`;
    line.textContent = text;
  }

  function showDetail(job) {
    const active = job.status === "queued" || job.status === "running";
    const images = (job.results || []).map((r) => {
      const url = jobs.imageUrl(r);
      return h("figure", {class: "gal-image"},
        h("img", {src: url, class: "result", alt: `${t("generate.result_alt", {n: r.index + 1})}: ${job.prompt}`}),
        h("figcaption", {},
          h("a", {class: "gen-btn", href: url, download: `bildwerk-${job.id}-${r.index}.png`}, tr("common.download")),
          h("a", {class: "gen-btn", href: `#/vary/${encodeURIComponent(job.id)}/${r.index}`}, tr("generate.vary_this")),
          h("a", {class: "gen-btn", href: `#/inpaint/${encodeURIComponent(job.id)}/${r.index}`}, tr("generate.inpaint_this"))));
    });
    const rerun = h("button", {type: "button", class: "primary", onclick: () => {
      go(saveRerun(job));  // the new route unmounts this view, which closes the dialog
    }}, tr("gallery.rerun"));
    const zip = job.results?.length
      ? h("a", {class: "gen-btn", href: `/api/v1/export?ids=${encodeURIComponent(job.id)}`, download: `bildwerk-${job.id}.zip`},
        tr("gallery.download_zip"))
      : null;
    const cancelJob = active ? h("button", {type: "button", onclick: async () => {
      try {
        await api.post(`/api/v1/jobs/${encodeURIComponent(job.id)}/cancel`, {});
        openJob(job.id, returnFocus);
      } catch (err) { dlgError.textContent = ui.errorText(err); }
    }}, tr("common.cancel")) : null;
    const del = h("button", {type: "button", class: "danger"}, tr("gallery.delete"));
    const yes = h("button", {type: "button", class: "danger"}, tr("gallery.delete_yes"));
    const no = h("button", {type: "button"}, tr("gallery.delete_no"));
    const confirm = h("div", {class: "gal-confirm", role: "group", hidden: true, "aria-labelledby": `${dlgTitle}-c`},
      h("p", {id: `${dlgTitle}-c`, text: t("gallery.delete_confirm", {n: job.results?.length || 0})}), yes, no);
    del.addEventListener("click", () => { confirm.hidden = false; no.focus(); });
    no.addEventListener("click", () => { confirm.hidden = true; del.focus(); });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await api.del(`/api/v1/jobs/${encodeURIComponent(job.id)}`);
        if (sessionStorage.getItem(LAST_JOB_KEY) === job.id) sessionStorage.removeItem(LAST_JOB_KEY);
        loaded = loaded.filter((j) => j.id !== job.id);
        offset = Math.max(0, offset - 1);
        selected.delete(job.id);
        returnFocus = null;
        dialog.close();
        render();
        ui.status(t("gallery.deleted"));
        q.focus();
      } catch (err) {
        yes.disabled = false;
        confirm.hidden = true;
        dlgError.textContent = err.status === 409 ? t("gallery.delete_running") : ui.errorText(err);
      }
    });
    const progressLine = active ? h("p", {class: "gal-progress", role: "status"}) : null;
    dlgBody.replaceChildren(
      images.length ? h("div", {class: "images gal-images"}, images) : null,
      progressLine,
      h("div", {class: "row gal-actions"}, rerun, zip, cancelJob, del),
      confirm,
      jobRecord(job));
    dlgBody.dataset.status = job.status;
    if (active) showProgress({...(job.progress || {}), status: job.status, queue_position: job.queue_position});
  }

  searchForm.addEventListener("submit", (e) => { e.preventDefault(); clearTimeout(timer); writeHash(); load(); });
  q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { writeHash(); load(); }, SEARCH_DELAY_MS);
  });
  for (const sel of [statusSel, modeSel, modelSel]) sel.addEventListener("change", () => { writeHash(); load(); });
  more.addEventListener("click", () => load(true));

  const relabel = () => { render(); if (lastProgress && openId) showProgress(lastProgress); };
  document.addEventListener("bildwerk:language", relabel);

  await load();
  if (openId) openJob(openId);

  return {
    unmount() {
      alive = false;
      clearTimeout(timer);
      clearTimeout(watch);
      stopFollowing();
      document.removeEventListener("bildwerk:language", relabel);
      if (dialog.open) dialog.close();
    },
  };
}
