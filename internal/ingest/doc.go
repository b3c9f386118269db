// Package ingest validates vocabulary batches and publishes them to the pipeline.
//
// # Parsing
//
// Parse and ParseFile read a batch in CSV or JSON Lines, check every row against the
// input rules and return the valid items sorted by ascending position. A batch with
// a bad row is rejected whole with a *ParseError that lists every bad row with its
// line number and reason, unless ParseOptions.SkipBadRows asks to leave bad rows out;
// a batch without a single valid item is always rejected. Parsing has no side
// effects and is safe for concurrent use.
//
// Parse holds the whole batch in memory. OpenFile applies the same rules (and gives
// the same errors) to a batch file without holding it: one pass validates it and
// keeps each valid row's position and byte offset (16 bytes per item, sorted by
// position); its Items are read back from the file by offset, in seq order, when
// they are hashed and published. Spool does the same for input that cannot be read
// twice, such as standard input, through a temporary copy. No reader holds more than
// MaxLineBytes of a line: an over-long line is counted, not kept.
//
// A leading UTF-8 byte order mark is ignored in either format.
//
// CSV needs a header row. Header names are trimmed and matched case-insensitively,
// and blank lines (or rows of empty fields) are skipped. Two layouts exist:
//
//   - rich, chosen when a Hangul column exists: the term is Hangul, the type Word_Type,
//     the position Position (as in word-frequency lists such as 10K_HSK_List.csv);
//   - simple otherwise: the columns term (required), type and position.
//
// In both, every other column is kept in Item.Metadata under its trimmed header
// name; columns with a blank header name are ignored and blank values are left out.
// A row must have as many fields as the header. A row's line number is the physical
// line where it starts, so quoted multi-line fields do not shift later numbers.
//
// JSON Lines holds one JSON object per line; blank lines are skipped. The fields
// position (an integer, or a string holding one), term (a string), type (a string)
// and metadata (an object) are matched case-insensitively. A metadata value that is
// a string is kept as is, any other value as its compact JSON text. Every other
// top-level field is kept as metadata the same way; it may not repeat a metadata
// key. Null values and empty strings are left out of metadata, and metadata values
// are trimmed in both formats. A field given twice is a bad row.
//
// The rules for an item, in either format:
//
//   - position: an integer >= 1, unique within the batch; a row whose position is
//     taken by an earlier valid row is bad. Without a position column (or field),
//     an item's position is its 1-based data row number, bad rows included and
//     blank lines not. Positions need not start at 1 or be contiguous.
//   - term: required; valid UTF-8; trimmed, non-empty, without control characters
//     and at most flashpipe.MaxTermLength characters.
//   - type: optional, normalised by flashpipe.NormalizeType; no control characters.
//   - a line is at most MaxLineBytes long.
//
// # Publishing
//
// Publisher takes a valid batch (Items: a File, or SliceItems of parsed items), gives
// every item its Seq (the 1-based rank of its position) and publishes the batch's
// flashpipe.Manifest before its items, so later stages know how many results
// complete the batch; it publishes a chunk of items at a time and waits for every
// publish ack, so its memory does not grow with the batch.
// Validation happens before anything is published, so a rejected batch publishes
// nothing. Publishing is idempotent by batch id: every message carries a Nats-Msg-Id,
// and submitting the same items again publishes only what an interrupted submit left
// out (nothing, for a complete batch), so it causes no new work.
package ingest
