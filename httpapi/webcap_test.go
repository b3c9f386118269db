package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/ingest"
	"github.com/flashpipe/flashpipe/internal/processor"
	"github.com/flashpipe/flashpipe/internal/sequencer"
	"github.com/flashpipe/flashpipe/internal/sink"
)

// capOf is the batch's cap as the app layer has it (0 without one).
func (e *env) capOf(id string) float64 {
	e.t.Helper()
	a, ok, err := e.p.Client.BatchSpend(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	if !ok {
		return 0
	}
	return a.CapUSD
}

// The batch page's cap form: it needs the CSRF token, refuses a bad amount on the
// page with the reason and the value sent (changing nothing), and sets a good one
// through the app layer. The list shows each batch's mode.
func TestTheCapFormSetsTheCapFromTheBatchPage(t *testing.T) {
	t.Parallel()
	// No processor: the batches wait, listed (a batch-mode processor would hold
	// the test's end for its provider batch).
	e := newEnv(t, envConfig{noStart: true})
	e.p.StartSequencer(sequencer.Config{})
	e.p.StartSink(sink.Config{})
	e.submitFile(fiveWords, "?batch_id=formcap&api_mode=batch", http.StatusCreated)
	e.submitFile(fiveWords, "?batch_id=plain", http.StatusCreated)
	p := e.page()
	p.form("/ui/login", url.Values{"token": {adminToken}})
	status, page := p.get("/ui/batches/formcap")
	if status != http.StatusOK || !strings.Contains(page, `id="spend"`) || !strings.Contains(page, "No spend cap") ||
		!strings.Contains(page, `action="/ui/batches/formcap/cap"`) {
		t.Fatalf("batch page: %d\n%s", status, page)
	}
	csrf := csrfOf(t, page)

	for name, c := range map[string]struct {
		values url.Values
		header []string
	}{
		"no CSRF token": {url.Values{"max_cost": {"5"}}, nil},
		"a wrong one":   {url.Values{"max_cost": {"5"}, "csrf": {strings.Repeat("0", 64)}}, nil},
		"cross-site":    {url.Values{"max_cost": {"5"}, "csrf": {csrf}}, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		if resp, _ := p.form("/ui/batches/formcap/cap", c.values, c.header...); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	// Without a session: the login page, nothing set.
	if resp, _ := e.page().form("/ui/batches/formcap/cap", url.Values{"max_cost": {"5"}, "csrf": {csrf}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a session: %d, want 401", resp.StatusCode)
	}
	if c := e.capOf("formcap"); c != 0 {
		t.Fatalf("a cap was set without the CSRF token or a session: %v", c)
	}

	for _, bad := range []string{"abc", "0", "-3", "1e3", "2000000000", ""} {
		resp, body := p.form("/ui/batches/formcap/cap", url.Values{"max_cost": {bad}, "csrf": {csrf}})
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, `data-field="cap-error"`) ||
			!strings.Contains(body, "max_cost: ") || !strings.Contains(body, fmt.Sprintf(`name="max_cost" value="%s"`, bad)) ||
			!strings.Contains(body, `id="progress"`) {
			t.Errorf("%q: %d, want the batch page refusing it:\n%s", bad, resp.StatusCode, body)
		}
	}
	if c := e.capOf("formcap"); c != 0 {
		t.Fatalf("a bad cap was set: %v", c)
	}

	// Another tenant's session cannot set it.
	acme := e.page()
	acme.form("/ui/login", url.Values{"token": {acmeToken}})
	_, up := acme.get("/ui/upload")
	if resp, _ := acme.form("/ui/batches/formcap/cap", url.Values{"max_cost": {"9"}, "csrf": {csrfOf(t, up)}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("another tenant's cap form: %d, want 404", resp.StatusCode)
	}

	resp, _ := p.form("/ui/batches/formcap/cap", url.Values{"max_cost": {" $3.50 "}, "csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/batches/formcap?notice=cap" {
		t.Fatalf("a good cap: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if c := e.capOf("formcap"); c != 3.5 {
		t.Fatalf("the app layer has cap %v, want 3.5", c)
	}
	_, page = p.get("/ui/batches/formcap?notice=cap")
	for _, want := range []string{"Spend cap set", `<span data-field="cap">$3.50</span>`, `data-field="cap-state">within cap`, "Cap set by command"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page after setting the cap lacks %q:\n%s", want, page)
		}
	}

	var b httpapi.BatchDetail
	e.call("GET", "/v1/batches/formcap", adminToken, "", nil, http.StatusOK, &b)
	if b.APIMode != flashpipe.APIModeBatch {
		t.Fatalf("api_mode %q, want batch", b.APIMode)
	}
	var list string
	eventually(t, 30*time.Second, func() bool {
		_, list = p.get("/ui/")
		return strings.Contains(list, ">plain</a>") && strings.Contains(list, ">formcap</a>")
	}, "the batches never came in the list")
	for _, want := range []string{`<a href="/ui/batches/formcap">formcap</a>`, `data-field="mode">batch<`, `data-field="mode">default<`, "<th>Mode</th>"} {
		if !strings.Contains(list, want) {
			t.Errorf("the list lacks %q", want)
		}
	}
}

// A batch over its max_cost pauses at the cap; the page shows the pause and its
// reason, and raising the cap from the page lets it finish.
func TestThePageShowsAPauseAtTheCapAndRaisingItResumes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	for range 2 {
		e.p.StartProcessor(e.p.ProcessorConfig(processor.Config{CapDelay: 100 * time.Millisecond, ConcurrentMax: 20}))
	}
	e.p.StartSequencer(sequencer.Config{})
	e.p.StartSink(sink.Config{})
	ctx := context.Background()
	items := make([]flashpipe.Item, 30)
	for i := range items {
		items[i] = flashpipe.Item{Position: int64(i + 1), Term: fmt.Sprintf("돈%d", i), Type: "n"}
	}
	if _, err := e.p.Client.Submit(ctx, ingest.Batch{ID: "paused", Items: ingest.SliceItems(items),
		Settings: map[string]string{flashpipe.SettingMaxCost: "0.1"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() bool {
		a, ok, err := e.p.Client.BatchSpend(ctx, "paused")
		return err == nil && ok && a.Paused && a.HeldUSD == 0
	}, "the batch never paused at its cap")

	p := e.page()
	p.form("/ui/login", url.Values{"token": {adminToken}})
	// The pause can lift for a moment while the set-aside items are tried again (and
	// refused again): wait for the page to show it.
	var status int
	var page string
	eventually(t, 30*time.Second, func() bool {
		status, page = p.get("/ui/batches/paused")
		return strings.Contains(page, `data-field="cap-state">paused at cap`)
	}, "the page never showed the pause")
	for _, want := range []string{`data-field="cap-state">paused at cap`, `data-field="cap-reason">paused: spend cap $0.10 reached`,
		`<span data-field="cap">$0.10</span>`, "Cap set by manifest", "Raise or set the cap"} {
		if !strings.Contains(page, want) {
			t.Errorf("the paused batch's page (%d) lacks %q:\n%s", status, want, page)
		}
	}
	var sp app.SpendAccount
	e.call("GET", "/v1/batches/paused/cap", adminToken, "", nil, http.StatusOK, &sp)
	if data, _ := json.Marshal(sp); !sp.Paused || sp.PausedSince.IsZero() || sp.SpentUSD > 0.1 {
		t.Fatalf("the paused account: %s", data)
	}
	resp, _ := p.form("/ui/batches/paused/cap", url.Values{"max_cost": {"50"}, "csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("raise: %d", resp.StatusCode)
	}
	st := e.p.WaitStored("paused", 0, time.Minute)
	if st.OK != len(items) || st.Failed != 0 {
		t.Fatalf("after raising the cap: %d ok, %d failed of %d", st.OK, st.Failed, len(items))
	}
	_, page = p.get("/ui/batches/paused")
	if !strings.Contains(page, `data-field="cap-state">within cap`) || !strings.Contains(page, `<span data-field="cap">$50.00</span>`) {
		t.Errorf("after raising: the page\n%s", page)
	}
}
