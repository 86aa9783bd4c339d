// Copy buttons. The buttons start hidden, so a page without this script (or a
// browser without a clipboard) shows no dead button; the text stays
// selectable by hand. What a button copies:
//   data-copy="ID"        the value (or text) of the element with that id;
//   data-copy (empty)     the <pre> next to the button (a code sample);
//   data-copy-text="..."  that text.
// An element with data-copy-status="ID" announces the outcome.
(function () {
  "use strict";
  if (!navigator.clipboard) { return; }
  function source(button) {
    var literal = button.getAttribute("data-copy-text");
    if (literal !== null) { return { text: literal }; }
    var id = button.getAttribute("data-copy");
    var el = id ? document.getElementById(id) : button.parentElement.querySelector("pre");
    if (!el) { return null; }
    return { el: el, id: id, text: "value" in el ? el.value : el.textContent };
  }
  function status(id, text) {
    var el = id && document.querySelector('[data-copy-status="' + id + '"]');
    if (el) { el.textContent = text; }
  }
  document.querySelectorAll("button[data-copy], button[data-copy-text]").forEach(function (button) {
    if (!source(button)) { return; }
    var label = button.textContent;
    button.hidden = false;
    button.addEventListener("click", function () {
      var s = source(button);
      navigator.clipboard.writeText(s.text).then(function () {
        button.textContent = "Copied";
        status(s.id, "Copied to the clipboard.");
        window.setTimeout(function () { button.textContent = label; }, 2000);
      }, function () {
        if (s.el && s.el.select) { s.el.select(); }
        button.textContent = "Press Ctrl+C";
        status(s.id, "Copying is not allowed here: select the text and press Ctrl+C or ⌘C.");
        window.setTimeout(function () { button.textContent = label; }, 2000);
      });
    });
  });
})();
