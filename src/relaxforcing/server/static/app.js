// relaxforcing live viewer: plays streamed frames at the model's fps and draws each pane's memory timeline.
"use strict";

(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const HEADER_BYTES = 8; // pane u8, job seq u8, format u16 (0 PNG, 1 JPEG), video frame index u32 (little endian)
  const IMAGE_TYPES = ["image/png", "image/jpeg"];

  let config = { fps: 16, policies: [], max_recache: 24, decoders: [] };
  let socket = null;
  let job = null; // the generation shown: {id, seq, fps, chunkFrames, totalChunks, panes, state}
  let clickedAt = 0;
  let imageData = null; // the start picture as a data URL, or null
  let lastFinished = null; // id of the last job whose video can be extended

  // ---- page helpers ---------------------------------------------------------------------------------------

  function showError(message) {
    const box = $("#error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function setStatus(message) {
    $("#status").textContent = message;
  }

  function setRunning(running) {
    $("#generate").disabled = false;
    $("#stop").disabled = !running;
    $("#switch").disabled = !running;
  }

  function seconds(ms) {
    return `${(ms / 1000).toFixed(2)} s`;
  }

  async function loadConfig() {
    try {
      const response = await fetch("/api/config");
      config = await response.json();
    } catch (error) {
      showError(`cannot load the server configuration: ${error}`);
      return;
    }
    const list = $("#policies");
    list.replaceChildren(...config.policies.map((name) => Object.assign(document.createElement("option"), { value: name })));
    const d = config.defaults;
    $("#prompt").value = d.prompt;
    $("#memory").value = d.memory;
    $("#seconds").value = d.seconds;
    $("#seed").value = d.seed;
    $("#recache").value = d.recache;
    const decoders = config.decoders.map(({ name, label }) =>
      Object.assign(document.createElement("option"), { value: name, textContent: label }));
    $("#decoder").replaceChildren(...decoders);
    $("#decoder").value = d.decoder;
    $("#decoder").disabled = decoders.length < 2; // nothing to choose: shown for what it says
    $("#seconds").title = `1 to ${config.max_seconds} seconds`;
    $("#recache").title = `0 to ${config.max_recache} latent frames`;
    if (config.vocabulary.length) {
      $("#vocabulary").textContent = `The ${config.model} model's text encoder knows these words: ${config.vocabulary.join(", ")}.`;
    }
  }

  // ---- the socket -----------------------------------------------------------------------------------------

  function connect() {
    if (socket && socket.readyState === WebSocket.OPEN) return Promise.resolve(socket);
    return new Promise((resolve, reject) => {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const ws = new WebSocket(`${scheme}//${location.host}/ws`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => {
        socket = ws;
        $("#connection").textContent = "connected";
        $("#connection").classList.add("on");
        resolve(ws);
      };
      ws.onerror = () => reject(new Error("cannot connect to the server"));
      ws.onclose = () => {
        if (socket === ws) socket = null;
        $("#connection").textContent = "offline";
        $("#connection").classList.remove("on");
        if (job && job.state === "running") {
          job.state = "disconnected";
          job.panes.forEach((pane) => { $(".state", pane.root).textContent = "disconnected"; });
          showError("the connection to the server was lost; generation stopped");
        }
        setRunning(false);
      };
      ws.onmessage = (event) => {
        if (typeof event.data === "string") onMessage(JSON.parse(event.data));
        else onFrame(event.data);
      };
    });
  }

  async function send(message) {
    try {
      const ws = await connect();
      ws.send(JSON.stringify(message));
    } catch (error) {
      showError(error.message);
    }
  }

  function asNumber(text) {
    return text.trim() === "" || Number.isNaN(Number(text)) ? text : Number(text);
  }

  // ---- messages -------------------------------------------------------------------------------------------

  function onMessage(message) {
    const current = job && message.job === job.id;
    switch (message.type) {
      case "started": return start(message);
      case "chunk": if (current) onChunk(message); return;
      case "switched": if (current) onSwitched(message); return;
      case "switch_queued": setStatus(`switching to “${message.prompt}” at the next chunk boundary…`); return;
      case "error":
        showError(message.message);
        if (!message.job && !(job && job.state === "running")) setRunning(false);
        return;
      case "done": if (current) onDone(message); return;
      default: console.warn("unknown message", message);
    }
  }

  function start(message) {
    job = {
      id: message.job, seq: message.seq, fps: message.fps, upscale: message.upscale,
      chunkFrames: message.chunk_frames, totalChunks: message.total_chunks, state: "running", panes: [],
      decoder: message.decoder, decoderLabel: message.decoder_label,
    };
    const host = $("#panes");
    host.replaceChildren();
    $("#log").replaceChildren();
    job.panes = message.panes.map((spec, index) => makePane(host, spec, index));
    setRunning(true);
    setStatus(`generating ${message.latent_frames} latent frames (${message.total_chunks} chunks) for “${message.prompt}”, ` +
              `seed ${message.seed}, decoder: ${message.decoder_label}`);
  }

  function makePane(host, spec, index) {
    const root = $("#pane-template").content.firstElementChild.cloneNode(true);
    root.id = `pane-${index}`;
    host.append(root);
    const [name] = spec.split(":");
    $(".policy", root).textContent = name;
    $(".spec", root).textContent = spec;
    $(".state", root).textContent = "starting…";
    $(".decoder", root).textContent = job.decoderLabel;
    root.dataset.decoder = job.decoder;
    const pane = {
      root, spec, canvas: $(".screen", root), ctx: null, timeline: $(".timeline", root), scrub: $(".scrub", root),
      records: [], switches: new Map(), frames: [], expected: 0, received: 0, decoded: 0, played: 0,
      nextAt: null, drawTimes: [], firstFrameMs: null, latentFrames: 0, follow: true, lastDrawn: -1,
    };
    pane.ctx = pane.canvas.getContext("2d");
    pane.scrub.addEventListener("input", () => {
      pane.follow = Number(pane.scrub.value) === pane.records.length - 1;
      renderTimeline(pane);
    });
    $(".replay", root).addEventListener("click", () => { pane.played = 0; pane.nextAt = null; });
    return pane;
  }

  function onChunk(message) {
    const pane = job.panes[message.pane];
    pane.records.push({ ...message.trace, prompt: message.prompt, compute_ms: message.compute_ms,
                        decoder: message.decoder });
    pane.latentFrames = Math.max(pane.latentFrames, message.start + job.chunkFrames);
    pane.expected += message.frames;
    const made = message.first_frame + message.frames;
    $(".gen-fps", pane.root).textContent = `${(made / message.elapsed_s).toFixed(1)} fps`;
    $(".chunk-ms", pane.root).textContent = `${Math.round(message.compute_ms)} ms`;
    $(".state", pane.root).textContent = `chunk ${message.chunk + 1} / ${job.totalChunks}`;
    const bar = $(".progress", pane.root);
    bar.value = (message.chunk + 1) / job.totalChunks;
    pane.scrub.max = pane.records.length - 1;
    pane.scrub.disabled = false;
    if (pane.follow) pane.scrub.value = pane.records.length - 1;
    pane.root.dataset.chunks = pane.records.length;
    renderTimeline(pane);
  }

  function onSwitched(message) {
    const pane = job.panes[message.pane];
    pane.switches.set(message.frame, message);
    const text = `${pane.spec.split(":")[0]}: switched to “${message.prompt}” at latent frame ${message.frame} ` +
                 `(chunk ${message.chunk}); re-encoded ${message.recached} frames in ${Math.round(message.ms)} ms`;
    setStatus(text);
    $("#log").append(Object.assign(document.createElement("li"), { textContent: text }));
    renderTimeline(pane);
  }

  function onDone(message) {
    job.state = message.state;
    setRunning(false);
    if (message.downloads.length) {
      lastFinished = message.job;
      $("#extend").disabled = false;
    }
    job.panes.forEach((pane, index) => {
      $(".state", pane.root).textContent = message.state;
      $(".replay", pane.root).disabled = false;
      const link = $(".download", pane.root);
      if (message.downloads[index]) {
        link.href = message.downloads[index];
        link.hidden = false;
      }
      pane.root.dataset.done = message.state;
    });
    setStatus(`${message.state}: ${message.chunks} of ${job.totalChunks} chunks`);
  }

  function onFrame(buffer) {
    const view = new DataView(buffer);
    const index = view.getUint32(4, true);
    if (!job || view.getUint8(1) !== job.seq) return; // a frame of an earlier generation
    const pane = job.panes[view.getUint8(0)];
    pane.received += 1;
    if (pane.firstFrameMs === null) {
      pane.firstFrameMs = performance.now() - clickedAt;
      $(".first-frame", pane.root).textContent = seconds(pane.firstFrameMs);
    }
    const blob = new Blob([new Uint8Array(buffer, HEADER_BYTES)], { type: IMAGE_TYPES[view.getUint16(2, true)] });
    createImageBitmap(blob).then((bitmap) => {
      pane.frames[index] = bitmap;
      pane.decoded += 1;
      pane.root.dataset.framesReceived = pane.decoded;
    });
  }

  // ---- playback -------------------------------------------------------------------------------------------

  function tick() {
    if (!job) return;
    const now = performance.now();
    const period = 1000 / job.fps;
    for (const pane of job.panes) {
      const bitmap = pane.frames[pane.played];
      if (pane.nextAt === null) {
        if (!bitmap) continue;
        pane.nextAt = now;
      }
      if (now < pane.nextAt || !bitmap) continue; // not due yet, or waiting for the next chunk
      if (pane.canvas.width !== bitmap.width || pane.canvas.height !== bitmap.height) {
        pane.canvas.width = bitmap.width;
        pane.canvas.height = bitmap.height;
        pane.canvas.style.width = `${bitmap.width * job.upscale}px`;
        pane.canvas.style.height = `${bitmap.height * job.upscale}px`;
      }
      pane.ctx.drawImage(bitmap, 0, 0);
      pane.drawTimes.push(now);
      pane.played += 1;
      pane.root.dataset.framesPlayed = pane.played;
      pane.nextAt = now - pane.nextAt > period ? now + period : pane.nextAt + period; // after a stall, restart
    }
  }

  function readouts() {
    if (!job) return;
    const now = performance.now();
    for (const pane of job.panes) {
      pane.drawTimes = pane.drawTimes.filter((t) => now - t <= 1000);
      $(".play-fps", pane.root).textContent = `${pane.drawTimes.length} fps`;
      const ahead = Math.max(0, pane.decoded - pane.played);
      $(".buffer", pane.root).textContent = `${ahead} frames (${(ahead / job.fps).toFixed(1)} s)`;
    }
  }

  // ---- the memory timeline --------------------------------------------------------------------------------

  function promptClasses(pane) {
    const ids = new Map();
    const byFrame = [];
    for (const record of pane.records) {
      if (!ids.has(record.prompt)) ids.set(record.prompt, ids.size);
      for (let i = 0; i < job.chunkFrames; i += 1) byFrame[record.start + i] = ids.get(record.prompt);
    }
    return byFrame;
  }

  function renderTimeline(pane) {
    const shown = Number(pane.scrub.value);
    const record = pane.records[shown];
    if (!record) return;
    const attended = new Map(record.attended.map((a) => [a.frame, a]));
    const candidates = new Map((record.candidates || []).map((c) => [c.frame, c.score]));
    const scores = [...candidates.values()];
    const low = Math.min(...scores);
    const span = Math.max(...scores) - low || 1;
    const prompts = promptClasses(pane);
    const columns = [];
    for (let frame = 0; frame < pane.latentFrames; frame += 1) {
      const a = attended.get(frame);
      const col = document.createElement("div");
      col.className = "col";
      col.dataset.frame = frame;
      let title = `latent frame ${frame}`;
      if (a) {
        col.classList.add(a.role);
        col.dataset.role = a.role;
        col.dataset.position = a.position;
        title += ` · ${a.role} at RoPE position ${a.position}`;
      }
      if (frame >= record.start + job.chunkFrames) col.classList.add("future");
      if (pane.switches.has(frame)) col.classList.add("switch");
      const idx = Object.assign(document.createElement("div"), { className: "idx", textContent: frame % 5 ? "" : frame });
      const cell = Object.assign(document.createElement("div"), { className: "cell", textContent: a ? a.position : "" });
      const barBox = Object.assign(document.createElement("div"), { className: "bar-box" });
      if (candidates.has(frame)) {
        const score = candidates.get(frame);
        const bar = Object.assign(document.createElement("div"), { className: "bar" });
        bar.style.height = `${4 + 20 * (score - low) / span}px`;
        if (a && a.role === "history") bar.classList.add("chosen");
        barBox.append(bar);
        col.dataset.score = score;
        title += ` · candidate score ${score.toFixed(4)}`;
      }
      const strip = Object.assign(document.createElement("div"), { className: `prompt p${(prompts[frame] ?? 0) % 4}` });
      col.title = title;
      col.append(idx, cell, barBox, strip);
      columns.push(col);
    }
    pane.timeline.replaceChildren(...columns);
    if (pane.follow) pane.timeline.scrollLeft = pane.timeline.scrollWidth;
    $(".scrub-label", pane.root).textContent = `${shown} of ${pane.records.length - 1}`;
    $(".details", pane.root).textContent = describe(record, candidates);
  }

  function describe(record, candidates) {
    const cached = record.attended.filter((a) => a.role !== "current");
    const current = record.attended.filter((a) => a.role === "current");
    const parts = [
      `chunk ${record.chunk}: frames ${record.start}–${record.start + current.length - 1}`,
      `prompt “${record.prompt}”`,
      `attends ${cached.length} cached + ${current.length} current frames` +
        (cached.length ? ` (frame→position: ${cached.map((a) => `${a.role} ${a.frame}→${a.position}`).join(", ")})` : ""),
    ];
    if (candidates.size) {
      const chosen = new Set(record.attended.filter((a) => a.role === "history").map((a) => a.frame));
      parts.push(`history candidates: ${[...candidates].map(([f, s]) => `${f} (${s.toFixed(4)}${chosen.has(f) ? " ✓" : ""})`).join(", ")}`);
    }
    parts.push(`${Math.round(record.compute_ms)} ms (decoder: ${record.decoder})`);
    return parts.join(" · ");
  }

  // ---- wiring ---------------------------------------------------------------------------------------------

  function startMessage(extra) {
    showError("");
    const memory = [$("#memory").value];
    if ($("#compare").value.trim()) memory.push($("#compare").value);
    clickedAt = performance.now();
    $("#generate").disabled = true;
    send({
      type: "start", prompt: $("#prompt").value, memory, seconds: asNumber($("#seconds").value),
      seed: asNumber($("#seed").value), ...($("#decoder").value ? { decoder: $("#decoder").value } : {}), ...extra,
    }).finally(() => { $("#generate").disabled = false; });
  }

  $("#controls").addEventListener("submit", (event) => {
    event.preventDefault();
    startMessage(imageData ? { image: imageData } : {});
  });

  $("#extend").addEventListener("click", () => { if (lastFinished) startMessage({ extend: lastFinished }); });

  function takeImage(file) {
    if (!file) { imageData = null; return; }
    const reader = new FileReader();
    reader.onload = () => { imageData = reader.result; setStatus(`start image: ${file.name}`); };
    reader.onerror = () => showError(`cannot read ${file.name}`);
    reader.readAsDataURL(file);
  }

  $("#image").addEventListener("change", (event) => takeImage(event.target.files[0]));
  $("#controls").addEventListener("dragover", (event) => event.preventDefault());
  $("#controls").addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) takeImage(file);
  });

  $("#stop").addEventListener("click", () => send({ type: "stop" }));

  $("#switcher").addEventListener("submit", (event) => {
    event.preventDefault();
    showError("");
    send({ type: "switch", prompt: $("#switch-prompt").value, recache: asNumber($("#recache").value) });
  });

  window.addEventListener("pagehide", () => { if (socket) socket.close(); });
  setInterval(tick, 4);
  setInterval(readouts, 250);
  loadConfig().then(() => connect()).catch((error) => showError(error.message));
})();
