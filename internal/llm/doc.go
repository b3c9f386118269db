// Package llm is flashpipe's client for OpenAI-compatible chat completions: OpenRouter
// (the reference service), vLLM, Ollama or any gateway speaking the same wire format.
//
// It is deliberately small: one method, [Client.Complete], makes exactly one HTTP
// attempt and classifies whatever goes wrong where it is born, so the pipeline (which
// owns retries, backoff, rate limits and the circuit breaker) can decide what to do:
//
//   - flashpipe.ClassOf(err) says Transient (worth another attempt) or Permanent;
//   - flashpipe.RetryAfterOf(err) is the wait the API asked for (Retry-After, or the
//     X-RateLimit-Reset of a 429), zero if none;
//   - errors.As(err, new(*APIError)) gives the HTTP status, the API's error code and
//     message, and the rate-limit headers;
//   - errors.Is(err, ErrAccount) means the API key is bad or out of credits: the pipeline
//     should stop taking items rather than burn through the batch;
//   - errors.Is(err, ErrMaxTokens) means the answer was cut off at max_tokens: raise it.
//
// The API key is sent only in the Authorization header. It never appears in an error,
// a log line or a panic: every text that comes back from the server is scrubbed of it.
//
// A Client is safe for concurrent use; share one per process so its connections are
// reused.
package llm
