// The mask editor: the image on one canvas, the mask painted on a second one above it, at
// the image's own pixel size. The mask itself is a Uint8Array (1 = repaint), so painting is
// exact (no anti-aliased edge pixels), counts are exact and undo stores only changed rects.
//
//   const ed = createMaskEditor({onChange(count) {...}});  root.append(ed.el);
//   await ed.setImage(file);  ed.maskBlob() -> Promise<Blob PNG, white = repaint, black = keep>
//   ed.countMasked(), ed.undo(), ed.redo(), ed.clear(), ed.invert(), ed.fit(), ed.feather()
//   await ed.setMask(blobOrImage, {invert, source}): a stored mask as the painted one (one undo step)
//   ed.setFeather(px): the soft edge, as if the slider was moved
//   ed.destroy() when the view goes (document listeners).
// Test hook without eval: the stage carries data-mask-pixels, data-zoom, data-image-width/-height.
// Strings are inpaint.* keys (i18n namespaces are fixed by the shell).
import {h, newId, slider, tr} from "./ui.js";
import {t} from "./i18n.js";

const COLOR = [255, 0, 170];
const MAX_HISTORY = 60;
const MAX_BRUSH = 256;

export function createMaskEditor({feather = 8, onChange = () => {}} = {}) {
  let W = 0, H = 0, mask = null, overlay = null, count = 0, bbox = null;
  let tool = "brush", size = 16;
  let view = {x: 0, y: 0, z: 1}, fitted = true, fitZ = 1;
  const history = [], future = [];
  let stroke = null;      // {id, last, value, base, x0, y0, x1, y1}
  let gesture = null;     // two-finger pan/zoom, kept until every finger is up
  let pan = null;         // middle-button drag
  const touches = new Map();

  const imageCanvas = h("canvas", {class: "me-image", "aria-hidden": "true"});
  const maskCanvas = h("canvas", {class: "me-mask", "aria-hidden": "true"});
  const layer = h("div", {class: "me-layer"}, imageCanvas, maskCanvas);
  const cursor = h("div", {class: "me-cursor", hidden: true});
  const stage = h("div", {class: "me-stage", role: "img", "data-i18n-attr": "aria-label:inpaint.stage",
                          "aria-label": t("inpaint.stage"), dataset: {maskPixels: "0", zoom: "1"}}, layer, cursor);
  const maskCtx = maskCanvas.getContext("2d");

  const button = (key, onclick, attrs = {}) => h("button", {type: "button", onclick, ...attrs}, tr(key));
  const brushBtn = button("inpaint.brush", () => setTool("brush"), {"aria-pressed": "true"});
  const eraserBtn = button("inpaint.eraser", () => setTool("eraser"), {"aria-pressed": "false"});
  const sizeCtl = slider("inpaint.brush_size", {min: 1, max: MAX_BRUSH, value: size, name: "brush_size",
                                               format: (v) => `${v} px`});
  const undoBtn = button("inpaint.undo", () => undo(), {disabled: true, "aria-keyshortcuts": "Control+Z"});
  const redoBtn = button("inpaint.redo", () => redo(), {disabled: true, "aria-keyshortcuts": "Control+Shift+Z Control+Y"});
  const clearBtn = button("inpaint.clear", () => clear(), {disabled: true});
  const invertBtn = button("inpaint.invert", () => invert());
  const fitBtn = button("inpaint.fit", () => fit());
  const opacityCtl = slider("inpaint.opacity", {min: 10, max: 100, step: 5, value: 55, name: "mask_opacity",
                                               format: (v) => `${v} %`});
  const featherCtl = slider("inpaint.feather", {min: 0, max: 64, value: feather, name: "mask_blur",
                                               format: (v) => `${v} px`});
  const showFeather = h("input", {type: "checkbox", checked: true, id: newId("me-feather")});
  const live = h("p", {class: "me-live muted", role: "status", "aria-live": "polite"});

  const el = h("div", {class: "maskeditor"},
    h("div", {class: "me-group", role: "group", "data-i18n-attr": "aria-label:inpaint.tools", "aria-label": t("inpaint.tools")},
      brushBtn, eraserBtn, undoBtn, redoBtn, clearBtn, invertBtn, fitBtn),
    stage,
    h("div", {class: "me-group me-sliders"}, sizeCtl.el, opacityCtl.el, featherCtl.el,
      h("div", {class: "me-check"}, showFeather, h("label", {for: showFeather.id}, tr("inpaint.show_feather")))),
    tr("inpaint.editor_help", "p", {class: "me-help muted"}),
    live);

  sizeCtl.input.addEventListener("input", () => setBrushSize(+sizeCtl.input.value));
  opacityCtl.input.addEventListener("input", () => { maskCanvas.style.opacity = opacityCtl.input.value / 100; });
  maskCanvas.style.opacity = opacityCtl.input.value / 100;
  let featherTouched = false;  // until then each new image gets a soft edge to its scale
  featherCtl.input.addEventListener("input", () => { featherTouched = true; render(); });
  showFeather.addEventListener("change", () => render());

  // --- the mask ------------------------------------------------------------------------------
  function recount() {
    let n = 0, x0 = W, y0 = H, x1 = -1, y1 = -1;
    for (let y = 0, i = 0; y < H; y++) {
      for (let x = 0; x < W; x++, i++) {
        if (!mask[i]) continue;
        n++;
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    count = n;
    bbox = n ? [x0, y0, x1 + 1, y1 + 1] : null;
    stage.dataset.maskPixels = String(n);
    undoBtn.disabled = !history.length;
    redoBtn.disabled = !future.length;
    clearBtn.disabled = !n;
    announce();
    onChange(n);
  }

  function announce() {
    live.textContent = W ? t("inpaint.mask_status", {percent: (100 * count / (W * H)).toFixed(count && count < W * H / 100 ? 1 : 0)}) : "";
  }

  // Round brush along a segment: every pixel whose centre is within r of the segment, so a
  // fast move between two pointer events leaves no gaps.
  function paintSegment(a, b, r, value) {
    const x0 = Math.max(0, Math.floor(Math.min(a.x, b.x) - r)), x1 = Math.min(W - 1, Math.ceil(Math.max(a.x, b.x) + r));
    const y0 = Math.max(0, Math.floor(Math.min(a.y, b.y) - r)), y1 = Math.min(H - 1, Math.ceil(Math.max(a.y, b.y) + r));
    if (x0 > x1 || y0 > y1) return;
    const dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy, r2 = r * r;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const px = x + 0.5 - a.x, py = y + 0.5 - a.y;
        const s = len2 ? Math.max(0, Math.min(1, (px * dx + py * dy) / len2)) : 0;
        const ex = px - s * dx, ey = py - s * dy;
        if (ex * ex + ey * ey <= r2) mask[y * W + x] = value;
      }
    }
    stroke.x0 = Math.min(stroke.x0, x0); stroke.y0 = Math.min(stroke.y0, y0);
    stroke.x1 = Math.max(stroke.x1, x1 + 1); stroke.y1 = Math.max(stroke.y1, y1 + 1);
    renderRect(x0, y0, x1 + 1, y1 + 1, null);
  }

  const rectOf = (arr, x0, y0, x1, y1) => {
    const w = x1 - x0, out = new Uint8Array(w * (y1 - y0));
    for (let y = y0; y < y1; y++) out.set(arr.subarray(y * W + x0, y * W + x1), (y - y0) * w);
    return out;
  };
  const putRect = (data, x0, y0, x1, y1) => {
    const w = x1 - x0;
    for (let y = y0; y < y1; y++) mask.set(data.subarray((y - y0) * w, (y - y0 + 1) * w), y * W + x0);
  };

  function commit(entry) {
    history.push(entry);
    if (history.length > MAX_HISTORY) history.shift();
    future.length = 0;
    render();
  }

  function wholeChange(fn) {
    if (!W) return;
    const before = mask.slice();
    fn();
    commit({x0: 0, y0: 0, x1: W, y1: H, before, after: mask.slice()});
  }

  // Undo puts a change's "before" back and keeps it for redo, which puts its "after" back.
  function replay(from, to, side) {
    const e = from.pop();
    if (!e) return;
    putRect(e[side], e.x0, e.y0, e.x1, e.y1);
    to.push(e);
    render();
  }
  const undo = () => replay(history, future, "before");
  const redo = () => replay(future, history, "after");
  function clear() { if (count) wholeChange(() => mask.fill(0)); }
  function invert() { wholeChange(() => { for (let i = 0; i < mask.length; i++) mask[i] ^= 1; }); }

  // --- drawing -------------------------------------------------------------------------------
  function renderRect(x0, y0, x1, y1, alpha) {
    const d = overlay.data;
    for (let y = y0; y < y1; y++) {
      for (let x = x0, i = y * W + x0; x < x1; x++, i++) d[4 * i + 3] = alpha ? alpha[i] : mask[i] * 255;
    }
    maskCtx.putImageData(overlay, 0, 0, x0, y0, x1 - x0, y1 - y0);
  }

  function render() {
    if (!W) return;
    recount();
    const r = +featherCtl.input.value;
    renderRect(0, 0, W, H, showFeather.checked && r > 0 && bbox ? featherAlpha(r) : null);
  }

  // The server's feather (images/masks.py feather_mask): inwards only, a smoothstep of the
  // Euclidean distance to the nearest kept pixel, 255 at r px or more inside. Same formula
  // here, so what is shown is what the server blends.
  function featherAlpha(r) {
    const alpha = new Uint8Array(W * H);
    const x0 = Math.max(0, bbox[0] - r - 1), y0 = Math.max(0, bbox[1] - r - 1);
    const x1 = Math.min(W, bbox[2] + r + 1), y1 = Math.min(H, bbox[3] + r + 1);
    const w = x1 - x0, hh = y1 - y0;
    const dist = distanceSq(rectOf(mask, x0, y0, x1, y1), w, hh);
    for (let y = 0; y < hh; y++) {
      for (let x = 0; x < w; x++) {
        const s = Math.min(1, Math.sqrt(dist[y * w + x]) / r);
        alpha[(y + y0) * W + x + x0] = Math.round(s * s * (3 - 2 * s) * 255);
      }
    }
    return alpha;
  }

  // --- view: zoom and pan --------------------------------------------------------------------
  function applyView() {
    layer.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.z})`;
    layer.classList.toggle("zoomed", view.z >= 2);
    stage.dataset.zoom = view.z.toFixed(3);
  }
  function fit() {
    if (!W) return;
    const sw = stage.clientWidth, sh = stage.clientHeight;
    if (!sw || !sh) return;  // hidden: the resize observer fits it once it is shown
    fitZ = Math.min(sw / W, sh / H);
    view = {z: fitZ, x: (sw - W * fitZ) / 2, y: (sh - H * fitZ) / 2};
    fitted = true;
    applyView();
  }
  function zoomAt(px, py, z) {
    z = Math.max(fitZ / 2, Math.min(Math.max(fitZ * 24, 8), z));
    const ix = (px - view.x) / view.z, iy = (py - view.y) / view.z;
    view = {z, x: px - ix * z, y: py - iy * z};
    fitted = false;
    applyView();
  }
  const resize = new ResizeObserver(() => { if (fitted) fit(); });
  resize.observe(stage);

  function local(e) {
    const r = stage.getBoundingClientRect();
    return {x: e.clientX - r.left - stage.clientLeft, y: e.clientY - r.top - stage.clientTop};
  }
  const toImage = (p) => ({x: (p.x - view.x) / view.z, y: (p.y - view.y) / view.z});

  // --- pointers ------------------------------------------------------------------------------
  function startStroke(e, erase) {
    const p = toImage(local(e));
    stroke = {id: e.pointerId, last: p, value: erase ? 0 : 1, base: mask.slice(), x0: W, y0: H, x1: 0, y1: 0};
    paintSegment(p, p, radius(), stroke.value);
  }
  function extendStroke(e) {
    const events = e.getCoalescedEvents?.() || [];
    for (const ev of events.length ? events : [e]) {
      const p = toImage(local(ev));
      paintSegment(stroke.last, p, radius(), stroke.value);
      stroke.last = p;
    }
  }
  function endStroke() {
    const s = stroke;
    stroke = null;
    if (s.x1 <= s.x0) return;
    const before = rectOf(s.base, s.x0, s.y0, s.x1, s.y1), after = rectOf(mask, s.x0, s.y0, s.x1, s.y1);
    if (before.every((v, i) => v === after[i])) { render(); return; }
    commit({x0: s.x0, y0: s.y0, x1: s.x1, y1: s.y1, before, after});
  }
  // A second finger means "zoom", not "paint": what the first finger painted goes.
  function abandonStroke() {
    mask.set(stroke.base);
    stroke = null;
    render();
  }
  const radius = () => Math.max(size / 2, 0.75);

  function startGesture() {
    const [a, b] = [...touches.values()];
    const mid = {x: (a.x + b.x) / 2, y: (a.y + b.y) / 2};
    gesture = {dist: Math.hypot(a.x - b.x, a.y - b.y) || 1, z: view.z, anchor: toImage(mid)};
  }
  function moveGesture() {
    const [a, b] = [...touches.values()];
    const mid = {x: (a.x + b.x) / 2, y: (a.y + b.y) / 2};
    const z = Math.max(fitZ / 2, Math.min(Math.max(fitZ * 24, 8), gesture.z * Math.hypot(a.x - b.x, a.y - b.y) / gesture.dist));
    view = {z, x: mid.x - gesture.anchor.x * z, y: mid.y - gesture.anchor.y * z};
    fitted = false;
    applyView();
  }

  stage.addEventListener("pointerdown", (e) => {
    if (!W) return;
    e.preventDefault();
    if (typing(document.activeElement)) document.activeElement.blur();  // so Ctrl+Z undoes paint, not text
    try { stage.setPointerCapture(e.pointerId); } catch { /* the pointer is already gone */ }
    if (e.pointerType === "touch") {
      cursor.hidden = true;
      touches.set(e.pointerId, local(e));
      if (touches.size === 1 && !gesture) startStroke(e, tool === "eraser");
      else if (touches.size === 2) {
        if (stroke) abandonStroke();
        startGesture();
      }
      return;
    }
    if (e.button === 1) { pan = {id: e.pointerId, last: local(e)}; return; }
    if (e.button === 0 || e.button === 5) startStroke(e, tool === "eraser" || e.button === 5);
  });
  stage.addEventListener("pointermove", (e) => {
    if (!W) return;
    if (e.pointerType === "touch") {
      if (!touches.has(e.pointerId)) return;
      touches.set(e.pointerId, local(e));
      if (gesture) { if (touches.size === 2) moveGesture(); } else if (stroke?.id === e.pointerId) extendStroke(e);
      return;
    }
    showCursor(local(e));
    if (pan?.id === e.pointerId) {
      const p = local(e);
      view.x += p.x - pan.last.x; view.y += p.y - pan.last.y;
      pan.last = p; fitted = false;
      applyView();
    } else if (stroke?.id === e.pointerId) extendStroke(e);
  });
  const up = (cancelled) => (e) => {
    if (e.pointerType === "touch") {
      touches.delete(e.pointerId);
      if (gesture && touches.size === 2) startGesture();
      if (!touches.size) gesture = null;
    }
    if (pan?.id === e.pointerId) pan = null;
    if (stroke?.id === e.pointerId) { if (cancelled) abandonStroke(); else endStroke(); }
  };
  stage.addEventListener("pointerup", up(false));
  stage.addEventListener("pointercancel", up(true));
  stage.addEventListener("pointerleave", () => { cursor.hidden = true; });
  stage.addEventListener("contextmenu", (e) => e.preventDefault());
  stage.addEventListener("wheel", (e) => {
    if (!W) return;
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? stage.clientHeight : 1;
    if (e.ctrlKey || e.metaKey) {
      const p = local(e);
      zoomAt(p.x, p.y, view.z * Math.exp(-e.deltaY * unit * 0.002));
    } else {
      view.x -= e.deltaX * unit; view.y -= e.deltaY * unit; fitted = false;
      applyView();
    }
    showCursor(local(e));
  }, {passive: false});

  function showCursor(p) {
    const d = size * view.z;
    cursor.hidden = false;
    cursor.style.width = cursor.style.height = `${d}px`;
    cursor.style.transform = `translate(${p.x - d / 2}px, ${p.y - d / 2}px)`;
  }

  // --- tools and keys ------------------------------------------------------------------------
  function setTool(name) {
    tool = name;
    brushBtn.setAttribute("aria-pressed", String(name === "brush"));
    eraserBtn.setAttribute("aria-pressed", String(name === "eraser"));
  }
  function setBrushSize(n) {
    size = Math.max(1, Math.min(MAX_BRUSH, Math.round(n)));
    sizeCtl.input.value = size;
    sizeCtl.sync();
    cursor.style.width = cursor.style.height = `${size * view.z}px`;
  }

  const typing = (el) => el?.isContentEditable || el?.tagName === "TEXTAREA" || el?.tagName === "SELECT" ||
    (el?.tagName === "INPUT" && !["range", "checkbox", "button", "radio", "file"].includes(el.type));
  function onKey(e) {
    if (!W || !el.isConnected || typing(e.target) || e.altKey) return;
    const mod = e.ctrlKey || e.metaKey, k = e.key.toLowerCase();
    if (mod && k === "z") { e.preventDefault(); if (e.shiftKey) redo(); else undo(); }
    else if (mod && k === "y") { e.preventDefault(); redo(); }
    else if (!mod && e.key === "[") { e.preventDefault(); setBrushSize(size - Math.max(1, size * 0.2)); }
    else if (!mod && e.key === "]") { e.preventDefault(); setBrushSize(size + Math.max(1, size * 0.2)); }
  }
  document.addEventListener("keydown", onKey);
  const relabel = () => announce();
  document.addEventListener("bildwerk:language", relabel);

  // --- image ---------------------------------------------------------------------------------
  async function setImage(blob) {
    const bitmap = await createImageBitmap(blob);
    W = bitmap.width; H = bitmap.height;
    for (const c of [imageCanvas, maskCanvas]) { c.width = W; c.height = H; }
    imageCanvas.getContext("2d").drawImage(bitmap, 0, 0);
    bitmap.close?.();
    mask = new Uint8Array(W * H);
    overlay = maskCtx.createImageData(W, H);
    for (let i = 0; i < W * H; i++) overlay.data.set(COLOR, 4 * i);
    history.length = 0; future.length = 0; stroke = null; gesture = null; touches.clear();
    layer.style.width = `${W}px`; layer.style.height = `${H}px`;
    stage.style.aspectRatio = `${W} / ${H}`;
    stage.dataset.imageWidth = String(W); stage.dataset.imageHeight = String(H);
    setBrushSize(Math.max(2, Math.round(Math.min(W, H) / 10)));
    if (!featherTouched) { featherCtl.input.value = Math.max(1, Math.min(feather, Math.round(Math.min(W, H) / 24))); featherCtl.sync(); }
    fit();
    render();
  }

  // A mask made elsewhere (a job's stored one) as the painted mask, read the way the server
  // reads masks (images/masks.py normalize_mask): source "auto" takes the alpha channel
  // (transparent = repaint) when the mask uses it, else the luminance (white = repaint), each
  // above 127; drawn at the image's size. One step for undo, like clear or invert.
  async function setMask(picture, {invert: flip = false, source: convention = "auto"} = {}) {
    if (!W) throw new Error("setMask before setImage");
    const isBlob = picture instanceof Blob;
    const bitmap = isBlob ? await createImageBitmap(picture, {premultiplyAlpha: "none", colorSpaceConversion: "none"}) : picture;
    const c = new OffscreenCanvas(W, H);
    const ctx = c.getContext("2d", {willReadFrequently: true});
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(bitmap, 0, 0, W, H);
    if (isBlob) bitmap.close?.();
    const d = ctx.getImageData(0, 0, W, H).data;
    let useAlpha = convention === "alpha";
    if (convention === "auto") for (let i = 3; i < d.length && !useAlpha; i += 4) useAlpha = d[i] < 255;
    const next = new Uint8Array(W * H);
    for (let i = 0; i < W * H; i++) {
      const a = d[4 * i + 3];
      let v = 255 - a;
      if (!useAlpha) {
        const l = (d[4 * i] * 19595 + d[4 * i + 1] * 38470 + d[4 * i + 2] * 7471 + 0x8000) >> 16;  // PIL's "L"
        v = a === 255 ? l : Math.floor((l * a + 127) / 255);
      }
      next[i] = (v > 127) !== flip ? 1 : 0;
    }
    wholeChange(() => mask.set(next));
  }

  function setFeather(px) {
    featherCtl.input.value = px;
    featherCtl.sync();
    featherTouched = true;
    render();
  }

  // OffscreenCanvas: canvas.toBlob waits for an idle period, seconds in a page that draws no frames.
  function maskBlob() {
    const c = new OffscreenCanvas(W, H);
    const ctx = c.getContext("2d");
    const img = ctx.createImageData(W, H);
    for (let i = 0; i < W * H; i++) {
      const v = mask[i] ? 255 : 0;
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = v;
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return c.convertToBlob({type: "image/png"});
  }

  return {
    el, stage, setImage, setMask, setFeather, maskBlob, undo, redo, clear, invert, fit, setTool, setBrushSize,
    countMasked: () => count,
    hasImage: () => W > 0,
    size: () => ({width: W, height: H}),
    feather: () => +featherCtl.input.value,
    brushSize: () => size,
    destroy() {
      resize.disconnect();
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("bildwerk:language", relabel);
    },
  };
}

// Squared Euclidean distance of every 1-pixel to the nearest 0-pixel (Felzenszwalb and
// Huttenlocher's two-pass transform); no 0-pixel at all reads as far away.
function distanceSq(bits, w, h) {
  const INF = 1e20, n = Math.max(w, h);
  const out = new Float64Array(w * h);
  for (let i = 0; i < w * h; i++) out[i] = bits[i] ? INF : 0;
  const f = new Float64Array(n), d = new Float64Array(n), v = new Int32Array(n), z = new Float64Array(n + 1);
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) f[y] = out[y * w + x];
    line(f, h, d, v, z);
    for (let y = 0; y < h; y++) out[y * w + x] = d[y];
  }
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) f[x] = out[y * w + x];
    line(f, w, d, v, z);
    for (let x = 0; x < w; x++) out[y * w + x] = d[x];
  }
  return out;
}

function line(f, n, d, v, z) {
  let k = 0;
  v[0] = 0; z[0] = -Infinity; z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    let s;
    while ((s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k])) <= z[k]) k--;
    k++;
    v[k] = q; z[k] = s; z[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    while (z[k + 1] < q) k++;
    d[q] = (q - v[k]) * (q - v[k]) + f[v[k]];
  }
}
