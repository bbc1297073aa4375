// Live pages: show a publish key returned by the API once (create, rotate), never stored by the page.
"use strict";
document.addEventListener("api:done", (event) => {
  const form = event.target.closest("[data-show-key]");
  if (!form || !event.detail) return;
  const box = document.getElementById(form.dataset.showKey);
  if (!box) return;
  const values = { ...event.detail, stream_page: `/live/streams/${event.detail.id}` };
  box.querySelectorAll("[data-field]").forEach((el) => { el.textContent = values[el.dataset.field] ?? ""; });
  box.querySelectorAll("[data-field-href]").forEach((el) => { el.href = values[el.dataset.fieldHref] ?? "#"; });
  box.hidden = false;
});
