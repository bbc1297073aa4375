// reelhouse pages: calls to the JSON API with the session's CSRF token, errors shown as flash
// messages carrying the API's own `error` text, confirmations for destructive actions.
"use strict";

const reelhouse = (() => {
  function cookie(name) {
    const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
    return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
  }

  function flash(message, kind = "error") {
    const area = document.getElementById("flash");
    const item = document.createElement("p");
    item.className = `flash flash-${kind}`;
    item.setAttribute("role", kind === "error" ? "alert" : "status");
    const text = document.createElement("span");
    text.textContent = message;
    const close = document.createElement("button");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss message");
    close.textContent = "×";
    close.addEventListener("click", () => item.remove());
    item.append(text, close);
    area.append(item);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return new ApiError(response.status, body.error);
    } catch (_) { /* not JSON: fall through to the status line */ }
    return new ApiError(response.status, `${response.status} ${response.statusText}`);
  }

  // fetch() against the API: JSON in and out, the CSRF header on unsafe methods.
  async function api(method, url, body) {
    const headers = { "X-CSRF-Token": cookie("rh_csrf"), Accept: "application/json" };
    const options = { method, headers, credentials: "same-origin" };
    if (body instanceof FormData) options.body = body;
    else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    const type = response.headers.get("content-type") || "";
    return type.includes("json") ? response.json() : response.text();
  }

  function confirmAction(message) {
    const dialog = document.getElementById("confirm");
    if (!message) return Promise.resolve(true);
    document.getElementById("confirm-text").textContent = message;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      document.getElementById("confirm-ok").focus();
    });
  }

  // Form fields -> JSON: numbers for type=number, booleans for checkboxes, parsed JSON for
  // data-json fields; empty optional fields are left out.
  function formJson(form) {
    const body = {};
    for (const field of form.elements) {
      if (!field.name || field.disabled || field.name === "csrf") continue;
      if (form.dataset.changedOnly !== undefined && field.value === field.defaultValue) continue;
      if (field.type === "checkbox") body[field.name] = field.checked;
      else if (field.value === "") continue;
      else if (field.type === "number" || field.dataset.number !== undefined) body[field.name] = Number(field.value);
      else if (field.dataset.json !== undefined) body[field.name] = JSON.parse(field.value);
      else body[field.name] = field.value;
    }
    return body;
  }

  function fill(template, values) {
    return template.replace(/\{(\w+)\}/g, (_, key) => encodeURIComponent(values && values[key] !== undefined ? values[key] : ""));
  }

  async function runAction(element, event) {
    event.preventDefault();
    const method = (element.dataset.api || "POST").toUpperCase();
    const url = element.dataset.url || element.getAttribute("action");
    if (!(await confirmAction(element.dataset.confirm))) return;
    let body;
    try {
      if (element.dataset.bodyField) body = JSON.parse(element.elements[element.dataset.bodyField].value);
      else if (element.tagName === "FORM") body = formJson(element);
      else if (element.dataset.body) body = JSON.parse(element.dataset.body);
    } catch (error) {
      flash(`invalid JSON in a field: ${error.message}`);
      return;
    }
    if (body && typeof body === "object" && !Object.keys(body).length && element.dataset.changedOnly !== undefined) {
      flash("nothing changed", "ok");
      return;
    }
    const buttons = element.tagName === "FORM" ? element.querySelectorAll("button") : [element];
    buttons.forEach((b) => (b.disabled = true));
    try {
      const result = await api(method, url, body);
      const then = element.dataset.then || "reload";
      if (element.dataset.done) flash(element.dataset.done, "ok");
      if (then === "reload") window.location.reload();
      else if (then === "stay") element.dispatchEvent(new CustomEvent("api:done", { detail: result, bubbles: true }));
      else window.location.assign(fill(then, result));
    } catch (error) {
      flash(error.message);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  document.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-api]");
    if (form) runAction(form, event);
  });
  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-api]");
    if (button && button.type === "button") runAction(button, event);
  });

  // htmx fragment requests carry the CSRF header too, and their errors become flash messages.
  document.addEventListener("htmx:configRequest", (event) => {
    event.detail.headers["X-CSRF-Token"] = cookie("rh_csrf");
  });
  document.addEventListener("htmx:responseError", async (event) => {
    const xhr = event.detail.xhr;
    let message = `${xhr.status} ${xhr.statusText}`;
    try { message = JSON.parse(xhr.responseText).error || message; } catch (_) { /* keep the status line */ }
    flash(message);
  });

  return { api, flash, confirmAction, cookie, ApiError };
})();
window.reelhouse = reelhouse;
