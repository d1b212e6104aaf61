// What the Node client scripts share: waiting with a bound, and pusher-js options for a server.

/** Resolves with the first value `register` passes to its callback, or rejects after `ms`. */
export function within(ms, what, register) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** Polls `check` every 50 ms until it holds, or fails after `ms`. */
export async function eventually(ms, what, check) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** pusher-js options for the server at `url` (a URL object): plain WebSocket, no stats. */
export function clientOptionsFor(url) {
  return {
    wsHost: url.hostname,
    wsPort: Number(url.port),
    forceTLS: false,
    enabledTransports: ["ws"],
    cluster: "mt1",
    disableStats: true,
  };
}
