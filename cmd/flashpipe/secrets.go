package main

import (
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flashpipe/flashpipe/internal/natsx"
	"github.com/flashpipe/flashpipe/internal/secret"
)

// NATSAuthFlags authenticate and secure the NATS connection, with natscli's flag
// names and environment variables (see docs/security.md).
type NATSAuthFlags struct {
	Context     string `name:"context" help:"natscli context: a name (~/.config/nats/context/NAME.json) or a context file; the NATS flags given beside it win." env:"FLASHPIPE_NATS_CONTEXT,NATS_CONTEXT"`
	Creds       string `name:"creds" help:"NATS credentials file (user JWT and nkey seed)." env:"FLASHPIPE_NATS_CREDS,NATS_CREDS"`
	NKey        string `name:"nkey" help:"NATS nkey seed file." env:"FLASHPIPE_NATS_NKEY,NATS_NKEY"`
	User        string `name:"user" help:"NATS user name." env:"FLASHPIPE_NATS_USER,NATS_USER"`
	Password    string `name:"password" help:"NATS password (never logged)." env:"FLASHPIPE_NATS_PASSWORD,NATS_PASSWORD"`
	Token       string `name:"token" help:"NATS token (never logged)." env:"FLASHPIPE_NATS_TOKEN,NATS_TOKEN"`
	TLSCert     string `name:"tlscert" help:"Client certificate for mutual TLS with NATS." env:"FLASHPIPE_NATS_CERT,NATS_CERT"`
	TLSKey      string `name:"tlskey" help:"Private key of --tlscert." env:"FLASHPIPE_NATS_KEY,NATS_KEY"`
	TLSCA       string `name:"tlsca" help:"CA certificates that sign the NATS server's certificate (instead of the system's)." env:"FLASHPIPE_NATS_CA,NATS_CA"`
	TLSFirst    bool   `name:"tlsfirst" help:"TLS handshake before the NATS server's greeting (servers with handshake_first)." env:"FLASHPIPE_NATS_TLSFIRST"`
	InboxPrefix string `name:"inbox-prefix" help:"Prefix of reply subjects instead of _INBOX (to match the user's permissions)." env:"FLASHPIPE_NATS_INBOX_PREFIX"`
}

// options maps the flags and the URL flag to the connection options.
func (f NATSAuthFlags) options(url string) natsx.ConnOptions {
	return natsx.ConnOptions{
		URL: url, Context: f.Context, Creds: f.Creds, NKey: f.NKey, User: f.User, Password: f.Password, Token: f.Token,
		TLSCert: f.TLSCert, TLSKey: f.TLSKey, TLSCA: f.TLSCA, TLSFirst: f.TLSFirst, InboxPrefix: f.InboxPrefix,
	}
}

// AfterApply reads the context now, so a bad one stops the command before anything
// starts, and hands the NATS secrets (the flags' and the context's) to the redactor
// before any logger exists.
func (f *NATSFlags) AfterApply(red *secret.Redactor) error {
	o, err := f.options(f.NATSURL).Resolve()
	if err != nil {
		return err
	}
	red.Add(o.Secrets()...)
	return nil
}

// AfterApply hands the API key to the redactor, and keeps the redactor for the
// processors' failure reasons.
func (f *APIFlags) AfterApply(red *secret.Redactor) error {
	red.Add(f.APIKey)
	f.redactor = red
	return nil
}

// AfterApply hands the Postgres password to the redactor.
func (f *StoreFlags) AfterApply(red *secret.Redactor) error {
	red.Add(postgresPassword(f.PostgresURL))
	return nil
}

// AfterApply hands the Postgres password to the redactor.
func (m *MigrateCmd) AfterApply(red *secret.Redactor) error {
	red.Add(postgresPassword(m.PostgresURL))
	return nil
}

// postgresPassword is the password of a Postgres URL or key=value connection string
// ("" if none, or if it does not parse: the store's errors are scrubbed of it anyway).
func postgresPassword(conn string) string {
	if conn == "" {
		return ""
	}
	cfg, err := pgconn.ParseConfig(conn)
	if err != nil {
		return ""
	}
	return cfg.Password
}
