// Jobs: start an embed run on a folder (or rebuild the map) and watch its progress.

import { getJSON, postJSON } from './api.js';
import { $, el, fmt, toast } from './ui.js';

export class JobsPanel {
  constructor(store, root, { onMapDone }) {
    this.store = store;
    this.root = root;
    this.onMapDone = onMapDone;
    this.seen = new Map();
    $('#job-form', root).addEventListener('submit', (ev) => { ev.preventDefault(); this.start(); });
    $('#job-kind', root).addEventListener('change', () => this._kind());
    this._kind();
    this.poll();
  }

  _kind() { $('#job-source', this.root).disabled = $('#job-kind', this.root).value !== 'embed'; }

  async start() {
    const choice = $('#job-kind', this.root).value;
    const source = $('#job-source', this.root).value.trim();
    const map = this.store.map ? this.store.map.name : null;
    const body = choice === 'embed' ? { kind: 'embed', source, options: {} }
      : { kind: 'map', source: null, options: choice === 'update' && map ? { update: true, name: map } : {} };
    try {
      await postJSON('/api/jobs', body);
      toast(`${choice === 'embed' ? 'embed' : 'map'} job started`);
      this.poll();
    } catch (e) { toast(e.message, 'error'); }
  }

  async poll() {
    clearTimeout(this.timer);
    let jobs = [];
    try { jobs = (await getJSON('/api/jobs')).jobs; } catch (_) { /* keep the old list */ }
    this.render(jobs);
    const running = jobs.some((j) => j.status === 'running' || j.status === 'queued');
    this.timer = setTimeout(() => this.poll(), running ? 1000 : 10000);
  }

  render(jobs) {
    const list = $('#job-list', this.root);
    list.replaceChildren(...jobs.slice(0, 8).map((j) => {
      const pct = j.fraction != null ? Math.round(j.fraction * 100) : null;
      const was = this.seen.get(j.id);
      if (was && was !== j.status && j.status === 'done' && j.kind === 'map') this.onMapDone(j);
      if (was && was !== j.status && j.status === 'failed') toast(`${j.kind} job failed: ${j.error}`, 'error');
      this.seen.set(j.id, j.status);
      return el('li', { class: `job ${j.status}`, 'data-job': j.id },
        el('div', { class: 'job-head' },
          el('b', { text: j.kind }), el('span', { class: 'muted', text: ` ${j.source || ''}` }),
          el('span', { class: `status ${j.status}`, text: j.status + (pct != null && j.status === 'running' ? ` ${pct}%` : '') })),
        el('div', { class: 'bar' }, el('i', { style: `width: ${j.status === 'done' ? 100 : pct ?? (j.status === 'running' ? 5 : 0)}%` })),
        el('div', { class: 'muted small', text: j.total ? `${fmt(j.done)} of ${fmt(j.total)} · ${j.seconds}s` : `${j.seconds}s${j.error ? ` · ${j.error}` : ''}` }),
        j.status === 'running' ? el('button', { type: 'button', class: 'small', text: 'cancel', onclick: () => this.cancel(j.id) }) : null);
    }));
    $('#jobs-empty', this.root).hidden = jobs.length > 0;
  }

  async cancel(id) {
    try { await postJSON(`/api/jobs/${id}/cancel`, {}); this.poll(); } catch (e) { toast(e.message, 'error'); }
  }
}
