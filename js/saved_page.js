// The explorer saved as one HTML page (InfluenceExplorer.save_html, widgets/saved_page.py): the
// page holds the saved state (#iw-saved-state) and explorer.js as text (#iw-saved-module). This
// script imports that module as anywidget does (from a blob: URL) and runs its own render() with
// SavedModel in place of the kernel's model: a click reads the saved panel of that test point.

// Decodes a base64 PNG of the saved image table into the bytes the explorer's cards take.
function pngBytes(base64) {
  const text = atob(base64);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// anywidget's model interface (get, set, on, off, save_changes, send) over the saved state. What
// the explorer's Python side does when the front end saves a change is done here from the saved
// data: a new selection shows its saved panel; a new page or filter redraws the gallery.
class SavedModel {
  constructor(saved) {
    this.saved = saved;
    this.traits = { ...saved.traits };
    this.listeners = new Map(); // "change:NAME" -> Set of callbacks
    this.changed = new Set(); // names set since the last save_changes()
    this.images = new Map(); // png_ref -> bytes, decoded on first use
    this.showGallery();
  }

  get(name) {
    return this.traits[name];
  }

  // As anywidget's: the new value is seen at once, by get() and by "change:NAME" listeners.
  set(name, value) {
    if (this.traits[name] === value) return;
    this.changed.add(name);
    this.update({ [name]: value });
  }

  save_changes() {
    const changed = this.changed;
    this.changed = new Set();
    if (["page", "class_filter", "misclassified_only"].some((name) => changed.has(name))) {
      this.showGallery();
    }
    if (changed.has("selected")) this.showPanel();
  }

  // Messages to Python come only from Verify, Attack and Review, which are off in a saved page.
  send() {}

  on(events, callback) {
    for (const event of events.split(/\s+/).filter(Boolean)) {
      if (!this.listeners.has(event)) this.listeners.set(event, new Set());
      this.listeners.get(event).add(callback);
    }
  }

  off(events, callback) {
    for (const event of events.split(/\s+/).filter(Boolean)) this.listeners.get(event)?.delete(callback);
  }

  // Sets several traits, then tells each changed one's listeners once (a callback listening to
  // several of them is called once).
  update(values) {
    const callbacks = new Set();
    for (const [name, value] of Object.entries(values)) {
      if (this.traits[name] === value) continue;
      this.traits[name] = value;
      for (const callback of this.listeners.get(`change:${name}`) || []) callbacks.add(callback);
    }
    for (const callback of callbacks) callback(this);
  }

  // A saved card or training item as the explorer's Python side sends it: its image's bytes in
  // place of the reference, its tabular rows rebuilt from the shared table (SharedRows in
  // widgets/saved_page.py; d = (train value - test value) / SD, as display.py computes it).
  withData(item) {
    const out = { ...item };
    if (item.png_ref !== undefined) {
      if (!this.images.has(item.png_ref)) this.images.set(item.png_ref, pngBytes(this.saved.images[item.png_ref]));
      out.png = this.images.get(item.png_ref);
    }
    const rows = this.saved.rows;
    if (item.row_order) {
      const [values, z] = [rows.test[item.test_row], rows.test_z[item.test_row]];
      out.row = item.row_order.map((f) => [rows.names[f], values[f], z[f]]);
    }
    if (item.differences_order) {
      const [a, b] = [rows.train[item.train_row], rows.test[item.test_row]];
      out.differences = item.differences_order.map((f) => [rows.names[f], a[f], b[f], (a[f] - b[f]) / rows.sd[f]]);
    }
    return out;
  }

  // The gallery page as the explorer's Python side computes it: the saved test points of the
  // class filter (true label) and, if asked, only the misclassified ones; the page clamped.
  showGallery() {
    const classFilter = this.traits.class_filter;
    const wrongOnly = this.traits.misclassified_only;
    const shown = this.saved.points.filter(
      (point) => (classFilter < 0 || point.class_index === classFilter) && (!wrongOnly || point.wrong),
    );
    const size = this.traits.page_size;
    const nPages = Math.max(1, Math.ceil(shown.length / size));
    const page = Math.min(Math.max(this.traits.page, 0), nPages - 1);
    this.update({
      n_pages: nPages,
      n_shown: shown.length,
      page,
      gallery: shown.slice(page * size, (page + 1) * size).map((point) => this.withData(point)),
    });
  }

  showPanel() {
    const selected = this.traits.selected;
    const panel = selected === null ? undefined : this.saved.panels[String(selected)];
    if (panel === undefined) {
      this.update({ panel: {} });
      return;
    }
    this.update({
      panel: {
        ...panel,
        test: this.withData(panel.test),
        helpful: panel.helpful.map((item) => this.withData(item)),
        harmful: panel.harmful.map((item) => this.withData(item)),
      },
    });
  }
}

// The tabs that need Python: disabled, with a line under the tab bar (and their tooltips) that
// says why.
function turnOffNotebookTabs(el, saved) {
  for (const name of saved.notebook_tabs) {
    const button = el.querySelector(`.iw-tab-${name}`);
    if (!button) continue;
    button.disabled = true;
    button.title = saved.notebook_only;
  }
  const note = document.createElement("p");
  note.className = "iw-saved-note";
  note.textContent = saved.notebook_only;
  el.querySelector(".iw-tabs").after(note);
}

const saved = JSON.parse(document.getElementById("iw-saved-state").textContent);
const source = document.getElementById("iw-saved-module").textContent;
const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
const widget = (await import(url)).default;
URL.revokeObjectURL(url);
const root = document.getElementById("iw-saved-root");
root.replaceChildren();
widget.render({ model: new SavedModel(saved), el: root });
turnOffNotebookTabs(root, saved);
