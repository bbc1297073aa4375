// A new token is shown once, in the page, after the API created it.
"use strict";
document.getElementById("new-token").addEventListener("api:done", (event) => {
  const box = document.getElementById("new-token-result");
  box.querySelector("code").textContent = event.detail.token;
  box.hidden = false;
  reelhouse.flash(`token ${event.detail.name} created`, "ok");
});
