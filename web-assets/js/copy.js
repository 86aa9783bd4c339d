// Copy buttons: a button with data-copy="ID" copies the value (or text) of the
// element with that id. The buttons start hidden, so pages without this script
// show no dead button; the value stays selectable by hand.
(function () {
  "use strict";
  function status(id, text) {
    var el = document.querySelector('[data-copy-status="' + id + '"]');
    if (el) { el.textContent = text; }
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var id = button.getAttribute("data-copy");
    var source = document.getElementById(id);
    if (!source || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = "value" in source ? source.value : source.textContent;
      navigator.clipboard.writeText(text).then(function () {
        button.textContent = "Copied";
        status(id, "Copied to the clipboard.");
        window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
      }, function () {
        if (source.select) { source.select(); }
        status(id, "Copying is not allowed here: the key is selected, press Ctrl+C or ⌘C.");
      });
    });
  });
})();
