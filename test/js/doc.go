// Package js holds no code: it is a publisher and reader of flashpipe batches written
// in JavaScript, with the official NATS client from npm (package.json pins it), from
// docs/contract.md alone (contract.mjs, run.mjs), and the Go test that runs it against
// a whole pipeline. The test runs `npm ci` when node_modules does not hold the
// packages of package-lock.json (.ci/run installs them), and is skipped, saying so,
// where node or npm is missing.
package js
