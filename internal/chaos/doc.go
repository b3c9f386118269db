// Package chaos is flashpipe's fault-injection suite: it runs the services as separate
// OS processes (the real flashpipe binary, built once per test run) against an
// embedded NATS server, a PostgreSQL schema of each test's own and the API simulator,
// injects faults while a batch is under way, and after every scenario checks the
// promises of the design (in order, nothing lost, exactly-once effect, crash safety,
// never paying twice beyond what a crash can cost).
//
// The package holds only tests (and this comment). The scenarios, each a subtest of
// TestChaos:
//
//   - processor_kill: kill -9 the processor at random moments of a batch, restart it
//     each time; results must resume within the processor's ack wait.
//   - sequencer_kill: the same for the sequencer (its lease hands the batch over).
//   - sink_kill: the same for the sink.
//   - nats_restart: stop the NATS server mid-batch and start it again on the same
//     port and storage; the services must reconnect on their own.
//   - postgres_outage: cut a TCP proxy between the sink and PostgreSQL (every
//     connection closed, new ones refused) for 10 s mid-batch, then restore it.
//   - nats_silent_link: a silent network path (connections open, nothing forwarded)
//     between an idle processor running one worker and NATS for 35 s, longer than two
//     pull heartbeats; then a batch, which it must take.
//
// After each scenario the store must hold every position exactly once, in processing
// order equal to the rank of its position, all ok, three cards each; the batch's
// ordered stream must hold its manifest, every position once in ascending order, and
// its completion; and the simulator must have been paid at most items + W*F times per
// stage, where W is the processor's worker count and F the number of faults that can
// interrupt a paid call (processor kills, NATS restarts, silent links), see README.md.
//
// The short form runs in the default test run:
//
//	go test -count=1 ./internal/chaos/
//
// The long form (more trials, bigger batches, more kills, a final table) is behind the
// build tag chaos:
//
//	go test -tags chaos -run . ./internal/chaos/ -count=1 -timeout 60m -v
//
// One scenario alone: go test -count=1 -run 'TestChaos/sink_kill' ./internal/chaos/ -v.
// CHAOS_SEED=<n> fixes the random kill moments (timing still varies); CHAOS_KEEP_LOGS=<dir>
// keeps every process log. README.md has the details: the bounds and why they are sound,
// what each scenario proves, the bugs it found.
package chaos
