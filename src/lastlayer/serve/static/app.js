// lastlayer teach: the page. Plain JavaScript, no build step, no network beyond this server.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const TOKEN_KEY = "lastlayer-token";
  const POLL_MS = 2000;

  // ------------------------------------------------------------------ access token
  const params = new URLSearchParams(location.search);
  let token = params.get("token") || sessionStorage.getItem(TOKEN_KEY) || "";
  if (params.get("token")) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar and history
  }
  // Reads by URL (thumbnails, the stream, the events, downloads) are authorised by the cookie the page's own
  // URL set, so the token never travels in another URL; every change carries it in a header.

  // ------------------------------------------------------------------ state
  const state = {
    revision: -1,
    classes: [],
    live: null,          // newest live event (device camera)
    source: null,        // {kind, status, error, ...}
    connected: null,
    webcam: null,        // MediaStream when the browser's camera is on
    webcamPrediction: null,
    renaming: null,      // class id being renamed (skip re-rendering it)
    topLabel: undefined,
  };

  // ------------------------------------------------------------------ messages
  const messages = $("#messages");
  function showError(text) {
    const item = document.createElement("div");
    item.className = "message error";
    const span = document.createElement("span");
    span.textContent = text;
    const close = document.createElement("button");
    close.type = "button";
    close.textContent = "Dismiss";
    close.setAttribute("aria-label", "Dismiss this message");
    close.addEventListener("click", () => item.remove());
    item.append(span, close);
    messages.append(item);
    while (messages.children.length > 3) messages.firstChild.remove();
    setTimeout(() => item.remove(), 8000);
  }
  function showStatus(text) {
    $("#model-status").textContent = text;
  }

  // ------------------------------------------------------------------ API
  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body, answer = "json") {
    const options = { method, headers: { "X-Lastlayer-Token": token || "-" }, cache: "no-store" };
    if (body instanceof FormData || body instanceof Blob) {
      options.body = body;
    } else if (body !== undefined) {
      options.body = JSON.stringify(body);
      options.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      setConnected(false);
      throw new ApiError("The server cannot be reached; the page reconnects by itself. Nothing was changed.", 0);
    }
    setConnected(true);
    const isJson = (response.headers.get("content-type") || "").includes("json");
    if (response.ok && answer === "blob") return response.blob();
    const data = isJson ? await response.json().catch(() => null) : null;
    if (!response.ok) {
      let text = (data && data.error) || `The server refused the request (${response.status}).`;
      if (response.status === 401 || response.status === 403) {
        text += " Open the page with the URL the server printed (it holds the access token).";
      }
      throw new ApiError(text, response.status);
    }
    return data;
  }

  // Run an action, showing its error in the page. `doing` ("Evaluating…") replaces the status line while it runs,
  // and becomes "Evaluating failed: ..." if it fails, so a status never outlives the action it was about.
  async function attempt(action, doing) {
    if (doing) showStatus(doing);
    try {
      return await action();
    } catch (error) {
      const text = error instanceof ApiError ? error.message : `Something went wrong: ${error.message || error}`;
      if (doing) showStatus(`${doing.replace(/…$/, "")} failed: ${text}`);
      showError(text);
      return undefined;
    }
  }

  function setConnected(connected) {
    if (state.connected === connected) return;
    const wasDown = state.connected === false;
    state.connected = connected;
    const pill = $("#connection");
    pill.textContent = connected ? "Connected" : "Server unreachable, reconnecting…";
    pill.classList.toggle("bad", !connected);
    if (connected && wasDown) {
      restartStream();
      refresh(true);
    }
  }

  // ------------------------------------------------------------------ class list
  const list = $("#class-list");
  const template = $("#class-template");

  function renderClasses() {
    $("#no-classes").hidden = state.classes.length > 0;
    const keep = new Map([...list.children].map((li) => [li.dataset.classId, li]));
    const canTeachLive = liveAvailable();
    state.classes.forEach((klass, position) => {
      let card = keep.get(String(klass.id));
      if (!card) card = buildCard(klass);
      keep.delete(String(klass.id));
      list.append(card);  // moves it into order
      fillCard(card, klass, position, canTeachLive);
    });
    keep.forEach((card) => card.remove());
  }

  function buildCard(klass) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.classId = klass.id;
    $(".add-frame", card).addEventListener("click", () => attempt(() => addFrame(Number(card.dataset.classId)), "Adding the frame…"));
    const record = $(".record", card);
    const start = (event) => {
      event.preventDefault();
      startRecording(Number(card.dataset.classId), record);
    };
    const stop = () => stopRecording(record);
    record.addEventListener("pointerdown", start);
    ["pointerup", "pointerleave", "pointercancel"].forEach((name) => record.addEventListener(name, stop));
    record.addEventListener("keydown", (event) => {
      if ((event.key === " " || event.key === "Enter") && !event.repeat) start(event);
    });
    record.addEventListener("keyup", (event) => {
      if (event.key === " " || event.key === "Enter") stop();
    });
    record.addEventListener("contextmenu", (event) => event.preventDefault());
    for (const input of [$(".upload-input", card), $(".capture-input", card)]) {
      input.addEventListener("change", () => {
        const files = [...input.files];
        input.value = "";
        attempt(() => uploadFiles(Number(card.dataset.classId), files), "Uploading…");
      });
    }
    $(".rename-button", card).addEventListener("click", () => openRename(card));
    $(".rename-cancel", card).addEventListener("click", () => closeRename(card));
    $(".rename", card).addEventListener("submit", (event) => {
      event.preventDefault();
      attempt(async () => {
        const result = await api("PATCH", `api/classes/${card.dataset.classId}`, { name: $(".rename-input", card).value });
        closeRename(card);
        showStatus(`Renamed to ${result.class ? result.class.name : $(".rename-input", card).value}.`);
        await refresh(true);
      }, "Renaming…");
    });
    $(".delete-class", card).addEventListener("click", () => {
      const name = $(".class-name", card).textContent;
      if (!confirm(`Delete class "${name}" and all its examples?`)) return;
      attempt(async () => {
        await api("DELETE", `api/classes/${card.dataset.classId}`);
        showStatus(`Deleted class ${name}.`);
        await refresh(true);
      }, "Deleting…");
    });
    card.addEventListener("dragover", (event) => {
      event.preventDefault();
      card.classList.add("drop");
    });
    card.addEventListener("dragleave", () => card.classList.remove("drop"));
    card.addEventListener("drop", (event) => {
      event.preventDefault();
      card.classList.remove("drop");
      const files = [...event.dataTransfer.files];
      if (files.length) attempt(() => uploadFiles(Number(card.dataset.classId), files), "Uploading…");
    });
    return card;
  }

  function fillCard(card, klass, position, canTeachLive) {
    const key = position < 9 ? String(position + 1) : "";
    card.dataset.className = klass.name;
    $(".key", card).textContent = key;
    $(".class-name", card).textContent = klass.name;
    $(".count", card).textContent = `${klass.examples} example${klass.examples === 1 ? "" : "s"}`;
    const add = $(".add-frame", card);
    add.textContent = key ? `Add frame (${key})` : "Add frame";
    add.setAttribute("aria-label", `Add the current frame to ${klass.name}${key ? `, key ${key}` : ""}`);
    add.disabled = !canTeachLive || !klass.trainable;
    const record = $(".record", card);
    record.setAttribute("aria-label", `Hold to record frames into ${klass.name}`);
    record.disabled = !canTeachLive || !klass.trainable;
    $(".upload", card).setAttribute("aria-label", `Upload photos to ${klass.name}`);
    $(".upload-input", card).setAttribute("aria-label", `Upload photos to ${klass.name}`);
    $(".capture-input", card).setAttribute("aria-label", `Take a photo for ${klass.name}`);
    $(".rename-button", card).setAttribute("aria-label", `Rename ${klass.name}`);
    $(".delete-class", card).setAttribute("aria-label", `Delete ${klass.name}`);
    const thumbs = $(".thumbs", card);
    const wanted = klass.recent.map(String);
    if (thumbs.dataset.ids !== wanted.join(",")) {
      thumbs.dataset.ids = wanted.join(",");
      thumbs.replaceChildren(...klass.recent.map((id) => thumbnail(id, klass.name)));
      if (klass.examples > klass.recent.length) {
        const more = document.createElement("li");
        more.className = "more";
        more.textContent = `+${klass.examples - klass.recent.length}`;
        thumbs.append(more);
      }
    }
  }

  function thumbnail(id, name) {
    const item = document.createElement("li");
    item.dataset.exampleId = id;
    const img = document.createElement("img");
    img.src = `api/examples/${id}/thumbnail.jpg`;
    img.alt = `Example ${id} of ${name}`;
    img.loading = "lazy";
    img.width = 56;
    img.height = 56;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-example";
    remove.textContent = "×";
    remove.setAttribute("aria-label", `Remove example ${id} of ${name}`);
    remove.addEventListener("click", () => attempt(async () => {
      await api("DELETE", `api/examples/${id}`);
      item.remove();
      showStatus(`Removed example ${id}.`);
      await refresh(true);
    }, "Removing the example…"));
    item.append(img, remove);
    return item;
  }

  function openRename(card) {
    state.renaming = card.dataset.classId;
    const form = $(".rename", card);
    form.hidden = false;
    const input = $(".rename-input", card);
    input.value = card.dataset.className;
    input.focus();
    input.select();
  }

  function closeRename(card) {
    state.renaming = null;
    $(".rename", card).hidden = true;
  }

  $("#add-class").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#new-class-name");
    attempt(async () => {
      const result = await api("POST", "api/classes", { name: input.value });
      input.value = "";
      showStatus(`Added class ${result.class.name}.`);
      await refresh(true);
    }, "Adding the class…");
  });

  // ------------------------------------------------------------------ teaching
  function liveAvailable() {
    return Boolean(state.webcam) || Boolean(state.source && state.source.kind && state.live);
  }

  async function captureWebcam() {
    const video = $("#webcam");
    const canvas = $("#capture");
    const scale = Math.min(1, 480 / Math.max(video.videoWidth, video.videoHeight));
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
  }

  async function addFrame(classId) {
    if (!classId) return undefined;
    let result;
    if (state.webcam) {
      const form = new FormData();
      form.append("files", await captureWebcam(), "frame.jpg");
      result = await api("POST", `api/classes/${classId}/examples`, form);
    } else {
      if (!state.live) throw new ApiError("There is no live frame yet: wait for the camera, or upload photos.", 0);
      result = await api("POST", `api/classes/${classId}/frames`, { frame: state.live.frame });
    }
    announceAdded(result);
    await refresh(true);
    return result;
  }

  function announceAdded(result) {
    showStatus(`Added ${result.added.length} example${result.added.length === 1 ? "" : "s"} to ${result.class.name} ` +
               `(now ${result.class.examples}).`);
  }

  const recording = new Map();
  function startRecording(classId, button) {
    if (button.disabled || recording.has(button)) return;
    const run = { stop: false, added: 0 };
    recording.set(button, run);
    button.classList.add("active");
    button.setAttribute("aria-pressed", "true");
    (async () => {
      let lastFrame = null;
      while (!run.stop) {
        const frame = state.live ? state.live.frame : null;
        if (!state.webcam && frame === lastFrame) {
          await new Promise((resolve) => setTimeout(resolve, 40));
          continue;
        }
        lastFrame = frame;
        const result = await attempt(() => addFrame(classId));
        if (!result) break;
        run.added += 1;
        button.textContent = `Recording… ${run.added}`;
        if (state.webcam) await new Promise((resolve) => setTimeout(resolve, 150));
      }
      recording.delete(button);
      button.classList.remove("active");
      button.setAttribute("aria-pressed", "false");
      button.textContent = "Hold to record";
      if (run.added) showStatus(`Recorded ${run.added} frames.`);
    })();
  }
  function stopRecording(button) {
    const run = recording.get(button);
    if (run) run.stop = true;
  }

  async function uploadFiles(classId, files) {
    const images = files.filter((file) => !file.type || file.type.startsWith("image/"));
    if (!images.length) throw new ApiError("Choose image files (JPEG, PNG, …).", 0);
    let added = 0;
    for (const [index, file] of images.entries()) {   // one request per photo: each is stored before the next is sent
      showStatus(`Uploading photo ${index + 1} of ${images.length}…`);
      const form = new FormData();
      form.append("files", file, "photo");
      try {
        const result = await api("POST", `api/classes/${classId}/examples`, form);
        added += result.added.length;
        announceAdded(result);
      } catch (error) {
        showError(`Photo ${index + 1} (${file.name}): ${error.message}`);
      }
    }
    showStatus(`Uploaded ${added} of ${images.length} photo${images.length === 1 ? "" : "s"}.`);
    await refresh(true);
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
    if (/^[1-9]$/.test(event.key)) {
      const klass = state.classes[Number(event.key) - 1];
      if (klass) {
        event.preventDefault();
        attempt(() => addFrame(klass.id), "Adding the frame…");
      }
    }
  });

  // ------------------------------------------------------------------ model actions
  $("#undo").addEventListener("click", () => attempt(async () => {
    const result = await api("POST", "api/undo");
    showStatus(result.undone ? `Removed example ${result.undone.id}.` : "Nothing to undo.");
    await refresh(true);
  }, "Undoing…"));

  $("#finetune").addEventListener("click", () => attempt(async () => {
    const button = $("#finetune");
    button.disabled = true;
    try {
      const result = await api("POST", "api/finetune", {});
      showStatus(`Fine-tuned in ${result.steps} steps: loss ${result.loss_before.toFixed(3)} → ${result.loss_after.toFixed(3)}.`);
    } finally {
      button.disabled = false;
    }
  }, "Fine-tuning…"));

  $("#evaluate").addEventListener("click", () => attempt(async () => {
    const result = await api("GET", "api/evaluation");
    renderEvaluation(result);
    showStatus(`Evaluated ${result.examples} examples.`);
  }, "Evaluating…"));

  const percent = (value) => (value === null || value === undefined ? "n/a" : `${Math.round(value * 100)}%`);

  function cell(tag, text, attributes = {}) {
    const element = document.createElement(tag);
    element.textContent = text;
    for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
    return element;
  }

  // A wide table scrolls inside its own box instead of widening the page (a phone, many classes).
  function scrolling(table) {
    const box = document.createElement("div");
    box.className = "table-scroll";
    box.tabIndex = 0;   // reachable by keyboard, so it can be scrolled without a pointer
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", table.caption ? table.caption.textContent : "table");
    box.append(table);
    return box;
  }

  function renderEvaluation(result) {
    const box = $("#evaluation");
    box.hidden = false;
    box.replaceChildren();
    // on how many examples, with its 95 % interval: "Leave-one-out 29 / 60 right, 95 % interval 0.35-0.62"
    const summary = result.summary || `leave-one-out ${percent(result.accuracy)} (${result.examples} examples)`;
    box.append(cell("h3", summary.charAt(0).toUpperCase() + summary.slice(1)));
    if (result.kept) renderKeptReport(box, result.kept);
    if (result.labels.length) {
      const table = document.createElement("table");
      table.append(cell("caption", "Accuracy per class"));
      const head = table.createTHead().insertRow();
      head.append(cell("th", "Class", { scope: "col" }), cell("th", "Accuracy", { scope: "col" }));
      const body = table.createTBody();
      for (const label of result.labels) {
        const row = body.insertRow();
        const counted = (result.per_class_right || {})[label];
        const figure = counted ? `${percent(result.per_class[label])} (${counted.count} / ${counted.of})` : percent(result.per_class[label]);
        row.append(cell("th", label, { scope: "row" }), cell("td", figure));
      }
      box.append(scrolling(table));
    }
    if (result.confusion.length) {
      const table = document.createElement("table");
      table.className = "confusion";
      table.append(cell("caption", "Confusion matrix: rows are the true class, columns the predicted class"));
      const head = table.createTHead().insertRow();
      head.append(cell("td", ""));
      result.labels.forEach((label) => head.append(cell("th", label, { scope: "col" })));
      const body = table.createTBody();
      result.confusion.forEach((counts, row) => {
        const line = body.insertRow();
        line.append(cell("th", result.labels[row], { scope: "row" }));
        counts.forEach((count, column) => {
          const td = cell("td", String(count));
          if (count && row === column) td.className = "hit";
          else if (count) td.className = "miss";
          line.append(td);
        });
      });
      box.append(scrolling(table));
    }
    if (result.notes.length) {
      const notes = document.createElement("ul");
      notes.className = "notes";
      result.notes.forEach((note) => notes.append(cell("li", note)));
      box.append(notes);
    }
  }

  // ------------------------------------------------------------------ the model the session started from
  // A classifier's own classes are kept as one card (never one card per class), with a search over their names.
  const origin = { value: null, labels: null };

  function renderOrigin(info) {
    origin.value = info || null;
    const box = $("#origin");
    box.hidden = !info;
    if (!info) return;
    const count = `${info.classes} class${info.classes === 1 ? "" : "es"}`;
    let text = `Started from ${info.model}.`;
    if (info.kind === "extractor") text = `Started from ${info.model}, an embedding extractor.`;
    else if (info.kind === "imprinting") text = `Continues ${info.model}, an imprinted model: its classes are listed below.`;
    else if (info.kept) text = `Started from ${info.model}, keeping its ${count}.`;
    else if (info.kind === "classifier" && info.can_keep) text = `Started from ${info.model}, a classifier with ${count}: so far only its embedding is used.`;
    else if (info.kind === "classifier") {
      text = `Started from ${info.model}, a classifier with ${count}; they are not kept (only its embedding is used). ` +
             "To keep them, start a new state folder with --keep-classes.";
    }
    $("#origin-text").textContent = text;
    $("#keep-offer").hidden = !info.can_keep;
    $("#keep-classes").textContent = `Keep its ${count}`;
    $("#own-classes").hidden = !info.kept;
    $("#own-classes-heading").textContent = `${count} of ${info.model}`;
    $("#unkeep-classes").hidden = !(info.kept && state.classes.length === 0);
    if (!info.kept) origin.labels = null;
    const finetune = $("#finetune");
    finetune.disabled = Boolean(info.kept);
    finetune.title = info.kept ? "Classes added after a classifier's own are not fine-tuned." : "";
  }

  async function setKeepClasses(keep) {
    const result = await api("POST", "api/origin", { keep_classes: keep });
    showStatus(keep ? `Keeping the ${result.classes} classes of ${result.model}.` : `Not keeping the classes of ${result.model}.`);
    origin.labels = null;
    await refresh(true);
  }
  $("#keep-classes").addEventListener("click", () => attempt(() => setKeepClasses(true)));
  $("#unkeep-classes").addEventListener("click", () => attempt(() => setKeepClasses(false)));

  async function findOwnClasses() {
    const query = $("#own-search").value.trim().toLowerCase();
    if (!origin.labels) origin.labels = (await api("GET", "api/origin")).labels;
    const matches = query ? origin.labels.filter((name) => name.toLowerCase().includes(query)) : [];
    const shown = matches.slice(0, 30).map((name) => cell("li", name));
    if (matches.length > shown.length) shown.push(cell("li", `… and ${matches.length - shown.length} more`, { class: "more" }));
    if (query && !matches.length) shown.push(cell("li", "None of its classes is called that.", { class: "more" }));
    $("#own-matches").replaceChildren(...shown);
  }
  $("#own-search").addEventListener("input", () => attempt(findOwnClasses));

  // How the model's own classes fared on the examples (a state keeping them): shots, look-alikes, warnings.
  function renderKeptReport(box, kept) {
    const section = document.createElement("section");
    section.className = "kept-report";
    section.append(cell("h4", `The model's ${kept.original_classes} own classes on your examples`),
                   cell("p", `${kept.shots_kept_by_original} of ${kept.shots_total} examples still score highest as one of them.`,
                        { class: "note" }));
    if (kept.shots.length) {
      const table = document.createElement("table");
      table.append(cell("caption", "What the model answered on each class's examples before it learned the class"));
      const head = table.createTHead().insertRow();
      for (const title of ["Class", "Examples", "The model's answer", "Still its own"]) head.append(cell("th", title, { scope: "col" }));
      const body = table.createTBody();
      for (const shot of kept.shots) {
        const row = body.insertRow();
        row.append(cell("th", shot.label, { scope: "row" }), cell("td", String(shot.shots)),
                   cell("td", `${shot.original_top} (${shot.original_top_count} of ${shot.shots}, ${percent(shot.original_top_score)})`),
                   cell("td", String(shot.kept_by_original)));
      }
      section.append(table);
    }
    if (kept.warnings.length) {
      const warnings = document.createElement("ul");
      warnings.className = "warnings";
      kept.warnings.forEach((warning) => warnings.append(cell("li", warning)));
      section.append(warnings);
    }
    box.append(section);
  }

  // Downloads are fetched first, so a refusal (nothing taught yet) is shown instead of a silent failed download.
  for (const id of ["#download-model", "#download-labels"]) {
    const link = $(id);
    link.addEventListener("click", (event) => {
      event.preventDefault();
      const name = link.getAttribute("download");
      attempt(async () => {
        const blob = await api("GET", link.getAttribute("href"), undefined, "blob");
        const url = URL.createObjectURL(blob);
        const save = document.createElement("a");
        save.href = url;
        save.download = name;
        document.body.append(save);
        save.click();
        save.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
        showStatus(`Downloaded ${name} (${blob.size.toLocaleString()} bytes).`);
      }, `Preparing ${name}…`);
    });
  }

  // ------------------------------------------------------------------ live view
  const stream = $("#stream");
  function restartStream() {
    if (!state.source || !state.source.kind || state.webcam || document.hidden) {
      stream.removeAttribute("src");
      stream.hidden = true;
      return;
    }
    stream.hidden = false;
    stream.src = `api/stream.mjpg?t=${Date.now()}`;
  }
  stream.addEventListener("error", () => {
    setTimeout(() => { if (stream.getAttribute("src")) restartStream(); }, 2000);
  });

  // "gear (91%)", or "unknown (closest: gear 40%)" when the session's unknown rule says none of the classes.
  function answer(prediction) {
    const top = prediction.top;
    const closest = prediction.closest;
    return prediction.unknown && closest ? `unknown (closest: ${closest.label} ${percent(closest.score)})` : `${top.label} (${percent(top.score)})`;
  }

  function renderBars(prediction) {
    fillBars($("#bars"), prediction);
    const top = prediction && prediction.top;
    const label = top ? top.label : null;
    const unknown = Boolean(prediction && prediction.unknown);   // the session's unknown rule: none of the classes
    $("#live-panel").dataset.top = label || "";
    $("#live-panel").dataset.unknown = String(unknown);
    const taught = state.classes.some((klass) => klass.examples) || Boolean(origin.value && origin.value.kept);
    const idle = !taught ? "Nothing taught yet." : liveAvailable() ? "No prediction." : "No live view: test a photo to see a prediction.";
    $("#prediction-text").textContent = label ? `Prediction: ${answer(prediction)}` : idle;
    $("#prediction-text").classList.toggle("unknown", unknown);
    if (label !== state.topLabel) {   // announce only changes of the class, so a screen reader is not flooded
      state.topLabel = label;
      $("#prediction-announce").textContent = label ? `Prediction: ${label}` : idle;
    }
  }

  function fillBars(bars, prediction) {
    const items = (prediction && prediction.top_k) || [];
    bars.replaceChildren(...items.map((entry) => {
      const item = document.createElement("li");
      const label = cell("span", entry.label, { class: "bar-label" });
      const track = cell("span", "", { class: "bar-track", "aria-hidden": "true" });
      const fill = cell("span", "", { class: "bar-fill" });
      fill.style.width = `${Math.max(0, Math.min(1, entry.score)) * 100}%`;
      track.append(fill);
      item.append(label, track, cell("span", percent(entry.score), { class: "bar-value" }));
      return item;
    }));
  }

  // Test one photo: what the taught model says about it (no camera needed; nothing is added).
  const testInput = $("#test-photo-input");
  testInput.addEventListener("change", () => {
    const file = testInput.files[0];
    testInput.value = "";
    if (!file) return;
    attempt(async () => {
      const result = await api("POST", "api/predict", file);
      const box = $("#photo-test");
      const image = $("#photo-test-image");
      if (image.src) URL.revokeObjectURL(image.src);
      image.src = URL.createObjectURL(file);
      image.alt = `The tested photo, ${file.name}`;
      const top = result.top;
      const text = top ? `${file.name}: ${answer(result)}` : `${file.name}: nothing taught yet`;
      $("#photo-test-result").textContent = text;
      box.dataset.top = top ? top.label : "";
      fillBars($("#photo-test-bars"), result);
      box.hidden = false;
      showStatus(`Tested ${file.name}: ${top ? top.label : "nothing taught yet"}.`);
    }, `Testing ${file.name}…`);
  });

  function onLive(live) {
    state.live = live;
    $("#live-panel").dataset.frame = live ? String(live.frame) : "";
    if (!state.webcam) renderBars(live);
    updateView();
  }

  function onSource(source) {
    const hadKind = state.source && state.source.kind;
    state.source = source;
    const problem = $("#source-problem");
    if (source && source.kind && source.status !== "live" && source.status !== "starting") {
      problem.hidden = false;
      const trying = source.status === "reconnecting" ?
        ` Reopening it (attempt ${source.attempt} of ${source.retries})…` : " Gave up reopening it.";
      $("#source-error").textContent = `Camera problem: ${source.error || "no frames"}.${trying} Uploads still work.`;
      $("#retry-source").hidden = source.status !== "failed";
    } else {
      problem.hidden = true;
      if (source && source.kind && source.status === "live" && (!hadKind || stream.hidden)) restartStream();
    }
    updateView();
  }

  function updateView() {
    const deviceView = Boolean(state.source && state.source.kind) && !state.webcam;
    $("#no-view").hidden = deviceView || Boolean(state.webcam);
    if (!deviceView && !stream.hidden) restartStream();
    const canTeachLive = liveAvailable();
    document.querySelectorAll(".add-frame, .record").forEach((button) => {
      const card = button.closest(".class-card");
      const klass = state.classes.find((item) => String(item.id) === card.dataset.classId);
      button.disabled = !canTeachLive || !(klass && klass.trainable);
    });
  }

  $("#retry-source").addEventListener("click", () => attempt(async () => {
    const result = await api("POST", "api/source/retry");
    onSource(result.source);
  }));

  // ------------------------------------------------------------------ the browser's own camera
  const webcamButton = $("#webcam-toggle");
  const webcamNote = $("#webcam-note");
  if (window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    webcamButton.hidden = false;
  } else {
    webcamNote.hidden = false;
    webcamNote.textContent = "This browser's camera can only be used when the page is opened on localhost or over HTTPS. " +
      "Here, use Upload or Take photo (the phone's camera) on a class.";
  }
  webcamButton.addEventListener("click", () => attempt(async () => {
    if (state.webcam) {
      stopWebcam();
      return;
    }
    let media;
    try {
      media = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (error) {
      throw new ApiError(`The browser's camera is not available: ${error.message || error.name}.`, 0);
    }
    state.webcam = media;
    const video = $("#webcam");
    video.srcObject = media;
    video.hidden = false;
    await video.play();
    webcamButton.textContent = "Stop this browser's camera";
    restartStream();
    updateView();
    predictWebcam();
  }));

  function stopWebcam() {
    if (!state.webcam) return;
    state.webcam.getTracks().forEach((track) => track.stop());
    state.webcam = null;
    const video = $("#webcam");
    video.srcObject = null;
    video.hidden = true;
    webcamButton.textContent = "Use this browser's camera";
    restartStream();
    renderBars(state.live);
    updateView();
  }

  async function predictWebcam() {
    while (state.webcam) {
      const video = $("#webcam");
      if (video.videoWidth) {
        try {
          const result = await api("POST", "api/predict", await captureWebcam());
          if (state.webcam) renderBars(result);
        } catch (error) {
          if (error.status !== 0) showError(error.message);
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  // ------------------------------------------------------------------ unsure frames (the session's queue)
  let uncertainVersion = -1;
  const uncertainChoice = new Map();   // item id -> the class chosen in its list
  async function loadUncertain() {
    let data;
    try {
      data = await api("GET", "api/uncertain");
    } catch (error) {
      return;
    }
    uncertainVersion = data.version;
    const panel = $("#uncertain-panel");
    panel.dataset.count = String(data.items.length);
    $("#uncertain-count").textContent = data.items.length ? `(${data.items.length})` : "";
    $("#no-uncertain").hidden = data.items.length > 0;
    $("#uncertain-rule").textContent = data.rule && data.rule.text ? `Unknown answer: ${data.rule.text}.` : "";
    $("#uncertain-list").replaceChildren(...data.items.map(uncertainItem));
  }

  function uncertainItem(item) {
    const row = cell("li", "", { class: "uncertain-item", "data-id": String(item.id), "data-reason": item.reason });
    const picture = cell("img", "", { alt: `Unsure frame ${item.frame === null ? "" : item.frame}: ${item.text}` });
    picture.src = `api/uncertain/${item.id}/thumbnail.jpg`;
    const seen = item.seen > 1 ? ` · seen ${item.seen}×` : "";
    const actions = cell("div", "", { class: "uncertain-actions" });
    const choice = cell("select", "", { class: "uncertain-class", "aria-label": "Class to teach this frame to" });
    state.classes.forEach((klass) => choice.append(cell("option", klass.name, { value: String(klass.id) })));
    const closest = item.closest && state.classes.find((klass) => klass.name === item.closest.label);
    if (closest) choice.value = String(closest.id);
    if (uncertainChoice.has(item.id)) choice.value = uncertainChoice.get(item.id);   // kept across re-renders
    choice.addEventListener("change", () => uncertainChoice.set(item.id, choice.value));
    const teach = cell("button", "Teach", { type: "button", class: "uncertain-teach primary" });
    teach.disabled = !item.teachable || !state.classes.length;
    teach.addEventListener("click", () => attempt(async () => {
      await api("POST", `api/uncertain/${item.id}/teach`, { class_id: Number(choice.value) });
      await Promise.all([loadUncertain(), refresh(true)]);
    }));
    const dismiss = cell("button", "Dismiss", { type: "button", class: "uncertain-dismiss" });
    dismiss.addEventListener("click", () => attempt(async () => {
      await api("DELETE", `api/uncertain/${item.id}`);
      await loadUncertain();
    }));
    actions.append(choice, teach, dismiss);
    row.append(picture, cell("span", item.text + seen, { class: "uncertain-text" }), actions);
    return row;
  }

  // ------------------------------------------------------------------ server state: events + polling
  async function refresh(force = false) {
    let data;
    try {
      data = await api("GET", "api/state");
    } catch (error) {
      if (error.status === 401 || error.status === 403) showError(error.message);
      return;
    }
    onSource(data.source);
    if (data.live && !state.live) onLive(data.live);
    if (force || data.revision !== state.revision || state.classes.length !== data.classes.length) {
      state.revision = data.revision;
      state.classes = data.classes;
      renderClasses();
      updateView();
      if (!state.webcam) renderBars(state.live);   // the idle text follows what is taught
      loadUncertain();   // its class choices follow the classes
    }
    renderOrigin(data.origin);
  }

  let events = null;
  function openEvents() {
    if (events || document.hidden) return;
    events = new EventSource("api/events");
    events.addEventListener("live", (event) => onLive(JSON.parse(event.data)));
    events.addEventListener("source", (event) => onSource(JSON.parse(event.data)));
    events.addEventListener("uncertain", (event) => {
      if (JSON.parse(event.data).version !== uncertainVersion) loadUncertain();
    });
    events.addEventListener("changed", (event) => {
      if (JSON.parse(event.data).revision !== state.revision) refresh();
    });
    events.addEventListener("open", () => setConnected(true));
    events.addEventListener("error", () => {
      if (events && events.readyState === EventSource.CLOSED) {   // the browser gave up: start again later
        events.close();
        events = null;
        setTimeout(openEvents, 2000);
      }
    });
  }
  function closeEvents() {
    if (events) events.close();
    events = null;
  }

  // A hidden tab drops its streams (browsers allow ~6 connections per server).
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      closeEvents();
      stream.removeAttribute("src");
    } else {
      openEvents();
      restartStream();
      refresh(true);
    }
  });

  setInterval(() => { if (!document.hidden) refresh(); }, POLL_MS);
  refresh(true).then(() => {
    openEvents();
    restartStream();
  });
})();
