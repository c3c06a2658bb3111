// Up and down the cluster tree, one key each: ↑ selects the selection's parent node (the clusters
// it split from, as one selection), ↓ goes back down the way it came, or, from where it started,
// shows the node's children as separate coloured groups with the largest selected, and B adds the
// sibling clusters (the rest of the parent), each its own group. The selection panel's level line
// says where the selection stands. A map without a hierarchy keeps the keys, which say so.

import { ApiError, getBuffer } from './api.js';
import { parseContainer } from './container.js';
import { Tree } from './hierarchy.js';
import { REPLACE } from './selection.js';
import { fmt, toast } from './ui.js';

const NO_TREE = 'this map keeps no cluster tree: rebuild it (corral map, or rebuild map in Jobs) to step clusters up and down';

export class Climb {
  constructor(store, view, line) {
    this.store = store;
    this.view = view;
    this.line = line;
    this.tree = null;
    this.missing = false; // the map has no hierarchy (or it could not be read)
    this.at = null; // where the last step put the selection: {node, serial, path, how, from}
    this._picked = null; // the node a selection made otherwise stands for (cached by serial)
    store.on('selection', () => this.render());
  }

  async load() {
    const m = this.store.map;
    if (!m.meta.hierarchy_url) { this.missing = true; this.render(); return; }
    try {
      const parsed = parseContainer(await getBuffer(m.meta.hierarchy_url));
      if (parsed.header.etag !== m.etag || parsed.header.n !== m.n) throw new Error('the cluster tree is of another version of the map; reload the page');
      this.tree = new Tree(parsed.cols, m.cluster);
    } catch (e) {
      this.missing = true; // the keys then say so; a 404 here is a tree the server found unusable
      if (!(e instanceof ApiError && e.status === 404)) toast(e.message, 'error');
    }
    this.render();
  }

  /** The node the selection stands for: where the last step put it, else the smallest node
   * holding the selected points' clusters. Null when nothing (or only noise) is selected. */
  current() {
    const sel = this.store.selection;
    if (!this.tree || !sel || !sel.count) return null;
    if (this.at && this.at.serial === sel.serial) return this.at;
    if (!this._picked || this._picked.serial !== sel.serial) {
      const { node, clusters } = this.tree.nodeOfPoints(sel.list());
      this._picked = { node, serial: sel.serial, path: [], how: 'picked', clusters: clusters.size };
    }
    return this._picked.node >= 0 ? this._picked : null;
  }

  _start() {
    if (!this.store.selection || !this.store.selection.count) { toast('select a cluster first (click it)'); return null; }
    if (!this.tree) { toast(this.missing ? NO_TREE : 'the cluster tree is still loading'); return null; }
    const cur = this.current();
    if (!cur) toast('the selection holds no cluster (only noise)');
    return cur;
  }

  /** ↑: the parent node; a selection of several clusters first goes to the node holding them all. */
  up() {
    const cur = this._start();
    if (!cur) return;
    const t = this.tree;
    if (cur.how === 'picked' && cur.clusters > 1 && t.nodeCluster[cur.node] < 0) { this._go(cur.node, [], 'up', null, cur.node); return; }
    if (cur.node === 0) { toast('this is the top of the cluster tree: the whole map'); return; }
    this._go(t.parent[cur.node], [...cur.path, cur.node], 'up', null, cur.path.length ? cur.path[0] : cur.node);
  }

  /** ↓: back to where the last ↑ came from, else the children as groups (the largest selected). */
  down() {
    const cur = this._start();
    if (!cur) return;
    if (cur.path.length) {
      const path = cur.path.slice();
      const node = path.pop();
      this._go(node, path, 'down', null, path.length ? path[0] : node);
      return;
    }
    const kids = this.tree.children(cur.node);
    if (!kids.length) { toast(`${this.tree.describe(cur.node)} has no finer split (no part of it is min_cluster_size items or more)`); return; }
    const groups = this._groups(kids).sort((a, b) => b.indices.length - a.indices.length);
    this._go(groups[0].node, [], 'children', groups, groups[0].node);
  }

  /** B: the selection's node and its siblings together, each one a group. */
  siblings() {
    const cur = this._start();
    if (!cur) return;
    const sibs = this.tree.siblings(cur.node);
    if (!sibs.length) { toast(`${this.tree.describe(cur.node)} has no siblings: it is the top of the tree`); return; }
    this._go(this.tree.parent[cur.node], [...cur.path, cur.node], 'siblings', this._groups([cur.node, ...sibs]), cur.path.length ? cur.path[0] : cur.node);
  }

  _groups(nodes) {
    const elig = this.view._eligible();
    return nodes.map((v) => ({ node: v, indices: this.tree.members(v, elig) }));
  }

  _go(node, path, how, groups, from) {
    const s = this.store;
    const indices = !groups ? this.tree.members(node, this.view._eligible()) : how === 'siblings' ? groups.flatMap((g) => g.indices) : groups[0].indices;
    s.selection.apply(indices, REPLACE);
    s.selectedAt = performance.now();
    s.sub = null;
    s.subclusters = [];
    if (groups) {
      const sub = new Int16Array(s.map.n).fill(-1);
      groups.forEach((g, k) => { for (const i of g.indices) sub[i] = k; });
      s.sub = sub;
      const kind = how === 'siblings' ? 'siblings' : 'children';
      s.subclusters = groups.map((g, k) => ({ sub: k, size: g.indices.length, indices: g.indices, label: this.tree.describe(g.node), kind }));
    }
    this.at = { node, serial: s.selection.serial, path, how, from };
    s.emit('selection');
  }

  /** The level line: what the selection is in the tree and where each key would take it. */
  describe() {
    const sel = this.store.selection;
    if (!sel || !sel.count) return '';
    if (!this.tree) return this.missing ? 'cluster tree: none on this map (rebuild it to step up and down)' : '';
    const cur = this.current();
    if (!cur) return 'cluster tree: only noise selected';
    const t = this.tree, v = cur.node;
    let what = t.describe(v);
    if (cur.how === 'picked' && cur.clusters > 1) what = `${cur.clusters} clusters (in: ${what})`;
    else if (cur.how === 'siblings') what = `${t.describe(cur.path[cur.path.length - 1])} and ${t.children(v).length - 1 === 1 ? 'its sibling' : `its ${t.children(v).length - 1} siblings`} · ${what}`;
    else if (cur.path.length) what = `${t.describe(cur.path[0])} ↑ ${what}`;
    const kids = t.children(v).length;
    const keys = [
      v === 0 ? '↑ top' : '↑ parent',
      cur.path.length ? '↓ back' : kids ? `↓ ${kids} children` : '↓ no finer split',
      t.siblings(v).length ? 'B siblings' : null,
    ].filter(Boolean).join(' · ');
    return `${what} · ${fmt(sel.count)} items · level ${t.depth[v]}  (${keys})`;
  }

  render() {
    const text = this.describe();
    this.line.textContent = text;
    this.line.hidden = !text;
  }
}
