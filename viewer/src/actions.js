// Label actions: each is one call to the server, which answers once the event is durable,
// with the points that changed since the version we showed. Nothing changes on screen before
// the server says so, so what the curator sees is always what is stored.

import { postJSON, getBuffer, ApiError } from './api.js';
import { packPoints } from './wire.js';
import { parseContainer } from './container.js';
import { toast } from './ui.js';

export class Actions {
  constructor(store) {
    this.store = store;
    this.busy = false;
  }

  _url(kind) { return `/api/maps/${encodeURIComponent(this.store.map.name)}/actions/${kind}`; }

  async _do(kind, body, okMessage, detail = {}) {
    const s = this.store;
    if (!s.canWrite) { toast(`your role (${s.user.role}) may not change labels`, 'error'); return null; }
    this.busy = true;
    const sentAt = performance.now(); // a selection made after this is the curator's, not ours to replace
    try {
      const res = await postJSON(this._url(kind), { ...body, since: s.labels.version, etag: s.map.etag });
      if (res.full) await this.reloadLabels();
      else s.applyChanges(res);
      if (res.warnings && res.warnings.length) toast([okMessage && okMessage(res), ...res.warnings].filter(Boolean).join(' · '), 'warn');
      else if (okMessage) toast(okMessage(res));
      s.emit('action', { kind, res, sentAt, ...detail });
      return res;
    } catch (e) {
      toast(e instanceof ApiError ? e.message : `failed: ${e.message}`, 'error');
      if (e instanceof ApiError && e.status === 409) await this.reloadLabels();
      return null;
    } finally {
      this.busy = false;
    }
  }

  async reloadLabels() {
    const s = this.store;
    const buf = await getBuffer(`/api/maps/${encodeURIComponent(s.map.name)}/labels.bin`);
    s.setLabels(parseContainer(buf));
  }

  _duration() { return Math.max(0, Math.round(performance.now() - this.store.selectedAt)); }

  /** Name the selection minus its exclusions (remembered as "not this") and its skipped tiles
   *  (left unlabelled, no verdict: a cut takes right members too). */
  assign(label) {
    const sel = this.store.selection;
    const indices = Array.from(sel.list()).filter((i) => !sel.skipped.has(i));
    if (!indices.length) { toast(sel.count ? 'every selected point is left out' : 'select some points first', 'error'); return Promise.resolve(null); }
    const exclude = Array.from(sel.excluded);
    const skipped = sel.count - indices.length;
    return this._do('assign', { indices: packPoints(indices, this.store.map.n), exclude, label, duration_ms: this._duration() },
      (r) => `named ${(indices.length - exclude.length).toLocaleString()} items "${label}"` + (exclude.length ? `, ${exclude.length} excluded` : '') + (skipped ? `, ${skipped} left out` : ''),
      { label, named: indices.length - exclude.length });
  }

  unlabel() {
    const indices = Array.from(this.store.selection.list());
    if (!indices.length) return Promise.resolve(null);
    return this._do('unlabel', { indices: packPoints(indices, this.store.map.n), duration_ms: this._duration() }, () => `removed the labels of ${indices.length.toLocaleString()} items`);
  }

  rename(oldName, newName) { return this._do('rename', { old: oldName, new: newName }, () => `renamed "${oldName}" to "${newName}"`); }
  merge(sources, into) { return this._do('merge', { sources, into }, () => `merged ${sources.map((x) => `"${x}"`).join(', ')} into "${into}"`); }
  remove(name) { return this._do('delete', { name }, () => `removed the label "${name}"`); }
  undo() { return this._do('undo', {}, (r) => `undid ${r.kind === 'undo' ? 'the last action' : r.kind}`); }
  redo() { return this._do('redo', {}, () => 'redone'); }
}
