package httpapi

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/internal/export"
	"github.com/flashpipe/flashpipe/internal/ingest"
)

// The pages: server-rendered HTML from the templates embedded below, a style sheet
// and one small script (live progress over server-sent events); no build step.

//go:embed web/templates/*.html web/static/*
var webFS embed.FS

// Page settings.
const (
	// SessionCookie holds a page session's token (base64), HttpOnly, SameSite=Lax,
	// Secure over TLS, for SessionMaxAge.
	SessionCookie = "flashpipe_session"
	SessionMaxAge = 12 * time.Hour
	// previewItems is how many ok items the batch page previews the cards of.
	previewItems = 3
	// costRounding is the smallest amount of USD the pages show ($%.4f).
	costRounding = 0.00005
	// pageBatches is how many batches the list page shows.
	pageBatches = 100
)

// pages holds the parsed templates, one per page (each with the layout).
type pages struct {
	tmpl   map[string]*template.Template
	static http.Handler
}

func newPages() (*pages, error) {
	funcs := template.FuncMap{"age": age, "usd": usd, "dollars": dollars, "percent": percent, "mode": mode}
	p := &pages{tmpl: map[string]*template.Template{}}
	for _, name := range []string{"login", "batches", "batch", "upload", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(webFS, "web/templates/layout.html", "web/templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("httpapi: page %s: %w", name, err)
		}
		p.tmpl[name] = t
	}
	static, err := fs.Sub(webFS, "web/static")
	if err != nil {
		return nil, err
	}
	p.static = http.StripPrefix("/ui/static/", http.FileServerFS(static))
	return p, nil
}

// view is what every page gets: the page's own data, and the session.
type view struct {
	Title string
	// CSRF is the token every form posts; Open says the server has no tokens (no
	// login, no logout).
	CSRF   string
	Open   bool
	Authed bool
	Tenant string
	Notice string
	Data   any
}

// render writes a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name string, v view) {
	var buf bytes.Buffer
	if err := s.pages.tmpl[name].ExecuteTemplate(&buf, "layout", v); err != nil {
		s.log.Error("page not rendered", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// pageView is the view of a page for the session's principal.
func (s *Server) pageView(r *http.Request, title string, data any) view {
	p := principalOf(r.Context())
	return view{Title: title, CSRF: p.csrf, Open: s.keys.open, Authed: true, Tenant: p.tenant, Data: data}
}

// pageError renders an error as a page, with its status.
func (s *Server) pageError(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	if e.Status >= 500 {
		s.log.Error("page failed", "method", r.Method, "path", r.URL.Path, "err", errors.Join(e.err, err))
	}
	s.render(w, r, e.Status, "error", s.pageView(r, "Error", e))
}

func (s *Server) pageRoutes() []route {
	return []route{
		{"GET", "/{$}", public, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusSeeOther) }},
		{"GET", "/ui/static/{file}", public, s.pages.static.ServeHTTP},
		{"GET", "/ui/login", public, s.loginPage},
		{"POST", "/ui/login", public, s.cop.Handler(http.HandlerFunc(s.login)).ServeHTTP},
		{"POST", "/ui/logout", session, s.logout},
		{"GET", "/ui/{$}", session, s.batchesPage},
		{"GET", "/ui/upload", session, s.uploadPage},
		{"POST", "/ui/upload", session, s.upload},
		{"GET", "/ui/batches/{id}", session, s.batchPage},
		{"GET", "/ui/batches/{id}/progress", session, func(w http.ResponseWriter, r *http.Request) {
			s.streamProgress(w, r, principalOf(r.Context()))
		}},
		{"GET", "/ui/batches/{id}/export", session, s.exportPage},
		{"POST", "/ui/batches/{id}/retry", session, s.retryPage},
		{"POST", "/ui/batches/{id}/cap", session, s.capPage},
	}
}

// requireSession lets a request with a valid session cookie through, with its
// principal; an unsafe one must also carry the session's CSRF token. A request
// without a session gets the login page and nothing else.
func (s *Server) requireSession(next http.Handler) http.Handler {
	return s.cop.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.keys.check(sessionToken(r))
		if err != nil {
			s.loginForm(w, r, http.StatusUnauthorized, "", r.URL.Path)
			return
		}
		ctx := context.WithValue(r.Context(), principalKey{}, p)
		r = r.WithContext(ctx)
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if err := parseForm(r); err != nil {
				s.pageError(w, r, err)
				return
			}
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(p.csrf)) != 1 {
				s.pageError(w, r, errorf(http.StatusForbidden, "the form is stale or was not sent by this site (CSRF check): reload the page and try again"))
				return
			}
		}
		next.ServeHTTP(w, r)
	}))
}

// parseForm reads a posted form, multipart (an upload) or not.
func parseForm(r *http.Request) error {
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		return r.ParseMultipartForm(8 << 20)
	}
	return r.ParseForm()
}

// sessionToken is the token of the session cookie ("" without one).
func sessionToken(r *http.Request) string {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(c.Value)
	if err != nil {
		return ""
	}
	return string(b)
}

func (s *Server) setSession(w http.ResponseWriter, r *http.Request, token string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: SessionCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(token)), Path: "/ui",
		MaxAge: int(maxAge.Seconds()), HttpOnly: true, Secure: r.TLS != nil || s.cfg.SecureCookies, SameSite: http.SameSiteLaxMode,
	})
}

// loginData is the login page's.
type loginData struct {
	Error string
	Next  string
}

func (s *Server) loginForm(w http.ResponseWriter, r *http.Request, status int, msg, next string) {
	s.render(w, r, status, "login", view{Title: "Log in", Data: loginData{Error: msg, Next: safeNext(next)}})
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.keys.open {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return
	}
	s.loginForm(w, r, http.StatusOK, "", r.URL.Query().Get("next"))
}

// login checks the token of the login form and starts a session.
// (It runs behind the cross-origin protection.)
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.loginForm(w, r, http.StatusBadRequest, "The form could not be read.", "")
		return
	}
	token, next := strings.TrimSpace(r.PostFormValue("token")), r.PostFormValue("next")
	if _, err := s.keys.check(token); err != nil || token == "" {
		s.log.Warn("page login refused", "remote", r.RemoteAddr)
		s.loginForm(w, r, http.StatusUnauthorized, "This token is not valid.", next)
		return
	}
	s.setSession(w, r, token, SessionMaxAge)
	http.Redirect(w, r, safeNext(next), http.StatusSeeOther)
}

// safeNext is where to go after the login: a page of this server, never the login
// page itself nor another site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/ui/") || strings.HasPrefix(next, "/ui/login") || strings.ContainsAny(next, "\\\r\n") {
		return "/ui/"
	}
	return next
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.setSession(w, r, "", -time.Second)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

func (s *Server) batchesPage(w http.ResponseWriter, r *http.Request) {
	list, err := s.batches(r.Context(), principalOf(r.Context()), pageBatches)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "batches", s.pageView(r, "Batches", list))
}

// batchData is the batch page's.
type batchData struct {
	*BatchDetail
	Percent float64
	// Rate is a complete batch's average (items over the time from the first result
	// to the completion; not after a retry, whose wait it would count), "" otherwise:
	// the live rate comes with the progress events.
	Rate     string
	Preview  []previewCard
	Formats  []export.Format
	CanRetry bool
	// Spend is the batch's spend account (nil when it could not be read: SpendError
	// says so); CapError refuses the cap form's CapValue.
	Spend      *spendCard
	SpendError string
	CapError   string
	CapValue   string
	// CostBeforeCap: the batch cost more than its account counts (calls made before
	// its cap was set are not in the account), by more than the page's rounding.
	CostBeforeCap bool
}

type previewCard struct {
	Position int64
	Term     string
	flashpipe.Card
}

// notices are the messages a redirect to the batch page may ask for.
var notices = map[string]string{
	"submitted":   "Batch submitted: it runs now.",
	"resubmitted": "This batch was already submitted with the same items: nothing new was published.",
	"replaced":    "Batch replaced: the new items run now.",
	"retry":       "Retry started: the failed items run again.",
	"cap":         "Spend cap set: a batch paused at its cap resumes within seconds.",
}

func (s *Server) batchPage(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, err := s.batchView(r.Context(), id)
	if err != nil {
		s.pageError(w, r, err)
		return
	}
	v := s.pageView(r, "Batch "+id, data)
	v.Notice = notices[r.URL.Query().Get("notice")]
	s.render(w, r, http.StatusOK, "batch", v)
}

// batchView reads what the batch page shows of a batch the session may see.
func (s *Server) batchView(ctx context.Context, id string) (batchData, error) {
	d, err := s.detail(ctx, principalOf(ctx), id)
	if err != nil {
		return batchData{}, err
	}
	data := batchData{BatchDetail: d, Formats: export.Formats(),
		CanRetry: d.State == flashpipe.BatchComplete && d.Failed > 0}
	if d.Items > 0 {
		data.Percent = 100 * float64(d.Done) / float64(d.Items)
	}
	if d.State == flashpipe.BatchComplete && d.Generation == 0 && d.StartedAt != nil && d.CompletedAt != nil {
		if el := d.CompletedAt.Sub(*d.StartedAt).Seconds(); el > 0 {
			data.Rate = fmt.Sprintf("%.1f items/s", float64(d.Done)/el)
		}
	}
	if data.Preview, err = s.preview(ctx, id); err != nil {
		return batchData{}, err
	}
	// The spend account is the ledger's: when it cannot be read the page still
	// shows the batch, and says so in the spend card.
	a, capped, err := s.client.BatchSpend(ctx, id)
	if err != nil {
		s.log.Error("spend account not read", "batch", id, "err", err)
		data.SpendError = "The spend account could not be read; the server log has the cause."
	} else {
		sp := spendCardOf(id, a, capped)
		data.Spend = &sp
		data.CostBeforeCap = capped && d.Usage.CostUSD-sp.SpentUSD > costRounding
	}
	return data, nil
}

// capPage sets a batch's spend cap from the batch page's form; a bad value is
// refused on the page, with the value sent.
func (s *Server) capPage(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	raw := r.PostFormValue("max_cost")
	usd, err := parseCap(raw)
	if err == nil {
		err = s.setCap(ctx, principalOf(ctx), id, usd)
	}
	if err == nil {
		http.Redirect(w, r, "/ui/batches/"+id+"?notice=cap", http.StatusSeeOther)
		return
	}
	e := classify(err)
	if e.Status != http.StatusBadRequest {
		s.pageError(w, r, err)
		return
	}
	data, derr := s.batchView(ctx, id)
	if derr != nil {
		s.pageError(w, r, derr)
		return
	}
	data.CapError, data.CapValue = e.Message, raw
	s.render(w, r, e.Status, "batch", s.pageView(r, "Batch "+id, data))
}

var errEnough = errors.New("enough")

// preview returns the cards of the first ok items of a batch.
func (s *Server) preview(ctx context.Context, id string) ([]previewCard, error) {
	var cards []previewCard
	items := 0
	err := s.client.Results(ctx, id, flashpipe.ResultFilter{Status: flashpipe.StatusOK}, func(res flashpipe.Result) error {
		for _, c := range res.Cards {
			cards = append(cards, previewCard{Position: res.Position, Term: res.Term, Card: c})
		}
		if items++; items >= previewItems {
			return errEnough
		}
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return cards, err
}

// uploadData is the upload page's: what was sent, and why it was refused.
type uploadData struct {
	Error   string
	Rows    []RowError
	BatchID string
	File    string
}

func (s *Server) uploadPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "upload", s.pageView(r, "Upload a batch", uploadData{}))
}

// upload submits an uploaded file (CSV or JSON Lines, told by its name or content).
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	data := uploadData{BatchID: strings.TrimSpace(r.PostFormValue("batch_id"))}
	refuse := func(err error) {
		e := classify(err)
		if e.Status >= 500 {
			s.pageError(w, r, err)
			return
		}
		data.Error, data.Rows = e.Message, e.Rows
		s.render(w, r, e.Status, "upload", s.pageView(r, "Upload a batch", data))
	}
	f, fh, err := r.FormFile("file")
	if err != nil {
		refuse(fieldError("file", "choose a CSV or JSON Lines file"))
		return
	}
	defer f.Close()
	data.File = path.Base(fh.Filename)
	in := &submission{
		body: f, format: ingest.FormatAuto, BatchID: data.BatchID, Source: data.File,
		Replace: r.PostFormValue("replace") != "", SkipBadRows: r.PostFormValue("skip_bad_rows") != "",
	}
	sub, _, err := s.submit(r.Context(), principalOf(r.Context()), in)
	if err != nil {
		refuse(err)
		return
	}
	notice := "submitted"
	switch {
	case sub.Resubmitted:
		notice = "resubmitted"
	case sub.Replaced:
		notice = "replaced"
	}
	http.Redirect(w, r, "/ui/batches/"+sub.Manifest.BatchID+"?notice="+notice, http.StatusSeeOther)
}

func (s *Server) retryPage(w http.ResponseWriter, r *http.Request) {
	ctx, id := r.Context(), r.PathValue("id")
	if _, err := s.startRetry(ctx, principalOf(ctx), id); err != nil {
		s.pageError(w, r, err)
		return
	}
	http.Redirect(w, r, "/ui/batches/"+id+"?notice=retry", http.StatusSeeOther)
}

func (s *Server) exportPage(w http.ResponseWriter, r *http.Request) {
	if err := s.writeExport(w, r, principalOf(r.Context()), r.PathValue("id")); err != nil {
		s.pageError(w, r, err)
	}
}

// age says how long ago t was, roughly.
func age(t time.Time) string {
	d := time.Since(t)
	switch {
	case t.IsZero():
		return ""
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

func usd(v float64) string { return fmt.Sprintf("$%.4f", v) }

// dollars is an amount of USD to the cent (a cap).
func dollars(v float64) string { return fmt.Sprintf("$%.2f", v) }

// mode names a batch's api_mode for the list ("" is the processors' own).
func mode(m string) string {
	if m == "" {
		return "default"
	}
	return m
}

func percent(v float64) string { return fmt.Sprintf("%.0f%%", v) }
