// Package stages holds flashpipe's two LLM stages: what is asked (prompts, JSON
// schemas, the llm.Request of each stage), how the answers are read (tolerant
// extraction, validation and normalisation into flashpipe.Analysis and flashpipe.Card),
// and the cache keys of both stages.
//
// Stage 1 analyses one term (flashpipe.Analysis); stage 2 turns the term and its
// analysis into flashcards (usually Scene, Usage-Comparison and Hanja). Every user
// message ends with the stage's machine-readable input,
//
//	Input:
//	```json
//	{"term_number":12,"term":"남성","type":"noun"}
//	```
//
// which DecodeInput reads back (the API simulator answers from it).
//
// Caching: Stage1Key and Stage2Key cover everything that changes an answer (stage,
// model, prompt version, canonical input) and never the item's position, so the same
// word in another batch or at another position is a hit. The one part of an answer
// that depends on the position, the card primer, is stamped by ParseStage2 (and
// StampCards) from the item, so re-parsing a cached answer for another item is correct.
//
// Everything here is a pure function of its arguments and safe for concurrent use.
package stages
