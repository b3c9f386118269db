package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashpipe/flashpipe"
	"github.com/flashpipe/flashpipe/app"
	"github.com/flashpipe/flashpipe/httpapi"
	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/health"
	"github.com/flashpipe/flashpipe/internal/secret"
)

// HTTPAPIFlags configure the HTTP API (flashpipe api, dev, and run --api-addr); the
// address is each command's own flag, --api-addr.
type HTTPAPIFlags struct {
	APITokens        string `name:"api-tokens" help:"HTTP API bearer tokens, comma-separated, each optionally followed by a space and its tenant (prefer the environment variable: flags show in ps). Without any, the HTTP API serves only a loopback address." env:"FLASHPIPE_API_TOKENS"`
	APITokensFile    string `name:"api-tokens-file" help:"File of HTTP API tokens, one a line: the token, optionally a space and its tenant (stamped on the batches it submits; it sees only them)." type:"existingfile" env:"FLASHPIPE_API_TOKENS_FILE"`
	APIMaxBodyMiB    int    `name:"api-max-body-mib" help:"Largest HTTP API request body, in MiB (a larger one gets 413)." default:"32" env:"FLASHPIPE_API_MAX_BODY_MIB"`
	APITLSCert       string `name:"api-tls-cert" help:"Serve the HTTP API over TLS with this certificate (and --api-tls-key)." type:"existingfile" env:"FLASHPIPE_API_TLS_CERT"`
	APITLSKey        string `name:"api-tls-key" help:"Private key of --api-tls-cert." type:"existingfile" env:"FLASHPIPE_API_TLS_KEY"`
	APISecureCookies bool   `name:"api-secure-cookies" help:"Mark the web page's session cookie Secure over plain HTTP too (behind a proxy that terminates TLS)." env:"FLASHPIPE_API_SECURE_COOKIES"`

	tokens []httpapi.Token // set by AfterApply
}

// AfterApply reads the tokens now, so a bad file stops the command before anything
// starts, and hands them to the redactor before any logger exists.
func (f *HTTPAPIFlags) AfterApply(red *secret.Redactor) error {
	tokens, err := httpapi.LoadTokens(f.APITokensFile, "--api-tokens (FLASHPIPE_API_TOKENS)", f.APITokens)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		red.Add(t.Secret)
	}
	f.tokens = tokens
	return nil
}

// config maps the flags to the server's configuration.
func (f HTTPAPIFlags) config(addr string, log *slog.Logger) httpapi.Config {
	return httpapi.Config{
		Addr: addr, Tokens: f.tokens, MaxBodyBytes: int64(f.APIMaxBodyMiB) << 20,
		TLSCertFile: f.APITLSCert, TLSKeyFile: f.APITLSKey, SecureCookies: f.APISecureCookies, Logger: log,
	}
}

// serveAPI starts the HTTP API on addr over client and says where, on w; the caller
// closes it.
func (f HTTPAPIFlags) serveAPI(client *app.Client, addr string, w io.Writer, log *slog.Logger) (*httpapi.Server, error) {
	srv, err := httpapi.New(client, f.config(addr, log))
	if err != nil {
		return nil, err
	}
	url, err := srv.Start()
	if err != nil {
		return nil, fmt.Errorf("--api-addr: %w", err)
	}
	note := fmt.Sprintf("%d tokens", len(f.tokens))
	if len(f.tokens) == 0 {
		note = "no token: anyone on this machine can use it"
	}
	fmt.Fprintf(w, "HTTP:  %s (API under /v1, web page at %s/ui/; %s)\n", url, url, note)
	return srv, nil
}

// apiChecks are the HTTP API's readiness checks: NATS, the streams it reads and
// writes, and the database.
func apiChecks(nc *nats.Conn, js jetstream.JetStream, c *contract.Contract, st flashpipe.Store) []health.Check {
	checks := []health.Check{health.NATS(nc), health.Streams(js, c.BatchesStream(), c.ItemsStream(), c.OrderedStream())}
	if p, ok := st.(health.Pinger); ok {
		checks = append(checks, health.Database(p))
	}
	return checks
}

// APICmd serves the HTTP API.
type APICmd struct {
	APIAddr string `name:"api-addr" help:"Address of the HTTP API (a non-loopback one needs tokens)." default:"127.0.0.1:8080" env:"FLASHPIPE_API_ADDR"`
	HTTPAPIFlags
	NATSFlags
	StoreFlags
	MetricsFlags
	ServiceFlags
}

// Run serves until interrupted, then lets the requests in progress finish.
func (a *APICmd) Run(ctx context.Context, log *slog.Logger) error {
	if a.PostgresURL == "" && a.SQLite == "" {
		return fmt.Errorf("no database: give --postgres-url (FLASHPIPE_POSTGRES_URL) or --sqlite (status, the list and the exports read it)")
	}
	cfg := a.storeConfig("")
	cfg.Wait = !a.FailFast
	store, _, err := app.OpenStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.Close()
	nc, js, c, err := a.connectService(ctx, "flashpipe-api", a.ServiceFlags, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	client, err := app.NewClient(js, c, app.ClientConfig{Store: store, Logger: log})
	if err != nil {
		return err
	}
	if _, err := a.serve(ctx, log, apiChecks(nc, js, c, store)...); err != nil {
		return err
	}
	srv, err := a.serveAPI(client, a.APIAddr, os.Stdout, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return srv.Close()
}
