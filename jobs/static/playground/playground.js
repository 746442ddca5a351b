// The playground: a form built from GET /models, a submit, then the job
// watched through its event stream (or GET /job polls), its video, and the
// user's videos. Only the public API, so everything here a client can do.
"use strict";

(() => {
  const API = "/api/v1";
  const FINISHED = new Set(["completed", "failed", "cancelled"]);
  const NUMBER_FIELDS = ["width", "height", "num_frames", "num_inference_steps"];
  const PAGE_SIZE = 6;
  const $ = (id) => document.getElementById(id);

  const state = {
    userId: "",
    apiKey: "",
    keysOn: false,
    models: [],
    defaultModel: null,
    extend: null, // the video being extended: {job_id, prompt}
    files: { image: null, last_image: null },
    job: null,
    watcher: null,
    videosUrl: null,
    objectUrls: new Map(), // element -> object URL, revoked when replaced
  };

  // --- Talking to the API ---------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const detail = (body && body.detail) || `The server answered ${status}.`;
      super(detail);
      this.status = status;
      this.detail = detail;
      this.errors = (body && body.errors) || null;
    }
  }

  function headers(extra = {}) {
    const all = { Accept: "application/json", ...extra };
    if (state.apiKey) all.Authorization = `Bearer ${state.apiKey}`;
    return all;
  }

  // The user's URL for any API path or absolute URL: user_id in the query when one is given.
  function withUser(url) {
    const absolute = new URL(url, window.location.href);
    if (state.userId) absolute.searchParams.set("user_id", state.userId);
    return absolute.toString();
  }

  async function api(method, url, { body, allowUnauthorized = false } = {}) {
    let response;
    try {
      response = await fetch(url, { method, headers: headers(), body, cache: "no-store" });
    } catch (err) {
      throw new ApiError(0, { detail: `The server could not be reached (${err.message}).` });
    }
    if (response.status === 204) return null;
    let parsed = null;
    if ((response.headers.get("Content-Type") || "").includes("json")) {
      parsed = await response.json().catch(() => null);
    }
    if (response.status === 401 && allowUnauthorized) return { unauthorized: true, body: parsed };
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }

  // A file the API serves (video, poster, live preview) as a URL an element
  // can load: the URL itself, or with a key (which an element cannot send) a
  // blob fetched with it.
  async function mediaUrl(url, accept) {
    if (!state.apiKey) return withUser(url);
    const response = await fetch(withUser(url), { headers: headers({ Accept: accept }), cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    return URL.createObjectURL(await response.blob());
  }

  function setObjectUrl(element, attribute, url) {
    const previous = state.objectUrls.get(element);
    if (previous && previous !== url) URL.revokeObjectURL(previous);
    if (url.startsWith("blob:")) state.objectUrls.set(element, url);
    else state.objectUrls.delete(element);
    element.setAttribute(attribute, url);
  }

  // --- Errors ---------------------------------------------------------------

  function clearErrors() {
    const box = $("error");
    box.hidden = true;
    box.replaceChildren();
    for (const element of document.querySelectorAll("[aria-invalid]")) {
      element.removeAttribute("aria-invalid");
      const described = (element.getAttribute("aria-describedby") || "").split(" ").filter((id) => !id.endsWith("-error"));
      if (described.length) element.setAttribute("aria-describedby", described.join(" "));
      else element.removeAttribute("aria-describedby");
    }
    for (const message of document.querySelectorAll(".field-error")) message.remove();
  }

  function fieldElement(name) {
    return document.querySelector(`form [name="${CSS.escape(name)}"]`);
  }

  // Every error answer shown where it can be seen and heard: its status and
  // detail in the alert at the top, each field's errors beside the field.
  function showError(err) {
    clearErrors();
    const box = $("error");
    const title = document.createElement("p");
    title.className = "error-title";
    title.textContent = err.status ? `Error ${err.status}: ${err.detail}` : err.detail || err.message;
    box.append(title);
    if (err.errors && typeof err.errors === "object") {
      const list = document.createElement("ul");
      for (const [name, messages] of Object.entries(err.errors)) {
        const text = [].concat(messages).join(" ");
        const item = document.createElement("li");
        const element = fieldElement(name);
        if (element && !element.closest("[hidden]")) {
          // A link to the field, so a keyboard gets there from the alert in one step.
          const link = document.createElement("a");
          link.href = `#${element.id}`;
          link.textContent = `${name}: ${text}`;
          link.addEventListener("click", (event) => {
            event.preventDefault();
            element.focus();
          });
          item.append(link);
        } else {
          item.textContent = `${name}: ${text}`;
        }
        list.append(item);
        if (element) {
          element.setAttribute("aria-invalid", "true");
          const message = document.createElement("p");
          message.className = "field-error";
          message.id = `${element.id}-error`;
          message.textContent = text;
          element.insertAdjacentElement("afterend", message);
          const described = element.getAttribute("aria-describedby");
          element.setAttribute("aria-describedby", described ? `${described} ${message.id}` : message.id);
        }
      }
      box.append(list);
    }
    box.hidden = false;
    box.focus();
  }

  function localError(detail, field) {
    showError({ status: 0, detail, errors: field ? { [field]: [detail] } : null });
  }

  // --- Who you are ----------------------------------------------------------

  async function detectAuth() {
    try {
      const answer = await api("GET", `${API}/models`, { allowUnauthorized: true });
      if (answer && answer.unauthorized) {
        state.keysOn = true;
        $("api-key-field").hidden = false;
        $("auth-mode").textContent =
          "This server wants an API key (it answered 401 without one). Enter yours; the user id is optional.";
      } else {
        takeModels(answer);
        $("auth-mode").textContent = "This server trusts the user id it is given (no API keys). Enter yours.";
      }
    } catch (err) {
      $("auth-mode").textContent = "The server did not answer GET /models.";
      showError(err);
    }
  }

  async function useIdentity(event) {
    event.preventDefault();
    clearErrors();
    state.userId = $("user-id").value.trim();
    if (state.keysOn) {
      state.apiKey = $("api-key").value.trim();
      if (!state.apiKey) return localError("Enter an API key: this server wants one.", "api_key");
      try {
        takeModels(await api("GET", `${API}/models`));
      } catch (err) {
        state.apiKey = "";
        return showError(err);
      }
    } else if (!state.userId) {
      return localError("Enter a user id: every job belongs to a user.", "user_id");
    }
    window.localStorage.setItem("videogen.user_id", state.userId);
    // Another user's job is not this one's to watch.
    stopWatching();
    $("job-section").hidden = true;
    $("generate-form").hidden = false;
    $("generate-heading").focus();
    loadVideos(`${API}/videos?page_size=${PAGE_SIZE}`);
  }

  // --- The form, from GET /models --------------------------------------------

  function takeModels(answer) {
    state.models = answer.models;
    state.defaultModel = answer.default;
    const select = $("model");
    select.replaceChildren(
      ...state.models.map((model) => {
        const option = document.createElement("option");
        option.value = model.name;
        option.textContent = `${model.name} (${model.modes.join(", ")})`;
        option.selected = model.name === state.defaultModel;
        return option;
      }),
    );
    applyModel();
  }

  function currentModel() {
    return state.models.find((model) => model.name === $("model").value) || state.models[0];
  }

  function inputFor(field) {
    return $(field.replaceAll("_", "-"));
  }

  // A model's defaults and bounds on the number fields, and the image inputs its modes take.
  function applyModel() {
    const model = currentModel();
    if (!model) return;
    for (const field of NUMBER_FIELDS) {
      const input = inputFor(field);
      const bounds = model.bounds[field] || {};
      input.value = model.defaults[field];
      input.min = bounds.min ?? "";
      input.max = bounds.max ?? "";
      input.step = bounds.multiple_of || 1;
    }
    $("model-help").textContent = `${model.description} Modes: ${model.modes.join(", ")}.`;
    showImageFields();
  }

  function showImageFields() {
    const model = currentModel();
    const takesImage = model.modes.includes("image-to-video") || model.modes.includes("first-last-frame");
    $("image-field").hidden = !takesImage || Boolean(state.extend);
    $("last-image-field").hidden = !model.modes.includes("first-last-frame") || Boolean(state.extend);
  }

  function chooseFile(field, file) {
    state.files[field] = file || null;
    const chosen = $(`${inputFor(field).id}-chosen`);
    chosen.textContent = file ? `Chosen: ${file.name} (${Math.ceil(file.size / 1024)} KiB)` : "";
  }

  function setUpDropZone(zone) {
    const input = $(zone.dataset.for);
    const field = input.name;
    input.addEventListener("change", () => chooseFile(field, input.files[0]));
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const file = event.dataTransfer.files[0];
      if (!file) return;
      // The file input shows the dropped file too, where the browser allows it.
      try {
        input.files = event.dataTransfer.files;
      } catch (err) {
        // Older browsers: the file is kept in state.files all the same.
      }
      chooseFile(field, file);
    });
  }

  function startExtending(video) {
    state.extend = video;
    $("extending-job").textContent = `"${video.prompt}" (${video.job_id})`;
    $("extending").hidden = false;
    for (const element of document.querySelectorAll(".not-extend")) element.hidden = true;
    $("generate-submit").textContent = "Extend";
    $("prompt").focus();
  }

  function stopExtending() {
    state.extend = null;
    $("extending").hidden = true;
    for (const element of document.querySelectorAll(".field.not-extend:not(.image-field)")) element.hidden = false;
    $("generate-submit").textContent = "Generate";
    showImageFields();
  }

  // --- Submit -----------------------------------------------------------------

  function formBody() {
    const body = new FormData();
    if (state.userId) body.append("user_id", state.userId);
    body.append("prompt", $("prompt").value);
    const fields = state.extend ? ["num_frames", "num_inference_steps", "seed"] : ["model", ...NUMBER_FIELDS, "seed"];
    for (const field of fields) {
      const value = inputFor(field).value.trim();
      if (value !== "") body.append(field, value);
    }
    if (state.extend) {
      body.append("extend_job_id", state.extend.job_id);
    } else {
      if (!$("image-field").hidden && state.files.image) body.append("image", state.files.image);
      if (!$("last-image-field").hidden && state.files.last_image) body.append("last_image", state.files.last_image);
    }
    return body;
  }

  async function submit(event) {
    event.preventDefault();
    clearErrors();
    const button = $("generate-submit");
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      const job = await api("POST", `${API}/generate`, { body: formBody() });
      if (state.extend) stopExtending();
      watch(job);
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // --- Watching a job ------------------------------------------------------------

  function stopWatching() {
    if (state.watcher) state.watcher.stop();
    state.watcher = null;
  }

  function showJob(job) {
    state.job = job;
    $("job-section").hidden = false;
    $("job-id").textContent = job.job_id;
    $("job-result").hidden = true;
    $("live-preview-figure").hidden = true;
    $("job-video").removeAttribute("src");
    $("job-video").removeAttribute("poster");
  }

  function watch(job) {
    stopWatching();
    showJob(job);
    $("job-cancel").hidden = false;
    render(job);
    $("job-heading").focus();
    if (state.apiKey) {
      $("watch-path").textContent =
        "API keys are on and an EventSource cannot send one: this page reads the job's event stream with fetch instead.";
      streamWithKey(job.job_id);
    } else {
      $("watch-path").textContent = "Watching the job's event stream (GET /job/{id}/events).";
      stream(job.job_id);
    }
  }

  // One event of the stream: true once it is the terminal one.
  function dispatch(name, data) {
    if (FINISHED.has(name)) {
      finish(data);
      return true;
    }
    if (name === "status") render(data);
    else if (name === "progress") renderProgress(data);
    else if (name === "queue") renderQueue(data);
    return false;
  }

  function fallBackToPolling(jobId) {
    $("watch-path").textContent = "The event stream was refused: this page polls GET /job every second instead.";
    poll(jobId);
  }

  function stream(jobId) {
    const source = new EventSource(withUser(`${API}/job/${jobId}/events`));
    state.watcher = { path: "events", stop: () => source.close() };
    for (const name of ["status", "progress", "queue", ...FINISHED]) {
      source.addEventListener(name, (event) => {
        if (FINISHED.has(name)) source.close();
        dispatch(name, JSON.parse(event.data));
      });
    }
    source.addEventListener("error", () => {
      // A dropped stream reconnects by itself (Last-Event-ID); a refused one is closed: poll instead.
      if (source.readyState === EventSource.CLOSED && state.watcher && state.watcher.path === "events") {
        fallBackToPolling(jobId);
      }
    });
  }

  // The same stream read with fetch, which can send the key (docs/events.md):
  // parsed here, resumed with Last-Event-ID after a drop as an EventSource would.
  function streamWithKey(jobId) {
    const controller = new AbortController();
    let lastId = null;
    let stopped = false;
    const watcher = { path: "events", stop: () => { stopped = true; controller.abort(); } };
    state.watcher = watcher;
    const reconnect = () => { if (!stopped) setTimeout(connect, 2000); };
    const connect = async () => {
      let response;
      try {
        const resume = lastId === null ? {} : { "Last-Event-ID": lastId };
        response = await fetch(withUser(`${API}/job/${jobId}/events`), {
          headers: headers({ Accept: "text/event-stream", ...resume }), signal: controller.signal, cache: "no-store",
        });
      } catch (err) {
        return reconnect();
      }
      if (!response.ok || response.status === 204
          || !(response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
        // 204: the terminal event was already read; anything else: no stream here.
        if (!stopped && state.watcher === watcher) fallBackToPolling(jobId);
        return;
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = "message";
            const data = [];
            for (const line of block.split("\n")) {
              if (!line || line.startsWith(":")) continue;
              const colon = line.indexOf(":");
              const field = colon < 0 ? line : line.slice(0, colon);
              const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
              if (field === "event") name = text;
              else if (field === "data") data.push(text);
              else if (field === "id") lastId = text;
            }
            if (data.length && dispatch(name, JSON.parse(data.join("\n")))) {
              watcher.stop();
              return;
            }
          }
        }
      } catch (err) {
        // Aborted, or the connection dropped: reconnect below unless stopped.
      }
      reconnect();
    };
    connect();
  }

  function poll(jobId) {
    let timer = null;
    let stopped = false;
    state.watcher = { path: "poll", stop: () => { stopped = true; clearTimeout(timer); } };
    const tick = async () => {
      try {
        const job = await api("GET", withUser(`${API}/job/${jobId}`));
        if (stopped) return;
        if (FINISHED.has(job.status)) return finish(job);
        render(job);
      } catch (err) {
        if (stopped) return;
        showError(err);
        if (err.status >= 400 && err.status < 500 && err.status !== 429) return;
      }
      timer = setTimeout(tick, 1000);
    };
    tick();
  }

  function formatEta(iso) {
    if (!iso) return "";
    const seconds = Math.round((Date.parse(iso) - Date.now()) / 1000);
    const at = new Date(iso).toLocaleTimeString();
    return seconds > 0 ? `, starting in about ${seconds} s (${at})` : ", starting any moment";
  }

  function renderQueue(queue) {
    $("job-queue").textContent = queue.queue_position
      ? `Position ${queue.queue_position}${formatEta(queue.estimated_start_at)}`
      : "Not queued";
  }

  function render(job) {
    $("job-status").textContent = job.message ? `${job.status}: ${job.message}` : job.status;
    if (job.status === "pending") renderQueue(job);
    else $("job-queue").textContent = "Not queued";
    renderProgress({
      progress: job.progress,
      current_step: job.current_step,
      total_steps: job.num_inference_steps,
      live_preview_url: job.live_preview_url,
    });
  }

  function renderProgress(progress) {
    $("job-progress").value = progress.progress;
    const steps = progress.total_steps ? ` (step ${progress.current_step || 0} of ${progress.total_steps})` : "";
    $("job-progress-text").textContent = `${progress.progress}%${steps}`;
    if (progress.live_preview_url) loadLivePreview(progress.live_preview_url);
  }

  // The live preview has one URL whose image changes (Cache-Control: no-store),
  // and the API takes no cache-busting parameter: fetch it, newest wins.
  let previewLoading = false;
  let previewWanted = null;
  async function loadLivePreview(url) {
    previewWanted = url;
    if (previewLoading) return;
    previewLoading = true;
    const jobId = state.job && state.job.job_id;
    try {
      while (previewWanted) {
        const next = previewWanted;
        previewWanted = null;
        const response = await fetch(withUser(next), { headers: headers({ Accept: "image/jpeg" }), cache: "no-store" });
        // 404 before the first, 409 once the run ended: nothing to show.
        if (!response.ok || !state.job || state.job.job_id !== jobId || !$("job-cancel").offsetParent) continue;
        setObjectUrl($("live-preview"), "src", URL.createObjectURL(await response.blob()));
        $("live-preview-figure").hidden = false;
      }
    } catch (err) {
      // A live preview is a nicety: a failed one leaves the last one shown.
    } finally {
      previewLoading = false;
    }
  }

  async function finish(job) {
    stopWatching();
    render(job);
    $("job-cancel").hidden = true;
    $("live-preview-figure").hidden = true;
    if (job.status === "completed") {
      await showResult(job);
      loadVideos(state.videosUrl || `${API}/videos?page_size=${PAGE_SIZE}`);
    } else {
      $("job-heading").focus();
    }
  }

  async function showResult(job) {
    const video = $("job-video");
    try {
      if (job.poster_url) setObjectUrl(video, "poster", await mediaUrl(job.poster_url, "image/jpeg"));
      setObjectUrl(video, "src", await mediaUrl(job.video_url, "video/mp4"));
      const download = $("job-download");
      setObjectUrl(download, "href", video.getAttribute("src"));
      download.setAttribute("download", `${job.job_id}.mp4`);
    } catch (err) {
      showError(err);
      return;
    }
    $("job-progress").value = 100;
    $("job-result").hidden = false;
    $("result-heading").focus();
  }

  async function cancelJob() {
    clearErrors();
    try {
      render(await api("POST", withUser(`${API}/job/${state.job.job_id}/cancel`)));
    } catch (err) {
      showError(err);
    }
  }

  // --- Your videos ----------------------------------------------------------------

  async function loadVideos(url) {
    let page;
    try {
      page = await api("GET", withUser(url));
    } catch (err) {
      return showError(err);
    }
    state.videosUrl = url;
    const list = $("videos");
    list.replaceChildren(...page.videos.map(videoItem));
    const count = page.total_is_exact ? `${page.total}` : `at least ${page.total}`;
    const noun = page.total === 1 && page.total_is_exact ? "video" : "videos";
    $("videos-status").textContent = page.videos.length ? `${count} ${noun}, newest first.` : "No videos yet.";
    setPager($("videos-previous"), page.previous);
    setPager($("videos-next"), page.next);
  }

  function setPager(button, url) {
    button.disabled = !url;
    button.dataset.url = url || "";
  }

  function videoItem(video) {
    const item = document.createElement("li");
    item.dataset.jobId = video.job_id;
    const label = `"${video.prompt.slice(0, 40)}"`;
    if (video.poster_url) {
      const poster = document.createElement("img");
      poster.alt = `First frame of ${label}`;
      mediaUrl(video.poster_url, "image/jpeg").then((url) => setObjectUrl(poster, "src", url), () => {});
      item.append(poster);
    }
    const prompt = document.createElement("p");
    prompt.textContent = video.prompt;
    const made = document.createElement("p");
    made.textContent = `${new Date(video.created_at).toLocaleString()} · ${video.model} · ${video.width}x${video.height}`;
    item.append(prompt, made);
    const actions = [
      ["Watch", () => { stopWatching(); showJob(video); render({ ...video, progress: 100, message: "" }); showResult(video); }],
      ["Extend", () => startExtending(video)],
      ["Delete", () => deleteVideo(video)],
    ];
    for (const [name, action] of actions) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = name;
      button.setAttribute("aria-label", `${name} ${label}`);
      button.addEventListener("click", action);
      item.append(button, " ");
    }
    return item;
  }

  async function deleteVideo(video) {
    if (!window.confirm(`Delete the video "${video.prompt}"? This cannot be undone.`)) return;
    clearErrors();
    try {
      await api("DELETE", withUser(`${API}/job/${video.job_id}`));
    } catch (err) {
      return showError(err);
    }
    if (state.job && state.job.job_id === video.job_id) {
      stopWatching();
      $("job-section").hidden = true;
      state.job = null;
    }
    await loadVideos(state.videosUrl);
    $("videos-status").textContent = `Deleted "${video.prompt}". ${$("videos-status").textContent}`;
    $("videos-heading").focus();
  }

  // --- Start ------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    $("user-id").value = window.localStorage.getItem("videogen.user_id") || "";
    $("who-form").addEventListener("submit", useIdentity);
    $("generate-form").addEventListener("submit", submit);
    $("model").addEventListener("change", applyModel);
    $("stop-extending").addEventListener("click", stopExtending);
    $("job-cancel").addEventListener("click", cancelJob);
    for (const id of ["videos-previous", "videos-next"]) {
      $(id).addEventListener("click", async (event) => {
        await loadVideos(event.currentTarget.dataset.url);
        $("videos-heading").focus();
      });
    }
    for (const zone of document.querySelectorAll(".drop")) setUpDropZone(zone);
    // A file dropped beside a drop zone must not navigate away from the page.
    for (const name of ["dragover", "drop"]) document.addEventListener(name, (event) => event.preventDefault());
    detectAuth();
  });
})();
