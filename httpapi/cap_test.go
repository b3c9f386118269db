package httpapi_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// A batch submitted over HTTP with max_cost pauses at its cap; GET .../cap says so
// (and matches the document), PUT .../cap raises it and the batch completes. Bad caps
// are refused naming max_cost; another tenant's batch is not found.
func TestBatchCapOverHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	var items []string
	for i := range 20 {
		items = append(items, fmt.Sprintf(`{"term":"돈%d"}`, i))
	}
	e.call("POST", "/v1/batches", adminToken, "application/json",
		strings.NewReader(`{"batch_id":"capped","max_cost":0.05,"items":[`+strings.Join(items, ",")+`]}`), http.StatusCreated, nil)
	var a app.SpendAccount
	natstest.Eventually(t, 30*time.Second, func() bool {
		e.call("GET", "/v1/batches/capped/cap", adminToken, "", nil, http.StatusOK, &a)
		return a.Paused && a.HeldUSD == 0
	}, "the batch never paused at its cap")
	if !a.Capped || a.CapUSD != 0.05 || a.CapBy != "manifest" || a.SpentUSD > 0.05 || a.BatchID != "capped" {
		t.Fatalf("account %+v", a)
	}
	if billed := e.p.Sim.Stats().Cost; billed > 0.05 {
		t.Fatalf("the simulator billed $%.6f past the cap $0.05", billed)
	}
	// The progress stream says why the batch does not move.
	resp := e.do("GET", "/v1/batches/capped/progress", adminToken, "", nil)
	saw := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var pr httpapi.Progress
			if json.Unmarshal(sc.Bytes(), &pr) == nil && pr.Paused != "" {
				saw <- pr.Paused
				return
			}
		}
	}()
	select {
	case reason := <-saw:
		if !strings.Contains(reason, "paused: spend cap $0.05 reached") {
			t.Fatalf("progress says %q", reason)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the progress stream never said the batch is paused")
	}
	resp.Body.Close()
	var bad httpapi.Error
	for _, body := range []string{`{"max_cost":-1}`, `{"max_cost":0}`, `{}`, `{"max_cost":"5"}`} {
		e.call("PUT", "/v1/batches/capped/cap", adminToken, "application/json", strings.NewReader(body), http.StatusBadRequest, &bad)
		if bad.Field != "max_cost" {
			t.Fatalf("%s: %+v", body, bad)
		}
	}
	e.call("GET", "/v1/batches/capped/cap", acmeToken, "", nil, http.StatusNotFound, &bad)
	e.call("GET", "/v1/batches/nosuch/cap", adminToken, "", nil, http.StatusNotFound, &bad)
	e.call("POST", "/v1/batches?max_cost=abc", adminToken, "text/csv", strings.NewReader("term\n물\n"), http.StatusBadRequest, &bad)
	if bad.Field != "max_cost" {
		t.Fatalf("max_cost=abc: %+v", bad)
	}

	e.call("PUT", "/v1/batches/capped/cap", adminToken, "application/json", strings.NewReader(`{"max_cost":50}`), http.StatusOK, &a)
	if a.Paused || a.CapUSD != 50 || a.CapBy != "command" {
		t.Fatalf("after raising: %+v", a)
	}
	if st := e.p.WaitStored("capped", 0, time.Minute); st.OK != 20 || st.Failed != 0 {
		t.Fatalf("after raising the cap: %d ok, %d failed", st.OK, st.Failed)
	}
	// A batch without a cap answers capped false.
	e.call("POST", "/v1/batches", adminToken, "application/json", strings.NewReader(`{"batch_id":"free","items":[{"term":"불"}]}`), http.StatusCreated, nil)
	e.call("GET", "/v1/batches/free/cap", adminToken, "", nil, http.StatusOK, &a)
	if a.Capped || a.BatchID != "free" {
		t.Fatalf("uncapped batch: %+v", a)
	}
}
