// R2: show or hide report columns; the choice is saved for the user, so a reload keeps it.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("columns-form");
  if (!form) return;
  const table = document.getElementById("report-table");
  const save = () => {
    const data = new FormData();
    data.append("csrfmiddlewaretoken", form.querySelector("[name=csrfmiddlewaretoken]").value);
    data.append("kind", form.querySelector("[name=kind]").value);
    form.querySelectorAll("input[data-column]").forEach((box) => {
      if (!box.checked) data.append("hidden", box.dataset.column);
    });
    return fetch(form.action, {method: "POST", body: data, credentials: "same-origin"})
      .then((response) => { form.dataset.saved = response.ok ? "yes" : "no"; });
  };
  form.querySelectorAll("input[data-column]").forEach((box) => {
    box.addEventListener("change", () => {
      table.querySelectorAll(`[data-column="${box.dataset.column}"]`).forEach((cell) => {
        cell.hidden = !box.checked;
      });
      form.dataset.saved = "pending";
      save();
    });
  });
});
