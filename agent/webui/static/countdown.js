// Counts down the seconds left to confirm a network change; without
// JavaScript the page shows the seconds at the time it was drawn.
(function () {
  var el = document.getElementById("countdown");
  if (!el) return;
  var deadline = Number(el.dataset.deadline) * 1000;
  function tick() {
    var left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    el.textContent = String(left);
    if (left > 0) setTimeout(tick, 500);
  }
  tick();
})();
