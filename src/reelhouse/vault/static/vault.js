// Vault pages: uploads and recordings, and the link pages whose token rides in the URL
// fragment (never sent to the server by the browser) and goes to the API as X-Vault-Token.
"use strict";
(() => {
  const shell = window.reelhouse;
  const token = new URLSearchParams(window.location.hash.slice(1)).get("token");

  async function call(method, url, body, withToken = true) {
    const headers = { "X-CSRF-Token": shell.cookie("rh_csrf"), Accept: "application/json" };
    if (withToken && token) headers["X-Vault-Token"] = token;
    const options = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    const data = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new Error((data && data.error) || `${response.status} ${response.statusText}`);
    return data;
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "onclick") node.addEventListener("click", value);
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function button(label, action, cls = "") {
    return el("button", { type: "button", class: cls, onclick: async (event) => {
      event.target.disabled = true;
      try { await action(); } catch (error) { shell.flash(error.message); } finally { event.target.disabled = false; }
    } }, label);
  }

  // ---- owner: upload, record, new message ---------------------------------------------
  async function upload(messageId, blob) {
    const response = await fetch(`/api/uploads/${messageId}`, {
      method: "POST",
      body: blob,
      credentials: "same-origin",
      headers: { "Content-Type": blob.type || "application/octet-stream", "X-CSRF-Token": shell.cookie("rh_csrf") },
    });
    if (!response.ok) throw new Error(((await response.json().catch(() => null)) || {}).error || response.statusText);
    shell.flash("uploaded: encrypting and transcoding", "ok");
    for (let i = 0; i < 600; i++) {
      const message = await shell.api("GET", `/api/messages/${messageId}`);
      if (message.status === "ready" || message.status === "failed") break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    window.location.reload();
  }

  document.addEventListener("change", async (event) => {
    const input = event.target.closest("input[data-upload]");
    if (!input || !input.files.length) return;
    const file = input.files[0];
    if (file.size > Number(input.dataset.max)) return shell.flash(`the file is larger than ${input.dataset.max} bytes`);
    input.disabled = true;
    try { await upload(input.dataset.upload, file); } catch (error) { shell.flash(error.message); input.disabled = false; }
  });

  let recorder = null;
  document.addEventListener("click", async (event) => {
    const start = event.target.closest("button[data-record]");
    if (!start) return;
    if (recorder) { recorder.stop(); return; }
    const video = start.dataset.kind === "video";
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.addEventListener("dataavailable", (e) => chunks.push(e.data));
      recorder.addEventListener("stop", async () => {
        stream.getTracks().forEach((track) => track.stop());
        recorder = null;
        const type = video ? "video/webm" : "audio/webm";
        try { await upload(start.dataset.record, new Blob(chunks, { type })); } catch (error) { shell.flash(error.message); }
      });
      recorder.start(1000);
      start.textContent = "Stop and upload";
    } catch (error) {
      shell.flash(`cannot record: ${error.message}`);
    }
  });

  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-vault-message]");
    if (!form) return;
    event.preventDefault();
    const emails = form.elements.recipients.value.split(",").map((s) => s.trim()).filter(Boolean);
    try {
      await shell.api("POST", "/api/messages", {
        planId: Number(form.dataset.vaultMessage),
        title: form.elements.title.value,
        recipients: emails.map((email) => ({ email })),
      });
      window.location.reload();
    } catch (error) { shell.flash(error.message); }
  });

  // ---- verifiers: their plans, request, vote --------------------------------------------
  function renderVerifierPlans(root, plans, withToken) {
    root.replaceChildren();
    for (const plan of plans) {
      const box = el("section", { class: "card", "data-plan": String(plan.plan_id) }, el("h2", {}, plan.title));
      const open = plan.open_request;
      if (!open) {
        box.append(el("p", {}, "No release request is open."));
        box.append(button("Request release", async () => {
          await call("POST", "/api/releases", { planId: plan.plan_id }, withToken);
          window.location.reload();
        }));
      } else {
        box.append(el("p", { "data-testid": "request-status" }, `Request #${open.id}: ${open.status}, ${open.approvals} of ${open.threshold} approvals`));
        const voted = open.votes.some((v) => v.verifier_id === plan.verifier_id);
        if (open.status === "pending" && !voted) {
          box.append(button("Approve release", async () => {
            await call("POST", "/api/releases/approve", { requestId: open.id, approved: true }, withToken);
            window.location.reload();
          }));
          box.append(button("Deny", async () => {
            await call("POST", "/api/releases/approve", { requestId: open.id, approved: false }, withToken);
            window.location.reload();
          }, "secondary"));
        }
      }
      root.append(box);
    }
  }

  async function loadVerifier(root, withToken) {
    renderVerifierPlans(root, await call("GET", "/api/verifier/plans", undefined, withToken), withToken);
  }

  // ---- link pages ------------------------------------------------------------------------
  const pages = {
    async invite(root) {
      root.replaceChildren(
        el("p", {}, "You were invited to be a trusted verifier. If you are signed in, the invitation is bound to your account."),
        button("Accept", async () => {
          const accepted = await call("POST", "/api/verifiers/accept");
          const link = `${window.location.origin}/vault/verifier#token=${accepted.verifier_token}`;
          root.replaceChildren(
            el("p", { "data-testid": "accepted" }, "Accepted. This is your personal verifier link; keep it safe:"),
            el("p", {}, el("a", { href: link, "data-testid": "verifier-link" }, "your verifier page")),
          );
        }),
        button("Decline", async () => {
          await call("POST", "/api/verifiers/decline");
          root.replaceChildren(el("p", {}, "Declined."));
        }, "secondary"),
      );
    },
    verifier: (root) => loadVerifier(root, true),
    vote: (root) => loadVerifier(root, true),
    async veto(root) {
      root.replaceChildren(
        el("p", {}, "A release of your plan is under way. If you are reading this, stop it:"),
        button("Veto this release", async () => {
          await call("POST", "/api/releases/veto");
          root.replaceChildren(el("p", { "data-testid": "vetoed" }, "Vetoed. Nothing will be released."));
        }, "danger"),
      );
    },
    async checkin(root) {
      root.replaceChildren(button("I am well", async () => {
        const done = await call("POST", "/api/checkin");
        root.replaceChildren(el("p", { "data-testid": "checked-in" }, `Thank you: ${done.status}.`));
      }));
    },
    async view(root) {
      let session;
      try {
        session = await call("POST", "/api/view/open");
      } catch (error) {
        root.replaceChildren(el("p", {}, error.message), button("Send me a fresh link", async () => {
          await call("POST", "/api/view/renew");
          root.replaceChildren(el("p", {}, "If this link was yours, a fresh one is on its way to your mailbox."));
        }));
        return;
      }
      root.replaceChildren();
      for (const message of session.messages) {
        const tag = message.kind === "audio" ? "audio" : "video";
        root.append(el("section", { class: "card" },
          el("h2", {}, message.title),
          el(tag, { controls: "", preload: "metadata", src: message.media_url, "data-message": String(message.id), width: "480" })));
      }
    },
  };

  document.addEventListener("DOMContentLoaded", async () => {
    const link = document.getElementById("vault-link");
    if (link) {
      if (!token) { link.replaceChildren(el("p", {}, "This page needs the link from your mail.")); return; }
      try { await pages[link.dataset.kind](link); } catch (error) { link.replaceChildren(el("p", {}, error.message)); }
    }
    const mine = document.getElementById("vault-verifier");
    if (mine) {
      try { await loadVerifier(mine, false); } catch (error) { shell.flash(error.message); }
    }
  });
})();
