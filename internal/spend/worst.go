package spend

import "github.com/flashpipe/flashpipe/internal/llm"

// Worst-case sizing of a request.
const (
	// MessageOverheadBytes is counted per message on top of its content (role and
	// framing tokens).
	MessageOverheadBytes = 16
	// RequestOverheadBytes is counted once per request: what a provider adds to the
	// prompt around the messages (chat template, the instructions that come with a
	// structured output or tool definition), about 250 tokens at most in practice.
	RequestOverheadBytes = 1024
	// DefaultWorstCompletionTokens stands for max_tokens when a request sets none (the
	// model's own limit applies, which may be larger: set max_tokens for a true bound).
	DefaultWorstCompletionTokens = 8192
)

// WorstPromptTokens bounds the prompt tokens of req: no tokenizer makes more tokens
// than bytes, so the bytes of the messages, the JSON schema (sent in the prompt by
// providers that enforce it) and a small overhead per message.
func WorstPromptTokens(req llm.Request) int64 {
	n := RequestOverheadBytes
	for _, m := range req.Messages {
		n += len(m.Content) + len(m.Role) + MessageOverheadBytes
	}
	if rf := req.ResponseFormat; rf != nil && rf.JSONSchema != nil {
		n += len(rf.JSONSchema.Schema) + len(rf.JSONSchema.Name)
	}
	return int64(n)
}

// WorstCase is the most req can cost at p, in USD: WorstPromptTokens plus max_tokens
// (DefaultWorstCompletionTokens when unset). Use it with the batch price for a request
// sent in a provider batch.
func WorstCase(req llm.Request, p Prices) float64 {
	completion := int64(req.MaxTokens)
	if completion <= 0 {
		completion = DefaultWorstCompletionTokens
	}
	return p.Cost(WorstPromptTokens(req), completion)
}
