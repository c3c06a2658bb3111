// Start-up: sign in, fetch the map (binary) and its labels, draw the first frame, then wire the
// panels. Exposes ``window.__corral`` for tests and the benchmark.

import { getJSON, getBuffer, signIn, ApiError } from './api.js';
import { parseContainer } from './container.js';
import { Store } from './store.js';
import { MapView } from './view.js';
import { Actions } from './actions.js';
import { ClusterPanel } from './panel.js';
import { NameBox } from './naming.js';
import { LabelsPanel } from './labels.js';
import { Search } from './search.js';
import { Sync } from './sync.js';
import { JobsPanel } from './jobs.js';
import { Suggestions } from './suggest.js';
import { LearnPanel } from './learn.js';
import { NextProposal } from './next.js';
import { ReviewPage } from './review.js';
import { Climb } from './climb.js';
import { SignOut } from './signout.js';
import { askSignIn } from './signin.js';
import { HistoryPanel } from './history.js';
import { UsersDialog } from './admin.js';
import { PhotosView } from './photos.js';
import { bindKeys, SHORTCUTS } from './keys.js';
import { $, el, toast } from './ui.js';

const T0 = performance.now();
const params = new URLSearchParams(location.search);
const store = new Store();
const hooks = { store, timings: {}, ready: null };
window.__corral = hooks;

async function authenticate() {
  const token = params.get('token');
  if (token) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : '') + location.hash);
    await signIn(token);
  }
  // who we are and which maps there are, in one round trip
  try {
    return await Promise.all([getJSON('/api/me'), getJSON('/api/maps')]);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      await askSignIn();
      return Promise.all([getJSON('/api/me'), getJSON('/api/maps')]);
    }
    throw e;
  }
}

async function loadMap(name, etag) {
  const base = `/api/maps/${encodeURIComponent(name)}`;
  const t = performance.now();
  // metadata, points and labels in parallel: the points URL carries the version, so it is cacheable
  const [meta, pbuf, lbuf] = await Promise.all([getJSON(base), getBuffer(`${base}/points.bin?v=${etag}`), getBuffer(`${base}/labels.bin`)]);
  hooks.timings.fetchMs = performance.now() - t;
  hooks.timings.bytes = pbuf.byteLength + lbuf.byteLength;
  const t2 = performance.now();
  const points = parseContainer(pbuf);
  const labels = parseContainer(lbuf);
  if (points.header.etag !== meta.etag) return loadMap(name, meta.etag); // rebuilt meanwhile
  store.setMap(meta, points, labels);
  hooks.timings.parseMs = performance.now() - t2;
  return meta;
}

async function main() {
  hooks.timings.scriptStartMs = T0;
  const [me, maps] = await authenticate();
  hooks.timings.signedInMs = performance.now();
  store.user = me.user;
  document.body.classList.toggle('read-only', !store.canWrite);
  $('#user').textContent = `${store.user.name} (${store.user.role})`;
  hooks.signOut = new SignOut($('#sign-out'), store.user);
  if (store.user.can.includes('admin')) hooks.users = new UsersDialog(store, $('#users-dialog'), $('#users-button'));
  const wanted = params.get('map') || maps.default;
  fillMapPicker(maps, wanted);
  const entry = maps.maps.find((m) => m.name === wanted);
  if (!wanted || !entry) { showEmpty(wanted); return; }
  await loadMap(wanted, entry.etag);
  const view = new MapView(store, {
    canvas: $('#gl'), overlay: $('#overlay'), hud: $('#hud'), renderMode: params.get('render') || 'auto',
  });
  hooks.view = view;
  view.setMap();
  const firstMs = view.render({ sync: true });
  hooks.timings.firstDrawMs = firstMs;
  hooks.timings.firstFrameAt = performance.now();
  hooks.timings.sinceScriptMs = performance.now() - T0;
  const r = view.renderer;
  $('#render-mode').textContent = `${r.mode === 'cpu' ? 'CPU raster' : 'GPU points'}${r.software ? ' · software WebGL' : ''}`;
  $('#render-mode').title = r.gpuName;
  wire(view);
  return true;
}

function wire(view) {
  const actions = new Actions(store);
  const panel = new ClusterPanel(store, actions, view, $('#selection-panel'));
  const names = new NameBox(store, actions, $('#selection-panel'));
  const labels = new LabelsPanel(store, actions, $('#labels-panel'));
  const search = new Search(store, view, $('#search'));
  const sugg = new Suggestions(store, actions, $('#suggestions'));
  const sync = new Sync(store, actions);
  const learn = new LearnPanel(store, actions, $('#learn-panel'));
  const proposal = new NextProposal(store, { learn, names, root: $('#selection-panel') });
  learn.nextFollows = true;
  const review = new ReviewPage(store, actions, { learn, root: $('#review') });
  labels.onReview = (name) => review.openMembers(name);
  learn.onLikely = (label) => review.openLikely(label);
  // V: the review page of the group shown in Learn, else of the selection's label (its own
  // items), else of the model's first suggested group (its likeliest items when it has none)
  const openReview = () => {
    if (learn.active) return review.openSuggested(learn.group.label);
    const name = labels.selectionLabel();
    return name ? review.openMembers(name) : review.openSuggested();
  };
  new JobsPanel(store, $('#jobs-panel'), { onMapDone: () => toast('the map is rebuilt: reload the page to see it') });
  const climb = new Climb(store, view, $('#sel-level'));
  climb.load(); // after the first frame: the keys say "still loading" until it is in
  // boxes revised in the photos view change the map (crops leave it or join it): reload it on close
  const photos = new PhotosView(store, $('#photos'), { onChanged: () => location.reload() });
  hooks.photos = photos;
  $('#photos-button').onclick = () => photos.show();
  $('#lightbox-photo').onclick = () => { const id = $('#lightbox').dataset.item; $('#lightbox').close(); if (id) photos.openPhoto(id); };
  const historyPanel = new HistoryPanel(store, actions, $('#history-panel'), $('#history-button'));
  Object.assign(hooks, { actions, panel, names, labels, sync, search, learn, proposal, review, climb, history: historyPanel });
  labels.render();

  store.on('selection', () => view.invalidateColors());
  store.on('labels', () => view.invalidateColors());
  const setTool = (tool) => {
    store.tool = tool;
    $('#tool-pan').classList.toggle('on', tool === 'pan');
    $('#tool-lasso').classList.toggle('on', tool === 'lasso');
    $('#stage').classList.toggle('lasso', tool === 'lasso');
  };
  const setMode = (mode) => {
    store.mode = mode;
    $('#color-mode').textContent = mode === 'cluster' ? 'colour: clusters' : 'colour: labels';
    view.invalidateColors();
  };
  const setOnlyUnlabelled = (on) => {
    store.onlyUnlabelled = on;
    $('#only-unlabelled').checked = on;
    view.invalidateColors();
  };
  $('#tool-pan').onclick = () => setTool('pan');
  $('#tool-lasso').onclick = () => setTool('lasso');
  $('#color-mode').onclick = () => setMode(store.mode === 'cluster' ? 'label' : 'cluster');
  $('#only-unlabelled').onchange = (e) => setOnlyUnlabelled(e.target.checked);
  $('#undo').onclick = () => actions.undo();
  $('#redo').onclick = () => actions.redo();
  $('#fit').onclick = () => { view.camera.fit(); view.requestRender(); };
  $('#learn-button').onclick = () => learn.toggle();
  $('#learn-review').onclick = () => { if (learn.group) review.openSuggested(learn.group.label); };
  $('#help-button').onclick = () => $('#help').showModal();
  $('#lightbox-prev').onclick = () => panel.step(-1);
  $('#lightbox-next').onclick = () => panel.step(1);
  $('#help-list').replaceChildren(...SHORTCUTS.map(([k, v]) => el('li', {}, el('kbd', { text: k }), ` ${v}`)));
  let zoomed = false;
  bindKeys({
    undo: () => actions.undo(),
    redo: () => actions.redo(),
    name: () => names.focus(),
    lasso: () => setTool('lasso'),
    pan: () => setTool('pan'),
    excludeMarked: () => panel.excludeMarked(),
    includeMarked: () => panel.includeMarked(),
    split: () => panel.split(),
    unlabel: () => actions.unlabel(),
    rename: () => labels.rename(),
    merge: () => labels.merge(),
    remove: () => labels.remove(),
    accept: () => sugg.acceptTop(),
    learn: () => learn.toggle(),
    photos: () => photos.show(),
    history: () => historyPanel.toggle(),
    learnActive: () => learn.active,
    learnAccept: () => learn.accept(),
    learnNext: () => learn.next(),
    review: () => openReview(),
    skipProposal: () => proposal.skip(),
    treeUp: () => climb.up(),
    treeDown: () => climb.down(),
    siblings: () => climb.siblings(),
    colour: () => setMode(store.mode === 'cluster' ? 'label' : 'cluster'),
    onlyUnlabelled: () => setOnlyUnlabelled(!store.onlyUnlabelled),
    thumbnails: () => { store.thumbnails = !store.thumbnails; view.requestRender(); },
    zoom: () => { if (zoomed) { view.camera.fit(); view.requestRender(); } else view.zoomToSelection(); zoomed = !zoomed; },
    search: () => search.focus(),
    escape: () => {
      const open = document.querySelector('dialog[open]');
      if (open) { open.close(); return; }
      store.select([], 'replace');
    },
    help: () => $('#help').showModal(),
    signOut: () => hooks.signOut.ask(),
    prev: () => { if ($('#lightbox').open) panel.step(-1); },
    next: () => { if ($('#lightbox').open) panel.step(1); },
  });
  sync.start();
}

function fillMapPicker(maps, current) {
  const pick = $('#map-picker');
  pick.replaceChildren(...maps.maps.map((m) => el('option', { value: m.name, selected: m.name === current, text: `${m.name}${m.n ? ` (${m.n.toLocaleString('en-US')})` : ''}` })));
  pick.onchange = () => { params.set('map', pick.value); location.search = params.toString(); };
  pick.hidden = maps.maps.length < 2;
}

function showEmpty(wanted) {
  $('#sel-count').textContent = '';
  $('#stage').append(el('div', { class: 'empty-map' },
    el('h2', { text: wanted ? `No map "${wanted}"` : 'No map yet' }),
    el('p', { text: 'Embed a folder, then build the map (Jobs panel on the right, or `corral embed` and `corral map`).' })));
  new JobsPanel(store, $('#jobs-panel'), { onMapDone: () => location.reload() });
}

hooks.ready = main().catch((e) => {
  console.error(e);
  toast(e.message || String(e), 'error');
  hooks.error = e.message || String(e);
  throw e;
});

// Programmatic control for tests and the benchmark: each call draws one frame synchronously.
hooks.frame = () => hooks.view.render({ sync: true });
hooks.panBy = (dx, dy) => { hooks.view.camera.panBy(dx, dy); return hooks.view.render({ sync: true }); };
hooks.zoomAt = (x, y, f) => { hooks.view.camera.zoomAt(x, y, f); return hooks.view.render({ sync: true }); };
/** One frame after a camera change, measured like a user sees it: change, next animation frame,
 * draw, wait for the GPU. Resolves to the milliseconds it took. */
hooks.step = (dx, dy, f = 1) => new Promise((resolve) => {
  const t0 = performance.now();
  const v = hooks.view;
  v.camera.panBy(dx, dy);
  if (f !== 1) v.camera.zoomAt(v.camera.width / 2, v.camera.height / 2, f);
  requestAnimationFrame(() => { v.render({ sync: true }); resolve(performance.now() - t0); });
});
hooks.selectedCount = () => (store.selection ? store.selection.count : 0);
