"""The Python client openapi-python-client generates from openapi/openapi.json, used as an
application would: a guest subscribes and pings, alice writes, updates and deletes a record,
a guest lists and views, and a bad filter's 422 is read field by field. tests/openapi_clients.rs
checks this file with `mypy --strict` against the generated package before running it.
"""

import os

from velo_client import AuthenticatedClient, Client
from velo_client.api.realtime import ping, subscribe, unsubscribe
from velo_client.api.records import (
    create_record,
    delete_record,
    list_records,
    update_record,
    view_record,
)
from velo_client.models import (
    ErrorBody,
    PingRequest,
    Record,
    RecordData,
    RecordList,
    Status,
    SubscribeRequest,
    Subscription,
)

base_url = os.environ["VELO_URL"]
guest = Client(base_url=base_url)
alice = AuthenticatedClient(base_url=base_url, token=os.environ["ALICE"])

subscribed = subscribe.sync(
    client=guest, body=SubscribeRequest(collection="posts", filter_="status = 'active'")
)
assert isinstance(subscribed, Subscription), subscribed
assert subscribed.is_public and subscribed.pusher_channel == subscribed.channel_name
pinged = ping.sync(client=guest, body=PingRequest(channel_name=subscribed.channel_name))
assert isinstance(pinged, Status) and pinged.status == "ok", pinged
print("a guest subscribes and pings: ok")

draft = Record.from_dict({"title": "Hello", "status": "active", "author": "alice", "views": 1})
created = create_record.sync(collection="posts", client=alice, body=draft)
assert isinstance(created, RecordData), created
record_id = created.data["id"]
assert isinstance(record_id, str) and created.data["title"] == "Hello", created
changed = update_record.sync(
    collection="posts", id=record_id, client=alice, body=Record.from_dict({"views": 2})
)
assert isinstance(changed, RecordData) and changed.data["views"] == 2, changed
print("alice creates and updates a record: ok")

page = list_records.sync(collection="posts", client=guest, filter_="views >= 2", sort="-created")
assert isinstance(page, RecordList), page
assert [record["id"] for record in page.data] == [record_id], page
assert page.meta.total == 1 and page.meta.page == 1
viewed = view_record.sync(collection="posts", id=record_id, client=guest)
assert isinstance(viewed, RecordData) and viewed.data["author"] == "alice", viewed
print("a guest lists and views: ok")

refused = subscribe.sync_detailed(
    client=guest, body=SubscribeRequest(collection="posts", filter_="status = ")
)
assert refused.status_code == 422, refused
assert isinstance(refused.parsed, ErrorBody), refused.parsed
errors = refused.parsed.errors
assert errors and "filter" in errors.additional_properties, refused.parsed
assert all(isinstance(message, str) for message in errors["filter"])
print(f"a bad filter's 422 names the field ({errors['filter'][0]}): ok")

deleted = delete_record.sync_detailed(collection="posts", id=record_id, client=alice)
assert deleted.status_code == 204, deleted
gone = view_record.sync_detailed(collection="posts", id=record_id, client=guest)
assert gone.status_code == 404 and isinstance(gone.parsed, ErrorBody), gone
ended = unsubscribe.sync_detailed(channel_name=subscribed.channel_name, client=guest)
assert ended.status_code == 204, ended
print("alice deletes, the guest unsubscribes: ok")
