package httpapi

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// access says who may call a route.
type access int

const (
	public  access = iota // anyone (health, the OpenAPI document, the login page, static files)
	byToken               // the API: a bearer token
	session               // the pages: the session cookie (an unauthenticated request gets the login page)
)

// route is one route of the server: a method and a ServeMux path pattern.
type route struct {
	method, path string
	access       access
	handle       http.HandlerFunc
}

// pattern is the route's ServeMux pattern.
func (r route) pattern() string { return r.method + " " + r.path }

// Routes lists the server's routes as "METHOD /path/{param}", the API's and the
// pages' (under /ui/), in registration order.
func (s *Server) Routes() []string {
	out := make([]string, 0, len(s.routes))
	for _, r := range s.routes {
		out = append(out, r.pattern())
	}
	return out
}

// routeAll registers every route on a new mux and wraps it with the access log,
// the security headers and the body limit.
func (s *Server) routeAll() http.Handler {
	s.routes = []route{
		{"GET", "/healthz", public, s.health},
		{"GET", "/v1/openapi.json", public, s.openAPI},
		{"POST", "/v1/batches", byToken, s.postBatch},
		{"GET", "/v1/batches", byToken, s.listBatches},
		{"GET", "/v1/batches/{id}", byToken, s.getBatch},
		{"GET", "/v1/batches/{id}/results", byToken, s.results},
		{"GET", "/v1/batches/{id}/progress", byToken, s.progress},
		{"GET", "/v1/batches/{id}/export", byToken, s.export},
		{"GET", "/v1/batches/{id}/failed", byToken, s.failed},
		{"POST", "/v1/batches/{id}/retry", byToken, s.retry},
		{"GET", "/v1/batches/{id}/cap", byToken, s.getCap},
		{"PUT", "/v1/batches/{id}/cap", byToken, s.putCap},
	}
	s.routes = append(s.routes, s.pageRoutes()...)

	mux := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range s.routes {
		var h http.Handler = rt.handle
		switch rt.access {
		case byToken:
			h = s.requireToken(h)
		case session:
			h = s.requireSession(h)
		}
		mux.Handle(rt.pattern(), h)
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	// Another method on a known path, and an unknown path under /v1, get a JSON
	// answer too (the mux's own are plain text).
	for path, methods := range allowed {
		if !strings.HasPrefix(path, "/v1/") && path != "/healthz" {
			continue
		}
		allow := strings.Join(slices.Sorted(slices.Values(methods)), ", ")
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			s.fail(w, r, errorf(http.StatusMethodNotAllowed, "%s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
		})
	}
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, errorf(http.StatusNotFound, "no such route: %s %s (GET /v1/openapi.json lists them)", r.Method, r.URL.Path))
	})
	return s.recoverer(s.accessLog(s.secure(s.limitBody(mux))))
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// limitBody caps every request body at Config.MaxBodyBytes; reading past it fails
// with *http.MaxBytesError, which classify answers 413.
func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			s.fail(w, r, &http.MaxBytesError{Limit: s.cfg.MaxBodyBytes})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}

// secure sets the headers every answer carries: no sniffing, no framing, and for the
// pages a content security policy that allows only the server's own scripts and
// styles.
func (s *Server) secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		next.ServeHTTP(w, r)
	})
}

// statusWriter records the status and size of an answer for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, deadlines).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// accessLog logs each request: method, path (never the query or a header, so never a
// token), status, size and duration.
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		level := slog.LevelInfo
		if sw.status >= 500 {
			level = slog.LevelError
		}
		s.log.Log(r.Context(), level, "request", "method", r.Method, "path", r.URL.Path, "status", sw.status,
			"bytes", sw.bytes, "duration", time.Since(start).Round(time.Microsecond), "remote", r.RemoteAddr)
	})
}

// recoverer turns a panic in a handler into a 500 (or, once the answer started, a
// broken connection), logged with its value.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
			s.fail(w, r, internal(fmt.Errorf("panic: %v", v)))
		}()
		next.ServeHTTP(w, r)
	})
}
