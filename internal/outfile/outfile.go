// Package outfile opens the files the user commands write (flashcards, reports) so
// that an output never clobbers what is not a regular file:
//
//   - "-" is standard output;
//   - a regular file, or a path that does not exist yet, is written to a temporary file
//     in the same directory and renamed into place by Commit, so a failed write never
//     leaves a half-written file and a reader never sees one (the old file stays until
//     the new one is complete; its permission bits are kept);
//   - a symbolic link is followed: the link stays, and its target is treated by these
//     same rules;
//   - anything else (a character or block device such as /dev/null or a terminal, a
//     FIFO, a socket) is opened and written through, never replaced.
//
// Every door that writes an export (the CLI, the HTTP API) uses this one
// implementation. A File is not safe for concurrent use.
package outfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// maxLinks bounds how many symbolic links Create follows (as the kernel's ELOOP).
const maxLinks = 40

// Stdout is the path that names standard output.
const Stdout = "-"

// File is an output being written. Call Commit when everything is written, or Abort
// to discard it; Abort after Commit does nothing, so `defer f.Abort()` is safe.
type File struct {
	f    *os.File
	path string // the path given to Create
	dest string // where the output lands: the resolved path
	tmp  string // the temporary file renamed onto dest by Commit; "" when writing through
	std  bool   // standard output: never closed
	done bool
}

// Create opens path for writing by the rules of the package documentation. Missing
// parent directories of a new file are created.
func Create(path string) (*File, error) {
	if path == Stdout {
		return &File{f: os.Stdout, path: path, dest: path, std: true}, nil
	}
	if path == "" {
		return nil, errors.New("outfile: empty path")
	}
	dest, err := resolve(path)
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return createTemp(path, dest, 0)
	case err != nil:
		return nil, err
	case info.IsDir():
		return nil, fmt.Errorf("%s is a directory", path)
	case info.Mode().IsRegular():
		return createTemp(path, dest, info.Mode().Perm())
	}
	// A device, FIFO or socket: write through. Opening a FIFO blocks until a reader
	// opens it, as a shell redirection does.
	f, err := os.OpenFile(dest, os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	return &File{f: f, path: path, dest: dest}, nil
}

// resolve follows symbolic links from path to the path of what it finally names
// (which may not exist yet: a dangling link's target is created).
func resolve(path string) (string, error) {
	p := path
	for range maxLinks {
		info, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return p, nil
		}
		if err != nil {
			return "", err
		}
		if info.Mode()&fs.ModeSymlink == 0 {
			return p, nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		p = target
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}

// createTemp creates the temporary file that Commit renames onto dest. perm 0 means
// a new file: 0666 less the umask, as any new file.
func createTemp(path, dest string, perm fs.FileMode) (*File, error) {
	dir := filepath.Dir(dest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for {
		var suffix [6]byte
		_, _ = rand.Read(suffix[:])
		tmp := filepath.Join(dir, "."+filepath.Base(dest)+".tmp-"+hex.EncodeToString(suffix[:]))
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if perm != 0 {
			if err := f.Chmod(perm); err != nil {
				_ = f.Close()
				_ = os.Remove(tmp)
				return nil, err
			}
		}
		return &File{f: f, path: path, dest: dest, tmp: tmp}, nil
	}
}

// Write writes to the output.
func (f *File) Write(p []byte) (int, error) { return f.f.Write(p) }

// Name is the path given to Create.
func (f *File) Name() string { return f.path }

// Atomic reports whether Commit replaces the destination atomically (false for
// standard output and for what is written through).
func (f *File) Atomic() bool { return f.tmp != "" }

// Commit finishes the output: a temporary file is synced and renamed into place; a
// file written through is closed. Standard output is left open.
func (f *File) Commit() error {
	if f.done {
		return errors.New("outfile: " + f.path + " already committed or aborted")
	}
	f.done = true
	if f.std {
		return nil
	}
	if f.tmp == "" {
		return f.f.Close()
	}
	err := f.f.Sync()
	if cerr := f.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.tmp, f.dest)
	}
	if err != nil {
		_ = os.Remove(f.tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	return nil
}

// Abort discards the output: a temporary file is removed and the destination left as
// it was. What was already written through (to standard output, a device or a FIFO)
// cannot be taken back. Abort after Commit or Abort does nothing.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	if f.std {
		return nil
	}
	err := f.f.Close()
	if f.tmp != "" {
		if rerr := os.Remove(f.tmp); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}
