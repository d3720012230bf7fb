// InfluenceExplorer front end (anywidget ES module). Plain DOM, no framework.
// Everything that comes from data is inserted with textContent, never as HTML.

// What a score is; what helpful and harmful mean for the selected point is the panel's
// `explanation` (it differs for a misclassified point: see widgets/explorer.py, explanation()).
const HELP =
  "Score = predicted change of this test point's loss (for its true label) if the training " +
  "point were removed (Koh & Liang 2017).";

const VERIFY_HELP =
  "Retrains the model without each of the training points of largest |influence| on this test " +
  "point, one at a time (warm-started from the trained model, as in Koh & Liang's Fig 2), and " +
  "plots the actual change of the test loss against the predicted one. Points on the dashed " +
  "line y = x mean influence predicted retraining exactly.";

// The Verify tab's other check: LDS(z) of the selected point (widgets/verify_lds.py).
const LDS_HELP =
  "The linear datamodeling score (LDS; Park et al. 2023) of this test point: retrains the model " +
  "from scratch on random subsets, each keeping half of the training set, and measures each " +
  "retrained model's margin log p(y|x) \u2212 log(1 \u2212 p(y|x)) on this point (its loss, for " +
  "labels that are not classes). What the scores predict for a subset is the sum of the scores of " +
  "the points it keeps. LDS = Spearman's rank correlation of the two over the subsets: 1 = the scores " +
  "order the subsets as retraining does, 0 = chance. Every subset is trained twice, with different " +
  "seeds: the two runs' correlation is the noise floor, how well one retraining predicts another " +
  "(where retraining is noisy, scores can land above it). This is LDS(z) for the point on screen; " +
  "the published LDS is its mean over many test points (iw.lds). Few subsets give a rough value " +
  "(TRAK uses 100); Run LDS again goes on from the subsets already retrained for this point. Your " +
  "model and data stay unchanged: every retrain trains a new copy.";

// The Attack tab's help for each kind of data (`attack_limits.kind`): what it does and what to
// look for, then the method, the Python names and the paper's comparison in a "details" fold.
const ATTACK_HELP = {
  image: {
    does:
      "Changes some training images a little, retraining the model after every change, to make " +
      "it get this test image wrong.",
    look:
      "Look for whether the prediction flips, and how little the poisoned training images had to " +
      "change: they should still look like what their label says.",
    details: [
      "Each step moves every pixel of the chosen training images by the step size, in the " +
        "direction that influence says raises this test image's loss (I_pert,loss, Koh & Liang " +
        "2017, Sec 5.2), keeps it within eps of its original value and inside the pixel range, " +
        "and retrains. The images chosen are those whose pixels influence this test image most " +
        "(the largest L1 norm of I_pert,loss). eps and the step are in levels of an 8-bit image " +
        "(255 = black to white).",
      "It stops once the prediction has flipped with the new class ahead of the true one by the " +
        "stop margin (0: at the first flip), when no pixel can move further, or after the " +
        "iterations. Step auto is eps / 12.5. Find smallest eps tries growing eps, then bisects.",
      "In Python: iw.craft_attack(inf, x, y, n_poison=..., eps=iw.eight_bit_levels(...), " +
        "stop_margin=...) and iw.smallest_flipping_eps do the same; ex.attack_result holds the " +
        "result on screen. Your model and data stay unchanged: the attack works on copies.",
      "The paper flipped 57-100% of its test images with changes of half a level, on Inception " +
        "features of 299x299x3 images. One step changes the test loss by about eps times the L1 " +
        "norm of the input gradient, which grows with the number of pixels, so small images like " +
        "these need a far larger eps.",
    ],
  },
  table: {
    does:
      "Changes some training rows a little, retraining the model after every change, to make " +
      "it get this test row wrong.",
    look:
      "Look for whether the prediction flips, and which measurements of which training rows had " +
      "to change, and by how much (in the data set's own units).",
    details: [
      "Each step moves every feature of the chosen training rows by the step size, in the " +
        "direction that influence says raises this test row's loss (I_pert,loss, Koh & Liang " +
        "2017, Sec 5.2), keeps it within eps of its original value and inside the range the " +
        "training set spans (a measurement never leaves the values seen), and retrains. " +
        "The rows chosen are those whose features influence this test row most (the largest L1 " +
        "norm of I_pert,loss).",
      "eps and the step are in the model's input units: when the model reads standardised " +
        "features (unit SD), 0.5 moves a feature by at most half its standard deviation. It stops " +
        "once the prediction has flipped with the new class ahead of the true one by the stop " +
        "margin (0: at the first flip), when no feature can move further, or after the " +
        "iterations. Step auto is eps / 12.5. Find smallest eps tries growing eps, then bisects.",
      "In Python: iw.craft_attack(inf, x, y, n_poison=..., eps=..., stop_margin=..., " +
        "input_range=(X.amin(0), X.amax(0))) and iw.smallest_flipping_eps do the same; " +
        "ex.attack_result holds the result on screen. Your model and data stay unchanged: the " +
        "attack works on copies.",
    ],
  },
};

// The help above the Attack tab's controls: two sentences, and the rest folded.
function attackHelp() {
  const el = h("div", "iw-help iw-attack-help");
  const does = h("p", "iw-attack-does");
  const look = h("p", "iw-attack-look");
  const details = h("details", "iw-attack-details");
  const body = h("div", "iw-attack-details-body");
  details.append(h("summary", "", "How it works"), body);
  el.append(does, look, details);
  let shown = null;
  return {
    el,
    show(kind) {
      const help = ATTACK_HELP[kind] || ATTACK_HELP.table;
      if (help === shown) return;
      shown = help;
      does.textContent = help.does;
      look.textContent = help.look;
      body.replaceChildren(...help.details.map((text) => h("p", "", text)));
    },
  };
}

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

// Values of data: at most 4 significant digits, trailing zeros dropped ("886", "0.07871",
// "1.5"); e-notation below 1e-3 and from 1e5 on ("2.35e-4").
function fmt(x) {
  const a = Math.abs(x);
  if (a === 0) return "0";
  return a < 1e-3 || a >= 1e5 ? x.toExponential(2) : String(Number(x.toPrecision(4)));
}

const SUPERSCRIPT = { "-": "\u207b", 0: "\u2070", 1: "\u00b9", 2: "\u00b2", 3: "\u00b3", 4: "\u2074",
  5: "\u2075", 6: "\u2076", 7: "\u2077", 8: "\u2078", 9: "\u2079" };

// One notation for scores shown together: a power of ten stated once (" (×10⁻³)", when the
// largest |score| is below 0.01 or from 1000 on) and the same decimals for every score, three
// significant digits for the largest. Returns { unit, format(score), tick(value) }.
function fmtScores(scores) {
  const max = Math.max(0, ...scores.map(Math.abs));
  const e = max > 0 ? Math.floor(Math.log10(max)) : 0;
  const power = e < -2 || e > 2 ? e : 0;
  const scale = 10 ** power;
  const decimals = Math.max(0, 2 - (e - power));
  const sign = (v) => (v > 0 ? "+" : "");
  return {
    unit: power ? ` (\u00d710${String(power).replace(/./g, (c) => SUPERSCRIPT[c])})` : "",
    format: (s) => sign(s) + (s / scale).toFixed(decimals),
    tick: (v) => sign(v) + String(Number((v / scale).toPrecision(6))),
  };
}

// A difference in SDs, signed, one decimal: "+2.1".
function fmtSd(d) {
  return (d > 0 ? "+" : "") + d.toFixed(1);
}

// Feature names are shown whole where they fit, else cut with "…" and whole in the tooltip.
function featureName(tag, name) {
  const cell = h(tag, "iw-fname", name);
  cell.title = name;
  return cell;
}

// A table of feature rows [name, ...cells]: a header row `head` of [text, tooltip] pairs.
function featureTable(head, rows) {
  const table = h("table", "iw-features");
  const top = h("tr");
  for (const [text, tip] of head) {
    const th = h("th", "", text);
    th.title = tip;
    top.appendChild(th);
  }
  table.appendChild(h("thead")).appendChild(top);
  const body = table.appendChild(h("tbody"));
  for (const [name, ...cells] of rows) {
    const tr = body.appendChild(h("tr"));
    tr.appendChild(featureName("th", name)).scope = "row";
    for (const cell of cells) tr.appendChild(h("td", "iw-num", cell));
  }
  return table;
}

const SHOWN_FEATURES = 5;

// The first SHOWN_FEATURES rows and, when there are more, all of them in a <details>.
function featureTables(head, rows, order) {
  const nodes = [featureTable(head, rows.slice(0, SHOWN_FEATURES))];
  if (rows.length > SHOWN_FEATURES) {
    const more = h("details", "iw-more");
    more.appendChild(h("summary", "", `all ${rows.length} features, ${order}`));
    more.appendChild(featureTable(head, rows));
    nodes.push(more);
  }
  return nodes;
}

const SD_TIP = "standard deviations of the feature over the training set";

// A tabular point alone (the selected test point): its features farthest from the training
// mean first. `row` is [[name, value, z], ...], z in training-set SDs (display.py, item()).
function rowView(row) {
  const head = [["feature", ""], ["value", ""], ["vs mean", `(value - training mean) in ${SD_TIP}`]];
  const rows = row.map(([name, value, z]) => [name, fmt(value), fmtSd(z)]);
  const box = h("div", "iw-row");
  box.appendChild(h("div", "iw-note", "Features farthest from the training mean first"));
  box.append(...featureTables(head, rows, "farthest from the mean first"));
  return box;
}

// A tabular point in the gallery: its two features farthest from the training mean.
function rowSummary(row) {
  const box = h("div", "iw-row-summary");
  box.title = "the two features farthest from the training mean";
  for (const [name, value] of row.slice(0, 2)) {
    const line = box.appendChild(h("div", "iw-row-line"));
    line.append(featureName("span", name), h("span", "iw-num", fmt(value)));
  }
  return box;
}

// A view of one data point: a thumbnail from PNG bytes, a snippet of text, or its features
// (`compact`: the gallery's two-line summary).
function pointView(item, urls, compact = false) {
  const box = h("div", "iw-point");
  if (item.png) {
    box.appendChild(pngImage(item.png, "iw-thumb", "", urls));
  } else if (item.text !== undefined) {
    box.appendChild(h("div", "iw-text", item.text));
  } else if (item.row) {
    box.appendChild(compact ? rowSummary(item.row) : rowView(item.row));
  }
  return box;
}

// A training point beside the test point: the features where they differ most first.
// `differences` is [[name, train value, test value, d], ...], d in training-set SDs.
function comparisonView(differences) {
  const head = [
    ["feature", ""],
    ["train", "this training point"],
    ["test", "the selected test point"],
    ["\u0394 SD", `(train - test) in ${SD_TIP}`],
  ];
  const rows = differences.map(([name, a, b, d]) => [name, fmt(a), fmt(b), fmtSd(d)]);
  const box = h("div", "iw-compare");
  box.append(...featureTables(head, rows, "most different first"));
  return box;
}

// Nice tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi], about 4 of them.
function ticks(lo, hi) {
  const raw = (hi - lo) / 4 || 1;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
  const values = [];
  for (let t = Math.floor(lo / step); t <= Math.ceil(hi / step); t++) values.push(t * step);
  return values;
}

// Where value v lies on an axis from lo to hi, in percent of its width.
function axisPercent(v, lo, hi) {
  return ((v - lo) / (hi - lo || 1)) * 100;
}

// A track of the chart (the bars' column): its zero line, and the bar of `it` if given.
function barTrack(zero, it, place, scale) {
  const track = h("div", "iw-bar-track");
  if (it) {
    const end = place(it.score);
    const bar = track.appendChild(h("div", `iw-bar ${it.score >= 0 ? "iw-bar-helpful" : "iw-bar-harmful"}`));
    bar.style.left = `${Math.min(zero, end)}%`;
    bar.style.width = `${Math.abs(end - zero)}%`;
    bar.dataset.barIndex = String(it.index);
    track.title = `train #${it.index}, label ${it.label}: ${scale.format(it.score)}${scale.unit}`;
  }
  track.appendChild(h("div", "iw-bar-zero")).style.left = `${zero}%`;
  return track;
}

// One bar per training point, in the order of the cards below: the most helpful first (to the
// right of zero), then the most harmful first (to the left), each labelled with its training
// index; an x axis with ticks in the scores' notation `scale` (fmtScores). A grid of two columns
// (labels, tracks) laid out in percent of the pane's width: its text keeps its size at any width.
function barChart(helpful, harmful, scale, axisTitle = "change of test loss if removed") {
  const scores = [...helpful, ...harmful].map((it) => it.score);
  const values = ticks(Math.min(0, ...scores), Math.max(0, ...scores));
  const [lo, hi] = [values[0], values[values.length - 1]];
  const place = (v) => axisPercent(v, lo, hi);
  const zero = place(0);
  const chart = h("div", "iw-bars");
  chart.setAttribute("role", "img");
  chart.setAttribute("aria-label", "Score of each training point shown below, in the same order");
  const sides = h("div", "iw-bar-sides");
  sides.append(h("span", "iw-harmful-label", "\u2190 harmful"), h("span", "iw-helpful-label", "helpful \u2192"));
  chart.append(h("span"), sides);
  const row = (it) => chart.append(h("span", "iw-bar-label", `#${it.index}`), barTrack(zero, it, place, scale));
  helpful.forEach(row);
  chart.append(h("span", "iw-bar-gap"), barTrack(zero, null, place, scale)); // between the lists
  chart.lastChild.classList.add("iw-bar-gap");
  harmful.forEach(row);
  const axis = h("div", "iw-bar-axis");
  values.forEach((v, i) => {
    const tick = axis.appendChild(h("span", "iw-tick", scale.tick(v)));
    tick.style.left = `${place(v)}%`;
    if (i === 0) tick.classList.add("iw-tick-first");
    if (i === values.length - 1) tick.classList.add("iw-tick-last");
  });
  chart.append(h("span"), axis, h("span"), h("div", "iw-axis-title", `${axisTitle}${scale.unit}`));
  return chart;
}

const CLICK_HINT = "Click a test point to see which training points helped and hurt it.";
const SCORE_WHAT = "predicted change of the test loss if this point were removed";
const FAILED_HINT =
  "No influence can be shown: the precomputation failed. The message above says why and what to do.";

// Frees the object URLs of thumbnails whose images are being redrawn.
function revoke(urls) {
  urls.splice(0).forEach((u) => URL.revokeObjectURL(u));
}

function pngImage(bytes, className, alt, urls) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
  urls.push(url);
  const img = h("img", className);
  img.src = url;
  img.alt = alt;
  return img;
}

// Each pane below returns { el, listen: { "change:a change:b": update, ... }, dispose? }: render()
// subscribes every update to its model events and calls it once to draw the first state.

// ----- the header: precomputation status and errors, class filter and paging -----------------
function headerPane(model, root) {
  const el = h("div", "iw-header");
  const status = h("div", "iw-status");
  const progress = h("div", "iw-progress");
  const progressBar = progress.appendChild(h("div", "iw-progress-bar"));
  const error = h("div", "iw-error");
  const notice = h("div", "iw-notice");
  const controls = galleryControls(model, root);
  el.append(status, progress, error, notice, controls.el);

  function renderStatus() {
    const s = model.get("status");
    root.dataset.status = s;
    status.textContent = model.get("message") || s;
    progress.style.display = s === "fitting" || s === "starting" ? "block" : "none";
    progressBar.style.width = `${Math.round(100 * model.get("progress"))}%`;
    const err = model.get("error");
    error.textContent = err;
    error.style.display = err ? "block" : "none";
    const warning = model.get("notice");
    notice.textContent = warning;
    notice.style.display = warning ? "block" : "none";
  }

  return {
    el,
    listen: {
      "change:status change:message change:error change:notice change:progress": renderStatus,
      "change:class_names change:class_filter change:misclassified_only change:labelled": controls.renderFilters,
      "change:page change:n_pages change:n_shown": controls.renderPaging,
    },
  };
}

// The gallery's class filter, "misclassified only" and paging.
function galleryControls(model, root) {
  const el = h("div", "iw-controls");
  const classSelect = h("select", "iw-class-filter");
  const wrongLabel = h("label", "iw-wrong-filter");
  const wrongBox = h("input");
  wrongBox.type = "checkbox";
  wrongLabel.append(wrongBox, document.createTextNode(" misclassified only"));
  const prev = h("button", "iw-prev", "\u2039 prev");
  const next = h("button", "iw-next", "next \u203a");
  const pageInfo = h("span", "iw-page-info");
  el.append(classSelect, wrongLabel, prev, pageInfo, next);
  const setAndSave = (changes) => {
    for (const [trait, value] of Object.entries(changes)) model.set(trait, value);
    model.save_changes();
  };
  classSelect.addEventListener("change", () => setAndSave({ class_filter: Number(classSelect.value), page: 0 }));
  wrongBox.addEventListener("change", () => setAndSave({ misclassified_only: wrongBox.checked, page: 0 }));
  prev.addEventListener("click", () => setAndSave({ page: Math.max(0, model.get("page") - 1) }));
  next.addEventListener("click", () => setAndSave({ page: model.get("page") + 1 }));

  function renderFilters() {
    const labelled = model.get("labelled");
    // Without labels the classes are the predicted ones, and nothing can be misclassified.
    const all = h("option", "", labelled ? "all classes" : "all predicted classes");
    all.value = "-1";
    const options = model.get("class_names").map((name, c) => {
      const opt = h("option", "", name);
      opt.value = String(c);
      return opt;
    });
    classSelect.replaceChildren(all, ...options);
    classSelect.value = String(model.get("class_filter"));
    wrongBox.checked = model.get("misclassified_only");
    wrongLabel.style.display = labelled ? "" : "none";
    fitCardsToClassNames(root, model.get("class_names"));
  }

  function renderPaging() {
    const pages = model.get("n_pages");
    pageInfo.textContent = `page ${model.get("page") + 1} / ${pages} (${model.get("n_shown")} shown)`;
    prev.disabled = model.get("page") <= 0;
    next.disabled = model.get("page") >= pages - 1;
  }

  return { el, renderFilters, renderPaging };
}

// Image cards are as wide as their longest caption ("pred Ankle boot (100%)", 11 px text, about
// 6.2 px a character) and at least 84 px: a class name is never cut off. One width for all pages,
// so the column count does not change between them.
function fitCardsToClassNames(root, classNames) {
  if (root.dataset.kind !== "image") return;
  const longest = Math.max(0, ...classNames.map((name) => name.length));
  const width = Math.min(196, Math.max(84, Math.ceil((longest + 12) * 6.2) + 8));
  root.style.setProperty("--iw-cell-w", `${width}px`);
}

// The mark of a misclassified test point: a cross in the error colour (with a border on its card:
// explorer.css), not only a tint, so that it shows in light and dark themes alike.
function wrongMark(text = "\u2717") {
  const mark = h("span", "iw-wrong-mark", text);
  mark.title = "misclassified: the predicted class is not the true label";
  return mark;
}

// ----- the gallery of test points: a click selects one -----------------------------------------
// Every card has the same size (explorer.css), so a page's column count depends only on the width.
function galleryCard(model, item, urls) {
  const card = h("button", "iw-test-item");
  card.type = "button";
  card.dataset.testIndex = String(item.index);
  const caption = h("div", "iw-caption");
  const labelled = model.get("labelled");
  caption.appendChild(h("span", "iw-true", labelled ? `true ${item.label}` : "no label"));
  caption.appendChild(h("span", "iw-pred", `pred ${item.pred} (${Math.round(item.confidence * 100)}%)`));
  const view = pointView(item, urls, true);
  if (item.row) card.append(caption, view);
  else card.append(view, caption);
  card.title = `test #${item.index}: ${labelled ? `true ${item.label}` : "no label"}, predicted ${item.pred} (${Math.round(item.confidence * 100)}%)`;
  if (item.wrong) {
    card.classList.add("iw-wrong");
    card.appendChild(wrongMark());
    card.title += ": misclassified";
  }
  card.addEventListener("click", () => {
    model.set("selected", item.index);
    model.save_changes();
  });
  return card;
}

function galleryPane(model) {
  const el = h("div", "iw-gallery");
  const urls = [];

  function markSelected() {
    const selected = model.get("selected");
    for (const card of el.querySelectorAll(".iw-test-item")) {
      card.classList.toggle("iw-selected", Number(card.dataset.testIndex) === selected);
    }
  }

  function renderGallery() {
    el.replaceChildren();
    revoke(urls);
    for (const item of model.get("gallery")) el.appendChild(galleryCard(model, item, urls));
    markSelected();
  }

  return {
    el,
    listen: {
      "change:gallery change:page change:n_pages change:n_shown": renderGallery,
      "change:selected": markSelected,
    },
    dispose: () => revoke(urls),
  };
}

// ----- the tab bar: shows one of the Influence, Verify, Attack and Review panes ---------------
function tabsPane(model, panes) {
  const el = h("div", "iw-tabs");
  const buttons = {};
  for (const [name, label] of [["influence", "Influence"], ["verify", "Verify"], ["attack", "Attack"], ["review", "Review"]]) {
    const b = h("button", `iw-tab iw-tab-${name}`, label);
    b.type = "button";
    b.dataset.tab = name;
    b.addEventListener("click", () => {
      model.set("tab", name);
      model.save_changes();
    });
    buttons[name] = b;
    el.appendChild(b);
  }

  function renderTab() {
    const tab = model.get("tab");
    for (const [name, b] of Object.entries(buttons)) b.classList.toggle("iw-active", name === tab);
    for (const [name, pane] of Object.entries(panes)) pane.style.display = name === tab ? "" : "none";
  }

  return { el, listen: { "change:tab": renderTab } };
}

// ----- Influence: the selected test point, its most helpful and most harmful training points ---
// `note`: why this point scores against what its label suggests (the panel's notes), or null.
// `scoreWhat`: what the score is, for its tooltip (the method's, when it is not an influence function).
function trainCard(item, scale, urls, note, scoreWhat = SCORE_WHAT) {
  const card = h("div", "iw-train-item");
  card.dataset.trainIndex = String(item.index);
  const caption = h("div", "iw-caption");
  caption.append(h("span", "iw-train-index", `train #${item.index}`), h("span", "iw-train-label", `label ${item.label}`));
  if (item.surprise && note) {
    card.classList.add("iw-surprise");
    const mark = item.score < 0 ? "\u2020 same label" : "\u2020 other label";
    caption.appendChild(h("span", "iw-surprise-mark", mark)).title = note;
  }
  const score = h("div", "iw-score", scale.format(item.score));
  score.title = `${scoreWhat}: ${scale.format(item.score)}${scale.unit}`;
  if (item.differences) {
    const head = h("div", "iw-train-head");
    head.append(caption, score);
    card.append(head, comparisonView(item.differences));
  } else {
    card.append(pointView(item, urls), caption, score);
  }
  return card;
}

// A list of training points under its heading; `note` (the panel's notes, or undefined): one
// line on why the points marked in it score against what their label suggests.
function trainList(title, items, cls, scale, urls, note, scoreWhat = SCORE_WHAT) {
  const section = h("div", `iw-section ${cls}`);
  const heading = h("h4", "", title);
  if (scale.unit) heading.appendChild(h("span", "iw-unit", `scores${scale.unit}`));
  section.appendChild(heading);
  if (note) section.appendChild(h("p", "iw-surprise-note", `\u2020 ${note}`));
  const list = h("div", "iw-train-list");
  for (const item of items) list.appendChild(trainCard(item, scale, urls, note, scoreWhat));
  section.appendChild(list);
  return section;
}

const TABULAR_NOTE =
  "Each card shows the features where the training point differs most from the test point, in " +
  "standard deviations (SD) of the feature over the training set; all features on demand.";

function influencePane(model) {
  const el = h("div", "iw-panel");
  const urls = [];
  const hasPanel = () => {
    const p = model.get("panel");
    return Boolean(p) && p.test_index !== undefined;
  };
  const failed = () => model.get("status") === "error";

  function renderPanel() {
    el.classList.remove("iw-busy");
    el.replaceChildren();
    revoke(urls);
    if (!hasPanel()) {
      el.appendChild(h("div", "iw-hint", failed() ? FAILED_HINT : CLICK_HINT));
      return;
    }
    const p = model.get("panel");
    const scale = fmtScores([...p.helpful, ...p.harmful].map((it) => it.score));
    const head = h("div", "iw-panel-head");
    const info = h("div", "iw-panel-info");
    info.appendChild(h("div", "iw-title", `Test #${p.test_index}`));
    if (model.get("methods").length > 1) info.appendChild(h("div", "iw-panel-method", `scored by ${p.method}`));
    const labelled = model.get("labelled");
    info.appendChild(h("div", "", labelled ? `true label ${p.label}` : "no label given"));
    info.appendChild(h("div", "", `predicted ${p.pred} (${Math.round(p.confidence * 100)}%)`));
    if (!p.correct) info.appendChild(wrongMark("\u2717 misclassified"));
    head.append(pointView(p.test, urls), info);
    el.appendChild(head);
    el.appendChild(h("p", `iw-explanation ${p.correct ? "iw-correct" : "iw-misclassified"}`, p.explanation));
    const help = p.score_help || HELP;
    el.appendChild(h("p", "iw-help", labelled ? help : help.replace("its true label", "its predicted class")));
    el.appendChild(barChart(p.helpful, p.harmful, scale, p.score_axis || undefined));
    if (p.test.row) el.appendChild(h("p", "iw-help", TABULAR_NOTE));
    const notes = p.notes || {};
    const what = p.score_axis ? `${p.score_axis} (> 0: helpful)` : SCORE_WHAT;
    el.appendChild(trainList("Most helpful first", p.helpful, "iw-helpful", scale, urls, notes.helpful, what));
    el.appendChild(trainList("Most harmful first", p.harmful, "iw-harmful", scale, urls, notes.harmful, what));
  }

  // Busy while the selected point's panel is on its way; never after a failed precomputation.
  function markBusy() {
    if (!hasPanel()) {
      renderPanel();
    }
    const selected = model.get("selected");
    const waiting = selected !== null && model.get("panel").test_index !== selected;
    el.classList.toggle("iw-busy", waiting && !failed());
  }

  return {
    el,
    listen: {
      "change:panel": renderPanel,
      "change:selected change:status": markBusy,
      "change:influence_view": () => {
        el.style.display = model.get("influence_view") === "compare" ? "none" : "";
      },
    },
    dispose: () => revoke(urls),
  };
}

// ----- several attribution methods: the switch, and Compare (widgets/method_switch.py) ---------
// One option per method of the `methods` trait; a method still being prepared (or failed) is
// listed but cannot be chosen, with its state in words.
function methodOptions(select, methods, chosen) {
  select.replaceChildren(
    ...methods.map((m) => {
      const state = m.state === "ready" ? "" : m.state === "error" ? " (failed)" : ` (${m.state === "waiting" ? "waiting" : `preparing ${Math.round(100 * m.progress)}%`})`;
      const opt = h("option", "", `${m.name}${state}`);
      opt.value = m.name;
      opt.disabled = m.state !== "ready";
      opt.title = m.description || m.message;
      return opt;
    }),
  );
  select.value = chosen;
}

// Above the Influence pane: which method the panel shows (the `method` trait), and Panel or
// Compare (the `influence_view` trait); a line on what the method computed, or why it failed.
// Hidden with one method (the plain explorer).
function methodPane(model) {
  const el = h("div", "iw-methods");
  const label = h("label", "iw-method-label", "method ");
  const select = label.appendChild(h("select", "iw-method"));
  select.addEventListener("change", () => {
    model.set("method", select.value);
    model.save_changes();
  });
  const views = h("div", "iw-views");
  const buttons = {};
  for (const [view, text] of [["panel", "One method"], ["compare", "Compare two"]]) {
    const b = views.appendChild(h("button", `iw-view iw-view-${view}`, text));
    b.type = "button";
    b.addEventListener("click", () => {
      model.set("influence_view", view);
      model.save_changes();
    });
    buttons[view] = b;
  }
  const about = h("div", "iw-method-about");
  const row = h("div", "iw-method-row");
  row.append(label, views);
  el.append(row, about);

  function update() {
    const methods = model.get("methods") || [];
    el.style.display = methods.length > 1 ? "" : "none";
    const view = model.get("influence_view");
    methodOptions(select, methods, model.get("method"));
    label.style.display = view === "compare" ? "none" : "";
    for (const [name, b] of Object.entries(buttons)) b.classList.toggle("iw-active", name === view);
    const shown = methods.find((m) => m.name === model.get("method")) || {};
    const failed = methods.filter((m) => m.state === "error").map((m) => `${m.name} failed: ${m.message}`);
    about.textContent = [view === "panel" ? shown.description : "", ...failed].filter(Boolean).join(" \u00b7 ");
  }

  return { el, listen: { "change:methods change:method change:influence_view": update } };
}

// One method's side of Compare: its name, its LDS where known, and its lists, each point marked
// when the other method lists it too (same list: "both", the other list: "opposite").
function compareColumn(column, urls) {
  const el = h("div", "iw-versus-column");
  el.dataset.method = column.name;
  el.appendChild(h("div", "iw-versus-name", column.name));
  for (const line of column.lds) el.appendChild(h("div", "iw-versus-lds", line));
  if (column.state !== "ready") {
    el.appendChild(h("div", "iw-hint", column.state === "error" ? `Failed: ${column.message}` : `Being prepared: ${column.message || column.state}`));
    return el;
  }
  if (!column.lds.length) el.appendChild(h("div", "iw-versus-lds iw-versus-nolds", "no LDS yet (Verify \u203a LDS measures it for this point)"));
  const items = [...column.helpful, ...column.harmful];
  const scale = fmtScores(items.map((it) => it.score));
  const what = column.score_axis ? `${column.score_axis} (> 0: helpful)` : SCORE_WHAT;
  for (const [title, list, cls] of [["Most helpful", column.helpful, "iw-helpful"], ["Most harmful", column.harmful, "iw-harmful"]]) {
    const section = trainList(title, list, cls, scale, urls, undefined, what);
    for (const card of section.querySelectorAll(".iw-train-item")) {
      const item = list.find((it) => String(it.index) === card.dataset.trainIndex);
      if (!item || !item.shared) continue;
      card.classList.add(`iw-shared-${item.shared}`);
      const mark = card.querySelector(".iw-caption").appendChild(h("span", "iw-shared-mark", item.shared === "both" ? "\u25cf both" : "\u25d0 opposite"));
      mark.title = item.shared === "both" ? "the other method lists it too, in the same list" : "the other method lists it in its other list";
    }
    el.appendChild(section);
  }
  return el;
}

const COMPARE_HELP =
  "Both methods' lists for the selected test point. \u25cf both: the other method lists the point " +
  "in the same list; \u25d0 opposite: in its other list (helpful for one, harmful for the other). " +
  "LDS beside a name: the rank correlation between the output of models retrained on random halves " +
  "of the training set and what that method's scores predict for each half (1: the same order, " +
  "0: chance); the noise floor is what a second retraining of the same halves reaches.";

// Compare: two methods side by side (the `compare_pair` trait picks them, `compare` holds them).
function comparePane(model) {
  const el = h("div", "iw-versus");
  const urls = [];
  const pickers = h("div", "iw-versus-pickers");
  const selects = [0, 1].map((side) => {
    const label = pickers.appendChild(h("label", "iw-method-label", side === 0 ? "compare " : " with "));
    const select = label.appendChild(h("select", `iw-versus-method iw-versus-${side === 0 ? "left" : "right"}`));
    select.addEventListener("change", () => {
      const pair = [...model.get("compare_pair")];
      pair[side] = select.value;
      model.set("compare_pair", pair);
      model.save_changes();
    });
    return select;
  });
  const overlap = h("div", "iw-versus-overlap");
  const columns = h("div", "iw-versus-columns");
  el.append(pickers, overlap, h("p", "iw-help", COMPARE_HELP), columns);

  function update() {
    const methods = model.get("methods") || [];
    const pair = model.get("compare_pair") || [];
    el.style.display = model.get("influence_view") === "compare" && methods.length > 1 ? "" : "none";
    selects.forEach((select, side) => {
      methodOptions(select, methods, pair[side]);
      for (const opt of select.options) opt.disabled = false; // a method being prepared shows its progress
    });
    const c = model.get("compare") || {};
    revoke(urls);
    columns.replaceChildren();
    if (c.test_index === undefined || c.test_index !== model.get("selected")) {
      overlap.textContent = model.get("selected") === null ? "Select a test point to compare the methods on it." : "";
      return;
    }
    overlap.textContent = c.overlap ? `Test #${c.test_index}: ${c.overlap.text} (top ${c.overlap.k})` : `Test #${c.test_index}`;
    for (const column of c.columns) columns.appendChild(compareColumn(column, urls));
  }

  return {
    el,
    listen: { "change:compare change:compare_pair change:methods change:influence_view change:selected": update },
    dispose: () => revoke(urls),
  };
}

// A line above the Verify, Attack and Review tabs when the panel shows a method that is not the
// reference Influence: those need its Hessian, so they use it and say so (LDS uses the method shown).
function methodNote(model) {
  const el = h("div", "iw-method-note");

  function update() {
    const methods = model.get("methods") || [];
    const reference = methods.find((m) => m.reference);
    const shown = model.get("method");
    const tab = model.get("tab");
    const lds = tab === "verify" && model.get("verify_mode") === "lds";
    const needsHessian = ["verify", "attack", "review"].includes(tab) && !lds;
    const show = methods.length > 1 && reference && shown !== reference.name && needsHessian;
    el.style.display = show ? "" : "none";
    const what = { verify: "Leave-one-out", attack: "The attack", review: "The self-influence ranking" }[tab];
    el.textContent = show
      ? `${what} uses the influence function ${reference.name}: it needs its Hessian, which ${shown} (shown in the panel) does not have. ${tab === "verify" ? "The LDS check uses the method shown." : ""}`.trim()
      : "";
  }

  return { el, listen: { "change:methods change:method change:tab change:verify_mode": update } };
}

// ----- Slow jobs run by Python (Verify, Attack, Review's retrain): run, cancel and progress ------
// The pane shows the job state in the trait `trait` ({state, progress, message}, see
// widgets/protocol.py); its buttons send the events `run` and `cancel`. `controls` go before the
// buttons; what the caller appends to `el` goes below the status line. `names` overrides the class
// names (default `iw-${trait}-run`, ...); `runnable()` says whether a run may start (default: a test
// point is selected) and `idleText(blocked)` is the status line when the job has no message.
function jobPane(model, { trait, run, cancel, runLabel, help, controls, readyText, names, runnable, idleText }) {
  const cls = { el: `iw-${trait}`, run: `iw-${trait}-run`, cancel: `iw-${trait}-cancel`, status: `iw-${trait}-status`, progress: `iw-${trait}-progress`, controls: `iw-${trait}-controls`, ...names };
  const canRun = runnable || (() => model.get("selected") !== null);
  const idle = idleText || ((blocked) => blocked || selectedText(model, readyText));
  const el = h("div", cls.el);
  const runButton = h("button", cls.run, runLabel);
  const cancelButton = h("button", cls.cancel, "Cancel");
  runButton.type = cancelButton.type = "button";
  const progress = h("div", `iw-progress ${cls.progress}`);
  const bar = progress.appendChild(h("div", "iw-progress-bar"));
  const status = h("div", cls.status);
  const row = h("div", cls.controls);
  row.append(...controls, runButton, cancelButton);
  if (help) el.appendChild(h("p", "iw-help", help));
  el.append(row, progress, status);
  runButton.addEventListener("click", () => model.send({ event: run }));
  cancelButton.addEventListener("click", () => model.send({ event: cancel }));

  // Draws the shared part; returns the job state for the caller's part. While "cancelling" (Cancel
  // pressed, the run not yet stopped) both buttons are disabled and the bar stays where it was.
  function update() {
    const job = model.get(trait) || {};
    const cancelling = job.state === "cancelling";
    const running = job.state === "running" || cancelling;
    const blocked = notRunnable(model.get("status"));
    el.dataset.state = job.state || "idle";
    runButton.disabled = running || !canRun() || blocked !== null;
    cancelButton.disabled = cancelling;
    cancelButton.style.display = running ? "" : "none";
    progress.style.display = running ? "block" : "none";
    bar.style.width = `${Math.round(100 * (job.progress || 0))}%`;
    status.textContent = job.message || idle(blocked);
    return job;
  }

  return { el, update, status };
}

// The status line of an idle job pane: which test point it would run on.
function selectedText(model, readyText) {
  const selected = model.get("selected");
  return selected === null ? "Select a test point first." : `Test point #${selected}: ${readyText}`;
}

// Why a slow job cannot run yet in precomputation state `status` (the `status` trait), or null.
function notRunnable(status) {
  if (status === "error") return "Precomputation failed (see the error above): nothing can be run; open a new explorer.";
  if (status !== "ready") return "Available once precomputation has finished.";
  return null;
}

// A number box bound to an integer trait: `parse(number typed)` is what the trait gets.
function numberBox(model, cls, text, trait, parse) {
  const input = h("input", cls);
  input.type = "number";
  input.min = "3";
  input.step = "1";
  const label = h("label", "iw-verify-label", text);
  label.appendChild(input);
  input.addEventListener("change", () => {
    model.set(trait, parse(Number(input.value)));
    model.save_changes();
  });
  return { label, show: () => { input.value = String(model.get(trait)); } };
}

// A labelled <select> of `options` ([value, text] pairs) that sets the string trait `trait`.
function traitSelect(model, trait, options, { select: selectClass, label: labelClass, text }) {
  const select = h("select", selectClass);
  for (const [value, words] of options) {
    const opt = h("option", "", words);
    opt.value = value;
    select.appendChild(opt);
  }
  const label = h("label", labelClass, text);
  label.appendChild(select);
  select.addEventListener("change", () => {
    model.set(trait, select.value);
    model.save_changes();
  });
  return { label, select };
}

const VERIFY_MODES = [["loo", "leave-one-out"], ["lds", "LDS"]];

// Verify's settings: which check (the `verify_mode` trait) and its number box, the removals of
// leave-one-out (at least 3) or the LDS's subsets (sent as typed: Python names a bad value).
function verifyControls(model) {
  const { label: modeLabel, select: modeSelect } = traitSelect(model, "verify_mode", VERIFY_MODES, {
    select: "iw-verify-mode",
    label: "iw-verify-label",
    text: "check ",
  });
  const removals = numberBox(model, "iw-verify-n", "removals ", "verify_n_remove", (v) => Math.max(3, Math.round(v) || 3));
  const subsets = numberBox(model, "iw-verify-subsets", "subsets ", "verify_subsets", (v) =>
    Number.isFinite(v) ? Math.max(-1e9, Math.min(1e9, Math.round(v))) : 0,
  );

  // `running`: a check is running or cancelling (the check cannot change meanwhile).
  function update(running) {
    const mode = model.get("verify_mode");
    modeSelect.value = mode;
    modeSelect.disabled = running;
    removals.label.style.display = mode === "loo" ? "" : "none";
    subsets.label.style.display = mode === "lds" ? "" : "none";
    removals.show();
    subsets.show();
  }

  return { els: [modeLabel, removals.label, subsets.label], update };
}

// The one-line result of a finished check `v` (the `verify` trait), by its kind.
function verifySummary(model, v) {
  if (v.kind === "lds") {
    if (!(v.n_subsets > 0)) return [];
    // as Python writes them in the plot's title too (plots.correlation_text): same digits
    const of = model.get("methods").length > 1 && v.method ? ` of ${v.method}` : "";
    return [
      h("span", "iw-verify-r iw-verify-lds", `LDS${of} = ${v.lds_text}`),
      h("span", "", ` (noise floor ${v.noise_floor_text}, ${v.n_subsets} subsets) on test #${v.test_index}`),
    ];
  }
  if (!(v.n_removed > 0)) return [];
  // R as Python formats it for the plot's title too (plots.correlation_text): same digits
  const of = model.get("methods").length > 1 && v.method ? ` of ${v.method}` : "";
  return [
    h("span", "iw-verify-r", `Pearson R${of} = ${v.pearson_text}`),
    h("span", "", ` · Spearman = ${v.spearman_text} · ${v.n_removed} removals on test #${v.test_index}`),
  ];
}

const VERIFY_PLOT_ALT = {
  loo: "actual against predicted change of the test loss",
  lds: "retrained models' output against the scores' prediction, one dot per subset",
};

// Verify: the selected test point against retraining, by leave-one-out (its scatter and Pearson
// R) or by the LDS (the score, its noise floor, a reading and the scatter); one run at a time.
function verifyPane(model) {
  const urls = [];
  const controls = verifyControls(model);
  const job = jobPane(model, {
    trait: "verify",
    run: "verify_run",
    cancel: "verify_cancel",
    runLabel: "Run leave-one-out",
    help: VERIFY_HELP,
    controls: controls.els,
    readyText: "ready to check.",
  });
  const runButton = job.el.querySelector(".iw-verify-run");
  const help = job.el.querySelector(".iw-help");
  const summary = h("div", "iw-verify-summary");
  const reading = h("div", "iw-verify-reading");
  const figure = h("div", "iw-verify-figure");
  job.el.append(summary, reading, figure);

  function update() {
    const v = job.update();
    const mode = model.get("verify_mode");
    controls.update(v.state === "running" || v.state === "cancelling");
    job.el.dataset.mode = mode;
    runButton.textContent = mode === "lds" ? "Run LDS" : "Run leave-one-out";
    help.textContent = mode === "lds" ? LDS_HELP : VERIFY_HELP;
    job.status.classList.toggle("iw-verify-error", v.state === "error");
    const finished = v.state === "done" || v.state === "cancelled";
    summary.replaceChildren(...(finished ? verifySummary(model, v) : []));
    const measured = v.kind === "lds" ? v.n_subsets > 0 : v.n_removed > 0;
    reading.textContent = finished && measured && v.reading ? v.reading : "";
    revoke(urls);
    figure.replaceChildren();
    const png = model.get("verify_plot");
    if (png && png.byteLength) {
      figure.appendChild(pngImage(png, "iw-verify-plot", VERIFY_PLOT_ALT[v.kind] || VERIFY_PLOT_ALT.loo, urls));
    }
  }

  return {
    el: job.el,
    listen: {
      "change:verify change:verify_plot change:verify_mode change:verify_n_remove change:verify_subsets change:selected change:status change:method":
        update,
    },
    dispose: () => revoke(urls),
  };
}

// A range input bound to a number trait, its [min, max, step] from `attack_limits[key]`; the
// value shows beside it (while dragging too), `format(value)` turning it into words.
function slider(model, cls, label, trait, key, format = (v) => String(v)) {
  const wrap = h("label", `iw-attack-control ${cls}`);
  const input = h("input");
  input.type = "range";
  const name = h("span", "", `${label} `);
  const value = h("span", "iw-attack-value");
  wrap.append(name, input, value);
  input.addEventListener("input", () => {
    value.textContent = format(Number(input.value));
  });
  input.addEventListener("change", () => {
    model.set(trait, Number(input.value));
    model.save_changes();
  });
  const show = () => {
    const [min, max, step] = (model.get("attack_limits") || {})[key] || [0, 1, 0.01];
    input.min = String(min);
    input.max = String(max);
    input.step = String(step);
    input.value = String(model.get(trait));
    value.textContent = format(model.get(trait));
  };
  return { wrap, show, input, name, value };
}

// The step: a checkbox "auto" (the trait `attack_step` 0: eps / 12.5, as craft_attack) that
// disables the slider, which then shows the auto value; unticked, the slider sets a fixed step,
// starting from the auto value.
function stepControl(model, unit) {
  const auto = () => model.get("attack_eps") / 12.5;
  const control = slider(model, "iw-attack-step", "step", "attack_step", "step", short);
  const box = h("input", "iw-attack-step-auto");
  box.type = "checkbox";
  const boxLabel = h("label", "iw-attack-auto", "auto");
  boxLabel.prepend(box);
  control.wrap.insertBefore(boxLabel, control.input);
  box.addEventListener("change", () => {
    const [min, max, step] = (model.get("attack_limits") || {}).step || [0.01, 1, 0.01];
    const fixed = Math.min(max, Math.max(min, Math.round(auto() / step) * step));
    model.set("attack_step", box.checked ? 0 : Number(fixed.toFixed(6)));
    model.save_changes();
  });
  const show = () => {
    control.show();
    const isAuto = !(model.get("attack_step") > 0);
    box.checked = isAuto;
    control.input.disabled = isAuto;
    control.name.textContent = `step (${unit()}) `;
    if (isAuto) {
      control.input.value = String(auto());
      control.value.textContent = `eps / 12.5 = ${short(auto())}`;
    }
  };
  return { wrap: control.wrap, show };
}

// A number as the sliders show it: at most 3 decimals, no trailing zeros.
function short(x) {
  return String(Number(Number(x).toFixed(3)));
}

// A lead in probability as words: 0.2 -> "20 points".
function points(x) {
  return `${Math.round(100 * x)} point${Math.round(100 * x) === 1 ? "" : "s"}`;
}

// The stop margin slider's words: 0 is the first flip, as the paper.
function stopWords(x) {
  return x > 0 ? points(x) : "0 (stop at the first flip)";
}

// The difference image's colour legend: blue (lowered) to red (raised), full colour = +-bound.
function differenceLegend(item, unit) {
  const legend = h("div", "iw-attack-legend");
  const bar = h("span", "iw-attack-legend-bar");
  const bound = short(item.difference_bound);
  const amp = item.amplification ? `, shown x${Math.round(item.amplification)}` : "";
  legend.append(
    h("span", "", `−${bound}`),
    bar,
    h("span", "", `+${bound} ${unit}`),
    h("span", "iw-attack-legend-text", `difference: red = value raised, blue = lowered, white = unchanged${amp}`),
  );
  return legend;
}

// A poisoned image: its object URL is freed once the image has loaded (or failed), never before,
// so that a redraw cannot revoke a URL that an image is still reading; the rest on dispose.
function attackImage(bytes, className, alt, urls) {
  const img = pngImage(bytes, className, alt, urls);
  const url = img.src;
  const free = () => {
    URL.revokeObjectURL(url);
    const at = urls.indexOf(url);
    if (at >= 0) urls.splice(at, 1);
  };
  img.addEventListener("load", free, { once: true });
  img.addEventListener("error", free, { once: true });
  return img;
}

// One poisoned training point: its original, perturbed and difference images, or the features
// that changed most ("mean area: 1326 → 1290", in the data set's units when known).
function attackItem(item, urls, unit, inDataUnits) {
  const row = h("div", "iw-attack-item");
  row.dataset.poisonIndex = String(item.index);
  row.appendChild(h("div", "iw-caption", `training #${item.index} · label ${item.label}`));
  if (item.original) {
    const images = h("div", "iw-attack-images");
    const amp = item.amplification ? ` (x${Math.round(item.amplification)})` : "";
    for (const [key, caption] of [["original", "original"], ["perturbed", "perturbed"], ["difference", `difference${amp}`]]) {
      const fig = h("figure", "iw-attack-figure");
      fig.append(attackImage(item[key], `iw-thumb iw-attack-${key}`, caption, urls), h("figcaption", "", caption));
      images.appendChild(fig);
    }
    row.append(images, differenceLegend(item, unit));
  } else {
    const list = h("ul", "iw-attack-changes");
    for (const [name, before, after] of item.changes || []) {
      const line = h("li", "", `${name}: ${fmt(before)} → ${fmt(after)}`);
      line.title = name;
      list.appendChild(line);
    }
    if (!inDataUnits) list.appendChild(h("li", "iw-attack-changes-unit", "(values as the model reads them)"));
    row.appendChild(list);
  }
  return row;
}

// The outcome of a finished attack: verdict, why it stopped, the settings used, class
// probabilities, each poisoned training point (images with a colour legend for the difference).
function attackOutcome(a, urls, unit) {
  const verdict = h(
    "div",
    `iw-attack-verdict ${a.flipped ? "iw-flipped" : "iw-held"}`,
    a.flipped
      ? `Flipped: predicted ${a.prediction_before} before, ${a.prediction_after} after`
      : `Not flipped: still predicted ${a.prediction_after}`,
  );
  const reason = h("div", "iw-attack-reason", a.stop_reason || "");
  const stop = a.stop_margin > 0 ? `, stop at a lead of ${points(a.stop_margin)}` : "";
  const used = h(
    "div",
    "iw-attack-used",
    `Run with ${a.n_poison} training point(s), eps ${short(a.eps)} ${unit}, step ${short(a.step)} ${unit}${stop}: ` +
      `${a.iterations} step(s).`,
  );
  const parts = [verdict, reason, used];
  if (a.search) {
    const tried = a.search.tried.map(([e, f]) => `${short(e)}${f ? " flipped" : ""}`).join(", ");
    parts.push(h("div", "iw-attack-search", `eps tried (${a.search.unit}), in order: ${tried}`));
  }
  const table = h("table", "iw-attack-probs");
  const head = h("tr");
  for (const t of ["class", "before", "after"]) head.appendChild(h("th", "", t));
  table.appendChild(head);
  for (const [name, before, after] of a.probabilities || []) {
    const tr = h("tr");
    tr.append(h("td", "", name), h("td", "", `${(100 * before).toFixed(1)}%`), h("td", "", `${(100 * after).toFixed(1)}%`));
    table.appendChild(tr);
  }
  const draw = (item) => attackItem(item, urls, unit, a.changes_in_data_units !== false);
  const items = a.items || [];
  const rows = items.slice(0, ATTACK_ITEMS_SHOWN).map(draw);
  const rest = items.slice(ATTACK_ITEMS_SHOWN);
  if (rest.length) {
    // The other poisoned points, drawn when the fold is first opened.
    const more = h("details", "iw-attack-more");
    more.appendChild(h("summary", "", `The other ${rest.length} poisoned training points`));
    more.addEventListener("toggle", () => {
      if (more.open && more.children.length === 1) more.append(...rest.map(draw));
    });
    rows.push(more);
  }
  return [...parts, table, ...rows];
}

// How many poisoned training points the outcome shows before the fold with the others.
const ATTACK_ITEMS_SHOWN = 10;

// Attack: perturb a few training inputs to flip the selected prediction (Sec 5.2), and a search
// for the smallest eps that flips it. `attack_blocked` says why the selected point cannot be
// attacked (misclassified, say): then the buttons are disabled and the status says so at once.
// The outcome is drawn again only when the `attack` trait itself changes (not when a slider moves
// or the eps search sets the eps slider beside it).
function attackPane(model) {
  const urls = [];
  const limits = () => model.get("attack_limits") || {};
  const unit = () => limits().unit || "model input units";
  const help = attackHelp();
  const eps = slider(model, "iw-attack-eps", "eps", "attack_eps", "eps", short);
  const controls = [
    slider(model, "iw-attack-n", "training points", "attack_n_poison", "n_poison"),
    eps,
    stepControl(model, unit),
    slider(model, "iw-attack-iter", "iterations", "attack_max_iter", "max_iter"),
    slider(model, "iw-attack-margin", "stop when the new class leads by", "attack_stop_margin", "stop_margin", stopWords),
  ];
  const searchButton = h("button", "iw-attack-search-run", "Find smallest eps");
  searchButton.type = "button";
  searchButton.title = "Attacks at growing eps, then bisects: the smallest eps that flips this point";
  searchButton.addEventListener("click", () => model.send({ event: "attack_search" }));
  const job = jobPane(model, {
    trait: "attack",
    run: "attack_run",
    cancel: "attack_cancel",
    runLabel: "Run attack",
    controls: [...controls.map((s) => s.wrap), searchButton],
    readyText: "ready to attack.",
  });
  job.el.prepend(help.el);
  const runButton = job.el.querySelector(".iw-attack-run");
  const status = job.status;
  const result = h("div", "iw-attack-result");
  job.el.append(result);
  let drawn = null; // the attack state whose outcome is on screen

  function update() {
    const a = job.update();
    const blocked = model.get("attack_blocked");
    const running = a.state === "running";
    if (blocked) runButton.disabled = true;
    searchButton.disabled = running || model.get("selected") === null || Boolean(blocked);
    if (blocked && !running && !a.message) status.textContent = blocked;
    status.classList.toggle("iw-attack-blocked", Boolean(blocked) && !running);
    help.show(limits().kind);
    eps.name.textContent = `eps (${unit()}) `;
    for (const c of controls) c.show();
    const outcome = a.state === "done" || a.state === "cancelled" ? a : null;
    if (outcome === drawn) return;
    drawn = outcome;
    result.replaceChildren(...(outcome ? attackOutcome(outcome, urls, unit()) : []));
  }

  return {
    el: job.el,
    listen: {
      "change:attack change:attack_n_poison change:attack_eps change:attack_step change:attack_max_iter change:attack_stop_margin change:selected change:attack_blocked change:attack_limits change:status":
        update,
    },
    dispose: () => revoke(urls),
  };
}

// ----- Review: training points ranked for a label check, fixes, and a retrain with them --------
const REVIEW_HELP =
  "Check the labels of the training points at the top (Koh & Liang Sec 5.4). Propose a label or " +
  "mark a point for removal, then retrain: a copy of the model is retrained on the fixed data " +
  "(warm start, same L2). Your data and model stay unchanged: the retrain works on copies.";

const REVIEW_METHODS = [
  ["self_influence", "|self-influence|"],
  ["loss", "training loss"],
  ["random", "random"],
];

function percent(x) {
  return `${(100 * x).toFixed(1)}%`;
}

// One ranked training point: rank, the point, given and predicted label, score, and its fix.
function reviewRow(model, item, scoreName, urls) {
  const row = h("div", "iw-review-item");
  row.dataset.trainIndex = String(item.index);
  if (item.remove) row.classList.add("iw-review-removed");
  if (item.proposed >= 0) row.classList.add("iw-review-relabelled");
  const info = h("div", "iw-review-info");
  info.appendChild(h("div", "iw-review-rank", `#${item.rank} · train #${item.index}`));
  const given = h("div", "iw-review-given", `given ${item.label}`);
  const pred = h("div", "iw-review-pred", `pred ${item.pred} (${Math.round(item.probability * 100)}%)`);
  if (item.pred !== item.label) pred.classList.add("iw-review-disagrees");
  info.append(given, pred);
  if (item.score !== null && item.score !== undefined) {
    info.appendChild(h("div", "iw-review-score", `${scoreName} ${fmt(item.score)}`));
  }
  const fix = h("div", "iw-review-fix");
  const select = h("select", "iw-review-label");
  select.title = `propose a label for training point #${item.index}`;
  const keep = h("option", "", `keep ${item.label}`);
  keep.value = "-1";
  select.appendChild(keep);
  model.get("class_names").forEach((name, c) => {
    if (c === item.label_index) return;
    const opt = h("option", "", `propose ${name}`);
    opt.value = String(c);
    select.appendChild(opt);
  });
  select.value = String(item.proposed);
  select.disabled = item.remove;
  select.addEventListener("change", () => {
    const label = Number(select.value);
    if (label < 0) model.send({ event: "review_clear", index: item.index });
    else model.send({ event: "review_relabel", index: item.index, label });
  });
  const removeLabel = h("label", "iw-review-remove");
  const removeBox = h("input");
  removeBox.type = "checkbox";
  removeBox.checked = item.remove;
  removeLabel.append(removeBox, document.createTextNode(" remove"));
  removeBox.addEventListener("change", () => {
    model.send({ event: removeBox.checked ? "review_remove" : "review_clear", index: item.index });
  });
  fix.append(select, removeLabel);
  row.append(pointView(item, urls, true), info, fix);
  return row;
}

// What "Retrain with fixes" changed: the test set, and the selected test point, before -> after.
function reviewOutcome(r) {
  const parts = [];
  const table = h("table", "iw-review-outcome");
  const head = h("tr");
  for (const t of ["", "before", "after"]) head.appendChild(h("th", "", t));
  table.appendChild(head);
  // `after` null: `before` spans both columns
  const line = (name, before, after) => {
    const tr = h("tr");
    const first = h("td", "", before);
    tr.append(h("td", "", name), first);
    if (after === null) first.colSpan = 2;
    else tr.appendChild(h("td", "", after));
    table.appendChild(tr);
  };
  if (r.accuracy_before === null) {
    line("test accuracy", "not available (no test labels)", null);
    line("test loss", "not available (no test labels)", null);
  } else {
    line("test accuracy", percent(r.accuracy_before), percent(r.accuracy_after));
    line("test loss", fmt(r.loss_before), fmt(r.loss_after));
  }
  if (r.selected !== null && r.selected !== undefined) {
    line(
      `test #${r.selected} predicted`,
      `${r.prediction_before} (${percent(r.probability_before)})`,
      `${r.prediction_after} (${percent(r.probability_after)})`,
    );
  }
  parts.push(table);
  parts.push(
    h(
      "p",
      "iw-review-note",
      "The influence scores in this explorer are still those of the original model. To explore " +
        "the retrained model on the fixed training data, with the same test points, run in a cell:",
    ),
  );
  if (r.code) parts.push(h("pre", "iw-review-code", r.code)); // widgets/hints.py: run as shown
  return parts;
}

// Review's ranking controls: the ranking method and the paging of the ranked list.
function reviewControls(model) {
  const { label: methodLabel, select: methodSelect } = traitSelect(model, "review_method", REVIEW_METHODS, {
    select: "iw-review-method",
    label: "iw-review-method-label",
    text: "rank by ",
  });
  const prev = h("button", "iw-review-prev", "\u2039 prev");
  const next = h("button", "iw-review-next", "next \u203a");
  prev.type = next.type = "button";
  const pageInfo = h("span", "iw-review-page");
  const turn = (step) => {
    model.set("review_page", Math.max(0, (model.get("review") || {}).page + step || 0));
    model.save_changes();
  };
  prev.addEventListener("click", () => turn(-1));
  next.addEventListener("click", () => turn(1));
  const el = h("div", "iw-review-controls");
  el.append(methodLabel, prev, pageInfo, next);

  // `r`: the review trait; `shown`: whether its ranked page is the one on screen.
  function update(r, shown) {
    methodSelect.value = model.get("review_method");
    pageInfo.textContent = shown ? `${r.items[0].rank}\u2013${r.items[r.items.length - 1].rank} of ${r.n}` : "";
    pageInfo.title = shown ? `page ${r.page + 1} of ${r.n_pages}` : "";
    prev.disabled = !shown || r.page <= 0;
    next.disabled = !shown || r.page >= r.n_pages - 1;
  }

  return { el, update };
}

// Review's retrain with the pending fixes: a job pane (see jobPane) with the count of fixes and
// "Clear fixes" before its buttons, and the outcome below.
function reviewRetrain(model) {
  const pending = h("span", "iw-review-pending");
  const clearButton = h("button", "iw-review-clear", "Clear fixes");
  clearButton.type = "button";
  clearButton.addEventListener("click", () => model.send({ event: "review_clear_all" }));
  const nFixes = () => {
    const r = model.get("review") || {};
    return [r.n_relabelled || 0, r.n_removed || 0];
  };
  const job = jobPane(model, {
    trait: "review_retrain",
    run: "review_retrain",
    cancel: "review_cancel",
    runLabel: "Retrain with fixes",
    controls: [pending, clearButton],
    names: { el: "iw-review-retrain-pane", run: "iw-review-retrain", cancel: "iw-review-cancel", status: "iw-review-retrain-status", progress: "iw-review-retrain-progress", controls: "iw-review-fixes" },
    runnable: () => nFixes()[0] + nFixes()[1] > 0,
    idleText: () => "",
  });
  const outcome = job.el.appendChild(h("div", "iw-review-result"));

  function update() {
    const state = job.update();
    const [relabelled, removed] = nFixes();
    pending.textContent = `${relabelled + removed} fix(es) pending: ${relabelled} relabelled, ${removed} removed`;
    clearButton.disabled = relabelled + removed === 0;
    job.status.classList.toggle("iw-review-error", state.state === "error");
    outcome.replaceChildren();
    if (state.state === "done") outcome.append(...reviewOutcome(state));
    return state;
  }

  return { el: job.el, update };
}

// Review: training points ranked for a label check (a page of them), fixes, and a retrain.
function reviewPane(model) {
  const urls = [];
  const el = h("div", "iw-review");
  const controls = reviewControls(model);
  const rankProgress = h("div", "iw-progress iw-review-rank-progress");
  const rankBar = rankProgress.appendChild(h("div", "iw-progress-bar"));
  const rankStatus = h("div", "iw-review-status");
  const list = h("div", "iw-review-list");
  const retrain = reviewRetrain(model);
  el.append(h("p", "iw-help", REVIEW_HELP), controls.el, rankProgress, rankStatus, list, retrain.el);

  function renderRanking() {
    const r = model.get("review") || {};
    const blocked = notRunnable(model.get("status"));
    el.dataset.ranking = r.state || "idle";
    rankProgress.style.display = r.state === "running" ? "block" : "none";
    rankBar.style.width = `${Math.round(100 * (r.progress || 0))}%`;
    rankStatus.textContent = r.message || blocked || "Open this tab to rank the training points.";
    rankStatus.classList.toggle("iw-review-error", r.state === "error");
    const shown = r.state === "done" && r.method === model.get("review_method");
    controls.update(r, shown);
    revoke(urls);
    list.replaceChildren();
    if (shown) for (const item of r.items) list.appendChild(reviewRow(model, item, r.score_name, urls));
    renderFixes();
  }

  function renderFixes() {
    el.dataset.retrain = retrain.update().state || "idle";
  }

  return {
    el,
    listen: {
      "change:review change:review_method change:status change:class_names": renderRanking,
      "change:review_retrain": renderFixes,
    },
    dispose: () => revoke(urls),
  };
}

function render({ model, el }) {
  const root = h("div", "iw-explorer");
  root.dataset.kind = model.get("kind"); // the gallery's card size and the panel's layout
  const header = headerPane(model, root);
  const gallery = galleryPane(model);
  const influence = influencePane(model);
  const methods = methodPane(model);
  const compare = comparePane(model);
  const note = methodNote(model);
  const verify = verifyPane(model);
  const attack = attackPane(model);
  const review = reviewPane(model);
  const influenceTab = h("div", "iw-influence-tab");
  influenceTab.append(methods.el, influence.el, compare.el);
  const tabs = tabsPane(model, { influence: influenceTab, verify: verify.el, attack: attack.el, review: review.el });
  const side = h("div", "iw-side");
  side.append(tabs.el, note.el, influenceTab, verify.el, attack.el, review.el);
  const body = h("div", "iw-body");
  body.append(gallery.el, side);
  root.append(header.el, body);
  el.appendChild(root);

  const panes = [header, gallery, tabs, influence, methods, compare, note, verify, attack, review];
  const handlers = panes.flatMap((pane) => Object.entries(pane.listen));
  for (const [events, update] of handlers) {
    model.on(events, update);
    update();
  }
  return () => {
    for (const [events, update] of handlers) model.off(events, update);
    for (const pane of panes) if (pane.dispose) pane.dispose();
    el.replaceChildren();
  };
}

export default { render };
