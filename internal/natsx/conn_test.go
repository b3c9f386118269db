package natsx_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/secret"
	"github.com/flashpipe/flashpipe/internal/testutil/natsauth"
	"github.com/flashpipe/flashpipe/internal/testutil/natstest"
)

// Each way of authenticating connects with the right options, JetStream answers, and
// the server refuses the wrong ones, with an error that names no secret.
func TestEveryAuthMethod(t *testing.T) {
	t.Parallel()
	for _, m := range natsauth.All(t) {
		t.Run(m.Name, func(t *testing.T) {
			t.Parallel()
			nc, err := m.Good.Connect("test", nil)
			if err != nil {
				t.Fatalf("the right options are refused: %v", err)
			}
			defer nc.Close()
			js, err := natsx.JetStream(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := natsx.WaitJetStream(ctx, js); err != nil {
				t.Fatal(err)
			}
			for why, opts := range m.Wrong {
				nc, err := opts.Connect("test", nil)
				if err == nil {
					nc.Close()
					t.Errorf("%s: connected", why)
					continue
				}
				for _, s := range append(m.Secrets, secretsOf(opts)...) {
					if s != "" && strings.Contains(err.Error(), s) {
						t.Errorf("%s: the error %q holds a secret", why, err)
					}
				}
			}
		})
	}
}

func secretsOf(o natsx.ConnOptions) []string {
	r, err := o.Resolve()
	if err != nil {
		return nil
	}
	return r.Secrets()
}

// A context is found by name under XDG_CONFIG_HOME, like natscli does, and the
// options given beside it win over its own.
func TestContextByNameAndOverrides(t *testing.T) {
	m := natsauth.Token(t)
	cfgHome := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfgHome)
	natsauth.WriteContext(t, cfgHome, "pipeline", map[string]any{"url": m.Good.URL, "token": m.Good.Token, "color_scheme": "dark"})
	natsauth.WriteContext(t, cfgHome, "stale", map[string]any{"url": "nats://127.0.0.1:1", "token": "an-old-token"})
	for name, opts := range map[string]natsx.ConnOptions{
		"by name":                      {Context: "pipeline"},
		"URL and token beside context": {Context: "stale", URL: m.Good.URL, Token: m.Good.Token},
	} {
		nc, err := opts.Connect("test", nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		nc.Close()
	}
	if _, err := (natsx.ConnOptions{Context: "missing"}).Connect("test", nil); err == nil ||
		!strings.Contains(err.Error(), "ConnOptions.Context") || !strings.Contains(err.Error(), filepath.Join(cfgHome, "nats", "context", "missing.json")) {
		t.Fatalf("an unknown context: %v", err)
	}
}

// Bad options are refused before any connection, by the field at fault.
func TestConnOptionsRefusedByField(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	unsupported := natsauth.WriteContext(t, dir, "domain", map[string]any{"url": "nats://h:4222", "jetstream_domain": "hub"})
	broken := filepath.Join(dir, "broken.json")
	if err := os.WriteFile(broken, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	for want, o := range map[string]natsx.ConnOptions{
		"not Creds and Token":      {Creds: file, Token: "t0ken-t0ken"},
		"not NKey and User":        {NKey: file, User: "u"},
		"Password needs":           {Password: "p"},
		"URL carries credentials":  {URL: "nats://u:p@h:4222", Token: "t0ken-t0ken"},
		"TLSCert and":              {TLSCert: file},
		"ConnOptions.Creds":        {Creds: filepath.Join(dir, "missing.creds")},
		"ConnOptions.TLSCA":        {TLSCA: dir},
		"ConnOptions.InboxPrefix":  {InboxPrefix: "_INBOX.>"},
		"jetstream_domain":         {Context: unsupported},
		"not a context file":       {Context: broken},
		"not a context name":       {Context: ".."},
		"ConnOptions.NKey: nkeys:": {NKey: file},
	} {
		_, err := o.Connect("test", nil)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one saying %q", o, err, want)
		}
	}
}

func TestSecrets(t *testing.T) {
	t.Parallel()
	got := natsx.ConnOptions{URL: "nats://tok-in-url@a:1,nats://user:pw-in-url@b:2", Token: "tok", Password: "pw"}.Secrets()
	want := []string{"tok", "pw", "tok-in-url", "pw-in-url"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Secrets() = %q, want %q", got, want)
	}
}

// A token in the URL is not in the reconnect log line (nats.go's redacted URL hides a
// password only).
func TestReconnectLogHidesAToken(t *testing.T) {
	t.Parallel()
	const token = "tok-in-the-url-5e884898da28047151d0e56f"
	dir := t.TempDir()
	conf := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(conf, []byte(`authorization { token: "`+token+`" }`), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	start := func() *natsx.Embedded {
		srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(dir, "js"), Port: port, ConfigFile: conf})
		if err != nil {
			t.Fatal(err)
		}
		return srv
	}
	srv := start()
	logs := &natstest.SyncBuffer{}
	nc, err := natsx.Connect(fmt.Sprintf("nats://%s@127.0.0.1:%d", token, port), "test",
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Shutdown()
	srv = start()
	defer srv.Shutdown()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "reconnected") {
		if time.Now().After(deadline) {
			t.Fatalf("no reconnection logged:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if r := secret.New(token); r.Redact(logs.String()) != logs.String() {
		t.Fatalf("the log holds the token:\n%s", logs)
	}
}
