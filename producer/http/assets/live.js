// Live updates: /v1/events read with fetch (EventSource cannot send the token in a
// header), parsed as server-sent events; every event asks for a refresh. Reconnects
// with Last-Event-ID. The dashboard also polls every 2 s, so it stays current while
// the stream is down.

import { token } from "./api.js";

const RECONNECT_MS = 2000;

/** Follows the events until `stop()`; calls onEvent(kind, data) and onMode("live" | "polling"). */
export function follow(onEvent, onMode) {
  let lastId = null;
  let controller = null;
  let stopped = false;

  async function once() {
    controller = new AbortController();
    const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
    if (lastId) headers["Last-Event-ID"] = lastId;
    const response = await fetch("/v1/events", { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
    onMode("live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  }

  function dispatch(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue; // keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "id") lastId = value;
      else if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent(kind, data.join("\n"));
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (_) {
        // Down: the page keeps polling; try again shortly.
      }
      if (stopped) return;
      onMode("polling");
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
