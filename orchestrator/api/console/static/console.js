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
// escaped by the server; `end` closes the stream (the rollout finished).
function follow(element) {
  const dot = document.getElementById("live-dot");
  const source = new EventSource(element.dataset.live);
  source.addEventListener("open", () => dot && dot.classList.add("on"));
  source.addEventListener("error", () => dot && dot.classList.remove("on"));
  source.addEventListener("update", (event) => {
    element.innerHTML = event.data;
    element.dataset.version = event.lastEventId;
  });
  source.addEventListener("end", () => {
    source.close();
    if (dot) dot.classList.remove("on");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(follow);
});
