// A VOD's page: live progress over Server-Sent Events, and the chat replay kept in step with
// the player: exactly the lines with rel_timestamp <= the player's time are shown.
"use strict";
(() => {
  const root = document.getElementById("vod");
  const vodId = root.dataset.vodId;
  const emoteUrl = root.dataset.emoteUrl;

  // ---- progress -------------------------------------------------------------------------------
  const field = (name) => root.querySelector(`[data-field="${name}"]`);
  const mib = (n) => `${(n / 1048576).toFixed(1)} MiB`;

  function showProgress(p) {
    field("vod_state").textContent = p.vod_state;
    field("vod_state").className = `status status-${p.vod_state === "errored" ? "failed" : p.vod_state === "processed" ? "completed" : "queued"}`;
    field("state").textContent = p.state || "not started";
    field("job_status").textContent = p.job_status ? `(job ${p.job_status})` : "";
    const bar = field("bar");
    bar.setAttribute("aria-valuenow", String(Math.round(p.percent)));
    bar.querySelector(".progress-bar span").style.width = `${p.percent}%`;
    bar.querySelector(".progress-text").textContent = `${Math.round(p.percent)} %`;
    const parts = [];
    if (p.total) parts.push(`${mib(p.bytes)} of ${mib(p.total)}`);
    if (p.speed) parts.push(`${mib(p.speed)}/s`);
    if (p.eta !== null && p.eta !== undefined) parts.push(`ETA ${Math.round(p.eta)} s`);
    if (p.retries) parts.push(`${p.retries} retries`);
    field("detail").textContent = parts.join(" · ");
    field("error").textContent = p.error;
    field("error").hidden = !p.error;
  }
  showProgress(JSON.parse(document.getElementById("progress-data").textContent));
  const events = new EventSource(`/archive/vods/${encodeURIComponent(vodId)}/progress/stream`);
  events.addEventListener("message", (event) => showProgress(JSON.parse(event.data)));

  // ---- chat replay ----------------------------------------------------------------------------
  const list = document.getElementById("chat");
  const scroller = document.getElementById("chat-scroll");
  const player = document.getElementById("player");
  const timeInput = document.getElementById("chat-time");
  const KEEP = 300; // lines kept in the list; older ones scroll away
  const BEFORE = 300, AHEAD = 90; // seconds loaded around the current time
  let lines = []; // loaded, sorted by rel_timestamp (then arrival)
  const seen = new Set();
  let loadedFrom = 0, loadedTo = 0, shown = 0, shownUntil = -1, loading = null;
  const deleted = new Set(); // message ids removed by moderators
  const cleared = []; // [rel, username or null]

  function readable(hex, dark) {
    // Pull the user's colour towards the text colour until it reads on the surface (4.5:1).
    const match = /^#?([0-9a-f]{6})$/i.exec(hex || "");
    if (!match) return "";
    let [r, g, b] = [0, 2, 4].map((i) => parseInt(match[1].slice(i, i + 2), 16));
    const lum = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    const surface = dark ? 0.0137 : 1.0; // --surface of each theme
    for (let i = 0; i < 30; i++) {
      const l = 0.2126 * lum(r) + 0.7152 * lum(g) + 0.0722 * lum(b);
      if ((Math.max(l, surface) + 0.05) / (Math.min(l, surface) + 0.05) >= 4.6) break;
      const target = dark ? 255 : 0;
      [r, g, b] = [r, g, b].map((c) => Math.round(c + (target - c) * 0.15));
    }
    return `rgb(${r}, ${g}, ${b})`;
  }

  function colour(element, hex) {
    // Both themes' variants; the stylesheet picks one, so a theme change needs no re-render.
    const light = readable(hex, false);
    if (!light) return;
    element.style.setProperty("--user-light", light);
    element.style.setProperty("--user-dark", readable(hex, true));
    element.classList.add("coloured");
  }

  function textWithEmotes(message, emotes) {
    // IRC emotes tag: "id:start-end,start-end/id2:start-end", positions in code points.
    const chars = Array.from(message || "");
    const ranges = [];
    for (const part of (emotes || "").split("/")) {
      const [id, spans] = part.split(":");
      if (!id || !spans) continue;
      for (const span of spans.split(",")) {
        const [start, end] = span.split("-").map(Number);
        if (Number.isInteger(start) && Number.isInteger(end) && end >= start) ranges.push([start, end, id]);
      }
    }
    ranges.sort((a, b) => a[0] - b[0]);
    const out = document.createDocumentFragment();
    let at = 0;
    for (const [start, end, id] of ranges) {
      if (start < at || end >= chars.length) continue;
      out.append(chars.slice(at, start).join(""));
      const name = chars.slice(start, end + 1).join("");
      if (emoteUrl) {
        const img = document.createElement("img");
        img.className = "emote";
        img.alt = name;
        img.title = name;
        img.src = emoteUrl.replace("{id}", encodeURIComponent(id));
        out.append(img);
      } else {
        const span = document.createElement("span");
        span.className = "emote-text";
        span.textContent = name;
        out.append(span);
      }
      at = end + 1;
    }
    out.append(chars.slice(at).join(""));
    return out;
  }

  function isDeleted(line) {
    if (deleted.has(line.message_id)) return true;
    return cleared.some(([rel, who]) => rel >= line.rel_timestamp && (who === null || who === line.username));
  }

  function render(line) {
    const item = document.createElement("li");
    item.dataset.rel = String(line.rel_timestamp);
    item.dataset.id = line.message_id || "";
    const t = document.createElement("span");
    t.className = "t";
    t.textContent = `${line.rel_timestamp.toFixed(1)}s`;
    item.append(t);
    if (line.kind === "clearmsg" || line.kind === "clearchat") {
      item.className = "mod-note";
      item.append(line.kind === "clearmsg"
        ? `a moderator deleted a message from ${line.username || "someone"}`
        : line.username ? `a moderator removed ${line.username}'s messages` : "a moderator cleared the chat");
      return item;
    }
    item.className = line.kind === "action" ? "action" : "";
    for (const badge of (line.badges || "").split(",").filter(Boolean)) {
      const [set, version] = badge.split("/");
      const chip = document.createElement("span");
      chip.className = "badge";
      chip.title = badge;
      chip.textContent = set === "subscriber" && version ? `sub ${version}` : set;
      item.append(chip);
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = line.display_name || line.username || "?";
    colour(name, line.color);
    item.append(name, line.kind === "action" ? " " : ": ");
    const text = document.createElement("span");
    text.className = "text";
    if (line.kind === "action") colour(text, line.color);
    text.append(textWithEmotes(line.message, line.emotes));
    item.append(text);
    if (isDeleted(line)) markDeleted(item);
    return item;
  }

  function markDeleted(item) {
    if (item.classList.contains("deleted")) return;
    item.classList.add("deleted");
    const note = document.createElement("span");
    note.className = "sr-only";
    note.textContent = " (deleted by a moderator)";
    item.append(note);
  }

  function applyModeration(line) {
    if (line.kind === "clearmsg") {
      const target = (line.tags || {})["target-msg-id"];
      if (!target) return;
      deleted.add(target);
      const item = list.querySelector(`li[data-id="${CSS.escape(target)}"]`);
      if (item) markDeleted(item);
    } else if (line.kind === "clearchat") {
      cleared.push([line.rel_timestamp, line.username || null]);
      for (const item of list.querySelectorAll("li:not(.mod-note)")) {
        if (Number(item.dataset.rel) <= line.rel_timestamp && (!line.username || item.dataset.user === line.username)) markDeleted(item);
      }
    }
  }

  async function load(from, to) {
    const kinds = ["message", "action", "clearmsg", "clearchat"].map((k) => `&kind=${k}`).join("");
    let url = `/vods/${encodeURIComponent(vodId)}/chat?from=${from}&to=${to}&limit=5000${kinds}`;
    const fresh = [];
    while (url) {
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`chat could not be loaded (${response.status})`);
      for (const line of await response.json()) {
        const key = line.message_id || `${line.rel_timestamp}|${line.username}|${line.message}`;
        if (!seen.has(key)) { seen.add(key); fresh.push(line); }
      }
      const next = response.headers.get("X-Next-Cursor");
      url = next ? `/vods/${encodeURIComponent(vodId)}/chat?from=${from}&to=${to}&limit=5000${kinds}&cursor=${encodeURIComponent(next)}` : null;
    }
    return fresh;
  }

  const covered = (t) => t >= loadedFrom && t + 15 <= loadedTo;

  function resetTo(t) {
    lines = []; seen.clear(); shown = 0; shownUntil = -1;
    list.replaceChildren(); deleted.clear(); cleared.length = 0;
    loadedFrom = loadedTo = Math.max(0, t - BEFORE);
  }

  async function ensureLoaded(t) {
    for (let attempt = 0; attempt < 5 && !covered(t); attempt++) {
      if (loading) { await loading; continue; }
      if (t < loadedFrom || t > loadedTo + 30) resetTo(t);
      const from = loadedTo, to = t + AHEAD;
      loading = load(from, to)
        .then((fresh) => {
          lines = lines.concat(fresh).sort((a, b) => a.rel_timestamp - b.rel_timestamp);
          loadedTo = to;
        })
        .finally(() => { loading = null; });
      try { await loading; } catch (e) { reelhouse.flash(e.message); return; }
    }
  }

  async function showUntil(t) {
    await ensureLoaded(t);
    if (t < shownUntil) { shown = 0; list.replaceChildren(); deleted.clear(); cleared.length = 0; }
    const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
    const added = document.createDocumentFragment();
    while (shown < lines.length && lines[shown].rel_timestamp <= t) {
      const line = lines[shown++];
      applyModeration(line);
      const item = render(line);
      if (line.username) item.dataset.user = line.username;
      added.append(item);
    }
    list.append(added);
    while (list.childElementCount > KEEP) list.firstElementChild.remove();
    shownUntil = t;
    list.dataset.until = String(t);
    if (atBottom || shown === 0) scroller.scrollTop = scroller.scrollHeight;
  }

  const clock = () => (player ? player.currentTime : Number(timeInput.value) || 0);
  const follow = () => showUntil(clock());
  if (player) {
    for (const type of ["timeupdate", "seeked", "loadedmetadata"]) player.addEventListener(type, follow);
  } else if (timeInput) {
    timeInput.addEventListener("change", follow);
  }
  follow();
  window.chatReplay = { showUntil, lines: () => lines };
})();
