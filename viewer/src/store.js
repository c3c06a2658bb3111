// The viewer's state: the map, the labels (kept equal to the server's), the selection and the
// view options. Modules listen for named changes instead of calling each other.

import { Selection } from './selection.js';

export class Store extends EventTarget {
  constructor() {
    super();
    this.user = null; // {name, role, can: [...]}
    this.map = null; // {name, etag, n, x, y, cluster, outlier, probability, flags, cellStart, grid, meta}
    this.labels = null; // {version, label: Uint32Array, state: Uint8Array, list: [{id, name, count, aliases}]}
    this.selection = null;
    this.sub = null; // Int16Array sub-cluster per point after a split, or null
    this.subclusters = []; // [{sub, size, indices}]
    this.mode = 'cluster'; // colour by 'cluster' or 'label'
    this.onlyUnlabelled = false;
    this.tool = 'pan'; // 'pan' or 'lasso'
    this.thumbnails = true;
    this.selectedAt = 0; // when the current selection was made (for the event's duration)
  }

  emit(topic, detail = {}) { this.dispatchEvent(new CustomEvent(topic, { detail })); }
  on(topic, fn) { this.addEventListener(topic, (e) => fn(e.detail)); }

  get canWrite() { return !!(this.user && this.user.can.includes('write')); }

  setMap(meta, points, labels) {
    const c = points.cols;
    this.map = {
      name: meta.name, etag: meta.etag, n: points.header.n, meta, grid: points.header.grid, bounds: points.header.bounds,
      x: c.x, y: c.y, cluster: c.cluster, outlier: c.outlier, probability: c.probability, flags: c.flags, cellStart: c.cell_start,
      atlas: meta.atlas,
    };
    this.selection = new Selection(this.map.n);
    this.sub = null;
    this.subclusters = [];
    this.setLabels(labels);
    this.emit('map');
  }

  setLabels(parsed) {
    const lab = parsed.cols.label;
    this.labels = {
      version: parsed.header.version,
      label: lab instanceof Uint32Array ? lab : Uint32Array.from(lab),
      state: Uint8Array.from(parsed.cols.state),
      list: parsed.header.labels,
    };
    this.emit('labels', { full: true });
  }

  /** Apply a server answer ({version, changes: {idx, label, state}, labels}). */
  applyChanges(res) {
    const L = this.labels;
    if (res.changes) {
      const { idx, label, state } = res.changes;
      for (let k = 0; k < idx.length; k++) { L.label[idx[k]] = label[k]; L.state[idx[k]] = state[k]; }
    }
    if (res.labels) L.list = res.labels;
    if (typeof res.version === 'number' && res.version > L.version) L.version = res.version;
    this.emit('labels', { full: false, changed: res.changes ? res.changes.idx.length : 0 });
  }

  labelName(id) {
    if (!id) return null;
    const l = this.labels.list.find((x) => x.id === id);
    return l ? l.name : null;
  }

  labelId(name) {
    const key = name.trim().toLocaleLowerCase();
    const l = this.labels.list.find((x) => x.name.toLocaleLowerCase() === key || (x.aliases || []).some((a) => a.toLocaleLowerCase() === key));
    return l ? l.id : 0;
  }

  /** Points per label id on this map, and how many are labelled. */
  labelCounts() {
    const counts = new Map();
    const lab = this.labels.label;
    let labelled = 0;
    for (let i = 0; i < lab.length; i++) {
      const l = lab[i];
      if (l) { labelled++; counts.set(l, (counts.get(l) || 0) + 1); }
    }
    return { counts, labelled, total: lab.length };
  }

  select(indices, mode) {
    this.selection.apply(indices, mode);
    this.selectedAt = performance.now();
    if (mode === 'replace') { this.sub = null; this.subclusters = []; }
    this.emit('selection');
  }
}
