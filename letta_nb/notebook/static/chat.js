// The ChatWidget's behaviour in the browser (anywidget ESM, no build step): a typing indicator, Enter to
// send, autoscroll, a copy button on code blocks, and message times in the reader's clock. The view sits
// inside the widget's ".letta-chat" box; once attached it finds the conversation (".letta-log") and the input
// (".letta-input textarea") beside it. State the kernel needs lives in synced traits ("thinking",
// "following"); a send is a custom message {event: "submit", text}.

const NEAR_BOTTOM_PX = 24; // "at the bottom" even when a line is half-way in view

// Without the async clipboard (plain http away from localhost), the old way: a selected hidden textarea.
function copyByCommand(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  area.remove();
  return ok;
}

function failed(button) { button.textContent = "Select and copy"; }

function render({ model, el }) {
  el.classList.add("letta-frontend");
  const indicator = document.createElement("div");
  indicator.className = "letta-thinking";
  indicator.setAttribute("role", "status");
  indicator.setAttribute("aria-live", "polite");
  indicator.innerHTML = '<span class="letta-dot"></span><span class="letta-dot"></span>' +
    '<span class="letta-dot"></span><span class="letta-thinking-label"></span>';
  el.appendChild(indicator);
  const label = indicator.querySelector(".letta-thinking-label");
  const showThinking = () => {
    indicator.hidden = !model.get("thinking");
    label.textContent = model.get("thinking_label");
  };
  model.on("change:thinking", showThinking);
  model.on("change:thinking_label", showThinking);
  showThinking();

  // A view rendered again (JupyterLab re-attaches outputs) takes up the model's state: a user who had scrolled
  // up to read is not pulled down by the new view.
  let root = null, log = null, observer = null, following = model.get("following"), dragging = false, tries = 0;

  const toBottom = () => { log.scrollTop = log.scrollHeight; };
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight <= NEAR_BOTTOM_PX;
  const setFollowing = (value) => {
    if (value === following) return;
    following = value;
    model.set("following", value);
    model.save_changes();
  };
  // Only the user stops the following: a wheel or a key that scrolls up, or a drag of the scrollbar. The
  // position alone cannot tell: re-rendering a bubble shrinks the log for a moment and the browser clamps
  // scrollTop, which looks like a scroll up. Back at the bottom, by any means, it follows again.
  const onWheel = (event) => { if (event.deltaY < 0) setFollowing(false); };
  const onLogKey = (event) => {
    if (["PageUp", "ArrowUp", "Home"].includes(event.key)) setFollowing(false);
  };
  const onPointerDown = (event) => { if (event.target === log) dragging = true; }; // its scrollbar
  const onPointerUp = () => { dragging = false; };
  const onScroll = () => {
    if (atBottom()) setFollowing(true);
    else if (dragging) setFollowing(false);
  };
  // A copy button on each code block of a bubble (bubbles re-render while they stream: added again as needed).
  const addCopyButtons = () => {
    for (const pre of log.querySelectorAll(".letta-msg pre:not(.letta-has-copy)")) {
      pre.classList.add("letta-has-copy");
      const button = document.createElement("button");
      button.className = "letta-copy";
      button.type = "button";
      button.textContent = "Copy";
      button.title = "Copy the code";
      button.addEventListener("click", () => {
        const code = pre.querySelector("code");
        const text = code ? code.textContent : ""; // the code as written: < > & verbatim, no button label
        const done = () => { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, () => { copyByCommand(text) ? done() : failed(button); });
        } else if (copyByCommand(text)) done(); else failed(button);
      });
      pre.appendChild(button);
    }
  };
  // Times are written by the kernel in its own zone; the reader's clock is the browser's.
  const localTimes = () => {
    for (const t of log.querySelectorAll(".letta-meta time[datetime]:not(.letta-local)")) {
      const when = new Date(t.getAttribute("datetime"));
      t.classList.add("letta-local");
      if (!isNaN(when)) t.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    }
  };
  const onChange = () => {
    addCopyButtons();
    localTimes();
    if (following) toBottom();
  };
  const onKeydown = (event) => {
    const target = event.target;
    if (!(target instanceof HTMLTextAreaElement) || !target.closest(".letta-input")) return;
    if (event.key !== "Enter" || event.isComposing) return;
    if (event.shiftKey) { event.stopPropagation(); return; } // a newline, not "run cell"
    if (event.ctrlKey || event.altKey || event.metaKey) return;
    event.preventDefault();
    event.stopPropagation();
    if (!target.disabled && target.value.trim()) {
      if (log) { setFollowing(true); toBottom(); } // sending: show the conversation's end
      model.send({ event: "submit", text: target.value });
      // Empty the box here, through its own input event: ipywidgets holds back a model's updates while one is
      // in flight, so the last keystrokes can reach the kernel after this message, and an emptying done by
      // the kernel alone would be overwritten by them.
      target.value = "";
      target.dispatchEvent(new Event("input", { bubbles: true }));
    }
  };
  const onClick = (event) => { // Send, like Enter, shows the conversation's end
    if (event.target instanceof Element && event.target.closest(".letta-send")) { setFollowing(true); toBottom(); }
  };
  const attach = () => {
    root = el.closest(".letta-chat");
    log = root && root.querySelector(".letta-log");
    if (!log) { // not in the page yet: the manager attaches views after render
      if (tries++ < 600) requestAnimationFrame(attach);
      return;
    }
    // Keys typed in the chat's input are the chat's: Lumino (JupyterLab, Notebook 7) matches no shortcut at or
    // under this attribute. Stopping the event is not enough: Notebook 7 reads keys on the document's capture
    // phase, before any handler here, and Shift+Enter ran the cell.
    for (const input of root.querySelectorAll(".letta-input")) input.setAttribute("data-lm-suppress-shortcuts", "");
    root.addEventListener("keydown", onKeydown, true);
    root.addEventListener("click", onClick, true);
    log.addEventListener("scroll", onScroll, { passive: true });
    log.addEventListener("wheel", onWheel, { passive: true });
    log.addEventListener("keydown", onLogKey);
    log.addEventListener("pointerdown", onPointerDown);
    window.addEventListener("pointerup", onPointerUp);
    observer = new MutationObserver(onChange);
    observer.observe(log, { childList: true, subtree: true, characterData: true, attributes: true });
    addCopyButtons();
    localTimes();
    if (following) toBottom();
  };
  attach();
  return () => {
    if (observer) observer.disconnect();
    if (root) root.removeEventListener("keydown", onKeydown, true);
    if (root) root.removeEventListener("click", onClick, true);
    if (log) {
      log.removeEventListener("scroll", onScroll);
      log.removeEventListener("wheel", onWheel);
      log.removeEventListener("keydown", onLogKey);
      log.removeEventListener("pointerdown", onPointerDown);
    }
    window.removeEventListener("pointerup", onPointerUp);
  };
}

export default { render };
