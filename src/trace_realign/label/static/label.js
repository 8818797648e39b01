// Keyboard shortcuts; the page works without them (a plain form POST).
// 1/2/3: response A complies/violates/skip; q/w/e: the same for B; Enter: save and next;
// n or right arrow: next; p or left arrow: previous; m: the note; o: the policy.
(() => {
  const form = document.getElementById("answer");
  if (!form) return;
  const keys = {
    "1": ["chosen", "complies"], "2": ["chosen", "violates"], "3": ["chosen", "skip"],
    "q": ["rejected", "complies"], "w": ["rejected", "violates"], "e": ["rejected", "skip"],
  };
  const go = (id) => { const a = document.getElementById(id); if (a) window.location.assign(a.href); };
  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t instanceof HTMLTextAreaElement) {  // typing a note: only Ctrl/Cmd+Enter and Escape act
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); form.requestSubmit(); }
      else if (e.key === "Escape") t.blur();
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key in keys) {
      const [name, value] = keys[key];
      form.querySelector(`input[name="${name}"][value="${value}"]`).checked = true;
    } else if (key === "Enter") {
      if (t instanceof HTMLAnchorElement) return;
      form.requestSubmit();
    } else if (key === "n" || (key === "ArrowRight" && !(t instanceof HTMLInputElement))) go("next");
    else if (key === "p" || (key === "ArrowLeft" && !(t instanceof HTMLInputElement))) go("prev");
    else if (key === "m") document.getElementById("note").focus();
    else if (key === "o") { const d = document.getElementById("policy"); d.open = !d.open; }
    else return;
    e.preventDefault();
  });
})();
