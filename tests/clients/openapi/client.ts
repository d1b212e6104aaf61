// The TypeScript types openapi-typescript generates from openapi/openapi.json, used by plain
// fetch calls as an application would: subscribe, write a record, list, and read a 422's field
// errors. tests/openapi_clients.rs compiles this file with `tsc --strict`, then runs it against
// a real server.
import type { components, paths } from "./generated/schema.js";

type Json<T> = T extends { content: { "application/json": infer Body } } ? Body : never;
type Subscribe = paths["/api/realtime/subscribe"]["post"];
type SubscribeBody = Json<Subscribe["requestBody"]>;
type Subscription = Json<Subscribe["responses"][200]>;
type CreateRecord = paths["/api/collections/{collection}/records"]["post"];
type Created = Json<CreateRecord["responses"][201]>;
type Page = Json<paths["/api/collections/{collection}/records"]["get"]["responses"][200]>;
type ErrorBody = components["schemas"]["ErrorBody"];
type Fields = components["schemas"]["Record"];

const base = process.env.VELO_URL ?? "http://127.0.0.1:8080";
const alice = process.env.ALICE ?? "";

async function call<Reply>(
  method: string,
  path: string,
  body?: unknown,
  token?: string,
): Promise<{ status: number; reply: Reply }> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, reply: (await response.json()) as Reply };
}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`failed: ${what}`);
}

const request: SubscribeBody = { collection: "posts", filter: "status = 'active'" };
const subscribed = await call<Subscription>("POST", "/api/realtime/subscribe", request);
check(subscribed.status === 200 && subscribed.reply.is_public, "a guest subscribes");
console.log(`subscribe (${subscribed.reply.pusher_channel}): ok`);

const draft: Fields = { title: "Typed", status: "active", views: 1 };
const created = await call<Created>("POST", "/api/collections/posts/records", draft, alice);
const id = created.reply.data.id;
check(created.status === 201 && typeof id === "string", "alice creates a record");
console.log("create a record: ok");

const page = await call<Page>("GET", "/api/collections/posts/records?filter=views%20%3E%3D%201");
check(page.status === 200 && page.reply.data.some((record) => record.id === id), "listed");
check(page.reply.meta.total >= 1, "counted");
console.log("list records: ok");

const bad: SubscribeBody = { collection: "posts", filter: "status = " };
const refused = await call<ErrorBody>("POST", "/api/realtime/subscribe", bad);
const messages: string[] = refused.reply.errors?.filter ?? [];
check(refused.status === 422 && messages.length > 0, "a bad filter is a 422 under errors.filter");
console.log(`a bad filter's 422 names the field (${messages[0]}): ok`);
