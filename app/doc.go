// Package app is flashpipe's application layer: the one place every door (the CLI,
// the HTTP API, the tests) calls to run the pipeline's services and to act on
// batches, so that none of them wires the parts its own way.
//
//   - Services: NewProcessor, NewSequencer (with the scheduler beside it) and NewSink
//     return a Service with one lifecycle: Run blocks until its context ends, then
//     drains (a processor finishes its in-flight items up to its drain timeout, a
//     sequencer hands its batches back, a sink commits and acknowledges what it
//     wrote) and returns. Each replica says it is alive, and whether it is blocked,
//     in the services bucket (internal/beacon).
//   - Client: the client side of batches: Submit, Retry, Reprocess, Follow (progress
//     and the ordered results as they are appended), WaitStored, Results, Report, the
//     dead letters, the queue (Queue) and the refusals (Refusals). A client never
//     creates or changes streams; it is safe for concurrent use.
//   - Connections: ConnectNATS and OpenStore wait for NATS and the database (or fail
//     fast) and say what they wait for.
//   - StartStack: the whole pipeline in one process (embedded NATS, the store, the
//     simulator without an API key), for `flashpipe run`, `dev` and `bench`.
//
// Package apptest builds the same pipeline for tests.
package app
