// The remote models a view may offer. GET /api/v1/models lists them ("remote", with the
// operator's "remote_default") and says whether this server can use them: remote_available is
// false when it has no OpenAI key, and then a job naming one would only answer 400. Views show
// them disabled, with a note, instead.
// With a mode, only the remote models that can do it ("remote_modes": dall-e-3 cannot inpaint).
export function remoteModels(models = {}, mode = null) {
  const can = (name) => !mode || !models.remote_modes?.[name] || models.remote_modes[name].includes(mode);
  const names = [...new Set([...(models.remote || []), models.remote_default].filter(Boolean))].filter(can);
  return {names, available: models.remote_available !== false};
}

// Disables the options of `select` that name a remote model when they cannot be used; true if so.
export function disableUnavailable(select, models) {
  const {names, available} = remoteModels(models);
  if (available) return false;
  let any = false;
  for (const o of select.options) {
    if (names.includes(o.value)) { o.disabled = true; any = true; }
  }
  return any;
}

// Whether `value` may be chosen in `select` (an option that is there and not disabled).
export const selectable = (select, value) => [...select.options].some((o) => o.value === value && !o.disabled);
