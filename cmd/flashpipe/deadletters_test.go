package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app/apptest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/store"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
	"github.com/flashpipe/flashpipe/internal/testutil/pgtest"
)

// `flashpipe deadletters` lists the events set aside and `deadletters replay` writes
// them again: the one the database now takes is stored and its letter removed, the
// one it still refuses stays, named in the error, and the command exits non-zero;
// replaying a batch with nothing set aside says so and succeeds.
func TestDeadLettersReplayCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := filepath.Join(dir, "f.db")
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	result := func(seq int, pos int64) flashpipe.Event {
		return flashpipe.Event{Kind: flashpipe.EventResult, Result: &flashpipe.Result{
			BatchID: "b", Seq: seq, Status: flashpipe.StatusOK, ProcessedAt: now,
			Item:  flashpipe.Item{Position: pos, Term: fmt.Sprint("단어", pos), Type: "noun"},
			Cards: []flashpipe.Card{{TabName: "Scene", Front: "f", Back: "b"}}}}
	}
	m := flashpipe.Manifest{BatchID: "b", Count: 2, Source: "test", ContentHash: "h", CreatedAt: now}
	if err := st.Apply(ctx, []flashpipe.Event{{Kind: flashpipe.EventManifest, Manifest: &m}, result(1, 10)}); err != nil {
		t.Fatal(err)
	}
	// Seq 2 was refused by a database since fixed; the second seq 1 is refused for
	// good (seq 1 is stored with another item).
	if err := st.SetAside(ctx, []flashpipe.DeadLetter{
		{Event: result(2, 20), Reason: "refused while a constraint was wrong", At: now},
		{Event: result(1, 30), Reason: "a second item claiming seq 1", At: now},
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	out := runOK(t, dir, "deadletters", "--sqlite", db)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(out, "a second item claiming seq 1") {
		t.Fatalf("deadletters list:\n%s", out)
	}
	out, stderr, code := flashpipeCmd(t, dir, "deadletters", "replay", "--sqlite", db)
	if code == 0 || !strings.Contains(out, "1 events written, 1 still refused") ||
		!regexp.MustCompile(`dead letter \d+ \(batch b\)`).MatchString(stderr) {
		t.Fatalf("deadletters replay: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
	}

	st, err = sqlite.Open(ctx, sqlite.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	letters, err := st.DeadLetters(ctx, "b")
	if err != nil || len(letters) != 1 || letters[0].Event.Result.Position != 30 {
		t.Fatalf("dead letters left %+v, %v; want the refused one only", letters, err)
	}
	var seqs []int
	if err := st.Results(ctx, "b", flashpipe.ResultFilter{}, func(r flashpipe.Result) error { seqs = append(seqs, r.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seqs) != 2 || seqs[1] != 2 {
		t.Fatalf("stored seqs %v, want the replayed seq 2 beside seq 1", seqs)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if out := runOK(t, dir, "deadletters", "replay", "--sqlite", db, "--batch", "other"); !strings.Contains(out, "0 events written, 0 still refused") {
		t.Errorf("replay of a batch with nothing set aside: %s", out)
	}
}

// A sink process whose database user may not write is blocked: `flashpipe status`
// (with --nats-url) prints it BLOCKED with the cause and the database's reason, and
// its /metrics has flashpipe_sink_blocked{cause="permission denied"} 1; once the
// grant comes back the batch is stored, the gauge is gone and status shows it running.
func TestStatusAndMetricsShowTheBlockedSink(t *testing.T) {
	t.Parallel()
	p := apptest.New(t, apptest.Config{})
	p.StartProcessor(p.ProcessorConfig(processor.Config{}))
	p.StartSequencer(sequencer.Config{})
	// A DBA took the right to write the flashcards away from the sink's user.
	role, roleURL := pgtest.Role(t, p.PostgresURL, "SELECT, INSERT, UPDATE, DELETE")
	pgtest.Exec(t, p.PostgresURL, "REVOKE INSERT, UPDATE ON flashcards FROM "+role)
	metrics := fmt.Sprintf("127.0.0.1:%d", freePorts(t, 1)[0])
	common := []string{"--nats-url", p.URL, "--prefix", p.Contract.Prefix()}
	sink := startChild(t, "sink", append([]string{"sink", "--postgres-url", roleURL, "--metrics-addr", metrics,
		"--log-format", "json"}, common...)...)
	sink.waitLog(`"msg":"sink started"`, time.Minute)
	items := loadItems(t, "../../examples/test_5_words.csv")
	p.Submit("blocked", items)

	scrape := func() string {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	const series = `flashpipe_sink_blocked{cause="` + store.CausePermission + `"} 1`
	natstest.Eventually(t, time.Minute, func() bool { return strings.Contains(scrape(), series) },
		"the sink's /metrics never had %s; its log:\n%s", series, sink.log())

	dir := t.TempDir()
	status := func() string {
		return runOK(t, dir, append([]string{"status", "--postgres-url", p.PostgresURL}, common...)...)
	}
	out := status()
	blocked := regexp.MustCompile(`sink \S+: BLOCKED since [0-9-]+ [0-9:]+: ` + store.CausePermission + `: .*permission denied`)
	if !blocked.MatchString(out) {
		t.Fatalf("status does not show the sink blocked with its cause and reason:\n%s", out)
	}

	pgtest.Exec(t, p.PostgresURL, "GRANT INSERT, UPDATE ON flashcards TO "+role)
	natstest.Eventually(t, time.Minute, func() bool {
		b, err := p.Store.Batch(context.Background(), "blocked")
		return err == nil && b.State == flashpipe.BatchComplete
	}, "the batch did not complete after the grant; the sink's log:\n%s", sink.log())
	natstest.Eventually(t, 30*time.Second, func() bool {
		m := scrape()
		return m != "" && !strings.Contains(m, "flashpipe_sink_blocked{")
	}, "flashpipe_sink_blocked still has a series after the grant")
	natstest.Eventually(t, 30*time.Second, func() bool {
		out = status()
		return regexp.MustCompile(`sink \S+: running since`).MatchString(out) && !strings.Contains(out, "BLOCKED")
	}, "status still shows the sink blocked after the grant:\n%s", &out)
}
