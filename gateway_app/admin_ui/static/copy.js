// The copy button of a new key (the page works without it: the key is in a read-only field).
"use strict";
document.querySelectorAll("button[data-copy]").forEach((button) => {
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copy-status");
  button.hidden = false;
  button.addEventListener("click", async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
    } catch {
      document.execCommand("copy"); // plain-HTTP origins have no async clipboard
    }
    if (status) status.textContent = "Copied.";
  });
});
