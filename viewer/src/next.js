// Name -> next -> name: after every naming action the server's proposal of what to name next
// (``next`` of GET .../learn: suggested groups largest first, then the unlabelled items the labels
// regrouped, of classes nobody has named, then the clusters by unlabelled points left) becomes the selection, so the curator types the next name without hunting on the
// map. ] skips to the following proposal. A selection the curator made while the action was on
// its way is never overridden, and a text box being typed in keeps its focus. A proposal the
// curator passed over (] went past it, or another selection replaced it) comes after the others in
// later rounds, as ``corral.pipeline.loop.passed_last`` orders them: offered first again, it would
// cost a ] after every naming. Each pass is also stored on the server with who and when, and the
// server puts what any curator of the map passed over last in every later round, so a reload or a
// second curator does not meet the same mixture first again.

import { getJSON, postJSON } from './api.js';
import { packPoints } from './wire.js';
import { $, fmt } from './ui.js';

function typing(node) {
  return !!node && (node.tagName === 'INPUT' || node.tagName === 'TEXTAREA' || node.tagName === 'SELECT' || node.isContentEditable);
}

export class NextProposal {
  constructor(store, { learn, names, root }) {
    this.store = store;
    this.learn = learn;
    this.names = names;
    this.line = $('#next-line', root);
    this.list = []; // the latest round's ``next``
    this.pos = -1; // the proposal shown
    this._offeredAt = -1; // store.selectedAt of the selection the last offer made
    this.following = false; // true while the round after a naming is still being learnt
    this.version = -1; // the labels version the list was made for
    this._serial = 0;
    // Sets of the point indices of proposals passed over; one map per page (choosing another map
    // loads the page anew), so they are this map's
    this.passed = [];
    this._left = true; // the proposal shown has been passed over (or none is shown)
    store.on('action', (d) => this._after(d));
    store.on('selection', () => this._selectionChanged());
    names.onSkip = () => this.skip();
  }

  /** The selection changed: when it no longer holds most of the proposal on offer, the curator
   * has passed that proposal over. */
  _selectionChanged() {
    const e = this.list[this.pos];
    if (this._left || !e || e.kind === 'suggested') return;
    const sel = this.store.selection;
    const idx = this._indices(e); // its points still unlabelled: a naming takes the rest away
    let kept = 0;
    for (const i of idx) if (sel.has(i)) kept++;
    if (kept * 2 < idx.length) this._pass(e, 'replaced');
  }

  _pass(e, how = 'skip') {
    this._left = true;
    if (!e || e.kind === 'suggested' || !e.indices.length) return;
    this.passed.push(new Set(e.indices));
    const s = this.store;
    // kept on the server for every curator of the map; a viewer (read-only) keeps it for this page only
    postJSON(`${this._url()}/pass`, {
      indices: packPoints(e.indices, s.map.n), how, kind: e.kind, labels_version: this.version >= 0 ? this.version : null, etag: s.map.etag,
    }).catch(() => {});
  }

  _url() { return `/api/maps/${encodeURIComponent(this.store.map.name)}/learn`; }

  /** A naming action succeeded: fetch the round and offer its first proposal. */
  async _after({ kind, label, named, sentAt, message }) {
    if (kind !== 'assign' && kind !== 'learn-accept') return;
    const done = message || `named ${fmt(named ?? 0)} as "${label}"`;
    const serial = ++this._serial;
    // At once: the server answers with what needs no model while it learns from the new label
    // (on a large map a round takes seconds), so the curator names on without waiting.
    const rnd = await this._fetch(serial, done, false);
    if (!rnd) return;
    // the curator picked something else while the action was on its way: leave it alone
    const moved = this.store.selectedAt > (sentAt ?? Infinity);
    this._take(rnd);
    this._offer(0, { done, select: !moved });
    if (rnd.computing) this._follow(serial, done);
    else this.following = false;
  }

  /** The round was still being learnt: wait for it and take its proposals in, leaving the
   * selection and the name being typed alone; ] then goes to its best proposal. */
  async _follow(serial, done) {
    this.following = true;
    let rnd;
    try {
      rnd = await getJSON(this._url());
    } catch (e) {
      if (serial === this._serial) this.following = false;
      return; // the proposals shown stay; ] asks again
    }
    if (serial !== this._serial) return; // a newer action asked since
    this.following = false;
    const shown = this.list[this.pos];
    const left = this._left;
    // untouched: the selection is still the one offered and nothing has been typed for it
    const untouched = this.store.selectedAt <= this._offeredAt && !this.names.input.value.trim();
    this._take(rnd);
    const k = rnd.ready ? rnd.groups.length : 0;
    // the round's best proposal (the model's best group, else the labels' regrouping's) replaces an
    // untouched offer made from the previous round
    if (untouched && this.list.length && !(shown && same(this.list[0], shown))) { this._offer(0, { done }); return; }
    this.pos = shown && this.list.length && same(this.list[0], shown) ? 0 : -1;
    this._left = this.pos < 0 || left; // the proposal on the map is still the one shown
    if (k) this._say(`${done ? `${done} — ` : ''}the model suggests ${fmt(k)} group${k === 1 ? '' : 's'}: ] to see ${k === 1 ? 'it' : 'them'}`);
  }

  /** ]: the proposal after the one shown (fetching the round first if there is none yet). */
  async skip() {
    if (!this.list.length || this.version !== this.store.labels.version) {
      const serial = ++this._serial;
      const rnd = await this._fetch(serial, '');
      if (!rnd) return;
      const shown = this.list[this.pos];
      if (shown && !this._left) this._pass(shown);
      this._take(rnd);
      // stay in step: move past the proposal shown before the refresh when it is still there
      const at = shown ? this.list.findIndex((e) => same(e, shown)) : -1;
      this._offer(at < 0 ? 0 : at + 1);
      return;
    }
    if (!this._left) this._pass(this.list[this.pos]);
    this._offer(this.pos + 1);
  }

  async _fetch(serial, done, wait = true) {
    this._say(done ? `${done} — finding what to name next…` : 'finding what to name next…');
    let rnd;
    try {
      rnd = await getJSON(wait ? this._url() : `${this._url()}?wait=false`);
    } catch (e) {
      if (serial === this._serial) this._say(`${done ? `${done} — ` : ''}could not fetch the next proposal: ${e.message}`);
      return null;
    }
    return serial === this._serial ? rnd : null; // a newer action asked since
  }

  _take(rnd) {
    this.list = passedLast(rnd.next || [], this.passed);
    this._left = true;
    this.version = rnd.labels_version;
    this.pos = -1;
    if (this.learn.open) this.learn.useRound(rnd);
  }

  /** Show proposal ``at`` (wrapping round); ``select`` false only writes the line. */
  _offer(at, { done = '', select = true } = {}) {
    const n = this.list.length;
    const head = done ? `${done} — ` : '';
    if (!n) { this.pos = -1; this._say(`${head}nothing left to propose: every cluster is named`); return; }
    this.pos = ((at % n) + n) % n;
    const e = this.list[this.pos];
    this._left = !select; // only a proposal put on the map can be passed over
    const idx = this._indices(e);
    const what = e.kind === 'suggested'
      ? `next: "${e.label}", ${fmt(idx.length)} suggested`
      : e.kind === 'group' && e.beside
        ? `next: ${fmt(idx.length)} unlabelled that look alike, beside "${e.beside}" (more of it, or a look-alike nobody named)`
        : e.kind === 'group'
        ? `next: ${fmt(idx.length)} unlabelled that look alike (regrouped by what the labels taught)`
        : `next: cluster ${e.cluster}, ${fmt(idx.length)} unlabelled`;
    this._say(`${head}${what}${select ? '' : ' (press ] to go there)'}`);
    if (!select) { this.pos -= 1; return; } // ] then goes to this very proposal
    if (e.kind === 'suggested' && this.learn.open && this.learn.showLabel(e.label)) {
      const box = this.names.input; // the name box an earlier offer focused: the panel's keys act on the group now
      if (document.activeElement === box && !box.value.trim()) box.blur();
      return;
    }
    this.store.select(idx, 'replace');
    this._offeredAt = this.store.selectedAt;
    const active = document.activeElement;
    if (!typing(active) && !document.querySelector('dialog[open]')) this.names.focus('');
  }

  /** The proposal's points; a cluster's or a regrouped group's only while still unlabelled here
   * (as with "only unlabelled"). */
  _indices(e) {
    if (e.kind === 'suggested') return e.indices;
    const lab = this.store.labels.label;
    return e.indices.filter((i) => lab[i] === 0);
  }

  _say(text) {
    if (this.line) { this.line.textContent = text; this.line.hidden = !text; }
    if (this.learn.open && text) $('#learn-message', this.learn.root).textContent = text;
  }
}

/** The proposals with those the curator passed over last: an entry counts as passed over when
 * ``share`` of its points lay in one passed over before (groups are made anew each round). */
export function passedLast(list, passed, share = 0.8) {
  if (!passed.length) return list;
  const seen = (e) => e.kind !== 'suggested' && e.indices.length > 0 && passed.some((p) => {
    let k = 0;
    for (const i of e.indices) if (p.has(i)) k++;
    return k >= share * e.indices.length;
  });
  const flags = list.map(seen);
  return [...list.filter((_, k) => !flags[k]), ...list.filter((_, k) => flags[k])];
}

function same(a, b) {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'cluster') return a.cluster === b.cluster;
  if (a.kind === 'group') return a.indices[0] === b.indices[0];
  return a.label === b.label;
}
