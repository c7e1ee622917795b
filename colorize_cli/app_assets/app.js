// The page of `colorize app` (the HTTP API is described in colorize_cli/app.py). The page holds
// each photo's hints and their undo/redo history; every change sends the whole hint list, so
// the server keeps nothing per photo but the prepared photo itself and a reload loses only
// the hints. The server drops old photos past its memory limits and answers 410 Gone for them:
// the page then opens the file again (it keeps the File), once however many requests were
// refused, and goes on.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const frame = $("frame");
  const grayImg = $("gray");
  const colorImg = $("color");
  const picker = $("hint-color");
  let current = null;
  let info = { model: "", hints: false, max_upload: Infinity, max_hints: 0 };
  let drag = null; // {photo, index, before: hints when the drag began, moved}

  const status = (text) => { $("status").textContent = text; };
  const fail = (text) => { $("error").textContent = text; };
  const megabytes = (n) => `${(n / 2 ** 20).toFixed(1)} MB`;
  const stem = (name) => name.replace(/\.[^.]*$/, "") || "photo";

  async function request(path, options = {}) {
    const response = await fetch(path, options);
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch { /* not JSON */ }
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return response;
  }

  async function upload(file) {
    if (file.size > info.max_upload) {
      throw new Error(`${file.name}: ${megabytes(file.size)} is more than the ${megabytes(info.max_upload)} this app accepts`);
    }
    const response = await request(`/api/photos?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
    return response.json();
  }

  // Open a photo's file again under a new id, after the server said (410) that `gone` is no
  // longer open: one upload for all the requests refused at once.
  async function reopen(photo, gone) {
    if (photo.id !== gone) return; // already opened again
    if (!photo.reopening) {
      photo.reopening = upload(photo.file)
        .then((meta) => { photo.id = meta.id; })
        .finally(() => { photo.reopening = null; });
    }
    await photo.reopening;
  }

  // A request about one photo; if the server has dropped it from memory, open it again first.
  async function call(photo, what, hints) {
    const options = () => hints === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ hints }),
    };
    const id = photo.id;
    try {
      return await request(`/api/photos/${id}/${what}`, options());
    } catch (error) {
      if (error.status !== 410) throw error;
      await reopen(photo, id);
      return request(`/api/photos/${photo.id}/${what}`, options());
    }
  }

  // --- showing a photo ---------------------------------------------------------------------

  function refresh() {
    const p = current;
    frame.dataset.state = p && p.busy ? "busy" : "ready";
    frame.classList.toggle("no-hints", !info.hints);
    $("hint-tools").disabled = !p || p.selected < 0;
    $("undo").disabled = !p || !p.undo.length;
    $("redo").disabled = !p || !p.redo.length;
    $("download-png").disabled = !p;
    $("download-hints").disabled = !p || !info.hints;
    for (const button of $("photos").children) button.setAttribute("aria-current", String(button.photo === p));
    const markers = !p ? [] : p.hints.map((h, i) => {
      const m = document.createElement("div");
      m.className = i === p.selected ? "hint selected" : "hint";
      m.dataset.index = String(i);
      m.style.left = `${((h.x + 0.5) / p.width) * 100}%`;
      m.style.top = `${((h.y + 0.5) / p.height) * 100}%`;
      m.style.background = h.color;
      m.title = `${h.x}, ${h.y}: ${h.color}`;
      return m;
    });
    $("markers").replaceChildren(...markers);
    if (p && p.selected >= 0) picker.value = p.hints[p.selected].color;
  }

  async function showColor(photo) {
    if (photo !== current || !photo.colorURL) return;
    colorImg.src = photo.colorURL;
    await colorImg.decode().catch(() => {});
    frame.dataset.renders = String(Number(frame.dataset.renders) + 1);
  }

  async function show(photo) {
    if (current) settle(current);
    current = photo;
    frame.style.setProperty("--aspect", String(photo.width / photo.height));
    $("empty").hidden = true;
    $("stage").hidden = false;
    colorImg.removeAttribute("src");
    refresh();
    if (!photo.grayURL) {
      photo.grayURL = URL.createObjectURL(await (await call(photo, "gray.jpg")).blob());
    }
    if (current !== photo) return;
    grayImg.src = photo.grayURL;
    await showColor(photo);
  }

  // Recolour from the latest hints; changes made while a request runs are sent when it returns.
  async function recolour(photo) {
    photo.stale = true;
    if (photo.busy) return;
    photo.busy = true;
    refresh();
    while (photo.stale) {
      photo.stale = false;
      const started = performance.now();
      try {
        const blob = await (await call(photo, "colorized.jpg", photo.hints)).blob();
        if (photo.colorURL) URL.revokeObjectURL(photo.colorURL);
        photo.colorURL = URL.createObjectURL(blob);
        await showColor(photo);
        status(`${photo.name}: colorized in ${((performance.now() - started) / 1000).toFixed(2)} s`);
        fail("");
      } catch (error) {
        fail(`${photo.name}: ${error.message}`);
      }
    }
    photo.busy = false;
    refresh();
  }

  async function open(files) {
    for (const file of files) {
      status(`opening ${file.name}…`);
      try {
        const meta = await upload(file);
        const photo = { ...meta, file, hints: [], undo: [], redo: [], selected: -1,
                        busy: false, stale: false, grayURL: null, colorURL: null };
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = photo.name;
        button.title = `${photo.name} (${photo.width}×${photo.height})`;
        button.photo = photo;
        button.addEventListener("click", () => show(photo).catch((e) => fail(e.message)));
        $("photos").append(button);
        await show(photo);
        await recolour(photo);
      } catch (error) {
        fail(error.message);
        status("");
      }
    }
  }

  // --- editing hints: every change is one undo step -------------------------------------------

  function record(photo, before) {
    photo.undo.push(before);
    photo.redo = [];
    refresh();
  }

  // End a drag or a colour pick still in progress on the photo, as one undo step: before any
  // other change, an undo or a switch of photo, so that its later events change nothing.
  function settle(photo) {
    if (drag && drag.photo === photo) {
      if (drag.moved) record(photo, drag.before); // recoloured while it moved
      drag = null;
    }
    if (photo.editing) {
      record(photo, photo.editing); // recoloured at each input event
      photo.editing = null;
    }
  }

  function change(photo, hints, selected) {
    settle(photo);
    const before = photo.hints;
    photo.hints = hints;
    photo.selected = selected;
    record(photo, before);
    recolour(photo);
  }

  function step(from, to) {
    const p = current;
    if (!p) return;
    settle(p);
    if (!p[from].length) return;
    p[to].push(p.hints);
    p.hints = p[from].pop();
    if (p.selected >= p.hints.length) p.selected = -1;
    refresh();
    recolour(p);
  }

  function removeSelected() {
    const p = current;
    if (!p || p.selected < 0) return;
    change(p, p.hints.filter((_, i) => i !== p.selected), -1);
  }

  // The pixel of the upright photo under the pointer.
  function pixelAt(event) {
    const box = frame.getBoundingClientRect();
    const clamp = (v, n) => Math.min(n - 1, Math.max(0, Math.floor(v)));
    return { x: clamp(((event.clientX - box.left) / box.width) * current.width, current.width),
             y: clamp(((event.clientY - box.top) / box.height) * current.height, current.height) };
  }

  const sampler = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  sampler.canvas.width = sampler.canvas.height = 1;

  // The colour the model chose at a pixel of the photo, read from the colorized photo on show
  // (a screen-size preview of it: the server scales large photos down).
  function modelColor(x, y) {
    const p = current;
    const sx = Math.floor(((x + 0.5) * colorImg.naturalWidth) / p.width);
    const sy = Math.floor(((y + 0.5) * colorImg.naturalHeight) / p.height);
    sampler.drawImage(colorImg, sx, sy, 1, 1, 0, 0, 1, 1);
    const [r, g, b] = sampler.getImageData(0, 0, 1, 1).data;
    return `#${[r, g, b].map((v) => v.toString(16).padStart(2, "0")).join("")}`;
  }

  frame.addEventListener("pointerdown", (event) => {
    const p = current;
    if (!p || event.button !== 0 || !p.colorURL || frame.classList.contains("before")) return;
    event.preventDefault(); // no text selection, and no focus change: take focus from the tools here
    if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
    settle(p);
    const marker = event.target.closest(".hint");
    if (marker) {
      p.selected = Number(marker.dataset.index);
      drag = { photo: p, index: p.selected, before: p.hints, moved: false };
      frame.setPointerCapture(event.pointerId);
      refresh();
      return;
    }
    if (!info.hints) {
      fail(`${info.model} takes no colour hints: it colorizes automatically only`);
      return;
    }
    if (p.hints.length >= info.max_hints) {
      fail(`at most ${info.max_hints} hints a photo`);
      return;
    }
    const { x, y } = pixelAt(event);
    change(p, [...p.hints, { x, y, color: modelColor(x, y) }], p.hints.length);
  });

  frame.addEventListener("pointermove", (event) => {
    if (!drag || drag.photo !== current) return;
    const { x, y } = pixelAt(event);
    const h = current.hints[drag.index];
    if (h.x === x && h.y === y) return;
    current.hints = current.hints.map((old, i) => (i === drag.index ? { ...old, x, y } : old));
    drag.moved = true;
    refresh();
    recolour(current);
  });

  const endDrag = () => { if (drag) settle(drag.photo); };
  frame.addEventListener("pointerup", endDrag);
  frame.addEventListener("pointercancel", endDrag);

  // Picking a colour recolours live; the whole pick is one undo step.
  picker.addEventListener("input", () => {
    const p = current;
    if (!p || p.selected < 0) return;
    p.editing = p.editing || p.hints;
    p.hints = p.hints.map((h, i) => (i === p.selected ? { ...h, color: picker.value } : h));
    refresh();
    recolour(p);
  });
  picker.addEventListener("change", () => { if (current) settle(current); });

  // --- before/after, downloads, keys, dropping files ---------------------------------------------

  function setSplit() {
    frame.style.setProperty("--split", `${$("split").value}%`);
    frame.classList.toggle("whole", $("split").value === "0");
  }

  function toggleBefore() {
    const before = frame.classList.toggle("before");
    $("before-label").hidden = !before;
  }

  function save(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  }

  async function download(what, name) {
    const p = current;
    if (!p) return;
    status(`preparing ${name}…`);
    try {
      save(await (await call(p, what, p.hints)).blob(), name);
      status(`${name} downloaded`);
    } catch (error) {
      fail(`${p.name}: ${error.message}`);
    }
  }

  $("split").addEventListener("input", setSplit);
  $("delete").addEventListener("click", removeSelected);
  $("undo").addEventListener("click", () => step("undo", "redo"));
  $("redo").addEventListener("click", () => step("redo", "undo"));
  $("download-png").addEventListener("click", () => download("colorized.png", `${stem(current.name)}-colorized.png`));
  $("download-hints").addEventListener("click", () => download("hints.json", `${stem(current.name)}-hints.json`));
  $("file").addEventListener("change", (event) => {
    open([...event.target.files]);
    event.target.value = "";
  });

  // A key the focused control uses itself is its own, not a shortcut: Space and Enter press a
  // button or open the colour picker, and a field that takes text would take every key (the page
  // has none now). Z, Y and Delete mean nothing to a button, the colour input or the slider, so
  // they stay shortcuts there: undo right after picking a colour works.
  function controlTakes(target, key) {
    const control = target instanceof Element ? target.closest("input, button, select, textarea") : null;
    if (!control) return false;
    if (key === " " || key === "enter") return true;
    return !control.matches("button, input[type=color], input[type=range], input[type=file]");
  }

  document.addEventListener("keydown", (event) => {
    const key = event.key.toLowerCase();
    if (!current || event.altKey || controlTakes(event.target, key) || (event.repeat && key === " ")) return;
    const shortcut = event.ctrlKey || event.metaKey;
    if (key === "z" && !event.shiftKey) step("undo", "redo");
    else if (key === "y" || (key === "z" && event.shiftKey)) step("redo", "undo");
    else if ((key === "delete" || key === "backspace") && !shortcut) removeSelected();
    else if (key === " " && !shortcut) toggleBefore();
    else return;
    event.preventDefault();
  });

  const main = $("drop");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    main.classList.add("dropping");
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) main.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    main.classList.remove("dropping");
    open([...event.dataTransfer.files]);
  });

  setSplit();
  request("/api/info").then((r) => r.json()).then((value) => {
    info = value;
    $("model").textContent = `model: ${info.model}` + (info.hints ? "" : " (takes no colour hints: automatic only)");
    refresh();
  }, (error) => fail(error.message));
})();
