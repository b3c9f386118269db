package docs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// Every message a whole pipeline stores is valid against the schemas, headers
// included: a batch submitted by ingest (ok results with their analysis and cards), a
// batch published directly as an upstream in another language would (one item whose
// term is blank fails in place, one item beyond the count is refused), its retry
// generation, and an item with no manifest (refused).
func TestPipelineMessagesAreValid(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{SQLite: true})
	p.StartProcessor(p.ProcessorConfig(processor.Config{}))
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{OrphanGrace: 500 * time.Millisecond}})
	p.StartSink(sink.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	p.Submit("ingested", []flashpipe.Item{
		{Position: 1, Term: "사과", Type: "noun"}, {Position: 2, Term: "먹다", Type: "verb"}, {Position: 5, Term: "빨리", Type: "adverb"},
	})

	c, js := p.Contract, p.JS
	direct := []flashpipe.Item{{Position: 10, Term: "물", Type: "noun"}, {Position: 20, Term: "   "}, {Position: 30, Term: "불", Type: "n"}}
	m := flashpipe.Manifest{BatchID: "direct", Count: len(direct), Source: "nats", ContentHash: flashpipe.HashItems(direct),
		Tenant: "upstream", Priority: 1, CreatedAt: time.Now().UTC()}
	mm, err := c.ManifestMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	publish(ctx, t, js, mm, contract.ManifestMsgID(m.BatchID, 0))
	for i, it := range append(direct, flashpipe.Item{Position: 40, Term: "beyond"}) {
		im, err := c.ItemMsg(flashpipe.WorkItem{BatchID: m.BatchID, Seq: i + 1, Item: it})
		if err != nil {
			t.Fatal(err)
		}
		publish(ctx, t, js, im, contract.ItemMsgID(m.BatchID, i+1, 0))
	}
	orphan, err := c.ItemMsg(flashpipe.WorkItem{BatchID: "orphan", Seq: 1, Item: flashpipe.Item{Position: 1, Term: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	publish(ctx, t, js, orphan, contract.ItemMsgID("orphan", 1, 0))

	p.WaitStored("ingested", 0, 2*time.Minute)
	p.WaitStored("direct", 0, 2*time.Minute)
	if _, err := p.Client.Retry(ctx, "direct"); err != nil {
		t.Fatal(err)
	}
	p.WaitStored("direct", 1, 2*time.Minute)
	refusals := waitMessages(ctx, t, js, c.RefusedStream(), 2)

	seen := map[string]int{}
	check := func(what, bodySchema, hdSchema string, msg *jetstream.RawStreamMsg) {
		t.Helper()
		seen[what]++
		if bodySchema != "" {
			if err := schemas(t).validate(t, bodySchema, msg.Data); err != nil {
				t.Errorf("%s on %s: not valid against %s: %v\n%s", what, msg.Subject, bodySchema, err, msg.Data)
			}
			if err := strictSchemas(t).validate(t, bodySchema, msg.Data); err != nil {
				t.Errorf("%s on %s: a property %s does not describe: %v\n%s", what, msg.Subject, bodySchema, err, msg.Data)
			}
		}
		if err := schemas(t).validateHeaders(t, hdSchema, msg.Header); err != nil {
			t.Errorf("%s on %s: headers not valid against %s: %v\n%v", what, msg.Subject, hdSchema, err, msg.Header)
		}
	}
	for _, msg := range streamMessages(ctx, t, js, c.BatchesStream()) {
		check("manifest", "manifest.schema.json", "headers.schema.json#/$defs/manifest", msg)
	}
	for _, msg := range streamMessages(ctx, t, js, c.ItemsStream()) {
		check("item", "item.schema.json", "headers.schema.json#/$defs/item", msg)
	}
	for _, msg := range streamMessages(ctx, t, js, c.ResultsStream()) {
		check("result "+msg.Header.Get(contract.HeaderStatus), "result.schema.json", "headers.schema.json#/$defs/result", msg)
	}
	for _, msg := range streamMessages(ctx, t, js, c.OrderedStream()) {
		kind := msg.Header.Get(contract.HeaderKind)
		def := map[string]string{"manifest": "manifest_event", "result": "result", "complete": "complete_event"}[kind]
		if def == "" {
			t.Errorf("ordered event of kind %q: %s", kind, msg.Data)
			continue
		}
		check(kind+" event", "event.schema.json", "headers.schema.json#/$defs/"+def, msg)
	}
	var reasons []string
	for _, msg := range refusals {
		check("refusal", "", "refusal.schema.json", msg)
		reasons = append(reasons, msg.Header.Get(contract.HeaderRefusedReason))
	}
	for _, want := range []string{"manifest", "item", "result ok", "result failed", "manifest event", "result event", "complete event", "refusal"} {
		if seen[want] == 0 {
			t.Errorf("the pipeline stored no %s to check (saw %v)", want, seen)
		}
	}
	for _, code := range []string{"not_in_manifest: ", "no_manifest: "} {
		if !strings.Contains(strings.Join(reasons, "\n"), code) {
			t.Errorf("no refusal %q among %q", code, reasons)
		}
	}
}

// publish publishes msg with its message id and waits for the stream's ack.
func publish(ctx context.Context, t *testing.T, js jetstream.JetStream, msg *nats.Msg, id string) {
	t.Helper()
	if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// waitMessages waits until stream holds at least n messages, and returns them.
func waitMessages(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string, n int) []*jetstream.RawStreamMsg {
	t.Helper()
	for {
		msgs := streamMessages(ctx, t, js, stream)
		if len(msgs) >= n {
			return msgs
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s holds %d messages, want %d", stream, len(msgs), n)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamMessages reads every message stream holds.
func streamMessages(ctx context.Context, t *testing.T, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		if contract.IsNotFound(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, msg)
	}
	return out
}
