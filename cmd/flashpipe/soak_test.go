//go:build soak

// The soak tests run long: go test -tags soak -run Soak -v -timeout 60m ./cmd/flashpipe/

package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/store/sqlite"
	"github.com/flashpipe/flashpipe/internal/testutil/batchgen"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// peakRSS reads a process's peak resident set size (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// A 200,000-item batch whose first position arrives last: the sequencer holds a
// window, not the batch, so its peak memory stays bounded; the sink writes in groups.
func TestSoakBoundedSequencerWorstCase(t *testing.T) {
	const n = 200_000
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	c := natstest.Contract(t, js)
	ctx := context.Background()
	tmpl := sampleResult(t)

	m := flashpipe.Manifest{BatchID: "huge", Count: n, Source: "soak", CreatedAt: time.Now().UTC()}
	mm, _ := c.ManifestMsg(m)
	if _, err := js.PublishMsg(ctx, mm); err != nil {
		t.Fatal(err)
	}
	publish := func(seq int) jetstream.PubAckFuture {
		r := *tmpl
		r.BatchID, r.Seq, r.Position, r.Term = "huge", seq, int64(seq), fmt.Sprintf("말%d", seq)
		msg, err := c.ResultMsg(&r)
		if err != nil {
			t.Fatal(err)
		}
		f, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	start := time.Now()
	for seq := 2; seq <= n; seq++ {
		publish(seq)
	}
	<-js.PublishAsyncComplete()
	t.Logf("published %d results (seq 1 held back) in %s", n-1, time.Since(start).Round(time.Millisecond))

	dir := t.TempDir()
	db := filepath.Join(dir, "soak.db")
	args := []string{"--nats-url", srv.ClientURL(), "--prefix", c.Prefix(), "--log-level", "warn"}
	seq := exec.Command(binary, append([]string{"sequencer"}, args...)...)
	snk := exec.Command(binary, append([]string{"sink", "--sqlite", db}, args...)...)
	for _, cmd := range []*exec.Cmd{seq, snk} {
		cmd.Env, cmd.Stderr = cleanEnv(), os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	// Wait until the sequencer's consumer of the batch's results has read all of them
	// while seq 1 is missing: the worst case for its memory.
	results, err := js.Stream(ctx, c.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, 10*time.Minute, func() bool {
		for info := range results.ListConsumers(ctx).Info() {
			if info.Config.FilterSubject == c.BatchResults("huge") || (len(info.Config.FilterSubjects) == 1 && info.Config.FilterSubjects[0] == c.BatchResults("huge")) {
				return info.NumPending == 0 && info.Delivered.Stream >= uint64(n-1)
			}
		}
		return false
	}, "the sequencer never read the results")
	t.Logf("the sequencer read %d results with seq 1 missing; peak RSS so far %d MB", n-1, peakRSS(t, seq.Process.Pid)>>20)
	publish(1)
	<-js.PublishAsyncComplete()
	release := time.Now()

	store, err := sqlite.Open(ctx, sqlite.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	natstest.Eventually(t, 30*time.Minute, func() bool {
		st, err := store.Batch(ctx, "huge")
		return err == nil && st.State == flashpipe.BatchComplete
	}, "the batch did not complete")
	took := time.Since(release)
	seqRSS, sinkRSS := peakRSS(t, seq.Process.Pid), peakRSS(t, snk.Process.Pid)
	t.Logf("200,000 items stored %s after the first arrived (%.0f items/s); peak RSS: sequencer %d MB, sink %d MB",
		took.Round(time.Millisecond), n/took.Seconds(), seqRSS>>20, sinkRSS>>20)
	if seqRSS > 200<<20 {
		t.Fatalf("sequencer peak RSS %d MB > 200 MB", seqRSS>>20)
	}
	keys := readOrdered(t, js, c, "huge")
	if len(keys) != n+2 {
		t.Fatalf("%d ordered events, want %d", len(keys), n+2)
	}
	for i := 1; i <= n; i++ {
		if keys[i].Seq != i {
			t.Fatalf("ordered event %d has seq %d", i, keys[i].Seq)
		}
	}
}

// sampleResult is a result as the processors make it (the simulator's answers).
func sampleResult(t *testing.T) *flashpipe.Result {
	t.Helper()
	p := newPipeline(t, llmsim.Config{})
	p.startProcessor(processor.Config{})
	p.submit("sample", []flashpipe.Item{{Position: 1, Term: "사람", Type: "noun", Metadata: map[string]string{"Definition": "person"}}})
	st, err := p.js.Stream(context.Background(), p.c.ResultsStream())
	if err != nil {
		t.Fatal(err)
	}
	var raw *jetstream.RawStreamMsg
	natstest.Eventually(t, 30*time.Second, func() bool {
		raw, err = st.GetLastMsgForSubject(context.Background(), p.c.ResultSubject("sample", 1))
		return err == nil
	}, "no sample result")
	r, err := contract.DecodeResult(raw.Header, raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// `flashpipe submit` of a 1,000,000-item file, positions shuffled and with gaps (the
// worst case: every row is read back by offset), stays under 100 MB of peak RSS: it
// holds a 16-byte index per item, not the items (before: 2.2 GB). The peak is the
// child's maximum resident set size from wait4 (the kernel's VmHWM, read after exit).
func TestSoakSubmitPeakRSS(t *testing.T) {
	const n = 1_000_000
	srv := natstest.Server(t)
	_, js := natstest.Connect(t, srv.ClientURL())
	prefix := natstest.UniquePrefix(t)
	dir := t.TempDir()
	streamsApply(t, dir, srv.ClientURL(), prefix) // a client creates no streams
	path := filepath.Join(dir, "words.csv")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := batchgen.WriteCSV(f, batchgen.Config{Items: n, Shuffle: true, Gap: 3, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(binary, "submit", path, "--nats-url", srv.ClientURL(), "--prefix", prefix)
	var stdout, stderr bytes.Buffer
	cmd.Env, cmd.Stdout, cmd.Stderr = cleanEnv(), &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("submit: %v\n%s", err, stderr.String())
	}
	took := time.Since(start)
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss << 10 // KiB on Linux
	t.Logf("submit of %d items: %s, peak RSS %.1f MB", n, took.Round(time.Millisecond), float64(rss)/(1<<20))

	// Everything was published, under the hash of the file's items.
	b, err := ingest.OpenFile(path, ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	hash, err := b.Hash(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(stdout.String())
	c, err := contract.New(contract.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	batches, err := js.Stream(ctx, c.BatchesStream())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := batches.GetLastMsgForSubject(ctx, c.ManifestSubject(id))
	if err != nil {
		t.Fatal(err)
	}
	m, err := contract.DecodeManifest(raw.Header, raw.Data)
	if err != nil || m.Count != n || m.ContentHash != hash || id != "words-"+hash[:10] {
		t.Fatalf("batch %s, manifest %+v, %v; want %d items with hash %s", id, m, err, n, hash)
	}
	items, err := js.Stream(ctx, c.ItemsStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := items.Info(ctx)
	if err != nil || info.State.Msgs != n {
		t.Fatalf("items stream: %+v, %v; want %d messages", info.State, err, n)
	}
	if rss > 100<<20 {
		t.Fatalf("submit peak RSS %.1f MB > 100 MB", float64(rss)/(1<<20))
	}
}
