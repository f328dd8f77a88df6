// pushgate console: live counters (Server-Sent Events) and port switches that act
// without reloading the page. Everything here is optional: without JavaScript the
// page still works through plain forms.
(function () {
  "use strict";
  var csrfEl = document.getElementById("csrf");
  var csrf = csrfEl ? csrfEl.getAttribute("data-token") : "";

  function setText(root, field, value) {
    var el = root.querySelector('[data-field="' + field + '"]');
    if (el && value !== undefined) el.textContent = String(value);
  }

  function paintSwitch(card, state) {
    var running = state === "running" || state === "starting" || state === "standby";
    card.className = card.className.replace(/state-\w+/, "state-" + state);
    setText(card, "state", state);
    var button = card.querySelector("button.switch");
    var form = card.querySelector("form.switch-form");
    if (!button || !form) return;
    button.classList.toggle("on", running);
    button.setAttribute("aria-pressed", running ? "true" : "false");
    button.querySelector(".label").textContent = running ? state + " — stop" : "stopped — start";
    form.setAttribute("action", "/ports/" + encodeURIComponent(card.getAttribute("data-port")) + "/" + (running ? "stop" : "start"));
  }

  // Live counters.
  if (document.querySelector(".cards") && window.EventSource) {
    var live = document.getElementById("live");
    var source = new EventSource("/events");
    source.onopen = function () { if (live) live.classList.add("on"); };
    source.onerror = function () { if (live) live.classList.remove("on"); };
    source.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      (data.ports || []).forEach(function (p) {
        var card = document.querySelector('.card[data-port="' + CSS.escape(p.name) + '"]');
        if (!card) return;
        ["received", "sent", "failed", "dropped", "receipt_rate", "connections", "refused"].forEach(function (f) { setText(card, f, p[f]); });
        var upstream = card.querySelector('[data-field="connected"]');
        if (upstream && p.connected !== undefined) {
          upstream.textContent = p.connected ? "connect · connected to " + p.connected : "connect · not connected";
        }
        if (!card.querySelector("button.switch.busy")) paintSwitch(card, p.state);
      });
      (data.apps || []).forEach(function (a) {
        var card = document.querySelector('.card[data-app="' + CSS.escape(a.name) + '"]');
        if (!card) return;
        card.className = card.className.replace(/state-\w+/, a.css);
        ["state", "detail", "pace", "errors", "token", "last_error"].forEach(function (f) { setText(card, f, a[f]); });
        var detail = card.querySelector('[data-field="detail"]');
        if (detail) detail.hidden = !a.detail;
      });
      (data.queues || []).forEach(function (q) {
        var row = document.querySelector('tr[data-queue="' + CSS.escape(q.key) + '"]');
        if (!row) return;
        ["due", "oldest", "scheduled"].forEach(function (f) { setText(row, f, q[f]); });
      });
      var due = document.getElementById("q-due"), inflight = document.getElementById("q-inflight");
      if (due) due.textContent = data.due;
      if (inflight) inflight.textContent = data.inflight;
    };
  }

  // Switches: POST through the JSON API instead of a full form submit.
  document.querySelectorAll("form.switch-form").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var card = form.closest(".card");
      var button = form.querySelector("button.switch");
      var port = card.getAttribute("data-port");
      var action = button.classList.contains("on") ? "stop" : "start";
      button.classList.add("busy");
      fetch("/api/v1/ports/" + encodeURIComponent(port) + "/" + action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
        credentials: "same-origin"
      }).then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok) throw new Error(body.error || response.statusText);
          paintSwitch(card, body.state);
        });
      }).catch(function (error) {
        alert("Could not " + action + " " + port + ": " + error.message);
      }).then(function () { button.classList.remove("busy"); });
    });
  });
})();
