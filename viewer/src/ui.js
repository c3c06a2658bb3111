// Small UI pieces: toasts, a prompt dialog and a confirm dialog (no window.prompt: those block
// the page and cannot be styled or tested well).

export function $(sel, root = document) { return root.querySelector(sel); }

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'text') e.textContent = v;
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

export function fmt(n) { return Number(n).toLocaleString('en-US'); }

let toastTimer = null;
export function toast(message, kind = 'info') {
  const t = $('#toast');
  t.textContent = message;
  t.className = `toast show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.className = 'toast'; }, kind === 'info' ? 2500 : 6000);
}

/** Ask for a text; resolves to the text or null. ``options`` feed the input's suggestions. */
export function promptDialog({ title, label, value = '', options = [], okText = 'OK' }) {
  return new Promise((resolve) => {
    const dlg = $('#prompt');
    $('#prompt-title', dlg).textContent = title;
    $('#prompt-label', dlg).textContent = label;
    const input = $('#prompt-input', dlg);
    input.value = value;
    const list = $('#prompt-options', dlg);
    list.replaceChildren(...options.map((o) => el('option', { value: o })));
    $('#prompt-ok', dlg).textContent = okText;
    const done = (v) => { dlg.close(); dlg.onclose = null; resolve(v); };
    $('#prompt-form', dlg).onsubmit = (e) => { e.preventDefault(); done(input.value.trim() || null); };
    $('#prompt-cancel', dlg).onclick = () => done(null);
    dlg.onclose = () => resolve(null);
    dlg.showModal();
    input.select();
  });
}

export function confirmDialog({ title, message, okText = 'OK' }) {
  return new Promise((resolve) => {
    const dlg = $('#confirm');
    $('#confirm-title', dlg).textContent = title;
    $('#confirm-message', dlg).textContent = message;
    $('#confirm-ok', dlg).textContent = okText;
    const done = (v) => { dlg.onclose = null; dlg.close(); resolve(v); };
    $('#confirm-ok', dlg).onclick = () => done(true);
    $('#confirm-cancel', dlg).onclick = () => done(false);
    dlg.onclose = () => resolve(false);
    dlg.showModal();
    $('#confirm-ok', dlg).focus();
  });
}
