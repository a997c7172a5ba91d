// The README's first session through the typed client: openapi-fetch over the types that
// `make clients` generates (schema.d.ts). `make clients` type-checks it; the tests also
// run it against a real service. Any runtime with fetch will do (Node 18+, Deno, Bun, a
// browser).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type TenantRead = components["schemas"]["TenantRead"];
type ApiKeyCreated = components["schemas"]["ApiKeyCreated"];
type ConversationRead = components["schemas"]["ConversationRead"];
type MessageRead = components["schemas"]["MessageRead"];
type RunRead = components["schemas"]["RunRead"];
type UsageRecordRead = components["schemas"]["UsageRecordRead"];
type ErrorEnvelope = components["schemas"]["ErrorEnvelope"];

/** One Server-Sent Event of a run (docs/events.md): its type, id and JSON data. */
export interface RunEvent {
  event: string;
  id: string | null;
  data: Record<string, unknown>;
}

/** A client for one key: every request carries it (`Authorization: Bearer` works too).
 * Its answers are typed as their JSON: the usage list's CSV form is asked for apart. */
export function connect(baseUrl: string, key: string) {
  return createClient<paths, "application/json">({ baseUrl, headers: { "X-API-Key": key } });
}

/** The events of a `text/event-stream` body, in order, until the stream ends (the service
 * ends its lines with `\n`; a `ping` is an event like any other). */
export async function* readEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<RunEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let id: string | null = null;
      const data: string[] = [];
      for (const line of block.split("\n")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "id") id = text;
        else if (field === "data") data.push(text);
      }
      if (data.length > 0) yield { event, id, data: JSON.parse(data.join("\n")) };
    }
  }
}

function fail(step: string, error: ErrorEnvelope | undefined, response: Response): never {
  const reason = error ? `${error.error.code}: ${error.error.message}` : response.statusText;
  throw new Error(`${step}: ${response.status} ${reason}`);
}

/** What the first session made and read, for a caller to show or check. */
export interface FirstSession {
  tenant: TenantRead;
  conversation: ConversationRead;
  listed: ConversationRead[];
  events: RunEvent[];
  answer: string;
  run: RunRead;
  messages: MessageRead[];
  usage: UsageRecordRead[];
}

export async function firstSession(
  baseUrl: string,
  adminKey: string,
  tenantId = "acme",
): Promise<FirstSession> {
  const admin = connect(baseUrl, adminKey);

  // 1. An admin creates a tenant...
  const created = await admin.POST("/api/tenants", {
    body: { tenant_id: tenantId, name: "Acme Corp", system_prompt: "You help Acme staff." },
  });
  if (created.error) fail("create tenant", created.error, created.response);
  const tenant: TenantRead = created.data;

  // 2. ...and a key for it, shown once.
  const issued = await admin.POST("/api/tenants/{tenant_id}/api-keys", {
    params: { path: { tenant_id: tenant.tenant_id } },
    body: { name: "web front end" },
  });
  if (issued.error) fail("create key", issued.error, issued.response);
  const apiKey: ApiKeyCreated = issued.data;
  const acme = connect(baseUrl, apiKey.key);
  const path = { tenant_id: tenant.tenant_id };

  // 3. The tenant's front end creates a conversation for one of its users...
  const opened = await acme.POST("/api/tenants/{tenant_id}/conversations", {
    params: { path, header: { "x-user-id": "alice" } },
    body: { title: "Quarterly report" },
  });
  if (opened.error) fail("create conversation", opened.error, opened.response);
  const conversation: ConversationRead = opened.data;

  // 4. ...and lists that user's conversations.
  const listed = await acme.GET("/api/tenants/{tenant_id}/conversations", {
    params: { path, query: { user_id: "alice" } },
  });
  if (listed.error) fail("list conversations", listed.error, listed.response);

  // 5. Runs the agent on a message and reads its Server-Sent Events as they come. The run
  //    goes on without the connection; its id is in the X-Run-ID header.
  const conversationPath = { ...path, conversation_id: conversation.conversation_id };
  const streamed = await acme.POST("/api/tenants/{tenant_id}/conversations/{conversation_id}/stream", {
    params: { path: conversationPath },
    body: { user_input: "Hello, agent" },
    parseAs: "stream",
  });
  if (streamed.error) fail("stream", streamed.error, streamed.response);
  if (!streamed.data) throw new Error("stream: no body");
  const runId = streamed.response.headers.get("X-Run-ID") ?? "";
  const events: RunEvent[] = [];
  let answer = "";
  for await (const event of readEvents(streamed.data)) {
    events.push(event);
    if (event.event === "text_delta") answer += String(event.data["text"]);
  }

  // The run as recorded: status, usage and cost.
  const recorded = await acme.GET("/api/tenants/{tenant_id}/runs/{run_id}", {
    params: { path: { ...path, run_id: runId } },
  });
  if (recorded.error) fail("get run", recorded.error, recorded.response);
  const run: RunRead = recorded.data;

  // The conversation's messages, in order...
  const log = await acme.GET("/api/tenants/{tenant_id}/conversations/{conversation_id}/messages", {
    params: { path: conversationPath },
  });
  if (log.error) fail("messages", log.error, log.response);
  const messages: MessageRead[] = log.data.items;

  // ...and the tenant's usage records (newest first), here of this conversation.
  const usage = await acme.GET("/api/tenants/{tenant_id}/usage", {
    params: { path, query: { conversation_id: conversation.conversation_id } },
  });
  if (usage.error) fail("usage", usage.error, usage.response);
  const records: UsageRecordRead[] = usage.data.items;

  return { tenant, conversation, listed: listed.data.items, events, answer, run, messages, usage: records };
}
