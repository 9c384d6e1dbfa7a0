// The template editor, live: as you type, the draft is compiled and rendered for the chosen lead
// (subject, empty tags, the HTML body in the sandboxed frame); a compile error shows at its line
// and column, and after a refused save the cursor is put there. The edit itself is never touched.
(function () {
  "use strict";
  var bm = window.bulkmail;
  var form = document.getElementById("template-form");
  if (!form || !bm) return;
  var previewButton = document.getElementById("preview-template");
  var sampleBox = document.getElementById("template-sample");
  var errorBox = document.getElementById("compile-error");
  var latest = 0;

  function placeCursor(box) {
    var problem = box.querySelector(".compile-error");
    if (!problem) return;
    var field = document.getElementById(problem.getAttribute("data-part"));
    if (!field) return;
    var line = parseInt(problem.getAttribute("data-line"), 10) || 1;
    var column = parseInt(problem.getAttribute("data-column"), 10) || 1;
    var lines = field.value.split("\n");
    var offset = 0;
    for (var i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += column - 1;
    field.focus();
    field.setSelectionRange(offset, offset);
  }

  function renderProblem(p) {
    errorBox.innerHTML = "";
    if (!p) return;
    var div = document.createElement("div");
    div.className = "compile-error";
    div.setAttribute("role", "alert");
    div.setAttribute("data-part", p.part);
    div.setAttribute("data-line", p.line);
    div.setAttribute("data-column", p.column);
    var text = document.createElement("p");
    var strong = document.createElement("strong");
    strong.textContent = "The " + p.part_label + " does not compile";
    text.appendChild(strong);
    text.appendChild(document.createTextNode(" at line " + p.line + ", column " + p.column + ": " + p.message));
    var pre = document.createElement("pre");
    pre.className = "caret mono";
    pre.setAttribute("aria-hidden", "true");
    var mark = document.createElement("span");
    mark.className = "caret-mark";
    mark.textContent = " ".repeat(Math.max(0, p.column - 1)) + "^";
    pre.appendChild(document.createTextNode(p.source_line + "\n"));
    pre.appendChild(mark);
    div.appendChild(text);
    div.appendChild(pre);
    errorBox.appendChild(div);
  }

  function renderSample(sample, error) {
    sampleBox.innerHTML = "";
    if (error) {
      var p = document.createElement("p");
      p.className = "field-error";
      p.textContent = error;
      sampleBox.appendChild(p);
      return;
    }
    if (!sample) return;
    var dl = document.createElement("dl");
    dl.className = "facts";
    [["To", sample.email || "(no address)"], ["Subject", sample.subject]].forEach(function (pair) {
      var dt = document.createElement("dt"); dt.textContent = pair[0];
      var dd = document.createElement("dd"); dd.textContent = pair[1];
      dl.appendChild(dt); dl.appendChild(dd);
    });
    sampleBox.appendChild(dl);
    if (sample.empty_tags.length) {
      var tags = document.createElement("p");
      tags.className = "tags";
      tags.appendChild(document.createTextNode("Empty for this lead: "));
      sample.empty_tags.forEach(function (tag) {
        var span = document.createElement("span");
        var unknown = sample.unknown_tags.indexOf(tag) >= 0;
        span.className = "badge tag " + (unknown ? "badge-danger" : "badge-warning");
        span.textContent = tag + (unknown ? " (unknown)" : "");
        tags.appendChild(span);
        tags.appendChild(document.createTextNode(" "));
      });
      sampleBox.appendChild(tags);
    }
  }

  async function preview() {
    var mine = ++latest;
    var body = new URLSearchParams(new FormData(form));
    try {
      var data = await bm.fetchJSON("/ui/templates/preview", { method: "POST", body: body });
      if (mine !== latest) return;
      renderProblem(data.problem);
      renderSample(data.sample, data.error);
      if (!data.problem) form.requestSubmit(previewButton);
    } catch (err) {
      if (mine === latest) renderSample(null, "Preview failed: " + err.message);
    }
  }
  var previewSoon = bm.debounce(preview, 400);

  form.addEventListener("input", previewSoon);
  // Enter in the preview's fields previews; it must not save the template.
  ["preview_query", "preview_entry"].forEach(function (id) {
    document.getElementById(id).addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); preview(); }
    });
  });
  previewButton.addEventListener("click", function (event) {
    if (event.isTrusted) { event.preventDefault(); preview(); }
  });
  placeCursor(errorBox);
  preview();
})();
