// Package natsx wraps the NATS pieces flashpipe shares: an embedded nats-server with
// JetStream for the single-process mode and tests, and client connections with the
// options every service uses.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults for EmbeddedConfig.
const (
	DefaultHost         = "127.0.0.1"
	DefaultReadyTimeout = 10 * time.Second
)

// EmbeddedConfig configures an embedded nats-server.
type EmbeddedConfig struct {
	// StoreDir is where JetStream keeps its streams. Required.
	StoreDir string
	// Host and Port to listen on. Port 0 picks a free port (never clashing with a
	// server already on 4222); a negative Port listens on no port at all, for
	// in-process connections only.
	Host string
	Port int
	// ServerName names the server (required in a cluster).
	ServerName string
	// SyncInterval is how often JetStream fsyncs its files (zero: the server's default
	// of two minutes); SyncAlways fsyncs every write. See docs/durability.md.
	SyncInterval time.Duration
	SyncAlways   bool
	// Cluster, when set, joins the server to a cluster.
	Cluster *ClusterConfig
	// ConfigFile, when set, is a nats-server configuration file read first: users and
	// their permissions, accounts, operator mode, TLS. The fields above override what
	// it says about the same things.
	ConfigFile string
	Logger     *slog.Logger
}

// ClusterConfig joins an embedded server to a cluster of embedded servers.
type ClusterConfig struct {
	Name string
	// Host and Port of this server's route listener (Port 0: a free port).
	Host string
	Port int
	// Routes are the other servers' route URLs, e.g. "nats://127.0.0.1:6222".
	Routes []string
}

// Embedded is a running embedded nats-server.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream and waits until it accepts
// connections.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("natsx: EmbeddedConfig.StoreDir is empty")
	}
	if cfg.Host == "" {
		cfg.Host = DefaultHost
	}
	if err := os.MkdirAll(cfg.StoreDir, 0o755); err != nil {
		return nil, fmt.Errorf("natsx: create store dir: %w", err)
	}
	opts := &server.Options{}
	if cfg.ConfigFile != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.ConfigFile); err != nil {
			return nil, fmt.Errorf("natsx: EmbeddedConfig.ConfigFile: %w", err)
		}
	}
	opts.ServerName = cfg.ServerName
	opts.Host = cfg.Host
	opts.Port = cfg.Port
	opts.JetStream = true
	opts.StoreDir = cfg.StoreDir
	opts.SyncInterval = cfg.SyncInterval
	opts.SyncAlways = cfg.SyncAlways
	opts.NoSigs = true
	opts.MaxPayload = 8 << 20
	switch {
	case cfg.Port == 0:
		opts.Port = server.RANDOM_PORT
	case cfg.Port < 0:
		opts.DontListen = true
	}
	if c := cfg.Cluster; c != nil {
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: c.Host, Port: c.Port}
		if opts.Cluster.Host == "" {
			opts.Cluster.Host = DefaultHost
		}
		if opts.Cluster.Port == 0 {
			opts.Cluster.Port = server.RANDOM_PORT
		}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("natsx: ClusterConfig.Routes: %w", err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsx: new server: %w", err)
	}
	if cfg.Logger != nil {
		srv.SetLoggerV2(&serverLogger{cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	go srv.Start()
	if !srv.ReadyForConnections(DefaultReadyTimeout) {
		srv.Shutdown()
		return nil, fmt.Errorf("natsx: embedded server not ready within %s", DefaultReadyTimeout)
	}
	return &Embedded{srv: srv}, nil
}

// Server returns the underlying server.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it is down. Safe to call more than once.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// ConnectInProcess connects to the embedded server without a socket.
func (e *Embedded) ConnectInProcess(name string, logger *slog.Logger) (*nats.Conn, error) {
	return connect("", name, logger, nats.InProcessServer(e.srv))
}

// Connect connects to the NATS server at url with flashpipe's defaults: a client name,
// reconnecting forever, and connection events logged.
//
// Connect takes credentials in the URL or in extra options only; ConnOptions.Connect
// takes them the way natscli does.
func Connect(url, name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return connect(url, name, logger, extra...)
}

func connect(url, name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "nats")
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		// ConnectedUrlRedacted hides a password but not a token (nats://TOKEN@host).
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("reconnected to NATS", "url", redactURL(c.ConnectedUrl())) }),
		nats.ErrorHandler(func(_ *nats.Conn, s *nats.Subscription, err error) {
			subj := ""
			if s != nil {
				subj = s.Subject
			}
			if errors.Is(err, nats.ErrPermissionViolation) {
				log.Error("NATS refused a permission this service needs: grant it to the service's user (docs/security.md)",
					"subject", subj, "err", err)
				return
			}
			log.Warn("NATS async error", "subject", subj, "err", err)
		}),
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", redact(err, url))
	}
	return nc, nil
}

// RedactURL returns urls (one URL or several, comma-separated) with the credentials
// of each replaced by "REDACTED", for messages.
func RedactURL(urls string) string {
	parts := strings.Split(urls, ",")
	for i, u := range parts {
		parts[i] = redactURL(strings.TrimSpace(u))
	}
	return strings.Join(parts, ",")
}

// redact removes the credentials of the URLs in urls from an error's text: url.Parse
// errors quote the URL, password included, or a piece of it when a character of the
// password confuses the parser.
func redact(err error, urls string) error {
	msg := err.Error()
	clean := msg
	for _, u := range strings.Split(urls, ",") {
		start, end := strings.Index(u, "://"), strings.LastIndex(u, "@")
		if start < 0 || end <= start+3 {
			continue
		}
		secret := u[start+3 : end]
		clean = strings.ReplaceAll(clean, secret, "REDACTED")
		for _, part := range strings.FieldsFunc(secret, func(r rune) bool { return strings.ContainsRune(":/?#", r) }) {
			if len(part) >= 3 {
				clean = strings.ReplaceAll(clean, part, "REDACTED")
			}
		}
	}
	if clean != msg {
		return &redactedError{msg: clean, err: err}
	}
	return err
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// JetStream returns the JetStream API for nc with a default timeout per request.
func JetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	return js, nil
}

// WaitJetStream waits until JetStream answers on js (after a server start, or while a
// cluster elects its meta leader).
func WaitJetStream(ctx context.Context, js jetstream.JetStream) error {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		cancel()
		if err == nil {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not available: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type serverLogger struct{ l *slog.Logger }

func (s *serverLogger) Noticef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s *serverLogger) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s *serverLogger) Fatalf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s *serverLogger) Errorf(format string, v ...any)  { s.l.Error(fmt.Sprintf(format, v...)) }
func (s *serverLogger) Debugf(format string, v ...any)  {}
func (s *serverLogger) Tracef(format string, v ...any)  {}
