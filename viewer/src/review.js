// The review page, after the ImageNet browsing interface: one label at a time, a page of up to 48
// candidates (the model's suggested group for the label, least sure first; the model's likeliest
// items for the label, past its bar and gate, since every tile is checked; or the label's own
// named items, the ones the model doubts first), where the curator clicks the tiles that do NOT
// match and submits the page in one action. Every tile's byproducts go with the submit, as that
// interface recorded them: where it sat (row, col, order), when its thumbnail appeared, each
// hover's enter and leave, each click with its position inside the tile, and when its decision
// was made. Times are milliseconds after the page was shown (the monotonic clock). The server
// names the tiles left alone, excludes the clicked ones in the same event and keeps the traces;
// a page made for older labels is refused (409) and a fresh page is loaded. A tile's ⤒ (the cut)
// leaves it and every tile before it (all less sure) out of the page's naming with no verdict:
// where the start of a page is mostly of other labels, one cut saves a click on each, and the
// right tiles it takes with the wrong ones are not remembered as "not this" (a false "not this"
// would keep the model from ever suggesting an item for its own label).

import { getJSON, postJSON, ApiError } from './api.js';
import { leastSureFirst } from './selection.js';
import { $, el, fmt, toast } from './ui.js';

export const PAGE_SIZE = 48;
export const COLS = 8;
const MAX_MS = 86_400_000; // the server takes times up to a day after the page was shown
const CAP = { hovers: 500, clicks: 200 }; // per tile, as the server allows

/** A round's pages of a source: its suggested groups, or its likely pages. */
function roundList(rnd, source) {
  if (!rnd.ready) return [];
  return (source === 'likely' ? rnd.likely : rnd.groups) || [];
}

/** A page id the server accepts (letters and digits), without needing a secure context. */
export function newPageId() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** A tile's decision: left out by the cut (whatever its mark), marked not this label, or a match. */
export function decision(t) {
  return t.left ? 'left' : t.marked ? 'not' : 'match';
}

/** The tile entry of the submit body from a tile's trace (pure: tested without a browser too). */
export function tileBody(t, submitMs) {
  return {
    index: t.index, row: t.row, col: t.col, order: t.order,
    decision: decision(t),
    shown_ms: t.shownMs,
    hovers: t.hovers.map(([a, b]) => [a, b]),
    clicks: t.clicks.map((c) => c.slice()),
    // a cut decided the tiles it left out; the last click decided a clicked tile; a tile left
    // alone was decided by the submit
    decided_ms: t.left ? t.leftMs : t.clicks.length ? t.clicks[t.clicks.length - 1][0] : submitMs,
  };
}

export class ReviewPage {
  constructor(store, actions, { learn, root }) {
    this.store = store;
    this.actions = actions;
    this.learn = learn;
    this.root = root;
    this.grid = $('#review-grid', root);
    this.source = 'suggested'; // or 'likely', 'members'
    this.label = null;
    this.tiles = []; // one trace per tile, in reading order
    this.version = -1; // the labels version the candidates came from
    this.phase = 'closed'; // 'loading' | 'page' | 'done'
    this.pageId = null;
    this.t0 = 0; // performance.now() when the page was shown
    this.shownAt = 0; // Unix seconds, the same moment
    this.total = 0; // candidates the label has (the page shows the first PAGE_SIZE)
    this.offer = null; // after a submit: {source, label} of the next page, and 'again' of the same label
    this.last = null; // the answer of the last submit
    this.busy = false;
    this._serial = 0;
    this._cached = null; // the last round fetched here
    $('#review-submit', root).addEventListener('click', () => this.submit());
    $('#review-skip', root).addEventListener('click', () => this.skip());
    $('#review-next', root).addEventListener('click', () => this.next());
    $('#review-again', root).addEventListener('click', () => this.again());
    for (const b of root.querySelectorAll('.review-close')) b.addEventListener('click', () => this.close());
    // while the page is up its keys come first, and none reaches the map underneath
    window.addEventListener('keydown', (ev) => this._key(ev), true);
  }

  get open() { return !this.root.hidden; }

  _now() { return Math.min(MAX_MS, Math.max(0, Math.round((performance.now() - this.t0) * 10) / 10)); }

  _key(ev) {
    if (!this.open || document.querySelector('dialog[open]')) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { ev.stopPropagation(); return; }
    const k = ev.key;
    let fn = null;
    if (k === 'Escape') fn = () => this.close();
    else if (k === 'Enter') fn = this.phase === 'done' ? () => this.next() : () => this.submit();
    else if (k === 'n' || k === 'N') fn = this.phase === 'done' ? () => this.next() : () => this.skip();
    else if ((k === 'r' || k === 'R') && this.phase === 'done') fn = () => this.again();
    ev.stopPropagation();
    if (fn) { ev.preventDefault(); fn(); }
  }

  _say(text, kind = '') {
    const m = $('#review-message', this.root);
    m.textContent = text;
    m.className = `small ${kind}`;
  }

  _url(tail) { return `/api/maps/${encodeURIComponent(this.store.map.name)}${tail}`; }

  /** The learning round for the current labels (the panel's when it is current). */
  async _round() {
    const v = this.store.labels.version;
    for (const r of [this.learn.round, this._cached]) if (r && r.labels_version === v && !r.computing) return r;
    const rnd = await getJSON(this._url('/learn'));
    this._cached = rnd;
    // the open panel shows the same round (a closed one fetches its own when opened)
    if (this.learn.open) this.learn.useRound(rnd, this.learn.group ? this.learn.group.label : null);
    return rnd;
  }

  /** Open the page of the model's suggested group for ``label`` (the round's first when null). */
  openSuggested(label = null) { return this._load('suggested', label); }

  /** Open a page of the model's likeliest items for ``label`` (the round's first page when null). */
  openLikely(label = null) { return this._load('likely', label); }

  /** Open a page of ``label``'s own named items, to check them. */
  openMembers(label) { return this._load('members', label); }

  async _load(source, label, { message = '' } = {}) {
    const s = this.store;
    if (!s.canWrite) { toast(`your role (${s.user.role}) may not change labels`, 'error'); return false; }
    const serial = ++this._serial;
    this.root.hidden = false;
    this.phase = 'loading';
    this._show();
    this._say(message || 'making the page…');
    let page;
    try {
      page = source === 'members' ? await this._members(label) : await this._fromRound(source, label);
    } catch (e) {
      if (serial === this._serial) this._say(`could not make the page: ${e.message}`, 'error');
      return false;
    }
    if (serial !== this._serial) return false;
    if (!page) return false;
    Object.assign(this, page, { source: page.source || source, pageId: newPageId(), phase: 'page', offer: null });
    this._say(message);
    this._render();
    return true;
  }

  async _fromRound(source, label) {
    const rnd = await this._round();
    let groups = roundList(rnd, source);
    if (!label && !groups.length && source === 'suggested' && roundList(rnd, 'likely').length) {
      // no group the model is sure of: its likeliest items for the first label, to check
      source = 'likely';
      groups = roundList(rnd, source);
    }
    const g = (label && groups.find((x) => x.label === label)) || (label ? null : groups[0]);
    if (!g) {
      const none = source === 'likely' ? 'the model has no likely items left' : 'the model is sure of no group yet: name more items';
      this._say(rnd.ready ? (label ? `the model ${source === 'likely' ? 'has no likely items' : 'suggests nothing more'} for "${label}"` : none)
        : `the model has nothing to suggest yet: ${rnd.reason}`);
      this.phase = 'empty';
      this._show();
      return null;
    }
    const n = Math.min(PAGE_SIZE, g.indices.length); // least sure first, as the round lists them
    return { source, label: g.label, version: rnd.labels_version, total: g.indices.length, tiles: this._traces(g.indices.slice(0, n), g.ids.slice(0, n)) };
  }

  async _members(label) {
    const s = this.store;
    const id = s.labelId(label);
    const lab = s.labels.label;
    const version = s.labels.version;
    const members = [];
    for (let i = 0; i < lab.length; i++) if (lab[i] === id && id) members.push(i);
    if (!members.length) {
      this._say(`"${label}" has no items on this map`);
      this.phase = 'empty';
      this._show();
      return null;
    }
    // the items the model doubts come first, then the map's least sure
    let doubted = [];
    try {
      const rnd = await this._round();
      if (rnd.ready && rnd.labels_version === version) doubted = rnd.issues.filter((e) => e.current === label && lab[e.index] === id).map((e) => e.index);
    } catch (_) { /* no round: the map's order alone */ }
    const seen = new Set(doubted);
    const rest = Array.from(leastSureFirst(members.filter((i) => !seen.has(i)), s.map.outlier, s.map.probability));
    const indices = doubted.concat(rest).slice(0, PAGE_SIZE);
    const res = await postJSON(this._url('/points'), { indices, etag: s.map.etag });
    const ids = new Map(res.points.map((p) => [p.index, p.id]));
    return { label: s.labelName(id), version, total: members.length, tiles: this._traces(indices, indices.map((i) => ids.get(i))) };
  }

  _traces(indices, ids) {
    return indices.map((index, order) => ({
      index, id: ids[order], order, row: Math.floor(order / COLS), col: order % COLS,
      shownMs: null, hovers: [], clicks: [], marked: false, left: false, leftMs: null,
    }));
  }

  _show() {
    const page = this.phase === 'page';
    $('#review-page-actions', this.root).hidden = !page;
    $('#review-done', this.root).hidden = this.phase !== 'done';
    this.grid.hidden = !page;
    if (!page) this.grid.replaceChildren();
    if (this.phase === 'loading' || this.phase === 'empty') {
      $('#review-title', this.root).textContent = 'Review';
      $('#review-source', this.root).textContent = '';
    }
  }

  _render() {
    this._show();
    const what = { suggested: 'the model suggests, least sure first', likely: 'the model thinks likeliest (it is not sure: check each), least sure first', members: 'its named items, the doubtful first' }[this.source];
    $('#review-title', this.root).replaceChildren('Review ', el('b', { class: 'review-label', text: `"${this.label}"` }));
    $('#review-source', this.root).textContent = `${fmt(this.tiles.length)} of ${fmt(this.total)} ${what} · click the tiles that are NOT "${this.label}"`;
    this.t0 = performance.now();
    this.shownAt = Date.now() / 1000;
    this.grid.replaceChildren(...this.tiles.map((t) => this._tile(t)));
    this._count();
  }

  _tile(t) {
    const img = el('img', { alt: '', draggable: 'false' });
    img.addEventListener('load', () => { if (t.shownMs == null) t.shownMs = this._now(); });
    img.addEventListener('error', () => { img.hidden = true; });
    img.src = `/api/items/${encodeURIComponent(t.id)}/thumb`;
    const node = el('div', {
      class: 'rtile', role: 'checkbox', 'aria-checked': 'false', 'data-i': String(t.index), 'data-order': String(t.order),
      title: `${t.id}\nclick if it is not "${this.label}"`,
    }, img);
    const cut = el('button', { class: 'r-cut', type: 'button', title: 'leave this and every tile before it (all less sure) out of this naming, with no verdict', text: '⤒' });
    cut.addEventListener('click', (ev) => {
      ev.stopPropagation(); // not a click on the tile: it marks nothing
      this.cutAt(t.order);
    });
    node.append(cut);
    node.addEventListener('pointerenter', () => { if (t.hovers.length < CAP.hovers) t.hovers.push([this._now(), null]); });
    node.addEventListener('pointerleave', () => {
      const h = t.hovers[t.hovers.length - 1];
      if (h && h[1] == null) h[1] = Math.max(h[0], this._now());
    });
    node.addEventListener('click', (ev) => {
      if (this.phase !== 'page' || this.busy || t.left) return;
      const r = node.getBoundingClientRect();
      if (t.clicks.length < CAP.clicks) t.clicks.push([this._now(), Math.round((ev.clientX - r.left) * 10) / 10, Math.round((ev.clientY - r.top) * 10) / 10]);
      t.marked = !t.marked;
      node.classList.toggle('not', t.marked);
      node.setAttribute('aria-checked', String(t.marked));
      this._count();
    });
    return node;
  }

  /** ⤒ on the tile at ``order``: it and every tile before it are left out of the naming, with no
   * verdict (the cut moves there; ⤒ on the last tile it leaves out takes the cut back). */
  cutAt(order) {
    if (this.phase !== 'page' || this.busy) return;
    const cut = this.tiles.reduce((c, t) => (t.left ? t.order : c), -1); // the last tile left out
    const at = cut === order ? -1 : order;
    const now = this._now();
    for (const t of this.tiles) {
      const left = t.order <= at;
      if (left !== t.left) { t.left = left; t.leftMs = left ? now : null; }
      const node = this.grid.querySelector(`.rtile[data-order="${t.order}"]`);
      if (node) {
        node.classList.toggle('left', t.left);
        node.setAttribute('aria-checked', String(decision(t) === 'not'));
      }
    }
    this._count();
  }

  /** The tiles by their decision. */
  _byDecision() {
    const out = { match: [], not: [], left: [] };
    for (const t of this.tiles) out[decision(t)].push(t);
    return out;
  }

  _count() {
    const n = this._byDecision();
    const [named, m, left] = [n.match.length, n.not.length, n.left.length];
    const cut = left ? ` · ${fmt(left)} left out (no verdict)` : '';
    $('#review-marks', this.root).textContent = (m ? `${fmt(m)} marked not "${this.label}"` : left ? 'nothing marked' : 'nothing marked: every tile matches') + cut;
    $('#review-submit', this.root).textContent = `submit: name ${fmt(named)}${m ? `, exclude ${fmt(m)}` : ''}${left ? `, leave ${fmt(left)}` : ''} (Enter)`;
    $('#review-submit', this.root).disabled = !named && !m; // everything left out: nothing to submit
  }

  /** Enter: name the tiles left alone and exclude the marked ones, in one action, with the traces. */
  async submit() {
    const s = this.store;
    if (this.phase !== 'page' || this.busy || this.tiles.every((t) => t.left)) return;
    const at = this._now();
    const body = {
      page_id: this.pageId, label: this.label, labels_version: this.version, source: this.source,
      shown_at: this.shownAt, etag: s.map.etag, since: s.labels.version,
      tiles: this.tiles.map((t) => tileBody(t, at)),
    };
    this.busy = true;
    this.actions.busy = true; // the change poller waits for this answer
    $('#review-submit', this.root).disabled = true;
    const sentAt = performance.now();
    let res = null;
    let conflict = null;
    try {
      res = await postJSON(this._url('/review'), body);
      if (res.full) await this.actions.reloadLabels(); else s.applyChanges(res);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) conflict = e;
      else {
        toast(e.message, 'error');
        this._say(`not submitted: ${e.message}`, 'error');
      }
    } finally {
      this.busy = false;
      this.actions.busy = false;
      $('#review-submit', this.root).disabled = false;
    }
    if (conflict) { // nothing was stored: show what the labels are now, then a fresh page
      await this.actions.reloadLabels().catch(() => {});
      await this._load(this.source, this.label, { message: `the labels changed since this page was made (${conflict.message}): here is a fresh page` });
      return;
    }
    if (!res) return;
    const { match: named, not: excluded, left: cut } = this._byDecision();
    const left = cut.length;
    const message = `named ${fmt(named.length)} as "${this.label}"${excluded.length ? ` · excluded ${fmt(excluded.length)} (remembered as not "${this.label}")` : ''}${left ? ` · left ${fmt(left)} out (no verdict)` : ''}`;
    this.last = { res, named: named.map((t) => t.index), excluded: excluded.map((t) => t.index) };
    s.emit('action', { kind: 'review', res, named: named.length, label: this.label, sentAt, message });
    this.phase = 'done';
    this._show();
    this._say('');
    $('#review-summary', this.root).textContent = message;
    $('#review-excluded', this.root).replaceChildren(...excluded.map((t) => el('img', { alt: '', title: t.id, src: `/api/items/${encodeURIComponent(t.id)}/thumb` })));
    await this._offerNext();
  }

  /** After a submit: the next label's page (the fresh round's next group, or the next label's items). */
  async _offerNext() {
    const serial = this._serial;
    const nextBtn = $('#review-next', this.root);
    const againBtn = $('#review-again', this.root);
    nextBtn.hidden = true;
    againBtn.hidden = true;
    $('#review-offer', this.root).textContent = 'finding the next page…';
    let next = null;
    let again = false;
    try {
      if (this.source !== 'members') {
        const rnd = await this._round();
        const groups = roundList(rnd, this.source);
        const g = groups.find((x) => x.label !== this.label);
        next = g ? { source: this.source, label: g.label, n: g.indices.length } : null;
        again = groups.some((x) => x.label === this.label);
      } else {
        const list = this.store.labels.list.map((l) => l.name);
        const { counts } = this.store.labelCounts();
        const here = this.store.labels.list.filter((l) => counts.get(l.id));
        const at = list.indexOf(this.label);
        const after = here.filter((l) => list.indexOf(l.name) > at).concat(here.filter((l) => list.indexOf(l.name) < at));
        next = after.length ? { source: 'members', label: after[0].name, n: counts.get(after[0].id) } : null;
        again = (counts.get(this.store.labelId(this.label)) || 0) > PAGE_SIZE;
      }
    } catch (e) {
      $('#review-offer', this.root).textContent = `could not find the next page: ${e.message}`;
      return;
    }
    if (serial !== this._serial || this.phase !== 'done') return;
    this.offer = { next, again };
    $('#review-offer', this.root).textContent = next ? '' : (this.source === 'members' ? 'no other label to check' : 'the model suggests no other label now');
    if (next) {
      nextBtn.hidden = false;
      nextBtn.textContent = `next: review "${next.label}" (${fmt(Math.min(PAGE_SIZE, next.n))} of ${fmt(next.n)}) · Enter`;
    }
    if (again) {
      againBtn.hidden = false;
      againBtn.textContent = `another page of "${this.label}" · R`;
    }
  }

  /** Enter / N after a submit: open the next label's page. */
  next() {
    if (this.phase !== 'done' || !this.offer) return;
    if (this.offer.next) this._load(this.offer.next.source, this.offer.next.label);
    else if (this.offer.again) this.again();
  }

  /** R after a submit: another page of the same label. */
  again() {
    if (this.phase === 'done' && this.offer && this.offer.again) this._load(this.source, this.label);
  }

  /** N on a page: leave it unsubmitted and go to the next label. */
  async skip() {
    if (this.phase !== 'page' || this.busy) return;
    let label = null;
    if (this.source !== 'members') {
      const rnd = await this._round();
      const groups = roundList(rnd, this.source);
      const at = groups.findIndex((g) => g.label === this.label);
      const g = groups.length > 1 || at < 0 ? groups[(at + 1) % groups.length] : null;
      label = g ? g.label : null;
    } else {
      const { counts } = this.store.labelCounts();
      const here = this.store.labels.list.filter((l) => counts.get(l.id));
      const at = here.findIndex((l) => l.name === this.label);
      label = here.length > 1 ? here[(at + 1) % here.length].name : null;
    }
    if (!label) { this._say('there is no other label to review', 'error'); return; }
    await this._load(this.source, label);
  }

  /** Esc: close the page (an unsubmitted page is dropped: nothing was stored). */
  close() {
    ++this._serial;
    this.root.hidden = true;
    this.phase = 'closed';
    this.grid.replaceChildren();
  }
}
