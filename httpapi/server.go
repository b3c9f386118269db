package httpapi

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
)

// Defaults of Config.
const (
	// DefaultMaxBodyBytes caps a request body: room for the 10,000-item word list
	// with all its metadata columns (3.4 MB as CSV, 7 to 8 MB as a JSON body) four
	// times over.
	DefaultMaxBodyBytes = 32 << 20
	// DefaultReadHeaderTimeout bounds how long a client may take to send its headers.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds how long a client may take to send a whole request.
	DefaultReadTimeout = 2 * time.Minute
	// DefaultWriteTimeout bounds an answer, except the streams (results, progress),
	// which last as long as their batch and end when the client goes away.
	DefaultWriteTimeout = 5 * time.Minute
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultShutdownTimeout bounds how long Close waits for requests in progress.
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultListLimit and MaxListLimit bound the batches a list returns.
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// Config configures a Server.
type Config struct {
	// Addr is the address Start listens on (host:port; port 0 picks a free one).
	// Without Tokens it must be a loopback address.
	Addr string
	// Tokens are the accepted bearer tokens (see Token). None: the API is open, which
	// Start allows only on a loopback address.
	Tokens []Token
	// MaxBodyBytes caps a request body (DefaultMaxBodyBytes); larger ones get 413.
	MaxBodyBytes int64
	// Timeouts of the HTTP server (the Default* constants).
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// TLSCertFile and TLSKeyFile, when both set, make Start serve HTTPS.
	TLSCertFile, TLSKeyFile string
	// SecureCookies marks the pages' cookie Secure even over plain HTTP (behind a
	// proxy that terminates TLS); over TLS it always is.
	SecureCookies bool
	Logger        *slog.Logger
}

func (c Config) withDefaults() Config {
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.MaxBodyBytes < 1<<10:
		return errors.New("httpapi: Config.MaxBodyBytes must be at least 1 KiB")
	case c.ReadHeaderTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0:
		return errors.New("httpapi: Config timeouts must not be negative")
	case (c.TLSCertFile == "") != (c.TLSKeyFile == ""):
		return errors.New("httpapi: Config.TLSCertFile and Config.TLSKeyFile go together")
	}
	seen := map[string]bool{}
	for i, t := range c.Tokens {
		if len(t.Secret) < MinTokenLength {
			return fmt.Errorf("httpapi: Config.Tokens[%d] is shorter than %d characters", i, MinTokenLength)
		}
		if err := flashpipe.ValidateTenant(t.Tenant); err != nil {
			return fmt.Errorf("httpapi: Config.Tokens[%d]: %w", i, err)
		}
		if seen[t.Secret] {
			return fmt.Errorf("httpapi: Config.Tokens[%d] repeats an earlier token", i)
		}
		seen[t.Secret] = true
	}
	return nil
}

// Server serves the API and the pages over an app.Client. Build it with New, run it
// with Start (or mount Handler in a server of your own) and stop it with Close.
type Server struct {
	client  *app.Client
	store   flashpipe.Store
	cfg     Config
	log     *slog.Logger
	keys    *keyring
	handler http.Handler
	routes  []route
	pages   *pages
	// cop rejects the pages' cross-origin posts (Sec-Fetch-Site, Origin).
	cop *http.CrossOriginProtection

	// done is closed by Close: the streams end.
	done     chan struct{}
	doneOnce sync.Once

	mu  sync.Mutex
	srv *http.Server
	url string
}

// New returns a server over client, which must have a store (status, the list and
// the exports read it).
func New(client *app.Client, cfg Config) (*Server, error) {
	if client == nil || client.Store() == nil {
		return nil, errors.New("httpapi: New needs an app.Client with a store")
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	openKey := make([]byte, 32)
	_, _ = rand.Read(openKey) // never fails (crypto/rand)
	s := &Server{
		client: client, store: client.Store(), cfg: cfg, log: cfg.Logger.With("component", "httpapi"),
		keys: newKeyring(cfg.Tokens, openKey), done: make(chan struct{}), cop: http.NewCrossOriginProtection(),
	}
	var err error
	if s.pages, err = newPages(); err != nil {
		return nil, err
	}
	s.handler = s.routeAll()
	return s, nil
}

// Handler returns the server's handler: the API, the pages, with auth, limits and the
// access log.
func (s *Server) Handler() http.Handler { return s.handler }

// ErrOpenOnNetwork is returned by Start for a server without tokens on an address
// that is not loopback.
var ErrOpenOnNetwork = errors.New("no API token: the HTTP API serves a non-loopback address only with tokens (FLASHPIPE_API_TOKENS or --api-tokens-file)")

// Start listens on Config.Addr and serves in the background until Close. It returns
// the server's base URL. Without tokens it refuses any address that is not loopback
// (ErrOpenOnNetwork), before serving anything.
func (s *Server) Start() (string, error) {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return "", fmt.Errorf("httpapi: listen on %s: %w", s.cfg.Addr, err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	if s.keys.open && !addr.IP.IsLoopback() {
		_ = ln.Close()
		return "", fmt.Errorf("httpapi: %s: %w", s.cfg.Addr, ErrOpenOnNetwork)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if s.cfg.TLSCertFile != "" {
		scheme = "https"
	}
	s.mu.Lock()
	s.srv, s.url = srv, scheme+"://"+addr.String()
	s.mu.Unlock()
	go func() {
		var err error
		if scheme == "https" {
			err = srv.ServeTLS(ln, s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		} else {
			err = srv.Serve(ln)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("HTTP API stopped", "err", err)
		}
	}()
	if s.keys.open {
		s.log.Warn("HTTP API without tokens: anyone who can reach this loopback address can use it", "url", s.url)
	} else if scheme == "http" && !addr.IP.IsLoopback() {
		s.log.Warn("HTTP API over plain HTTP on a network address: tokens travel in clear (serve TLS, or put a TLS proxy in front)", "url", s.url)
	}
	s.log.Info("HTTP API listening", "url", s.url, "tokens", len(s.cfg.Tokens))
	return s.url, nil
}

// URL is the base URL Start serves ("" before it).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Close ends the streams, lets the requests in progress finish (for up to
// DefaultShutdownTimeout) and stops the server. Safe to call more than once.
func (s *Server) Close() error {
	s.doneOnce.Do(func() { close(s.done) })
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return srv.Close()
	}
	return nil
}

// streamContext is a request's context that also ends when the server closes, for
// the answers that last as long as a batch.
func (s *Server) streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	go func() {
		select {
		case <-s.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// fail writes the JSON answer of an error, logging the cause of a 500.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := classify(err)
	if e.Status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", cmp.Or[error](e.err, err))
	}
	writeJSON(w, e.Status, e)
}
