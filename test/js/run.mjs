// Publishes a batch into a running flashpipe with the official NATS JavaScript
// client, reads its ordered log back in order, then publishes two malformed items and
// reads their refusals; every message sent and read is checked against the schemas of
// docs/schemas/v1. It prints a JSON summary on stdout and exits non-zero on the first
// broken expectation. Environment: NATS_URL, FLASHPIPE_PREFIX, BATCH_ID,
// ORPHAN_BATCH_ID, TIMEOUT_MS (default 120000).

import assert from "node:assert/strict";

import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

import * as fp from "./contract.mjs";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const prefix = env("FLASHPIPE_PREFIX");
const batch = env("BATCH_ID");
const orphanBatch = env("ORPHAN_BATCH_ID");
setTimeout(() => {
  console.error(`timed out after ${process.env.TIMEOUT_MS ?? 120000} ms`);
  process.exit(2);
}, Number(process.env.TIMEOUT_MS ?? 120000)).unref();

const check = fp.loadSchemas();
const n = fp.names(prefix);
const nc = await connect({ servers: env("NATS_URL"), name: "flashpipe-contract-js" });
const js = jetstream(nc);

// Items as an upstream has them: out of order, positions with gaps, a type alias, one
// with metadata, one without a type.
const items = [
  { position: 35, term: "빨리", type: "adv" },
  { position: 10, term: "사과", type: "noun", metadata: { level: "1", hanja: "沙果" } },
  { position: 20, term: "먹다", type: "v" },
  { position: 50, term: "학교" },
];
const pub = await fp.publishBatch(js, n, batch, items, { source: "js-test", tenant: "js-team", priority: 2 }, check);
assert.equal(pub.manifestAck.duplicate, false, "the manifest is new");
for (const a of pub.itemAcks) assert.equal(a.duplicate, false, "every item is new");

// Publishing again is a no-op: an item is acknowledged as a duplicate, and a second
// generation-0 manifest is a duplicate or refused by its expectation.
const again = await fp.publishItem(js, fp.itemMessage(n, batch, 0, 1, pub.items[0]), check);
assert.equal(again.duplicate, true, "an item published twice is a duplicate");
let manifestAgain;
try {
  const a = await fp.publishManifest(js, n, pub.manifest, check);
  assert.equal(a.duplicate, true, "a manifest published twice is a duplicate");
  manifestAgain = "duplicate";
} catch (err) {
  assert.match(String(err.message), /wrong last sequence/i, `a second manifest: ${err.message}`);
  manifestAgain = "wrong last sequence";
}

// The ordered log: the manifest, every result in seq order, the completion.
const latest = await fp.latestManifest(js, n, batch);
assert.equal(latest.generation, 0);
assert.equal(latest.tenant, "js-team");
const events = [];
const results = await fp.readOrdered(js, n, batch, latest.generation, (ev, h) => {
  check("event.schema.json", ev, `${ev.kind} event`);
  const def = { manifest: "manifest_event", result: "result", complete: "complete_event" }[ev.kind];
  check(`headers.schema.json#/$defs/${def}`, h, `${ev.kind} event headers`);
  assert.equal(h["Flashpipe-Kind"], ev.kind, "the kind header names the event");
  events.push(ev);
});
assert.equal(events.length, items.length + 2, "manifest, one result per item, complete");
assert.equal(events[0].kind, "manifest");
assert.equal(events[0].manifest.count, items.length);
assert.equal(events[0].manifest.tenant, "js-team");
const resultEvents = events.slice(1, -1);
assert.deepEqual(resultEvents.map((e) => e.kind), items.map(() => "result"));
assert.deepEqual(resultEvents.map((e) => e.result.seq), [1, 2, 3, 4], "results in seq order");
assert.deepEqual(resultEvents.map((e) => e.result.position), [10, 20, 35, 50], "seq is the rank of position");
const last = events.at(-1);
assert.equal(last.kind, "complete");
assert.equal(last.completion.emitted, items.length);
assert.equal(last.completion.generation, 0);
for (const r of results) {
  assert.equal(r.status, "ok", `seq ${r.seq}: ${JSON.stringify(r.failure)}`);
  assert.ok(r.analysis && r.cards?.length > 0, `seq ${r.seq} has its analysis and cards`);
}
assert.deepEqual(results.map((r) => r.type), ["noun", "verb", "adverb", "unknown"], "types normalised");
assert.deepEqual(results[0].metadata, { level: "1", hanja: "沙果" }, "metadata comes back");

// Malformed publishes: an item beyond the manifest's count, an item with no manifest.
const beyond = fp.itemMessage(n, batch, 0, items.length + 1, { position: 60, term: "넘다" });
await fp.publishItem(js, beyond, check);
const orphan = fp.itemMessage(n, orphanBatch, 0, 1, { position: 1, term: "고아" });
await fp.publishItem(js, orphan, check);
const refusals = [];
for (const [b, msg, code] of [[batch, beyond, "not_in_manifest"], [orphanBatch, orphan, "no_manifest"]]) {
  const [r] = await fp.readRefusals(js, n, b, (got) => got.length >= 1);
  check("refusal.schema.json", r.headers, `refusal of ${msg.subject}`);
  const reason = r.headers["Flashpipe-Refused-Reason"];
  assert.ok(reason.startsWith(`${code}: `), `refusal of ${msg.subject}: ${reason}`);
  assert.equal(r.headers["Flashpipe-Refused-Subject"], msg.subject);
  assert.equal(r.headers["Flashpipe-Refused-By"], "scheduler");
  assert.equal(r.subject, n.refused(b));
  assert.deepEqual(JSON.parse(r.body), msg.body, "the refused message's body, unchanged");
  refusals.push({ batch: b, reason });
}

// A probe of the content hash for the Go side to compare with flashpipe's own.
const probe = [
  { position: 1, term: "R&D <lab> \u2028 \"q\"", type: "noun", metadata: { b: "x", a: "<y>", "é": "1", z: "2" } },
  { position: 7, term: "물", type: "" },
];
console.log(JSON.stringify({
  manifest_again: manifestAgain,
  batch_hash: pub.manifest.content_hash,
  items: pub.items,
  results: results.map((r) => ({ seq: r.seq, position: r.position, status: r.status, cards: r.cards.length })),
  refusals,
  probe,
  probe_hash: fp.contentHash(probe),
}));
await nc.close();
