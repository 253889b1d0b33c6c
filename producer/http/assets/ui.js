// Small helpers: building elements (text is always set as text, never as HTML),
// formatting ages, colouring states, the confirmation dialog, notices.

/** h("a", {href: "#/x"}, "text", child): an element; attributes starting with "on" are listeners. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** A table with a header row; `rows` are arrays of cells (nodes, text, or [text, attrs]). */
export function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  const head = h("tr", {}, headers.map((title) => {
    const [text, cls] = Array.isArray(title) ? title : [title];
    return h("th", { scope: "col", class: cls }, text);
  }));
  const body = rows.map((cells) => h("tr", {}, cells.map((cell) => {
    if (Array.isArray(cell)) return h("td", cell[1], cell[0]);
    return h("td", {}, cell);
  })));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, body));
}

/** 42s, 3m 5s, 2h 10m, 3d 4h. */
export function age(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Seconds since an RFC 3339 time (by this browser's clock). */
export function since(time) {
  return time ? (Date.now() - Date.parse(time)) / 1000 : null;
}

export function when(time) {
  if (!time) return "–";
  const date = new Date(time);
  return h("time", { datetime: time, title: date.toISOString() }, date.toLocaleString());
}

export const short = (id) => (id ? String(id).slice(0, 8) : "–");

const TONES = {
  good: ["succeeded", "live", "ready", "running_container", "deployed", "provisioned", "active"],
  busy: ["queued", "running", "pending", "creating", "provisioning", "deploying", "removing", "tearing_down", "paused"],
  bad: ["dead", "failed", "gone", "abandoned", "leftovers"],
  idle: ["cancelled", "stopped", "removed", "torn_down"],
};

/** Which colour a state has: good (green), busy (amber), bad (red), idle (grey). */
export function tone(state) {
  for (const [name, states] of Object.entries(TONES)) {
    if (states.includes(state)) return name;
  }
  return "idle";
}

/** A state as a coloured label (the word is always there: colour is not the only cue). */
export function badge(state, toneOf = tone(state)) {
  return h("span", { class: "badge", "data-tone": toneOf, "data-state": state }, state.replace(/_/g, " "));
}

/** Shows a message under the header (errors stay until the next message). */
export function notice(text, isError = false) {
  const box = document.getElementById("notice");
  box.replaceChildren(h("p", { class: isError ? "error" : "" }, text));
  if (!isError) {
    const shown = box.firstChild;
    setTimeout(() => { if (box.firstChild === shown) box.replaceChildren(); }, 8000);
  }
}

/**
 * Asks before an action. `fields` are extra inputs ({name, label, value, required});
 * resolves to their values, or null when the operator cancels.
 */
export function confirmAction({ title, text, verb, fields = [] }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = verb;
  const inputs = fields.map((field) => {
    const input = field.multiline
      ? h("textarea", { name: field.name, rows: 3, required: field.required })
      : h("input", { name: field.name, value: field.value || "", required: field.required });
    if (field.multiline && field.value) input.value = field.value;
    return [field.name, input, h("label", {}, field.label, input)];
  });
  document.getElementById("confirm-extra").replaceChildren(...inputs.map(([, , label]) => label));
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      if (dialog.returnValue !== "ok") return resolve(null);
      resolve(Object.fromEntries(inputs.map(([name, input]) => [name, input.value.trim()])));
    }, { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (inputs.length ? inputs[0][1] : document.getElementById("confirm-cancel")).focus();
  });
}

/**
 * A button that asks for confirmation, then runs `act(values)`; reports the outcome
 * and asks the page to refresh.
 */
export function actionButton({ label, title, text, verb, fields, act, done, key }) {
  return h("button", {
    type: "button",
    class: "danger",
    "data-action": label.toLowerCase(),
    "data-focus-key": key,
    onclick: async (event) => {
      const button = event.currentTarget;
      const values = await confirmAction({ title, text, verb: verb || label, fields });
      if (values === null) return button.focus();
      button.disabled = true;
      try {
        const answer = await act(values);
        notice(done(answer));
      } catch (err) {
        notice(`${label} failed: ${err.message}`, true);
      } finally {
        button.disabled = false;
        document.dispatchEvent(new Event("lc:refresh"));
      }
    },
  }, label);
}

const GONE_KEY = "lc-dashboard-gone-after";
const GONE_CHOICES = ["5s", "10s", "30s", "1m", "5m"];

/** How long a silent worker takes to count as gone (the API's dead_after): 30s unless chosen. */
export function goneAfter() {
  return sessionStorage.getItem(GONE_KEY) || "30s";
}

/** The choice of goneAfter(), shared by the workers and stuck views. */
export function goneAfterChoice() {
  const select = h("select", { id: "gone-after", name: "gone-after" },
    GONE_CHOICES.map((choice) => h("option", { value: choice, selected: choice === goneAfter() }, choice)));
  select.addEventListener("change", () => {
    sessionStorage.setItem(GONE_KEY, select.value);
    document.dispatchEvent(new Event("lc:refresh"));
  });
  return h("form", { class: "filters" }, h("label", {}, "A worker silent this long is gone", select));
}

/** Replaces a region's content with these children (null and false ones left out). */
export function fill(region, ...children) {
  region.replaceChildren(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
}
