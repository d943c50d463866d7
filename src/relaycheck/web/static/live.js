// relaycheck: live progress over server-sent events, and the re-test countdown.
// The pages work without this file (the progress page reloads itself); it only makes them livelier.
// Server text is only ever set with textContent, never as HTML.
// The progress page never freezes: any trouble with the event stream (refused because the
// service is busy, a proxy that buffers, a dropped connection, silence) switches it to polling
// the JSON API, and it says so when the service cannot be reached at all.
(function () {
  "use strict";

  var STATE_WORDS = { waiting: "waiting", testing: "testing…" };
  var VERDICT_WORDS = { open: "Open relay", closed: "Not open", inconclusive: "Inconclusive" };
  var POLL_MS = 4000;
  var SILENCE_MS = 45000;  // the stream sends a ping every 15 s: this much silence means it is dead
  var retryTimers = [];

  function setText(element, value) {
    if (element) { element.textContent = value; }
  }

  function plural(count, word) {
    return count + " " + word + (count === 1 ? "" : "s");
  }

  function clock(iso) {
    var date = new Date(iso);
    return isNaN(date.getTime()) ? "" : date.toISOString().slice(11, 19) + " UTC";
  }

  function retryText(retry, retries) {
    var left = Math.ceil((Date.parse(retry.at) - Date.now()) / 1000);
    var head = "Greylisted: " + plural(retry.deferred, "probe") + " deferred (4xx). ";
    var until = " The service keeps retrying until " + clock(retry.budget_ends) + ".";
    if (retry.wait_s > 0 && left > 0) {
      return head + "Retry " + retry.attempt + " in " + left + " s." + until;
    }
    return head + "Retry " + retry.attempt + " under way…" + until;
  }

  function renderRetry(element, data) {
    if (!element) { return; }
    if (!data.retry) {
      element.hidden = true;
      return;
    }
    element.hidden = false;
    setText(element, retryText(data.retry, data.retries));
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
    setText(item.querySelector("[data-role=count]"),
      data.state === "done" ? plural(data.expected, "probe") : data.done + " of about " + data.expected + " probes");
    renderRetry(item.querySelector("[data-role=retry]"), data);
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
    var eventsUrl = root.getAttribute("data-events");
    var apiUrl = root.getAttribute("data-api");
    var status = document.getElementById("status");
    var lost = document.getElementById("connection");
    var source = null;
    var watchdog = null;
    var finished = false;
    var polling = false;
    var latest = null;

    function apply(data) {
      latest = data;
      var items = root.querySelectorAll(".target-progress");
      data.targets.forEach(function (target, index) {
        if (items[index]) { renderTarget(items[index], target); }
      });
      if (data.status === "running") {
        var waiting = data.targets.some(function (t) { return t.retry; });
        setText(status, waiting
          ? "Waiting for greylisting to clear: " + data.done + " of about " + data.expected + " probes answered."
          : "Testing: " + data.done + " of about " + data.expected + " probes answered.");
      }
    }

    function connection(problem) {
      if (!lost) { return; }
      lost.hidden = !problem;
      setText(lost, problem || "");
    }

    function finish(state) {
      if (finished) { return; }
      finished = true;
      if (source) { source.close(); }
      window.clearTimeout(watchdog);
      root.setAttribute("data-live", "done");
      setText(status, state === "error" ? "The test stopped. Loading the details…" : "Done. Loading the result…");
      window.location.reload();
    }

    function poll(failures) {
      if (finished) { return; }
      var next = POLL_MS;
      window.fetch(apiUrl, { headers: { Accept: "application/json" }, cache: "no-store" })
        .then(function (response) {
          if (response.status === 429 || response.status === 503) {
            next = Math.max(POLL_MS, 1000 * (parseInt(response.headers.get("Retry-After"), 10) || 10));
            connection("The service is busy; this page checks again in " + Math.round(next / 1000) + " s.");
            return null;
          }
          if (response.status === 404) {
            finished = true;
            connection("The service no longer knows this test (its data is gone). Start a new test from the home page.");
            return null;
          }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (check) {
          if (!check) { return; }
          connection(null);
          failures = 0;
          if (check.status !== "queued" && check.status !== "running") {
            finish(check.status);
            return;
          }
          if (check.progress) { apply(check.progress); }
        })
        .catch(function () {
          failures += 1;
          next = Math.min(30000, POLL_MS * Math.pow(2, failures - 1));
          connection("The relaycheck service is not answering (it may be restarting, or your connection dropped). " +
            "This page tries again in " + Math.round(next / 1000) + " s.");
        })
        .then(function () {
          if (!finished) { window.setTimeout(function () { poll(failures); }, next); }
        });
    }

    function fallBack() {
      if (polling || finished) { return; }
      polling = true;
      if (source) { source.close(); }
      window.clearTimeout(watchdog);
      root.setAttribute("data-live", "polling");
      if (apiUrl && window.fetch) {
        poll(0);
      } else {
        window.setTimeout(function () { window.location.reload(); }, POLL_MS);
      }
    }

    function alive() {
      window.clearTimeout(watchdog);
      watchdog = window.setTimeout(fallBack, SILENCE_MS);
    }

    // The retry countdown ticks between events.
    retryTimers.push(window.setInterval(function () {
      if (latest && !finished) {
        var items = root.querySelectorAll(".target-progress");
        latest.targets.forEach(function (target, index) {
          if (items[index] && target.retry) { renderRetry(items[index].querySelector("[data-role=retry]"), target); }
        });
      }
    }, 1000));

    if (!eventsUrl || !window.EventSource) {
      fallBack();
      return;
    }
    source = new EventSource(eventsUrl);
    root.setAttribute("data-live", "connecting");
    alive();
    source.addEventListener("progress", function (event) {
      alive();
      root.setAttribute("data-live", "on");
      connection(null);
      apply(JSON.parse(event.data));
    });
    source.addEventListener("ping", alive);
    source.addEventListener("done", function (event) {
      var state = JSON.parse(event.data).status;
      if (state === "queued" || state === "running") {  // finished elsewhere, not yet stored: poll
        fallBack();
        return;
      }
      finish(state);
    });
    // Any error (refused with 429/503, dropped, a buffering proxy): follow by polling instead.
    source.addEventListener("error", fallBack);
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

  // Printing shows the folded evidence too; it is folded again afterwards.
  var opened = [];
  window.addEventListener("beforeprint", function () {
    opened = Array.prototype.filter.call(document.querySelectorAll("details:not([open])"), function (d) {
      d.open = true;
      return true;
    });
  });
  window.addEventListener("afterprint", function () {
    opened.forEach(function (d) { d.open = false; });
    opened = [];
  });

  var progressRoot = document.querySelector("[data-events]");
  if (progressRoot) { followProgress(progressRoot); }
  Array.prototype.forEach.call(document.querySelectorAll("button[data-retest-at]"), countdown);
}());
