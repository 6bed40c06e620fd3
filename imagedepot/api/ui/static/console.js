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
