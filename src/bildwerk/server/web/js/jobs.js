// Following a job: server-sent events (progress with previews, then one end), the cookie
// authenticates EventSource (it cannot send headers). Falls back to polling if the stream breaks.
import {get, localPath} from "./api.js";

export function followJob(jobId, {onProgress = () => {}, onPreview = () => {}, onEnd = () => {}} = {}) {
  let closed = false;
  const src = new EventSource(`/api/v1/jobs/${encodeURIComponent(jobId)}/events?preview=true`);
  const finish = async () => {
    if (closed) return;
    closed = true;
    src.close();
    try { onEnd(await get(`/api/v1/jobs/${encodeURIComponent(jobId)}`)); } catch (e) { onEnd(null, e); }
  };
  src.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    if (p.preview) onPreview(p.preview);
    onProgress(p);
  });
  src.addEventListener("end", finish);
  src.addEventListener("stopping", () => { src.close(); poll(); });
  src.onerror = () => { if (!closed && src.readyState === EventSource.CLOSED) poll(); };
  async function poll() {
    while (!closed) {
      await new Promise((r) => setTimeout(r, 1000));
      try {
        const job = await get(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
        onProgress({...(job.progress || {}), status: job.status});
        if (["succeeded", "failed", "cancelled"].includes(job.status)) { closed = true; onEnd(job); }
      } catch { /* keep trying: the server may be restarting */ }
    }
  }
  return {close() { closed = true; src.close(); }};
}

export const imageUrl = (result) => localPath(result.url);
