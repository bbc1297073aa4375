// New encode: an upload goes as multipart with a progress bar (XHR reports upload progress,
// fetch does not); a URL or storage key goes as JSON. Errors are the API's messages.
"use strict";
(() => {
  const form = document.getElementById("new-job");
  const bar = document.getElementById("upload-progress");
  const sourceOf = () => form.querySelector("input[name=source]:checked").value;

  function showSource() {
    for (const block of form.querySelectorAll("[data-source]")) block.hidden = block.dataset.source !== sourceOf();
  }
  form.addEventListener("change", (event) => { if (event.target.name === "source") showSource(); });
  showSource();

  function setProgress(fraction) {
    const percent = Math.round(fraction * 100);
    bar.querySelector(".progress-bar span").style.width = `${percent}%`;
    bar.querySelector(".progress-text").textContent = `${percent} %`;
    bar.setAttribute("aria-valuenow", String(percent));
  }

  function options() {
    const body = {};
    for (const name of ["profile", "preset", "output_prefix"]) {
      const value = form.elements[name].value;
      if (value) body[name] = value;
    }
    return body;
  }

  function upload(file) {
    const data = new FormData();
    for (const [name, value] of Object.entries(options())) data.append(name, value);
    data.append("file", file);
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/v1/jobs");
      xhr.setRequestHeader("X-CSRF-Token", reelhouse.cookie("rh_csrf"));
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) setProgress(e.loaded / e.total); });
      xhr.addEventListener("load", () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new Error((body && body.error) || `${xhr.status} ${xhr.statusText}`));
      });
      xhr.addEventListener("error", () => reject(new Error("the upload was interrupted (network error)")));
      xhr.send(data);
    });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      let created;
      const source = sourceOf();
      if (source === "upload") {
        const file = form.elements.file.files[0];
        if (!file) throw new Error("choose a file to upload");
        if (file.size > Number(form.dataset.maxUpload)) throw new Error(`the file is larger than the ${form.dataset.maxUpload}-byte upload limit`);
        bar.hidden = false;
        setProgress(0);
        created = await upload(file);
      } else if (source === "url") {
        created = await reelhouse.api("POST", "/v1/jobs", { ...options(), source_url: form.elements.source_url.value });
      } else {
        created = await reelhouse.api("POST", "/v1/jobs", { ...options(), source_key: form.elements.source_key.value });
      }
      window.location.assign(`/encode/jobs/${created.job_id}`);
    } catch (error) {
      reelhouse.flash(error.message);
      button.disabled = false;
    }
  });
})();
