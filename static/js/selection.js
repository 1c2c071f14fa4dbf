// Shows, as the user picks, what the protection model includes or excludes and what the partner
// does not make available. The server checks the same rules on save; this only guides the user.
(function () {
  function setup(root, catalogue) {
    const byKey = Object.fromEntries(catalogue.items.map(i => [i.key, i]));
    const allowed = catalogue.allowed ? new Set(catalogue.allowed) : null;
    const inputs = [...root.querySelectorAll("input[data-key]")];
    const badge = key => root.querySelector(`[data-status-for="${key}"]`);
    const purpose = root.dataset.purpose;

    function update() {
      const product = root.querySelector("input[name=own_product]:checked");
      const model = root.querySelector("input[name=own_model]:checked");
      const rules = model ? (catalogue.rules[model.value] || {includes: [], excludes: []}) : {includes: [], excludes: []};
      const modelName = model ? byKey[model.value].name : "";
      const checked = new Set(inputs.filter(i => i.checked).map(i => i.dataset.key));
      rules.includes.forEach(k => checked.add(k));
      inputs.forEach(input => {
        const key = input.dataset.key, item = byKey[key];
        let status = "", disabled = false;
        if (allowed && !allowed.has(key) && !(purpose === "own" && rules.includes.includes(key))) {
          status = "Not available from your partner"; disabled = true; input.checked = false;
        } else if (purpose === "own" && item.kind !== "product_type") {
          if (product && product.value !== "endpoint_security") {
            status = "Endpoint Security only"; disabled = true; input.checked = false;
          } else if (rules.includes.includes(key)) {
            status = "Included in " + modelName; disabled = true; input.checked = true;
          } else if (rules.excludes.includes(key)) {
            status = "Not available with " + modelName; disabled = true; input.checked = false;
          } else if (item.parent && !checked.has(item.parent)) {
            status = "Needs " + byKey[item.parent].name; disabled = true; input.checked = false;
          }
        }
        input.disabled = disabled;
        const b = badge(key);
        if (b) { b.textContent = status; b.hidden = !status; }
      });
    }
    root.addEventListener("change", update);
    update();
    // disabled boxes are not submitted; the included ones come with the model on the server
  }
  document.addEventListener("DOMContentLoaded", () => {
    const data = document.getElementById("catalogue");
    if (!data) return;
    const catalogue = JSON.parse(data.textContent);
    document.querySelectorAll(".selection").forEach(root => setup(root, catalogue));
  });
})();
