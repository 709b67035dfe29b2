// The playground's page: a small Slack drawn from what the stand-in Slack keeps (/ui/state),
// each message rendered from its Block Kit; what a person does goes to /ui/..., where the
// stand-in turns it into the signed request Slack would send the bot.
"use strict";

const EMOJI = {
  test_tube: "🧪", white_check_mark: "✅", warning: "⚠️", no_entry: "⛔", link: "🔗",
  large_green_circle: "🟢", red_circle: "🔴", hourglass: "⏳", hourglass_flowing_sand: "⏳",
  bell: "🔔", tada: "🎉", wave: "👋", memo: "📝", inbox_tray: "📥", x: "❌",
  information_source: "ℹ️", mag: "🔍", clock1: "🕐", alarm_clock: "⏰", bar_chart: "📊",
};
const NAMES = { U0REP: "you", U0BOT: "onboard-bot" };
const CHANNELS = { C0SALES: "sales" };

let tab = "channel";
let shown = { messages: "", home: "", modal: "", errors: "" };
let version = -1;
let state = { messages: [], home: null, modal: null, modal_errors: {} };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "html") node.innerHTML = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function post(what, data) {
  const answer = await fetch("/ui/" + what, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data || {}),
  });
  const result = await answer.json();
  await refresh();
  return result;
}

// mrkdwn: *bold*, _italic_, ~strike~, `code`, <links|label>, <@mentions>, <#channels>,
// <!date^…|fallback>, :emoji:; Slack's &lt; &gt; &amp; are text.
function escapeHtml(text) {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

function unentity(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function emoji(text) {
  return text.replace(/:([a-z0-9_+-]+):/g, (all, name) => EMOJI[name] || all);
}

function control(inner) {
  const [target, label] = splitOnce(inner, "|");
  if (target.startsWith("@")) {
    const id = target.slice(1);
    return `<span class="mention">@${escapeHtml(label || NAMES[id] || id)}</span>`;
  }
  if (target.startsWith("#")) {
    const id = target.slice(1);
    return `<span class="mention">#${escapeHtml(label || CHANNELS[id] || id)}</span>`;
  }
  if (target.startsWith("!")) {
    if (target.startsWith("!date^")) {
      const seconds = Number(target.split("^")[1]);
      const when = isNaN(seconds) ? label : new Date(seconds * 1000).toLocaleString();
      return escapeHtml(when || label || "");
    }
    return `<span class="mention">@${escapeHtml(label || target.slice(1))}</span>`;
  }
  if (/^(https?:|mailto:)/.test(target)) {
    const text = label ? unentity(label) : target;
    return `<a href="${escapeHtml(target)}" target="_blank" rel="noopener noreferrer">${
      escapeHtml(text)}</a>`;
  }
  return escapeHtml(unentity(inner));
}

function splitOnce(text, separator) {
  const at = text.indexOf(separator);
  return at < 0 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
}

function mrkdwn(text) {
  const held = [];
  const hold = (html) => `\u0000${held.push(html) - 1}\u0000`;
  let work = String(text || "").replace(/<([^<>\n]+)>/g, (all, inner) => hold(control(inner)));
  work = work.replace(/```([\s\S]+?)```/g,
    (all, code) => hold(`<pre><code>${escapeHtml(unentity(code))}</code></pre>`));
  work = work.replace(/`([^`\n]+)`/g,
    (all, code) => hold(`<code>${escapeHtml(unentity(code))}</code>`));
  work = escapeHtml(emoji(unentity(work)));
  // Slack links bare URLs too.
  work = work.replace(/https?:\/\/[^\s<>"\u0000]+[^\s<>"\u0000.,;:!?)]/g,
    (url) => hold(`<a href="${url}" target="_blank" rel="noopener noreferrer">${url}</a>`));
  work = work.replace(/(^|[^\w*])\*(\S(?:[^*\n]*\S)?)\*(?![\w*])/g, "$1<b>$2</b>");
  work = work.replace(/(^|[^\w])_(\S(?:[^_\n]*\S)?)_(?!\w)/g, "$1<i>$2</i>");
  work = work.replace(/(^|[^\w~])~(\S(?:[^~\n]*\S)?)~(?![\w~])/g, "$1<s>$2</s>");
  work = work.replace(/\n/g, "<br>");
  return work.replace(/\u0000(\d+)\u0000/g, (all, index) => held[Number(index)]);
}

function textNode(object, tag) {
  if (!object) return null;
  if (object.type === "mrkdwn") return el(tag || "div", { class: "mrkdwn", html: mrkdwn(object.text) });
  return el(tag || "div", {}, emoji(String(object.text || "")));
}

function plain(object) {
  return object ? emoji(String(object.text || "")) : "";
}

// Block Kit.
function renderBlocks(blocks, source) {
  return (blocks || []).map((block) => renderBlock(block, source));
}

function renderBlock(block, source) {
  switch (block.type) {
    case "header":
      return el("h3", { class: "block-header" }, plain(block.text));
    case "section": {
      const node = el("div", { class: "block-section" }, textNode(block.text));
      if (block.fields) {
        node.append(el("div", { class: "block-fields" },
          block.fields.map((f) => textNode(f))));
      }
      if (block.accessory) node.append(renderElement(block.accessory, block, source));
      return node;
    }
    case "context":
      return el("div", { class: "block-context" }, (block.elements || []).map((e) =>
        e.type === "image" ? el("img", { src: e.image_url, alt: e.alt_text, width: 16 })
          : textNode(e, "span")));
    case "divider":
      return el("hr");
    case "actions":
      return el("div", { class: "block-actions", role: "group" },
        (block.elements || []).map((e) => renderElement(e, block, source)));
    case "image":
      return el("img", { src: block.image_url, alt: block.alt_text, class: "block-image" });
    case "rich_text":
      return el("div", {}, richText(block.elements));
    case "markdown":
      return el("div", { class: "mrkdwn", html: mrkdwn(block.text) });
    case "input":
      return null; // modals draw their inputs
    default:
      return el("div", { class: "block-unknown" }, `[${block.type} block]`);
  }
}

function richText(elements) {
  return (elements || []).map((e) => e.elements ? richText(e.elements).join("")
    : (e.text || e.url || "")).join("");
}

function renderElement(element, block, source) {
  if (element.type !== "button") {
    return el("span", { class: "element-unknown" }, `[${element.type}]`);
  }
  const classes = "bk" + (element.style ? " " + element.style : "");
  return el("button", {
    type: "button", class: classes,
    onclick: () => click(element, block, source),
  }, plain(element.text));
}

async function click(element, block, source) {
  if (element.confirm && !(await confirmed(element.confirm))) return;
  await post("click", {
    source: String(source), action_id: element.action_id, value: element.value || "",
    block_id: block.block_id || "b",
  });
}

function confirmed(confirm) {
  return new Promise((resolve) => {
    const root = document.getElementById("modal-root");
    const done = (answer) => { box.remove(); resolve(answer); };
    const box = el("div", { class: "backdrop" },
      el("div", { class: "modal", role: "alertdialog", "aria-modal": "true",
                  "aria-labelledby": "confirm-title" },
        el("h2", { id: "confirm-title" }, plain(confirm.title) || "Are you sure?"),
        textNode(confirm.text),
        el("div", { class: "modal-buttons" },
          el("button", { type: "button", class: "bk", onclick: () => done(false) },
            plain(confirm.deny) || "Cancel"),
          el("button", { type: "button", class: "bk primary", onclick: () => done(true) },
            plain(confirm.confirm) || "Yes"))));
    root.append(box);
  });
}

// The log, Home and the modal.
function renderMessage(message) {
  const author = message.author === "you" ? el("span", { class: "who" }, "you")
    : el("span", { class: "who" }, "onboard-bot", el("span", { class: "app-tag" }, "APP"));
  const node = el("article", { class: "msg" + (message.ephemeral ? " ephemeral" : "") },
    author);
  if (!message.ephemeral && !message.error) node.append(moreActions(message));
  if (message.error) {
    node.append(el("div", { class: "refused", role: "alert" }, message.error));
    return node;
  }
  if (message.ephemeral) node.append(el("div", { class: "only-you" }, "Only visible to you"));
  if (message.in_thread) node.append(el("div", { class: "only-you" }, "Replied in a thread"));
  if (message.blocks && message.blocks.length) {
    node.append(el("div", { class: "blocks" }, renderBlocks(message.blocks, message.id)));
  } else {
    node.append(el("div", { class: "mrkdwn", html: mrkdwn(message.text) }));
  }
  for (const preview of message.previews || []) {
    node.append(el("div", { class: "preview", role: "group", "aria-label": "Link preview" },
      renderBlocks(preview.blocks, message.id)));
  }
  node.append(...completeControls(message.tokens));
  return node;
}

// The playground's own control, not Slack's: customers onboard with the link on the sandbox
// until Exotel reports it USED.
function completeControls(tokens) {
  return (tokens || []).map((token) => el("div", { class: "complete-row" },
    el("button", {
      type: "button", class: "bk complete", onclick: () => post("complete", { token }),
    }, "Complete onboarding"),
    el("span", { class: "hint" }, ` link …${token.slice(-4)} (playground: customers sign up)`)));
}

// A message's shortcuts (the manifest's message shortcut).
function moreActions(message) {
  const menu = el("div", { role: "menu", class: "message-menu", "aria-label": "Message shortcuts", hidden: true },
    el("button", {
      type: "button", role: "menuitem",
      onclick: () => {
        menu.hidden = true;
        post("message_shortcut", { source: message.id, callback_id: "send_onboarding_link" });
      },
    }, "Send onboarding link"));
  const toggle = el("button", {
    type: "button", class: "more", "aria-label": "More actions", "aria-haspopup": "menu",
    onclick: () => { menu.hidden = !menu.hidden; },
  }, "⋯");
  return el("span", { class: "more-actions" }, toggle, menu);
}

function renderLog() {
  const messages = state.messages.filter((m) => m.where === (tab === "dm" ? "dm" : "channel"));
  const key = tab + JSON.stringify(messages);
  if (key === shown.messages) return;
  shown.messages = key;
  const log = document.getElementById("log");
  log.replaceChildren(...messages.map(renderMessage));
  log.scrollTop = log.scrollHeight;
}

function renderHome() {
  const key = JSON.stringify(state.home);
  if (key === shown.home) return;
  shown.home = key;
  const home = document.getElementById("home");
  home.replaceChildren(...(state.home ? renderBlocks(state.home.blocks, "home")
    : [el("p", {}, "Opening Home…")]), ...completeControls(state.home_tokens));
}

let fieldIds = 0;

function renderModal() {
  const key = JSON.stringify(state.modal);
  const root = document.getElementById("modal-root");
  if (key !== shown.modal) {
    shown.modal = key;
    shown.errors = "";
    root.querySelectorAll(".backdrop.view").forEach((n) => n.remove());
    if (state.modal) root.append(buildModal(state.modal));
  }
  const errors = JSON.stringify(state.modal_errors || {});
  if (errors !== shown.errors && state.modal) {
    shown.errors = errors;
    showErrors(state.modal_errors || {});
  }
}

function buildModal(view) {
  const form = el("form", { class: "modal-form", novalidate: true });
  const fields = [];
  for (const block of view.blocks || []) {
    if (block.type !== "input") {
      const rendered = renderBlock(block, "modal");
      if (rendered) form.append(rendered);
      continue;
    }
    const id = `field-${++fieldIds}`;
    const input = inputFor(block.element || {}, id);
    fields.push({ block, input });
    form.append(el("div", { class: "field", "data-block": block.block_id },
      el("label", { for: id }, plain(block.label),
        block.optional ? el("span", { class: "hint" }, " (optional)") : null),
      input,
      block.hint ? el("div", { class: "hint" }, plain(block.hint)) : null,
      el("div", { class: "field-error", id: `${id}-error` })));
  }
  form.append(el("div", { class: "form-error", role: "alert" }));
  const close = el("button", { type: "button", class: "bk", onclick: () => post("close") },
    plain(view.close) || "Cancel");
  const buttons = el("div", { class: "modal-buttons" }, close);
  if (view.submit) {
    buttons.append(el("button", { type: "submit", class: "bk primary" }, plain(view.submit)));
  }
  form.append(buttons);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const values = {};
    for (const { block, input } of fields) {
      const element = block.element || {};
      values[block.block_id] = { [element.action_id]: stateOf(element, input) };
    }
    post("submit", { state: values });
  });
  return el("div", { class: "backdrop view" },
    el("div", { class: "modal", role: "dialog", "aria-modal": "true",
                "aria-labelledby": "modal-title" },
      el("h2", { id: "modal-title" }, plain(view.title)), form));
}

function inputFor(element, id) {
  const initial = element.initial_value || "";
  const placeholder = element.placeholder ? plain(element.placeholder) : undefined;
  switch (element.type) {
    case "number_input":
      return el("input", { id, type: "number", value: initial, placeholder,
                           min: element.min_value, max: element.max_value });
    case "plain_text_input":
      if (element.multiline) return el("textarea", { id, placeholder, maxlength: element.max_length }, initial);
      return el("input", { id, type: "text", value: initial, placeholder,
                           maxlength: element.max_length });
    case "conversations_select":
    case "channels_select":
      return el("select", { id }, el("option", { value: "" }, placeholder || "Choose…"),
        Object.entries(CHANNELS).map(([cid, name]) => el("option", { value: cid }, "#" + name)));
    case "static_select":
      return el("select", { id }, el("option", { value: "" }, placeholder || "Choose…"),
        (element.options || []).map((o) => el("option", { value: o.value }, plain(o.text))));
    default:
      return el("input", { id, type: "text", value: initial, placeholder });
  }
}

function stateOf(element, input) {
  const value = input.value;
  switch (element.type) {
    case "conversations_select":
      return { type: element.type, selected_conversation: value || null };
    case "channels_select":
      return { type: element.type, selected_channel: value || null };
    case "static_select":
      return { type: element.type, selected_option: value ? { value } : null };
    default:
      return { type: element.type, value: value === "" ? null : value };
  }
}

function showErrors(errors) {
  const root = document.getElementById("modal-root");
  const unplaced = [];
  root.querySelectorAll(".field").forEach((field) => {
    const error = field.querySelector(".field-error");
    const input = field.querySelector("input, textarea, select");
    const message = errors[field.dataset.block] || "";
    error.textContent = message;
    if (message) {
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", error.id);
    } else {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    }
  });
  const blocks = new Set([...root.querySelectorAll(".field")].map((f) => f.dataset.block));
  for (const [block, message] of Object.entries(errors)) {
    if (!blocks.has(block)) unplaced.push(message);
  }
  const formError = root.querySelector(".form-error");
  if (formError) formError.textContent = unplaced.join(" ");
}

function render() {
  document.getElementById("log").hidden = tab === "home";
  document.getElementById("home").hidden = tab !== "home";
  document.getElementById("title").textContent =
    { channel: "# sales", dm: "Direct messages · onboard-bot", home: "Home · onboard-bot" }[tab];
  document.getElementById("message").placeholder = tab === "dm"
    ? "Type a command: /onboard-link 2 Playground Co"
    : "Message #sales, or a command: /onboard-link 2 Playground Co";
  renderLog();
  renderHome();
  renderModal();
}

async function refresh() {
  try {
    const answer = await fetch("/ui/state");
    const next = await answer.json();
    if (next.version !== version) {
      version = next.version;
      state = next;
      render();
    }
  } catch (error) {
    // the playground stopped, or is restarting: try again at the next tick
  }
}

document.querySelectorAll(".tab").forEach((button) => {
  button.addEventListener("click", () => {
    tab = button.dataset.tab;
    document.querySelectorAll(".tab").forEach((b) =>
      b.setAttribute("aria-pressed", String(b === button)));
    shown.messages = "";
    render();
    if (tab === "home") post("home");
  });
});

const box = document.getElementById("message");
box.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    const text = box.value;
    if (!text.trim()) return;
    box.value = "";
    post("send", { text });
  }
});
document.getElementById("composer").addEventListener("submit", (e) => e.preventDefault());

const menuButton = document.getElementById("shortcuts");
const menu = document.getElementById("shortcut-menu");
menuButton.addEventListener("click", () => {
  menu.hidden = !menu.hidden;
  menuButton.setAttribute("aria-expanded", String(!menu.hidden));
});
menu.querySelectorAll("[data-callback]").forEach((item) => {
  item.addEventListener("click", () => {
    menu.hidden = true;
    menuButton.setAttribute("aria-expanded", "false");
    post("shortcut", { callback_id: item.dataset.callback });
  });
});

refresh();
setInterval(refresh, 400);
