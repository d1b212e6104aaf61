"""Real clients against a running server: pysher listens, the `pusher` library triggers.

Run by tests/real_clients.rs, which starts the server and passes VELO_URL, APP_ID, APP_KEY,
APP_SECRET, ALICE and BOB (user JWTs) in the environment. Exits non-zero on failure.
"""

import json
import logging
import os
import queue
import sys
import time
from urllib.parse import urlparse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".deps"))

import pusher  # noqa: E402
import pysher  # noqa: E402
import requests  # noqa: E402

URL = os.environ["VELO_URL"]
HOST = urlparse(URL).hostname
PORT = urlparse(URL).port
APP_ID, APP_KEY, APP_SECRET = os.environ["APP_ID"], os.environ["APP_KEY"], os.environ["APP_SECRET"]
ALICE, BOB = os.environ["ALICE"], os.environ["BOB"]

server = pusher.Pusher(app_id=APP_ID, key=APP_KEY, secret=APP_SECRET, host=HOST, port=PORT, ssl=False)


def subscribe(collection, token=None, filter=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.post(
        f"{URL}/api/realtime/subscribe", json={"collection": collection, "filter": filter}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()


# pysher's disconnect joins its thread, which sometimes lingers ~100 s after the close handshake
# has completed (the server logs the close at once); the tests do not wait for it.


def connect(token=None):
    """A connected pysher client and the queue its `connection_established` lands in."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = pysher.Pusher(
        APP_KEY,
        custom_host=HOST,
        port=PORT,
        secure=False,
        auth_endpoint=f"{URL}/api/realtime/auth",
        auth_endpoint_headers=headers,
        log_level=logging.WARNING,
    )
    connected = queue.Queue()
    client.connection.bind("pusher:connection_established", lambda data: connected.put(data))
    client.connect()
    data = connected.get(timeout=10)
    socket_id = json.loads(data)["socket_id"] if isinstance(data, str) else data["socket_id"]
    return client, socket_id


def expect(events, what, timeout=10):
    try:
        return events.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"timed out waiting for {what}")


def wait_until_occupied(channel_name, timeout=10):
    """Waits until the server has a socket on the channel: events triggered after that reach it."""
    deadline = time.monotonic() + timeout
    while not server.channel_info(channel_name)["occupied"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"nobody subscribed to {channel_name} within {timeout} s")
        time.sleep(0.05)


def public_channel():
    subscription = subscribe("posts", filter="status = 'active'")
    assert subscription["is_public"] is True
    client, socket_id = connect()
    channel = client.subscribe(subscription["channel_name"])
    events = queue.Queue()
    channel.bind("hello", lambda data: events.put(json.loads(data)))
    # Once the subscription is in place, trigger: excluded first, then not.
    wait_until_occupied(subscription["channel_name"])
    server.trigger(subscription["channel_name"], "hello", {"n": 1}, socket_id=socket_id)
    server.trigger(subscription["channel_name"], "hello", {"n": 2})
    assert expect(events, "the second event") == {"n": 2}, "the excluded event came first"
    info = server.channel_info(subscription["channel_name"], ["subscription_count"])
    assert info["occupied"] is True and info["subscription_count"] == 1, info
    client.disconnect(timeout=2)
    print("pysher: public channel, event, exclusion by socket_id; pusher (Python): trigger, channel_info: ok")


def private_channel():
    subscription = subscribe("notes", token=ALICE)
    assert subscription["is_public"] is False
    channel_name = "private-" + subscription["channel_name"]
    client, _ = connect(ALICE)
    channel = client.subscribe(channel_name)
    events = queue.Queue()
    channel.bind("created", lambda data: events.put(json.loads(data)))
    wait_until_occupied(channel_name)
    server.trigger(channel_name, "created", {"action": "created", "record": {"id": "r1"}})
    assert expect(events, "the created event") == {"action": "created", "record": {"id": "r1"}}
    client.disconnect(timeout=2)
    print("pysher: private channel authorized at auth_endpoint with a JWT, event received: ok")

    intruder, _ = connect(BOB)
    try:
        intruder.subscribe(channel_name)
    except AssertionError as refused:
        assert "Failed to get auth token" in str(refused), refused
        print("pysher: another user's authorization is refused: ok")
    else:
        raise AssertionError("bob was authorized for alice's channel")
    finally:
        intruder.disconnect(timeout=2)


def write(method, path, token=None, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = requests.request(method, f"{URL}{path}", json=body, headers=headers)
    assert response.ok, f"{method} {path}: {response.status_code} {response.text}"
    return None if response.status_code == 204 else response.json()["data"]


def records_flow():
    subscription = subscribe("posts", filter="status = 'active'")
    client, _ = connect()
    channel = client.subscribe(subscription["channel_name"])
    events = queue.Queue()
    for name in ("created", "updated", "deleted"):
        channel.bind(name, lambda data, name=name: events.put((name, json.loads(data))))
    wait_until_occupied(subscription["channel_name"])
    post = write("POST", "/api/collections/posts/records", body={"status": "active", "title": "Hello World"})
    assert expect(events, "created") == ("created", {"action": "created", "record": post})
    write("POST", "/api/collections/posts/records", body={"status": "draft", "title": "WIP"})
    updated = write("PATCH", f"/api/collections/posts/records/{post['id']}", body={"title": "Hello again"})
    assert expect(events, "updated") == ("updated", {"action": "updated", "record": updated}), "no draft before it"
    write("DELETE", f"/api/collections/posts/records/{post['id']}")
    assert expect(events, "deleted") == ("deleted", {"action": "deleted", "record": updated})
    client.disconnect(timeout=2)
    print("pysher: Velo's broadcasting tests, created/updated/deleted payloads: ok")


def presence_queries():
    # pysher signs presence itself with the app secret (with an auth endpoint it sends its own
    # user_data as channel_data and keeps only `auth`, which a server that chooses channel_data,
    # as Laravel and our [[channels]] rules do, cannot sign); the `pusher` library queries.
    channel = f"presence-py-{int(time.time() * 1000)}"
    clients = []
    for user_id, tabs in (("ada", 2), ("bo", 1)):
        for _ in range(tabs):
            client = pysher.Pusher(
                APP_KEY,
                custom_host=HOST,
                port=PORT,
                secure=False,
                secret=APP_SECRET,
                user_data={"user_id": user_id, "user_info": {"name": user_id.title()}},
                log_level=logging.WARNING,
            )
            connected = queue.Queue()
            client.connection.bind("pusher:connection_established", lambda data, q=connected: q.put(data))
            client.connect()
            connected.get(timeout=10)
            client.subscribe(channel)
            clients.append(client)
    deadline = time.monotonic() + 10
    while server.channel_info(channel, ["subscription_count"]).get("subscription_count") != 3:
        assert time.monotonic() < deadline, "the three sockets did not join"
        time.sleep(0.05)
    assert server.channel_info(channel, ["user_count"])["user_count"] == 2, "users, not sockets"
    listed = server.channels_info(prefix_filter="presence-py-", attributes=["user_count"])
    assert listed["channels"][channel]["user_count"] == 2, listed
    users = sorted(user["id"] for user in server.users_info(channel)["users"])
    assert users == ["ada", "bo"], users
    for client in clients:
        client.disconnect(timeout=2)
    print("pysher presence; pusher (Python): channel_info, channels_info user_count, users_info: ok")


if __name__ == "__main__":
    public_channel()
    private_channel()
    records_flow()
    presence_queries()
    sys.stdout.flush()
    # pysher's reconnecting threads must not keep the process alive.
    os._exit(0)
