// The console's only script: local times, confirmations, byte counts a person can read,
// and live updates from one Server-Sent Events stream per page. No inline script anywhere
// (the Content-Security-Policy forbids it), so everything hooks in from here.
"use strict";

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

function humanBytes(count) {
  let value = Number(count) || 0;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return (unit === 0 ? String(value) : value.toFixed(1)) + " " + UNITS[unit];
}

function localTimes(root) {
  for (const element of root.querySelectorAll("time[datetime]")) {
    const when = new Date(element.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      element.textContent = when.toLocaleString();
      element.title = element.getAttribute("datetime");
    }
  }
}

function byteCounts(root) {
  for (const element of root.querySelectorAll("[data-bytes]")) {
    element.textContent = humanBytes(element.dataset.bytes);
  }
}

function confirmations() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
}

function setField(root, name, apply) {
  for (const element of root.querySelectorAll(`[data-field="${name}"]`)) {
    apply(element);
  }
}

function showCache(root, cache) {
  setField(root, "status", (element) => {
    element.textContent = cache.status;
    element.dataset.status = cache.status;
  });
  setField(root, "message", (element) => {
    element.textContent = cache.message || (root.dataset.page === "cache" ? "—" : "");
  });
  setField(root, "progress", (element) => {
    if (!element.closest("[data-image]")) {
      element.value = cache.percent;
      element.textContent = cache.percent + "%";
    }
  });
  setField(root, "percent", (element) => {
    element.textContent = cache.percent + "%";
  });
  setField(root, "size", (element) => {
    if (!element.closest("[data-image]")) {
      element.dataset.bytes = cache.size_bytes;
      element.textContent = humanBytes(cache.size_bytes);
    }
  });
  for (const image of cache.images) {
    for (const row of root.querySelectorAll("tr[data-image]")) {
      if (row.dataset.image !== image.image) {
        continue;
      }
      setField(row, "digest", (element) => {
        element.textContent = image.digest || "not resolved yet";
      });
      setField(row, "size", (element) => {
        element.dataset.bytes = image.size_bytes;
        element.textContent = humanBytes(image.size_bytes);
      });
      setField(row, "progress", (element) => {
        element.value = cache.status === "Available" ? 100 : image.percent;
      });
    }
  }
}

function live(container) {
  const source = new EventSource(container.dataset.events);
  source.addEventListener("cache", (event) => {
    const cache = JSON.parse(event.data);
    if (container.dataset.page === "cache") {
      if (cache.id !== container.dataset.cacheId) {
        return;
      }
      if (cache.deleted) {
        window.location.assign("/ui/caches");
        return;
      }
      showCache(container, cache);
      return;
    }
    const row = container.querySelector(`tr[data-cache-id="${CSS.escape(cache.id)}"]`);
    if (row === null) {
      if (!cache.deleted) {
        window.location.reload(); // a cache made elsewhere: render it server-side
      }
      return;
    }
    if (cache.deleted) {
      row.remove();
      if (container.querySelector("tr[data-cache-id]") === null) {
        window.location.reload(); // the last one: show the empty state, which says what next
      }
      return;
    }
    showCache(row, cache);
  });
  source.addEventListener("reload", () => window.location.reload());
  source.addEventListener("signedout", () => window.location.assign("/ui/signin"));
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  byteCounts(document);
  confirmations();
  for (const container of document.querySelectorAll("[data-events]")) {
    live(container);
  }
  document.body.classList.add("scripted");
});

// --- VM images: uploads with a progress bar, the list refreshed in place ------------------

const DISK_FORMAT_BY_SUFFIX = {
  qcow2: "qcow2", img: "raw", raw: "raw", vmdk: "vmdk", vhd: "vhd", vhdx: "vhdx", vdi: "vdi",
  iso: "iso",
};

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta === null ? "" : meta.content;
}

// The server's own words for a refusal: the console's JSON error, or the message of an error
// page (the door answers those, for a stale session or a missing permission, before any
// handler runs).
function serverMessage(status, contentType, text) {
  const type = contentType || "";
  if (type.includes("application/json")) {
    try {
      const body = JSON.parse(text);
      if (body && body.error && body.error.message) {
        return body.error.message;
      }
    } catch (ignored) {
      // not JSON after all: say the status below
    }
  }
  if (type.includes("text/html")) {
    const shown = new DOMParser().parseFromString(text, "text/html").querySelector("main .error");
    if (shown !== null && shown.textContent.trim()) {
      return shown.textContent.trim();
    }
  }
  return "the server answered " + status;
}

async function responseMessage(response) {
  const text = await response.text();
  return serverMessage(response.status, response.headers.get("content-type"), text);
}

function confirmationsWithin(root) {
  for (const form of root.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) {
        event.preventDefault();
      }
    });
  }
}

async function refreshImageList() {
  const current = document.getElementById("images-list");
  const response = await fetch("/ui/images", { headers: { Accept: "text/html" } });
  const parsed = response.ok
    ? new DOMParser().parseFromString(await response.text(), "text/html")
    : null;
  const fresh = parsed === null ? null : parsed.getElementById("images-list");
  if (current === null || fresh === null) {
    window.location.reload();
    return;
  }
  const adopted = document.adoptNode(fresh);
  current.replaceWith(adopted);
  localTimes(adopted);
  byteCounts(adopted);
  confirmationsWithin(adopted);
}

// Streams the file itself (the browser reads it from disk as it sends), so an image of any
// size never sits in the page's memory.
function putImageFile(url, file, onProgress, onSent) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("PUT", url);
    request.setRequestHeader("Content-Type", "application/octet-stream");
    request.setRequestHeader("Accept", "application/json");
    request.setRequestHeader("X-CSRF-Token", csrfToken());
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) {
        onProgress(event.loaded, event.total);
      }
    };
    request.upload.onload = onSent;
    request.onload = () => resolve(request);
    request.onerror = () => reject(new Error("the connection broke off during the upload"));
    request.onabort = () => reject(new Error("the upload was cancelled"));
    request.send(file);
  });
}

async function discardImage(imageId) {
  try {
    await fetch("/ui/images/" + encodeURIComponent(imageId) + "/delete", {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRF-Token": csrfToken() },
    });
  } catch (ignored) {
    // the list shows what is left; the message already says what went wrong
  }
}

function imageUploads(form) {
  const section = form.closest("section") || document;
  const button = form.querySelector("[data-upload-button]");
  const bar = form.querySelector("progress");
  const percent = form.querySelector("[data-upload-percent]");
  const status = section.querySelector("[data-upload-status]");
  const failure = section.querySelector("[data-upload-error]");
  const file = form.elements.namedItem("file");
  const name = form.elements.namedItem("name");
  const diskFormat = form.elements.namedItem("disk_format");
  let nameFromFile = "";
  let uploading = false;

  file.addEventListener("change", () => {
    const chosen = file.files[0];
    if (!chosen) {
      return;
    }
    const dot = chosen.name.lastIndexOf(".");
    const stem = dot > 0 ? chosen.name.slice(0, dot) : chosen.name;
    const suffix = dot > 0 ? chosen.name.slice(dot + 1).toLowerCase() : "";
    if (name.value === "" || name.value === nameFromFile) {
      name.value = stem;
      nameFromFile = stem;
    }
    if (Object.hasOwn(DISK_FORMAT_BY_SUFFIX, suffix)) {
      diskFormat.value = DISK_FORMAT_BY_SUFFIX[suffix];
    }
  });

  function showProgress(loaded, total) {
    bar.max = Math.max(total, 1);
    bar.value = Math.min(loaded, bar.max);
    const shown = total > 0 ? Math.floor((loaded * 100) / total) : 100;
    const text = shown + "% (" + humanBytes(loaded) + " of " + humanBytes(total) + ")";
    bar.textContent = text;
    percent.textContent = text;
  }

  function fail(message) {
    failure.textContent = message;
    failure.hidden = false;
    status.textContent = "";
  }

  async function upload(chosen) {
    const fields = {};
    for (const key of ["name", "disk_format", "container_format", "type"]) {
      fields[key] = form.elements.namedItem(key).value;
    }
    let created;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        headers: {
          Accept: "application/json",
          "Content-Type": "application/json",
          "X-CSRF-Token": csrfToken(),
        },
        body: JSON.stringify(fields),
      });
      if (!response.ok) {
        fail("Not created: " + (await responseMessage(response)));
        return;
      }
      created = await response.json();
    } catch (error) {
      fail("Not created: " + error.message);
      return;
    }
    status.textContent = "Uploading " + fields.name + "…";
    let answer;
    try {
      answer = await putImageFile(created.upload, chosen, showProgress, () => {
        status.textContent = "Sent; the server is checking and storing " + fields.name + "…";
      });
    } catch (error) {
      await discardImage(created.image.id);
      fail("The upload failed: " + error.message + ". Nothing was kept.");
      await refreshImageList();
      return;
    }
    if (answer.status < 200 || answer.status >= 300) {
      const type = answer.getResponseHeader("content-type");
      const message = serverMessage(answer.status, type, answer.responseText);
      await discardImage(created.image.id);
      fail("The upload was refused: " + message.replace(/\.$/, "") + ". Nothing was kept.");
      await refreshImageList();
      return;
    }
    const image = JSON.parse(answer.responseText).image;
    showProgress(chosen.size, chosen.size);
    status.textContent = "Uploaded " + image.name + ": " + image.status + ", " +
      humanBytes(image.size) + " of " + image.disk_format + ".";
    form.reset();
    nameFromFile = "";
    await refreshImageList();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (uploading) {
      return;
    }
    failure.hidden = true;
    failure.textContent = "";
    const chosen = file.files[0];
    if (!chosen) {
      fail("Choose the disk image file to upload.");
      file.focus();
      return;
    }
    uploading = true;
    button.disabled = true;
    for (const part of form.querySelectorAll("[data-upload-part]")) {
      part.hidden = false;
    }
    showProgress(0, chosen.size);
    status.textContent = "Creating " + name.value + "…";
    try {
      await upload(chosen);
    } finally {
      uploading = false;
      button.disabled = false;
    }
  });

  window.addEventListener("beforeunload", (event) => {
    if (uploading) {
      event.preventDefault();
    }
  });
  button.disabled = false;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-image-upload]")) {
    imageUploads(form);
  }
});

// --- admin pages: bar charts, copy buttons, and a secret shown once -------------------------

function adminBars(root) {
  // Widths come from data- attributes: the policy allows no style attributes in the markup,
  // but a script of our own may set element.style.
  for (const bar of root.querySelectorAll("[data-bar-value][data-bar-max]")) {
    const max = Number(bar.dataset.barMax) || 0;
    const value = Number(bar.dataset.barValue) || 0;
    const percent = max > 0 ? Math.min(100, (value * 100) / max) : 0;
    bar.style.width = percent.toFixed(2) + "%";
    bar.classList.toggle("usage-some", value > 0);
  }
}

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function adminCopyButtons(root) {
  for (const button of root.querySelectorAll("button[data-copy]")) {
    const source = document.getElementById(button.dataset.copy);
    if (source === null) {
      continue;
    }
    const status = button.parentElement.querySelector(".copied");
    const say = (text) => {
      if (status !== null) {
        status.textContent = text;
      }
    };
    button.addEventListener("click", async () => {
      try {
        // Only secure contexts (HTTPS, or this machine) have a clipboard to write to.
        await navigator.clipboard.writeText(source.textContent);
        say("Copied");
      } catch (refused) {
        selectText(source);
        say("Selected: press Ctrl+C (⌘C) to copy");
      }
    });
  }
}

function forgetPostedForm() {
  // A page answering a POST (a new credential and its secret) becomes an ordinary entry of
  // the history, so reloading it asks for the page again instead of sending the form again.
  if (document.querySelector("[data-forget-post]") !== null) {
    window.history.replaceState(null, "", window.location.href);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  adminBars(document);
  adminCopyButtons(document);
  forgetPostedForm();
});
