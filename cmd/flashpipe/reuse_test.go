package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// A batch id reused after its messages expired from the streams (2 s retention): other
// items are refused with the first submission's details; replaced on request, the
// database holds the new items only, never a mix of the two files, and the TSV export
// agrees with what the submitter saw.
func TestReusedIDAfterShortRetentionNeverMixes(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{Contract: contract.Config{MaxAge: 2 * time.Second, DuplicateWindow: time.Second}})
	p.startAll()
	ctx := context.Background()
	words := func(prefix string, positions ...int64) []flashpipe.Item {
		out := make([]flashpipe.Item, len(positions))
		for i, pos := range positions {
			out[i] = flashpipe.Item{Position: pos, Term: fmt.Sprintf("%s%d", prefix, pos), Type: "noun"}
		}
		return out
	}
	first := words("첫", 1, 2, 3, 4, 5)
	p.submit("lesson", first)
	p.waitStored("lesson", time.Minute)
	natstest.Eventually(t, 30*time.Second, func() bool {
		st, _ := p.js.Stream(ctx, p.c.OrderedStream())
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0
	}, "the ordered stream did not expire")

	second := words("둘", 2, 4, 6, 8) // other positions too
	_, err := p.pub.Submit(ctx, ingest.Batch{ID: "lesson", Source: "lesson2.csv", Items: ingest.SliceItems(second)})
	if !errors.Is(err, flashpipe.ErrBatchConflict) || !strings.Contains(err.Error(), `from "test" with 5 items`) {
		t.Fatalf("reused id after expiry: %v, want a refusal naming the first submission", err)
	}
	sub, err := p.pub.Submit(ctx, ingest.Batch{ID: "lesson", Source: "lesson2.csv", Items: ingest.SliceItems(second), Replace: true})
	if err != nil || !sub.Replaced {
		t.Fatalf("replace: %+v, %v", sub, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := app.WaitStored(wctx, p.store, "lesson", sub.Manifest.Generation)
	if err != nil {
		t.Fatalf("the replacement was not stored: %v (%+v)", err, st)
	}
	if st.Manifest.Count != 4 || st.Done != 4 || st.OK != 4 || st.SetAside != 0 {
		t.Fatalf("status after the replacement: %+v", st)
	}
	checkStored(t, p.results("lesson"), second, 3)
	var buf strings.Builder
	tsv := export.NewTSV(&buf)
	if err := p.store.Results(ctx, "lesson", flashpipe.ResultFilter{}, tsv.Write); err != nil {
		t.Fatal(err)
	}
	if err := tsv.Close(); err != nil {
		t.Fatal(err)
	}
	if tsv.Cards() != 12 || strings.Contains(buf.String(), "첫") {
		t.Fatalf("export wrote %d cards (want the replacement's 12), first file's terms present: %v", tsv.Cards(), strings.Contains(buf.String(), "첫"))
	}
}
