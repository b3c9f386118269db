// Package httpapi is flashpipe's HTTP door: a JSON API under /v1 and a few web pages
// under /ui, both over one app.Client (the client side of batches every door uses).
//
// # The API
//
// A batch is submitted as CSV, JSON Lines or a JSON body; it is parsed and validated
// by ingest exactly as `flashpipe submit` does it, and a rejected batch is answered
// 422 with every bad row ({error, rows: [{line, reason}]}), nothing published. A
// batch id names one batch for ever: submitting the same items again answers 200
// and publishes nothing new, a new batch 201, and other items under a used id 409
// with the original submission's details (unless the request asks to replace it).
// Status, the list of batches, the failed items and the exports read the store; the
// results stream (NDJSON or server-sent events) follows the batch's ordered log live,
// in order, until the batch completes. The routes and their schemas are in the
// OpenAPI document the server serves at /v1/openapi.json (openapi.json in this
// directory; docs/api.md explains it), and a test keeps the two from drifting.
//
// # Auth
//
// Every route but /healthz and the OpenAPI document needs a bearer token (Config.Tokens)
// compared in constant time. A token may carry a tenant: the batches it submits get
// that tenant, and it sees only that tenant's batches. Without tokens the server runs
// open, and only on a loopback address: Start refuses any other. The pages take the
// token once on a login page and keep it in an HttpOnly, SameSite=Lax cookie (Secure
// over TLS); every action they post carries a CSRF token and passes Go's
// cross-origin protection.
//
// # Limits
//
// Request bodies are capped (Config.MaxBodyBytes, 413), headers and bodies must
// arrive within their timeouts, and no error or log line carries a token: tokens
// never appear in a response, and the server logs through the caller's logger (in
// the binary, the redacting logger of internal/secret).
//
// A Server is safe for concurrent use; its handlers hold no state between requests
// beyond the configuration.
package httpapi
