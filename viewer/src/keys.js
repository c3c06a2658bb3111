// Keyboard shortcuts. Each maps to the same function as its button; typing in a text box is
// left alone (except Escape there).

export const SHORTCUTS = [
  ['Enter / N', 'name the selection (focus the name box)'],
  ['Ctrl+Z', 'undo your last action'],
  ['Ctrl+Shift+Z / Ctrl+Y', 'redo'],
  ['L', 'lasso tool (or hold Ctrl while dragging)'],
  ['P', 'pan tool'],
  ['click', 'select a cluster; Shift adds, Alt subtracts'],
  ['E', 'exclude the marked items'],
  ['I', 'include the marked items again'],
  ['S', 'split the selection into sub-clusters'],
  ['Backspace', 'remove the labels of the selection'],
  ['R', 'rename the selection\'s label'],
  ['M', 'merge the selection\'s label into another'],
  ['D', 'remove (delete) the selection\'s label'],
  ['A', 'accept the top suggestion'],
  ['G', 'the learning loop: suggested groups, hard items, possible label errors'],
  ['Enter / A (Learn)', 'accept the suggested group minus the tiles marked "not this"'],
  ['N (Learn)', 'skip to the next suggested group'],
  ['V', 'review page: the Learn group shown, else the selection\'s label (its own items), else the model\'s first group or, when it is sure of none, its likeliest items for a label; a page of 48'],
  ['click (Review)', 'mark a tile as not this label; click again to unmark'],
  ['Enter (Review)', 'submit the page (then: the next label\'s page)'],
  ['N (Review)', 'the next label\'s page without submitting'],
  ['R (Review)', 'after a submit: another page of the same label'],
  ['Esc (Review)', 'close the review page'],
  [']', 'skip to the following proposal of what to name next (also in the empty name box)'],
  ['↑', 'cluster tree: step the selection up to its parent (the clusters it split from, as one selection)'],
  ['↓', 'cluster tree: back down the way ↑ came; else the children as separate groups, the largest selected'],
  ['B', 'cluster tree: add the sibling clusters (the rest of the parent), each its own group'],
  ['C', 'colour by cluster / by label'],
  ['U', 'show only unlabelled items'],
  ['T', 'thumbnails on / off'],
  ['Z', 'zoom to the selection (again: whole map)'],
  ['/', 'search by label or file name'],
  ['Esc', 'clear the selection / close'],
  ['?', 'this help'],
  ['H', 'history: your operations, what failed, undo from it'],
  ['F', 'photos: the detector\'s boxes on their photos (filter unnamed / low score)'],
  ['N / Delete / drag (Photo)', 'draw a missed box / delete the selected box / adjust a box by its edges'],
  ['Tab / Enter / Esc (Photo)', 'next box / name the selected box / cancel, deselect, back'],
  ['← / → (Photo)', 'the previous / next photo of the grid'],
  ['Shift+Q', 'sign out (asks first; here or everywhere)'],
];

export function bindKeys(handlers) {
  document.addEventListener('keydown', (ev) => {
    const t = ev.target;
    const typing = t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT' || t.isContentEditable);
    if (typing) return;
    if (document.querySelector('dialog[open]') && ev.key !== 'Escape' && !['ArrowLeft', 'ArrowRight'].includes(ev.key)) return;
    const k = ev.key;
    const ctrl = ev.ctrlKey || ev.metaKey;
    let fn = null;
    if (ctrl && (k === 'z' || k === 'Z')) fn = ev.shiftKey ? handlers.redo : handlers.undo;
    else if (ctrl && (k === 'y' || k === 'Y')) fn = handlers.redo;
    else if (ctrl || ev.altKey) return;
    else if (k === 'Q' && ev.shiftKey) fn = handlers.signOut; // with Shift: not one stray key away
    else if (handlers.learnActive && handlers.learnActive() && ['Enter', 'a', 'A', 'n', 'N'].includes(k)) {
      fn = k === 'Enter' || k.toLowerCase() === 'a' ? handlers.learnAccept : handlers.learnNext; // while a group is shown
    } else {
      fn = {
        Enter: handlers.name, n: handlers.name, l: handlers.lasso, p: handlers.pan, e: handlers.excludeMarked,
        i: handlers.includeMarked, s: handlers.split, Backspace: handlers.unlabel, Delete: handlers.unlabel,
        r: handlers.rename, m: handlers.merge, d: handlers.remove, a: handlers.accept, c: handlers.colour, g: handlers.learn, v: handlers.review,
        u: handlers.onlyUnlabelled, t: handlers.thumbnails, z: handlers.zoom, '/': handlers.search,
        Escape: handlers.escape, '?': handlers.help, ']': handlers.skipProposal, ArrowLeft: handlers.prev, ArrowRight: handlers.next,
        ArrowUp: handlers.treeUp, ArrowDown: handlers.treeDown, b: handlers.siblings, h: handlers.history, f: handlers.photos,
      }[k.length === 1 ? k.toLowerCase() : k];
    }
    if (fn) { ev.preventDefault(); fn(); }
  });
}
