package ingest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/flashpipe/flashpipe"
)

// File is a valid batch in a file, read without holding it: OpenFile validates the
// whole file in one pass (the rules of Parse, the same errors) and keeps only each
// valid row's position and byte offset, 16 bytes per item, sorted by position. Hash
// and Each read the rows again from the file, in seq order. The file must not change
// while File is open: Each fails if its size or modification time changed, or a row
// no longer reads as it did. File implements Items and is safe for concurrent use;
// Close it when done.
type File struct {
	// Skipped lists the bad rows left out, in file order (only with SkipBadRows).
	Skipped []RowError
	// Layout is LayoutSimple, LayoutRich or LayoutJSONL.
	Layout string

	f       *os.File
	temp    bool // a copy made by Spool that Close removes (where it could not be unlinked at once)
	source  string
	format  Format
	header  *csvHeader
	index   []rowRef
	size    int64
	modTime time.Time

	mu   sync.Mutex
	hash string
}

// OpenFile validates the batch in the file at path and returns it, open; see File.
// Source defaults to the path's base name and FormatAuto looks at the path's
// extension, as for ParseFile. A file that cannot be read twice (a pipe, a device)
// is copied first, as Spool does. Bad input yields the *ParseError Parse would
// return.
func OpenFile(path string, opts ParseOptions) (*File, error) {
	f, opts, err := openPath(path, opts)
	if err != nil {
		return nil, err
	}
	format := opts.format(path)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ingest: %w", err)
	}
	if !fi.Mode().IsRegular() {
		defer f.Close()
		return spool(f, opts, format)
	}
	// Its line count bounds its rows: the index is allocated once, not grown.
	lines, err := linesAt(f, []int64{fi.Size()})
	if err != nil {
		f.Close()
		return nil, readError(opts.Source, err)
	}
	b, err := open(f, f, lines[fi.Size()], opts, format)
	if err != nil {
		f.Close()
		return nil, err
	}
	return b, nil
}

// Spool reads a batch from r, e.g. standard input, which cannot be read twice: it
// copies r to a temporary file (in os.TempDir) as it validates it and returns the
// copy like OpenFile does. The copy is unlinked as soon as it is created (it lives
// while it is open, so nothing is left behind even if the process is killed), or
// where the system does not allow that, removed by Close. Source names the input in
// errors (e.g. "stdin"); FormatAuto looks at its extension, else sniffs the input.
func Spool(r io.Reader, opts ParseOptions) (*File, error) {
	return spool(r, opts, opts.format(opts.Source))
}

func spool(r io.Reader, opts ParseOptions, format Format) (*File, error) {
	tmp, err := os.CreateTemp("", "flashpipe-batch-*")
	if err != nil {
		return nil, fmt.Errorf("ingest: spooling %s: %w", opts.Source, err)
	}
	unlinked := os.Remove(tmp.Name()) == nil
	b, err := open(tmp, io.TeeReader(r, tmp), 0, opts, format)
	if err != nil {
		tmp.Close()
		if !unlinked {
			os.Remove(tmp.Name())
		}
		return nil, err
	}
	b.temp = !unlinked
	return b, nil
}

// open validates the batch read from r, which is (or is copied into) f; rows, when
// known, is at least its number of rows.
func open(f *os.File, r io.Reader, rows int, opts ParseOptions, format Format) (*File, error) {
	c, err := scan(r, opts, format, rows, false, func(offs []int64) (map[int64]int, error) { return linesAt(f, offs) })
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("ingest: %w", err)
	}
	return &File{
		Skipped: c.bad, Layout: c.layout,
		f: f, source: opts.Source, format: c.format, header: c.header, index: c.index,
		size: fi.Size(), modTime: fi.ModTime(),
	}, nil
}

// linesAt returns the line of each byte offset (1 plus the '\n' before it).
func linesAt(r io.ReaderAt, offs []int64) (map[int64]int, error) {
	sorted := slices.Compact(slices.Sorted(slices.Values(offs)))
	lines := make(map[int64]int, len(sorted))
	buf := make([]byte, 64<<10)
	var pos int64
	line := 1
	for _, off := range sorted {
		for pos < off {
			n, err := r.ReadAt(buf[:min(int64(len(buf)), off-pos)], pos)
			line += bytes.Count(buf[:n], []byte{'\n'})
			pos += int64(n)
			if err != nil && pos < off {
				return nil, err
			}
		}
		lines[off] = line
	}
	return lines, nil
}

// Len is the number of items.
func (b *File) Len() int { return len(b.index) }

// Hash returns the items' flashpipe.HashItems, reading the file once (then kept).
func (b *File) Hash(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hash == "" {
		h, err := hashItems(ctx, b)
		if err != nil {
			return "", err
		}
		b.hash = h
	}
	return b.hash, nil
}

// Each reads the items from the file in seq order; see Items. Memory is one row.
func (b *File) Each(ctx context.Context, fn func(seq int, it flashpipe.Item) error) error {
	fi, err := b.f.Stat()
	if err != nil {
		return fmt.Errorf("ingest: %s: %w", b.source, err)
	}
	if fi.Size() != b.size || !fi.ModTime().Equal(b.modTime) {
		return fmt.Errorf("ingest: %s changed after it was validated: submit it again", b.source)
	}
	rr := &rowReader{b: b, br: bufio.NewReaderSize(eofReader{}, sniffBytes), off: -1, cr: newCSVReader(nil, 0, MaxLineBytes)}
	for i, row := range b.index {
		if i%eachCheckEvery == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		it, err := rr.item(row)
		if err != nil {
			return err
		}
		if err := fn(i+1, it); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file (and removes Spool's copy).
func (b *File) Close() error {
	err := b.f.Close()
	if b.temp {
		if rerr := os.Remove(b.f.Name()); err == nil {
			err = rerr
		}
	}
	return err
}

// rowReader reads rows of a File by offset, reading on without seeking when the
// next row follows the last (a file already sorted by position is read once).
type rowReader struct {
	b   *File
	br  *bufio.Reader
	off int64 // offset of br's next byte; -1: none
	cr  *csvReader
	rec csvRecord
	buf []byte
}

func (r *rowReader) item(row rowRef) (flashpipe.Item, error) {
	if r.off >= 0 && row.ref >= r.off && row.ref-r.off <= int64(r.br.Buffered()) {
		_, _ = r.br.Discard(int(row.ref - r.off)) // cannot fail: the bytes are buffered
	} else if row.ref != r.off {
		r.br.Reset(io.NewSectionReader(r.b.f, row.ref, r.b.size-row.ref))
	}
	var it flashpipe.Item
	var reason string
	if r.b.format == FormatCSV {
		r.cr.reset(r.br, row.ref)
		err := r.cr.read(&r.rec)
		r.off = r.cr.off
		var pe *csv.ParseError
		switch {
		case errors.As(err, &pe) || errors.Is(err, io.EOF) || err == nil && r.rec.Long.line > 0:
			return it, r.changed(row)
		case err != nil:
			return it, readError(r.b.source, err)
		}
		it, reason = csvItem(r.b.header, row.pos, r.rec.Fields)
	} else {
		line, n, raw, err := readLine(r.br, r.buf[:0], MaxLineBytes)
		r.buf, r.off = line, row.ref+int64(raw)
		switch {
		case err != nil && !errors.Is(err, io.EOF):
			return it, readError(r.b.source, err)
		case n > MaxLineBytes:
			return it, r.changed(row)
		}
		it, reason = jsonItem(row.pos, bytes.Trim(line, jsonSpace))
	}
	if reason != "" || it.Position != row.pos {
		return it, r.changed(row)
	}
	return it, nil
}

func (r *rowReader) changed(row rowRef) error {
	return fmt.Errorf("ingest: %s changed after it was validated (the row at byte %d of position %d): submit it again",
		r.b.source, row.ref, row.pos)
}

// eofReader is an empty reader, for a bufio.Reader not yet positioned.
type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
