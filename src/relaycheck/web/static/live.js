// relaycheck: live progress over server-sent events, and the re-test countdown.
// The pages work without this file (the progress page reloads itself); it only makes them livelier.
// Server text is only ever set with textContent, never as HTML.
(function () {
  "use strict";

  var STATE_WORDS = { waiting: "waiting", testing: "testing…" };
  var VERDICT_WORDS = { open: "Open relay", closed: "Not open", inconclusive: "Inconclusive" };

  function setText(element, value) {
    if (element) { element.textContent = value; }
  }

  function renderTarget(item, data) {
    item.className = "target-progress state-" + data.state;
    setText(item.querySelector("[data-role=state]"),
      data.state === "done" ? (VERDICT_WORDS[data.verdict] || "done") : (STATE_WORDS[data.state] || data.state));
    var bar = item.querySelector("[data-role=bar]");
    if (bar) {
      bar.max = Math.max(1, data.expected);
      bar.value = data.done;
      bar.textContent = data.done + " of " + data.expected;
    }
    setText(item.querySelector("[data-role=count]"), data.done + " of about " + data.expected + " probes");
    var list = item.querySelector("[data-role=lines]");
    if (list) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      data.lines.forEach(function (line) {
        var entry = document.createElement("li");
        entry.textContent = line;
        list.appendChild(entry);
      });
    }
  }

  function followProgress(root) {
    var url = root.getAttribute("data-events");
    if (!url || !window.EventSource) { return; }
    var source = new EventSource(url);
    var failures = 0;
    root.setAttribute("data-live", "connecting");
    source.addEventListener("progress", function (event) {
      failures = 0;
      root.setAttribute("data-live", "on");
      var data = JSON.parse(event.data);
      var items = root.querySelectorAll(".target-progress");
      data.targets.forEach(function (target, index) {
        if (items[index]) { renderTarget(items[index], target); }
      });
      if (data.status === "running") {
        setText(document.getElementById("status"),
          "Testing: " + data.done + " of about " + data.expected + " probes answered.");
      }
    });
    source.addEventListener("done", function (event) {
      source.close();
      var status = JSON.parse(event.data).status;
      setText(document.getElementById("status"), "Done. Loading the result…");
      // A check that is still queued or running elsewhere: poll slowly instead of looping.
      window.setTimeout(function () { window.location.reload(); },
        status === "queued" || status === "running" ? 5000 : 0);
    });
    source.onerror = function () {
      failures += 1;
      if (failures >= 3) {  // events do not get through (a buffering proxy?): fall back to reloading
        source.close();
        window.setTimeout(function () { window.location.reload(); }, 3000);
      }
    };
  }

  function countdown(button) {
    var at = Date.parse(button.getAttribute("data-retest-at"));
    if (isNaN(at)) { return; }
    function tick() {
      var left = Math.ceil((at - Date.now()) / 1000);
      if (left <= 0) {
        button.disabled = false;
        button.textContent = "Test again";
        return;
      }
      var minutes = Math.floor(left / 60);
      var seconds = left % 60;
      button.textContent = "Test again in " + (minutes ? minutes + " min " : "") + seconds + " s";
      window.setTimeout(tick, 1000);
    }
    tick();
  }

  var progressRoot = document.querySelector("[data-events]");
  if (progressRoot) { followProgress(progressRoot); }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-retest-at]"), countdown);
}());
