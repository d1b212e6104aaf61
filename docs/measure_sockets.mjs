// Memory per WebSocket (docs/operations.md, "Memory sizing"): opens N WebSockets to a server on
// 127.0.0.1:PORT, 200 at a time, each subscribed to a public channel of its own, prints
// `subscribed N` and stays open; read the server's VmRSS in /proc/<pid>/status before and after.
// Usage: node --experimental-websocket docs/measure_sockets.mjs PORT N   (Node 20; Node 22 needs no flag)
// The server needs VELO_MAX_CONNECTIONS_PER_ADDRESS=0 and a file limit above N.
const [port, n] = [process.argv[2], Number(process.argv[3])];
let subscribed = 0;
const sockets = [];
function open(i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/app/velo-key?protocol=7`);
    ws.onmessage = (m) => {
      const frame = JSON.parse(m.data);
      if (frame.event === "pusher:connection_established") {
        ws.send(JSON.stringify({ event: "pusher:subscribe", data: { channel: `room-${i}` } }));
      } else if (frame.event === "pusher_internal:subscription_succeeded") {
        subscribed++; resolve();
      }
    };
    ws.onerror = reject;
    sockets.push(ws);
  });
}
for (let i = 0; i < n; i += 200) {
  await Promise.all(Array.from({ length: Math.min(200, n - i) }, (_, k) => open(i + k)));
}
console.log(`subscribed ${subscribed}`);
setInterval(() => {}, 1000);
