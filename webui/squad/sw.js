// Service worker of the squad app (scope /squad): the app shell is kept so that the app opens with
// no network, and shows its last state until the connection is back. The API and the websockets
// always go to the network: orders are never served from a cache.
const CACHE = "dispatchd-squad-v1";
const SHELL = [
  "/squad",
  "/ui/fonts.css",
  "/ui/css/common.css",
  "/ui/css/mobile.css",
  "/ui/js/pages/squad.js",
  "/ui/js/api.js",
  "/ui/js/coords.js",
  "/ui/js/dom.js",
  "/ui/js/i18n.js",
  "/ui/js/live.js",
  "/ui/js/map.js",
  "/ui/js/model.js",
  "/ui/js/shell.js",
  "/ui/js/alarm.js",
  "/ui/js/clock.js",
  "/ui/i18n/zh-CN.json",
  "/ui/i18n/en.json",
  "/ui/img/icon.svg",
  "/ui/img/icon-192.png",
  "/ui/squad/manifest.webmanifest",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname.startsWith("/ws/")) return;
  // Network first (a new version is picked up at once), the cache when offline.
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok && (SHELL.includes(url.pathname) || url.pathname.startsWith("/ui/fonts/"))) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(event.request, copy));
        }
        return response;
      })
      .catch(() => caches.match(event.request, { ignoreSearch: true })),
  );
});
