package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/llmsim"
)

const fiveWords = "../examples/test_5_words.csv"

func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// followNDJSON reads a batch's results stream (JSON Lines) to its end; every line
// must match the document's Result schema.
func (e *env) followNDJSON(id string) []flashpipe.Result {
	e.t.Helper()
	resp := e.do("GET", "/v1/batches/"+id+"/results", adminToken, "", nil)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		body, _ := io.ReadAll(resp.Body)
		e.t.Fatalf("results of %s: %d %s: %s", id, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var out []flashpipe.Result
	err := lines(e.t, resp.Body, func(line []byte) {
		matches(e.t, "Result", line)
		var r flashpipe.Result
		if err := json.Unmarshal(line, &r); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, r)
	})
	if err != nil {
		e.t.Fatalf("results of %s: the stream broke: %v", id, err)
	}
	return out
}

// inOrder checks that results are seq 1..n, ascending, without gap.
func inOrder(t *testing.T, rs []flashpipe.Result, n int) {
	t.Helper()
	if len(rs) != n {
		t.Fatalf("%d results, want %d", len(rs), n)
	}
	for i, r := range rs {
		if r.Seq != i+1 {
			t.Fatalf("result %d has seq %d: not in order", i, r.Seq)
		}
	}
}

func TestSubmitCSVJSONLinesAndJSONThenFollowToTheEnd(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})

	// CSV, named like the file: the same default batch id as `flashpipe submit`.
	sub := e.submitFile(fiveWords, "?source=test_5_words.csv", http.StatusCreated)
	parsed, err := ingest.ParseFile(fiveWords, ingest.ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := app.DefaultBatchID("test_5_words.csv", flashpipe.HashItems(parsed.Items)); sub.BatchID != want || sub.Items != 5 || sub.Published != 5 || sub.Resubmitted {
		t.Fatalf("CSV submit %+v, want batch %s of 5 items published", sub, want)
	}
	inOrder(t, e.followNDJSON(sub.BatchID), 5)

	// JSON Lines.
	jsonl := filepath.Join(t.TempDir(), "words.jsonl")
	if err := os.WriteFile(jsonl, []byte(`{"position":1,"term":"물","type":"n","metadata":{"def":"water"}}
{"position":2,"term":"불"}
{"position":5,"term":"바람","type":"noun","level":3}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	sub = e.submitFile(jsonl, "?batch_id=jsonl-1&source=words.jsonl", http.StatusCreated)
	if sub.BatchID != "jsonl-1" || sub.Items != 3 {
		t.Fatalf("JSON Lines submit %+v", sub)
	}
	rs := e.followNDJSON("jsonl-1")
	inOrder(t, rs, 3)
	if rs[2].Position != 5 || rs[2].Metadata["level"] != "3" || rs[0].Metadata["def"] != "water" {
		t.Fatalf("JSON Lines items not kept: %+v", rs)
	}

	// A JSON body, with a tenant and a priority.
	body := `{"batch_id":"json-1","source":"crm","tenant":"team-a","priority":2,"items":[{"term":"사과","type":"n"},{"term":"물"}]}`
	e.call("POST", "/v1/batches", adminToken, "application/json", strings.NewReader(body), http.StatusCreated, &sub)
	if sub.Tenant != "team-a" || sub.Priority != 2 || sub.Items != 2 {
		t.Fatalf("JSON submit %+v", sub)
	}
	inOrder(t, e.followNDJSON("json-1"), 2)
	e.p.WaitStored("json-1", 0, 30*time.Second)
	var d httpapi.BatchDetail
	e.call("GET", "/v1/batches/json-1", adminToken, "", nil, http.StatusOK, &d)
	if d.State != flashpipe.BatchComplete || d.Source != "crm" || d.Tenant != "team-a" || d.Priority != 2 || d.OK != 2 ||
		d.Usage.Stage1Calls == 0 || len(d.Services) != 3 {
		t.Fatalf("status %+v", d)
	}

	var list struct{ Batches []httpapi.Batch }
	e.call("GET", "/v1/batches?limit=10", adminToken, "", nil, http.StatusOK, &list)
	var ids []string
	for _, b := range list.Batches {
		ids = append(ids, b.BatchID)
	}
	slices.Sort(ids)
	if want := []string{"json-1", "jsonl-1", sub.BatchID}; len(ids) != 3 || !slices.Contains(ids, "jsonl-1") || !slices.Contains(ids, "json-1") {
		t.Fatalf("list %v, want %v", ids, want)
	}
}

func TestBadInputIsRefusedRowByRowAndPublishesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	data, err := os.ReadFile("../internal/ingest/testdata/bad_rows.csv")
	if err != nil {
		t.Fatal(err)
	}
	var got httpapi.Error
	e.call("POST", "/v1/batches?source=bad_rows.csv", adminToken, "text/csv", bytes.NewReader(data), http.StatusUnprocessableEntity, &got)
	// The rows and reasons of `flashpipe submit` (ingest.ParseFile), line by line.
	_, perr := ingest.ParseFile("../internal/ingest/testdata/bad_rows.csv", ingest.ParseOptions{})
	var pe *ingest.ParseError
	if !errors.As(perr, &pe) || len(pe.Rows) == 0 {
		t.Fatalf("the file is not bad: %v", perr)
	}
	if len(got.Rows) != len(pe.Rows) {
		t.Fatalf("rows %+v, want %+v", got.Rows, pe.Rows)
	}
	for i, r := range pe.Rows {
		if got.Rows[i].Line != r.Line || got.Rows[i].Reason != r.Reason {
			t.Errorf("row %d: %+v, want line %d: %s", i, got.Rows[i], r.Line, r.Reason)
		}
	}
	if !strings.Contains(got.Message, "bad rows") || !strings.Contains(got.Message, "nothing was published") {
		t.Errorf("message %q", got.Message)
	}

	// A JSON body names the item.
	e.call("POST", "/v1/batches", adminToken, "application/json",
		strings.NewReader(`{"items":[{"term":"물"},{"term":"  ","type":"n"},{"term":"불","position":0}]}`), http.StatusUnprocessableEntity, &got)
	if len(got.Rows) != 2 || got.Rows[0].Field != "items[1]" || got.Rows[0].Line != 2 || got.Rows[0].Reason != "term is empty" ||
		got.Rows[1].Field != "items[2]" || !strings.Contains(got.Rows[1].Reason, "less than 1") {
		t.Fatalf("JSON body rows %+v", got.Rows)
	}

	for _, c := range []struct {
		name, query, ctype, body string
		status                   int
		field, msg               string
	}{
		{"unknown field", "", "application/json", `{"items":[{"term":"물"}],"colour":"red"}`, 400, "colour", "unknown field"},
		{"field type", "", "application/json", `{"items":[{"term":"물"}],"priority":"high"}`, 400, "priority", "integer"},
		{"not JSON", "", "application/json", `{"items":[`, 400, "", "not valid JSON"},
		{"empty JSON", "", "application/json", ``, 400, "", "empty"},
		{"no items", "", "application/json", `{"items":[]}`, 422, "", "empty"},
		{"bad batch id", "", "application/json", `{"batch_id":"no spaces","items":[{"term":"물"}]}`, 400, "batch_id", "batch id"},
		{"bad tenant", "", "application/json", `{"tenant":"a b","items":[{"term":"물"}]}`, 400, "tenant", "tenant"},
		{"content type", "", "text/plain", "term\n물\n", 415, "", "text/csv"},
		{"no content type", "", "", "term\n물\n", 415, "", "application/json"},
		{"bad priority", "?priority=high", "text/csv", "term\n물\n", 400, "priority", "not an integer"},
		{"priority out of range", "", "application/json", `{"priority":1001,"items":[{"term":"물"}]}`, 400, "priority", "-1000 to 1000"},
		{"bad replace", "?replace=maybe", "text/csv", "term\n물\n", 400, "replace", "true or false"},
		{"unknown parameter", "?batch=x", "text/csv", "term\n물\n", 400, "batch", "unknown parameter"},
		{"no term column", "", "text/csv", "word,kind\n물,n\n", 422, "", "term"},
	} {
		var got httpapi.Error
		e.call("POST", "/v1/batches"+c.query, adminToken, c.ctype, strings.NewReader(c.body), c.status, &got)
		if got.Field != c.field || !strings.Contains(got.Message, c.msg) {
			t.Errorf("%s: %+v, want field %q and a message with %q", c.name, got, c.field, c.msg)
		}
	}

	// Nothing of it was published, nothing paid for.
	st, err := e.p.JS.Stream(context.Background(), e.p.Contract.ItemsStream())
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := st.Info(context.Background()); info.State.Msgs != 0 {
		t.Fatalf("%d item messages published for refused batches", info.State.Msgs)
	}
	if n := e.p.Sim.Stats().Requests; n != 0 {
		t.Fatalf("%d API calls for refused batches", n)
	}
}

func TestAuthRefusesMissingAndWrongTokensAndLogsNoToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	const wrong = "wrong-token-with-enough-length-42"
	for _, c := range []struct {
		name, auth string
	}{{"none", ""}, {"wrong", "Bearer " + wrong}, {"basic", "Basic " + adminToken}, {"empty bearer", "Bearer "}} {
		for _, path := range []string{"/v1/batches", "/v1/batches/x", "/v1/batches/x/results"} {
			resp := e.do("GET", path, "", "", nil, "Authorization", c.auth)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s token, %s: %d %q", c.name, path, resp.StatusCode, body)
			}
			if strings.Contains(string(body), wrong) || strings.Contains(string(body), adminToken) {
				t.Errorf("%s token, %s: the answer holds the token: %s", c.name, path, body)
			}
		}
	}
	// A token is compared whole: a prefix or a longer string is not it.
	for _, tok := range []string{adminToken[:len(adminToken)-1], adminToken + "x"} {
		resp := e.do("GET", "/v1/batches", tok, "", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("token %d chars long: %d", len(tok), resp.StatusCode)
		}
	}
	e.call("POST", "/v1/batches", "", "text/csv", strings.NewReader("term\n물\n"), http.StatusUnauthorized, nil)
	e.call("POST", "/v1/batches/x/retry", "", "", nil, http.StatusUnauthorized, nil)
	e.call("GET", "/v1/batches", adminToken, "", nil, http.StatusOK, nil)
	e.call("GET", "/v1/batches", acmeToken, "", nil, http.StatusOK, nil)
	resp := e.do("GET", "/v1/batches", "", "", nil, "Authorization", "bearer "+adminToken) // the scheme is case-insensitive
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("lower-case bearer: %d", resp.StatusCode)
	}
	// Public: health and the document.
	e.call("GET", "/healthz", "", "", nil, http.StatusOK, nil)
	var doc map[string]any
	e.call("GET", "/v1/openapi.json", "", "", nil, http.StatusOK, &doc)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi.json: %v", doc["openapi"])
	}
	for _, secret := range []string{adminToken, acmeToken, wrong} {
		if strings.Contains(e.logs.String(), secret[:12]) {
			t.Fatalf("the log holds a token:\n%s", e.logs.String())
		}
	}
}

func TestBodyLimitAnswers413(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true, api: httpapi.Config{MaxBodyBytes: 4 << 10}})
	big := "term\n" + strings.Repeat("단어\n", 4<<10)
	var got httpapi.Error
	e.call("POST", "/v1/batches", adminToken, "text/csv", strings.NewReader(big), http.StatusRequestEntityTooLarge, &got)
	if !strings.Contains(got.Message, "4096 bytes") {
		t.Errorf("413 message %q", got.Message)
	}
	// Without a Content-Length (chunked), the limit is found while reading.
	for _, ct := range []string{"text/csv", "application/json"} {
		body := io.MultiReader(strings.NewReader(big)) // hides the length
		if ct == "application/json" {
			body = io.MultiReader(strings.NewReader(`{"items":[` + strings.Repeat(`{"term":"단어"},`, 1<<10) + `{"term":"끝"}]}`))
		}
		e.call("POST", "/v1/batches", adminToken, ct, body, http.StatusRequestEntityTooLarge, &got)
	}
}

func TestResubmissionIs200AndAnotherBatchUnderTheIDIs409(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	first := e.submitFile(fiveWords, "?batch_id=words&source=five.csv", http.StatusCreated)
	again := e.submitFile(fiveWords, "?batch_id=words&source=five.csv", http.StatusOK)
	if !again.Resubmitted || again.Published != 0 || again.BatchID != first.BatchID {
		t.Fatalf("resubmission %+v", again)
	}
	var got httpapi.Error
	e.call("POST", "/v1/batches?batch_id=words", adminToken, "text/csv", strings.NewReader("term\n물\n불\n"), http.StatusConflict, &got)
	if got.Field != "batch_id" || got.Original == nil || got.Original.Items != 5 || got.Original.Source != "five.csv" ||
		!strings.Contains(got.Message, "replace=true") {
		t.Fatalf("409 %+v (original %+v)", got, got.Original)
	}
	// Replace: refused while the batch runs, done once it is complete.
	e.p.WaitStored("words", 0, 30*time.Second)
	var sub httpapi.Submitted
	e.call("POST", "/v1/batches?batch_id=words&replace=true", adminToken, "text/csv", strings.NewReader("term\n물\n불\n"), http.StatusCreated, &sub)
	if !sub.Replaced || sub.Generation != 1 || sub.Items != 2 {
		t.Fatalf("replacement %+v", sub)
	}
	inOrder(t, e.followNDJSON("words"), 2)
}

func TestFollowResultsAndProgressAsServerSentEvents(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{sim: llmsim.Config{Latency: 5 * time.Millisecond, LatencyJitter: 20 * time.Millisecond}})
	var items []map[string]any
	for i := 1; i <= 40; i++ {
		items = append(items, map[string]any{"position": i * 10, "term": fmt.Sprintf("단어%d", i)})
	}
	body, _ := json.Marshal(map[string]any{"batch_id": "sse", "items": items})
	e.call("POST", "/v1/batches", adminToken, "application/json", bytes.NewReader(body), http.StatusCreated, nil)

	// The results, in order, then the completion.
	resp := e.do("GET", "/v1/batches/sse/results", adminToken, "", nil, "Accept", "text/event-stream")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("results: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	evs := events(t, resp.Body)
	resp.Body.Close()
	if len(evs) != 41 {
		t.Fatalf("%d events, want 40 results and the completion", len(evs))
	}
	for i, ev := range evs[:40] {
		if ev.name != "result" || ev.id != fmt.Sprint(i+1) {
			t.Fatalf("event %d: %s id %s", i, ev.name, ev.id)
		}
		matches(t, "Result", []byte(ev.data))
	}
	last := evs[40]
	matches(t, "Completed", []byte(last.data))
	var done httpapi.Completed
	if err := json.Unmarshal([]byte(last.data), &done); last.name != "complete" || err != nil || done.OK != 40 || done.Cards != 120 || done.CostUSD <= 0 {
		t.Fatalf("last event %s %s", last.name, last.data)
	}

	// A client that reconnects with the last id it received gets the rest.
	resp = e.do("GET", "/v1/batches/sse/results", adminToken, "", nil, "Accept", "text/event-stream", "Last-Event-ID", "38")
	evs = events(t, resp.Body)
	resp.Body.Close()
	if len(evs) != 3 || evs[0].id != "39" || evs[1].id != "40" || evs[2].name != "complete" {
		t.Fatalf("resumed after 38: %+v", evs)
	}

	// The progress: snapshots, then the completion once stored.
	resp = e.do("GET", "/v1/batches/sse/progress", adminToken, "", nil, "Accept", "text/event-stream")
	evs = events(t, resp.Body)
	resp.Body.Close()
	if len(evs) < 2 || evs[len(evs)-1].name != "complete" {
		t.Fatalf("progress events %+v", evs)
	}
	for _, ev := range evs {
		matches(t, "Progress", []byte(ev.data))
	}
	var p httpapi.Progress
	_ = json.Unmarshal([]byte(evs[len(evs)-1].data), &p)
	if !p.Complete || !p.Stored || p.Done != 40 || p.Expected != 40 || p.Percent != 100 || p.CostUSD <= 0 ||
		p.ETASeconds == nil || *p.ETASeconds != 0 {
		t.Fatalf("last progress %+v", p)
	}
	// As JSON Lines, the last snapshot is the stored one.
	resp = e.do("GET", "/v1/batches/sse/progress", adminToken, "", nil)
	var snaps []httpapi.Progress
	_ = lines(t, resp.Body, func(b []byte) {
		matches(t, "Progress", b)
		var s httpapi.Progress
		_ = json.Unmarshal(b, &s)
		snaps = append(snaps, s)
	})
	resp.Body.Close()
	if len(snaps) == 0 || !snaps[len(snaps)-1].Stored {
		t.Fatalf("progress lines %+v", snaps)
	}
}

func TestExportEveryFormat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{sim: llmsim.Config{Faults: llmsim.Faults{FailTerms: map[string]int{"그": 400}}}})
	sub := e.submitFile(fiveWords, "?batch_id=five&source=test_5_words.csv", http.StatusCreated)
	status := e.p.WaitStored(sub.BatchID, 0, 30*time.Second)
	if status.Failed != 1 {
		t.Fatalf("status %+v, want one failed item", status)
	}
	for _, f := range export.Formats() {
		resp := e.do("GET", "/v1/batches/five/export?format="+f.Name, adminToken, "", nil)
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %s", f.Name, resp.StatusCode, got)
		}
		if cd := resp.Header.Get("Content-Disposition"); cd != fmt.Sprintf("attachment; filename=%q", "five"+f.Ext) {
			t.Errorf("%s: Content-Disposition %q", f.Name, cd)
		}
		if f.Name == "apkg" {
			if !bytes.HasPrefix(got, []byte("PK\x03\x04")) {
				t.Errorf("apkg is not a zip: % x", got[:min(len(got), 8)])
			}
			continue
		}
		// The same bytes as `flashpipe export` writes from the store.
		var want bytes.Buffer
		w, err := app.Output{Format: f.Name}.NewWriter(&want, status.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.p.Store.Results(context.Background(), "five", flashpipe.ResultFilter{}, w.Write); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: the export differs from the store's:\n%.500s\nwant\n%.500s", f.Name, got, want.Bytes())
		}
	}
	var bad httpapi.Error
	e.call("GET", "/v1/batches/five/export?format=xlsx", adminToken, "", nil, http.StatusBadRequest, &bad)
	if bad.Field != "format" || !strings.Contains(bad.Message, "tsv") {
		t.Errorf("unknown format: %+v", bad)
	}
	e.call("GET", "/v1/batches/five/export?format=apkg&deck=a::::b", adminToken, "", nil, http.StatusBadRequest, &bad)
	if bad.Field != "deck" {
		t.Errorf("bad deck: %+v", bad)
	}
	e.call("GET", "/v1/batches/nope/export", adminToken, "", nil, http.StatusNotFound, nil)
}

func TestExportOfABatchNotCompleteIs409UnlessPartial(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	e.submitFile(fiveWords, "?batch_id=waiting", http.StatusCreated)
	var got httpapi.Error
	e.call("GET", "/v1/batches/waiting/export", adminToken, "", nil, http.StatusConflict, &got)
	if !strings.Contains(got.Message, "wait") {
		t.Errorf("409 %+v", got)
	}
	var d httpapi.BatchDetail
	e.call("GET", "/v1/batches/waiting", adminToken, "", nil, http.StatusOK, &d)
	if d.State != httpapi.StateSubmitted || d.Items != 5 || d.Done != 0 {
		t.Errorf("status of a batch not stored yet: %+v", d)
	}
	e.call("POST", "/v1/batches/waiting/retry", adminToken, "", nil, http.StatusConflict, &got)
}

func TestRetryRunsTheFailedItemsAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{sim: llmsim.Config{Faults: llmsim.Faults{FailTerms: map[string]int{"물": 400}}}})
	e.call("POST", "/v1/batches", adminToken, "application/json",
		strings.NewReader(`{"batch_id":"r","items":[{"term":"불"},{"term":"물","type":"n"},{"term":"바람"}]}`), http.StatusCreated, nil)
	rs := e.followNDJSON("r")
	if rs[1].Status != flashpipe.StatusFailed || rs[1].Failure == nil {
		t.Fatalf("item 2 %+v, want failed", rs[1])
	}
	e.p.WaitStored("r", 0, 30*time.Second)
	var failed struct {
		FailedItems []app.FailedItem `json:"failed_items"`
	}
	e.call("GET", "/v1/batches/r/failed", adminToken, "", nil, http.StatusOK, &failed)
	if len(failed.FailedItems) != 1 || failed.FailedItems[0].Term != "물" || failed.FailedItems[0].Stage != "stage1" ||
		failed.FailedItems[0].Reason == "" || failed.FailedItems[0].NextStep == "" {
		t.Fatalf("failed items %+v", failed.FailedItems)
	}

	if err := e.p.Sim.SetFaults(llmsim.Faults{}); err != nil { // the cause is fixed
		t.Fatal(err)
	}
	var retried httpapi.Retried
	e.call("POST", "/v1/batches/r/retry", adminToken, "", nil, http.StatusAccepted, &retried)
	if retried.Generation != 1 || retried.Items != 1 {
		t.Fatalf("retry %+v", retried)
	}
	var again httpapi.Error
	e.call("POST", "/v1/batches/r/retry", adminToken, "", nil, http.StatusConflict, &again) // running
	rs = e.followNDJSON("r")
	inOrder(t, rs, 3)
	for _, r := range rs {
		if r.Status != flashpipe.StatusOK {
			t.Fatalf("after the retry: %+v", r)
		}
	}
	st := e.p.WaitStored("r", 1, 30*time.Second)
	if st.Failed != 0 || st.OK != 3 {
		t.Fatalf("stored after the retry: %+v", st)
	}
	e.call("POST", "/v1/batches/r/retry", adminToken, "", nil, http.StatusConflict, &again)
	if !strings.Contains(again.Message, "no failed items") {
		t.Errorf("nothing to retry: %+v", again)
	}
	e.call("POST", "/v1/batches/nope/retry", adminToken, "", nil, http.StatusNotFound, nil)
	e.call("POST", "/v1/batches/bad%20id/retry", adminToken, "", nil, http.StatusBadRequest, nil)
}

func TestTenantTokensStampAndSeeTheirOwnBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	var sub httpapi.Submitted
	e.call("POST", "/v1/batches", acmeToken, "application/json", strings.NewReader(`{"batch_id":"a1","items":[{"term":"물"}]}`), http.StatusCreated, &sub)
	if sub.Tenant != "acme" {
		t.Fatalf("a tenant token's batch has tenant %q", sub.Tenant)
	}
	var got httpapi.Error
	e.call("POST", "/v1/batches", acmeToken, "application/json", strings.NewReader(`{"tenant":"other","items":[{"term":"불"}]}`), http.StatusForbidden, &got)
	if got.Field != "tenant" {
		t.Errorf("403 %+v", got)
	}
	var admin httpapi.Submitted
	e.call("POST", "/v1/batches?batch_id=b1", adminToken, "text/csv", strings.NewReader("term\n불\n"), http.StatusCreated, &admin)
	if admin.Tenant != "" {
		t.Fatalf("an unrestricted token's batch has tenant %q", admin.Tenant)
	}
	// Another tenant's batch does not exist for acme; its id is used all the same.
	for _, path := range []string{"/v1/batches/b1", "/v1/batches/b1/results", "/v1/batches/b1/export", "/v1/batches/b1/failed"} {
		e.call("GET", path, acmeToken, "", nil, http.StatusNotFound, nil)
	}
	e.call("POST", "/v1/batches/b1/retry", acmeToken, "", nil, http.StatusNotFound, nil)
	e.call("POST", "/v1/batches?batch_id=b1&replace=true", acmeToken, "text/csv", strings.NewReader("term\n비\n"), http.StatusConflict, &got)
	if got.Original != nil {
		t.Errorf("a 409 tells acme of another tenant's batch: %+v", got.Original)
	}
	e.call("GET", "/v1/batches/a1", adminToken, "", nil, http.StatusOK, nil)
	e.call("GET", "/v1/batches/a1", acmeToken, "", nil, http.StatusOK, nil)
}

func TestTenantListShowsOnlyItsBatches(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	e.call("POST", "/v1/batches", acmeToken, "application/json", strings.NewReader(`{"batch_id":"a1","items":[{"term":"물"}]}`), http.StatusCreated, nil)
	e.call("POST", "/v1/batches", adminToken, "application/json", strings.NewReader(`{"batch_id":"b1","items":[{"term":"불"}]}`), http.StatusCreated, nil)
	e.p.WaitStored("a1", 0, 30*time.Second)
	e.p.WaitStored("b1", 0, 30*time.Second)
	var list struct{ Batches []httpapi.Batch }
	e.call("GET", "/v1/batches", acmeToken, "", nil, http.StatusOK, &list)
	if len(list.Batches) != 1 || list.Batches[0].BatchID != "a1" || list.Batches[0].Tenant != "acme" {
		t.Fatalf("acme's list %+v", list.Batches)
	}
	e.call("GET", "/v1/batches", adminToken, "", nil, http.StatusOK, &list)
	if len(list.Batches) != 2 {
		t.Fatalf("the unrestricted list %+v", list.Batches)
	}
	e.call("GET", "/v1/batches?limit=0", adminToken, "", nil, http.StatusBadRequest, nil)
}

func TestUnknownRoutesAndMethodsAnswerJSON(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	var got httpapi.Error
	e.call("GET", "/v1/nothing", adminToken, "", nil, http.StatusNotFound, &got)
	if !strings.Contains(got.Message, "openapi.json") {
		t.Errorf("404 %+v", got)
	}
	resp := e.do("DELETE", "/v1/batches", adminToken, "", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, POST" || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("DELETE /v1/batches: %d Allow %q %s", resp.StatusCode, resp.Header.Get("Allow"), resp.Header.Get("Content-Type"))
	}
	e.call("GET", "/v1/batches/nope", adminToken, "", nil, http.StatusNotFound, &got)
	if got.Message != `batch "nope" not found` {
		t.Errorf("404 %q", got.Message)
	}
}

func TestOpenServerOnlyOnLoopback(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	for _, addr := range []string{"0.0.0.0:0", ":0"} {
		srv, err := httpapi.New(e.p.Client, httpapi.Config{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if url, err := srv.Start(); !errors.Is(err, httpapi.ErrOpenOnNetwork) {
			_ = srv.Close()
			t.Fatalf("%s without a token: started at %s (err %v)", addr, url, err)
		}
	}
	// With a token it serves any address; without one, loopback, open.
	srv, err := httpapi.New(e.p.Client, httpapi.Config{Addr: "0.0.0.0:0", Tokens: []httpapi.Token{{Secret: adminToken}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	_ = srv.Close()
	open, err := httpapi.New(e.p.Client, httpapi.Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	url, err := open.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	resp, err := http.Get(url + "/v1/batches")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("open server: %d", resp.StatusCode)
	}
	if _, err := httpapi.New(e.p.Client, httpapi.Config{Tokens: []httpapi.Token{{Secret: "short"}}}); err == nil {
		t.Fatal("a short token was accepted")
	}
}
