// modelgate dashboard: small improvements on pages that work without it.
"use strict";

// Copy buttons: <button data-copy="element-id">.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy)?.textContent ?? "";
  navigator.clipboard?.writeText(text).then(
    () => { button.textContent = "Copied"; },
    () => { button.textContent = "Select and copy"; },
  );
});

// Upload forms: send with a progress bar, then go where the server sends us.
for (const form of document.querySelectorAll("form[data-upload]")) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const progress = form.querySelector("progress");
    const status = form.querySelector("[role=status]");
    const button = form.querySelector("button[type=submit]");
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      progress.hidden = false;
      progress.value = Math.round((100 * e.loaded) / e.total);
      status.textContent = `${progress.value} % uploaded`;
    });
    request.addEventListener("load", () => {
      if (request.status < 400 && request.responseURL) {
        window.location.assign(request.responseURL);
      } else {
        document.open();
        document.write(request.responseText);
        document.close();
      }
    });
    request.addEventListener("error", () => {
      status.textContent = "The upload failed: the connection broke. Try again.";
      button.disabled = false;
    });
    button.disabled = true;
    status.textContent = "Uploading…";
    request.send(new FormData(form));
  });
}

// Live refresh: an element with data-refresh="N" is fetched again every N seconds.
for (const element of document.querySelectorAll("[data-refresh][id]")) {
  const every = Number(element.dataset.refresh) * 1000;
  setInterval(async () => {
    if (document.hidden) return;
    try {
      const response = await fetch(window.location.href, { headers: { "x-requested-with": "refresh" } });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById(element.id);
      if (fresh) element.replaceChildren(...fresh.childNodes);
    } catch (_) { /* offline for a moment: the next tick tries again */ }
  }, every);
}
