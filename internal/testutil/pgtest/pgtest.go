// Package pgtest gives tests a real PostgreSQL database: URL returns the address of a
// fresh schema of its own, dropped when the test ends, so tests run in parallel on one
// server without seeing each other.
//
// The server is found once per test process, in this order:
//
//  1. FLASHPIPE_TEST_DATABASE_URL, if set: a postgres:// URL (or key=value connection
//     string) of a database the tests may create schemas in.
//  2. postgres://USER@127.0.0.1:5432/test?sslmode=disable, trying USER = $PGUSER,
//     then the current OS user, then "postgres".
//  3. A throwaway cluster started by this package with the installed PostgreSQL
//     binaries (initdb and postgres from PATH or /usr/lib/postgresql/*/bin), on a free
//     loopback port with its data directory under os.TempDir(). It runs as the
//     "postgres" OS user when the tests run as root, dies with the test process, and is
//     stopped and deleted by Main.
//
// FLASHPIPE_TEST_POSTGRES=throwaway skips 1 and 2. A package whose tests use pgtest
// should run them through Main:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
package pgtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Environment variables read by this package.
const (
	// EnvDatabaseURL names a server to use instead of the default one.
	EnvDatabaseURL = "FLASHPIPE_TEST_DATABASE_URL"
	// EnvPostgres set to "throwaway" forces the throwaway cluster.
	EnvPostgres = "FLASHPIPE_TEST_POSTGRES"
)

// DefaultURL is the server tried when EnvDatabaseURL is not set, with the user filled in.
const DefaultURL = "postgres://127.0.0.1:5432/test?sslmode=disable"

// process is the one server of the test process. It is package state because the
// server is shared by every test of the process (it is expensive to start) and must be
// stopped by Main after they all ran.
var process struct {
	once    sync.Once
	baseURL string
	err     error

	mu      sync.Mutex
	cluster *cluster
}

// URL returns a connection URL to a new schema named t_<random> of the test server,
// with search_path set to it in the URL, so everything the test creates lands there.
// The schema is dropped (with its contents) when the test and its subtests finish;
// close connections to it in an earlier t.Cleanup (registered after calling URL).
// URL fails the test if no server can be found or started.
func URL(t testing.TB) string {
	t.Helper()
	base, err := serverURL()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	schema := "t_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execOnce(ctx, base, `CREATE SCHEMA `+schema); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// A killed client's backend may still hold locks on the schema for a moment
		// (tests kill processes on purpose): end those sessions, and retry a drop
		// that deadlocks with one.
		var err error
		for attempt := 0; attempt < 5; attempt++ {
			_ = execOnce(ctx, base, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
				WHERE pid <> pg_backend_pid() AND application_name = '`+schema+`'`)
			if err = execOnce(ctx, base, `DROP SCHEMA `+schema+` CASCADE`); err == nil {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Errorf("pgtest: drop schema %s: %v", schema, err)
	})
	u, err := withSearchPath(base, schema)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

// Role creates a login role of the test server, named r_<random>, with the given
// privileges on every table and sequence of the schema of url (a URL from URL), for a
// test of what a service does when its privileges change; it returns the role's name
// and url connecting as it. The role is dropped when the test ends. The server must
// let the role in without a password (trust), as the test servers do.
func Role(t testing.TB, url string, privileges string) (role, roleURL string) {
	t.Helper()
	schema, err := schemaOf(url)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	role = "r_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, stmt := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT ` + privileges + ` ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + role,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA ` + schema + ` TO ` + role,
	} {
		if err := execOnce(ctx, url, stmt); err != nil {
			t.Fatalf("pgtest: %s: %v", stmt, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = execOnce(ctx, url, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '`+role+`'`)
		_ = execOnce(ctx, url, `DROP OWNED BY `+role)
		if err := execOnce(ctx, url, `DROP ROLE `+role); err != nil {
			t.Errorf("pgtest: drop role %s: %v", role, err)
		}
	})
	roleURL, err = withUser(url, role)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return role, roleURL
}

// Exec runs one statement on url (a URL from URL or Role), failing the test on error.
func Exec(t testing.TB, url, stmt string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execOnce(ctx, url, stmt); err != nil {
		t.Fatalf("pgtest: %s: %v", stmt, err)
	}
}

// schemaOf returns the search_path a URL from URL names.
func schemaOf(connString string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", errors.New("cannot parse the test URL")
		}
		return u.Query().Get("search_path"), nil
	}
	for _, f := range strings.Fields(connString) {
		if v, ok := strings.CutPrefix(f, "search_path="); ok {
			return v, nil
		}
	}
	return "", errors.New("the test URL names no search_path")
}

// withUser returns connString connecting as user, without a password.
func withUser(connString, user string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", errors.New("cannot parse the test URL")
		}
		u.User = url.User(user)
		return u.String(), nil
	}
	return connString + " user=" + user + " password=", nil
}

// Main runs the tests of m and then stops the throwaway cluster, if one was started,
// and exits with the tests' exit code. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit, for a TestMain with clean-up of its own: it runs the
// tests, stops the throwaway cluster and returns the exit code.
func Run(m *testing.M) int {
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: stop throwaway cluster: %v\n", err)
	}
	return code
}

// Available reports why no test server can be found or started (nil when one can),
// for a test that runs against Postgres only where it is reachable.
func Available() error {
	_, err := serverURL()
	return err
}

// serverURL finds or starts the test server, once per process.
func serverURL() (string, error) {
	process.once.Do(func() {
		process.baseURL, process.err = findServer()
	})
	return process.baseURL, process.err
}

func findServer() (string, error) {
	if os.Getenv(EnvPostgres) == "throwaway" {
		return startThrowaway()
	}
	if u := os.Getenv(EnvDatabaseURL); u != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ping(ctx, u); err != nil {
			return "", fmt.Errorf("%s is set but its server does not answer: %v", EnvDatabaseURL, err)
		}
		return u, nil
	}
	var tried []string
	for _, name := range candidateUsers() {
		u := strings.Replace(DefaultURL, "postgres://", "postgres://"+url.User(name).String()+"@", 1)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ping(ctx, u)
		cancel()
		if err == nil {
			return u, nil
		}
		tried = append(tried, fmt.Sprintf("user %s: %v", name, err))
	}
	u, err := startThrowaway()
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL server answered at %s (%s), and no throwaway cluster could be started: %w; "+
			"set %s to a server's URL, e.g. postgres://user:password@host:5432/db?sslmode=disable",
			DefaultURL, strings.Join(tried, "; "), err, EnvDatabaseURL)
	}
	return u, nil
}

func candidateUsers() []string {
	var users []string
	if u := os.Getenv("PGUSER"); u != "" {
		users = append(users, u)
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		users = append(users, u.Username)
	}
	users = append(users, "postgres")
	return slices.Compact(users)
}

func ping(ctx context.Context, connString string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

func execOnce(ctx context.Context, connString, sql string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withSearchPath adds search_path=schema to a URL or key=value connection string.
// pgx sends parameters it does not know as run-time parameters of each connection.
func withSearchPath(connString, schema string) (string, error) {
	if strings.HasPrefix(connString, "postgres://") || strings.HasPrefix(connString, "postgresql://") {
		u, err := url.Parse(connString)
		if err != nil {
			return "", errors.New("cannot parse the server URL") // the URL may hold a password
		}
		q := u.Query()
		q.Set("search_path", schema)
		q.Set("application_name", schema) // lets the clean-up find the test's sessions
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return connString + " search_path=" + schema + " application_name=" + schema, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// cluster is a throwaway PostgreSQL cluster.
type cluster struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

func startThrowaway() (string, error) {
	initdb, postgres, err := findBinaries()
	if err != nil {
		return "", err
	}
	cred, err := credential()
	if err != nil {
		return "", err
	}
	removeStale()
	dir, err := os.MkdirTemp("", dirPrefix+"*")
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		_ = os.RemoveAll(dir)
		return "", err
	}
	c := &cluster{dir: dir, done: make(chan struct{})}
	fail := func(err error) (string, error) {
		_ = os.RemoveAll(dir)
		return "", err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return fail(err)
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
		if err := os.Chown(data, int(cred.Uid), int(cred.Gid)); err != nil {
			return fail(err)
		}
	}
	initCmd := exec.Command(initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
		"--locale=C", "--no-sync")
	initCmd.Dir = dir // a directory the postgres user can enter
	initCmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if out, err := initCmd.CombinedOutput(); err != nil {
		return fail(fmt.Errorf("%s: %v\n%s", initdb, err, out))
	}
	port, err := freePort()
	if err != nil {
		return fail(err)
	}
	logPath := filepath.Join(dir, "postgres.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(err)
	}
	defer logFile.Close()
	c.cmd = exec.Command(postgres, "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200")
	c.cmd.Dir = dir
	c.cmd.Stdout, c.cmd.Stderr = logFile, logFile
	// Pdeathsig kills the server if the test process dies without running Main's stop.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		return fail(fmt.Errorf("start %s: %w", postgres, err))
	}
	go func() {
		_ = c.cmd.Wait()
		close(c.done)
	}()
	process.mu.Lock()
	process.cluster = c
	process.mu.Unlock()

	u := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := ping(ctx, u)
		cancel()
		if err == nil {
			return u, nil
		}
		select {
		case <-c.done:
			log, _ := os.ReadFile(logPath)
			_ = stop()
			return "", fmt.Errorf("throwaway postgres exited: %s\n%s", c.cmd.ProcessState, tail(log))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			_ = stop()
			return "", fmt.Errorf("throwaway postgres did not accept connections within a minute: %v\n%s", err, tail(log))
		}
	}
}

const (
	dirPrefix = "flashpipe-pgtest-"
	ownerFile = "owner.pid" // the test process that made the directory
)

// removeStale deletes the directories of throwaway clusters whose test process died
// without stopping them (killed, so Main could not run; the server itself died with
// it). Directories of live test processes, possibly other packages' running in
// parallel, are left alone.
func removeStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours, or being created
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

// stop stops the throwaway cluster, if any, and deletes its files.
func stop() error {
	process.mu.Lock()
	c := process.cluster
	process.cluster = nil
	process.mu.Unlock()
	if c == nil {
		return nil
	}
	// SIGINT is PostgreSQL's fast shutdown: it disconnects clients and exits.
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
	return os.RemoveAll(c.dir)
}

// findBinaries finds initdb and postgres in PATH or else in the newest
// /usr/lib/postgresql/*/bin.
func findBinaries() (initdb, postgres string, err error) {
	initdb, err1 := exec.LookPath("initdb")
	postgres, err2 := exec.LookPath("postgres")
	if err1 == nil && err2 == nil {
		return initdb, postgres, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int { return versionOf(b) - versionOf(a) })
	for _, d := range dirs {
		i, p := filepath.Join(d, "initdb"), filepath.Join(d, "postgres")
		if isFile(i) && isFile(p) {
			return i, p, nil
		}
	}
	return "", "", errors.New("the PostgreSQL server binaries (initdb, postgres) are not installed: " +
		"found neither in PATH nor in /usr/lib/postgresql/*/bin (on Debian: apt-get install postgresql)")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// credential returns whom to run the server as: the "postgres" OS user when we are
// root (PostgreSQL refuses to run as root), else nil (ourselves).
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and PostgreSQL refuses root, but there is no postgres OS user to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("postgres OS user has a non-numeric uid %q or gid %q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(b []byte) []byte {
	const n = 2000
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return bytes.TrimSpace(b)
}

// Through returns url (a postgres:// URL from URL) connecting to addr instead of its
// host and port, for a test that puts a proxy in between, and the original host:port.
func Through(t testing.TB, connString, addr string) (proxied, target string) {
	t.Helper()
	u, err := url.Parse(connString)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Skip("pgtest: the test server's address is not a postgres:// URL; this test needs one")
	}
	target = u.Host
	u.Host = addr
	return u.String(), target
}
