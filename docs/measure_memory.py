"""Memory per subscription and per record (docs/operations.md, "Memory sizing").

Usage: python3 docs/measure_memory.py target/release/velo-realtime shared|distinct|records N

Starts a fresh server on 127.0.0.1:18181 with a data directory in /tmp, reads its RSS from
/proc/<pid>/status, makes N requests over 16 keep-alive connections, waits 2 s, reads the RSS
again, then restarts the server on the same data and reads it once more. Prints one JSON line.
"""
import base64, hashlib, hmac, http.client, json, os, subprocess, sys, threading, time, shutil

BIN = sys.argv[1]
PORT = 18181
ADMIN = "velo-dev-admin-token"
SECRET = b"velo-dev-jwt-secret-change-me"

def b64(data): return base64.urlsafe_b64encode(data).rstrip(b"=")
def token(sub):
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    body = b64(json.dumps({"sub": sub, "exp": int(time.time()) + 86400}).encode())
    sig = b64(hmac.new(SECRET, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()

def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

def start(data):
    env = dict(os.environ, VELO_BIND=f"127.0.0.1:{PORT}", VELO_DATA_DIR=data,
               VELO_MAX_SUBSCRIPTIONS_PER_CLIENT="0", VELO_SUBSCRIBE_RATE="0", RUST_LOG="warn")
    proc = subprocess.Popen([BIN, "--config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "velo.toml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT); c.request("GET", "/health")
            if c.getresponse().status == 200: break
        except OSError: pass
        time.sleep(0.05)
    time.sleep(1)
    return proc

def run(n, make, workers=16):
    def work(k):
        c = http.client.HTTPConnection("127.0.0.1", PORT)
        for i in range(k, n, workers):
            path, headers, body = make(i)
            c.request("POST", path, body=json.dumps(body), headers=headers)
            r = c.getresponse(); r.read()
            assert r.status in (200, 201), (r.status, path, body)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    [t.start() for t in ts]; [t.join() for t in ts]

def sub_shared(i):
    return ("/api/realtime/subscribe",
            {"content-type": "application/json", "authorization": "Bearer " + token(f"user{i}")},
            {"collection": "posts", "filter": "author = @request.auth.id"})
def sub_distinct(i):
    return ("/api/realtime/subscribe", {"content-type": "application/json"},
            {"collection": "posts", "filter": f"status = 'active' AND title = 'title {i}'"})
def record(i):
    return ("/api/collections/posts/records",
            {"content-type": "application/json", "authorization": "Bearer " + ADMIN},
            {"status": "active", "title": f"Hello World {i}", "author": f"user{i % 1000}",
             "views": i})

kind, n = sys.argv[2], int(sys.argv[3])
data = f"/tmp/velo-memory-{kind}"
shutil.rmtree(data, ignore_errors=True)
proc = start(data)
before = rss_kib(proc.pid)
t = time.time()
run(n, {"shared": sub_shared, "distinct": sub_distinct, "records": record}[kind])
elapsed = time.time() - t
time.sleep(2)
after = rss_kib(proc.pid)
proc.terminate(); proc.wait()
du = subprocess.run(["du", "-sk", data], capture_output=True, text=True).stdout.split()[0]
proc = start(data); time.sleep(2)
restarted = rss_kib(proc.pid)
proc.terminate(); proc.wait()
print(json.dumps({"kind": kind, "n": n, "seconds": round(elapsed, 1), "rss_before_kib": before,
                  "rss_after_kib": after, "per_item_bytes": round((after - before) * 1024 / n),
                  "rss_after_restart_kib": restarted,
                  "per_item_after_restart_bytes": round((restarted - before) * 1024 / n),
                  "data_dir_kib": int(du)}))
