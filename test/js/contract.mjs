// flashpipe's wire contract v1 in JavaScript, written from docs/contract.md alone:
// names, headers, message ids, the content hash, publishing a batch, reading its
// ordered log and its refusals, with the official NATS client. The JSON Schemas of
// docs/schemas/v1 check every message sent and read.

import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { headers } from "@nats-io/transport-node";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

// Names (contract.md, 2): subjects under the prefix, streams under the prefix
// upper-cased with '.' and '-' as '_'.
export function names(prefix) {
  const stream = prefix.toUpperCase().replace(/[.-]/g, "_");
  return {
    batchesStream: `${stream}_BATCHES`,
    orderedStream: `${stream}_ORDERED`,
    refusedStream: `${stream}_REFUSED`,
    manifest: (batch) => `${prefix}.batches.${batch}`,
    item: (batch, seq) => `${prefix}.items.${batch}.${seq}`,
    ordered: (batch) => `${prefix}.ordered.${batch}`,
    refused: (batch) => `${prefix}.refused.${batch}`,
  };
}

// Message ids (contract.md, 5).
export const manifestMsgID = (batch, generation) => `${batch}:manifest:${generation}`;
export const itemMsgID = (batch, seq, generation) => `${batch}:item:${seq}:${generation}`;

// contentHash is flashpipe's content hash of items in seq order (contract.md, 4.1):
// hex SHA-256 of each item's JSON, as Go writes it, followed by a newline.
export function contentHash(items) {
  const h = createHash("sha256");
  const utf8 = (s) => Buffer.from(s, "utf8");
  for (const it of items) {
    const obj = { position: it.position, term: it.term, type: it.type ?? "" };
    const keys = Object.keys(it.metadata ?? {});
    if (keys.length > 0) {
      keys.sort((a, b) => Buffer.compare(utf8(a), utf8(b)));
      obj.metadata = Object.fromEntries(keys.map((k) => [k, it.metadata[k]]));
    }
    const json = JSON.stringify(obj)
      .replace(/</g, "\\u003c").replace(/>/g, "\\u003e").replace(/&/g, "\\u0026")
      .replace(/\u2028/g, "\\u2028").replace(/\u2029/g, "\\u2029");
    h.update(json + "\n");
  }
  return h.digest("hex");
}

// Schemas: every file of docs/schemas/v1, registered under its file name so that
// their relative references resolve (contract.md, introduction).
export function loadSchemas() {
  const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "docs", "schemas", "v1");
  const ajv = new Ajv2020({ allErrors: true });
  addFormats(ajv);
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".schema.json"))) {
    ajv.addSchema(JSON.parse(readFileSync(join(dir, f), "utf8")), f);
  }
  return (ref, value, what) => {
    const validate = ajv.getSchema(ref);
    if (!validate) throw new Error(`no schema ${ref}`);
    if (!validate(value)) {
      throw new Error(`${what} is not valid against ${ref}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(value)}`);
    }
  };
}

// headerObject turns NATS headers into an object of name to (first) value.
export function headerObject(h) {
  const out = {};
  for (const k of h ? h.keys() : []) out[k] = h.get(k);
  return out;
}

function withHeaders(obj) {
  const h = headers();
  for (const [k, v] of Object.entries(obj)) h.set(k, v);
  return h;
}

const encode = (v) => new TextEncoder().encode(JSON.stringify(v));

// manifestFor is generation 0 of a batch of items sorted by position.
export function manifestFor(batch, items, { source, tenant, priority } = {}) {
  const m = { batch_id: batch, generation: 0, count: items.length, source: source ?? "nats", content_hash: contentHash(items) };
  if (tenant !== undefined) m.tenant = tenant;
  if (priority !== undefined) m.priority = priority;
  m.created_at = new Date().toISOString();
  return m;
}

// publishManifest publishes a manifest, expecting no manifest of its batch yet
// (contract.md, 9.3).
export async function publishManifest(js, n, m, check) {
  check?.("manifest.schema.json", m, "manifest");
  const h = { "Flashpipe-Batch": m.batch_id, "Flashpipe-Generation": String(m.generation), "Flashpipe-Kind": "manifest" };
  check?.("headers.schema.json#/$defs/manifest", { ...h, "Nats-Msg-Id": manifestMsgID(m.batch_id, m.generation) }, "manifest headers");
  return js.publish(n.manifest(m.batch_id), encode(m), {
    headers: withHeaders(h), msgID: manifestMsgID(m.batch_id, m.generation),
    expect: m.generation === 0 ? { lastSubjectSequence: 0 } : undefined,
  });
}

// itemMessage is the subject, body, headers and message id of item seq.
export function itemMessage(n, batch, generation, seq, it) {
  const body = { batch_id: batch, seq, generation, position: it.position, term: it.term };
  if (it.type !== undefined) body.type = it.type;
  if (it.metadata !== undefined) body.metadata = it.metadata;
  return {
    subject: n.item(batch, seq), body,
    headers: { "Flashpipe-Batch": batch, "Flashpipe-Seq": String(seq), "Flashpipe-Position": String(it.position), "Flashpipe-Generation": String(generation) },
    msgID: itemMsgID(batch, seq, generation),
  };
}

// publishItem publishes one item message and returns the stream's ack.
export async function publishItem(js, msg, check) {
  check?.("item.schema.json", msg.body, `item ${msg.subject}`);
  check?.("headers.schema.json#/$defs/item", { ...msg.headers, "Nats-Msg-Id": msg.msgID }, `item headers ${msg.subject}`);
  return js.publish(msg.subject, encode(msg.body), { headers: withHeaders(msg.headers), msgID: msg.msgID });
}

// publishBatch publishes generation 0 of a batch: the manifest, then every item
// (sorted by position, seq = rank), waiting for every ack (contract.md, 9).
export async function publishBatch(js, n, batch, items, opts = {}, check) {
  const sorted = [...items].sort((a, b) => a.position - b.position);
  const m = manifestFor(batch, sorted, opts);
  const ack = await publishManifest(js, n, m, check);
  const acks = await Promise.all(sorted.map((it, i) => publishItem(js, itemMessage(n, batch, 0, i + 1, it), check)));
  return { manifest: m, manifestAck: ack, itemAcks: acks, items: sorted };
}

// latestManifest reads the last manifest of a batch by direct get (contract.md, 12).
export async function latestManifest(js, n, batch) {
  const st = await js.streams.get(n.batchesStream);
  const sm = await st.getMessage({ last_by_subj: n.manifest(batch) });
  return sm ? sm.json() : null;
}

// readOrdered reads a batch's ordered log from its start with an ordered consumer,
// calling onEvent(event, headers) for each event in order, until the complete event
// of generation `until` or a later one. It returns the final result of every item, in
// ascending seq (contract.md, 12).
export async function readOrdered(js, n, batch, until, onEvent) {
  const oc = await js.consumers.get(n.orderedStream, { filter_subjects: n.ordered(batch) });
  const msgs = await oc.consume();
  const kept = new Map();
  try {
    for await (const m of msgs) {
      const ev = m.json();
      const h = headerObject(m.headers);
      onEvent?.(ev, h);
      if (ev.kind === "manifest" && ev.manifest.generation > 0 && ev.manifest.base === ev.manifest.generation) kept.clear();
      if (ev.kind === "result") kept.set(ev.result.seq, ev.result);
      if (ev.kind === "complete" && ev.completion.generation >= until) break;
    }
  } finally {
    await msgs.close();
  }
  return [...kept.keys()].sort((a, b) => a - b).map((s) => kept.get(s));
}

// readRefusals reads the refusals of a batch until want(refusals) is true.
export async function readRefusals(js, n, batch, want) {
  const oc = await js.consumers.get(n.refusedStream, { filter_subjects: n.refused(batch) });
  const msgs = await oc.consume();
  const out = [];
  try {
    for await (const m of msgs) {
      out.push({ subject: m.subject, headers: headerObject(m.headers), body: m.string() });
      if (want(out)) break;
    }
  } finally {
    await msgs.close();
  }
  return out;
}
