// The bulk email form, live: the preview follows the choices, the recipients can be stepped
// through, a test goes to the signed-in user, and the audit's fixes edit the query in place.
// Without this script every button posts the form and the server answers with the whole page.
(function () {
  "use strict";
  var bm = window.bulkmail;
  var form = document.getElementById("bulk-form");
  var container = document.getElementById("preview");
  if (!form || !container || !bm) return;
  var queryInput = document.getElementById("bulk-query");
  var latest = 0;

  function formBody(extra) {
    var body = new URLSearchParams(new FormData(form));
    Object.keys(extra || {}).forEach(function (k) { body.set(k, extra[k]); });
    return body;
  }

  var shownFor = null;  // the form as it was for the preview on screen: the same form is not previewed twice

  async function preview() {
    var body = formBody();
    body.delete("idempotency_key");
    var key = body.toString();
    if (key === shownFor) return;
    var mine = ++latest;
    container.setAttribute("aria-busy", "true");
    try {
      var data = await bm.fetchJSON("/ui/bulk-emails/preview", { method: "POST", body: formBody() });
      if (mine !== latest) return;
      shownFor = key;
      container.innerHTML = data.html;
      setupSamples();
    } catch (err) {
      if (mine === latest) container.textContent = "Preview failed: " + err.message;
    } finally {
      if (mine === latest) container.removeAttribute("aria-busy");
    }
  }
  var previewSoon = bm.debounce(preview, 400);

  // -- recipients one by one ------------------------------------------------------------------
  function setupSamples() {
    var box = document.getElementById("samples");
    if (!box) return;
    var samples = box.querySelectorAll(".sample");
    var nav = document.getElementById("sample-nav");
    var position = document.getElementById("sample-position");
    var jump = document.getElementById("sample-jump");
    var current = 0;
    function show(i) {
      current = (i + samples.length) % samples.length;
      samples.forEach(function (el, j) { el.classList.toggle("hidden", j !== current); });
      position.textContent = "Recipient " + (current + 1) + " of " + samples.length;
      jump.value = String(current);
    }
    nav.classList.remove("hidden");
    document.getElementById("sample-prev").addEventListener("click", function () { show(current - 1); });
    document.getElementById("sample-next").addEventListener("click", function () { show(current + 1); });
    jump.addEventListener("change", function () { show(parseInt(jump.value, 10) || 0); });
    show(0);
  }

  // -- a test message to me -------------------------------------------------------------------
  async function sendTest(button) {
    var status = button.parentElement.querySelector(".test-status");
    button.disabled = true;
    status.textContent = "Sending…";
    try {
      var started = await bm.fetchJSON("/bulk-emails/new/test-message", {
        method: "POST", body: formBody({ test_recipient: button.value })
      });
      status.textContent = "Sending to " + started.to + "…";
      for (var i = 0; i < 60; i++) {
        await new Promise(function (resolve) { setTimeout(resolve, 500); });
        var check = await bm.fetchJSON("/ui/account-checks/" + started.check_id);
        if (check.status === "pending") continue;
        var r = check.result || {};
        if (check.status === "ok") {
          status.textContent = "Test sent to " + r.to + (r.reply ? " (" + r.reply + ")" : "") + ".";
          status.className = "test-status small ok";
        } else {
          status.textContent = "Test not sent: " + (r.error || r.reply || "the server refused it");
          status.className = "test-status small failed";
        }
        return;
      }
      status.textContent = "No answer from a mailer yet; the test is still queued.";
    } catch (err) {
      status.textContent = "Test not sent: " + err.message;
      status.className = "test-status small failed";
    } finally {
      button.disabled = false;
    }
  }

  form.addEventListener("click", function (event) {
    var button = event.target.closest("button");
    if (!button) return;
    if (button.classList.contains("test-button")) {
      event.preventDefault();
      sendTest(button);
    } else if (button.hasAttribute("data-fix-query") && queryInput) {
      event.preventDefault();
      queryInput.value = button.getAttribute("data-fix-query");
      preview();
    } else if (button.id === "preview-button") {
      event.preventDefault();
      shownFor = null;
      preview();
    }
  });
  form.addEventListener("change", function (event) {
    if (event.target !== queryInput) preview();
  });
  if (queryInput) queryInput.addEventListener("input", previewSoon);
  if (container.querySelector(".preview-empty")) preview(); else setupSamples();
})();
