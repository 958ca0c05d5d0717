// certfleet console: confirmations for actions, and live parts fed by Server-Sent Events.
// No inline script anywhere (the Content-Security-Policy forbids it); nothing from other hosts.
"use strict";

// A form with data-confirm asks before it is sent.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
});

// An element with data-live="<url>" is replaced by each `update` event's HTML, rendered and
// escaped by the server for this session. The URL carries the page's own query (the failed
// devices page it shows), so every reconnect asks for the same part of the rollout.
// Events: `update` (new HTML, id = its version), `stale` (the server cannot read the store
// for now; it keeps trying), `end` (the rollout finished: no more updates), `signin` (the
// session ended: reload, which leads to the sign-in form).
// A broken connection is retried by the browser itself (after the server's `retry`); an
// answer that is not a stream (503 while the store is down, 401, 404) closes the EventSource
// for good, so the page tries again itself, waiting longer each time (up to a minute).
const RETRY_FIRST_MS = 5000;
const RETRY_MOST_MS = 60000;

function follow(element) {
  const dot = document.getElementById("live-dot");
  let source = null;
  let retryMs = RETRY_FIRST_MS;
  let finished = false;

  function show(state, title) {
    if (!dot) return;
    dot.classList.toggle("on", state === "on");
    dot.classList.toggle("stale", state === "stale");
    dot.title = title;
  }

  function stop() {
    finished = true;
    if (source) source.close();
  }

  function connect() {
    source = new EventSource(element.dataset.live);
    source.addEventListener("open", () => {
      retryMs = RETRY_FIRST_MS;
      show("on", "live updates");
    });
    source.addEventListener("update", (event) => {
      element.innerHTML = event.data;
      element.dataset.version = event.lastEventId;
      show("on", "live updates");
    });
    source.addEventListener("stale", (event) => show("stale", event.data));
    source.addEventListener("end", () => {
      stop();
      show("off", "finished: no more updates");
    });
    source.addEventListener("signin", () => {
      stop();
      window.location.reload();
    });
    source.addEventListener("error", () => {
      if (finished) return;
      show("off", "reconnecting");
      if (source.readyState === EventSource.CLOSED) {
        window.setTimeout(connect, retryMs);
        retryMs = Math.min(retryMs * 2, RETRY_MOST_MS);
      }
    });
  }

  connect();
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(follow);
});
