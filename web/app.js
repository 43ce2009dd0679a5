// modelrun web page: upload images with presigned URLs, run a batch, follow it live, show results and errors;
// or predict one image at once. Detection boxes and segmentation masks are drawn over the image on a canvas.
// Datasets: list the caller's, upload images into a new one, run a batch over one, browse its images, predict one
// by id and show each image's prediction history.
// Plain modern JavaScript, no build step. Reads config.json next to this file:
//   {"apiUrl": "https://.../v1/", "webSocketUrl": "wss://.../v1" (optional), "apiKey": "..." (local mode only)}
"use strict";

(() => {
  const KEY_STORAGE = "modelrun.apiKey";
  const NAMES_STORAGE = "modelrun.names.";
  const UPLOADS_PER_CALL = 1000; // POST /uploads accepts at most 1,000 files per call
  const UPLOAD_CONCURRENCY = 6;
  const PAGE_SIZE = 100;
  const IMAGES_PAGE_SIZE = 50;
  const POLL_MS = 1000;
  const SOCKET_CHECK_MS = 10000; // a GET now and then while the socket is quiet, in case a message was lost
  const TERMINAL = new Set(["COMPLETED", "COMPLETED_WITH_ERRORS", "FAILED"]);
  const TYPES_BY_EXTENSION = {
    png: "image/png",
    jpg: "image/jpeg",
    jpeg: "image/jpeg",
    gif: "image/gif",
    bmp: "image/bmp",
    tif: "image/tiff",
    tiff: "image/tiff",
    webp: "image/webp",
    dcm: "application/dicom",
    dicom: "application/dicom",
  };
  const DICOM_TYPE = "application/dicom";
  // A DICOM file has "DICM" after a 128-byte preamble; scanner exports often have no extension to go by.
  const DICOM_MARKER_OFFSET = 128;
  // The image types POST /uploads accepts (the format itself is read from the bytes by the model's preprocessing).
  const ACCEPTED_TYPES = new Set([...Object.values(TYPES_BY_EXTENSION), "image/jpg", "image/x-ms-bmp"]);
  // Box colours by the label's index in the model's labels: bright, and far apart from each other.
  const BOX_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#00c7be", "#ff2d55"];
  const MASK_ALPHA = 140; // of 255: the image stays visible under the mask
  const BOX_LINE_PX = 2;
  const LABEL_FONT_PX = 12;
  const SUMMARY_ENTRIES = 3;

  const $ = (id) => document.getElementById(id);
  const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

  const state = {
    config: null,
    apiKey: null,
    files: [],
    busy: false,
    batchId: null,
    names: new Map(), // S3 key -> the file name the user picked
    uploaded: new Map(), // S3 key -> the File uploaded from this page (its result can be drawn over it)
    models: new Map(), // model name -> its latest spec (labels give the box colours)
    batchModel: null,
    views: new Map(), // a result view's element -> {url, observer} to release when it shows another image
    socket: null,
    source: "", // how progress arrives: "over the WebSocket API" or "by polling"
    pollTimer: null,
    checkTimer: null,
    finished: false,
    resultsToken: null,
    errorsToken: null,
    datasetFiles: [], // files chosen for a new dataset
    datasetsToken: null,
    dataset: null, // the dataset picked, as GET /datasets/{id} last answered
    datasetTimer: null,
    imagesToken: null,
    images: new Map(), // image id -> S3 key, for the picked dataset's images listed so far
    history: null, // {imageId, token}: the image whose prediction history is shown
    // Per dataset id, what this page uploaded into it: S3 key -> the name the user picked, and -> the File itself
    // (its results can then be drawn over the image without asking the API for a preview).
    datasetNames: new Map(),
    datasetUploads: new Map(),
  };

  class ApiError extends Error {
    constructor(code, message, status = 0) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  // -- talking to the API ------------------------------------------------------------------------------------
  async function readResponse(response) {
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const error = data && data.error;
      if (error && error.code) throw new ApiError(error.code, error.message || "", response.status);
      const message = (data && data.message) || text.slice(0, 500) || response.statusText;
      throw new ApiError(`http_${response.status}`, message, response.status);
    }
    return data;
  }

  function apiUrl(path) {
    return new URL(path.replace(/^\/+/, ""), state.config.apiUrl);
  }

  async function api(path, { method = "GET", body, raw, headers = {} } = {}) {
    const url = apiUrl(path);
    const sent = { "x-api-key": state.apiKey, ...headers };
    if (body !== undefined) sent["Content-Type"] = "application/json";
    if (raw !== undefined) sent["Content-Type"] = raw.type;
    const payload = raw !== undefined ? raw.data : body === undefined ? undefined : JSON.stringify(body);
    let response;
    try {
      response = await fetch(url, { method, headers: sent, body: payload });
    } catch (error) {
      throw new ApiError("network_error", `could not reach the API at ${url.origin} (${error.message})`);
    }
    return readResponse(response);
  }

  async function putFile(upload, file) {
    let response;
    try {
      response = await fetch(upload.url, { method: "PUT", headers: upload.headers || {}, body: file });
    } catch (error) {
      throw new ApiError(
        "upload_failed",
        `${file.name}: could not reach the storage endpoint ${new URL(upload.url).origin} (${error.message}); ` +
          "check the bucket's CORS rules allow this page's origin",
      );
    }
    if (!response.ok) {
      const xml = new DOMParser().parseFromString(await response.text(), "application/xml");
      const code = xml.querySelector("Code")?.textContent || `http_${response.status}`;
      const message = xml.querySelector("Message")?.textContent || response.statusText;
      throw new ApiError("upload_failed", `${file.name}: storage answered ${response.status} ${code}: ${message}`);
    }
  }

  // -- messages to the user ----------------------------------------------------------------------------------
  function showError(error) {
    const code = error instanceof ApiError ? error.code : "error";
    $("alert-code").textContent = code;
    $("alert-message").textContent = error.message || String(error);
    $("alert").hidden = false;
    if (code === "invalid_api_key" && !state.config?.apiKey) {
      sessionStorage.removeItem(KEY_STORAGE);
      state.apiKey = null;
      showKeyForm();
    }
  }

  function clearError() {
    $("alert").hidden = true;
  }

  function setStatus(text) {
    $("submit-status").textContent = text;
  }

  function showKeyForm() {
    $("change-key").hidden = true;
    $("key-section").hidden = false;
    $("api-key").focus();
  }

  // -- models ------------------------------------------------------------------------------------------------
  async function loadModels() {
    const select = $("model");
    const catalogue = await api("models");
    const latest = new Map();
    for (const spec of catalogue.models || []) latest.set(spec.name, spec); // sorted by name then version
    select.replaceChildren();
    for (const [name, spec] of latest) {
      const option = new Option(`${name} (version ${spec.version})`, name);
      option.dataset.details = describeModel(spec);
      select.append(option);
    }
    if (!latest.size) select.append(new Option("No models on this stack", ""));
    if (catalogue.default_model && latest.has(catalogue.default_model)) select.value = catalogue.default_model;
    select.disabled = !latest.size;
    state.models = latest;
    showModelDetails();
    updateSubmit();
  }

  function describeModel(spec) {
    const parts = [];
    if (spec.description) parts.push(spec.description);
    const steps = Array.isArray(spec.transforms) ? spec.transforms : [];
    const sized = steps.filter((step) => Array.isArray(step.size) && !step.keep_aspect).pop();
    const color = steps.find((step) => step.op === "color");
    if (sized) parts.push(`input ${sized.size.join("×")} ${color ? color.mode : "RGB"}`);
    if (spec.task && spec.task !== "classification") parts.push(spec.task);
    if (Array.isArray(spec.labels)) parts.push(`${spec.labels.length} labels`);
    return parts.join(" · ");
  }

  function showModelDetails() {
    const option = $("model").selectedOptions[0];
    $("model-details").textContent = option?.dataset.details || "";
  }

  // -- choosing files ----------------------------------------------------------------------------------------
  const dicomFiles = new WeakSet(); // files recognised as DICOM by their bytes (no extension or type to go by)

  function contentType(file) {
    if (dicomFiles.has(file)) return DICOM_TYPE;
    const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
    // Browsers type .dcm files inconsistently ("", "application/dicom", "application/octet-stream"): the
    // extension decides for DICOM.
    if (TYPES_BY_EXTENSION[extension] === DICOM_TYPE) return DICOM_TYPE;
    return file.type || TYPES_BY_EXTENSION[extension] || "";
  }

  const isDicom = (file) => contentType(file) === DICOM_TYPE;

  async function hasDicomMarker(file) {
    if (file.size < DICOM_MARKER_OFFSET + 4) return false;
    try {
      const head = new Uint8Array(await file.slice(DICOM_MARKER_OFFSET, DICOM_MARKER_OFFSET + 4).arrayBuffer());
      return String.fromCharCode(...head) === "DICM";
    } catch {
      return false;
    }
  }

  /** The chosen files with the images of `list` added (a file already chosen, or not an image, is left out). */
  async function acceptFiles(chosen, list) {
    const files = [...chosen];
    const seen = new Set(files.map((file) => `${file.name}|${file.size}|${file.lastModified}`));
    const skipped = [];
    for (const file of [...list]) {
      const id = `${file.name}|${file.size}|${file.lastModified}`;
      if (seen.has(id)) continue;
      if (!ACCEPTED_TYPES.has(contentType(file))) {
        if (!(await hasDicomMarker(file))) {
          skipped.push(file.name);
          continue;
        }
        dicomFiles.add(file);
      }
      seen.add(id);
      files.push(file);
    }
    if (skipped.length) {
      const types = "PNG, JPEG, GIF, BMP, TIFF, WebP or DICOM";
      showError(new ApiError("unsupported_media_type", `not a ${types} image, left out: ${skipped.join(", ")}`));
    }
    return files;
  }

  async function addFiles(list) {
    state.files = await acceptFiles(state.files, list);
    renderSelection();
  }

  function renderSelection() {
    renderFiles(state.files, $("selection"), $("file-list"));
    $("clear-files").hidden = !state.files.length;
    updateSubmit();
  }

  function renderFiles(files, selection, list) {
    const bytes = files.reduce((sum, file) => sum + file.size, 0);
    selection.textContent = files.length
      ? `${files.length} image${files.length === 1 ? "" : "s"} selected (${formatBytes(bytes)}).`
      : "No images selected.";
    list.replaceChildren(
      ...files.slice(0, 12).map((file) => {
        const item = document.createElement("li");
        item.textContent = file.name;
        return item;
      }),
    );
    if (files.length > 12) {
      const more = document.createElement("li");
      more.className = "more";
      more.textContent = `and ${files.length - 12} more`;
      list.append(more);
    }
  }

  function updateSubmit() {
    const ready = !state.busy && $("model").value && state.apiKey;
    $("submit").disabled = !ready || !state.files.length;
    $("predict-one").disabled = !ready || state.files.length !== 1;
    const dataset = state.dataset;
    $("create-dataset").disabled = state.busy || !state.apiKey;
    $("dataset-batch").disabled = !ready || dataset?.status !== "READY" || !dataset.images;
    $("predict-id").disabled = !ready || !dataset;
    $("delete-dataset").disabled = state.busy || !state.apiKey || !dataset;
    for (const button of document.querySelectorAll("#images-table .predict-image")) button.disabled = !ready;
    $("dataset-model").textContent = $("model").value || "(none chosen)";
  }

  function setBusy(busy) {
    state.busy = busy;
    for (const id of ["model", "files", "clear-files", "dataset-name", "dataset-files"]) $(id).disabled = busy;
    $("drop-zone").classList.toggle("disabled", busy);
    updateSubmit();
  }

  // -- submitting --------------------------------------------------------------------------------------------
  async function runPool(tasks, size) {
    let next = 0;
    const worker = async () => {
      while (next < tasks.length) {
        const task = tasks[next++];
        await task();
      }
    };
    await Promise.all(Array.from({ length: Math.min(size, tasks.length) }, worker));
  }

  function newIdempotencyKey() {
    if (window.crypto?.randomUUID) return crypto.randomUUID();
    return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }

  async function submitBatch(event) {
    event.preventDefault();
    if (state.busy || !state.files.length) return;
    clearError();
    setBusy(true);
    const files = [...state.files];
    const model = $("model").value;
    try {
      const keys = [];
      const names = new Map();
      const uploadedFiles = new Map();
      let uploaded = 0;
      for (let start = 0; start < files.length; start += UPLOADS_PER_CALL) {
        const group = files.slice(start, start + UPLOADS_PER_CALL);
        setStatus(`Preparing uploads (${start + group.length} of ${files.length})…`);
        const plan = await api("uploads", {
          method: "POST",
          body: { files: group.map((file) => ({ name: file.name, content_type: contentType(file), size: file.size })) },
        });
        const tasks = plan.uploads.map((upload, index) => async () => {
          await putFile(upload, group[index]);
          uploaded += 1;
          setStatus(`Uploaded ${uploaded} of ${files.length} images…`);
        });
        await runPool(tasks, UPLOAD_CONCURRENCY);
        plan.uploads.forEach((upload, index) => {
          keys.push(upload.key);
          names.set(upload.key, upload.name);
          uploadedFiles.set(upload.key, group[index]);
        });
      }
      setStatus("Submitting the batch…");
      const batch = await api("batches", {
        method: "POST",
        body: { model, images: keys },
        headers: { "Idempotency-Key": newIdempotencyKey() },
      });
      setStatus(`Batch ${batch.batch_id} submitted.`);
      saveNames(batch.batch_id, names);
      setAddress("batch", batch.batch_id);
      watchBatch(batch.batch_id, batch, names, uploadedFiles);
    } catch (error) {
      setStatus("");
      showError(error);
    } finally {
      setBusy(false);
    }
  }

  function saveNames(batchId, names) {
    try {
      sessionStorage.setItem(NAMES_STORAGE + batchId, JSON.stringify(Object.fromEntries(names)));
    } catch {
      // Too many names for session storage: the table falls back to the S3 key's file name.
    }
  }

  function loadNames(batchId) {
    try {
      return new Map(Object.entries(JSON.parse(sessionStorage.getItem(NAMES_STORAGE + batchId) || "{}")));
    } catch {
      return new Map();
    }
  }

  // -- following a batch -------------------------------------------------------------------------------------
  function watchBatch(batchId, submitted, names, uploaded) {
    stopWatching();
    state.batchId = batchId;
    state.finished = false;
    state.names = names || loadNames(batchId);
    state.uploaded = uploaded || new Map();
    releaseView($("result-view"));
    $("batch-id").textContent = batchId;
    $("progress-section").hidden = false;
    $("results-section").hidden = true;
    $("errors-section").hidden = true;
    $("new-batch").hidden = true;
    if (submitted) {
      const total = submitted.total || 0;
      renderProgress({ status: submitted.status, total, counts: { predicted: 0, failed: 0, pending: total }, percent: 0 });
    }
    $("progress-section").scrollIntoView({ behavior: "smooth", block: "start" });
    if (state.config.webSocketUrl && "WebSocket" in window) {
      openSocket(batchId);
    } else {
      startPolling(batchId, "This stack has no WebSocket API: checking every second.");
    }
  }

  function stopWatching() {
    if (state.socket) {
      const socket = state.socket;
      state.socket = null;
      try {
        if (socket.readyState === WebSocket.OPEN) {
          socket.send(JSON.stringify({ action: "unsubscribe", batch_id: state.batchId }));
        }
        socket.close(1000);
      } catch {
        // already closing
      }
    }
    clearTimeout(state.pollTimer);
    clearInterval(state.checkTimer);
    state.pollTimer = null;
    state.checkTimer = null;
  }

  function openSocket(batchId) {
    const url = new URL(state.config.webSocketUrl);
    if (!url.searchParams.has("api_key")) url.searchParams.set("api_key", state.apiKey);
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      startPolling(batchId, `The WebSocket could not be opened (${error.message}): checking every second.`);
      return;
    }
    state.socket = socket;
    let opened = false;
    $("progress-source").textContent = "Connecting to live progress…";
    socket.addEventListener("open", () => {
      opened = true;
      state.source = "live over the WebSocket API";
      socket.send(JSON.stringify({ action: "subscribe", batch_id: batchId }));
      $("progress-source").textContent = "Live progress over the WebSocket API.";
      state.checkTimer = setInterval(() => checkOnce(batchId), SOCKET_CHECK_MS);
    });
    socket.addEventListener("message", (event) => onSocketMessage(batchId, event));
    socket.addEventListener("close", () => {
      if (state.socket !== socket) return; // closed on purpose
      state.socket = null;
      clearInterval(state.checkTimer);
      if (state.finished || state.batchId !== batchId) return;
      startPolling(
        batchId,
        opened
          ? "The WebSocket closed: checking every second instead."
          : "Live progress is not available (the WebSocket refused the connection): checking every second.",
      );
    });
  }

  function onSocketMessage(batchId, event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.batch_id && message.batch_id !== batchId) return;
    if (message.type === "progress") {
      renderProgress(message);
    } else if (message.type === "completed") {
      renderProgress(message);
      finish(batchId, message);
    } else if (message.type === "error") {
      showError(new ApiError(message.code || "websocket_error", message.message || ""));
    }
  }

  async function checkOnce(batchId) {
    if (state.finished || state.batchId !== batchId) return;
    try {
      const job = await api(`batches/${encodeURIComponent(batchId)}`);
      if (state.finished || state.batchId !== batchId) return;
      if (TERMINAL.has(job.status)) {
        const progress = progressFromJob(job);
        renderProgress(progress);
        finish(batchId, progress);
      }
    } catch {
      // the socket is still the source; a failed check changes nothing
    }
  }

  function startPolling(batchId, note) {
    state.source = "by polling GET /batches/{id} every second";
    $("progress-source").textContent = note;
    clearTimeout(state.pollTimer);
    const tick = async () => {
      if (state.finished || state.batchId !== batchId) return;
      try {
        const job = await api(`batches/${encodeURIComponent(batchId)}`);
        if (state.finished || state.batchId !== batchId) return;
        const progress = progressFromJob(job);
        renderProgress(progress);
        if (TERMINAL.has(job.status)) {
          finish(batchId, progress);
          return;
        }
      } catch (error) {
        showError(error);
        if (error.status >= 400 && error.status < 500 && error.status !== 429) return; // asking again won't help
      }
      state.pollTimer = setTimeout(tick, POLL_MS);
    };
    tick();
  }

  function progressFromJob(job) {
    const counts = job.counts || { predicted: 0, failed: 0, pending: job.total || 0 };
    const done = (counts.predicted || 0) + (counts.failed || 0);
    let rate = null;
    let eta = null;
    const started = job.timings?.started_at ? Date.parse(job.timings.started_at) : NaN;
    const finished = job.timings?.finished_at ? Date.parse(job.timings.finished_at) : Date.now();
    if (!Number.isNaN(started) && finished > started && done > 0) {
      rate = done / ((finished - started) / 1000);
      eta = counts.pending > 0 ? counts.pending / rate : 0;
    }
    return { ...job, counts, rate, eta_s: eta };
  }

  function renderProgress(progress) {
    const counts = progress.counts || {};
    const total = progress.total || 0;
    const done = (counts.predicted || 0) + (counts.failed || 0);
    const percent = typeof progress.percent === "number" ? progress.percent : total ? (100 * done) / total : 0;
    $("progress-bar").value = percent;
    $("progress-bar").textContent = `${numbers.format(percent)}%`;
    $("progress-text").textContent =
      `${done} of ${total} images done (${numbers.format(percent)}%)` +
      (progress.attempt > 1 ? ` · attempt ${progress.attempt}` : "");
    const badge = $("batch-status");
    badge.textContent = progress.status || "";
    badge.dataset.status = progress.status || "";
    $("count-predicted").textContent = counts.predicted ?? 0;
    $("count-failed").textContent = counts.failed ?? 0;
    $("count-pending").textContent = counts.pending ?? Math.max(total - done, 0);
    $("rate").textContent = typeof progress.rate === "number" ? `${numbers.format(progress.rate)} images/s` : "–";
    $("eta").textContent = typeof progress.eta_s === "number" ? formatSeconds(progress.eta_s) : "–";
  }

  // -- a finished batch --------------------------------------------------------------------------------------
  async function finish(batchId, progress) {
    if (state.finished) return;
    state.finished = true;
    stopWatching();
    $("progress-source").textContent = `Finished: ${progress.status} (progress followed ${state.source}).`;
    $("new-batch").hidden = false;
    state.resultsToken = null;
    state.errorsToken = null;
    $("results-table").tBodies[0].replaceChildren();
    $("errors-table").tBodies[0].replaceChildren();
    try {
      const job = await api(`batches/${encodeURIComponent(batchId)}`);
      renderResultsHeader(job);
      await loadResults(batchId);
      await loadErrors(batchId);
      // A batch over the picked dataset added an entry to the history shown.
      if (job.dataset_id && job.dataset_id === state.dataset?.dataset_id && state.history) {
        await showHistory(state.history.imageId, { focus: false });
      }
    } catch (error) {
      showError(error);
    }
  }

  function renderResultsHeader(job) {
    state.batchModel = job.model || null;
    const counts = job.counts || {};
    const duration = job.timings?.duration_s;
    $("results-summary").textContent =
      `${counts.predicted || 0} predicted, ${counts.failed || 0} failed of ${job.total} images` +
      (typeof duration === "number" ? ` in ${formatSeconds(duration)}` : "") +
      ` · model ${job.model || "?"} version ${job.version || "?"} · ${job.status}.`;
    const downloads = $("results-downloads");
    downloads.replaceChildren();
    if (job.links?.results_file) {
      addDownload(downloads, "All results (JSON lines)", { href: job.links.results_file, filename: `${job.batch_id}.jsonl` });
    }
    addDownload(downloads, "All results (CSV)", {
      build: async () => {
        const rows = await allPages(`batches/${encodeURIComponent(job.batch_id)}/results`, {}, "results");
        const lines = [["item", "file", "key", "status", "label", "score", "error_code", "error_message"]];
        for (const row of rows) {
          lines.push([
            row.item,
            fileName(row.key),
            row.key,
            row.status,
            row.label ?? (row.status === "predicted" ? summarise(row) : ""),
            row.score ?? "",
            row.error?.code ?? "",
            row.error?.message ?? "",
          ]);
        }
        return { blob: csvBlob(lines), filename: `${job.batch_id}-results.csv` };
      },
    });
    $("results-section").hidden = false;
  }

  async function loadResults(batchId) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.resultsToken) params.set("next_token", state.resultsToken);
    const page = await api(`batches/${encodeURIComponent(batchId)}/results?${params}`);
    const body = $("results-table").tBodies[0];
    for (const row of page.results || []) {
      const status = row.status === "predicted" ? "predicted" : `failed · ${row.error?.code || "error"}`;
      const predicted = row.status === "predicted";
      const label = row.label ?? (predicted && taskOf(row) !== "classification" ? summarise(row) : "—");
      const tr = tableRow([
        [row.item + 1, "num"],
        [fileName(row.key), "file", row.key],
        [label],
        [typeof row.score === "number" ? row.score.toFixed(4) : "—", "num"],
        [status, `status ${row.status}`],
      ]);
      const file = state.uploaded.get(row.key);
      // A DICOM file cannot be drawn by the browser: its view is only shown for a single prediction (preview).
      if (predicted && file && !isDicom(file) && taskOf(row) !== "classification") {
        const show = document.createElement("button");
        show.type = "button";
        show.className = "link-button show-result";
        show.textContent = "Show";
        show.setAttribute("aria-label", `Show ${fileName(row.key)} with its result drawn on it`);
        show.addEventListener("click", () => showBatchResult(row, file).catch(showError));
        tr.cells[2].append(show);
      }
      body.append(tr);
    }
    state.resultsToken = page.next_token || null;
    $("more-results").hidden = !state.resultsToken;
  }

  async function loadErrors(batchId) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.errorsToken) params.set("next_token", state.errorsToken);
    const report = await api(`batches/${encodeURIComponent(batchId)}/errors?${params}`);
    if (!state.errorsToken) renderErrorsHeader(batchId, report);
    const body = $("errors-table").tBodies[0];
    for (const row of report.errors || []) {
      body.append(
        tableRow([
          [row.item + 1, "num"],
          [fileName(row.key), "file", row.key],
          [row.code || "", "code"],
          [row.message || "", "message"],
          [row.attempts ?? "", "num"],
        ]),
      );
    }
    state.errorsToken = report.next_token || null;
    $("more-errors").hidden = !state.errorsToken;
  }

  function renderErrorsHeader(batchId, report) {
    const summary = report.summary || {};
    const count = typeof report.failed === "number" ? report.failed : Object.values(summary).reduce((a, b) => a + b, 0);
    $("errors-summary").textContent = count
      ? `${count} image${count === 1 ? "" : "s"} could not be predicted.`
      : "No errors: every image was predicted.";
    $("errors-codes").replaceChildren(
      ...Object.entries(summary).map(([code, n]) => {
        const item = document.createElement("li");
        const name = document.createElement("code");
        name.textContent = code;
        item.append(name, ` ${n}`);
        return item;
      }),
    );
    $("errors-table-wrap").hidden = !count;
    const downloads = $("errors-downloads");
    downloads.replaceChildren();
    const links = report.links || {};
    if (links.csv) addDownload(downloads, "Error report (CSV)", { href: links.csv, filename: `${batchId}-errors.csv` });
    if (links.jsonl) {
      addDownload(downloads, "Error report (JSON lines)", { href: links.jsonl, filename: `${batchId}-errors.jsonl` });
    }
    $("errors-section").hidden = false;
  }

  async function allPages(path, query, field) {
    const rows = [];
    let token = null;
    do {
      const params = new URLSearchParams({ ...query, limit: "1000" });
      if (token) params.set("next_token", token);
      const page = await api(`${path}?${params}`);
      rows.push(...(page[field] || []));
      token = page.next_token || null;
    } while (token);
    return rows;
  }

  async function showBatchResult(row, file) {
    const view = $("result-view");
    await renderResultView(view, { file, name: fileName(row.key), result: row, model: state.batchModel });
    view.querySelector("figure")?.focus();
  }

  // -- one image at once -------------------------------------------------------------------------------------
  async function predictOne() {
    if (state.busy || state.files.length !== 1) return;
    clearError();
    setBusy(true);
    const file = state.files[0];
    const model = $("model").value;
    try {
      setStatus(`Predicting ${file.name}…`);
      const params = new URLSearchParams({ model });
      // The browser cannot decode DICOM: ask for the model's view of it (decoded, windowed) to draw the result on.
      const dicom = isDicom(file);
      if (dicom) params.set("preview", "true");
      const result = await api(`predictions?${params}`, {
        method: "POST",
        raw: { data: file, type: contentType(file) || "application/octet-stream" },
      });
      setStatus("");
      await showPrediction({ name: file.name, result, file: dicom ? null : file });
    } catch (error) {
      setStatus("");
      showError(error);
    } finally {
      setBusy(false);
    }
  }

  /** A single prediction in the "Prediction" card: drawn over `file`, or over the API's preview of the image when
   * the page has no file the browser can show (DICOM, or a dataset image it did not upload). */
  async function showPrediction({ name, result, file, note = "" }) {
    $("prediction-summary").textContent =
      `${name}: ${summarise(result)} · model ${result.model} version ${result.version}` +
      (typeof result.timings_ms?.total === "number" ? ` · ${numbers.format(result.timings_ms.total)} ms` : "") +
      note;
    $("prediction-section").hidden = false;
    if (file) {
      await renderResultView($("prediction-view"), { file, name, result, model: result.model });
    } else {
      await renderPreviewView($("prediction-view"), { name, result });
    }
    $("prediction-title").focus();
  }

  /** The page's place in the address bar (`#batch=...&dataset=...`), so a reload or a shared link opens the same
   * batch and dataset; a null `value` drops the entry. */
  function setAddress(name, value) {
    const params = new URLSearchParams(location.hash.slice(1));
    if (value) params.set(name, value);
    else params.delete(name);
    const hash = params.toString();
    history.replaceState(null, "", location.pathname + location.search + (hash ? `#${hash}` : ""));
  }

  // -- datasets ----------------------------------------------------------------------------------------------
  const datasetPath = (...parts) => ["datasets", ...parts].map(encodeURIComponent).join("/");

  function perDataset(maps, datasetId) {
    if (!maps.has(datasetId)) maps.set(datasetId, new Map());
    return maps.get(datasetId);
  }

  function imageName(datasetId, key) {
    return state.datasetNames.get(datasetId)?.get(key) || String(key).split("/").pop();
  }

  function statusBadge(status) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = status || "";
    badge.dataset.status = status || "";
    return badge;
  }

  function formatTime(iso) {
    const time = iso ? new Date(iso) : null;
    return time && !Number.isNaN(time.getTime()) ? time.toLocaleString() : iso || "—";
  }

  /** The caller's datasets, newest first: the first page again, or (`more`) the next one added below. */
  async function loadDatasets(more = false) {
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (more && state.datasetsToken) params.set("next_token", state.datasetsToken);
    const page = await api(`datasets?${params}`);
    const body = $("datasets-table").tBodies[0];
    if (!more) body.replaceChildren();
    for (const dataset of page.datasets || []) body.append(datasetRow(dataset));
    state.datasetsToken = page.next_token || null;
    $("more-datasets").hidden = !state.datasetsToken;
    $("datasets-table-wrap").hidden = !body.rows.length;
    $("datasets-empty").hidden = Boolean(body.rows.length);
  }

  function datasetRow(dataset) {
    const row = tableRow([
      [dataset.name, "name"],
      [""],
      [dataset.images ?? 0, "num"],
      [formatTime(dataset.created_at)],
      [""],
    ]);
    row.dataset.datasetId = dataset.dataset_id;
    row.cells[1].append(statusBadge(dataset.status));
    const open = document.createElement("button");
    open.type = "button";
    open.className = "secondary small";
    open.textContent = "Open";
    open.setAttribute("aria-label", `Open the dataset ${dataset.name}`);
    open.addEventListener("click", () => pickDataset(dataset.dataset_id).catch(showError));
    row.cells[4].append(open);
    if (state.dataset?.dataset_id === dataset.dataset_id) row.setAttribute("aria-current", "true");
    return row;
  }

  /** The list's row of a dataset, brought up to date in place (a button in it keeps the focus). */
  function updateDatasetRow(dataset) {
    for (const row of $("datasets-table").tBodies[0].rows) {
      if (row.dataset.datasetId === state.dataset?.dataset_id) row.setAttribute("aria-current", "true");
      else row.removeAttribute("aria-current");
      if (row.dataset.datasetId !== dataset.dataset_id) continue;
      row.cells[0].textContent = dataset.name;
      row.cells[1].replaceChildren(statusBadge(dataset.status));
      row.cells[2].textContent = String(dataset.images ?? 0);
    }
  }

  async function pickDataset(datasetId) {
    clearTimeout(state.datasetTimer);
    const dataset = await api(datasetPath(datasetId));
    state.dataset = dataset;
    state.imagesToken = null;
    state.images = new Map();
    state.history = null;
    $("images-table").tBodies[0].replaceChildren();
    $("history").hidden = true;
    $("image-id").value = "";
    $("dataset-action-status").textContent = "";
    renderDataset(dataset);
    setAddress("dataset", datasetId);
    $("datasets-status").textContent = "";
    $("dataset-section").hidden = false;
    $("dataset-title").focus();
    if (dataset.status === "REGISTERING") followRegistration(datasetId);
    await loadImages(datasetId);
  }

  function renderDataset(dataset) {
    const count = dataset.images ?? 0;
    $("dataset-shown-name").textContent = dataset.name;
    $("dataset-id").textContent = dataset.dataset_id;
    const badge = $("dataset-status");
    badge.textContent = dataset.status;
    badge.dataset.status = dataset.status;
    $("dataset-count").textContent =
      dataset.status === "REGISTERING"
        ? `${count} image${count === 1 ? "" : "s"} so far (${dataset.keys_read ?? 0} keys read), registering…`
        : `${count} image${count === 1 ? "" : "s"}`;
    $("dataset-reason").textContent = dataset.reason || "";
    $("dataset-reason").hidden = !dataset.reason;
    updateDatasetRow(dataset);
    updateSubmit();
  }

  /** DELETE the open dataset once the user confirms: its registration and image entries go, its images stay in S3
   * and the batches that ran over it keep their results (the API's 409 for one being registered is shown as is). */
  async function deleteDataset() {
    const dataset = state.dataset;
    if (!dataset) return;
    const count = dataset.images ?? 0;
    const question =
      `Delete the dataset "${dataset.name}" and its ${count} image entr${count === 1 ? "y" : "ies"}? ` +
      "The images stay in storage, and batches that ran over it keep their results.";
    if (!window.confirm(question)) return;
    const status = $("dataset-action-status");
    status.textContent = "Deleting…";
    clearError();
    try {
      await api(datasetPath(dataset.dataset_id), { method: "DELETE" });
    } catch (error) {
      status.textContent = "";
      showError(error);
      return;
    }
    clearTimeout(state.datasetTimer);
    if (state.dataset?.dataset_id === dataset.dataset_id) {
      state.dataset = null;
      state.history = null;
      state.images = new Map();
      $("dataset-section").hidden = true;
      setAddress("dataset", null);
    }
    status.textContent = "";
    $("datasets-status").textContent = `Dataset ${dataset.name} deleted.`;
    updateSubmit();
    await loadDatasets();
    $("datasets-title").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  /** A dataset being registered from a prefix or a list file: asked again every second until READY or FAILED. */
  function followRegistration(datasetId) {
    clearTimeout(state.datasetTimer);
    const tick = async () => {
      if (state.dataset?.dataset_id !== datasetId) return;
      try {
        const dataset = await api(datasetPath(datasetId));
        if (state.dataset?.dataset_id !== datasetId) return;
        state.dataset = dataset;
        renderDataset(dataset);
        if (dataset.status !== "REGISTERING") {
          state.imagesToken = null;
          state.images = new Map();
          $("images-table").tBodies[0].replaceChildren();
          await loadImages(datasetId);
          return;
        }
      } catch (error) {
        showError(error);
        if (error.status >= 400 && error.status < 500 && error.status !== 429) return; // asking again won't help
      }
      state.datasetTimer = setTimeout(tick, POLL_MS);
    };
    state.datasetTimer = setTimeout(tick, POLL_MS);
  }

  async function loadImages(datasetId) {
    const params = new URLSearchParams({ limit: String(IMAGES_PAGE_SIZE) });
    if (state.imagesToken) params.set("next_token", state.imagesToken);
    const page = await api(`${datasetPath(datasetId, "images")}?${params}`);
    if (state.dataset?.dataset_id !== datasetId) return; // another dataset was picked meanwhile
    const body = $("images-table").tBodies[0];
    for (const image of page.images || []) {
      state.images.set(image.image_id, image.key);
      const name = imageName(datasetId, image.key);
      const row = tableRow([
        [body.rows.length + 1, "num"],
        [name, "file", image.key],
        [image.image_id, "id"],
        ["", "row-actions"],
      ]);
      row.dataset.imageId = image.image_id;
      const predict = document.createElement("button");
      predict.type = "button";
      predict.className = "secondary small predict-image";
      predict.textContent = "Predict";
      predict.setAttribute("aria-label", `Predict ${name}`);
      predict.addEventListener("click", () => predictDatasetImage(image.image_id));
      const past = document.createElement("button");
      past.type = "button";
      past.className = "link-button";
      past.textContent = "History";
      past.setAttribute("aria-label", `Prediction history of ${name}`);
      past.addEventListener("click", () => showHistory(image.image_id).catch(showError));
      row.cells[3].append(predict, past);
      body.append(row);
    }
    state.imagesToken = page.next_token || null;
    $("more-images").hidden = !state.imagesToken;
    $("images-table-wrap").hidden = !body.rows.length;
    $("images-empty").hidden = Boolean(body.rows.length);
    updateSubmit();
  }

  async function createDataset(event) {
    event.preventDefault();
    if (state.busy) return;
    const name = $("dataset-name").value.trim();
    if (!name) {
      showError(new ApiError("invalid_request", "give the new dataset a name"));
      $("dataset-name").focus();
      return;
    }
    clearError();
    setBusy(true);
    const files = [...state.datasetFiles];
    const status = (text) => {
      $("dataset-form-status").textContent = text;
    };
    const progress = $("dataset-progress");
    try {
      status(`Creating the dataset ${name}…`);
      const dataset = await api("datasets", { method: "POST", body: { name } });
      const datasetId = dataset.dataset_id;
      const names = perDataset(state.datasetNames, datasetId);
      const uploads = perDataset(state.datasetUploads, datasetId);
      const failures = [];
      let done = 0;
      progress.max = Math.max(files.length, 1);
      progress.value = 0;
      progress.hidden = !files.length;
      for (let start = 0; start < files.length; start += UPLOADS_PER_CALL) {
        const group = files.slice(start, start + UPLOADS_PER_CALL);
        status(`Preparing uploads into ${name} (${start + group.length} of ${files.length})…`);
        const plan = await api("uploads", {
          method: "POST",
          body: { dataset_id: datasetId, files: group.map(describeFile) },
        });
        // One file refused by the storage does not stop the others: they are reported together at the end.
        const tasks = plan.uploads.map((upload, index) => async () => {
          try {
            await putFile(upload, group[index]);
            names.set(upload.key, upload.name);
            uploads.set(upload.key, group[index]);
          } catch (error) {
            failures.push(error);
          }
          done += 1;
          progress.value = done;
          status(`Uploaded ${done - failures.length} of ${files.length} images into ${name}…`);
        });
        await runPool(tasks, UPLOAD_CONCURRENCY);
      }
      state.datasetFiles = [];
      $("dataset-files").value = "";
      $("dataset-name").value = "";
      renderDatasetSelection();
      status(
        files.length
          ? `${name}: ${files.length - failures.length} of ${files.length} images uploaded.`
          : `${name}: an empty dataset, ready for uploads.`,
      );
      await loadDatasets();
      await pickDataset(datasetId);
      if (failures.length) {
        const why = failures.map((error) => error.message).join("; ");
        showError(new ApiError("upload_failed", `${failures.length} of ${files.length} images were not uploaded: ${why}`));
      }
    } catch (error) {
      status("");
      showError(error);
    } finally {
      progress.hidden = true;
      setBusy(false);
    }
  }

  function describeFile(file) {
    return { name: file.name, content_type: contentType(file), size: file.size };
  }

  async function addDatasetFiles(list) {
    state.datasetFiles = await acceptFiles(state.datasetFiles, list);
    renderDatasetSelection();
  }

  function renderDatasetSelection() {
    renderFiles(state.datasetFiles, $("dataset-selection"), $("dataset-file-list"));
    const count = state.datasetFiles.length;
    $("create-dataset").textContent = count
      ? `Create the dataset and upload ${count} image${count === 1 ? "" : "s"}`
      : "Create the dataset";
  }

  async function runDatasetBatch() {
    const dataset = state.dataset;
    if (state.busy || dataset?.status !== "READY") return;
    clearError();
    setBusy(true);
    const status = $("dataset-action-status");
    try {
      status.textContent = `Submitting a batch over ${dataset.name}…`;
      const batch = await api("batches", {
        method: "POST",
        body: { dataset_id: dataset.dataset_id, model: $("model").value },
        headers: { "Idempotency-Key": newIdempotencyKey() },
      });
      status.textContent = `Batch ${batch.batch_id} submitted.`;
      const names = new Map(state.datasetNames.get(dataset.dataset_id) || []);
      saveNames(batch.batch_id, names);
      setAddress("batch", batch.batch_id);
      watchBatch(batch.batch_id, batch, names, new Map(state.datasetUploads.get(dataset.dataset_id) || []));
    } catch (error) {
      status.textContent = "";
      showError(error);
    } finally {
      setBusy(false);
    }
  }

  async function predictDatasetImage(imageId) {
    const dataset = state.dataset;
    if (state.busy || !dataset || !imageId) return;
    clearError();
    setBusy(true);
    const status = $("dataset-action-status");
    const known = state.images.get(imageId);
    const file = known && state.datasetUploads.get(dataset.dataset_id)?.get(known);
    // The page has the image only if it uploaded it (and can draw it only if it is not DICOM): otherwise the API
    // sends the model's view of it to draw the result on.
    const drawable = file && !isDicom(file) ? file : null;
    try {
      status.textContent = `Predicting image ${imageId}…`;
      const result = await api("predictions", {
        method: "POST",
        body: { dataset_id: dataset.dataset_id, image_id: imageId, model: $("model").value, preview: !drawable },
      });
      status.textContent = "";
      const name = imageName(dataset.dataset_id, result.key || known || imageId);
      await showPrediction({ name, result, file: drawable, note: ` · dataset ${dataset.name}, image ${imageId}` });
      if (state.history?.imageId === imageId) await showHistory(imageId, { focus: false });
    } catch (error) {
      status.textContent = "";
      showError(error);
    } finally {
      setBusy(false);
    }
  }

  /** An image's predictions, newest first: the first page, or (`more`) the next one added below. */
  async function showHistory(imageId, { more = false, focus = true } = {}) {
    const dataset = state.dataset;
    if (!dataset) return;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (more && state.history?.token) params.set("next_token", state.history.token);
    const page = await api(`${datasetPath(dataset.dataset_id, "images", imageId, "predictions")}?${params}`);
    if (state.dataset?.dataset_id !== dataset.dataset_id) return;
    state.history = { imageId, token: page.next_token || null };
    const body = $("history-table").tBodies[0];
    if (!more) body.replaceChildren();
    for (const entry of page.predictions || []) {
      const failed = entry.status === "failed";
      body.append(
        tableRow([
          [formatTime(entry.time), "time"],
          [entry.batch_id === "single" ? "single prediction" : `batch ${entry.batch_id}`, "run"],
          [entry.model ? `${entry.model} ${entry.version ?? ""}`.trim() : "—"],
          [entry.status || "", `status ${entry.status}`],
          [summariseEntry(entry), failed ? "message" : ""],
        ]),
      );
    }
    const name = imageName(dataset.dataset_id, page.key || state.images.get(imageId) || imageId);
    $("history-image").textContent = `${name} (${imageId})`;
    $("history-table-wrap").hidden = !body.rows.length;
    $("history-empty").hidden = Boolean(body.rows.length);
    $("more-history").hidden = !state.history.token;
    $("history").hidden = false;
    if (focus && !more) $("history-title").focus();
  }

  /** A history entry's result in a few words, from the summary the API keeps (not the full result). */
  function summariseEntry(entry) {
    if (entry.status === "failed") return `${entry.error?.code || "error"}: ${entry.error?.message || ""}`;
    const summary = entry.summary || {};
    if (Array.isArray(summary.frames)) {
      return summary.frames
        .map((frame) => `frame ${frame.frame}: ${summariseEntry({ status: "predicted", summary: frame })}`)
        .join("; ");
    }
    if (typeof summary.count === "number") {
      if (!summary.count) return "no objects";
      const labels = Array.isArray(summary.labels) && summary.labels.length ? `: ${summary.labels.join(", ")}` : "";
      return `${summary.count} object${summary.count === 1 ? "" : "s"}${labels}`;
    }
    if (Array.isArray(summary.classes)) {
      return summary.classes.map((entry) => `${entry.label} ${percentText(entry.fraction)}`).join(", ") || "—";
    }
    if (summary.label !== undefined) {
      return `${summary.label} (${typeof summary.score === "number" ? summary.score.toFixed(4) : "?"})`;
    }
    if (Array.isArray(summary.labels)) return summary.labels.join(", ") || "no label above its threshold";
    return "—";
  }

  // -- results of every task ---------------------------------------------------------------------------------
  function taskOf(result) {
    if (Array.isArray(result.frames) && result.frames.length) return taskOf(result.frames[0]);
    if (Array.isArray(result.detections)) return "detection";
    if (Array.isArray(result.classes)) return "segmentation";
    if (Array.isArray(result.labels) && result.scores && typeof result.scores === "object") return "multilabel";
    return "classification";
  }

  const scoreText = (value) => (typeof value === "number" ? value.toFixed(2) : "");
  const percentText = (fraction) => (typeof fraction === "number" ? `${(100 * fraction).toFixed(2)}%` : "");

  function presentClasses(result) {
    return (result.classes || [])
      .filter((entry) => entry.index !== 0 && entry.pixels > 0)
      .sort((a, b) => b.pixels - a.pixels);
  }

  /** A result in a few words: "2 objects: square 0.98, circle 0.95", "cell 15.15%, nucleus 3.66%", "7 (0.99)". */
  function summarise(result) {
    if (Array.isArray(result.frames)) {
      return result.frames.map((frame) => `frame ${frame.frame}: ${summarise(frame)}`).join("; ");
    }
    switch (taskOf(result)) {
      case "detection": {
        const count = typeof result.count === "number" ? result.count : result.detections.length;
        if (!count) return "no objects";
        const shown = result.detections.slice(0, SUMMARY_ENTRIES);
        const more = count > shown.length ? `, +${count - shown.length} more` : "";
        const list = shown.map((entry) => `${entry.label} ${scoreText(entry.score)}`).join(", ");
        return `${count} object${count === 1 ? "" : "s"}: ${list}${more}`;
      }
      case "segmentation": {
        const present = presentClasses(result);
        if (!present.length) return "only background";
        return present.map((entry) => `${entry.label} ${percentText(entry.fraction)}`).join(", ");
      }
      case "multilabel":
        if (!result.labels.length) return "no label above its threshold";
        return result.labels.map((entry) => `${entry.label} ${scoreText(entry.score)}`).join(", ");
      default:
        return `${result.label} (${typeof result.score === "number" ? result.score.toFixed(4) : "?"})`;
    }
  }

  /** The mask PNG's colour for a class index: the server's palette (PASCAL VOC's colour map; 0 is black). */
  function paletteColour(index) {
    let [red, green, blue] = [0, 0, 0];
    let bits = index;
    for (let shift = 7; shift >= 0; shift -= 1) {
      red |= (bits & 1) << shift;
      green |= ((bits >> 1) & 1) << shift;
      blue |= ((bits >> 2) & 1) << shift;
      bits >>= 3;
    }
    return [red, green, blue];
  }

  function boxColour(label, model) {
    const labels = state.models.get(model)?.labels || [];
    const index = labels.indexOf(label);
    if (index >= 0) return BOX_COLOURS[index % BOX_COLOURS.length];
    let hash = 0;
    for (const char of String(label)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
    return BOX_COLOURS[hash % BOX_COLOURS.length];
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new ApiError("invalid_image", "the browser could not decode the image"));
      image.src = url;
    });
  }

  /** The mask as an overlay at its own size: each class in its palette colour, half transparent; the background
   * (class 0, black in the palette) fully transparent. From the inline base64 PNG, or its presigned link. */
  async function maskOverlay(mask) {
    let url;
    let objectUrl = null;
    if (typeof mask.data === "string") {
      url = `data:image/png;base64,${mask.data}`;
    } else if (mask.url) {
      let response;
      try {
        response = await fetch(mask.url);
      } catch (error) {
        throw new ApiError("network_error", `could not download the mask (${error.message})`);
      }
      if (!response.ok) throw new ApiError(`http_${response.status}`, "the mask's link answered an error: reload");
      objectUrl = URL.createObjectURL(await response.blob());
      url = objectUrl;
    } else {
      return null;
    }
    try {
      const image = await loadImage(url);
      const canvas = document.createElement("canvas");
      canvas.width = image.naturalWidth;
      canvas.height = image.naturalHeight;
      const context = canvas.getContext("2d", { willReadFrequently: true });
      context.drawImage(image, 0, 0);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height);
      const data = pixels.data;
      for (let at = 0; at < data.length; at += 4) {
        data[at + 3] = data[at] | data[at + 1] | data[at + 2] ? MASK_ALPHA : 0;
      }
      context.putImageData(pixels, 0, 0);
      return canvas;
    } finally {
      if (objectUrl) URL.revokeObjectURL(objectUrl);
    }
  }

  function drawOverlay(canvas, image, result, mask, model) {
    const ratio = window.devicePixelRatio || 1;
    const width = image.clientWidth;
    const height = image.clientHeight;
    if (!width || !height || !image.naturalWidth) return false;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    if (mask) {
      context.imageSmoothingEnabled = false; // class colours must not blend into each other at the edges
      context.drawImage(mask, 0, 0, canvas.width, canvas.height);
    }
    const sx = canvas.width / image.naturalWidth;
    const sy = canvas.height / image.naturalHeight;
    const line = BOX_LINE_PX * ratio;
    context.font = `${LABEL_FONT_PX * ratio}px system-ui, sans-serif`;
    context.textBaseline = "top";
    // The best detection last, so it is on top where boxes overlap.
    for (const detection of [...(result.detections || [])].reverse()) {
      const [x1, y1, x2, y2] = detection.box;
      const colour = boxColour(detection.label, model);
      context.strokeStyle = colour;
      context.lineWidth = line;
      context.strokeRect(x1 * sx, y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy);
      const text = `${detection.label} ${scoreText(detection.score)}`;
      const textHeight = (LABEL_FONT_PX + 4) * ratio;
      const textWidth = context.measureText(text).width + 6 * ratio;
      const top = y1 * sy - textHeight >= 0 ? y1 * sy - textHeight : y1 * sy;
      const left = Math.min(x1 * sx - line / 2, canvas.width - textWidth);
      context.fillStyle = colour;
      context.fillRect(left, top, textWidth, textHeight);
      context.fillStyle = "#000";
      context.fillText(text, left + 3 * ratio, top + 2 * ratio);
    }
    return true;
  }

  function releaseView(view) {
    const held = state.views.get(view);
    if (held) {
      held.observer?.disconnect();
      URL.revokeObjectURL(held.url);
      state.views.delete(view);
    }
    view.replaceChildren();
  }

  function describeOverlay(result) {
    switch (taskOf(result)) {
      case "detection":
        return result.detections.length ? `, with the objects found outlined: ${summarise(result)}` : ", no objects found";
      case "segmentation":
        return `, with the segmentation mask laid over it: ${summarise(result)}`;
      default:
        return `: ${summarise(result)}`;
    }
  }

  function resultTable(result) {
    const table = document.createElement("table");
    const caption = document.createElement("caption");
    caption.className = "visually-hidden";
    let headers;
    let rows;
    switch (taskOf(result)) {
      case "detection":
        caption.textContent = "Objects found";
        headers = [["#", "num"], ["Label"], ["Score", "num"], ["Box (x1, y1, x2, y2)"]];
        rows = result.detections.map((entry, index) => [
          [index + 1, "num"],
          [entry.label],
          [entry.score.toFixed(4), "num"],
          [entry.box.map((side) => Math.round(side)).join(", ")],
        ]);
        break;
      case "segmentation":
        caption.textContent = "Pixels per class";
        headers = [["Class"], ["Pixels", "num"], ["Share", "num"], ["Box (x1, y1, x2, y2)"]];
        rows = (result.classes || []).map((entry) => [
          [entry.label],
          [entry.pixels, "num"],
          [percentText(entry.fraction), "num"],
          [entry.box ? entry.box.join(", ") : "—"],
        ]);
        break;
      case "multilabel":
        caption.textContent = "Score per label";
        headers = [["Label"], ["Score", "num"], ["Chosen"]];
        rows = Object.entries(result.scores)
          .sort((a, b) => b[1] - a[1])
          .map(([label, value]) => [
            [label],
            [value.toFixed(4), "num"],
            [result.labels.some((entry) => entry.label === label) ? "yes" : ""],
          ]);
        break;
      default:
        caption.textContent = "Top labels";
        headers = [["Label"], ["Score", "num"]];
        rows = (result.top_k || []).map((entry) => [[entry.label], [entry.score.toFixed(4), "num"]]);
    }
    const head = table.createTHead().insertRow();
    for (const [text, className] of headers) {
      const cell = document.createElement("th");
      cell.scope = "col";
      cell.textContent = text;
      if (className) cell.className = className;
      head.append(cell);
    }
    const body = table.createTBody();
    for (const row of rows) body.append(tableRow(row));
    table.prepend(caption);
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.append(table);
    return wrap;
  }

  function legend(result, model) {
    const list = document.createElement("ul");
    list.className = "legend";
    const entries =
      taskOf(result) === "segmentation"
        ? presentClasses(result).map((entry) => [entry.label, `rgb(${paletteColour(entry.index).join(" ")})`])
        : [...new Set((result.detections || []).map((entry) => entry.label))].map((label) => [
            label,
            boxColour(label, model),
          ]);
    for (const [label, colour] of entries) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour;
      swatch.setAttribute("aria-hidden", "true");
      item.append(swatch, label);
      list.append(item);
    }
    return list;
  }

  /** A prediction the browser has no picture of (DICOM, a dataset image): the model's view of each predicted frame
   * (the preview PNGs the API sent) with that frame's result drawn over it; a choice of frame when there are several. */
  async function renderPreviewView(view, { name, result }) {
    const frames = Array.isArray(result.frames) ? result.frames : [{ ...result, frame: null }];
    const previews = new Map((result.preview || []).map((preview) => [preview.frame, preview]));
    const single = frames.length === 1;
    const show = async (index) => {
      const frame = frames[index];
      const preview = single ? result.preview?.[0] : previews.get(frame.frame);
      if (!preview) throw new ApiError("no_preview", `the API sent no image of ${name} to draw the result on`);
      const bytes = Uint8Array.from(atob(preview.data), (char) => char.charCodeAt(0));
      const file = new Blob([bytes], { type: "image/png" });
      const label = single ? name : `${name}, frame ${frame.frame}`;
      await renderResultView(view, { file, name: label, result: { ...frame, model: result.model }, model: result.model });
      view.dataset.frame = String(preview.frame);
      if (!single) view.prepend(framePicker(frames, index, show));
    };
    await show(0);
  }

  function framePicker(frames, selected, show) {
    const field = document.createElement("label");
    field.className = "frame-picker";
    field.textContent = "Frame ";
    const select = document.createElement("select");
    frames.forEach((frame, index) => select.append(new Option(`${frame.frame}: ${summarise(frame)}`, index)));
    select.value = String(selected);
    select.addEventListener("change", () => show(Number(select.value)).catch(showError));
    field.append(select);
    return field;
  }

  /** The image with its result drawn over it (boxes, mask), a legend, and the result as a table. */
  async function renderResultView(view, { file, name, result, model }) {
    releaseView(view);
    const url = URL.createObjectURL(file);
    state.views.set(view, { url, observer: null });
    const figure = document.createElement("figure");
    figure.tabIndex = -1;
    const frame = document.createElement("div");
    frame.className = "overlay";
    const image = document.createElement("img");
    image.alt = `${name}${describeOverlay(result)}`;
    const canvas = document.createElement("canvas");
    canvas.setAttribute("aria-hidden", "true");
    frame.append(image, canvas);
    const caption = document.createElement("figcaption");
    caption.textContent = `${name}: ${summarise(result)}`;
    if (taskOf(result) === "detection" || taskOf(result) === "segmentation") caption.append(legend(result, model));
    figure.append(frame, caption);
    view.append(figure, resultTable(result));
    const [, mask] = await Promise.all([
      new Promise((resolve, reject) => {
        image.onload = resolve;
        image.onerror = () => reject(new ApiError("invalid_image", `the browser cannot show ${name}`));
        image.src = url;
      }),
      taskOf(result) === "segmentation" && result.mask ? maskOverlay(result.mask) : null,
    ]);
    if (state.views.get(view)?.url !== url) return; // another image was shown meanwhile
    const draw = () => {
      if (drawOverlay(canvas, image, result, mask, model)) figure.dataset.drawn = "true";
    };
    draw();
    const observer = new ResizeObserver(draw);
    observer.observe(image);
    state.views.get(view).observer = observer;
  }

  // -- downloads ---------------------------------------------------------------------------------------------
  function addDownload(container, label, source) {
    const link = document.createElement("a");
    link.textContent = label;
    link.className = "download";
    link.href = source.href || "#";
    if (source.filename) link.download = source.filename;
    const viaApi = source.href && source.href.startsWith(new URL(state.config.apiUrl).origin);
    if (source.build || viaApi) {
      // A link into the API needs the key header, which a plain link cannot send: fetch it, then save it.
      link.addEventListener("click", async (event) => {
        event.preventDefault();
        try {
          const { blob, filename } = source.build ? await source.build() : await fetchBlob(source);
          const url = URL.createObjectURL(blob);
          const anchor = Object.assign(document.createElement("a"), { href: url, download: filename });
          document.body.append(anchor);
          anchor.click();
          anchor.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (error) {
          showError(error);
        }
      });
    } else {
      link.rel = "noopener";
    }
    container.append(link);
  }

  async function fetchBlob(source) {
    let response;
    try {
      response = await fetch(source.href, { headers: { "x-api-key": state.apiKey } });
    } catch (error) {
      throw new ApiError("network_error", `could not download ${source.href} (${error.message})`);
    }
    if (!response.ok) await readResponse(response);
    return { blob: await response.blob(), filename: source.filename };
  }

  function csvBlob(lines) {
    const escape = (value) => {
      const text = String(value ?? "");
      return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
    };
    return new Blob([lines.map((line) => line.map(escape).join(",")).join("\r\n") + "\r\n"], { type: "text/csv" });
  }

  // -- small helpers -----------------------------------------------------------------------------------------
  function fileName(key) {
    return state.names.get(key) || String(key).split("/").pop();
  }

  function tableRow(cells) {
    const row = document.createElement("tr");
    for (const [text, className, title] of cells) {
      const cell = document.createElement("td");
      cell.textContent = String(text);
      if (className) cell.className = className;
      if (title) cell.title = title;
      row.append(cell);
    }
    return row;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${numbers.format(bytes / 1024)} KB`;
    return `${numbers.format(bytes / (1024 * 1024))} MB`;
  }

  function formatSeconds(seconds) {
    if (seconds < 60) return `${numbers.format(seconds)} s`;
    const minutes = Math.floor(seconds / 60);
    return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
  }

  function resetForNewBatch() {
    stopWatching();
    state.batchId = null;
    state.files = [];
    $("files").value = "";
    renderSelection();
    setStatus("");
    clearError();
    for (const id of ["progress-section", "results-section", "errors-section", "new-batch"]) $(id).hidden = true;
    setAddress("batch", null);
    $("submit-section").scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // -- start -------------------------------------------------------------------------------------------------
  function bindEvents() {
    $("alert-close").addEventListener("click", clearError);
    $("model").addEventListener("change", () => {
      showModelDetails();
      updateSubmit();
    });
    $("files").addEventListener("change", (event) => addFiles(event.target.files).catch(showError));
    $("clear-files").addEventListener("click", () => {
      state.files = [];
      $("files").value = "";
      renderSelection();
    });
    const zone = $("drop-zone");
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        if (!state.busy) zone.classList.add("over");
      });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (!state.busy && event.dataTransfer?.files?.length) addFiles(event.dataTransfer.files).catch(showError);
    });
    // A file dropped beside the zone must not make the browser leave the page to open it.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
    $("batch-form").addEventListener("submit", submitBatch);
    $("predict-one").addEventListener("click", predictOne);
    $("more-results").addEventListener("click", () => loadResults(state.batchId).catch(showError));
    $("more-errors").addEventListener("click", () => loadErrors(state.batchId).catch(showError));
    $("new-batch").addEventListener("click", resetForNewBatch);
    $("refresh-datasets").addEventListener("click", () => loadDatasets().catch(showError));
    $("delete-dataset").addEventListener("click", () => deleteDataset().catch(showError));
    $("more-datasets").addEventListener("click", () => loadDatasets(true).catch(showError));
    $("dataset-form").addEventListener("submit", createDataset);
    $("dataset-files").addEventListener("change", (event) => addDatasetFiles(event.target.files).catch(showError));
    $("dataset-batch").addEventListener("click", runDatasetBatch);
    $("more-images").addEventListener("click", () => {
      if (state.dataset) loadImages(state.dataset.dataset_id).catch(showError);
    });
    $("predict-id-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const imageId = $("image-id").value.trim();
      if (imageId) predictDatasetImage(imageId);
      else showError(new ApiError("invalid_request", "give the id of one of the dataset's images"));
    });
    $("more-history").addEventListener("click", () => {
      if (state.history) showHistory(state.history.imageId, { more: true }).catch(showError);
    });
    $("change-key").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORAGE);
      state.apiKey = null;
      $("api-key").value = "";
      updateSubmit();
      showKeyForm();
    });
    $("key-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) return;
      state.apiKey = key;
      sessionStorage.setItem(KEY_STORAGE, key);
      clearError();
      try {
        await start();
        $("key-section").hidden = true;
        $("change-key").hidden = false;
      } catch (error) {
        showError(error);
      }
    });
  }

  async function start() {
    await loadModels();
    await loadDatasets();
    const address = new URLSearchParams(location.hash.slice(1));
    const batchId = address.get("batch");
    if (batchId && batchId !== state.batchId) watchBatch(batchId, null, null);
    const datasetId = address.get("dataset");
    if (datasetId && datasetId !== state.dataset?.dataset_id) {
      await pickDataset(datasetId).catch((error) => {
        setAddress("dataset", null); // gone, or never this key's: the link does not open it again
        showError(error);
      });
    }
  }

  async function init() {
    bindEvents();
    try {
      const response = await fetch("config.json", { cache: "no-store" });
      state.config = await readResponse(response);
      if (!state.config || typeof state.config.apiUrl !== "string") {
        throw new ApiError("invalid_config", 'config.json has no "apiUrl": write it with scripts/deploy_web.py');
      }
      if (!state.config.apiUrl.endsWith("/")) state.config.apiUrl += "/";
    } catch (error) {
      if (error.code === "invalid_config") {
        showError(error);
      } else {
        const why = error.status ? `HTTP ${error.status}` : error.message;
        const message = `config.json could not be read next to this page (${why}): write it with scripts/deploy_web.py`;
        showError(new ApiError("config_missing", message));
      }
      return;
    }
    $("endpoint").textContent = state.config.apiUrl;
    state.apiKey = state.config.apiKey || sessionStorage.getItem(KEY_STORAGE);
    if (!state.apiKey) {
      $("model").replaceChildren(new Option("Enter the API key first", ""));
      showKeyForm();
      return;
    }
    $("change-key").hidden = Boolean(state.config.apiKey); // a key typed by the user can be changed
    try {
      await start();
    } catch (error) {
      showError(error);
    }
  }

  init();
})();
