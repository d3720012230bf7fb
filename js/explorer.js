// InfluenceExplorer front end (anywidget ES module). Plain DOM, no framework.
// Everything that comes from data is inserted with textContent, never as HTML.

const HELP =
  "Score = predicted change of this test point's loss if the training point were removed " +
  "(Koh & Liang 2017). Helpful points (> 0) support the prediction: removing one would raise " +
  "the loss. Harmful points (< 0) work against it: removing one would lower the loss.";

const VERIFY_HELP =
  "Retrains the model without each of the training points of largest |influence| on this test " +
  "point, one at a time (warm-started from the trained model, as in Koh & Liang's Fig 2), and " +
  "plots the actual change of the test loss against the predicted one. Points on the dashed " +
  "line y = x mean influence predicted retraining exactly.";

const ATTACK_HELP =
  "Moves the inputs of a few training points, each value by at most eps, in the direction that " +
  "influence says raises this test point's loss (I_pert,loss, Koh & Liang Sec 5.2), retraining " +
  "after every step, until the prediction flips or the iterations run out. The model you trained " +
  "and your data stay unchanged: the attack works on copies.";

function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function fmt(x) {
  const a = Math.abs(x);
  return a !== 0 && (a < 1e-3 || a >= 1e4) ? x.toExponential(2) : x.toFixed(4);
}

// A view of one data point: a thumbnail from PNG bytes, a snippet of text, or a few table cells.
function pointView(item, urls) {
  const box = h("div", "iw-point");
  if (item.png) {
    const url = URL.createObjectURL(new Blob([item.png], { type: "image/png" }));
    urls.push(url);
    const img = h("img", "iw-thumb");
    img.src = url;
    img.alt = "";
    box.appendChild(img);
  } else if (item.text !== undefined) {
    box.appendChild(h("div", "iw-text", item.text));
  } else if (item.row) {
    const table = h("table", "iw-row");
    for (const [name, value] of item.row) {
      const tr = h("tr");
      tr.appendChild(h("th", "", name));
      tr.appendChild(h("td", "", fmt(value)));
      table.appendChild(tr);
    }
    box.appendChild(table);
  }
  return box;
}

function barChart(helpful, harmful) {
  const ns = "http://www.w3.org/2000/svg";
  const items = [...helpful, ...harmful.slice().reverse()];
  const width = 260;
  const rowH = 10;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "iw-bars");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(items.length * rowH + 4));
  const max = Math.max(1e-300, ...items.map((it) => Math.abs(it.score)));
  const mid = width / 2;
  items.forEach((it, i) => {
    const w = (Math.abs(it.score) / max) * (mid - 4);
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", String(it.score >= 0 ? mid : mid - w));
    rect.setAttribute("y", String(i * rowH + 2));
    rect.setAttribute("width", String(Math.max(w, 1)));
    rect.setAttribute("height", String(rowH - 2));
    rect.setAttribute("class", it.score >= 0 ? "iw-bar-helpful" : "iw-bar-harmful");
    const title = document.createElementNS(ns, "title");
    title.textContent = `#${it.index}: ${fmt(it.score)}`;
    rect.appendChild(title);
    svg.appendChild(rect);
  });
  const axis = document.createElementNS(ns, "line");
  axis.setAttribute("x1", String(mid));
  axis.setAttribute("x2", String(mid));
  axis.setAttribute("y1", "0");
  axis.setAttribute("y2", String(items.length * rowH + 4));
  axis.setAttribute("class", "iw-axis");
  svg.appendChild(axis);
  return svg;
}

function render({ model, el }) {
  // Object URLs of the thumbnails, freed whenever what holds them is redrawn.
  const galleryUrls = [];
  const panelUrls = [];
  const revoke = (urls) => urls.splice(0).forEach((u) => URL.revokeObjectURL(u));

  const root = h("div", "iw-explorer");
  const header = h("div", "iw-header");
  const status = h("div", "iw-status");
  const progress = h("div", "iw-progress");
  const progressBar = h("div", "iw-progress-bar");
  progress.appendChild(progressBar);
  const error = h("div", "iw-error");
  const controls = h("div", "iw-controls");
  const classSelect = h("select", "iw-class-filter");
  const wrongLabel = h("label", "iw-wrong-filter");
  const wrongBox = h("input");
  wrongBox.type = "checkbox";
  wrongLabel.append(wrongBox, document.createTextNode(" misclassified only"));
  const prev = h("button", "iw-prev", "\u2039 prev");
  const next = h("button", "iw-next", "next \u203a");
  const pageInfo = h("span", "iw-page-info");
  controls.append(classSelect, wrongLabel, prev, pageInfo, next);
  header.append(status, progress, error, controls);

  const body = h("div", "iw-body");
  const gallery = h("div", "iw-gallery");
  const side = h("div", "iw-side");
  const tabs = h("div", "iw-tabs");
  const tabButtons = {};
  for (const [name, label] of [["influence", "Influence"], ["verify", "Verify"], ["attack", "Attack"]]) {
    const b = h("button", `iw-tab iw-tab-${name}`, label);
    b.type = "button";
    b.dataset.tab = name;
    b.addEventListener("click", () => {
      model.set("tab", name);
      model.save_changes();
    });
    tabButtons[name] = b;
    tabs.appendChild(b);
  }
  const panel = h("div", "iw-panel");
  const verifyPane = h("div", "iw-verify");
  const attackPane = h("div", "iw-attack");
  side.append(tabs, panel, verifyPane, attackPane);
  body.append(gallery, side);
  root.append(header, body);
  el.appendChild(root);

  function renderStatus() {
    const s = model.get("status");
    root.dataset.status = s;
    status.textContent = model.get("message") || s;
    progress.style.display = s === "fitting" || s === "starting" ? "block" : "none";
    progressBar.style.width = `${Math.round(100 * model.get("progress"))}%`;
    const err = model.get("error");
    error.textContent = err;
    error.style.display = err ? "block" : "none";
  }

  function renderFilters() {
    classSelect.replaceChildren();
    const all = h("option", "", "all classes");
    all.value = "-1";
    classSelect.appendChild(all);
    model.get("class_names").forEach((name, c) => {
      const opt = h("option", "", name);
      opt.value = String(c);
      classSelect.appendChild(opt);
    });
    classSelect.value = String(model.get("class_filter"));
    wrongBox.checked = model.get("misclassified_only");
  }

  function renderGallery() {
    gallery.replaceChildren();
    revoke(galleryUrls);
    const selected = model.get("selected");
    for (const item of model.get("gallery")) {
      const card = h("button", "iw-test-item");
      card.type = "button";
      card.dataset.testIndex = String(item.index);
      if (item.wrong) card.classList.add("iw-wrong");
      if (item.index === selected) card.classList.add("iw-selected");
      card.appendChild(pointView(item, galleryUrls));
      const caption = h("div", "iw-caption");
      caption.appendChild(h("span", "iw-true", `true ${item.label}`));
      caption.appendChild(h("span", "iw-pred", `pred ${item.pred} (${Math.round(item.confidence * 100)}%)`));
      card.appendChild(caption);
      card.title = `test #${item.index}`;
      card.addEventListener("click", () => {
        model.set("selected", item.index);
        model.save_changes();
        markSelected();
      });
      gallery.appendChild(card);
    }
    const pages = model.get("n_pages");
    pageInfo.textContent = `page ${model.get("page") + 1} / ${pages} (${model.get("n_shown")} shown)`;
    prev.disabled = model.get("page") <= 0;
    next.disabled = model.get("page") >= pages - 1;
  }

  function markSelected() {
    const selected = model.get("selected");
    for (const card of gallery.querySelectorAll(".iw-test-item")) {
      card.classList.toggle("iw-selected", Number(card.dataset.testIndex) === selected);
    }
    if (selected !== null && model.get("panel").test_index !== selected) {
      panel.classList.add("iw-busy");
    }
  }

  function trainList(title, items, cls) {
    const section = h("div", `iw-section ${cls}`);
    section.appendChild(h("h4", "", title));
    const list = h("div", "iw-train-list");
    for (const item of items) {
      const card = h("div", "iw-train-item");
      card.dataset.trainIndex = String(item.index);
      card.appendChild(pointView(item, panelUrls));
      card.appendChild(h("div", "iw-caption", `#${item.index} \u00b7 ${item.label}`));
      card.appendChild(h("div", "iw-score", fmt(item.score)));
      if (item.differences && item.differences.length) {
        const diff = h("div", "iw-diff");
        for (const [name, a, b] of item.differences) {
          diff.appendChild(h("div", "", `${name}: ${fmt(a)} vs ${fmt(b)}`));
        }
        card.appendChild(diff);
      }
      list.appendChild(card);
    }
    section.appendChild(list);
    return section;
  }

  function renderPanel() {
    panel.classList.remove("iw-busy");
    panel.replaceChildren();
    revoke(panelUrls);
    const p = model.get("panel");
    if (!p || p.test_index === undefined) {
      panel.appendChild(h("div", "iw-hint", "Click a test point to see which training points helped and hurt it."));
      return;
    }
    const head = h("div", "iw-panel-head");
    head.appendChild(pointView(p.test, panelUrls));
    const info = h("div", "iw-panel-info");
    info.appendChild(h("div", "iw-title", `Test #${p.test_index}`));
    info.appendChild(h("div", "", `true ${p.label}, predicted ${p.pred} (${Math.round(p.confidence * 100)}%)`));
    info.appendChild(barChart(p.helpful, p.harmful));
    head.appendChild(info);
    panel.appendChild(head);
    panel.appendChild(h("p", "iw-help", HELP));
    panel.appendChild(trainList("Most helpful", p.helpful, "iw-helpful"));
    panel.appendChild(trainList("Most harmful", p.harmful, "iw-harmful"));
  }

  function renderTab() {
    const tab = model.get("tab");
    for (const [name, b] of Object.entries(tabButtons)) b.classList.toggle("iw-active", name === tab);
    panel.style.display = tab === "influence" ? "" : "none";
    verifyPane.style.display = tab === "verify" ? "" : "none";
    attackPane.style.display = tab === "attack" ? "" : "none";
  }

  // The Attack tab: perturb a few training inputs to flip the selected prediction (Sec 5.2).
  const attackUrls = [];
  const image = model.get("kind") === "image";
  const unit = image ? "8-bit levels" : "data units";
  function slider(cls, label, trait, min, max, step) {
    const wrap = h("label", `iw-attack-control ${cls}`);
    const input = h("input");
    input.type = "range";
    input.min = String(min);
    input.max = String(max);
    input.step = String(step);
    const value = h("span", "iw-attack-value");
    wrap.append(h("span", "", `${label} `), input, value);
    const show = () => {
      input.value = String(model.get(trait));
      value.textContent = String(model.get(trait));
    };
    input.addEventListener("input", () => {
      value.textContent = input.value;
    });
    input.addEventListener("change", () => {
      model.set(trait, Number(input.value));
      model.save_changes();
    });
    return { wrap, show, input };
  }
  const sliders = [
    slider("iw-attack-n", "training points", "attack_n_poison", 1, 10, 1),
    slider("iw-attack-eps", `eps (${unit})`, "attack_eps", image ? 0.5 : 0.01, image ? 16 : 2, image ? 0.5 : 0.01),
    slider("iw-attack-step", `step (${unit})`, "attack_step", image ? 0.05 : 0.001, image ? 4 : 0.5, image ? 0.05 : 0.001),
    slider("iw-attack-iter", "iterations", "attack_max_iter", 1, 100, 1),
  ];
  const attackRun = h("button", "iw-attack-run", "Run attack");
  attackRun.type = "button";
  const attackCancel = h("button", "iw-attack-cancel", "Cancel");
  attackCancel.type = "button";
  const attackProgress = h("div", "iw-progress iw-attack-progress");
  const attackBar = h("div", "iw-progress-bar");
  attackProgress.appendChild(attackBar);
  const attackStatus = h("div", "iw-attack-status");
  const attackResult = h("div", "iw-attack-result");
  const attackControls = h("div", "iw-attack-controls");
  attackControls.append(...sliders.map((s) => s.wrap), attackRun, attackCancel);
  attackPane.append(
    h("p", "iw-help", ATTACK_HELP), attackControls, attackProgress, attackStatus, attackResult,
  );
  attackRun.addEventListener("click", () => model.send({ event: "attack_run" }));
  attackCancel.addEventListener("click", () => model.send({ event: "attack_cancel" }));

  function renderAttack() {
    const a = model.get("attack") || {};
    const running = a.state === "running";
    attackPane.dataset.state = a.state || "idle";
    for (const s of sliders) s.show();
    attackRun.disabled = running || model.get("selected") === null;
    attackCancel.style.display = running ? "" : "none";
    attackProgress.style.display = running ? "block" : "none";
    attackBar.style.width = `${Math.round(100 * (a.progress || 0))}%`;
    const selected = model.get("selected");
    attackStatus.textContent =
      a.message || (selected === null ? "Select a test point first." : `Test point #${selected}: ready to attack.`);
    revoke(attackUrls);
    attackResult.replaceChildren();
    if (a.state !== "done" && a.state !== "cancelled") return;
    const verdict = h(
      "div",
      `iw-attack-verdict ${a.flipped ? "iw-flipped" : "iw-held"}`,
      a.flipped
        ? `Flipped: predicted ${a.prediction_before} before, ${a.prediction_after} after`
        : `Not flipped: still predicted ${a.prediction_after}`,
    );
    attackResult.appendChild(verdict);
    const table = h("table", "iw-attack-probs");
    const head = h("tr");
    for (const t of ["class", "before", "after"]) head.appendChild(h("th", "", t));
    table.appendChild(head);
    for (const [name, before, after] of a.probabilities || []) {
      const tr = h("tr");
      tr.append(h("td", "", name), h("td", "", `${(100 * before).toFixed(1)}%`), h("td", "", `${(100 * after).toFixed(1)}%`));
      table.appendChild(tr);
    }
    attackResult.appendChild(table);
    for (const item of a.items || []) {
      const row = h("div", "iw-attack-item");
      row.dataset.poisonIndex = String(item.index);
      row.appendChild(h("div", "iw-caption", `training #${item.index} · ${item.label}`));
      if (item.original) {
        const images = h("div", "iw-attack-images");
        const amp = item.amplification ? ` (x${Math.round(item.amplification)})` : "";
        for (const [key, caption] of [["original", "original"], ["perturbed", "perturbed"], ["difference", `difference${amp}`]]) {
          const fig = h("figure", "iw-attack-figure");
          const url = URL.createObjectURL(new Blob([item[key]], { type: "image/png" }));
          attackUrls.push(url);
          const img = h("img", `iw-thumb iw-attack-${key}`);
          img.src = url;
          img.alt = caption;
          fig.append(img, h("figcaption", "", caption));
          images.appendChild(fig);
        }
        row.appendChild(images);
      } else {
        const list = h("div", "iw-diff");
        for (const [name, before, after] of item.changes || []) {
          list.appendChild(h("div", "", `${name}: ${fmt(before)} → ${fmt(after)}`));
        }
        row.appendChild(list);
      }
      attackResult.appendChild(row);
    }
  }

  // The Verify tab: leave-one-out retraining for the selected test point, run by Python.
  const verifyUrls = [];
  const nInput = h("input", "iw-verify-n");
  nInput.type = "number";
  nInput.min = "3";
  nInput.step = "1";
  const runButton = h("button", "iw-verify-run", "Run leave-one-out");
  runButton.type = "button";
  const cancelButton = h("button", "iw-verify-cancel", "Cancel");
  cancelButton.type = "button";
  const verifyStatus = h("div", "iw-verify-status");
  const verifyProgress = h("div", "iw-progress iw-verify-progress");
  const verifyBar = h("div", "iw-progress-bar");
  verifyProgress.appendChild(verifyBar);
  const verifySummary = h("div", "iw-verify-summary");
  const verifyFigure = h("div", "iw-verify-figure");
  const nLabel = h("label", "iw-verify-label", "removals ");
  nLabel.appendChild(nInput);
  const verifyControls = h("div", "iw-verify-controls");
  verifyControls.append(nLabel, runButton, cancelButton);
  verifyPane.append(
    h("p", "iw-help", VERIFY_HELP), verifyControls, verifyProgress, verifyStatus, verifySummary,
    verifyFigure,
  );
  nInput.addEventListener("change", () => {
    const n = Math.max(3, Math.round(Number(nInput.value)) || 3);
    model.set("verify_n_remove", n);
    model.save_changes();
  });
  runButton.addEventListener("click", () => model.send({ event: "verify_run" }));
  cancelButton.addEventListener("click", () => model.send({ event: "verify_cancel" }));

  function renderVerify() {
    const v = model.get("verify") || {};
    const running = v.state === "running";
    verifyPane.dataset.state = v.state || "idle";
    nInput.value = String(model.get("verify_n_remove"));
    runButton.disabled = running || model.get("selected") === null;
    cancelButton.style.display = running ? "" : "none";
    verifyProgress.style.display = running ? "block" : "none";
    verifyBar.style.width = `${Math.round(100 * (v.progress || 0))}%`;
    const selected = model.get("selected");
    verifyStatus.textContent =
      v.message || (selected === null ? "Select a test point first." : `Test point #${selected}: ready to check.`);
    verifySummary.replaceChildren();
    if (v.state === "done" || v.state === "cancelled") {
      const r = v.pearson === null || v.pearson === undefined ? "n/a" : v.pearson.toFixed(4);
      const rho = v.spearman === null || v.spearman === undefined ? "n/a" : v.spearman.toFixed(4);
      verifySummary.appendChild(h("span", "iw-verify-r", `Pearson R = ${r}`));
      verifySummary.appendChild(
        h("span", "", ` · Spearman ${rho} · ${v.n_removed} removals on test #${v.test_index}`),
      );
    }
    revoke(verifyUrls);
    verifyFigure.replaceChildren();
    const png = model.get("verify_plot");
    if (png && png.byteLength) {
      const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
      verifyUrls.push(url);
      const img = h("img", "iw-verify-plot");
      img.src = url;
      img.alt = "actual against predicted change of the test loss";
      verifyFigure.appendChild(img);
    }
  }

  classSelect.addEventListener("change", () => {
    model.set("class_filter", Number(classSelect.value));
    model.set("page", 0);
    model.save_changes();
  });
  wrongBox.addEventListener("change", () => {
    model.set("misclassified_only", wrongBox.checked);
    model.set("page", 0);
    model.save_changes();
  });
  prev.addEventListener("click", () => {
    model.set("page", Math.max(0, model.get("page") - 1));
    model.save_changes();
  });
  next.addEventListener("click", () => {
    model.set("page", model.get("page") + 1);
    model.save_changes();
  });

  const onGallery = () => {
    revoke(galleryUrls);
    renderGallery();
  };
  const handlers = [
    ["change:gallery change:page change:n_pages change:n_shown", onGallery],
    ["change:panel", () => renderPanel()],
    ["change:selected", () => {
      markSelected();
      renderVerify();
      renderAttack();
    }],
    [
      "change:attack change:attack_n_poison change:attack_eps change:attack_step change:attack_max_iter",
      () => renderAttack(),
    ],
    ["change:tab", () => renderTab()],
    ["change:verify change:verify_plot change:verify_n_remove", () => renderVerify()],
    ["change:status change:message change:error change:progress", () => renderStatus()],
    ["change:class_names change:class_filter change:misclassified_only", () => renderFilters()],
  ];
  for (const [events, fn] of handlers) model.on(events, fn);

  renderStatus();
  renderFilters();
  renderGallery();
  renderPanel();
  renderTab();
  renderVerify();
  renderAttack();

  return () => {
    for (const [events, fn] of handlers) model.off(events, fn);
    revoke(galleryUrls);
    revoke(panelUrls);
    revoke(verifyUrls);
    revoke(attackUrls);
    el.replaceChildren();
  };
}

export default { render };
