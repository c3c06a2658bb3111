// The name box: type a name, pick from existing labels (with their sizes) and press Enter to
// name the whole selection minus its exclusions in one action.

import { $, el, fmt, toast } from './ui.js';

export class NameBox {
  constructor(store, actions, root) {
    this.store = store;
    this.actions = actions;
    this.input = $('#name-input', root);
    this.list = $('#name-options', root);
    this.active = -1;
    this.items = [];
    this.onSkip = null; // ] in the empty box (set by the next proposal)
    this.input.addEventListener('input', () => this.suggest());
    this.input.addEventListener('focus', () => this.suggest());
    this.input.addEventListener('blur', () => setTimeout(() => this.close(), 150));
    this.input.addEventListener('keydown', (ev) => this.key(ev));
    $('#name-go', root).addEventListener('click', () => this.submit());
    $('#name-form', root).addEventListener('submit', (ev) => ev.preventDefault());
  }

  focus(value = null) {
    if (value !== null) this.input.value = value;
    this.input.focus();
    this.input.select();
  }

  suggest() {
    const q = this.input.value.trim().toLocaleLowerCase();
    const labels = this.store.labels ? this.store.labels.list : [];
    const starts = [], contains = [];
    for (const l of labels) {
      const names = [l.name, ...(l.aliases || [])].map((x) => x.toLocaleLowerCase());
      if (!q || names.some((x) => x.startsWith(q))) starts.push(l);
      else if (names.some((x) => x.includes(q))) contains.push(l);
    }
    const byCount = (a, b) => b.count - a.count || a.name.localeCompare(b.name);
    this.items = [...starts.sort(byCount), ...contains.sort(byCount)].slice(0, 12);
    this.active = -1;
    this.list.replaceChildren(...this.items.map((l, k) => el('li', {
      class: 'option', 'data-k': String(k),
      onmousedown: (ev) => { ev.preventDefault(); this.input.value = l.name; this.submit(); },
    }, el('span', { text: l.name }), el('span', { class: 'count', text: fmt(l.count) }))));
    if (q && !labels.some((l) => l.name.toLocaleLowerCase() === q)) {
      this.list.append(el('li', { class: 'option new', text: `new label "${this.input.value.trim()}"` }));
    }
    this.list.hidden = this.list.childElementCount === 0;
  }

  close() { this.list.hidden = true; this.active = -1; }

  key(ev) {
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      if (!this.items.length) return;
      this.active = (this.active + (ev.key === 'ArrowDown' ? 1 : -1) + this.items.length) % this.items.length;
      [...this.list.children].forEach((c, k) => c.classList.toggle('active', k === this.active));
    } else if (ev.key === 'Tab' && this.items.length) {
      ev.preventDefault();
      this.input.value = this.items[Math.max(0, this.active)].name;
      this.suggest();
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      if (this.active >= 0) this.input.value = this.items[this.active].name;
      this.submit();
    } else if (ev.key === 'Escape') {
      this.close();
      this.input.blur();
    } else if (ev.key === ']' && !this.input.value && this.onSkip) {
      // the box is empty: ] goes on to the following proposal, as it does outside the box (an
      // offer focuses the box, and leaving it first would cost a key per skip)
      ev.preventDefault();
      this.onSkip();
    }
  }

  async submit() {
    const name = this.input.value.trim();
    if (!name) { toast('type a name first', 'error'); return; }
    this.close();
    const res = await this.actions.assign(name);
    if (res) { this.input.value = ''; this.input.blur(); }
  }
}
