package httpapi_test

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/httpapi"
)

// page is a browser-like client of the pages: a cookie jar, no redirects followed.
type page struct {
	e      *env
	client *http.Client
}

func (e *env) page() *page {
	jar, _ := cookiejar.New(nil)
	return &page{e: e, client: &http.Client{Jar: jar, Transport: e.client.Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get returns a page's status and body.
func (p *page) get(path string) (int, string) {
	p.e.t.Helper()
	resp, err := p.client.Get(p.e.url + path)
	if err != nil {
		p.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// post posts a form (or a multipart body with its content type), with headers.
func (p *page) post(path, contentType string, body io.Reader, header ...string) *http.Response {
	p.e.t.Helper()
	req, _ := http.NewRequest("POST", p.e.url+path, body)
	req.Header.Set("Content-Type", contentType)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := p.client.Do(req)
	if err != nil {
		p.e.t.Fatal(err)
	}
	return resp
}

func (p *page) form(path string, values url.Values, header ...string) (*http.Response, string) {
	p.e.t.Helper()
	resp := p.post(path, "application/x-www-form-urlencoded", strings.NewReader(values.Encode()), header...)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// upload posts a file to the upload form.
func (p *page) upload(name, content, csrf string) (*http.Response, string) {
	p.e.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("csrf", csrf)
	fw, _ := mw.CreateFormFile("file", name)
	_, _ = fw.Write([]byte(content))
	_ = mw.Close()
	resp := p.post("/ui/upload", mw.FormDataContentType(), &buf)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	return m[1]
}

func TestPagesNeedALoginAndShowNothingWithout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{})
	sub := e.submitFile(fiveWords, "?batch_id=secret-batch", http.StatusCreated)
	e.p.WaitStored(sub.BatchID, 0, 30*time.Second)

	anon := e.page()
	_, login := anon.get("/ui/login")
	next := regexp.MustCompile(`name="next" value="[^"]*"`)
	for _, path := range []string{"/ui/", "/ui/upload", "/ui/batches/secret-batch", "/ui/batches/secret-batch/export?format=tsv",
		"/ui/batches/secret-batch/progress", "/ui/batches/nope"} {
		status, body := anon.get(path)
		// The login page, which goes back to the page asked for: nothing else.
		if status != http.StatusUnauthorized || next.ReplaceAllString(body, "") != next.ReplaceAllString(login, "") {
			t.Errorf("%s without a session: %d, want the login page and nothing else:\n%s", path, status, body)
		}
	}
	// A post without a session changes nothing.
	resp, _ := anon.form("/ui/batches/secret-batch/retry", url.Values{"csrf": {"x"}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("retry without a session: %d", resp.StatusCode)
	}
	if status, _ := anon.get("/"); status != http.StatusSeeOther {
		t.Errorf("/: %d, want a redirect to /ui/", status)
	}

	// A wrong token is refused; the right one starts a session in a safe cookie.
	resp, body := anon.form("/ui/login", url.Values{"token": {"not-the-token-at-all-0000"}, "next": {"/ui/batches/secret-batch"}})
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "not valid") || len(resp.Cookies()) != 0 {
		t.Fatalf("a wrong token: %d %v", resp.StatusCode, resp.Cookies())
	}
	resp, _ = anon.form("/ui/login", url.Values{"token": {adminToken}, "next": {"/ui/batches/secret-batch"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/batches/secret-batch" {
		t.Fatalf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	c := resp.Cookies()
	if len(c) != 1 || c[0].Name != httpapi.SessionCookie || !c[0].HttpOnly || c[0].SameSite != http.SameSiteLaxMode || c[0].Path != "/ui" ||
		c[0].Secure || strings.Contains(c[0].Value, adminToken) {
		t.Fatalf("session cookie %+v", c)
	}
	status, body := anon.get("/ui/")
	if status != http.StatusOK || !strings.Contains(body, "secret-batch") {
		t.Fatalf("batches page after login: %d\n%s", status, body)
	}
	status, body = anon.get("/ui/batches/secret-batch")
	if status != http.StatusOK || !strings.Contains(body, `data-progress-url="/ui/batches/secret-batch/progress"`) ||
		!strings.Contains(body, "complete") || !strings.Contains(body, "format=apkg") {
		t.Fatalf("batch page: %d\n%s", status, body)
	}
	// A login may not send the browser elsewhere.
	resp, _ = anon.form("/ui/login", url.Values{"token": {adminToken}, "next": {"//evil.example/ui/"}})
	if loc := resp.Header.Get("Location"); loc != "/ui/" {
		t.Errorf("login with an outside next: to %q", loc)
	}
	status, body = anon.get("/ui/batches/nope")
	if status != http.StatusNotFound || !strings.Contains(body, `batch &#34;nope&#34; not found`) {
		t.Errorf("unknown batch page: %d\n%.300s", status, body)
	}
	status, body = anon.get("/ui/batches/secret-batch/export?format=tsv")
	if status != http.StatusOK || !strings.HasPrefix(body, "position\tterm\t") {
		t.Errorf("export from the page: %d %.100s", status, body)
	}

	// Logging out ends the session.
	_, page := anon.get("/ui/")
	resp, _ = anon.form("/ui/logout", url.Values{"csrf": {csrfOf(t, page)}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if status, _ := anon.get("/ui/"); status != http.StatusUnauthorized {
		t.Errorf("after logout: %d", status)
	}
}

func TestPageActionsNeedTheCSRFTokenAndTheSameOrigin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	p := e.page()
	resp, _ := p.form("/ui/login", url.Values{"token": {acmeToken}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	_, upload := p.get("/ui/upload")
	csrf := csrfOf(t, upload)
	for name, c := range map[string]struct {
		csrf   string
		header []string
	}{
		"no CSRF token":     {"", nil},
		"another token's":   {strings.Repeat("0", 64), nil},
		"cross-site":        {csrf, []string{"Sec-Fetch-Site", "cross-site"}},
		"other origin":      {csrf, []string{"Origin", "https://evil.example"}},
		"cross-site logout": {csrf, []string{"Sec-Fetch-Site", "cross-site"}},
	} {
		path := "/ui/batches/x/retry"
		if strings.Contains(name, "logout") {
			path = "/ui/logout"
		}
		resp, _ := p.form(path, url.Values{"csrf": {c.csrf}}, c.header...)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, resp.StatusCode)
		}
	}
	// A cross-site login is refused too (login CSRF).
	resp, _ = e.page().form("/ui/login", url.Values{"token": {acmeToken}}, "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site login: %d", resp.StatusCode)
	}
}

func TestUploadShowsTheBadRowsThenSubmits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envConfig{noStart: true})
	p := e.page()
	p.form("/ui/login", url.Values{"token": {acmeToken}})
	_, upload := p.get("/ui/upload")
	csrf := csrfOf(t, upload)

	resp, body := p.upload("words.csv", "position,term,type\n1,물,n\n2,,v\n3,불,n\n3,비,n\n", csrf)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(body, "line 3: term is empty") ||
		!strings.Contains(body, "line 5: position 3 is already used on line 4") || !strings.Contains(body, "words.csv") {
		t.Fatalf("bad file: %d\n%s", resp.StatusCode, body)
	}
	resp, body = p.upload("words.jsonl", "{\"term\":\"물\"}\n{\"term\":\"불\",\"type\":\"n\"}\n", csrf)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("good file: %d\n%s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, "/ui/batches/words-") || !strings.HasSuffix(loc, "?notice=submitted") {
		t.Fatalf("after the upload: to %q", loc)
	}
	status, page := p.get(loc)
	if status != http.StatusOK || !strings.Contains(page, "Batch submitted") || !strings.Contains(page, "tenant acme") {
		t.Fatalf("batch page: %d\n%s", status, page)
	}
	resp, _ = p.upload("words.jsonl", "{\"term\":\"물\"}\n{\"term\":\"불\",\"type\":\"n\"}\n", csrf)
	if loc := resp.Header.Get("Location"); !strings.HasSuffix(loc, "?notice=resubmitted") {
		t.Errorf("the same file again: to %q", loc)
	}
}
