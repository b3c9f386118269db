package outfile_test

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flashpipe/flashpipe/internal/outfile"
)

func write(t *testing.T, path, content string) *outfile.File {
	t.Helper()
	f, err := outfile.Create(path)
	if err != nil {
		t.Fatalf("Create(%s): %v", path, err)
	}
	if _, err := io.WriteString(f, content); err != nil {
		t.Fatal(err)
	}
	return f
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// onlyEntries fails unless dir holds exactly names (no temporary file left behind).
func onlyEntries(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

// A new file appears only at Commit, complete, with the permissions of any new file.
func TestNewFileAppearsAtCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "cards.tsv")
	f := write(t, path, "hello")
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the file exists before Commit: %v", err)
	}
	if !f.Atomic() {
		t.Fatal("a new file is not written atomically")
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != "hello" {
		t.Fatalf("content %q", got)
	}
	ref, err := os.Create(filepath.Join(dir, "ref"))
	if err != nil {
		t.Fatal(err)
	}
	_ = ref.Close()
	refInfo, _ := os.Stat(ref.Name())
	info, _ := os.Stat(path)
	if info.Mode() != refInfo.Mode() {
		t.Fatalf("mode %v, want %v as os.Create gives", info.Mode(), refInfo.Mode())
	}
	if err := f.Abort(); err != nil {
		t.Fatalf("Abort after Commit: %v", err)
	}
	onlyEntries(t, filepath.Join(dir, "sub"), "cards.tsv")
}

// A regular file is replaced atomically: its old content stays until Commit, Abort
// leaves it untouched, and its permission bits are kept.
func TestRegularFileReplacedAtomically(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "cards.tsv")
	if err := os.WriteFile(path, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	f := write(t, path, "half-writ")
	if got := read(t, path); got != "old" {
		t.Fatalf("while writing the file reads %q, want the old content", got)
	}
	if err := f.Abort(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != "old" {
		t.Fatalf("after Abort the file reads %q", got)
	}
	onlyEntries(t, dir, "cards.tsv")

	f = write(t, path, "new")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != "new" {
		t.Fatalf("after Commit the file reads %q", got)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", info.Mode().Perm())
	}
	onlyEntries(t, dir, "cards.tsv")
	if err := f.Commit(); err == nil {
		t.Fatal("a second Commit succeeded")
	}
}

// A symbolic link stays a link; its target gets the content (atomically when it is a
// regular file), and a dangling link's target is created.
func TestSymlinkTargetWrittenLinkKept(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "real", "cards.tsv")
	if err := os.WriteFile(target, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.tsv")
	if err := os.Symlink("real/cards.tsv", link); err != nil { // relative, as users make them
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "chain.tsv")
	if err := os.Symlink(link, chain); err != nil {
		t.Fatal(err)
	}
	f := write(t, chain, "new")
	if !f.Atomic() {
		t.Fatal("a link to a regular file is not replaced atomically")
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{link, chain} {
		if info, err := os.Lstat(l); err != nil || info.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("%s is no longer a symlink: %v %v", l, info.Mode(), err)
		}
	}
	if got := read(t, target); got != "new" {
		t.Fatalf("target reads %q", got)
	}
	onlyEntries(t, filepath.Join(dir, "real"), "cards.tsv")

	dangling := filepath.Join(dir, "dangling.tsv")
	if err := os.Symlink("real/new.tsv", dangling); err != nil {
		t.Fatal(err)
	}
	f = write(t, dangling, "created")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "real", "new.tsv")); got != "created" {
		t.Fatalf("dangling link's target reads %q", got)
	}
	if info, _ := os.Lstat(dangling); info.Mode()&fs.ModeSymlink == 0 {
		t.Fatal("the dangling link was replaced")
	}

	loop := filepath.Join(dir, "loop")
	if err := os.Symlink("loop", loop); err != nil {
		t.Fatal(err)
	}
	if _, err := outfile.Create(loop); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Fatalf("a link loop: %v", err)
	}
}

// A FIFO is written through: a reader gets the content and the FIFO stays a FIFO,
// also behind a symbolic link.
func TestFIFOWrittenThrough(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo not permitted here: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		r, err := os.Open(fifo) // blocks until the writer opens
		if err != nil {
			got <- "open: " + err.Error()
			return
		}
		defer r.Close()
		b, _ := io.ReadAll(r)
		got <- string(b)
	}()
	f := write(t, link, "through the pipe")
	if f.Atomic() {
		t.Fatal("a FIFO is replaced, not written through")
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "through the pipe" {
		t.Fatalf("reader got %q", s)
	}
	if info, err := os.Lstat(fifo); err != nil || info.Mode()&fs.ModeNamedPipe == 0 {
		t.Fatalf("the FIFO is no longer a FIFO: %v %v", info.Mode(), err)
	}
	onlyEntries(t, dir, "link", "pipe")
}

// A character device (a null device made in a temporary directory) is written
// through and stays a character device.
func TestCharDeviceWrittenThrough(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dev := filepath.Join(dir, "null")
	// Major 1, minor 3 is the null device on Linux.
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Skipf("mknod not permitted here (needs CAP_MKNOD): %v", err)
	}
	f, err := outfile.Create(dev)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			t.Skipf("devices cannot be opened on this file system (mounted nodev?): %v", err)
		}
		t.Fatal(err)
	}
	if f.Atomic() {
		t.Fatal("a device is replaced, not written through")
	}
	if _, err := io.WriteString(f, "discarded"); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	info, err := os.Lstat(dev)
	if err != nil || info.Mode()&fs.ModeCharDevice == 0 {
		t.Fatalf("the device is no longer a character device: %v %v", info.Mode(), err)
	}
	onlyEntries(t, dir, "null")
}

// "-" is standard output, left open by Commit.
func TestDashIsStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	defer func() { os.Stdout = saved }()
	f := write(t, "-", "to stdout")
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(" still open")); err != nil {
		t.Fatalf("stdout closed by Commit: %v", err)
	}
	_ = w.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "to stdout still open" {
		t.Fatalf("stdout got %q", b)
	}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, err := outfile.Create(dir); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("a directory: %v", err)
	}
	if _, err := outfile.Create(""); err == nil {
		t.Fatal("an empty path was accepted")
	}
	onlyEntries(t, dir)
}
