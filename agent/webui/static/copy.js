// Copy buttons: data-copy names the element whose text goes to the
// clipboard. Without JavaScript the text is still there to select.
(function () {
  document.querySelectorAll("button.copy").forEach(function (b) {
    b.addEventListener("click", function () {
      var el = document.getElementById(b.dataset.copy);
      if (!el) return;
      var text = el.value !== undefined ? el.value : el.textContent;
      if (navigator.clipboard) {
        navigator.clipboard.writeText(text).then(function () { b.textContent = "Copied"; });
      } else {
        el.select && el.select();
        document.execCommand("copy");
        b.textContent = "Copied";
      }
    });
  });
})();
