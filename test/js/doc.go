// Package js holds no code: it is a publisher and reader of flashpipe batches written
// in JavaScript, with the official NATS client from npm (package.json pins it), from
// docs/contract.md alone (contract.mjs, run.mjs), and the Go test that runs it against
// a whole pipeline. The test installs the packages once with `npm ci` (kept in
// node_modules) and is skipped, saying so, where node or npm is missing.
package js
