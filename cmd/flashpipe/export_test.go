package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/llmsim"
	"github.com/flashpipe/flashpipe/internal/testutil/ankitest"
)

// startDev runs `flashpipe dev` on dataDir as a child process and returns its NATS URL;
// it is interrupted when the test ends.
func startDev(t *testing.T, dir, dataDir string) string {
	t.Helper()
	nats, _ := startDevWith(t, dir, dataDir)
	return nats
}

// startDevWith is startDev with more flags; it also returns the HTTP API's URL.
func startDevWith(t *testing.T, dir, dataDir string, args ...string) (natsURL, httpURL string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"dev", "--data-dir", dataDir, "--api-addr", "127.0.0.1:0"}, args...)...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	urls := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var nats string
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "NATS:"); ok {
				nats = strings.TrimSpace(u)
			}
			if u, ok := strings.CutPrefix(sc.Text(), "HTTP:"); ok {
				urls <- [2]string{nats, strings.Fields(u)[0]}
			}
		}
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case u := <-urls:
		return u[0], u[1]
	case <-exited:
		t.Fatalf("flashpipe dev exited:\n%s", stderr.String())
	case <-time.After(time.Minute):
		t.Fatalf("flashpipe dev printed no NATS and HTTP URLs within a minute:\n%s", stderr.String())
	}
	return "", ""
}

func runOK(t *testing.T, dir string, args ...string) string {
	t.Helper()
	stdout, stderr, code := flashpipeCmd(t, dir, args...)
	if code != 0 {
		t.Fatalf("flashpipe %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout
}

// The acceptance: the 1,000-item batch through `flashpipe run -o cards.apkg`
// is a valid Anki collection of 1,000 x 3 notes in one deck; reprocessed (every note's
// item processed again) and exported again, importing it updates those 3,000 notes
// and adds none; and submit --wait writes the same formats.
func TestRunWritesAnkiPackageThatUpdatesInPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := abs(t, "../../examples/vocabulary_1000.csv")
	var sum summary
	if err := json.Unmarshal([]byte(runOK(t, dir, "run", file, "-o", "cards.apkg", "--json", "--quiet")), &sum); err != nil {
		t.Fatal(err)
	}
	if sum.OK != 1000 || sum.Cards != 3000 || sum.Output != "cards.apkg" {
		t.Fatalf("summary %+v", sum)
	}
	v1 := ankitest.Open(t, filepath.Join(dir, "cards.apkg"))
	if len(v1.Notes) != 3000 || len(v1.Cards) != 3000 {
		t.Fatalf("%d notes, %d cards; want 3000 of each", len(v1.Notes), len(v1.Cards))
	}
	decks := map[int64]bool{}
	for _, c := range v1.Cards {
		decks[c.DeckID] = true
	}
	if len(decks) != 1 {
		t.Fatalf("cards in %d decks, want one", len(decks))
	}
	for id := range decks {
		if v1.Decks[id].Name != "vocabulary_1000" {
			t.Fatalf("deck %q, want the file's name", v1.Decks[id].Name)
		}
	}
	col := ankitest.NewCollection()
	if log := col.Import(v1); log.Added != 3000 {
		t.Fatalf("first import %+v", log)
	}

	// The same batch reprocessed, followed by reprocess --wait against `flashpipe dev`
	// on the same state: a newer package of the same notes.
	url := startDev(t, dir, ".flashpipe")
	runOK(t, dir, "reprocess", "--batch", sum.BatchID, "--nats-url", url, "--wait", "--quiet", "-o", "v2.apkg")
	v2 := ankitest.Open(t, filepath.Join(dir, "v2.apkg"))
	log := col.Import(v2)
	if log.Added != 0 || log.Updated != 3000 || log.Conflicting != 0 {
		t.Fatalf("second import %+v, want 3000 updated and none added", log)
	}
	if len(col.Notes) != 3000 || len(col.Cards) != 3000 {
		t.Fatalf("collection has %d notes and %d cards, want 3000", len(col.Notes), len(col.Cards))
	}
	// export from the store gives the same notes, no newer: nothing to update.
	runOK(t, dir, "export", "--batch", sum.BatchID, "-o", "v3.apkg")
	if log := col.Import(ankitest.Open(t, filepath.Join(dir, "v3.apkg"))); log.Added != 0 || log.Updated != 0 {
		t.Fatalf("third import %+v, want nothing", log)
	}

	// submit --wait takes the same formats, by extension or by name.
	runOK(t, dir, "submit", abs(t, "../../examples/test_5_words.csv"), "--nats-url", url, "--wait", "--quiet", "-o", "words.apkg", "--subdecks-per-tab")
	words := ankitest.Open(t, filepath.Join(dir, "words.apkg"))
	if len(words.Notes) != 15 || words.Decks[words.Cards[0].DeckID].Name != "test_5_words::Scene" {
		t.Fatalf("%d notes, first card in %q", len(words.Notes), words.Decks[words.Cards[0].DeckID].Name)
	}
	runOK(t, dir, "submit", abs(t, "../../examples/test_5_words.csv"), "--nats-url", url, "--wait", "--quiet", "-o", "words.out", "--output-format", "jsonl")
	data, _ := os.ReadFile(filepath.Join(dir, "words.out"))
	if n := strings.Count(string(data), "\n"); n != 15 || !strings.HasPrefix(string(data), `{"position":1,`) {
		t.Fatalf("JSON Lines with %d lines:\n%.200s", n, data)
	}
}

// Every format through `flashpipe export`, standard output, the format list, refusals
// that name the problem before any work, and /dev/null left a device.
func TestExportCommandFormatsAndOutputs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := abs(t, "../../examples/test_5_words.csv")

	// Bad output settings are refused before anything starts (no state is created).
	for _, args := range [][]string{
		{"--output-format", "xlsx"},
		{"-o", "cards.apkg", "--deck", "a::::b"},
	} {
		_, stderr, code := flashpipeCmd(t, dir, append([]string{"run", file, "--quiet"}, args...)...)
		if code != 2 || !strings.Contains(stderr, "apkg") && !strings.Contains(stderr, "--deck") {
			t.Fatalf("run %v: exit %d, want 2 naming the problem\n%s", args, code, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, ".flashpipe")); err == nil {
			t.Fatalf("run %v started the pipeline before refusing", args)
		}
	}

	var sum summary
	if err := json.Unmarshal([]byte(runOK(t, dir, "run", file, "-o", "cards.tsv", "--json", "--quiet")), &sum); err != nil {
		t.Fatal(err)
	}
	// run -o - writes the flashcards alone on stdout (the summary goes to stderr).
	tsv, err := os.ReadFile(filepath.Join(dir, "cards.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	if out := runOK(t, dir, "run", file, "-o", "-", "--quiet"); out != string(tsv) {
		t.Fatalf("run -o - printed something else than the TSV:\n%.300s", out)
	}
	list := runOK(t, dir, "export", "--list-formats")
	for _, f := range export.Formats() {
		if !strings.Contains(list, f.Name) || !strings.Contains(list, f.Ext) {
			t.Errorf("--list-formats lacks %s:\n%s", f.Name, list)
		}
	}
	for _, f := range export.Formats() {
		out := "all" + f.Ext
		runOK(t, dir, "export", "--batch", sum.BatchID, "-o", out)
		byName := runOK(t, dir, "export", "--batch", sum.BatchID, "--format", f.Name, "-o", "-")
		data, err := os.ReadFile(filepath.Join(dir, out))
		if err != nil {
			t.Fatal(err)
		}
		if f.Name != "apkg" && byName != string(data) {
			t.Errorf("%s: stdout differs from the file inferred from %s", f.Name, out)
		}
		var records int
		switch f.Name {
		case "apkg":
			records = len(ankitest.Open(t, filepath.Join(dir, out)).Notes)
		case "csv", "failed":
			recs, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
			if err != nil {
				t.Fatalf("%s: %v", f.Name, err)
			}
			records = len(recs) - 1
		case "tsv":
			records = strings.Count(string(data), "\n") - 1
		case "anki-tsv":
			records = strings.Count(string(data), "\n") - strings.Count(string(data), "\n#") - 1
		case "jsonl", "items-jsonl":
			records = strings.Count(string(data), "\n")
		}
		want := map[string]int{"items-jsonl": 5, "failed": 0}[f.Name]
		if _, ok := map[string]int{"items-jsonl": 5, "failed": 0}[f.Name]; !ok {
			want = 15
		}
		if records != want {
			t.Errorf("%s: %d records, want %d", f.Name, records, want)
		}
	}

	_, stderr, code := flashpipeCmd(t, dir, "export", "--batch", sum.BatchID, "--format", "xlsx")
	if code != 2 || !strings.Contains(stderr, `unknown format "xlsx"`) {
		t.Fatalf("unknown format: exit %d\n%s", code, stderr)
	}
	if _, stderr, code = flashpipeCmd(t, dir, "export"); code != 2 || !strings.Contains(stderr, "--batch") {
		t.Fatalf("export without --batch: exit %d\n%s", code, stderr)
	}

	// /dev/null is written through, never replaced (internal/outfile's tests prove
	// it on a device of their own first).
	before, err := os.Stat(os.DevNull)
	if err != nil || before.Mode()&fs.ModeCharDevice == 0 {
		t.Skipf("%s is not a character device here: %v", os.DevNull, err)
	}
	for _, format := range []string{"tsv", "apkg"} {
		runOK(t, dir, "export", "--batch", sum.BatchID, "--format", format, "-o", os.DevNull)
	}
	after, err := os.Stat(os.DevNull)
	if err != nil || after.Mode() != before.Mode() || after.Sys().(*syscall.Stat_t).Rdev != before.Sys().(*syscall.Stat_t).Rdev {
		t.Fatalf("%s after export: %v %v (before: %v)", os.DevNull, after.Mode(), err, before.Mode())
	}
}

// Items that failed are in the failed-items report and not in the package; once a
// retry fixes them, the package adds exactly their notes and changes no other.
func TestFailedReportAndRetryIntoPackage(t *testing.T) {
	t.Parallel()
	items := loadItems(t, "../../examples/vocabulary_1000.csv")[:30]
	bad := map[string]int{items[4].Term: 400, items[20].Term: 400}
	p := newPipeline(t, llmsim.Config{Faults: llmsim.Faults{FailTerms: bad}})
	p.startAll()
	p.submit("fails", items)
	st := p.waitStored("fails", time.Minute)
	dir := t.TempDir()
	exportTo := func(name, format string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := writeStored(context.Background(), p.store, st.Manifest, app.Output{Path: path, Format: format, Deck: "Korean"}, &summary{}); err != nil {
			t.Fatal(err)
		}
		return path
	}
	recs, err := csv.NewReader(strings.NewReader(readFile(t, exportTo("fails.csv", "failed")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[1][0] != "5" || recs[1][1] != items[4].Term || recs[1][2] != "stage1" || !strings.Contains(recs[1][3], "400") ||
		recs[1][5] == "" || recs[2][0] != "21" {
		t.Fatalf("failed-items report:\n%q", recs)
	}
	col := ankitest.NewCollection()
	if log := col.Import(ankitest.Open(t, exportTo("v1.apkg", ""))); log.Added != 84 {
		t.Fatalf("first import %+v, want 28 x 3 notes", log)
	}

	if err := p.sim.SetFaults(llmsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.pub.Retry(context.Background(), "fails"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st, err = app.WaitStored(ctx, p.store, "fails", 1); err != nil || st.Failed != 0 {
		t.Fatalf("after retry %+v, %v", st, err)
	}
	log := col.Import(ankitest.Open(t, exportTo("v2.apkg", "apkg")))
	if log.Added != 6 || log.Updated != 0 || log.Duplicate != 84 {
		t.Fatalf("import after retry %+v, want the 6 notes of the 2 retried items added, nothing else changed", log)
	}
	if recs, _ := csv.NewReader(strings.NewReader(readFile(t, exportTo("fails2.csv", "failed")))).ReadAll(); len(recs) != 1 {
		t.Fatalf("failed-items report after the retry: %q", recs)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
