package permissions_test

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/flashpipe/flashpipe/internal/contract"
	"github.com/flashpipe/flashpipe/internal/permissions"
)

var update = flag.Bool("update", false, "rewrite deploy/nats/permissions.conf from the table")

// The committed deploy/nats/permissions.conf is the table's rendering for the
// default prefix (regenerate it with -update).
func TestCommittedFileIsTheRendering(t *testing.T) {
	c, err := contract.New(contract.Config{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("..", "..", "deploy", "nats", "permissions.conf")
	want := permissions.Render(c)
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("%s differs from permissions.Render: run go test ./internal/permissions -run Committed -update", path)
	}
}

// The rendering is a configuration nats-server reads, and each user gets exactly its
// role's subjects.
func TestRenderingLoadsIntoTheServer(t *testing.T) {
	t.Parallel()
	c, err := contract.New(contract.Config{Prefix: "acme.fp"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "permissions.conf"), []byte(permissions.Render(c)), 0o600); err != nil {
		t.Fatal(err)
	}
	var users []string
	for _, r := range permissions.Roles(c) {
		users = append(users, "{user: "+r.Name+", password: pw, permissions: $"+permissions.Variable(c, r.Name)+"}")
	}
	conf := "include \"permissions.conf\"\nauthorization { users = [\n" + strings.Join(users, "\n") + "\n] }\n"
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, "server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range permissions.Roles(c) {
		var u *server.User
		for _, x := range opts.Users {
			if x.Username == r.Name {
				u = x
			}
		}
		if u == nil || u.Permissions == nil || u.Permissions.Publish == nil || len(u.Permissions.Publish.Allow) != len(r.Publish) ||
			len(u.Permissions.Subscribe.Allow) != len(r.Subscribe) {
			t.Fatalf("user %s: permissions %+v, want %d publish and %d subscribe subjects", r.Name, u, len(r.Publish), len(r.Subscribe))
		}
		for i, rule := range r.Publish {
			if u.Permissions.Publish.Allow[i] != rule.Subject {
				t.Errorf("user %s: publish[%d] = %q, want %q", r.Name, i, u.Permissions.Publish.Allow[i], rule.Subject)
			}
			if r.Name != permissions.Admin && (strings.HasPrefix(rule.Subject, "$JS.API.STREAM.UPDATE") || strings.HasPrefix(rule.Subject, "$JS.API.STREAM.DELETE") ||
				strings.HasPrefix(rule.Subject, "$JS.API.STREAM.PURGE") || rule.Subject == ">" || rule.Subject == "$JS.API.>") {
				t.Errorf("role %s may %s", r.Name, rule.Subject)
			}
		}
	}
}
