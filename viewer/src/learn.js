// The learning loop: the model's suggested groups, least sure first, accepted in one action minus
// the tiles the curator marks "not this"; then the next best group of the fresh round (name ->
// next -> name). Review pages of each label's likeliest items (past the bar and the gate, every
// tile checked by the curator) open the review page. Two queues (hard items, possible label
// errors) select their item on the map, to be named the usual way. The round is computed by the
// server for one labels version: accepting an old round is refused (409) and the panel fetches
// the new one.

import { getJSON, postJSON, ApiError } from './api.js';
import { packPoints } from './wire.js';
import { $, el, fmt, toast } from './ui.js';

const TABS = ['groups', 'likely', 'hard', 'issues'];

function pct(x) { return x == null ? '–' : `${(100 * x).toFixed(1)}%`; }

export class LearnPanel {
  constructor(store, actions, root) {
    this.store = store;
    this.actions = actions;
    this.root = root;
    this.grid = $('#learn-grid', root);
    this.round = null; // the server's answer for one labels version
    this.tab = 'groups';
    this.group = null; // the group shown
    this.pos = 0; // its place in round.groups
    this.skipped = new Set(); // labels skipped (N) since the last accept
    this.marks = new Set(); // point indices marked "not this"
    this.shownAt = 0;
    this.busy = false;
    this._serial = 0;
    this._stale = null;
    this.session = { actions: 0, items: 0 }; // labelling actions this session, items they named
    this.nextFollows = false; // true: the next proposal (next.js) fetches the round after an accept
    this.onLikely = null; // (label) => open the review page of the label's likeliest items
    $('#learn-accept', root).addEventListener('click', () => this.accept());
    $('#learn-next', root).addEventListener('click', () => this.next());
    $('#learn-show', root).addEventListener('click', () => this.showOnMap());
    $('#learn-close', root).addEventListener('click', () => this.toggle(false));
    for (const t of TABS) $(`#learn-tab-${t}`, root).addEventListener('click', () => this.setTab(t));
    store.on('action', (d) => this._count(d));
    // another curator's change (or ours from the map) makes the round old: fetch the new one
    store.on('labels', () => {
      if (!this.open || this.busy || !this.round || (this.store.labels.version === this.round.labels_version && !this.round.computing)) return;
      clearTimeout(this._stale);
      this._stale = setTimeout(() => {
        if (this.open && !this.busy && this.round && (this.round.computing || this.round.labels_version !== this.store.labels.version)) this.load({ keep: true });
      }, 1500);
    });
  }

  get open() { return !this.root.hidden; }

  /** Keys go to the loop only while its group view is shown (the queues name the usual way). */
  get active() { return this.open && this.tab === 'groups' && !!this.group; }

  toggle(on = !this.open) {
    this.root.hidden = !on;
    if (on && !this.round) this.load();
    else if (on && this.round && (this.round.computing || this.round.labels_version !== this.store.labels.version)) this.load({ keep: true });
  }

  _url(tail = '') { return `/api/maps/${encodeURIComponent(this.store.map.name)}/learn${tail}`; }

  /** Fetch the round for the current labels; ``keep`` stays on the group of the same label. */
  async load({ keep = false } = {}) {
    const serial = ++this._serial;
    const label = keep && this.group ? this.group.label : null;
    $('#learn-status', this.root).textContent = 'learning from the labels…';
    let rnd;
    try {
      rnd = await getJSON(this._url());
    } catch (e) {
      if (serial === this._serial) $('#learn-status', this.root).textContent = `could not fetch the round: ${e.message}`;
      return;
    }
    if (serial !== this._serial) return;
    this._use(rnd, label);
  }

  /** A round fetched elsewhere (after a naming): show it, on the group of ``label`` if given. */
  useRound(rnd, label = null) {
    // a round for these very labels is already shown (it came first another way): keep the
    // curator's place in it rather than starting over
    const cur = this.round;
    if (cur && cur.ready && cur.labels_version >= rnd.labels_version) return;
    clearTimeout(this._stale);
    ++this._serial; // a fetch still on its way is older
    this._use(rnd, label);
  }

  _use(rnd, label) {
    this.round = rnd;
    $('#learn-status', this.root).textContent = '';
    this._figures();
    const groups = rnd.ready ? rnd.groups : [];
    let at = label ? groups.findIndex((g) => g.label === label) : -1;
    if (at < 0) at = this._firstFrom(0);
    this._showGroup(at);
    this._tabs();
  }

  /** Show the round's group of ``label`` (on the groups tab); false when the round has none. */
  showLabel(label) {
    const groups = this.round && this.round.ready ? this.round.groups : [];
    const at = groups.findIndex((g) => g.label === label);
    if (at < 0) return false;
    this.tab = 'groups';
    this._showGroup(at);
    this._tabs();
    return true;
  }

  /** The first group not skipped, looking from ``from`` round to the start; when every group
   * was skipped, the skips are forgotten and ``from`` is shown. */
  _firstFrom(from) {
    const groups = this.round && this.round.ready ? this.round.groups : [];
    const n = groups.length;
    if (!n) return -1;
    for (let k = 0; k < n; k++) if (!this.skipped.has(groups[(from + k) % n].label)) return (from + k) % n;
    this.skipped.clear();
    return from % n;
  }

  _figures() {
    const r = this.round;
    const box = $('#learn-figures', this.root);
    if (!r.ready) {
      box.replaceChildren(el('p', { class: 'learn-reason', text: r.reason }));
      return;
    }
    const fig = (name, value, title) => el('div', { class: 'fig', title }, el('b', { text: value }), el('span', { class: 'muted small', text: name }));
    box.replaceChildren(
      fig('held-out accuracy', pct(r.heldout_accuracy), `the model (${r.model}) on labelled items it did not learn from`),
      fig('estimated on what is left', pct(r.estimated_accuracy_left), 'expected accuracy of its guesses on the unlabelled items'),
      fig('labelled', fmt(r.labelled), 'items with a label'),
      fig('unlabelled', fmt(r.unlabelled), 'items without a label'));
    box.dataset.version = String(r.labels_version);
  }

  _session() {
    const s = this.session;
    $('#learn-session', this.root).textContent = s.actions
      ? `this session: ${fmt(s.items)} items in ${fmt(s.actions)} action${s.actions === 1 ? '' : 's'} · ${(s.items / s.actions).toFixed(1)} items labelled per action`
      : '';
  }

  /** Count the labelling actions of this session (the loop's and the map's). */
  _count({ kind, res, named }) {
    if (kind === 'learn-accept' || kind === 'review') { this.session.actions++; this.session.items += named; } else if (kind === 'assign' && res && res.changes) {
      const { label, state } = res.changes;
      let n = 0;
      for (let k = 0; k < label.length; k++) if (label[k] && !(state[k] & 1)) n++;
      this.session.actions++;
      this.session.items += n;
    } else return;
    this._session();
  }

  _tabs() {
    const r = this.round;
    const ready = !!(r && r.ready);
    $('#learn-tabs', this.root).hidden = !ready;
    if (ready) {
      $('#learn-tab-groups', this.root).textContent = `groups (${fmt(r.groups.length)})`;
      $('#learn-tab-likely', this.root).textContent = `page by page (${fmt((r.likely || []).length)})`;
      $('#learn-tab-hard', this.root).textContent = `hard items (${fmt(r.hard.length)})`;
      $('#learn-tab-issues', this.root).textContent = `possible label errors (${fmt(r.issues.length)})`;
    }
    for (const t of TABS) $(`#learn-tab-${t}`, this.root).classList.toggle('on', t === this.tab);
    this._render();
  }

  setTab(tab) {
    this.tab = tab;
    this._tabs();
  }

  _showGroup(at) {
    const groups = this.round && this.round.ready ? this.round.groups : [];
    this.pos = at;
    this.group = at >= 0 ? groups[at] : null;
    this.marks.clear();
    this.shownAt = performance.now();
    if (this.tab === 'groups') this._render();
  }

  _render() {
    const head = $('#learn-head', this.root);
    const acts = $('#learn-group-actions', this.root);
    const r = this.round;
    acts.hidden = true;
    this.grid.classList.toggle('queue', this.tab === 'hard' || this.tab === 'issues');
    this.grid.classList.toggle('pages', this.tab === 'likely');
    if (!r || !r.ready) { head.textContent = ''; this.grid.replaceChildren(); return; }
    if (this.tab === 'groups') {
      const g = this.group;
      if (!g) {
        head.textContent = 'no group the model is sure enough of: name more items, or work through the queues';
        this.grid.replaceChildren();
        return;
      }
      acts.hidden = false;
      head.replaceChildren(el('b', { class: 'learn-label', text: `"${g.label}"` }),
        ` ${fmt(g.indices.length)} items · expected precision ${pct(g.expected_precision)} · group ${this.pos + 1} of ${r.groups.length}`);
      this.grid.replaceChildren(...g.indices.map((i, k) => this._tile(i, g.ids[k], {
        title: `${g.ids[k]}\nconfidence ${g.confidence[k]}`,
        onclick: () => this._mark(i),
      })));
      this._marksText();
      return;
    }
    if (this.tab === 'likely') {
      const pages = r.likely || [];
      head.textContent = pages.length
        ? 'per label, the items the model thinks likeliest, though not sure enough to suggest as a group: review a page, click the tiles that are not the label'
        : 'no likely items left';
      this.grid.replaceChildren(...pages.map((p) => el('div', { class: 'likely-row', 'data-label': p.label },
        el('button', { class: 'write', type: 'button', text: `review "${p.label}"`, onclick: () => { if (this.onLikely) this.onLikely(p.label); } }),
        el('span', { class: 'muted small', text: ` ${fmt(p.indices.length)} items · the model expects about ${fmt(Math.round(p.expected_right))} right` }))));
      return;
    }
    const list = this.tab === 'hard' ? r.hard : r.issues;
    head.textContent = this.tab === 'hard'
      ? 'the items the model is least sure of, with its guess: click one to select it on the map and name it'
      : 'labelled items the model would label otherwise: click one to select it, then rename or unlabel it';
    this.grid.replaceChildren(...list.map((e) => this._tile(e.index, e.id, {
      badge: e.current ? `now: ${e.current}` : null,
      guess: `model: ${e.label}`,
      title: `${e.id}\nmodel: ${e.label} (${e.score})${e.current ? `\nlabelled: ${e.current}` : ''}`,
      onclick: () => this.store.select([e.index], 'replace'),
    })));
  }

  _tile(i, id, { badge = null, guess = null, title = '', onclick }) {
    const img = el('img', { alt: '', loading: 'lazy', draggable: 'false', src: `/api/items/${id}/thumb` });
    img.addEventListener('error', () => { img.hidden = true; });
    return el('div', { class: `tile${this.marks.has(i) ? ' marked' : ''}`, 'data-i': String(i), title, onclick }, img,
      badge ? el('span', { class: 'badge', text: badge }) : null,
      guess ? el('span', { class: 'guess', text: guess }) : null);
  }

  _mark(i) {
    if (this.marks.has(i)) this.marks.delete(i); else this.marks.add(i);
    const t = this.grid.querySelector(`.tile[data-i="${i}"]`);
    if (t) t.classList.toggle('marked', this.marks.has(i));
    this._marksText();
  }

  _marksText() {
    const g = this.group;
    const m = this.marks.size;
    $('#learn-accept', this.root).textContent = g ? `accept ${fmt(g.indices.length - m)} as "${g.label}"` : 'accept';
    $('#learn-marks', this.root).textContent = m ? `${fmt(m)} marked not this` : 'click a tile that is not this';
  }

  /** N: skip this group for the next one. */
  next() {
    if (!this.group) return;
    this.skipped.add(this.group.label);
    this._showGroup(this._firstFrom(this.pos + 1));
  }

  /** Select the group on the map (to see where it lies). */
  showOnMap() { if (this.group) this.store.select(this.group.indices, 'replace'); }

  /** Enter / A: name the group minus the marked tiles in one action, then the fresh round's best group. */
  async accept() {
    const s = this.store;
    const g = this.group;
    if (!g || this.busy) return;
    if (!s.canWrite) { toast(`your role (${s.user.role}) may not change labels`, 'error'); return; }
    const exclude = g.indices.filter((i) => this.marks.has(i));
    const named = g.indices.length - exclude.length;
    const body = {
      labels_version: this.round.labels_version, label: g.label, indices: packPoints(g.indices, s.map.n), exclude,
      etag: s.map.etag, since: s.labels.version, duration_ms: Math.max(0, Math.round(performance.now() - this.shownAt)),
    };
    this.busy = true;
    this.actions.busy = true; // the change poller waits for this answer
    $('#learn-accept', this.root).disabled = true;
    let msg;
    let followed = false;
    const sentAt = performance.now();
    try {
      const res = await postJSON(this._url('/accept'), body);
      if (res.full) await this.actions.reloadLabels(); else s.applyChanges(res);
      msg = `named ${fmt(named)} as "${g.label}"${exclude.length ? ` · ${fmt(exclude.length)} marked not this` : ''}`;
      if (res.warnings && res.warnings.length) toast(res.warnings.join(' · '), 'warn');
      this.skipped.clear();
      $('#learn-message', this.root).textContent = msg;
      followed = this.nextFollows;
      s.emit('action', { kind: 'learn-accept', res, named, label: g.label, sentAt, message: msg });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) msg = 'the labels changed since this round: here is the new one';
      else { toast(e.message, 'error'); return; }
    } finally {
      this.actions.busy = false;
      this.busy = false;
      $('#learn-accept', this.root).disabled = false;
    }
    if (followed) { this.group = null; return; } // the next proposal brings the fresh round
    $('#learn-message', this.root).textContent = msg;
    this.group = null;
    await this.load();
  }
}
