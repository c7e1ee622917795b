// The rater's side of `colorize survey`: name, optional practice, then every trial shown for
// STUDY.exposure_ms, hidden, and answered with no time limit. Served by `colorize survey
// serve`, each answer is posted to the server, which knows the answer key and appends it to
// votes.csv. Opened from the file system, the page loads key.js itself and offers the CSV
// (the same columns) as a download at the end.
(() => {
  "use strict";
  const study = window.STUDY;
  const local = location.protocol === "file:";
  const $ = (id) => document.getElementById(id);
  // Same rule as survey.valid_name on the server.
  const NAME = /^[\p{L}\p{N}_][\p{L}\p{M}\p{N}_ .'-]{0,63}$/u;
  const HEADER = "image,rater,choice,real_side,response_ms";
  const votes = [];
  const checks = [];
  let rater = "";

  const section = (id) => { for (const s of ["welcome", "trial", "done"]) $(s).hidden = s !== id; };
  const panel = (id) => {
    for (const p of ["ready", "question", "feedback", "save-error"]) $(p).hidden = p !== id;
    if (document.activeElement) document.activeElement.blur();
  };
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const nextFrame = () => new Promise((resolve) => requestAnimationFrame(resolve));

  // Resolves with the value of whichever button is clicked or key pressed first.
  function choose(buttons, keys) {
    return new Promise((resolve) => {
      const clicks = Object.entries(buttons).map(([id, value]) => [id, () => done(value)]);
      const onKey = (e) => {
        const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
        if (!e.repeat && Object.hasOwn(keys, key)) { e.preventDefault(); done(keys[key]); }
      };
      function done(value) {
        for (const [id, h] of clicks) $(id).removeEventListener("click", h);
        document.removeEventListener("keydown", onKey);
        resolve(value);
      }
      for (const [id, h] of clicks) $(id).addEventListener("click", h);
      document.addEventListener("keydown", onKey);
    });
  }

  function loadPhoto(src) {
    const img = new Image();
    img.alt = "";
    img.src = src;
    return img.decode().then(() => img, () => { throw new Error(`cannot load ${src}`); });
  }

  // One trial: both photos decoded before they are shown, so the exposure is the same for all.
  async function present(trial, label) {
    $("progress").textContent = label;
    panel(null); // no button until the photos are decoded: a click before would be lost
    const stage = $("stage");
    stage.classList.add("covered");
    const [left, right] = await Promise.all([loadPhoto(trial.left), loadPhoto(trial.right)]);
    $("left").replaceChildren(left);
    $("right").replaceChildren(right);
    panel("ready");
    await choose({ show: true }, { " ": true, Enter: true });
    panel(null);
    stage.classList.remove("covered");
    await nextFrame();
    await sleep(study.exposure_ms);
    stage.classList.add("covered");
    $("left").replaceChildren();
    $("right").replaceChildren();
    panel("question");
    const shown = performance.now();
    const picked = await choose({ "pick-left": "left", "pick-right": "right" },
      { ArrowLeft: "left", f: "left", ArrowRight: "right", j: "right" });
    return { picked, ms: Math.round(performance.now() - shown) };
  }

  async function post(url, body) {
    const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    return { status: r.status, data: await r.json().catch(() => ({})) };
  }

  // Never moves on before the server has the answer: a failure shows why and offers a retry.
  async function save(trial, answer) {
    if (local) {
      const k = window.STUDY_KEY[trial.id];
      const row = [k.image, rater, answer.picked === k.real_side ? 0 : 1, k.real_side, answer.ms];
      (k.vigilance ? checks : votes).push(row);
      return;
    }
    for (;;) {
      let problem;
      try {
        const { status, data } = await post("/api/answer",
          { trial: trial.id, rater, picked: answer.picked, response_ms: answer.ms });
        if (status === 200 || status === 409) return; // 409: already recorded
        problem = data.error || `the server answered ${status}`;
      } catch (e) {
        problem = "the study server cannot be reached";
      }
      $("save-error-text").textContent = `Your answer was not saved: ${problem}.`;
      panel("save-error");
      await choose({ retry: true }, {});
    }
  }

  function csvCell(value) {
    const s = String(value);
    return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  }

  function downloadLink(rows, prefix) {
    const text = [HEADER, ...rows.map((r) => r.map(csvCell).join(","))].join("\n") + "\n";
    const a = document.createElement("a");
    a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    a.download = `${prefix}-${rater.replace(/[^\p{L}\p{N}_-]+/gu, "_")}.csv`;
    a.textContent = `Download ${a.download}`;
    a.className = "download";
    return a;
  }

  function finish(count) {
    window.onbeforeunload = null;
    section("done");
    if (local) {
      $("done-text").textContent = "Your answers are stored nowhere else: download the file and " +
        "send it to the person running the study.";
      const links = [downloadLink(votes, "votes")];
      if (checks.length) links.push(" ", downloadLink(checks, "vigilance"));
      $("downloads").replaceChildren(...links);
    } else {
      $("done-text").textContent = `Your ${count} answers have been saved, ${rater}. You can close this page.`;
    }
  }

  async function run(answered) {
    section("trial");
    if (local) window.onbeforeunload = (e) => { e.preventDefault(); };
    if (!answered.length) {
      for (const [i, p] of study.practice.entries()) {
        const a = await present(p, `Practice ${i + 1} of ${study.practice.length} (not scored)`);
        $("feedback-text").textContent = `${a.picked === p.real_side ? "Right" : "Not this time"}: ` +
          `the real photo was on the ${p.real_side}.`;
        panel("feedback");
        await choose({ next: true }, { " ": true, Enter: true });
      }
    }
    const todo = study.trials.filter((t) => !answered.includes(t.id));
    for (const [i, t] of todo.entries()) {
      await save(t, await present(t, `Photo ${answered.length + i + 1} of ${study.trials.length}`));
    }
    finish(study.trials.length);
  }

  function loadKey() {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "key.js";
      s.onload = resolve;
      s.onerror = () => reject(new Error("key.js is missing from the study folder"));
      document.head.append(s);
    });
  }

  async function start(e) {
    e.preventDefault();
    const error = $("name-error");
    const name = $("name").value.trim();
    if (!NAME.test(name)) {
      error.textContent = "Please enter a name: letters, digits, spaces or _ . ' - (at most 64).";
      return;
    }
    $("start").disabled = true;
    let answered = [];
    try {
      if (local) {
        await loadKey();
      } else {
        const { status, data } = await post("/api/rater", { rater: name });
        if (status !== 200) throw new Error(data.error || `the server answered ${status}`);
        answered = data.answered;
      }
    } catch (err) {
      error.textContent = err instanceof TypeError ? "The study server cannot be reached." : err.message;
      $("start").disabled = false;
      return;
    }
    rater = name;
    if (answered.length) {
      $("note").textContent = `${answered.length} answers under this name were saved before: continuing ` +
        "after them. If that was not you, reload the page and use another name.";
    }
    run(answered).catch((err) => {
      section("done");
      $("done-text").textContent = `The study stopped: ${err.message}`;
    });
  }

  if (!study) {
    document.body.textContent = "study.js is missing: open index.html inside a folder built by `colorize survey`.";
    return;
  }
  $("exposure").textContent = String(study.exposure_ms / 1000);
  $("count").textContent = String(study.trials.length);
  $("name-form").addEventListener("submit", start);
})();
