// Package docs holds no code: it is the home of the project's documentation, of the
// JSON Schemas of the wire contract (schemas/v1, described by contract.md) and of the
// tests that keep them true: the schemas against the Go types (field by field, both
// ways), against messages the Go code encodes and a whole pipeline publishes, against
// wrongly typed messages they must refuse, and against the examples in contract.md.
package docs
