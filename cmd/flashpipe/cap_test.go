package main

import (
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// submit --max-cost caps a batch: at the cap it pauses, `status` and `cap show` say
// why and how to go on, `cap set` raises it and the batch completes; bad caps are
// refused at the door, naming the flag.
func TestCapCommandsPauseAndResume(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{})
	p.startProcessor(processor.Config{})
	p.startSequencer(sequencer.Config{})
	p.startSink(sink.Config{})
	dir := t.TempDir()
	conn := []string{"--nats-url", p.URL, "--prefix", p.c.Prefix()}
	file := abs(t, "../../examples/test_5_words.csv")
	for _, bad := range []string{"abc", "-1", "0", "1e3"} {
		if _, stderr, code := flashpipeCmd(t, dir, append([]string{"submit", file, "--batch", "bad", "--max-cost=" + bad}, conn...)...); code != 2 || !strings.Contains(stderr, "--max-cost") {
			t.Fatalf("submit --max-cost %s: exit %d\n%s", bad, code, stderr)
		}
	}
	if _, stderr, code := flashpipeCmd(t, dir, append([]string{"submit", file, "--batch", "money", "--max-cost", "0.05"}, conn...)...); code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, stderr)
	}
	status := append([]string{"status", "money", "--postgres-url", p.PostgresURL}, conn...)
	var out string
	natstest.Eventually(t, 30*time.Second, func() bool {
		out, _, _ = flashpipeCmd(t, dir, status...)
		return strings.Contains(out, "paused: spend cap $0.05 reached")
	}, "status never said the batch is paused:\n%s", out)
	t.Logf("status money:\n%s", out)
	if !strings.Contains(out, "raise with flashpipe cap set --batch money --max-cost N") {
		t.Fatalf("status does not say how to go on:\n%s", out)
	}
	show := append([]string{"cap", "show", "--batch", "money"}, conn...)
	if out, stderr, code := flashpipeCmd(t, dir, show...); code != 0 || !strings.Contains(out, "batch money: spent $") || !strings.Contains(out, "paused") {
		t.Fatalf("cap show: exit %d\n%s%s", code, out, stderr)
	}
	if _, stderr, code := flashpipeCmd(t, dir, append([]string{"cap", "set", "--max-cost", "5"}, conn...)...); code != 2 {
		t.Fatalf("cap set without a scope: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := flashpipeCmd(t, dir, append([]string{"cap", "set", "--batch", "nosuch", "--max-cost", "5"}, conn...)...); code != 2 || !strings.Contains(stderr, "no such batch") {
		t.Fatalf("cap set on a batch that does not exist: exit %d\n%s", code, stderr)
	}
	if out, stderr, code := flashpipeCmd(t, dir, append([]string{"cap", "set", "--batch", "money", "--max-cost", "5"}, conn...)...); code != 0 || !strings.Contains(out, "of $5.00 (command)") {
		t.Fatalf("cap set: exit %d\n%s%s", code, out, stderr)
	}
	if st := p.waitStored("money", time.Minute); st.OK != 5 || st.Failed != 0 {
		t.Fatalf("after raising the cap: %d ok, %d failed", st.OK, st.Failed)
	}
	if out, stderr, code := flashpipeCmd(t, dir, append([]string{"cap", "set", "--period", "--max-cost", "100"}, conn...)...); code != 0 {
		t.Fatalf("cap set --period: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, _ := flashpipeCmd(t, dir, append([]string{"cap", "show"}, conn...)...); !strings.Contains(out, "period cap ($100.00 per 24h)") {
		t.Fatalf("cap show:\n%s", out)
	}
}
