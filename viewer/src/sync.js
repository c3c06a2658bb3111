// Keeps the labels equal to the server's while others curate the same map: a server-sent event
// says the version moved, then the points changed since our version are fetched and applied.

import { getJSON } from './api.js';
import { toast } from './ui.js';

export class Sync {
  constructor(store, actions, { interval = 5000 } = {}) {
    this.store = store;
    this.actions = actions;
    this.interval = interval;
    this.busy = false;
    this.es = null;
  }

  start() {
    if (typeof EventSource !== 'undefined') {
      this.es = new EventSource(`/api/events/stream?since=${this.store.labels.version}`);
      this.es.addEventListener('version', (e) => {
        const v = JSON.parse(e.data).version;
        if (v !== this.store.labels.version) this.pull();
      });
    }
    this.timer = setInterval(() => this.pull(), this.interval); // also covers a dropped stream
  }

  async pull() {
    const s = this.store;
    if (this.busy || this.actions.busy || !s.map) return;
    this.busy = true;
    try {
      const res = await getJSON(`/api/maps/${encodeURIComponent(s.map.name)}/changes?since=${s.labels.version}`);
      if (res.etag && res.etag !== s.map.etag) { // boxes were revised: points left or joined the map
        if (!this.stale) toast('the map changed (detector boxes were revised): reload the page to see it', 'error');
        this.stale = true;
        return;
      }
      if (res.full) await this.actions.reloadLabels();
      else if (res.version !== s.labels.version || (res.changes && res.changes.idx.length)) s.applyChanges(res);
    } catch (_) {
      /* the next tick retries */
    } finally {
      this.busy = false;
    }
  }

  stop() { if (this.es) this.es.close(); clearInterval(this.timer); }
}
