package main

import (
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/scheduler"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// status shows a batch from the moment it is submitted: in the queue with its tenant,
// priority and progress, and the messages about it that were refused and why, even
// before the database has heard of it.
func TestStatusShowsTheQueueAndRefusals(t *testing.T) {
	t.Parallel()
	p := newPipelineWith(t, apptest.Config{})
	// No processor: the batch stays queued (the window holds 2 of its items).
	p.StartSequencerWith(app.SequencerConfig{Scheduler: scheduler.Config{Window: 2}})
	dir := t.TempDir()
	conn := []string{"--nats-url", p.URL, "--prefix", p.c.Prefix()}
	if _, stderr, code := flashpipeCmd(t, dir, append([]string{"submit", abs(t, "../../examples/test_5_words.csv"), "--batch", "lesson1",
		"--tenant", "team-a", "--priority", "3"}, conn...)...); code != 0 {
		t.Fatalf("submit: exit %d\n%s", code, stderr)
	}
	up := publisher{t: t, js: p.js, c: p.c}
	up.item("lesson1", 9, 90, "넘침", nil) // beyond the manifest's 5 items

	status := append([]string{"status", "--postgres-url", p.PostgresURL}, conn...)
	var out string
	natstest.Eventually(t, 30*time.Second, func() bool {
		out, _, _ = flashpipeCmd(t, dir, status...)
		return strings.Contains(out, "team-a") && strings.Contains(out, "lesson1: 1")
	}, "status never showed the queued batch and its refusal:\n%s", out)
	t.Logf("status:\n%s", out)
	for _, want := range []string{"queue: 1 batches waiting", "TENANT", "AT PROCESSORS", "refused: 1 messages kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	out, stderr, code := flashpipeCmd(t, dir, append(status, "lesson1")...)
	if code != 0 {
		t.Fatalf("status lesson1: exit %d\n%s%s", code, out, stderr)
	}
	t.Logf("status lesson1:\n%s", out)
	for _, want := range []string{"batch lesson1: not started yet", "queued (generation 0, tenant team-a, priority 3)", "of 5 items dispatched",
		"refused: 1 messages about this batch", "not_in_manifest", "by the scheduler"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lesson1 lacks %q:\n%s", want, out)
		}
	}

	// A tenant the manifest could not carry is refused before anything is published.
	if _, stderr, code := flashpipeCmd(t, dir, append([]string{"submit", abs(t, "../../examples/test_5_words.csv"), "--batch", "lesson2",
		"--tenant", "team a"}, conn...)...); code != 2 || !strings.Contains(stderr, "--tenant") {
		t.Fatalf("submit --tenant 'team a': exit %d\n%s", code, stderr)
	}
}
