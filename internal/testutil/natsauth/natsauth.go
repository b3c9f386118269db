// Package natsauth starts embedded NATS servers that require one way of
// authenticating each (user and password, token, nkey, credentials file in operator
// mode, TLS with a private CA, mutual TLS, a natscli context), with the client
// options that get in and others that must be refused. Tests of every part that
// connects run against all of them, like a conformance suite.
package natsauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/flashpipe/flashpipe/internal/natsx"
)

// Method is a server that requires one way of authenticating.
type Method struct {
	Name   string
	Server *natsx.Embedded
	// Good connects.
	Good natsx.ConnOptions
	// Wrong are options the server must refuse, by what is wrong with them.
	Wrong map[string]natsx.ConnOptions
	// Secrets are the secrets Good holds in memory (tokens, passwords).
	Secrets []string
}

// All returns every method, each on a server of its own.
func All(t testing.TB) []Method {
	return []Method{UserPassword(t), Token(t), NKey(t), Creds(t), TLS(t), MutualTLS(t), Context(t)}
}

// Start starts an embedded server with JetStream configured by conf (nats-server
// configuration text), shut down when the test ends.
func Start(t testing.TB, conf string) *natsx.Embedded {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := natsx.StartEmbedded(natsx.EmbeddedConfig{StoreDir: filepath.Join(dir, "js"), ConfigFile: path})
	if err != nil {
		t.Fatalf("start embedded NATS with\n%s\n%v", conf, err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// UserPassword requires a user and password.
func UserPassword(t testing.TB) Method {
	srv := Start(t, `authorization { users = [ {user: flashpipe, password: "pw-Correct-Horse-42"} ] }`)
	good := natsx.ConnOptions{URL: srv.ClientURL(), User: "flashpipe", Password: "pw-Correct-Horse-42"}
	return Method{Name: "user-password", Server: srv, Good: good, Secrets: []string{good.Password},
		Wrong: map[string]natsx.ConnOptions{
			"wrong password": {URL: srv.ClientURL(), User: "flashpipe", Password: "pw-Correct-Horse-43"},
			"no credentials": {URL: srv.ClientURL()},
			"a token":        {URL: srv.ClientURL(), Token: "pw-Correct-Horse-42"},
		}}
}

// Token requires a token.
func Token(t testing.TB) Method {
	const token = "tok-9f86d081884c7d659a2feaa0c55ad015"
	srv := Start(t, `authorization { token: "`+token+`" }`)
	good := natsx.ConnOptions{URL: srv.ClientURL(), Token: token}
	return Method{Name: "token", Server: srv, Good: good, Secrets: []string{token},
		Wrong: map[string]natsx.ConnOptions{
			"wrong token":    {URL: srv.ClientURL(), Token: token + "x"},
			"no credentials": {URL: srv.ClientURL()},
		}}
}

// NKey requires the seed of a user nkey.
func NKey(t testing.TB) Method {
	t.Helper()
	dir := t.TempDir()
	pub, seed := userKey(t)
	_, otherSeed := userKey(t)
	srv := Start(t, `authorization { users = [ {nkey: `+pub+`} ] }`)
	return Method{Name: "nkey", Server: srv,
		Good: natsx.ConnOptions{URL: srv.ClientURL(), NKey: writeFile(t, dir, "user.nk", seed)},
		Wrong: map[string]natsx.ConnOptions{
			"another nkey":   {URL: srv.ClientURL(), NKey: writeFile(t, dir, "other.nk", otherSeed)},
			"no credentials": {URL: srv.ClientURL()},
		}}
}

func userKey(t testing.TB) (pub string, seed []byte) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ = kp.PublicKey()
	seed, _ = kp.Seed()
	return pub, seed
}

// Creds runs the server in operator mode (decentralised JWT authentication, accounts
// resolved from memory) and requires a credentials file of a user of the account.
func Creds(t testing.TB) Method {
	t.Helper()
	dir := t.TempDir()
	op := mustKey(t, nkeys.CreateOperator)
	opPub, _ := op.PublicKey()
	opClaims := jwt.NewOperatorClaims(opPub)
	opJWT := mustEncode(t, opClaims, op)

	account := func(name string, js bool) (nkeys.KeyPair, string, string) {
		kp := mustKey(t, nkeys.CreateAccount)
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		return kp, pub, mustEncode(t, ac, op)
	}
	_, sysPub, sysJWT := account("SYS", false)
	appKP, appPub, appJWT := account("FLASHPIPE", true)

	creds := func(name string, signer nkeys.KeyPair, issuerAccount string) string {
		ukp := mustKey(t, nkeys.CreateUser)
		upub, _ := ukp.PublicKey()
		uc := jwt.NewUserClaims(upub)
		uc.Name = name
		uc.IssuerAccount = issuerAccount
		useed, _ := ukp.Seed()
		data, err := jwt.FormatUserConfig(mustEncode(t, uc, signer), useed)
		if err != nil {
			t.Fatal(err)
		}
		return writeFile(t, dir, name+".creds", data)
	}
	stranger := mustKey(t, nkeys.CreateAccount) // an account the operator never signed
	srv := Start(t, fmt.Sprintf(`operator: %s
system_account: %s
resolver: MEMORY
resolver_preload: {
  %s: %s
  %s: %s
}`, opJWT, sysPub, sysPub, sysJWT, appPub, appJWT))
	return Method{Name: "creds", Server: srv,
		Good: natsx.ConnOptions{URL: srv.ClientURL(), Creds: creds("app", appKP, "")},
		Wrong: map[string]natsx.ConnOptions{
			"user of an unknown account": {URL: srv.ClientURL(), Creds: creds("stranger", stranger, "")},
			"no credentials":             {URL: srv.ClientURL()},
		}}
}

func mustKey(t testing.TB, create func() (nkeys.KeyPair, error)) nkeys.KeyPair {
	t.Helper()
	kp, err := create()
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func mustEncode(t testing.TB, c interface {
	Encode(nkeys.KeyPair) (string, error)
}, kp nkeys.KeyPair) string {
	t.Helper()
	s, err := c.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TLS requires TLS with a certificate of a private CA; clients trust it with TLSCA.
func TLS(t testing.TB) Method {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "flashpipe test CA")
	certFile, keyFile := ca.Issue(t, dir, "server", true)
	srv := Start(t, fmt.Sprintf(`tls { cert_file: %q, key_file: %q }`, certFile, keyFile))
	other := NewCA(t, "another CA")
	return Method{Name: "tls", Server: srv,
		Good: natsx.ConnOptions{URL: srv.ClientURL(), TLSCA: ca.Write(t, dir, "ca.pem")},
		Wrong: map[string]natsx.ConnOptions{
			"untrusted CA": {URL: srv.ClientURL(), TLSCA: other.Write(t, dir, "other-ca.pem")},
			"system roots": {URL: srv.ClientURL()},
		}}
}

// MutualTLS requires TLS and a client certificate of the same private CA.
func MutualTLS(t testing.TB) Method {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "flashpipe test CA")
	caFile := ca.Write(t, dir, "ca.pem")
	certFile, keyFile := ca.Issue(t, dir, "server", true)
	srv := Start(t, fmt.Sprintf(`tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }`, certFile, keyFile, caFile))
	clientCert, clientKey := ca.Issue(t, dir, "client", false)
	other := NewCA(t, "another CA")
	otherCert, otherKey := other.Issue(t, dir, "stranger", false)
	return Method{Name: "mutual-tls", Server: srv,
		Good: natsx.ConnOptions{URL: srv.ClientURL(), TLSCA: caFile, TLSCert: clientCert, TLSKey: clientKey},
		Wrong: map[string]natsx.ConnOptions{
			"no client certificate":          {URL: srv.ClientURL(), TLSCA: caFile},
			"certificate of another CA":      {URL: srv.ClientURL(), TLSCA: caFile, TLSCert: otherCert, TLSKey: otherKey},
			"client certificate, no CA file": {URL: srv.ClientURL(), TLSCert: clientCert, TLSKey: clientKey},
		}}
}

// Context requires a user and password and mutual TLS, and gives them to the client
// as a natscli context file (by path).
func Context(t testing.TB) Method {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, "flashpipe test CA")
	caFile := ca.Write(t, dir, "ca.pem")
	certFile, keyFile := ca.Issue(t, dir, "server", true)
	srv := Start(t, fmt.Sprintf(`tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }
authorization { users = [ {user: ctxuser, password: "ctx-pass-7d1a5e"} ] }`, certFile, keyFile, caFile))
	clientCert, clientKey := ca.Issue(t, dir, "client", false)
	ctx := WriteContext(t, dir, "flashpipe-test", map[string]any{
		"description": "flashpipe test", "url": srv.ClientURL(), "user": "ctxuser", "password": "ctx-pass-7d1a5e",
		"cert": clientCert, "key": clientKey, "ca": caFile,
	})
	wrong := WriteContext(t, dir, "wrong-password", map[string]any{
		"url": srv.ClientURL(), "user": "ctxuser", "password": "ctx-pass-0", "cert": clientCert, "key": clientKey, "ca": caFile,
	})
	return Method{Name: "context", Server: srv, Good: natsx.ConnOptions{Context: ctx}, Secrets: []string{"ctx-pass-7d1a5e"},
		Wrong: map[string]natsx.ConnOptions{
			"context with a wrong password": {Context: wrong},
			"the context's URL only":        {URL: srv.ClientURL()},
		}}
}

// WriteContext writes a natscli context file dir/nats/context/name.json with the
// given keys and returns its path.
func WriteContext(t testing.TB, dir, name string, settings map[string]any) string {
	t.Helper()
	data, err := json.MarshalIndent(settings, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	cdir := filepath.Join(dir, "nats", "context")
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, cdir, name+".json", data)
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// CA is a private certificate authority for tests.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

// NewCA makes a self-signed CA.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{cert: cert, key: key, der: der}
}

// Write writes the CA certificate (PEM) to dir/name and returns its path.
func (ca *CA) Write(t testing.TB, dir, name string) string {
	t.Helper()
	return writeFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}))
}

// Issue issues a certificate for 127.0.0.1 and localhost (a server's, or a client's)
// and writes it and its key to dir; it returns their paths.
func (ca *CA) Issue(t testing.TB, dir, name string, server bool) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	keyFile = writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
