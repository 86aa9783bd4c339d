// API pages: "Copy" buttons for samples and new keys. The pages work
// without this script; it only reveals the buttons it can serve.
(function () {
  "use strict";
  if (!navigator.clipboard) return;
  function flash(button, text) {
    var label = button.textContent;
    button.textContent = text;
    setTimeout(function () { button.textContent = label; }, 1500);
  }
  document.querySelectorAll("[data-copy], [data-copy-text]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = button.getAttribute("data-copy-text");
      if (text === null) {
        var pre = button.parentElement.querySelector("pre");
        text = pre ? pre.textContent : "";
      }
      navigator.clipboard.writeText(text).then(
        function () { flash(button, "Copied"); },
        function () { flash(button, "Press Ctrl+C"); }
      );
    });
  });
})();
