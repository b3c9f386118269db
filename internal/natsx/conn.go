package natsx

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
)

// DefaultURL is the server a client connects to when neither ConnOptions.URL nor a
// context names one.
const DefaultURL = "nats://127.0.0.1:4222"

// ConnOptions say how a client reaches a NATS server and proves who it is. The fields
// are natscli's: the same flags (--creds, --nkey, --user, --password, --token,
// --tlscert, --tlskey, --tlsca, --tlsfirst, --inbox-prefix, --context) and the same
// keys in a natscli context file.
//
// At most one way to authenticate is given: Creds (a credentials file: user JWT and
// nkey seed, the standard for NATS accounts), NKey (an nkey seed file), User and
// Password, or Token. TLS (TLSCA to trust a private CA, TLSCert and TLSKey for mutual
// TLS) combines with any of them.
type ConnOptions struct {
	// URL is the server URL(s), comma-separated (DefaultURL, or the context's).
	// Credentials in it (nats://user:pass@host, nats://token@host) work but are
	// better given below.
	URL string
	// Context names a natscli context: NAME reads
	// $XDG_CONFIG_HOME/nats/context/NAME.json (~/.config/nats/context when
	// XDG_CONFIG_HOME is unset); a value with a path separator or ending in ".json"
	// is the context file itself. Fields set here override the context's, and
	// credentials set here replace the context's credentials as a whole.
	Context string
	// Creds is a credentials file (user JWT and nkey seed).
	Creds string
	// NKey is a file holding an nkey seed.
	NKey string
	// User and Password authenticate with a user name and password.
	User, Password string
	// Token authenticates with a token.
	Token string
	// TLSCert and TLSKey are the client certificate and key for mutual TLS.
	TLSCert, TLSKey string
	// TLSCA is a file of CA certificates to trust for the server's certificate
	// (instead of the system's).
	TLSCA string
	// TLSFirst does the TLS handshake before the server's greeting (servers with
	// handshake_first).
	TLSFirst bool
	// InboxPrefix replaces "_INBOX" in the reply subjects of requests, so a user's
	// permissions can allow its own replies only (see docs/security.md).
	InboxPrefix string
}

// contextFile is the part of a natscli context file flashpipe reads. Keys it cannot
// honour are refused by name rather than ignored.
type contextFile struct {
	URL         string `json:"url"`
	Token       string `json:"token"`
	User        string `json:"user"`
	Password    string `json:"password"`
	Creds       string `json:"creds"`
	NKey        string `json:"nkey"`
	Cert        string `json:"cert"`
	Key         string `json:"key"`
	CA          string `json:"ca"`
	InboxPrefix string `json:"inbox_prefix"`
	TLSFirst    bool   `json:"tls_first"`

	NSC         string `json:"nsc"`
	UserJWT     string `json:"user_jwt"`
	SocksProxy  string `json:"socks_proxy"`
	JSDomain    string `json:"jetstream_domain"`
	JSAPIPrefix string `json:"jetstream_api_prefix"`
}

// ContextPath returns the file of the natscli context name (see ConnOptions.Context).
func ContextPath(name string) (string, error) {
	if strings.ContainsRune(name, os.PathSeparator) || strings.ContainsRune(name, '/') || strings.HasSuffix(name, ".json") {
		return name, nil
	}
	if name == "" || strings.Contains(name, "..") {
		return "", fmt.Errorf("natsx: ConnOptions.Context %q is not a context name", name)
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("natsx: ConnOptions.Context: no XDG_CONFIG_HOME and no home directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "nats", "context", name+".json"), nil
}

// Resolve returns o with its context read in (o's own fields win), the paths in it
// expanded (~ and $VARIABLES, as natscli does) and the default URL filled in, and
// checks the result: errors name the field.
func (o ConnOptions) Resolve() (ConnOptions, error) {
	if o.Context != "" {
		path, err := ContextPath(o.Context)
		if err != nil {
			return o, err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return o, fmt.Errorf("natsx: ConnOptions.Context %q: %w", o.Context, err)
		}
		var cf contextFile
		if err := json.Unmarshal(data, &cf); err != nil {
			return o, fmt.Errorf("natsx: ConnOptions.Context %q: %s is not a context file: %w", o.Context, path, err)
		}
		if err := o.merge(cf); err != nil {
			return o, fmt.Errorf("natsx: ConnOptions.Context %q (%s): %w", o.Context, path, err)
		}
	}
	if o.URL == "" {
		o.URL = DefaultURL
	}
	for _, p := range []*string{&o.Creds, &o.NKey, &o.TLSCert, &o.TLSKey, &o.TLSCA} {
		*p = expandPath(*p)
	}
	return o, o.validate()
}

// merge fills o's empty fields from the context file cf.
func (o *ConnOptions) merge(cf contextFile) error {
	for key, v := range map[string]string{"nsc": cf.NSC, "user_jwt": cf.UserJWT, "socks_proxy": cf.SocksProxy,
		"jetstream_domain": cf.JSDomain, "jetstream_api_prefix": cf.JSAPIPrefix} {
		if v != "" {
			return fmt.Errorf("%s is set, which flashpipe does not support", key)
		}
	}
	if o.URL == "" {
		o.URL = cf.URL
	}
	if !o.hasCredentials() {
		o.Creds, o.NKey, o.User, o.Password, o.Token = cf.Creds, cf.NKey, cf.User, cf.Password, cf.Token
	}
	fill := func(dst *string, src string) {
		if *dst == "" {
			*dst = src
		}
	}
	fill(&o.TLSCert, cf.Cert)
	fill(&o.TLSKey, cf.Key)
	fill(&o.TLSCA, cf.CA)
	fill(&o.InboxPrefix, cf.InboxPrefix)
	o.TLSFirst = o.TLSFirst || cf.TLSFirst
	return nil
}

func (o ConnOptions) hasCredentials() bool {
	return o.Creds != "" || o.NKey != "" || o.User != "" || o.Password != "" || o.Token != ""
}

// expandPath expands a leading ~ and $VARIABLES in a file path, as natscli does for
// the paths in a context.
func expandPath(p string) string {
	if p == "" {
		return p
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = home + p[1:]
		}
	}
	return os.ExpandEnv(p)
}

func (o ConnOptions) validate() error {
	var methods []string
	for _, m := range []struct {
		name string
		set  bool
	}{{"Creds", o.Creds != ""}, {"NKey", o.NKey != ""}, {"User", o.User != ""}, {"Token", o.Token != ""}} {
		if m.set {
			methods = append(methods, m.name)
		}
	}
	if len(methods) > 1 {
		return fmt.Errorf("natsx: ConnOptions: give one way to authenticate, not %s", strings.Join(methods, " and "))
	}
	if o.Password != "" && o.User == "" {
		return errors.New("natsx: ConnOptions.Password needs ConnOptions.User")
	}
	if len(methods) > 0 && urlHasUserinfo(o.URL) {
		return fmt.Errorf("natsx: ConnOptions.URL carries credentials and ConnOptions.%s gives others: give one", methods[0])
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return errors.New("natsx: ConnOptions.TLSCert and ConnOptions.TLSKey go together (mutual TLS needs both)")
	}
	for _, f := range []struct{ name, path string }{{"Creds", o.Creds}, {"NKey", o.NKey},
		{"TLSCert", o.TLSCert}, {"TLSKey", o.TLSKey}, {"TLSCA", o.TLSCA}} {
		if f.path == "" {
			continue
		}
		if fi, err := os.Stat(f.path); err != nil {
			return fmt.Errorf("natsx: ConnOptions.%s: %w", f.name, err)
		} else if fi.IsDir() {
			return fmt.Errorf("natsx: ConnOptions.%s: %s is a directory, not a file", f.name, f.path)
		}
	}
	if strings.ContainsAny(o.InboxPrefix, " \t\r\n*>") || strings.HasSuffix(o.InboxPrefix, ".") {
		return fmt.Errorf("natsx: ConnOptions.InboxPrefix %q is not a subject prefix", o.InboxPrefix)
	}
	return nil
}

func urlHasUserinfo(urls string) bool {
	for _, u := range strings.Split(urls, ",") {
		if i := strings.Index(u, "://"); i >= 0 && strings.Contains(strings.SplitN(u[i+3:], "/", 2)[0], "@") {
			return true
		}
	}
	return false
}

// Options returns the nats.Options that authenticate and secure a connection with o
// (resolved: see Resolve).
func (o ConnOptions) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case o.Creds != "":
		opts = append(opts, nats.UserCredentials(o.Creds))
	case o.NKey != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKey)
		if err != nil {
			return nil, fmt.Errorf("natsx: ConnOptions.NKey: %w", err)
		}
		opts = append(opts, opt)
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	if o.TLSFirst {
		opts = append(opts, nats.TLSHandshakeFirst())
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	return opts, nil
}

// Secrets returns the secrets o holds in memory (token, password, and those in the
// URL), for a secret.Redactor. Seeds stay in their files and never pass through
// flashpipe's text.
func (o ConnOptions) Secrets() []string {
	out := []string{o.Token, o.Password}
	for _, u := range strings.Split(o.URL, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.User == nil {
			continue
		}
		if p, ok := pu.User.Password(); ok {
			out = append(out, p)
		} else {
			out = append(out, pu.User.Username()) // nats://TOKEN@host
		}
	}
	return out
}

// Connect resolves o and connects with flashpipe's defaults (see Connect).
func (o ConnOptions) Connect(name string, logger *slog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	r, err := o.Resolve()
	if err != nil {
		return nil, err
	}
	opts, err := r.Options()
	if err != nil {
		return nil, err
	}
	return connect(r.URL, name, logger, append(opts, extra...)...)
}

// redactURL returns u without its user information (a user and password, or a
// token), for logs.
func redactURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return "(unparsable URL)"
	}
	if pu.User == nil {
		return u
	}
	pu.User = url.User("REDACTED")
	return pu.String()
}
