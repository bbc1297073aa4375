// Video players: HLS through hls.js where the browser has no native HLS, MP4 with a plain
// <video> (seeking is byte ranges on the media routes). Stills for a thumbnail strip are drawn
// from a second, muted copy of the stream.
"use strict";
const players = (() => {
  const attached = new WeakMap();

  function attach(video, url, kind) {
    const previous = attached.get(video);
    if (previous) previous.destroy();
    attached.delete(video);
    const nativeHls = video.canPlayType("application/vnd.apple.mpegurl") !== "";
    if (kind === "hls" && !nativeHls && window.Hls && Hls.isSupported()) {
      const config = { xhrSetup: (xhr) => { xhr.withCredentials = true; } };
      // data-low-latency: the live page says whether the stream is LL-HLS (parts, blocking reloads).
      if (video.dataset.lowLatency !== undefined) config.lowLatencyMode = video.dataset.lowLatency === "true";
      const hls = new Hls(config);
      hls.loadSource(url);
      hls.attachMedia(video);
      attached.set(video, hls);
      return hls;
    }
    video.src = url;
    return null;
  }

  function seek(video, time) {
    return new Promise((resolve) => {
      video.addEventListener("seeked", resolve, { once: true });
      video.currentTime = time;
    });
  }

  async function thumbnails(strip, url, kind) {
    const count = Number(strip.dataset.count || 6);
    const probe = document.createElement("video");
    probe.muted = true;
    probe.preload = "auto";
    attach(probe, url, kind);
    await new Promise((resolve, reject) => {
      probe.addEventListener("loadeddata", resolve, { once: true });
      probe.addEventListener("error", () => reject(new Error("the output could not be loaded")), { once: true });
    });
    const duration = probe.duration;
    if (!Number.isFinite(duration) || duration <= 0) return;
    const canvas = document.createElement("canvas");
    canvas.width = 160;
    canvas.height = Math.round(160 * (probe.videoHeight / probe.videoWidth || 9 / 16));
    for (let i = 0; i < count; i++) {
      const at = (duration * (i + 0.5)) / count;
      await seek(probe, at);
      canvas.getContext("2d").drawImage(probe, 0, 0, canvas.width, canvas.height);
      const image = document.createElement("img");
      image.src = canvas.toDataURL("image/jpeg", 0.7);
      image.alt = `still at ${at.toFixed(1)} s`;
      image.width = canvas.width;
      image.height = canvas.height;
      const jump = document.createElement("button");
      jump.type = "button";
      jump.className = "thumb";
      jump.setAttribute("aria-label", `seek to ${at.toFixed(0)} s`);
      jump.append(image);
      jump.addEventListener("click", () => {
        const video = document.getElementById(strip.dataset.thumbnails);
        if (video) video.currentTime = at;
      });
      strip.append(jump);
    }
    const hls = attached.get(probe);
    if (hls) hls.destroy();
    probe.removeAttribute("src");
  }

  function init(root) {
    for (const video of root.querySelectorAll("video[data-src]")) {
      if (video.dataset.ready) continue;
      video.dataset.ready = "1";
      attach(video, video.dataset.src, video.dataset.kind);
    }
    for (const select of root.querySelectorAll("select[data-player]")) {
      select.addEventListener("change", () => {
        const video = document.getElementById(select.dataset.player);
        const option = select.selectedOptions[0];
        attach(video, option.value, option.dataset.kind);
      });
    }
    for (const strip of root.querySelectorAll("[data-thumbnails]")) {
      if (strip.dataset.ready) continue;
      strip.dataset.ready = "1";
      const video = document.getElementById(strip.dataset.thumbnails);
      if (video) thumbnails(strip, video.dataset.src, video.dataset.kind).catch((e) => reelhouse.flash(e.message));
    }
  }

  if (window.htmx) htmx.onLoad(init);
  else document.addEventListener("DOMContentLoaded", () => init(document));
  return { attach, init };
})();
window.players = players;
