// The progress page, live: every second the numbers, the chart, the controls and the recipient
// table are fetched again, until the bulk email is finished. Without this script, reload.
(function () {
  "use strict";
  var bm = window.bulkmail;
  var root = document.getElementById("progress");
  if (!root || !bm) return;
  var id = root.getAttribute("data-bulk-email-id");
  var params = new URLSearchParams({ state: root.getAttribute("data-state") || "", page: root.getAttribute("data-page") || "1" });
  var parts = {
    summary_html: document.getElementById("summary"),
    chart_html: document.getElementById("chart"),
    controls_html: document.getElementById("controls"),
    recipients_html: document.getElementById("recipients")
  };
  var stateSelect = document.getElementById("state");
  if (stateSelect) stateSelect.addEventListener("change", function () { stateSelect.form.submit(); });

  var busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      var data = await bm.fetchJSON("/ui/bulk-emails/" + id + "?" + params.toString());
      Object.keys(parts).forEach(function (key) {
        // Leave a control alone while it has the focus: replacing it would lose a keyboard user's place.
        if (key === "controls_html" && parts[key].contains(document.activeElement)) return;
        if (parts[key] && parts[key].innerHTML !== data[key]) parts[key].innerHTML = data[key];
      });
      root.setAttribute("data-finished", data.finished ? "true" : "false");
      if (data.finished) { clearInterval(timer); }
    } catch (err) {
      if (err.status === 404) clearInterval(timer);
    } finally {
      busy = false;
    }
  }
  var timer = null;
  if (root.getAttribute("data-finished") !== "true") timer = setInterval(refresh, 1000);
})();
