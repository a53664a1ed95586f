/* Nightlink app service worker: keeps the shell and the last answers of the app's API, so the
   app opens offline with the last data. Network first everywhere: online, the app is never
   older than the server; offline, the cached copy carries X-Nightlink-Offline so the page can
   say how old it is. Only GETs of this site are touched; writes always go to the server. */
const SHELL_CACHE = "nightlink-shell-v1";
const DATA_CACHE = "nightlink-data-v1";
const SHELL = ["/app/shell", "/app/static/app.js", "/app/static/app.css",
               "/app/static/icon.svg", "/app/static/icon-192.png", "/app/manifest.webmanifest"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL_CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys().then((keys) => Promise.all(
    keys.filter((k) => k !== SHELL_CACHE && k !== DATA_CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener("message", (event) => {
  if (event.data === "forget-data") {  // signing out: no one else's data stays on the phone
    event.waitUntil(caches.delete(DATA_CACHE));
  }
});

function offlineCopy(cached) {
  const headers = new Headers(cached.headers);
  headers.set("X-Nightlink-Offline", "1");
  return cached.blob().then((body) => new Response(body, {status: cached.status, headers}));
}

async function networkFirst(request, cacheName, fallbackKey) {
  try {
    const response = await fetch(request);
    if (response.ok && response.type === "basic" && !response.redirected) {
      const cache = await caches.open(cacheName);
      await cache.put(fallbackKey || request, response.clone());
    }
    return response;
  } catch (err) {
    const cached = await caches.match(fallbackKey || request);
    if (cached) return offlineCopy(cached);
    throw err;
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (request.mode === "navigate" && (url.pathname === "/app" || url.pathname.startsWith("/app/"))) {
    event.respondWith(networkFirst(request, SHELL_CACHE, "/app/shell"));
  } else if (url.pathname.startsWith("/app/api/")) {
    event.respondWith(networkFirst(request, DATA_CACHE));
  } else if (url.pathname.startsWith("/app/")) {
    event.respondWith(networkFirst(request, SHELL_CACHE));
  }
});

// An alert the cloud pushed (cloud/push.py) while no page runs: the same notification the
// open page shows (same tag, so one replaces the other). A push must show something: the
// news that an alert closed (`closed`: someone acknowledged it, or it is over) replaces the
// alert's notification with a quiet one, without its button.
self.addEventListener("push", (event) => {
  let msg = null;
  try { msg = event.data ? event.data.json() : null; } catch (err) { msg = null; }
  const title = (msg && msg.title) || "Nightlink";
  const closed = Boolean(msg && msg.closed);
  const options = {body: (msg && msg.body) || "A new alert: open the app.",
                   tag: (msg && msg.tag) || "nightlink-alert", renotify: !closed,
                   silent: closed, requireInteraction: Boolean(msg && msg.urgent && !closed),
                   icon: "/app/static/icon-192.png",
                   data: {url: (msg && msg.url) || "/app", ack: (msg && !closed && msg.ack) || null}};
  if (msg && msg.urgent && !closed) options.vibrate = [400, 200, 400, 200, 400];
  // Acknowledged from the lock screen, by those who may (the cloud says so per person).
  if (options.data.ack) options.actions = [{action: "ack", title: "Acknowledge"}];
  event.waitUntil(self.registration.showNotification(title, options));
});

// The push service replaced the subscription (it expired, or the browser renewed its keys):
// subscribe again with the same key and tell the server, which moves the signed-in person's
// subscriptions over; without a session the app does it when it next opens.
self.addEventListener("pushsubscriptionchange", (event) => {
  event.waitUntil((async () => {
    const old = event.oldSubscription;
    const sub = event.newSubscription || (old && old.options &&
      await self.registration.pushManager.subscribe(old.options));
    if (!old || !sub) return;
    await fetch("/app/api/push/renew", {
      method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({old_endpoint: old.endpoint, ...sub.toJSON()})});
  })().catch(() => {}));
});

// A tap on an alert's notification opens the app (the page that showed it, else a new one).
// Its "Acknowledge" button acknowledges the alert as the app's does (the session's cookie),
// and the notification goes once the server has said so; when that fails (signed out, off
// line, no answer within ACK_WAIT_MS: a browser lets a worker open a window only for a few
// seconds after a tap) the notification stays and the app opens, to acknowledge there.
const ACK_WAIT_MS = 5000;
function openApp(url) {
  return self.clients.matchAll({type: "window", includeUncontrolled: true}).then((wins) => {
    const open = wins.find((w) => new URL(w.url).pathname === url);
    return open ? open.focus() : self.clients.openWindow(url);
  });
}

self.addEventListener("notificationclick", (event) => {
  const data = event.notification.data || {};
  const url = data.url || "/app";
  if (event.action === "ack" && data.ack) {
    const stop = new AbortController();
    const timer = setTimeout(() => stop.abort(), ACK_WAIT_MS);
    // with this browser's push endpoint: the cloud tells the other phones, not this one
    event.waitUntil(self.registration.pushManager.getSubscription().catch(() => null)
      .then((sub) => fetch(data.ack, {
        method: "POST", credentials: "same-origin", signal: stop.signal,
        headers: {Accept: "application/json", "Content-Type": "application/json"},
        body: JSON.stringify(sub ? {endpoint: sub.endpoint} : {})}))
      .then((r) => {
        if (!r.ok) throw new Error(String(r.status));
        event.notification.close();
      })
      .catch(() => openApp(url))
      .finally(() => clearTimeout(timer)));
    return;
  }
  event.notification.close();
  event.waitUntil(openApp(url));
});
