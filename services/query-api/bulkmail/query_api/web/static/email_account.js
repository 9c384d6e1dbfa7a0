// Test connection without leaving the page: queue the test, then ask for its outcome until a
// mailer has recorded it. Without this script the form posts and a result page reloads itself.
(function () {
  "use strict";
  var bm = window.bulkmail;
  var form = document.getElementById("test-form");
  var box = document.getElementById("test-result");
  if (!form || !box || !bm) return;
  var button = document.getElementById("test-connection");
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    button.disabled = true;
    box.innerHTML = '<p class="check-pending"><span class="spinner" aria-hidden="true"></span> Testing…</p>';
    try {
      var started = await bm.fetchJSON(form.getAttribute("action"), { method: "POST", body: new URLSearchParams(new FormData(form)) });
      for (var i = 0; i < 90; i++) {
        await new Promise(function (resolve) { setTimeout(resolve, 500); });
        var check = await bm.fetchJSON("/ui/account-checks/" + started.check_id);
        if (check.status !== "pending") { box.innerHTML = check.html; return; }
      }
      box.textContent = "No mailer has answered yet; the test is still queued.";
    } catch (err) {
      box.textContent = "The test could not be started: " + err.message;
    } finally {
      button.disabled = false;
    }
  });
})();
